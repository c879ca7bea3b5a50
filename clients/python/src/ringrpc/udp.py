"""Blocking UDP: one arpc frame per datagram, both ways (docs/protocol.md "Over UDP").

:class:`UdpEndpoint` is one UDP socket that calls peers and serves routes; :class:`UdpClient`
(what ``ringrpc.connect("udp://...")`` returns) is an endpoint with one fixed peer. A receiver
thread reads datagrams: an answer is handed to the call waiting for its seq only if it came
from that call's peer (others are dropped and counted), a Request is run once per
``(peer, seq)`` whatever the retries (:class:`~ringrpc.dedup.DedupCache`), a datagram that is
not one valid frame is dropped and counted. The calling thread resends its own Request.
Invariants: nothing here buffers more than one datagram per pending call; a call ends exactly
once; handlers run on a pool, never on the receiver thread.
"""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
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

__all__ = ["UdpEndpoint", "UdpClient", "resolve_udp"]

Handler = Callable[[bytes, Context], Any]
SockAddr = Tuple[Any, ...]
#: One Ethernet MTU less the IP and UDP headers; the engine's default.
DEFAULT_MAX_DATAGRAM = 1472
_MAX_DATAGRAM_BODY = 65535 - 16  # whatever a datagram can hold
_POLL = 0.1  # how often the receiver looks whether the endpoint was closed


def resolve_udp(host: str, port: int) -> Tuple[int, SockAddr]:
    """The address family and socket address to send to ``host:port``."""
    try:
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)
    except socket.gaierror as e:
        raise Disconnected(f"cannot resolve {host}: {e}") from e
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


class _UdpPending:
    __slots__ = ("lock", "frame", "peer", "method")

    def __init__(self, peer: SockAddr, method: str) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.frame: Optional[Frame] = None
        self.peer = peer
        self.method = method


class UdpEndpoint:
    """One UDP socket bound to ``bind`` (``host:port``, port 0 picks one): calls peers with
    resends (``retry``) and serves routes with duplicate suppression, like the Rust
    ``UdpEndpoint``. Frames over ``max_datagram`` bytes are refused with
    :class:`~ringrpc.TooLarge`."""

    def __init__(
        self,
        bind: str = "127.0.0.1:0",
        *,
        timeout: float = 5.0,
        retry: Retry = Retry(),
        max_datagram: int = DEFAULT_MAX_DATAGRAM,
        dedup_window: float = 5.0,
        dedup_capacity: int = 65536,
        handler_threads: int = 4,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        if not 16 <= max_datagram <= 65507:
            raise ValueError("max_datagram must be 16..=65507 bytes")
        addr = parse_address(bind if "://" in bind else "udp://" + bind)
        family, sockaddr = resolve_udp(addr.host, addr.port)
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self.sock.bind(sockaddr)
        except OSError as e:
            self.sock.close()
            raise Disconnected(f"cannot bind UDP {bind}: {e.strerror or e}") from e
        self.sock.settimeout(_POLL)
        self.local_addr: SockAddr = self.sock.getsockname()
        self.timeout = timeout
        self.retry = retry
        self.max_datagram = max_datagram
        self.stats = Stats()
        self._encoder = Encoder(stats=self.stats)
        self._dedup = DedupCache(dedup_window, dedup_capacity)
        self._dedup_lock = threading.Lock()
        self._routes: Dict[str, Handler] = {}
        self._no_retry: Set[str] = set()
        self._pending: Dict[int, _UdpPending] = {}
        self._seq = first_udp_seq()
        self._seq_lock = threading.Lock()
        self._closed = False
        self._pool = ThreadPoolExecutor(handler_threads, thread_name_prefix="ringrpc-udp-handler")
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._thread = threading.Thread(target=self._receive, name="ringrpc-udp", daemon=True)
        self._thread.start()

    # ---- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Stops serving; pending calls fail at once with :class:`Disconnected`."""
        if self._closed:
            return
        self._closed = True
        for seq in list(self._pending):
            p = self._pending.pop(seq, None)
            if p is not None:
                p.lock.release()
        if self._thread is not threading.current_thread():
            self._thread.join(2 * _POLL + 1)
        self._pool.shutdown(wait=False)
        self.sock.close()

    def __enter__(self) -> "UdpEndpoint":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- serving ---------------------------------------------------------------------

    def route(self, method: str, handler: Optional[Handler]) -> None:
        """Serves Requests and Notifies for ``method`` with ``handler(payload, ctx)``
        (``ctx.peer`` is the sender's address); ``None`` removes it."""
        if handler is None:
            self._routes.pop(method, None)
        else:
            self._routes[method] = handler

    def no_retry(self, method: str) -> None:
        """Calls to ``method`` are sent once, never resent."""
        self._no_retry.add(method)

    def _receive(self) -> None:
        while not self._closed:
            try:
                data, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                if self._closed:
                    return
                continue  # e.g. ICMP port unreachable from an earlier send: keep serving
            try:
                f = decode_datagram(data, _MAX_DATAGRAM_BODY)
            except ProtocolError:
                self.stats.malformed += 1
                continue
            self.stats.frames_in += 1
            self._on_frame(f, addr)

    def _on_frame(self, f: Frame, addr: SockAddr) -> None:
        if f.cmd == RESPONSE:
            p = self._pending.get(f.seq)
            if p is None:
                self.stats.duplicates += 1  # a late or repeated answer
            elif not same_address(p.peer, addr):
                self.stats.foreign += 1  # not from the peer this call went to: dropped
            elif self._pending.pop(f.seq, None) is p:
                p.frame = f
                p.lock.release()
        elif f.cmd == REQUEST:
            with self._dedup_lock:
                state, cached = self._dedup.begin(addr[:2], f.seq, time.monotonic())
            if state == ANSWERED and cached is not None:
                self._sendto(cached, addr)
            if state != NEW:
                self.stats.duplicates += 1
                return
            if not self._slots.acquire(blocking=False):
                self.stats.dropped += 1  # too busy: dropped unanswered, a resend may run it
                with self._dedup_lock:
                    self._dedup.forget(addr[:2], f.seq)
                return
            self._pool.submit(self._serve, f, addr)
        elif f.cmd == NOTIFY:
            if f.method in self._routes and f.metadata_error is None:
                if self._slots.acquire(blocking=False):
                    self._pool.submit(self._serve, f, addr)
                else:
                    self.stats.dropped += 1
        elif f.cmd == PING:
            self.stats.pings_answered += 1
            self._sendto(self._encoder.frame(PONG, 0, ""), addr)

    def _serve(self, f: Frame, addr: SockAddr) -> None:
        try:
            self._serve_one(f, addr)
        finally:
            self._slots.release()

    def _serve_one(self, f: Frame, addr: SockAddr) -> None:
        handler = self._routes.get(f.method)
        ctx = Context(f.method, f.seq, f.metadata, f.user_flags, f.is_async, f.cmd == NOTIFY, addr)
        if f.metadata_error is not None:
            body, is_error = f.metadata_error.encode(), True
        elif handler is None:
            body, is_error = METHOD_NOT_FOUND.encode(), True
        else:
            try:
                body, is_error = reply_bytes(handler(f.payload, ctx)), False
            except Exception as e:  # the handler's failure is the caller's error text
                body, is_error = error_text(e).encode(), True
        if f.cmd != REQUEST:
            return
        flag = (FLAG_ERROR if is_error else 0) | (f.flag & FLAG_ASYNC)
        md = None if is_error else ctx.reply_metadata
        answer = self._encoder.frame(RESPONSE, f.seq, f.method, body, flag=flag, metadata=md)
        if len(answer) > self.max_datagram:
            text = f"response of {len(answer)} bytes does not fit one datagram (max {self.max_datagram})"
            answer = self._encoder.frame(RESPONSE, f.seq, f.method, text.encode(),
                                         flag=FLAG_ERROR | (f.flag & FLAG_ASYNC))
        with self._dedup_lock:
            self._dedup.finish(addr[:2], f.seq, answer)
        self._sendto(answer, addr)

    def _sendto(self, data: bytes, addr: SockAddr) -> None:
        try:
            self.sock.sendto(data, addr)
            self.stats.frames_out += 1
        except OSError:
            pass  # datagrams may be lost: the caller's retry covers it

    # ---- calling ---------------------------------------------------------------------

    def _next_seq(self) -> int:
        with self._seq_lock:
            self._seq += 1
            return self._seq

    def _datagram(self, cmd: int, seq: int, method: str, payload: bytes) -> bytes:
        data = self._encoder.frame(cmd, seq, method, payload)
        if len(data) > self.max_datagram:
            raise TooLarge(f"frame of {len(data)} bytes does not fit one datagram (max {self.max_datagram})",
                           len(data), self.max_datagram)
        return data

    def call_frame(self, peer: SockAddr, method: str, payload: Optional[Payload] = b"",
                   timeout: Optional[float] = None) -> Frame:
        """Calls ``method`` on ``peer`` (a socket address), resending as :attr:`retry` says;
        returns the Response frame. Raises :class:`CallError`, :class:`Timeout`,
        :class:`TooLarge` or :class:`Disconnected` (endpoint closed)."""
        if self._closed:
            raise Disconnected(f"UDP endpoint closed; call {method} failed")
        timeout = self.timeout if timeout is None else timeout
        seq = self._next_seq()
        data = self._datagram(REQUEST, seq, method, to_bytes(payload))
        p = _UdpPending(peer, method)
        self._pending[seq] = p
        start = time.monotonic()
        self._sendto(data, peer)
        resends = () if method in self._no_retry else self.retry.send_times(timeout)
        for at in resends:
            if p.lock.acquire(timeout=max(0.0, start + at - time.monotonic())):
                break
            self.stats.resends += 1
            self._sendto(data, peer)
        else:
            if not p.lock.acquire(timeout=max(0.0, start + timeout - time.monotonic())):
                if self._pending.pop(seq, None) is p:
                    raise Timeout(f"call {method} to {peer[0]}:{peer[1]} got no answer within {timeout} s")
                p.lock.acquire()
        if p.frame is None:
            raise Disconnected(f"UDP endpoint closed; call {method} failed")
        f = p.frame
        if f.is_error:
            raise CallError(f.payload.decode("utf-8", "replace"), method)
        return f

    def call(self, peer: SockAddr, method: str, payload: Optional[Payload] = b"",
             timeout: Optional[float] = None) -> bytes:
        """As :meth:`call_frame`, returning the answer's payload."""
        return self.call_frame(peer, method, payload, timeout).payload

    def notify(self, peer: SockAddr, method: str, payload: Optional[Payload] = b"") -> None:
        """Sends a Notify to ``peer``: fire and forget, not retried, may be lost."""
        if self._closed:
            raise Disconnected(f"UDP endpoint closed; notify {method} failed")
        self._sendto(self._datagram(NOTIFY, 0, method, to_bytes(payload)), peer)


class UdpClient:
    """A UDP endpoint on an ephemeral port calling one peer: what ``ringrpc.connect`` returns
    for ``udp://host:port``. Same call API as :class:`~ringrpc.Client`."""

    def __init__(self, address: str, *, timeout: float = 5.0, retry: Retry = Retry(),
                 max_datagram: int = DEFAULT_MAX_DATAGRAM, handler_threads: int = 4,
                 password: Optional[Payload] = None) -> None:
        if password is not None:
            raise ValueError("there is no authentication over UDP (docs/protocol.md): connect over tcp:// or ws://")
        addr = parse_address(address)
        if addr.scheme != "udp":
            raise ValueError(f"{address!r} is not a udp:// address")
        family, self.peer = resolve_udp(addr.host, addr.port)
        self.address = addr
        bind = "[::]:0" if family == socket.AF_INET6 else "0.0.0.0:0"
        self.endpoint = UdpEndpoint(bind, timeout=timeout, retry=retry, max_datagram=max_datagram,
                                    handler_threads=handler_threads)
        self.timeout = timeout
        self.stats = self.endpoint.stats

    def call(self, method: str, payload: Optional[Payload] = b"", timeout: Optional[float] = None) -> bytes:
        return self.endpoint.call(self.peer, method, payload, timeout)

    def call_json(self, method: str, obj: Any = None, timeout: Optional[float] = None) -> Any:
        return loads_json(self.call(method, dumps_json(obj), timeout))

    def call_msgpack(self, method: str, obj: Any = None, timeout: Optional[float] = None) -> Any:
        return loads_msgpack(self.call(method, dumps_msgpack(obj), timeout))

    def notify(self, method: str, payload: Optional[Payload] = b"") -> None:
        self.endpoint.notify(self.peer, method, payload)

    def route(self, method: str, handler: Optional[Handler]) -> None:
        """Serves Requests the peer (or anyone) sends to this client's port."""
        self.endpoint.route(method, handler)

    @property
    def local_addr(self) -> SockAddr:
        return self.endpoint.local_addr

    def close(self) -> None:
        self.endpoint.close()

    def __enter__(self) -> "UdpClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

