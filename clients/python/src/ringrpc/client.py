"""The blocking client: one connection (TCP or WebSocket) shared by any number of threads.

A reader thread owns the receiving side: it splits frames, hands each Response to the call
waiting for its seq, answers Pings, and passes server-started Requests and Notifies to the
routes' handlers on a small thread pool (so a slow handler never stalls the reader).
Invariants: every call ends exactly once, with its answer, :class:`CallError`,
:class:`Timeout` or :class:`Disconnected`; a lost connection fails every pending call at
once; frames leave whole (one lock around each send); the receive buffer holds at most one
partial frame of at most ``max_body`` bytes.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Optional, Tuple, Union

from .address import Address, parse_address
from .common import (
    DEFAULT_MAX_IN_FLIGHT,
    METHOD_NOT_FOUND,
    TOO_MANY_REQUESTS,
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
from .coders import encode_topic
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
    FrameDecoder,
)
from .transport import SyncTransport, first_answer, open_sync

__all__ = ["Client", "Handler"]

#: A route's handler: ``fn(payload, ctx)`` returns the reply (bytes, str or None); raising
#: answers with an error Response carrying the exception's text. Notifies ignore the result.
Handler = Callable[[bytes, Context], Any]

_U64 = (1 << 64) - 1


class _Pending:
    __slots__ = ("lock", "frame", "error", "method")

    def __init__(self, method: str) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.frame: Optional[Frame] = None
        self.error: Optional[BaseException] = None
        self.method = method


class Client:
    """A connection to a ringrpc (or Go arpc) server. Make one with :func:`ringrpc.connect`.

    Thread-safe: any number of threads may call at once; answers are matched by seq.
    """

    def __init__(
        self,
        address: Union[str, Address],
        *,
        timeout: float = 30.0,
        connect_timeout: Optional[float] = None,
        password: Optional[Payload] = None,
        reconnect: Union[bool, Reconnect, None] = False,
        max_body: int = DEFAULT_MAX_BODY,
        gzip_threshold: Optional[int] = None,
        handler_threads: int = 4,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        self.address = address if isinstance(address, Address) else parse_address(address)
        if self.address.scheme == "udp":
            raise ValueError("use ringrpc.connect() for udp:// addresses (a UdpClient)")
        self.timeout = timeout
        self.connect_timeout = timeout if connect_timeout is None else connect_timeout
        self.password = None if password is None else to_bytes(password)
        self.reconnect = reconnect_policy(reconnect)
        self.max_body = max_body
        self.stats = Stats()
        self._encoder = Encoder(max_body, gzip_threshold, self.stats)
        self._routes: Dict[str, Handler] = {}
        self._pending: Dict[int, _Pending] = {}
        self._seq = 1
        self._seq_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._state = threading.Condition()
        self._transport: Optional[SyncTransport] = None
        self._closed = False
        self._last_error: Optional[BaseException] = None
        self._pool: Optional[ThreadPoolExecutor] = None
        self._handler_threads = handler_threads
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._reader: Optional[threading.Thread] = None

    # ---- connection ------------------------------------------------------------------

    def connect(self) -> "Client":
        """Opens the first connection (and authenticates); raises if that fails."""
        transport, decoder = self._open()
        with self._state:
            self._transport = transport
        self._reader = threading.Thread(target=self._run, args=(transport, decoder), name="ringrpc-reader", daemon=True)
        self._reader.start()
        return self

    def _open(self) -> Tuple[SyncTransport, FrameDecoder]:
        transport = open_sync(self.address, self.connect_timeout, self.max_body)
        decoder = FrameDecoder(self.max_body)
        if self.password is not None:
            try:
                seq = self._next_seq()
                transport.send(self._encoder.frame(REQUEST, seq, "/_auth", self.password))
                answer = first_answer(transport, seq, decoder, self.connect_timeout)
            except BaseException:
                transport.close()
                raise
            if answer.is_error:
                transport.close()
                raise CallError(answer.payload.decode("utf-8", "replace"), "/_auth")
        return transport, decoder

    @property
    def connected(self) -> bool:
        return self._transport is not None

    @property
    def closed(self) -> bool:
        return self._closed

    def wait_connected(self, timeout: Optional[float] = None) -> bool:
        """Waits until a connection is up (after a reconnect); ``False`` on timeout or close."""
        with self._state:
            self._state.wait_for(lambda: self._transport is not None or self._closed, timeout)
            return self._transport is not None

    def close(self) -> None:
        """Closes for good: pending calls fail at once with :class:`Disconnected`."""
        with self._state:
            if self._closed:
                return
            self._closed = True
            transport, self._transport = self._transport, None
            self._state.notify_all()
        if transport is not None:
            transport.close()
        self._fail_pending(Disconnected("client closed"))
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(5)
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, transport: SyncTransport, decoder: FrameDecoder) -> None:
        while True:
            err = self._read(transport, decoder)
            with self._state:
                if self._transport is transport:
                    self._transport = None
                self._last_error = err
                self._state.notify_all()
            transport.close()
            self._fail_pending(err)
            if self._closed or self.reconnect is None:
                return
            reopened = self._reconnect()
            if reopened is None:
                return
            transport, decoder = reopened

    def _reconnect(self) -> Optional[Tuple[SyncTransport, FrameDecoder]]:
        assert self.reconnect is not None
        for delay in self.reconnect.delays():
            with self._state:
                if self._state.wait_for(lambda: self._closed, delay):
                    return None
            try:
                transport, decoder = self._open()
            except CallError:
                break  # the secret was refused: retrying will not help
            except RingRpcError:
                continue
            with self._state:
                if self._closed:
                    transport.close()
                    return None
                self._transport = transport
                self.stats.reconnects += 1
                self._state.notify_all()
            return transport, decoder
        with self._state:
            self._closed = True
            self._state.notify_all()
        return None

    def _read(self, transport: SyncTransport, decoder: FrameDecoder) -> BaseException:
        """Reads and dispatches until the connection ends; returns why it ended."""
        try:
            while True:
                while True:
                    f = decoder.next_frame()
                    if f is None:
                        break
                    self._on_frame(transport, f)
                data = transport.recv()
                if not data:
                    return Disconnected(f"connection to {self.address} closed by the server")
                decoder.feed(data)
        except ProtocolError as e:
            return e
        except OSError as e:
            if self._closed:
                return Disconnected("client closed")
            return Disconnected(f"connection to {self.address} lost: {e}")

    def _fail_pending(self, err: BaseException) -> None:
        while self._pending:
            try:
                seq, p = self._pending.popitem()
            except KeyError:
                break
            p.error = derive(err, f"call {p.method}")
            p.lock.release()

    # ---- sending ---------------------------------------------------------------------

    def _next_seq(self) -> int:
        with self._seq_lock:
            seq = self._seq
            self._seq = 1 if seq == _U64 else seq + 1
            return seq

    def _send(self, data: bytes, transport: Optional[SyncTransport] = None, what: str = "send") -> None:
        t = transport or self._transport
        if t is None:
            raise self._not_connected(what)
        try:
            with self._send_lock:
                t.send(data)
            self.stats.frames_out += 1
        except OSError as e:
            raise Disconnected(f"connection to {self.address} lost: {e}; {what} failed") from e

    def _not_connected(self, what: str) -> Disconnected:
        if self._closed:
            return Disconnected(f"client closed; {what} failed")
        why = f" ({self._last_error})" if self._last_error is not None else ""
        return Disconnected(f"not connected to {self.address}{why}; {what} failed")

    # ---- calls -----------------------------------------------------------------------

    def call_frame(self, method: str, payload: Optional[Payload] = b"", timeout: Optional[float] = None, *,
                   metadata: Optional[MetadataInput] = None, user_flags: int = 0, is_async: bool = False) -> Frame:
        """Calls ``method`` and returns the whole Response frame (payload, metadata, flags).
        An error Response raises :class:`CallError` with the server's text."""
        timeout = self.timeout if timeout is None else timeout
        seq = self._next_seq()
        data = self._encoder.frame(REQUEST, seq, method, to_bytes(payload), flag=FLAG_ASYNC if is_async else 0,
                                   user_flags=user_flags, metadata=metadata)
        p = _Pending(method)
        self._pending[seq] = p
        try:
            self._send(data, what=f"call {method}")
        except BaseException:
            self._pending.pop(seq, None)
            raise
        if not p.lock.acquire(timeout=timeout if timeout > 0 else -1):
            if self._pending.pop(seq, None) is p:
                raise Timeout(f"call {method} timed out after {timeout} s")
            p.lock.acquire()  # the reader took it just now: its outcome is on the way
        if p.error is not None:
            raise p.error
        f = p.frame
        assert f is not None
        if f.metadata_error is not None:
            raise ProtocolError(f"{f.metadata_error} (response to {method})", "metadata")
        if f.is_error:
            raise CallError(f.payload.decode("utf-8", "replace"), method)
        return f

    def call(self, method: str, payload: Optional[Payload] = b"", timeout: Optional[float] = None, *,
             metadata: Optional[MetadataInput] = None) -> bytes:
        """Calls ``method`` with ``payload`` and returns the answer's payload.

        Raises :class:`CallError` (the server's text), :class:`Timeout` (no answer within
        ``timeout`` seconds, default the client's) or :class:`Disconnected`."""
        return self.call_frame(method, payload, timeout, metadata=metadata).payload

    def call_with_metadata(self, method: str, payload: Optional[Payload] = b"", timeout: Optional[float] = None, *,
                           metadata: Optional[MetadataInput] = None) -> Tuple[bytes, Optional[Dict[str, bytes]]]:
        """As :meth:`call`, also returning the Response's metadata (``None`` when it had none)."""
        f = self.call_frame(method, payload, timeout, metadata=metadata)
        return f.payload, f.metadata

    def call_json(self, method: str, obj: Any = None, timeout: Optional[float] = None) -> Any:
        """Sends ``obj`` as JSON, returns the answer decoded from JSON (empty: ``None``)."""
        return loads_json(self.call(method, dumps_json(obj), timeout))

    def call_msgpack(self, method: str, obj: Any = None, timeout: Optional[float] = None) -> Any:
        """Sends ``obj`` as MessagePack, returns the answer decoded from MessagePack."""
        return loads_msgpack(self.call(method, dumps_msgpack(obj), timeout))

    def notify(self, method: str, payload: Optional[Payload] = b"", *,
               metadata: Optional[MetadataInput] = None) -> None:
        """Sends a Notify (never answered)."""
        self._send(self._encoder.frame(NOTIFY, 0, method, to_bytes(payload), metadata=metadata),
                   what=f"notify {method}")

    def publish(self, topic: str, data: Optional[Payload] = b"", timeout: Optional[float] = None) -> None:
        """Publishes ``data`` on a pub/sub topic (``in_P``; ``engine --pubsub``)."""
        self.call("in_P", encode_topic(topic, to_bytes(data)), timeout)

    # ---- receiving -------------------------------------------------------------------

    def route(self, method: str, handler: Optional[Handler]) -> None:
        """Serves the server's Requests and Notifies (broadcasts included) for ``method``
        with ``handler(payload, ctx)``, run on a pool of ``handler_threads`` threads.
        ``None`` removes the route."""
        if handler is None:
            self._routes.pop(method, None)
        else:
            self._routes[method] = handler

    def _on_frame(self, transport: SyncTransport, f: Frame) -> None:
        self.stats.frames_in += 1
        cmd = f.cmd
        if cmd == RESPONSE:
            p = self._pending.pop(f.seq, None)
            if p is None:
                self.stats.dropped += 1  # unknown, answered or timed out: ignored
                return
            p.frame = f
            p.lock.release()
        elif cmd == PING:
            self.stats.pings_answered += 1
            self._try_send(transport, self._encoder.frame(PONG, 0, ""))
        elif cmd == REQUEST or cmd == NOTIFY:
            self._dispatch(transport, f)
        elif cmd == STREAM:
            # The sync client opens no streams and serves none: end the peer's at once.
            if f.stream_local and not (f.stream_eof and f.is_error):
                self._try_send(transport, self._encoder.frame(
                    STREAM, f.seq, f.method, b"stream method not found", flag=FLAG_ERROR, stream_eof=True))

    def _try_send(self, transport: SyncTransport, data: bytes) -> None:
        try:
            self._send(data, transport)
        except Disconnected:
            pass  # the reader sees the connection end

    def _dispatch(self, transport: SyncTransport, f: Frame) -> None:
        is_request = f.cmd == REQUEST
        if f.metadata_error is not None:
            if is_request:
                self._answer(transport, f, f.metadata_error.encode(), True, None)
            return
        handler = self._routes.get(f.method)
        if handler is None:
            if is_request:
                self._answer(transport, f, METHOD_NOT_FOUND.encode(), True, None)
            return
        if not self._slots.acquire(blocking=False):
            if is_request:
                self._answer(transport, f, TOO_MANY_REQUESTS.encode(), True, None)
            else:
                self.stats.dropped += 1
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._handler_threads, thread_name_prefix="ringrpc-handler")
        ctx = Context(f.method, f.seq, f.metadata, f.user_flags, f.is_async, not is_request)
        self._pool.submit(self._serve, transport, f, handler, ctx)

    def _serve(self, transport: SyncTransport, f: Frame, handler: Handler, ctx: Context) -> None:
        try:
            out = handler(f.payload, ctx)
            body, is_error = reply_bytes(out), False
        except Exception as e:  # the handler's failure is the caller's error text
            body, is_error = error_text(e).encode(), True
        finally:
            self._slots.release()
        if f.cmd == REQUEST:
            self._answer(transport, f, body, is_error, None if is_error else ctx.reply_metadata)

    def _answer(self, transport: SyncTransport, f: Frame, body: bytes, is_error: bool,
                metadata: Optional[MetadataInput]) -> None:
        flag = (FLAG_ERROR if is_error else 0) | (f.flag & FLAG_ASYNC)
        self._try_send(transport, self._encoder.frame(RESPONSE, f.seq, f.method, body, flag=flag, metadata=metadata))
