"""asyncio byte transports for the asyncio client: raw TCP (an ``asyncio.Protocol``) and
WebSocket (``websockets``), behind one small interface.

A connection calls ``on_frame(conn, frame)`` for each frame it decodes, then
``on_lost(conn, error)`` exactly once when it ends (peer closed, broken wire, error, or
:meth:`AioConn.close`). Invariants: :meth:`AioConn.write` never blocks and keeps frame order;
callers await :meth:`AioConn.drain` to respect back-pressure (TCP's write buffer, the
WebSocket send queue); :meth:`AioConn.pause_reading` stops decoding further input until
:meth:`AioConn.resume_reading`, so a slow consumer bounds what is buffered.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Callable, Deque, List, Optional, Set

from .address import Address
from .errors import Disconnected, ProtocolError, Timeout
from .protocol import HEADER_LEN, Frame, FrameDecoder
from .transport import ws_closed_error

__all__ = ["AioConn", "open_conn"]

OnFrame = Callable[["AioConn", Frame], None]
OnLost = Callable[["AioConn", BaseException], None]

_HIGH_WATER = 1 << 20
_closing: Set["asyncio.Task[None]"] = set()


class AioConn:
    """One connection: write frames, await drain, close."""

    def __init__(self, addr: Address, max_body: int, on_frame: OnFrame, on_lost: OnLost) -> None:
        self.addr = addr
        self.decoder = FrameDecoder(max_body)
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._ended = False
        self._paused = False

    @property
    def open(self) -> bool:
        return not self._ended

    def _feed(self, data: bytes) -> bool:
        """Decodes ``data``; returns False once the connection ended (a broken frame)."""
        self.decoder.feed(data)
        try:
            while not self._ended:
                f = self.decoder.next_frame()
                if f is None:
                    break
                self._on_frame(self, f)
        except ProtocolError as e:
            self._end(e)
            self.close()
            return False
        return not self._ended

    def _end(self, err: BaseException) -> None:
        if not self._ended:
            self._ended = True
            self._on_lost(self, err)

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    async def drain(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def pause_reading(self) -> None:
        raise NotImplementedError

    def resume_reading(self) -> None:
        raise NotImplementedError


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, conn: "TcpConn") -> None:
        self.conn = conn

    def connection_made(self, transport: Any) -> None:
        self.conn.transport = transport

    def data_received(self, data: bytes) -> None:
        self.conn._feed(data)

    def eof_received(self) -> bool:
        # The server shut its side (FIN): nothing more will be answered on this connection.
        self.conn._end(Disconnected(f"connection to {self.conn.addr} closed by the server"))
        return False

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        why = f"connection to {self.conn.addr} lost: {exc}" if exc else f"connection to {self.conn.addr} closed"
        self.conn._end(Disconnected(why))
        self.conn._wake_writers()

    def pause_writing(self) -> None:
        self.conn._write_paused = True

    def resume_writing(self) -> None:
        self.conn._write_paused = False
        self.conn._wake_writers()


class TcpConn(AioConn):
    transport: Any = None

    def __init__(self, addr: Address, max_body: int, on_frame: OnFrame, on_lost: OnLost) -> None:
        super().__init__(addr, max_body, on_frame, on_lost)
        self._write_paused = False
        self._drainers: Deque["asyncio.Future[None]"] = collections.deque()

    async def start(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: _TcpProtocol(self), self.addr.host, self.addr.port), timeout)
        except asyncio.TimeoutError:
            raise Timeout(f"connecting to {self.addr} timed out after {timeout} s") from None
        except OSError as e:
            raise Disconnected(f"cannot connect to {self.addr}: {e.strerror or e}") from e

    def write(self, data: bytes) -> None:
        if self._ended or self.transport is None or self.transport.is_closing():
            raise Disconnected(f"connection to {self.addr} is closed")
        self.transport.write(data)

    async def drain(self) -> None:
        if not self._write_paused or self._ended:
            return
        fut = asyncio.get_running_loop().create_future()
        self._drainers.append(fut)
        await fut

    def _wake_writers(self) -> None:
        while self._drainers:
            fut = self._drainers.popleft()
            if not fut.done():
                fut.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self._end(Disconnected("client closed"))

    def pause_reading(self) -> None:
        if self.transport is not None and not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self._paused:
            self._paused = False
            if not self.transport.is_closing():
                self.transport.resume_reading()


class WsConn(AioConn):
    """arpc frames in binary WebSocket messages, one frame per message sent."""

    def __init__(self, addr: Address, max_body: int, on_frame: OnFrame, on_lost: OnLost) -> None:
        super().__init__(addr, max_body, on_frame, on_lost)
        self.max_body = max_body
        self.ws: Any = None
        self._out: Deque[bytes] = collections.deque()
        self._out_bytes = 0
        self._wake_writer = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._resume = asyncio.Event()
        self._resume.set()
        self._tasks: List["asyncio.Task[None]"] = []

    async def start(self, timeout: float) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidHandshake, InvalidURI

        try:
            self.ws = await asyncio.wait_for(
                connect(self.addr.url, compression=None, max_size=self.max_body + HEADER_LEN, close_timeout=1,
                        open_timeout=None), timeout)
        except asyncio.TimeoutError:
            raise Timeout(f"connecting to {self.addr} timed out after {timeout} s") from None
        except (OSError, InvalidHandshake, InvalidURI) as e:
            raise Disconnected(f"cannot connect to {self.addr}: {e}") from e
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read()), loop.create_task(self._write())]

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

        try:
            while True:
                msg = await self.ws.recv()
                if not self._feed(msg.encode("utf-8") if isinstance(msg, str) else msg):
                    return
                if self._paused:
                    await self._resume.wait()
        except ConnectionClosedOK:
            self._end(Disconnected(f"connection to {self.addr} closed by the server"))
        except ConnectionClosed as e:
            err = ws_closed_error(e, self.max_body)
            self._end(err if isinstance(err, Disconnected) else Disconnected(f"connection to {self.addr} lost: {err}"))
        except asyncio.CancelledError:
            self._end(Disconnected("client closed"))
            raise
        finally:
            self._drained.set()

    async def _write(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                await self._wake_writer.wait()
                self._wake_writer.clear()
                while self._out:
                    data = self._out.popleft()
                    self._out_bytes -= len(data)
                    await self.ws.send(data)
                self._drained.set()
        except ConnectionClosed:
            pass  # the reader reports why
        finally:
            self._drained.set()

    def write(self, data: bytes) -> None:
        if self._ended:
            raise Disconnected(f"connection to {self.addr} is closed")
        self._out.append(data)
        self._out_bytes += len(data)
        if self._out_bytes > _HIGH_WATER:
            self._drained.clear()
        self._wake_writer.set()

    async def drain(self) -> None:
        if self._out_bytes > _HIGH_WATER and not self._ended:
            await self._drained.wait()

    def close(self) -> None:
        self._end(Disconnected("client closed"))
        for t in self._tasks:
            t.cancel()
        if self.ws is not None:
            closing = asyncio.get_running_loop().create_task(self.ws.close())
            _closing.add(closing)  # held until done: a task nobody holds may be collected
            closing.add_done_callback(_closing.discard)

    def pause_reading(self) -> None:
        self._paused = True
        self._resume.clear()

    def resume_reading(self) -> None:
        self._paused = False
        self._resume.set()


async def open_conn(addr: Address, timeout: float, max_body: int, on_frame: OnFrame, on_lost: OnLost) -> AioConn:
    conn: AioConn
    if addr.scheme == "tcp":
        conn = TcpConn(addr, max_body, on_frame, on_lost)
        await conn.start(timeout)
    elif addr.scheme in ("ws", "wss"):
        conn = WsConn(addr, max_body, on_frame, on_lost)
        await conn.start(timeout)
    else:
        raise ValueError(f"{addr.scheme} is not a stream transport")
    return conn
