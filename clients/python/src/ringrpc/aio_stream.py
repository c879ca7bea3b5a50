"""Streams (command 6) and pub/sub subscriptions of the asyncio client, as async iterators.

Invariants: a stream's inbox holds at most ``queue_bytes`` plus one received chunk: past that
the client stops reading its connection until the consumer takes the inbox to half (the
engine's own flow control, so a slow consumer slows its peer through TCP instead of growing
memory); a subscription's queue holds at most ``maxsize`` messages and counts, then drops,
what does not fit (as the engine drops publications to a slow subscriber). Each ends once:
EOF, an error end (:class:`~ringrpc.CallError`), or the connection's loss.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Any, AsyncIterator, Deque, Dict, Generator, Optional

from .coders import Topic
from .common import Payload, to_bytes
from .errors import CallError, Disconnected
from .protocol import FLAG_ERROR, STREAM

if TYPE_CHECKING:
    from .aio import Client

__all__ = ["Stream", "Subscription"]


class Stream:
    """One stream: a direction each way, each closed on its own. Opened by
    :meth:`Client.open_stream` (this side) or by the peer (handed to a
    :meth:`Client.route_stream` handler). ``async for chunk in stream`` yields each chunk
    until the peer's EOF; an error end raises :class:`~ringrpc.CallError`."""

    def __init__(self, client: "Client", conn: Any, stream_id: int, method: str, local: bool) -> None:
        self._client = client
        self._conn = conn
        self.id = stream_id
        self.method = method
        self.local = local
        self.metadata: Optional[Dict[str, bytes]] = None
        self._inbox: Deque[bytes] = collections.deque()
        self._inbox_bytes = 0
        self._waiter: Optional["asyncio.Future[None]"] = None
        self._recv_done = False
        self._error: Optional[BaseException] = None
        self._send_done = False
        self._holding = False  # whether this stream's full inbox paused the connection

    @property
    def send_closed(self) -> bool:
        return self._send_done

    @property
    def recv_closed(self) -> bool:
        return self._recv_done

    def _frame(self, payload: bytes, eof: bool, error: bool = False) -> bytes:
        return self._client._encoder.frame(STREAM, self.id, self.method, payload, flag=FLAG_ERROR if error else 0,
                                           stream_local=self.local, stream_eof=eof)

    def _check_send(self) -> None:
        if self._error is not None:
            raise self._error
        if self._send_done:
            raise RuntimeError(f"stream {self.method} #{self.id}: sending side already closed")

    async def _write(self, data: bytes) -> None:
        if not self._conn.open:
            raise Disconnected(f"connection lost; stream {self.method} failed")
        self._conn.write(data)
        self._client.stats.frames_out += 1
        await self._conn.drain()

    async def send(self, data: Payload) -> None:
        """Sends one chunk (an empty one carries nothing and is not sent)."""
        self._check_send()
        payload = to_bytes(data)
        if payload:
            await self._write(self._frame(payload, False))

    async def send_and_close(self, data: Payload) -> None:
        """Sends a last chunk with EOF (arpc's ``SendAndClose``)."""
        self._check_send()
        self._send_done = True
        await self._write(self._frame(to_bytes(data), True))
        self._maybe_forget()

    async def close_send(self) -> None:
        """Half-closes: an empty EOF frame (arpc's ``CloseSend``); receiving goes on."""
        self._check_send()
        self._send_done = True
        await self._write(self._frame(b"", True))
        self._maybe_forget()

    async def close_with_error(self, text: str) -> None:
        """Ends the stream with an error end carrying ``text`` and stops receiving."""
        if not self._send_done and self._conn.open:
            self._send_done = True
            await self._write(self._frame(text.encode("utf-8"), True, True))
        self._end(CallError(text, self.method))

    async def recv(self) -> Optional[bytes]:
        """The next chunk, or ``None`` once the peer sent EOF."""
        while not self._inbox:
            if self._error is not None:
                raise self._error
            if self._recv_done:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = self._inbox.popleft()
        self._inbox_bytes -= len(chunk)
        if self._holding and self._inbox_bytes <= self._client.stream_queue_bytes // 2:
            self._holding = False
            self._client._release_reading(self)
        return chunk

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self.recv()
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def read_all(self) -> bytes:
        """Every remaining chunk until EOF, joined."""
        return b"".join([c async for c in self])

    # ---- called by the client --------------------------------------------------------

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _on_frame(self, payload: bytes, eof: bool, is_error: bool, metadata: Optional[Dict[str, bytes]]) -> None:
        if self._recv_done:
            return
        if metadata is not None and self.metadata is None:
            self.metadata = metadata
        if eof and is_error:
            self._end(CallError(payload.decode("utf-8", "replace"), self.method))
            return
        if payload:
            self._inbox.append(payload)
            self._inbox_bytes += len(payload)
            if not self._holding and self._inbox_bytes > self._client.stream_queue_bytes:
                self._holding = True
                self._client._hold_reading(self)
        if eof:
            self._recv_done = True
            self._maybe_forget()
        self._wake()

    def _end(self, err: BaseException) -> None:
        """Ends receiving with ``err`` (chunks already queued are still delivered first)."""
        if self._error is not None:
            return
        self._recv_done = True
        self._send_done = True
        self._error = err
        if self._holding:
            self._holding = False
            self._client._release_reading(self)
        self._client._forget_stream(self)
        self._wake()

    def _maybe_forget(self) -> None:
        if self._send_done and self._recv_done:
            self._client._forget_stream(self)


class Subscription:
    """A pub/sub subscription to one topic: ``async for msg in client.subscribe(topic)``
    yields :class:`~ringrpc.Topic` messages. Awaiting it (or the first iteration) waits for
    the server to accept the subscription. It survives reconnects (the client subscribes
    again); :meth:`unsubscribe` or :meth:`Client.close` ends it."""

    def __init__(self, client: "Client", topic: str, maxsize: int) -> None:
        self._client = client
        self.topic = topic
        self.maxsize = maxsize
        #: Messages that arrived while the queue was full, dropped.
        self.dropped = 0
        self._queue: Deque[Topic] = collections.deque()
        self._waiter: Optional["asyncio.Future[None]"] = None
        self._ready: Optional["asyncio.Future[None]"] = None
        self._error: Optional[BaseException] = None
        self._ended = False

    def __await__(self) -> Generator[Any, None, "Subscription"]:
        return self._wait_ready().__await__()

    async def _wait_ready(self) -> "Subscription":
        if self._ready is not None:
            await self._ready
        return self

    def __aiter__(self) -> AsyncIterator[Topic]:
        return self

    async def __anext__(self) -> Topic:
        msg = await self.get()
        if msg is None:
            raise StopAsyncIteration
        return msg

    async def get(self) -> Optional[Topic]:
        """The next message; ``None`` once unsubscribed."""
        await self._wait_ready()
        while not self._queue:
            if self._error is not None:
                raise self._error
            if self._ended:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._queue.popleft()

    async def unsubscribe(self) -> None:
        """Ends this subscription; the last one of its topic sends ``in_U``."""
        if not self._ended:
            self._end(None)
            await self._client._unsubscribe(self)

    async def __aenter__(self) -> "Subscription":
        return await self._wait_ready()

    async def __aexit__(self, *exc: object) -> None:
        await self.unsubscribe()

    def _put(self, msg: Topic) -> None:
        if self._ended:
            return
        if len(self._queue) >= self.maxsize:
            self.dropped += 1
            return
        self._queue.append(msg)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _end(self, err: Optional[BaseException]) -> None:
        if self._ended:
            return
        self._ended = True
        self._error = err
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
