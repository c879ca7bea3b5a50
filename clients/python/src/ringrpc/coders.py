"""arpc's coders and pub/sub topic bytes (docs/protocol.md "Metadata", "Compression",
"Pub/sub"): pure functions over bytes.

Invariants: inflating never produces more than the body limit plus one byte, whatever the
compressed bytes declare; every function raises :class:`ValueError` (or a subclass) with a
clear message for bad input and never returns a partial result.
"""

from __future__ import annotations

import struct
import time
import zlib
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .errors import MetadataError

__all__ = [
    "USER_FLAG_METADATA",
    "USER_FLAG_GZIP",
    "MAX_METADATA_LEN",
    "MAX_TOPIC_NAME_LEN",
    "encode_metadata",
    "split_metadata",
    "compress_frame",
    "decompress_frame",
    "Topic",
    "encode_topic",
    "decode_topic",
]

USER_FLAG_METADATA = 0x01
USER_FLAG_GZIP = 0x80
#: The largest ``md`` block, name and trailer included.
MAX_METADATA_LEN = 4096
MAX_TOPIC_NAME_LEN = 1024
_MD_NAME = b"md"
_GZIP_OFFSET = 5
_INNER_HEAD_LEN = 11  # cmd, flag, method_len, seq: what inflates ahead of the body


def _entries(
    md: Union[Mapping[str, Union[bytes, str]], Sequence[Tuple[str, Union[bytes, str]]]],
) -> List[Tuple[str, Union[bytes, str]]]:
    return list(md.items()) if isinstance(md, Mapping) else list(md)


def encode_metadata(
    md: Union[Mapping[str, Union[bytes, str]], Sequence[Tuple[str, Union[bytes, str]]]],
) -> bytes:
    """The ``md`` block for ``md``'s entries (keys 1..=255 bytes of UTF-8, distinct; values
    bytes or text; at most 4096 bytes in all), ready to append to a payload."""
    out = bytearray(_MD_NAME)
    seen = set()
    for key, value in _entries(md):
        kb = key.encode("utf-8")
        vb = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        if not 1 <= len(kb) <= 255:
            raise MetadataError(f"metadata key must be 1..=255 bytes, got {len(kb)}")
        if key in seen:
            raise MetadataError(f"metadata key {key!r} repeated")
        seen.add(key)
        if len(vb) > 0xFFFF:
            raise MetadataError(f"metadata value of {len(vb)} bytes is over 65535")
        out.append(len(kb))
        out += kb
        out += struct.pack("<H", len(vb))
        out += vb
    total = len(out) + 2
    if total > MAX_METADATA_LEN:
        raise MetadataError(f"metadata block of {total} bytes is over {MAX_METADATA_LEN}")
    out += struct.pack(">H", total)
    return bytes(out)


def split_metadata(payload: bytes) -> Tuple[bytes, Dict[str, bytes]]:
    """Takes the ``md`` block off the end of ``payload``: ``(payload before it, entries)``.
    Raises :class:`MetadataError` for a malformed block, naming what is wrong."""
    n = len(payload)
    if n < 2:
        raise MetadataError(f"invalid metadata: {n} bytes cannot end with a block length")
    total = int.from_bytes(payload[n - 2 :], "big")
    if total > MAX_METADATA_LEN:
        raise MetadataError(f"invalid metadata: block of {total} bytes is over {MAX_METADATA_LEN}")
    if total < 4 or total > n:
        raise MetadataError(f"invalid metadata: block length {total} with {n} bytes available")
    start = n - total
    if payload[start : start + 2] != _MD_NAME:
        raise MetadataError(f"invalid metadata: block named {bytes(payload[start:start + 2])!r}, not b'md'")
    entries: Dict[str, bytes] = {}
    o = start + 2
    end = n - 2
    while o < end:
        kl = payload[o]
        if kl == 0:
            raise MetadataError("invalid metadata: empty key")
        if o + 1 + kl + 2 > end:
            raise MetadataError(f"invalid metadata: entry at offset {o - start} runs past the block")
        try:
            key = bytes(payload[o + 1 : o + 1 + kl]).decode("utf-8")
        except UnicodeDecodeError:
            raise MetadataError(f"invalid metadata: key at offset {o - start} is not UTF-8") from None
        vo = o + 1 + kl
        vl = payload[vo] | (payload[vo + 1] << 8)
        if vo + 2 + vl > end:
            raise MetadataError(f"invalid metadata: entry at offset {o - start} runs past the block")
        if key in entries:
            raise MetadataError(f"invalid metadata: key {key!r} repeated")
        entries[key] = bytes(payload[vo + 2 : vo + 2 + vl])
        o = vo + 2 + vl
    return bytes(payload[:start]), entries


def compress_frame(frame: bytes, threshold: int, level: int = 1) -> Optional[bytes]:
    """arpc's gzip coder: for a whole plain frame longer than ``threshold`` bytes (header
    included), gzips bytes 5.. and returns the new frame, or ``None`` when it would not be
    shorter (send the plain one)."""
    if len(frame) <= threshold or frame[4] & USER_FLAG_GZIP:
        return None
    co = zlib.compressobj(level, zlib.DEFLATED, 31)
    packed = co.compress(frame[_GZIP_OFFSET:]) + co.flush()
    if _GZIP_OFFSET + len(packed) >= len(frame):
        return None
    head = struct.pack("<IB", _GZIP_OFFSET + len(packed) - 16, frame[4] | USER_FLAG_GZIP)
    return head + packed


def decompress_frame(frame: bytes, max_body: int) -> bytes:
    """Inflates one whole compressed frame into the plain frame it was made from (bit 7
    cleared, ``body_len`` recomputed, header not validated). Concatenated gzip members are
    read in turn, as Go's ``gzip.Reader`` does. Raises :class:`ValueError` for a frame whose
    length disagrees with ``body_len``, invalid gzip data, trailing bytes that are not gzip,
    a body over ``max_body`` (inflating stops one byte past it) or fewer than 11 bytes."""
    if len(frame) < 16 or int.from_bytes(frame[0:4], "little") != len(frame) - 16:
        raise ValueError(f"{len(frame)} bytes are not one whole frame")
    if not frame[4] & USER_FLAG_GZIP:
        raise ValueError("frame is not gzip-compressed (bit 7 clear)")
    limit = _INNER_HEAD_LEN + max_body
    out = bytearray()
    data = bytes(frame[_GZIP_OFFSET:])
    while True:
        d = zlib.decompressobj(31)
        try:
            out += d.decompress(data, limit + 1 - len(out))
            while not d.eof and d.unconsumed_tail and len(out) <= limit:
                out += d.decompress(d.unconsumed_tail, limit + 1 - len(out))
            if len(out) > limit:
                raise ValueError(f"compressed frame inflates to a body over the maximum of {max_body} bytes")
            if not d.eof:
                out += d.flush()
                if len(out) > limit:
                    raise ValueError(f"compressed frame inflates to a body over the maximum of {max_body} bytes")
                raise ValueError("invalid gzip data: unexpected end of the gzip stream")
        except zlib.error as e:
            raise ValueError(f"invalid gzip data: {e}") from None
        data = d.unused_data
        if not data:
            break
    if len(out) < _INNER_HEAD_LEN:
        raise ValueError(
            f"compressed frame inflates to {len(out)} bytes, fewer than the {_INNER_HEAD_LEN} header bytes it must hold"
        )
    return struct.pack("<IB", len(out) - _INNER_HEAD_LEN, frame[4] & ~USER_FLAG_GZIP & 0xFF) + bytes(out)


@dataclass(frozen=True)
class Topic:
    """One pub/sub message: the topic's name, the published data and the publisher's clock
    (nanoseconds since the Unix epoch, as sent; never checked)."""

    name: str
    data: bytes
    timestamp: int

    def text(self) -> str:
        """The data as UTF-8 text."""
        return self.data.decode("utf-8")


def _name_bytes(name: Union[str, bytes]) -> bytes:
    nb = name.encode("utf-8") if isinstance(name, str) else bytes(name)
    if not 1 <= len(nb) <= MAX_TOPIC_NAME_LEN:
        raise ValueError(f"topic name must be 1..={MAX_TOPIC_NAME_LEN} bytes, got {len(nb)}")
    return nb


def encode_topic(name: Union[str, bytes], data: bytes = b"", timestamp: Optional[int] = None) -> bytes:
    """Topic bytes: ``data | name | name_len u16 LE | timestamp u64 LE`` (now, by default)."""
    nb = _name_bytes(name)
    ts = time.time_ns() if timestamp is None else timestamp
    return bytes(data) + nb + struct.pack("<HQ", len(nb), ts)


def decode_topic(payload: bytes) -> Topic:
    """Parses topic bytes from the end; raises :class:`ValueError` with the engine's texts."""
    n = len(payload)
    if n < 10:
        raise ValueError(f"invalid topic bytes: {n} bytes, at least 10 needed (name_len u16 + timestamp u64)")
    name_len, ts = struct.unpack_from("<HQ", payload, n - 10)
    if name_len == 0:
        raise ValueError("invalid topic name: it must not be empty")
    if name_len > MAX_TOPIC_NAME_LEN:
        raise ValueError(f"invalid topic name length {name_len}: it must be 1..={MAX_TOPIC_NAME_LEN} bytes")
    if name_len > n - 10:
        raise ValueError(f"invalid topic bytes: name_len {name_len} but only {n - 10} bytes precede the trailer")
    start = n - 10 - name_len
    return Topic(bytes(payload[start : n - 10]).decode("utf-8", "replace"), bytes(payload[:start]), ts)
