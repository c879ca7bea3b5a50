"""asyncio UDP: one arpc frame per datagram (docs/protocol.md "Over UDP").

:class:`UdpEndpoint` calls peers and serves routes on one socket, like the Rust
``UdpEndpoint``; :class:`UdpClient` (``await ringrpc.aio.connect("udp://host:port")``) is an
endpoint with one fixed peer. Invariants: an answer counts only if it comes from the peer the
call went to (others are dropped and counted in ``stats.foreign``); a datagram that is not one
valid frame is dropped (``stats.malformed``); a Request runs once per ``(peer, seq)`` however
often it is resent; a call resends its unchanged datagram on :class:`~ringrpc.dedup.Retry`'s
schedule and ends exactly once.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
from typing import Any, Callable, Dict, Optional, Set, Tuple

from .address import parse_address
from .common import (
    DEFAULT_MAX_IN_FLIGHT,
    METHOD_NOT_FOUND,
    Context,
    Encoder,
    Payload,
    Stats,
    dumps_json,
    dumps_msgpack,
    error_text,
    loads_json,
    loads_msgpack,
    reply_bytes,
    to_bytes,
)
from .dedup import ANSWERED, NEW, DedupCache, Retry, first_udp_seq, same_address
from .errors import CallError, Disconnected, ProtocolError, Timeout, TooLarge
from .protocol import FLAG_ASYNC, FLAG_ERROR, NOTIFY, PING, PONG, REQUEST, RESPONSE, Frame, decode_datagram
from .udp import DEFAULT_MAX_DATAGRAM, resolve_udp

__all__ = ["UdpEndpoint", "UdpClient"]

Handler = Callable[[bytes, Context], Any]
SockAddr = Tuple[Any, ...]
_MAX_DATAGRAM_BODY = 65535 - 16


class _Protocol(asyncio.DatagramProtocol):
    endpoint: Optional["UdpEndpoint"] = None

    def datagram_received(self, data: bytes, addr: SockAddr) -> None:
        if self.endpoint is not None:  # (nothing can be waiting for an answer before)
            self.endpoint._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        pass  # e.g. ICMP port unreachable after a send: the call's retries and timeout cover it


class UdpEndpoint:
    """One UDP socket that calls peers and serves routes; make it with :meth:`create`."""

    def __init__(self, transport: Any, *, timeout: float, retry: Retry, max_datagram: int,
                 dedup_window: float, dedup_capacity: int, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        self._transport = transport
        self.local_addr: SockAddr = transport.get_extra_info("sockname")
        self.timeout = timeout
        self.retry = retry
        self.max_datagram = max_datagram
        self.stats = Stats()
        self._encoder = Encoder(stats=self.stats)
        self._dedup = DedupCache(dedup_window, dedup_capacity)
        self._routes: Dict[str, Handler] = {}
        self._no_retry: Set[str] = set()
        self._pending: Dict[int, Tuple["asyncio.Future[Frame]", SockAddr]] = {}
        self._seq = first_udp_seq()
        self._tasks: Set["asyncio.Task[Any]"] = set()
        self.max_in_flight = max_in_flight
        self._closed = False

    @classmethod
    async def create(cls, bind: str = "127.0.0.1:0", *, timeout: float = 5.0, retry: Retry = Retry(),
                     max_datagram: int = DEFAULT_MAX_DATAGRAM, dedup_window: float = 5.0,
                     dedup_capacity: int = 65536, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT) -> "UdpEndpoint":
        """Binds ``bind`` (``host:port``; port 0 picks one)."""
        if not 16 <= max_datagram <= 65507:
            raise ValueError("max_datagram must be 16..=65507 bytes")
        addr = parse_address(bind if "://" in bind else "udp://" + bind)
        family, sockaddr = resolve_udp(addr.host, addr.port)
        loop = asyncio.get_running_loop()
        protocol = _Protocol()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: protocol, local_addr=sockaddr[:2], family=family)
        except OSError as e:
            raise Disconnected(f"cannot bind UDP {bind}: {e.strerror or e}") from e
        endpoint = cls(transport, timeout=timeout, retry=retry, max_datagram=max_datagram,
                       dedup_window=dedup_window, dedup_capacity=dedup_capacity, max_in_flight=max_in_flight)
        protocol.endpoint = endpoint
        return endpoint

    def close(self) -> None:
        """Stops serving; pending calls fail at once with :class:`Disconnected`."""
        if self._closed:
            return
        self._closed = True
        for fut, _ in self._pending.values():
            if not fut.done():
                fut.set_exception(Disconnected("UDP endpoint closed"))
        self._pending.clear()
        for t in list(self._tasks):
            t.cancel()
        self._transport.close()

    async def __aenter__(self) -> "UdpEndpoint":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # ---- serving ---------------------------------------------------------------------

    def route(self, method: str, handler: Optional[Handler]) -> None:
        """Serves Requests and Notifies for ``method`` with ``await handler(payload, ctx)``
        (``ctx.peer`` is the sender's address); ``None`` removes it."""
        if handler is None:
            self._routes.pop(method, None)
        else:
            self._routes[method] = handler

    def no_retry(self, method: str) -> None:
        """Calls to ``method`` are sent once, never resent."""
        self._no_retry.add(method)

    def _sendto(self, data: bytes, addr: SockAddr) -> None:
        if not self._closed:
            self._transport.sendto(data, addr)
            self.stats.frames_out += 1

    def _on_datagram(self, data: bytes, addr: SockAddr) -> None:
        try:
            f = decode_datagram(data, _MAX_DATAGRAM_BODY)
        except ProtocolError:
            self.stats.malformed += 1
            return
        self.stats.frames_in += 1
        if f.cmd == RESPONSE:
            entry = self._pending.get(f.seq)
            if entry is None or entry[0].done():
                self.stats.duplicates += 1
            elif not same_address(entry[1], addr):
                self.stats.foreign += 1  # not from the peer this call went to: dropped
            else:
                entry[0].set_result(f)
        elif f.cmd == REQUEST:
            state, cached = self._dedup.begin(addr[:2], f.seq, asyncio.get_running_loop().time())
            if state == ANSWERED and cached is not None:
                self._sendto(cached, addr)
            if state != NEW:
                self.stats.duplicates += 1
                return
            if len(self._tasks) >= self.max_in_flight:
                self.stats.dropped += 1  # too busy: dropped unanswered, a resend may run it
                self._dedup.forget(addr[:2], f.seq)
                return
            self._spawn(self._serve(f, addr))
        elif f.cmd == NOTIFY:
            if f.method in self._routes and f.metadata_error is None:
                if len(self._tasks) >= self.max_in_flight:
                    self.stats.dropped += 1
                else:
                    self._spawn(self._serve(f, addr))
        elif f.cmd == PING:
            self.stats.pings_answered += 1
            self._sendto(self._encoder.frame(PONG, 0, ""), addr)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, f: Frame, addr: SockAddr) -> None:
        handler = self._routes.get(f.method)
        ctx = Context(f.method, f.seq, f.metadata, f.user_flags, f.is_async, f.cmd == NOTIFY, addr)
        if f.metadata_error is not None:
            body, is_error = f.metadata_error.encode(), True
        elif handler is None:
            body, is_error = METHOD_NOT_FOUND.encode(), True
        else:
            try:
                out = handler(f.payload, ctx)
                if inspect.isawaitable(out):
                    out = await out
                body, is_error = reply_bytes(out), False
            except Exception as e:  # the handler's failure is the caller's error text
                body, is_error = error_text(e).encode(), True
        if f.cmd != REQUEST:
            return
        flag = (FLAG_ERROR if is_error else 0) | (f.flag & FLAG_ASYNC)
        answer = self._encoder.frame(RESPONSE, f.seq, f.method, body, flag=flag,
                                     metadata=None if is_error else ctx.reply_metadata)
        if len(answer) > self.max_datagram:
            text = f"response of {len(answer)} bytes does not fit one datagram (max {self.max_datagram})"
            answer = self._encoder.frame(RESPONSE, f.seq, f.method, text.encode(),
                                         flag=FLAG_ERROR | (f.flag & FLAG_ASYNC))
        self._dedup.finish(addr[:2], f.seq, answer)
        self._sendto(answer, addr)

    # ---- calling ---------------------------------------------------------------------

    def _datagram(self, cmd: int, seq: int, method: str, payload: bytes) -> bytes:
        data = self._encoder.frame(cmd, seq, method, payload)
        if len(data) > self.max_datagram:
            raise TooLarge(f"frame of {len(data)} bytes does not fit one datagram (max {self.max_datagram})",
                           len(data), self.max_datagram)
        return data

    def _resend(self, seq: int, data: bytes, peer: SockAddr) -> None:
        entry = self._pending.get(seq)
        if entry is not None and not entry[0].done():
            self.stats.resends += 1
            self._sendto(data, peer)

    def _expire(self, seq: int, fut: "asyncio.Future[Frame]", text: str) -> None:
        if self._pending.get(seq, (None,))[0] is fut and not fut.done():
            fut.set_exception(Timeout(text))

    async def call_frame(self, peer: SockAddr, method: str, payload: Optional[Payload] = b"",
                         timeout: Optional[float] = None) -> Frame:
        """Calls ``method`` on ``peer``, resending as :attr:`retry` says; returns the Response.
        Raises :class:`CallError`, :class:`Timeout`, :class:`TooLarge` or :class:`Disconnected`."""
        if self._closed:
            raise Disconnected(f"UDP endpoint closed; call {method} failed")
        timeout = self.timeout if timeout is None else timeout
        self._seq += 1
        seq = self._seq
        data = self._datagram(REQUEST, seq, method, to_bytes(payload))
        loop = asyncio.get_running_loop()
        fut: "asyncio.Future[Frame]" = loop.create_future()
        self._pending[seq] = (fut, peer)
        times = () if method in self._no_retry else self.retry.send_times(timeout)
        timers = [loop.call_later(at, self._resend, seq, data, peer) for at in times]
        timers.append(loop.call_later(timeout, self._expire, seq, fut,
                                      f"call {method} to {peer[0]}:{peer[1]} got no answer within {timeout} s"))
        try:
            self._sendto(data, peer)
            f = await fut
        finally:
            for t in timers:
                t.cancel()
            self._pending.pop(seq, None)
        if f.is_error:
            raise CallError(f.payload.decode("utf-8", "replace"), method)
        return f

    async def call(self, peer: SockAddr, method: str, payload: Optional[Payload] = b"",
                   timeout: Optional[float] = None) -> bytes:
        return (await self.call_frame(peer, method, payload, timeout)).payload

    async def notify(self, peer: SockAddr, method: str, payload: Optional[Payload] = b"") -> None:
        """Sends a Notify to ``peer``: fire and forget, not retried, may be lost."""
        if self._closed:
            raise Disconnected(f"UDP endpoint closed; notify {method} failed")
        self._sendto(self._datagram(NOTIFY, 0, method, to_bytes(payload)), peer)


class UdpClient:
    """An endpoint on an ephemeral port calling one peer, with :class:`~ringrpc.aio.Client`'s
    call API; made by ``await ringrpc.aio.connect("udp://host:port")``."""

    def __init__(self, endpoint: UdpEndpoint, peer: SockAddr, address: str) -> None:
        self.endpoint = endpoint
        self.peer = peer
        self.address = address
        self.stats = endpoint.stats

    @classmethod
    async def create(cls, address: str, *, timeout: float = 5.0, retry: Retry = Retry(),
                     max_datagram: int = DEFAULT_MAX_DATAGRAM, password: Optional[Payload] = None) -> "UdpClient":
        if password is not None:
            raise ValueError("there is no authentication over UDP (docs/protocol.md): connect over tcp:// or ws://")
        addr = parse_address(address)
        family, peer = resolve_udp(addr.host, addr.port)
        bind = "[::]:0" if family == socket.AF_INET6 else "0.0.0.0:0"
        endpoint = await UdpEndpoint.create(bind, timeout=timeout, retry=retry, max_datagram=max_datagram)
        return cls(endpoint, peer, address)

    async def call(self, method: str, payload: Optional[Payload] = b"", timeout: Optional[float] = None) -> bytes:
        return await self.endpoint.call(self.peer, method, payload, timeout)

    async def call_json(self, method: str, obj: Any = None, timeout: Optional[float] = None) -> Any:
        return loads_json(await self.call(method, dumps_json(obj), timeout))

    async def call_msgpack(self, method: str, obj: Any = None, timeout: Optional[float] = None) -> Any:
        return loads_msgpack(await self.call(method, dumps_msgpack(obj), timeout))

    async def notify(self, method: str, payload: Optional[Payload] = b"") -> None:
        await self.endpoint.notify(self.peer, method, payload)

    def route(self, method: str, handler: Optional[Handler]) -> None:
        self.endpoint.route(method, handler)

    @property
    def local_addr(self) -> SockAddr:
        return self.endpoint.local_addr

    async def close(self) -> None:
        self.endpoint.close()

    async def __aenter__(self) -> "UdpClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
