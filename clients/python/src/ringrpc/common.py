"""What the sync, asyncio and UDP clients share: options, the handler context, payload
conversion, the frame encoder (metadata, gzip threshold) and error derivation.

Invariants: no I/O and no threads here; every function is safe to call from any thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple, Union

from . import coders
from .errors import Disconnected, ProtocolError, RingRpcError, Timeout
from .protocol import DEFAULT_MAX_BODY, encode_frame

__all__ = ["Reconnect", "Context", "Stats", "Payload", "MetadataInput", "to_bytes"]

#: What a payload may be given as: bytes-like, or text (sent as UTF-8).
Payload = Union[bytes, bytearray, memoryview, str]
MetadataInput = Union[Mapping[str, Union[bytes, str]], Sequence[Tuple[str, Union[bytes, str]]]]

METHOD_NOT_FOUND = "method not found"
STREAM_METHOD_NOT_FOUND = "stream method not found"
TOO_MANY_REQUESTS = "too many requests in flight on this connection"
TOO_MANY_STREAMS = "too many open streams on this connection"
#: Handlers running (or queued) at once per connection or endpoint; past it a Request gets
#: the engine's own error text at once, a Notify or datagram is dropped, so a peer that
#: floods calls costs bounded memory.
DEFAULT_MAX_IN_FLIGHT = 4096


def to_bytes(data: Optional[Payload]) -> bytes:
    """The bytes of a payload: bytes-like as is, ``str`` as UTF-8, ``None`` as empty."""
    if data is None:
        return b""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"payload must be bytes, bytearray, memoryview or str, not {type(data).__name__}")


@dataclass(frozen=True)
class Reconnect:
    """Reconnecting after a lost connection: waits ``initial`` seconds, then doubles (times
    ``factor``) up to ``max`` between attempts; ``attempts`` ``None`` means forever. Calls made
    while disconnected fail at once with :class:`~ringrpc.Disconnected`."""

    initial: float = 0.05
    max: float = 5.0
    factor: float = 2.0
    attempts: Optional[int] = None

    def delays(self) -> Iterator[float]:
        delay = self.initial
        n = 0
        while self.attempts is None or n < self.attempts:
            yield delay
            n += 1
            delay = min(self.max, delay * self.factor)


def reconnect_policy(reconnect: Union[bool, Reconnect, None]) -> Optional[Reconnect]:
    if reconnect is True:
        return Reconnect()
    if reconnect in (False, None):
        return None
    if isinstance(reconnect, Reconnect):
        return reconnect
    raise TypeError("reconnect must be a bool or a ringrpc.Reconnect")


@dataclass
class Context:
    """What a handler learns about the frame it serves. Set :attr:`reply_metadata` to attach
    metadata to the Response."""

    method: str
    seq: int
    metadata: Optional[Dict[str, bytes]] = None
    user_flags: int = 0
    is_async: bool = False
    is_notify: bool = False
    peer: Any = None
    reply_metadata: Optional[MetadataInput] = None


@dataclass
class Stats:
    """Counters, for monitoring and tests."""

    frames_in: int = 0
    frames_out: int = 0
    reconnects: int = 0
    pings_answered: int = 0
    gzip_out: int = 0
    # Frames dropped: a Response to no pending call, a malformed metadata block on a
    # Notify or stream frame, a publication nobody could take.
    dropped: int = 0
    # UDP only: datagrams that were not one valid frame, answers from another address
    # than the call's peer, retries of a running request or stale ones, resends.
    malformed: int = 0
    foreign: int = 0
    duplicates: int = 0
    resends: int = 0
    extra: Dict[str, int] = field(default_factory=dict)


class Encoder:
    """Encodes frames for one connection: metadata block, then gzip above the threshold."""

    __slots__ = ("max_body", "gzip_threshold", "stats")

    def __init__(self, max_body: int = DEFAULT_MAX_BODY, gzip_threshold: Optional[int] = None,
                 stats: Optional[Stats] = None) -> None:
        if gzip_threshold is not None and gzip_threshold < 0:
            raise ValueError("gzip_threshold must be >= 0 or None (off)")
        self.max_body = max_body
        self.gzip_threshold = gzip_threshold
        self.stats = stats if stats is not None else Stats()

    def frame(self, cmd: int, seq: int, method: str, payload: bytes = b"", *, flag: int = 0,
              user_flags: int = 0, metadata: Optional[MetadataInput] = None,
              stream_local: bool = False, stream_eof: bool = False) -> bytes:
        raw = encode_frame(cmd, seq, method, payload, flag=flag, user_flags=user_flags,
                           metadata=metadata, stream_local=stream_local, stream_eof=stream_eof,
                           max_body=self.max_body)
        if self.gzip_threshold is not None:
            packed = coders.compress_frame(raw, self.gzip_threshold)
            if packed is not None:
                self.stats.gzip_out += 1
                return packed
        return raw


def derive(err: BaseException, what: str) -> RingRpcError:
    """A fresh exception of ``err``'s kind for one pending call or stream, saying which."""
    if isinstance(err, ProtocolError):
        out: RingRpcError = ProtocolError(f"{err}; {what} failed", err.kind)
    elif isinstance(err, Timeout):
        out = Timeout(f"{err}; {what} failed")
    else:
        out = Disconnected(f"{err}; {what} failed")
    out.__cause__ = err
    return out


def dumps_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def loads_json(data: bytes) -> Any:
    return json.loads(data.decode("utf-8")) if data else None


def dumps_msgpack(obj: Any) -> bytes:
    import msgpack

    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def loads_msgpack(data: bytes) -> Any:
    import msgpack

    return msgpack.unpackb(data, raw=False)


def reply_bytes(out: Any) -> bytes:
    """A handler's return value as Response payload (``None`` is empty)."""
    return to_bytes(out)


def error_text(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__
