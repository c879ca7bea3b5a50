"""The codec against protocol/tests/wire-vectors.json, the vectors the Rust codec's tests
(protocol/tests/vectors.rs) assert too, at every split offset; plus oversize and malformed
input."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import pytest

from ringrpc import coders
from ringrpc.errors import MetadataError, ProtocolError
from ringrpc.protocol import (
    DEFAULT_MAX_BODY,
    NOTIFY,
    REQUEST,
    RESPONSE,
    Frame,
    FrameDecoder,
    decode_datagram,
    decode_frame,
    encode_frame,
)

VECTORS = json.loads((Path(__file__).resolve().parents[3] / "protocol/tests/wire-vectors.json").read_text())
FRAMES = VECTORS["frames"]
REJECTED = VECTORS["rejected"]


def unhex(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", ""))


def expected(v: dict) -> Frame:
    md = v.get("metadata")
    return Frame(
        cmd=v["cmd"],
        seq=int(v["seq"]),
        method=v["method"],
        payload=unhex(v["payload"]),
        flag=v["flag"],
        user_flags=v["user_flags"],
        stream_local=v["stream_local"],
        stream_eof=v["stream_eof"],
        metadata=None if md is None else {k: unhex(h) for k, h in md},
    )


def test_the_vectors_are_all_there():
    assert len(FRAMES) >= 19 and len(REJECTED) >= 17
    names = {v["name"] for v in FRAMES}
    assert {"request-echo-hello", "ping", "request-gzip-hello-x20", "request-with-metadata"} <= names


@pytest.mark.parametrize("v", FRAMES, ids=lambda v: v["name"])
def test_vector_decodes_to_its_fields(v):
    assert decode_frame(unhex(v["hex"])) == expected(v)


@pytest.mark.parametrize("v", [v for v in FRAMES if "plain" not in v], ids=lambda v: v["name"])
def test_plain_vector_encodes_to_its_bytes(v):
    f = expected(v)
    md = None if f.metadata is None else list(f.metadata.items())
    raw = encode_frame(f.cmd, f.seq, f.method, f.payload, flag=f.flag, user_flags=f.user_flags,
                       stream_local=f.stream_local, stream_eof=f.stream_eof, metadata=md)
    assert raw == unhex(v["hex"])


def test_gzip_vector_inflates_to_its_plain_frame():
    v = next(v for v in FRAMES if "plain" in v)
    assert coders.decompress_frame(unhex(v["hex"]), DEFAULT_MAX_BODY) == unhex(v["plain"])


def test_every_split_offset_of_the_whole_vector_stream():
    stream = b"".join(unhex(v["hex"]) for v in FRAMES)
    wanted = [expected(v) for v in FRAMES]
    for cut in range(len(stream) + 1):
        d = FrameDecoder()
        assert d.frames(stream[:cut]) + d.frames(stream[cut:]) == wanted, cut
        assert d.buffered == 0


def test_byte_by_byte():
    stream = b"".join(unhex(v["hex"]) for v in FRAMES)
    d = FrameDecoder()
    got = []
    for i in range(len(stream)):
        got += d.frames(stream[i:i + 1])
    assert got == [expected(v) for v in FRAMES]


@pytest.mark.parametrize("v", REJECTED, ids=lambda v: v["name"])
def test_rejected_vector_fails_with_its_rule(v):
    raw = unhex(v["hex"])
    limit = v.get("max_body", DEFAULT_MAX_BODY)
    d = FrameDecoder(limit)
    if not raw[4] & 0x80:
        # Plain frames are refused from the 16 header bytes alone, before any body.
        d.feed(raw[:16])
    else:
        d.feed(raw)
    with pytest.raises(ProtocolError) as e:
        d.next_frame()
    assert e.value.kind == v["error"], str(e.value)
    with pytest.raises(ProtocolError) as e2:
        decode_frame(raw, limit)
    assert e2.value.kind in (v["error"], "datagram")


def test_frames_before_a_bad_header_are_kept():
    good = encode_frame(REQUEST, 1, "/a", b"x")
    bad = bytes.fromhex("00000000 00 07 00 00 0000000000000000".replace(" ", ""))
    d = FrameDecoder()
    d.feed(good + bad)
    assert d.next_frame().payload == b"x"
    with pytest.raises(ProtocolError, match="unknown command 7"):
        d.next_frame()


def test_oversize_header_is_refused_before_its_body_arrives():
    d = FrameDecoder(max_body=1024)
    d.feed(struct.pack("<IBBBBQ", 1025, 0, REQUEST, 0, 2, 1))
    with pytest.raises(ProtocolError) as e:
        d.next_frame()
    assert e.value.kind == "body_too_large"
    assert "1025" in str(e.value) and "1024" in str(e.value)
    # At the limit it waits for the body, holding only what arrived.
    d = FrameDecoder(max_body=1024)
    d.feed(struct.pack("<IBBBBQ", 1024, 0, REQUEST, 0, 2, 1) + b"/a")
    assert d.next_frame() is None and d.buffered == 18


def test_zip_bomb_stops_one_byte_past_the_limit():
    plain = encode_frame(RESPONSE, 1, "/z", bytes(1 << 20))
    packed = coders.compress_frame(plain, 0, 9)
    assert packed is not None and len(packed) < 2000
    with pytest.raises(ProtocolError) as e:
        decode_frame(packed, max_body=64 * 1024)
    assert e.value.kind == "gzip" and "over the maximum of 65536" in str(e.value)
    assert decode_frame(packed).payload == bytes(1 << 20)


def test_gzip_round_trip_and_threshold():
    raw = encode_frame(NOTIFY, 0, "/n", b"abc" * 100)
    assert coders.compress_frame(raw, len(raw)) is None  # not longer than the threshold
    packed = coders.compress_frame(raw, 10)
    assert packed is not None and packed[4] & 0x80
    assert coders.decompress_frame(packed, DEFAULT_MAX_BODY) == raw
    assert coders.compress_frame(encode_frame(NOTIFY, 0, "/n", bytes(range(40))), 0) is None  # not shorter


def test_gzip_concatenated_members_and_trailing_garbage():
    raw = encode_frame(REQUEST, 3, "/g", b"hello")
    inner = raw[5:]
    two = gzip.compress(inner[:6]) + gzip.compress(inner[6:])
    frame = struct.pack("<IB", 5 + len(two) - 16, 0x80) + two
    assert decode_frame(frame) == decode_frame(raw)
    bad = two + b"junk"
    with pytest.raises(ProtocolError, match="invalid gzip data"):
        decode_frame(struct.pack("<IB", 5 + len(bad) - 16, 0x80) + bad)
    cut = two[:-3]
    with pytest.raises(ProtocolError, match="gzip"):
        decode_frame(struct.pack("<IB", 5 + len(cut) - 16, 0x80) + cut)


@pytest.mark.parametrize("v", VECTORS["bad_metadata"], ids=lambda v: v["name"])
def test_bad_metadata_vector_is_refused(v):
    with pytest.raises(MetadataError, match="invalid metadata"):
        coders.split_metadata(unhex(v["payload"]))


def test_bad_metadata_on_a_frame_is_reported_not_raised():
    raw = bytearray(encode_frame(REQUEST, 1, "/m", b"p7878" + b"\x00\x04"))
    raw[4] |= 1
    f = decode_frame(bytes(raw))
    assert f.metadata is None and "invalid metadata" in f.metadata_error


def test_metadata_limits():
    with pytest.raises(MetadataError):
        coders.encode_metadata({"": b"x"})
    with pytest.raises(MetadataError):
        coders.encode_metadata({"k": bytes(5000)})
    with pytest.raises(MetadataError):
        coders.encode_metadata([("k", b"1"), ("k", b"2")])
    assert coders.encode_metadata({}) == b"md\x00\x04"


def test_topic_vectors():
    for t in VECTORS["topics"]:
        raw = unhex(t["hex"])
        topic = coders.decode_topic(raw)
        assert (topic.name, topic.data, topic.timestamp) == (t["topic"], unhex(t["data"]), t["timestamp"])
        assert coders.encode_topic(t["topic"], unhex(t["data"]), t["timestamp"]) == raw
    for t in VECTORS["bad_topics"]:
        with pytest.raises(ValueError, match="invalid topic"):
            coders.decode_topic(unhex(t["hex"]))


def test_encode_refuses_what_the_wire_cannot_carry():
    with pytest.raises(ValueError):
        encode_frame(REQUEST, 1, "", b"x")
    with pytest.raises(ValueError):
        encode_frame(REQUEST, 1, "/" + "m" * 127)
    with pytest.raises(ValueError):
        encode_frame(REQUEST, 1 << 64, "/a")
    with pytest.raises(ValueError):
        encode_frame(9, 1, "/a")
    with pytest.raises(ValueError):
        encode_frame(REQUEST, 1, "/a", user_flags=0x80)


def test_datagrams_must_be_exactly_one_frame():
    one = encode_frame(REQUEST, 1, "/a", b"x")
    assert decode_datagram(one).payload == b"x"
    for bad in (one + one, one[:-1], b"garbage", b"", coders.compress_frame(encode_frame(REQUEST, 1, "/a", bytes(300)), 0)):
        with pytest.raises(ProtocolError):
            decode_datagram(bad)
