"""The arpc frame codec, written from docs/protocol.md: no I/O, no clock.

A frame is a 16-byte little-endian header (``body_len u32``, ``user_flags``, ``cmd``,
``flag``, ``method_len``, ``seq u64``), the method, then the payload. Invariants: a declared
length is checked against the body limit as soon as the 16 header bytes are in, before any of
the body is buffered, so memory grows only with bytes actually received; header checks run
in the Rust codec's order, so both name the same rule for the same bad bytes; gzip frames
(``user_flags`` bit 7) are inflated, never past the body limit, before their header is read;
a malformed metadata block never raises here (it is reported in :attr:`Frame.metadata_error`,
since the engine answers it without closing the connection).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

from . import coders
from .errors import ProtocolError, TooLarge

__all__ = [
    "HEADER_LEN",
    "MAX_METHOD_LEN",
    "DEFAULT_MAX_BODY",
    "REQUEST",
    "RESPONSE",
    "NOTIFY",
    "PING",
    "PONG",
    "STREAM",
    "CMD_STREAM_LOCAL",
    "CMD_STREAM_EOF",
    "FLAG_ERROR",
    "FLAG_ASYNC",
    "USER_FLAG_METADATA",
    "USER_FLAG_GZIP",
    "Frame",
    "encode_frame",
    "decode_frame",
    "decode_datagram",
    "FrameDecoder",
]

HEADER_LEN = 16
MAX_METHOD_LEN = 127
#: arpc's default limit on ``body_len``: 64 MiB minus the header.
DEFAULT_MAX_BODY = 64 * 1024 * 1024 - HEADER_LEN

REQUEST = 1
RESPONSE = 2
NOTIFY = 3
PING = 4
PONG = 5
STREAM = 6
_COMMAND_NAMES = {1: "Request", 2: "Response", 3: "Notify", 4: "Ping", 5: "Pong", 6: "Stream"}

CMD_STREAM_LOCAL = 0x80
CMD_STREAM_EOF = 0x40
_CMD_MASK = 0x3F
FLAG_ERROR = 0x01
FLAG_ASYNC = 0x02
USER_FLAG_METADATA = coders.USER_FLAG_METADATA
USER_FLAG_GZIP = coders.USER_FLAG_GZIP
_U64_MAX = (1 << 64) - 1

_HEAD = struct.Struct("<IBBBBQ")

MetadataInput = Union[Mapping[str, Union[bytes, str]], Sequence[Tuple[str, Union[bytes, str]]]]


@dataclass
class Frame:
    """One frame. ``metadata`` holds the ``md`` block's entries when the frame carried one
    (bit 0 of ``user_flags`` is then cleared), ``metadata_error`` says why a block could not
    be read (the payload is then left as received)."""

    cmd: int
    seq: int = 0
    method: str = ""
    payload: bytes = b""
    flag: int = 0
    user_flags: int = 0
    stream_local: bool = False
    stream_eof: bool = False
    metadata: Optional[Dict[str, bytes]] = None
    metadata_error: Optional[str] = field(default=None, compare=False)

    @property
    def is_error(self) -> bool:
        return bool(self.flag & FLAG_ERROR)

    @property
    def is_async(self) -> bool:
        return bool(self.flag & FLAG_ASYNC)

    @property
    def cmd_byte(self) -> int:
        b = self.cmd
        if self.stream_local:
            b |= CMD_STREAM_LOCAL
        if self.stream_eof:
            b |= CMD_STREAM_EOF
        return b


def method_bytes(method: Union[str, bytes], allow_empty: bool = False) -> bytes:
    """The method's bytes (UTF-8), checked to be 1..=127 long (0 allowed for Responses)."""
    m = method.encode("utf-8", "surrogateescape") if isinstance(method, str) else bytes(method)
    if len(m) > MAX_METHOD_LEN or (not m and not allow_empty):
        raise ValueError(f"method must be 1..={MAX_METHOD_LEN} bytes of UTF-8, got {len(m)}")
    return m


def encode_frame(
    cmd: int,
    seq: int = 0,
    method: Union[str, bytes] = "",
    payload: bytes = b"",
    *,
    flag: int = 0,
    user_flags: int = 0,
    stream_local: bool = False,
    stream_eof: bool = False,
    metadata: Optional[MetadataInput] = None,
    max_body: int = 0xFFFFFFFF,
) -> bytes:
    """The bytes of one plain frame; ``metadata`` appends an ``md`` block (bit 0)."""
    if cmd not in _COMMAND_NAMES:
        raise ValueError(f"unknown command {cmd}")
    if not 0 <= seq <= _U64_MAX:
        raise ValueError(f"seq {seq} is not a u64")
    if user_flags & USER_FLAG_GZIP:
        raise ValueError("user_flags bit 7 (gzip) is set by the codec only")
    if cmd in (PING, PONG):
        m = method_bytes(method, True)
        if m or payload or metadata is not None:
            raise ValueError("a Ping or Pong is a bare header")
    else:
        m = method_bytes(method, allow_empty=cmd == RESPONSE)
    if metadata is not None:
        payload = bytes(payload) + coders.encode_metadata(metadata)
        user_flags |= USER_FLAG_METADATA
    body_len = len(m) + len(payload)
    if body_len > max_body:
        raise TooLarge(f"frame body of {body_len} bytes is over the limit of {max_body}", body_len, max_body)
    cmd_byte = cmd | (CMD_STREAM_LOCAL if stream_local else 0) | (CMD_STREAM_EOF if stream_eof else 0)
    return _HEAD.pack(body_len, user_flags & 0xFF, cmd_byte, flag & 0xFF, len(m), seq) + m + payload


def _check_header(
    body_len: int, cmd_byte: int, method_len: int, max_body: int
) -> None:
    """The header checks of docs/protocol.md, in the Rust codec's order."""
    cmd = cmd_byte & _CMD_MASK
    if cmd not in _COMMAND_NAMES:
        raise ProtocolError(f"unknown command {cmd} (cmd byte {cmd_byte:#04x})", "unknown_command")
    if body_len > max_body:
        raise ProtocolError(
            f"declared body of {body_len} bytes exceeds the maximum of {max_body}", "body_too_large"
        )
    if cmd in (REQUEST, NOTIFY, STREAM):
        ok = 1 <= method_len <= MAX_METHOD_LEN
    else:
        ok = method_len <= MAX_METHOD_LEN
    if not ok:
        raise ProtocolError(
            f"{_COMMAND_NAMES[cmd]} frame with method length {method_len} (must be 1..={MAX_METHOD_LEN})",
            "bad_method_len",
        )
    if cmd in (PING, PONG) and (body_len or method_len):
        raise ProtocolError(f"{_COMMAND_NAMES[cmd]} frame must be a bare 16-byte header", "control_frame_with_body")
    if method_len > body_len:
        raise ProtocolError(
            f"method length {method_len} exceeds body length {body_len}", "method_longer_than_body"
        )


def _plain_frame(raw: bytes, max_body: int) -> Frame:
    """Decodes one whole plain frame (exactly 16 + body_len bytes)."""
    body_len, user_flags, cmd_byte, flag, method_len, seq = _HEAD.unpack_from(raw, 0)
    _check_header(body_len, cmd_byte, method_len, max_body)
    end_method = HEADER_LEN + method_len
    method = raw[HEADER_LEN:end_method].decode("utf-8", "surrogateescape")
    payload = raw[end_method:]
    cmd = cmd_byte & _CMD_MASK
    frame = Frame(
        cmd, seq, method, payload, flag, user_flags, bool(cmd_byte & CMD_STREAM_LOCAL), bool(cmd_byte & CMD_STREAM_EOF)
    )
    if user_flags & USER_FLAG_METADATA and cmd not in (PING, PONG):
        try:
            frame.payload, frame.metadata = coders.split_metadata(payload)
            frame.user_flags &= ~USER_FLAG_METADATA
        except ValueError as e:
            frame.metadata_error = str(e)
    return frame


def decode_frame(raw: bytes, max_body: int = DEFAULT_MAX_BODY) -> Frame:
    """Decodes exactly one whole frame, inflating it first when it is gzip-compressed.

    Raises :class:`ProtocolError` for anything docs/protocol.md rejects, or when ``raw`` is not
    exactly the frame its header declares.
    """
    raw = bytes(raw)
    if len(raw) < HEADER_LEN:
        raise ProtocolError(f"{len(raw)} bytes are shorter than a frame header", "datagram")
    body_len = int.from_bytes(raw[0:4], "little")
    if raw[4] & USER_FLAG_GZIP:
        if body_len > max_body:
            raise ProtocolError(
                f"declared body of {body_len} bytes exceeds the maximum of {max_body}", "body_too_large"
            )
        if len(raw) != HEADER_LEN + body_len:
            raise ProtocolError(
                f"frame declares a body of {body_len} bytes but has {len(raw) - HEADER_LEN}", "datagram")
        try:
            raw = coders.decompress_frame(raw, max_body)
        except ValueError as e:
            raise ProtocolError(f"gzip-compressed frame: {e}", "gzip") from None
        return _plain_frame(raw, max_body)
    _check_header(body_len, raw[5], raw[7], max_body)
    if len(raw) != HEADER_LEN + body_len:
        raise ProtocolError(f"frame declares a body of {body_len} bytes but has {len(raw) - HEADER_LEN}", "datagram")
    return _plain_frame(raw, max_body)


def decode_datagram(data: bytes, max_body: int = DEFAULT_MAX_BODY) -> Frame:
    """One datagram as one frame: anything else (garbage, a truncated frame, two frames) is a
    :class:`ProtocolError` and the datagram is to be dropped. Datagrams are not inflated."""
    if len(data) >= 5 and data[4] & USER_FLAG_GZIP:
        raise ProtocolError("gzip-compressed datagram (datagrams are never compressed)", "datagram")
    return decode_frame(data, max_body)


class FrameDecoder:
    """Splits a byte stream into frames: :meth:`feed` chunks in, take frames out with
    :meth:`next_frame` (``None`` = need more bytes). Holds at most one partial frame plus one
    chunk; a header declaring a body over ``max_body`` raises before its body is buffered."""

    __slots__ = ("max_body", "_buf", "_pos")

    def __init__(self, max_body: int = DEFAULT_MAX_BODY) -> None:
        self.max_body = max_body
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet taken as frames."""
        return len(self._buf) - self._pos

    def next_frame(self) -> Optional[Frame]:
        buf = self._buf
        pos = self._pos
        if len(buf) - pos < HEADER_LEN:
            return None
        body_len, user_flags, cmd_byte, flag, method_len, seq = _HEAD.unpack_from(buf, pos)
        if user_flags & USER_FLAG_GZIP:
            if body_len > self.max_body:
                raise ProtocolError(
                    f"declared body of {body_len} bytes exceeds the maximum of {self.max_body}", "body_too_large"
                )
            end = pos + HEADER_LEN + body_len
            if end > len(buf):
                return None
            raw = bytes(buf[pos:end])
            self._pos = end
            return decode_frame(raw, self.max_body)
        _check_header(body_len, cmd_byte, method_len, self.max_body)
        end = pos + HEADER_LEN + body_len
        if end > len(buf):
            return None
        self._pos = end
        end_method = pos + HEADER_LEN + method_len
        cmd = cmd_byte & _CMD_MASK
        frame = Frame(
            cmd,
            seq,
            buf[pos + HEADER_LEN : end_method].decode("utf-8", "surrogateescape"),
            bytes(buf[end_method:end]),
            flag,
            user_flags,
            bool(cmd_byte & CMD_STREAM_LOCAL),
            bool(cmd_byte & CMD_STREAM_EOF),
        )
        if user_flags & USER_FLAG_METADATA and cmd not in (PING, PONG):
            try:
                frame.payload, frame.metadata = coders.split_metadata(frame.payload)
                frame.user_flags &= ~USER_FLAG_METADATA
            except ValueError as e:
                frame.metadata_error = str(e)
        return frame

    def frames(self, data: bytes) -> List[Frame]:
        """Feeds ``data`` and returns every whole frame; raises on the first bad header (the
        frames before it are lost to the caller: use :meth:`next_frame` to keep them)."""
        self.feed(data)
        out: List[Frame] = []
        while True:
            f = self.next_frame()
            if f is None:
                return out
            out.append(f)
