"""Addresses given to ``connect``: which transport, and where.

``host:port`` and ``tcp://host:port`` are raw arpc over TCP, ``ws://host:port/path`` (and
``wss://``) arpc inside WebSocket binary messages, ``udp://host:port`` one frame per
datagram. ``:port`` means 127.0.0.1; IPv6 hosts are written in brackets.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Address", "parse_address"]


@dataclass(frozen=True)
class Address:
    scheme: str  # "tcp", "ws", "wss" or "udp"
    host: str
    port: int
    url: str  # the WebSocket URL for ws/wss, else ``scheme://host:port``

    def __str__(self) -> str:
        return self.url


def parse_address(addr: str) -> Address:
    """Parses ``addr``; raises :class:`ValueError` naming what is wrong and what is accepted."""
    if not isinstance(addr, str):
        raise TypeError("address must be a string like '127.0.0.1:8888', 'ws://host:port/ws' or 'udp://host:port'")
    text = addr.strip()
    if "://" not in text:
        text = "tcp://" + text
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("tcp", "ws", "wss", "udp"):
        raise ValueError(f"unknown transport {parts.scheme!r} in {addr!r}: use host:port, tcp://, ws://, wss:// or udp://")
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        if scheme in ("ws", "wss") and not parts.netloc.endswith(":"):
            port = 80 if scheme == "ws" else 443
        else:
            raise ValueError(f"address {addr!r} has no valid port (0..=65535)")
    host = parts.hostname or "127.0.0.1"
    if scheme in ("ws", "wss"):
        path = parts.path or "/ws"
        hostpart = f"[{host}]" if ":" in host else host
        url = f"{scheme}://{hostpart}:{port}{path}" + (f"?{parts.query}" if parts.query else "")
        return Address(scheme, host, port, url)
    if parts.path not in ("", "/"):
        raise ValueError(f"address {addr!r}: a {scheme} address has no path")
    hostpart = f"[{host}]" if ":" in host else host
    return Address(scheme, host, port, f"{scheme}://{hostpart}:{port}")
