"""The asyncio client: ``client = await ringrpc.aio.connect(address)``.

One connection (TCP or WebSocket; ``udp://`` gives an :class:`~ringrpc.aio_udp.UdpClient`)
carries calls, Notifies, streams both ways, pub/sub, and what the server starts (Requests,
Notifies, broadcasts, streams), served by the handlers given to :meth:`Client.route` and
:meth:`Client.route_stream`. Invariants: every call ends exactly once (answer,
:class:`CallError`, :class:`Timeout` or :class:`Disconnected`); a lost connection fails every
pending call and ends every stream at once; subscriptions survive reconnects; handler tasks
are held until they finish.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Awaitable, Callable, Dict, List, Optional, Set, Tuple, Union

from .address import Address, parse_address
from .aio_conn import AioConn, open_conn
from .aio_stream import Stream, Subscription
from .aio_udp import UdpClient, UdpEndpoint
from .coders import decode_topic, encode_topic
from .common import (
    DEFAULT_MAX_IN_FLIGHT,
    METHOD_NOT_FOUND,
    STREAM_METHOD_NOT_FOUND,
    TOO_MANY_REQUESTS,
    TOO_MANY_STREAMS,
    Context,
    Encoder,
    MetadataInput,
    Payload,
    Reconnect,
    Stats,
    derive,
    dumps_json,
    dumps_msgpack,
    error_text,
    loads_json,
    loads_msgpack,
    reconnect_policy,
    reply_bytes,
    to_bytes,
)
from .errors import CallError, Disconnected, ProtocolError, RingRpcError, Timeout
from .protocol import (
    DEFAULT_MAX_BODY,
    FLAG_ASYNC,
    FLAG_ERROR,
    NOTIFY,
    PING,
    PONG,
    REQUEST,
    RESPONSE,
    STREAM,
    Frame,
)

__all__ = ["connect", "Client", "Stream", "Subscription", "UdpClient", "UdpEndpoint"]

#: ``fn(payload, ctx)``, a coroutine function or a plain one, returning the reply.
Handler = Callable[[bytes, Context], Any]
#: ``fn(stream, ctx)``: serves a stream the server opened.
StreamHandler = Callable[[Stream, Context], Awaitable[Any]]

_U64 = (1 << 64) - 1
_PUBLISH = "in_P"


async def connect(address: str, **options: Any) -> Any:
    """Connects to ``address`` (``host:port``, ``tcp://``, ``ws://host:port/ws``, ``udp://``)
    and returns a :class:`Client` (a :class:`~ringrpc.aio_udp.UdpClient` for ``udp://``).
    Options are :class:`Client`'s (``timeout``, ``password``, ``reconnect``, ...)."""
    addr = parse_address(address)
    if addr.scheme == "udp":
        return await UdpClient.create(address, **options)
    client = Client(addr, **options)
    await client._first_connect()
    return client


class Client:
    """An asyncio connection to a ringrpc (or Go arpc) server; see :func:`connect`."""

    def __init__(
        self,
        address: Union[str, Address],
        *,
        timeout: float = 30.0,
        connect_timeout: Optional[float] = None,
        password: Optional[Payload] = None,
        pubsub_password: Optional[Payload] = None,
        reconnect: Union[bool, Reconnect, None] = False,
        max_body: int = DEFAULT_MAX_BODY,
        gzip_threshold: Optional[int] = None,
        stream_queue_bytes: int = 1 << 20,
        subscription_queue: int = 1024,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        self.address = address if isinstance(address, Address) else parse_address(address)
        self.timeout = timeout
        self.connect_timeout = timeout if connect_timeout is None else connect_timeout
        self.password = None if password is None else to_bytes(password)
        self.pubsub_password = None if pubsub_password is None else to_bytes(pubsub_password)
        self.reconnect = reconnect_policy(reconnect)
        self.max_body = max_body
        self.stream_queue_bytes = stream_queue_bytes
        self.subscription_queue = subscription_queue
        self.max_in_flight = max_in_flight
        self.stats = Stats()
        self._encoder = Encoder(max_body, gzip_threshold, self.stats)
        self._conn: Optional[AioConn] = None
        self._closed = False
        self._last_error: Optional[BaseException] = None
        self._seq = 1
        self._pending: Dict[int, Tuple["asyncio.Future[Frame]", str]] = {}
        self._streams: Dict[int, Stream] = {}
        self._peer_streams: Dict[int, Stream] = {}
        self._routes: Dict[str, Handler] = {}
        self._stream_routes: Dict[str, StreamHandler] = {}
        self._topics: Dict[str, Set[Subscription]] = {}
        self._holding: Set[Stream] = set()
        self._pings: List["asyncio.Future[None]"] = []
        self._tasks: Set["asyncio.Task[Any]"] = set()
        self._reconnector: Optional["asyncio.Task[None]"] = None
        self._up = asyncio.Event()
        self._started = False

    # ---- connection ------------------------------------------------------------------

    async def _first_connect(self) -> None:
        await self._open()
        self._started = True

    async def _open(self) -> None:
        conn = await open_conn(self.address, self.connect_timeout, self.max_body, self._on_frame, self._lost)
        if self._closed:  # closed while connecting (a reconnect)
            conn.close()
            raise Disconnected("client closed")
        self._conn = conn
        try:
            if self.password is not None:
                await self.call("/_auth", self.password, self.connect_timeout)
            if self.pubsub_password is not None:
                await self.call("in_A", self.pubsub_password, self.connect_timeout)
        except BaseException:
            if self._conn is conn:
                self._conn = None
            conn.close()
            raise
        self._up.set()

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.open

    @property
    def closed(self) -> bool:
        return self._closed

    async def wait_connected(self, timeout: Optional[float] = None) -> bool:
        """Waits until a connection is up (after a reconnect); ``False`` on timeout or close."""
        if self.connected:
            return True
        try:
            await asyncio.wait_for(self._up.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return self.connected

    async def close(self) -> None:
        """Closes for good: pending calls, streams and subscriptions end at once."""
        if self._closed:
            return
        self._closed = True
        if self._reconnector is not None:
            self._reconnector.cancel()
        conn = self._conn
        if conn is not None:
            conn.close()  # _lost fails what is pending
        self._finish(Disconnected("client closed"))
        for t in list(self._tasks):
            t.cancel()

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _lost(self, conn: AioConn, err: BaseException) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        self._up.clear()
        self._last_error = err
        pending, self._pending = self._pending, {}
        for fut, method in pending.values():
            if not fut.done():
                fut.set_exception(derive(err, f"call {method}"))
        for s in list(self._streams.values()) + list(self._peer_streams.values()):
            s._end(derive(err, f"stream {s.method}"))
        self._streams.clear()
        self._peer_streams.clear()
        self._holding.clear()
        for p in self._pings:
            if not p.done():
                p.set_exception(derive(err, "ping"))
        self._pings.clear()
        if self._closed or not self._started:
            return  # a first connection that fails raises from connect() instead
        if self.reconnect is None:
            self._closed = True
            self._finish(err)
        elif self._reconnector is None:  # (a reconnect in progress goes on by itself)
            self._reconnector = asyncio.get_running_loop().create_task(self._reconnect(self.reconnect))

    def _finish(self, err: BaseException) -> None:
        for subs in self._topics.values():
            for sub in subs:
                sub._end(derive(err, f"subscription {sub.topic}"))
        self._topics.clear()
        self._up.set()  # wake wait_connected: it reports False

    async def _reconnect(self, policy: Reconnect) -> None:
        for delay in policy.delays():
            await asyncio.sleep(delay)
            if self._closed:
                return
            try:
                await self._open()
            except CallError:
                break  # the secret was refused: retrying will not help
            except RingRpcError:
                continue
            self.stats.reconnects += 1
            self._reconnector = None
            await self._restore_topics()
            return
        self._closed = True
        self._reconnector = None
        self._finish(Disconnected(f"gave up reconnecting to {self.address}"))

    async def _restore_topics(self) -> None:
        for topic in list(self._topics):
            try:
                await self.call("in_S", encode_topic(topic))
            except RingRpcError as e:
                for sub in self._topics.pop(topic, ()):
                    sub._end(e)

    # ---- sending ---------------------------------------------------------------------

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = 1 if seq == _U64 else seq + 1
        return seq

    def _live(self, what: str) -> AioConn:
        conn = self._conn
        if conn is None or not conn.open:
            if self._closed:
                raise Disconnected(f"client closed; {what} failed")
            why = f" ({self._last_error})" if self._last_error is not None else ""
            raise Disconnected(f"not connected to {self.address}{why}; {what} failed")
        return conn

    async def _send(self, conn: AioConn, data: bytes) -> None:
        conn.write(data)
        self.stats.frames_out += 1
        await conn.drain()

    def _expire(self, seq: int, method: str, timeout: float) -> None:
        entry = self._pending.pop(seq, None)
        if entry is not None and not entry[0].done():
            entry[0].set_exception(Timeout(f"call {method} timed out after {timeout} s"))

    async def call_frame(self, method: str, payload: Optional[Payload] = b"", timeout: Optional[float] = None, *,
                         metadata: Optional[MetadataInput] = None, user_flags: int = 0,
                         is_async: bool = False) -> Frame:
        """Calls ``method``; returns the whole Response frame (payload, metadata)."""
        conn = self._live(f"call {method}")
        timeout = self.timeout if timeout is None else timeout
        seq = self._next_seq()
        data = self._encoder.frame(REQUEST, seq, method, to_bytes(payload), flag=FLAG_ASYNC if is_async else 0,
                                   user_flags=user_flags, metadata=metadata)
        loop = asyncio.get_running_loop()
        fut: "asyncio.Future[Frame]" = loop.create_future()
        self._pending[seq] = (fut, method)
        timer = loop.call_later(timeout, self._expire, seq, method, timeout) if timeout > 0 else None
        try:
            await self._send(conn, data)
            f = await fut
        finally:
            if timer is not None:
                timer.cancel()
            self._pending.pop(seq, None)
        if f.metadata_error is not None:
            raise ProtocolError(f"{f.metadata_error} (response to {method})", "metadata")
        if f.is_error:
            raise CallError(f.payload.decode("utf-8", "replace"), method)
        return f

    async def call(self, method: str, payload: Optional[Payload] = b"", timeout: Optional[float] = None, *,
                   metadata: Optional[MetadataInput] = None) -> bytes:
        """Calls ``method`` with ``payload``; returns the answer's payload. Raises
        :class:`CallError` (the server's text), :class:`Timeout` or :class:`Disconnected`."""
        return (await self.call_frame(method, payload, timeout, metadata=metadata)).payload

    async def call_with_metadata(self, method: str, payload: Optional[Payload] = b"",
                                 timeout: Optional[float] = None, *, metadata: Optional[MetadataInput] = None
                                 ) -> Tuple[bytes, Optional[Dict[str, bytes]]]:
        f = await self.call_frame(method, payload, timeout, metadata=metadata)
        return f.payload, f.metadata

    async def call_json(self, method: str, obj: Any = None, timeout: Optional[float] = None) -> Any:
        return loads_json(await self.call(method, dumps_json(obj), timeout))

    async def call_msgpack(self, method: str, obj: Any = None, timeout: Optional[float] = None) -> Any:
        return loads_msgpack(await self.call(method, dumps_msgpack(obj), timeout))

    async def notify(self, method: str, payload: Optional[Payload] = b"", *,
                     metadata: Optional[MetadataInput] = None) -> None:
        """Sends a Notify (never answered)."""
        conn = self._live(f"notify {method}")
        await self._send(conn, self._encoder.frame(NOTIFY, 0, method, to_bytes(payload), metadata=metadata))

    async def ping(self, timeout: Optional[float] = None) -> float:
        """Sends a Ping; returns the seconds until its Pong."""
        conn = self._live("ping")
        loop = asyncio.get_running_loop()
        fut: "asyncio.Future[None]" = loop.create_future()
        self._pings.append(fut)
        start = loop.time()
        await self._send(conn, self._encoder.frame(PING, 0, ""))
        timeout = self.timeout if timeout is None else timeout
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            if fut in self._pings:
                self._pings.remove(fut)
            raise Timeout(f"ping timed out after {timeout} s") from None
        return loop.time() - start

    # ---- streams ---------------------------------------------------------------------

    def open_stream(self, method: str) -> Stream:
        """Opens a stream to ``method`` (the server's stream handler serves it); nothing is
        sent until the first :meth:`Stream.send`."""
        conn = self._live(f"stream {method}")
        s = Stream(self, conn, self._next_seq(), method, True)
        self._streams[s.id] = s
        return s

    async def request_stream(self, method: str, payload: Optional[Payload] = b"") -> Stream:
        """arpc's subscribe: opens a stream, sends ``payload`` with EOF, and returns it to
        iterate over the replies until the server's EOF."""
        s = self.open_stream(method)
        await s.send_and_close(to_bytes(payload))
        return s

    def _forget_stream(self, s: Stream) -> None:
        table = self._streams if s.local else self._peer_streams
        if table.get(s.id) is s:
            del table[s.id]

    def _hold_reading(self, s: Stream) -> None:
        self._holding.add(s)
        if s._conn is self._conn and self._conn is not None:
            self._conn.pause_reading()

    def _release_reading(self, s: Stream) -> None:
        self._holding.discard(s)
        if not self._holding and self._conn is not None:
            self._conn.resume_reading()

    # ---- pub/sub ---------------------------------------------------------------------

    def subscribe(self, topic: str) -> Subscription:
        """Subscribes to ``topic`` (``in_S``; ``engine --pubsub``): ``async for msg in
        client.subscribe("news")``. Await it to wait until the server agreed."""
        sub = Subscription(self, topic, self.subscription_queue)
        subs = self._topics.get(topic)
        if subs:
            sub._ready = next(iter(subs))._ready  # the topic's in_S, maybe not answered yet
        if subs is None:
            self._topics[topic] = subs = set()
            subs.add(sub)
            sub._ready = asyncio.ensure_future(self._subscribe_first(sub))
            # Retrieved here too, so a refusal nobody awaited is not reported as lost.
            sub._ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        else:
            subs.add(sub)
        return sub

    async def _subscribe_first(self, sub: Subscription) -> None:
        try:
            await self.call("in_S", encode_topic(sub.topic))
        except RingRpcError as e:
            subs = self._topics.get(sub.topic)
            if subs is not None:
                for s in subs:
                    s._end(e)
                del self._topics[sub.topic]
            raise

    async def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._topics.get(sub.topic)
        if subs is None or sub not in subs:
            return
        subs.discard(sub)
        if not subs:
            del self._topics[sub.topic]
            if self.connected:
                await self.call("in_U", encode_topic(sub.topic))

    async def publish(self, topic: str, data: Optional[Payload] = b"", *, timestamp: Optional[int] = None,
                      timeout: Optional[float] = None) -> None:
        """Publishes ``data`` to every subscriber of ``topic`` (``in_P``)."""
        await self.call(_PUBLISH, encode_topic(topic, to_bytes(data), timestamp), timeout)

    async def publish_to_one(self, topic: str, data: Optional[Payload] = b"", *, timestamp: Optional[int] = None,
                             timeout: Optional[float] = None) -> None:
        """Publishes ``data`` to one subscriber of ``topic``, in turn (``in_P1``)."""
        await self.call("in_P1", encode_topic(topic, to_bytes(data), timestamp), timeout)

    async def pubsub_auth(self, password: Payload) -> None:
        """Authenticates for pub/sub (``in_A``); sent again after every reconnect."""
        await self.call("in_A", to_bytes(password))
        self.pubsub_password = to_bytes(password)

    def _on_publish(self, payload: bytes) -> None:
        try:
            msg = decode_topic(payload)
        except ValueError:
            self.stats.dropped += 1
            return
        for sub in list(self._topics.get(msg.name, ())):
            sub._put(msg)

    # ---- what the server starts ------------------------------------------------------

    def route(self, method: str, handler: Optional[Handler]) -> None:
        """Serves the server's Requests and Notifies (broadcasts included) for ``method``:
        ``await handler(payload, ctx)`` returns the reply (bytes, str or None); raising
        answers with an error Response carrying the exception's text. ``None`` removes."""
        if method == _PUBLISH:
            raise ValueError("in_P is the pub/sub route: use subscribe()")
        if handler is None:
            self._routes.pop(method, None)
        else:
            self._routes[method] = handler

    def route_stream(self, method: str, handler: Optional[StreamHandler]) -> None:
        """Serves streams the server opens for ``method`` with ``await handler(stream, ctx)``;
        when it returns the sending side is closed if still open, an exception ends the
        stream with an error end carrying its text. ``None`` removes."""
        if handler is None:
            self._stream_routes.pop(method, None)
        else:
            self._stream_routes[method] = handler

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_frame(self, conn: AioConn, f: Frame) -> None:
        self.stats.frames_in += 1
        cmd = f.cmd
        if cmd == RESPONSE:
            entry = self._pending.pop(f.seq, None)
            if entry is None or entry[0].done():
                self.stats.dropped += 1  # unknown, answered or timed out: ignored
            else:
                entry[0].set_result(f)
        elif cmd == NOTIFY:
            if f.metadata_error is not None:
                self.stats.dropped += 1
            elif f.method == _PUBLISH:
                self._on_publish(f.payload)
            elif f.method in self._routes:
                if len(self._tasks) >= self.max_in_flight:
                    self.stats.dropped += 1
                else:
                    self._spawn(self._serve(conn, f, self._routes[f.method]))
        elif cmd == REQUEST:
            handler = self._routes.get(f.method)
            if f.metadata_error is not None:
                self._answer(conn, f, f.metadata_error.encode(), True, None)
            elif handler is None:
                self._answer(conn, f, METHOD_NOT_FOUND.encode(), True, None)
            elif len(self._tasks) >= self.max_in_flight:
                self._answer(conn, f, TOO_MANY_REQUESTS.encode(), True, None)
            else:
                self._spawn(self._serve(conn, f, handler))
        elif cmd == STREAM:
            self._on_stream(conn, f)
        elif cmd == PING:
            self.stats.pings_answered += 1
            self._write_quietly(conn, self._encoder.frame(PONG, 0, ""))
        elif cmd == PONG:
            if self._pings:
                p = self._pings.pop(0)
                if not p.done():
                    p.set_result(None)

    def _write_quietly(self, conn: AioConn, data: bytes) -> None:
        try:
            conn.write(data)
            self.stats.frames_out += 1
        except Disconnected:
            pass  # the connection's end is reported on its own

    def _answer(self, conn: AioConn, f: Frame, body: bytes, is_error: bool,
                metadata: Optional[MetadataInput]) -> None:
        flag = (FLAG_ERROR if is_error else 0) | (f.flag & FLAG_ASYNC)
        self._write_quietly(conn, self._encoder.frame(RESPONSE, f.seq, f.method, body, flag=flag, metadata=metadata))

    async def _serve(self, conn: AioConn, f: Frame, handler: Handler) -> None:
        ctx = Context(f.method, f.seq, f.metadata, f.user_flags, f.is_async, f.cmd == NOTIFY)
        try:
            out = handler(f.payload, ctx)
            if inspect.isawaitable(out):
                out = await out
            body, is_error = reply_bytes(out), False
        except Exception as e:  # the handler's failure is the caller's error text
            body, is_error = error_text(e).encode(), True
        if f.cmd == REQUEST:
            self._answer(conn, f, body, is_error, None if is_error else ctx.reply_metadata)

    def _on_stream(self, conn: AioConn, f: Frame) -> None:
        if f.metadata_error is not None:
            self.stats.dropped += 1  # dropped, as the engine does
            return
        if not f.stream_local:  # a stream this side opened
            s = self._streams.get(f.seq)
            if s is not None and s.method == f.method:
                s._on_frame(f.payload, f.stream_eof, f.is_error, f.metadata)
            return
        s = self._peer_streams.get(f.seq)
        if s is not None:
            s._on_frame(f.payload, f.stream_eof, f.is_error, f.metadata)
            return
        handler = self._stream_routes.get(f.method)
        if handler is None:
            if not (f.stream_eof and f.is_error):
                self._write_quietly(conn, self._encoder.frame(
                    STREAM, f.seq, f.method, STREAM_METHOD_NOT_FOUND.encode(), flag=FLAG_ERROR, stream_eof=True))
            return
        if not f.payload and not f.stream_eof:
            return  # carries nothing, opens nothing
        if len(self._tasks) >= self.max_in_flight:
            self._write_quietly(conn, self._encoder.frame(
                STREAM, f.seq, f.method, TOO_MANY_STREAMS.encode(), flag=FLAG_ERROR, stream_eof=True))
            return
        s = Stream(self, conn, f.seq, f.method, False)
        self._peer_streams[f.seq] = s
        s._on_frame(f.payload, f.stream_eof, f.is_error, f.metadata)
        ctx = Context(f.method, f.seq, f.metadata, f.user_flags, f.is_async)
        self._spawn(self._serve_stream(s, handler, ctx))

    async def _serve_stream(self, s: Stream, handler: StreamHandler, ctx: Context) -> None:
        try:
            await handler(s, ctx)
        except Exception as e:  # an error end carries the handler's text
            if not s.send_closed and s._conn.open:
                try:
                    await s.close_with_error(error_text(e))
                except RingRpcError:
                    pass
            return
        if not s.send_closed and s._conn.open:
            try:
                await s.close_send()
            except RingRpcError:
                pass
