"""Blocking byte transports for the sync client: raw TCP and WebSocket.

Each carries arpc bytes both ways: :meth:`send` writes whole frames, :meth:`recv` returns
the next chunk (``b""`` once the peer closed its side). Invariants: :meth:`recv` is called
from one thread only; :meth:`send` callers hold the client's send lock; :meth:`close` may be
called from any thread and wakes a blocked :meth:`recv`.
"""

from __future__ import annotations

import socket
from typing import Optional

from .address import Address
from .errors import Disconnected, ProtocolError, Timeout
from .protocol import HEADER_LEN, RESPONSE, Frame, FrameDecoder

__all__ = ["SyncTransport", "TcpTransport", "WsTransport", "open_sync"]

_RECV_SIZE = 256 * 1024


class SyncTransport:
    def send(self, data: bytes) -> None:
        raise NotImplementedError

    def recv(self) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def set_timeout(self, timeout: Optional[float]) -> None:
        """Bounds each :meth:`recv` (``None``: block); used only before the reader starts."""
        raise NotImplementedError


class TcpTransport(SyncTransport):
    def __init__(self, addr: Address, timeout: float) -> None:
        try:
            self.sock = socket.create_connection((addr.host, addr.port), timeout=timeout)
        except socket.timeout:
            raise Timeout(f"connecting to {addr} timed out after {timeout} s") from None
        except OSError as e:
            raise Disconnected(f"cannot connect to {addr}: {e.strerror or e}") from e
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self) -> bytes:
        return self.sock.recv(_RECV_SIZE)

    def set_timeout(self, timeout: Optional[float]) -> None:
        self.sock.settimeout(timeout)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class WsTransport(SyncTransport):
    def __init__(self, addr: Address, timeout: float, max_body: int) -> None:
        from websockets.exceptions import InvalidHandshake, InvalidURI
        from websockets.sync.client import connect

        try:
            # Entered as a context manager (closed by close()), as websockets >= 17.1 asks.
            self.ws = connect(
                addr.url,
                open_timeout=timeout,
                close_timeout=1,
                compression=None,
                max_size=max_body + HEADER_LEN,
            ).__enter__()
        except TimeoutError:
            raise Timeout(f"connecting to {addr} timed out after {timeout} s") from None
        except (OSError, InvalidHandshake, InvalidURI) as e:
            raise Disconnected(f"cannot connect to {addr}: {e}") from e
        self.max_body = max_body
        self.timeout: Optional[float] = None

    def set_timeout(self, timeout: Optional[float]) -> None:
        self.timeout = timeout

    def send(self, data: bytes) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            self.ws.send(data)
        except ConnectionClosed as e:
            raise OSError(f"WebSocket closed: {e}") from None

    def recv(self) -> bytes:
        from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

        try:
            msg = self.ws.recv(self.timeout)
        except ConnectionClosedOK:
            return b""
        except ConnectionClosed as e:
            raise ws_closed_error(e, self.max_body) from None
        return msg.encode("utf-8") if isinstance(msg, str) else bytes(msg)

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:  # closing a broken connection: nothing left to report
            pass


def ws_closed_error(e: BaseException, max_body: int) -> Exception:
    """The exception for a WebSocket that closed with an error: a message over the limit
    (close code 1009) is a :class:`ProtocolError` naming the limit."""
    rcvd = getattr(e, "rcvd", None)
    sent = getattr(e, "sent", None)
    code = (sent.code if sent is not None else None) or (rcvd.code if rcvd is not None else None)
    if code == 1009:
        return ProtocolError(
            f"WebSocket message over the client's limit of {max_body + HEADER_LEN} bytes (close code 1009)",
            "body_too_large",
        )
    if code == 1002:
        return ProtocolError(f"WebSocket protocol error: {e}", "websocket")
    return OSError(f"WebSocket closed: {e}")


def open_sync(addr: Address, timeout: float, max_body: int) -> SyncTransport:
    if addr.scheme == "tcp":
        return TcpTransport(addr, timeout)
    if addr.scheme in ("ws", "wss"):
        return WsTransport(addr, timeout, max_body)
    raise ValueError(f"{addr.scheme} is not a stream transport")


def first_answer(transport: SyncTransport, seq: int, decoder: FrameDecoder, timeout: float) -> Frame:
    """Reads until the Response to ``seq`` (the connection's first call, ``/_auth``) arrives,
    at most ``timeout`` seconds; later bytes stay in ``decoder`` for the reader."""
    transport.set_timeout(timeout)
    try:
        while True:
            data = transport.recv()
            if not data:
                raise Disconnected("the server closed the connection before answering /_auth")
            decoder.feed(data)
            while True:
                f = decoder.next_frame()
                if f is None:
                    break
                if f.cmd == RESPONSE and f.seq == seq:
                    return f
    except (socket.timeout, TimeoutError):
        raise Timeout(f"no answer to /_auth within {timeout} s") from None
    finally:
        transport.set_timeout(None)
