"""ringrpc: a Python client for ringrpc and Go arpc servers (the arpc wire format).

``ringrpc.connect(address)`` gives a blocking, thread-safe :class:`Client` (or a
:class:`UdpClient` for ``udp://``); ``await ringrpc.aio.connect(address)`` the asyncio one.
Addresses: ``host:port`` / ``tcp://host:port`` (raw arpc), ``ws://host:port/ws``
(WebSocket), ``udp://host:port`` (one frame per datagram). The wire is docs/protocol.md.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from . import aio
from .address import Address, parse_address
from .client import Client
from .coders import Topic, decode_topic, encode_topic
from .common import Context, Reconnect, Stats
from .dedup import Retry
from .errors import CallError, Disconnected, MetadataError, ProtocolError, RingRpcError, Timeout, TooLarge
from .protocol import DEFAULT_MAX_BODY, Frame, FrameDecoder, decode_frame, encode_frame
from .udp import UdpClient, UdpEndpoint

__version__ = "0.1.0"

__all__ = [
    "connect",
    "Client",
    "UdpClient",
    "UdpEndpoint",
    "aio",
    "Address",
    "parse_address",
    "Context",
    "Reconnect",
    "Retry",
    "Stats",
    "Topic",
    "encode_topic",
    "decode_topic",
    "Frame",
    "FrameDecoder",
    "encode_frame",
    "decode_frame",
    "DEFAULT_MAX_BODY",
    "RingRpcError",
    "CallError",
    "Timeout",
    "Disconnected",
    "ProtocolError",
    "MetadataError",
    "TooLarge",
]


def connect(
    address: str,
    *,
    timeout: float = 30.0,
    password: Optional[Union[bytes, str]] = None,
    reconnect: Union[bool, Reconnect] = False,
    **options: Any,
) -> Union[Client, UdpClient]:
    """Connects to ``address`` and returns a blocking client.

    ``timeout`` is the default per call and for connecting, in seconds; ``password`` the
    server's shared secret (``engine --auth-secret-file``), sent as ``/_auth`` first on every
    connection; ``reconnect`` (``True`` or a :class:`Reconnect`) reconnects after a lost
    connection. Other options: ``connect_timeout``, ``max_body``, ``gzip_threshold``,
    ``handler_threads`` (and for ``udp://``: ``retry``, ``max_datagram``).
    Raises :class:`Disconnected`, :class:`Timeout`, or :class:`CallError` for a refused
    password.
    """
    addr = parse_address(address)
    if addr.scheme == "udp":
        if reconnect:
            raise ValueError("udp:// has no connection to reconnect")
        return UdpClient(address, timeout=timeout, password=password, **options)
    return Client(addr, timeout=timeout, password=password, reconnect=reconnect, **options).connect()
