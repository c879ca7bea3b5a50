"""The exceptions the client raises.

Every error of this package derives from :class:`RingRpcError`. A call fails with exactly one
of :class:`CallError` (the peer answered with an error: its text), :class:`Timeout` (no answer
in time) or :class:`Disconnected` (the connection is gone or was never up; a
:class:`ProtocolError` is the disconnect a broken peer causes).
"""

from __future__ import annotations

from typing import Optional

__all__ = [
    "RingRpcError",
    "CallError",
    "Timeout",
    "Disconnected",
    "ProtocolError",
    "MetadataError",
    "TooLarge",
]


class RingRpcError(Exception):
    """Base class of every error this package raises."""


class CallError(RingRpcError):
    """The peer answered with an error Response (or ended a stream with an error end).

    ``str(err)`` and :attr:`text` are the peer's text, e.g. ``method not found``.
    """

    def __init__(self, text: str, method: str = "") -> None:
        super().__init__(text)
        self.text = text
        self.method = method


class Timeout(RingRpcError, TimeoutError):
    """A call, stream or connection attempt got no answer in time."""


class Disconnected(RingRpcError, ConnectionError):
    """The connection is down, was closed, or could not be made; pending calls fail with it at
    once rather than waiting for their timeout."""


class ProtocolError(Disconnected):
    """The peer broke the wire format (docs/protocol.md); the connection is closed.

    :attr:`kind` names the rule broken: ``unknown_command``, ``body_too_large``,
    ``bad_method_len``, ``control_frame_with_body``, ``method_longer_than_body``, ``gzip``,
    ``datagram`` (a datagram that is not exactly one frame) or ``websocket``.
    """

    def __init__(self, message: str, kind: str = "protocol") -> None:
        super().__init__(message)
        self.kind = kind


class MetadataError(RingRpcError, ValueError):
    """A metadata block that cannot be encoded, or a received one that is malformed."""


class TooLarge(RingRpcError, ValueError):
    """A frame too large to send: over the body limit, or over one datagram on UDP."""

    def __init__(self, message: str, size: Optional[int] = None, limit: Optional[int] = None) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit
