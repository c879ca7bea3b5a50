"""UDP: the clients against the engine's UDP port, resends through a lossy relay, the
Python endpoint serving routes to the Rust UdpEndpoint, and answers from the wrong address."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

import ringrpc
from ringrpc import CallError, Retry, Timeout, TooLarge, UdpEndpoint, aio
from ringrpc.aio_udp import UdpEndpoint as AioUdpEndpoint
from ringrpc.protocol import REQUEST, RESPONSE, decode_datagram, encode_frame

from conftest import wait_until


def test_sync_udp_client_against_the_engine(engine):
    with ringrpc.connect(f"udp://{engine.udp}", timeout=5) as c:
        assert c.call("/echo", b"over udp") == b"over udp"
        assert c.call_json("/echo", {"n": 1}) == {"n": 1}
        assert c.call_msgpack("/echo", [1, 2]) == [1, 2]
        with pytest.raises(CallError, match="^method not found$"):
            c.call("/nope")
        c.notify("/echo", b"fire and forget")
        with pytest.raises(TooLarge, match="does not fit one datagram"):
            c.call("/echo", bytes(1500))
        assert c.call("/echo", bytes(1400)) == bytes(1400)


def test_aio_udp_client_against_the_engine(engine):
    async def main():
        async with await aio.connect(f"udp://{engine.udp}", timeout=5) as c:
            answers = await asyncio.gather(*(c.call("/echo", b"u%d" % i) for i in range(200)))
            assert answers == [b"u%d" % i for i in range(200)]
            with pytest.raises(CallError, match="method not found"):
                await c.call("/nope")
            with pytest.raises(TooLarge):
                await c.call("/echo", bytes(2000))
            await c.notify("/echo", b"n")

    asyncio.run(main())


class LossyRelay:
    """Forwards datagrams between one client and a server, dropping the first ``drop``
    requests and recording every request it saw."""

    def __init__(self, server: str, drop: int) -> None:
        host, port = server.rsplit(":", 1)
        self.server = (host, int(port))
        self.drop = drop
        self.seen = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.addr = "%s:%d" % self.sock.getsockname()
        self.client = None
        self.running = True
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while self.running:
            try:
                data, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            if addr == self.server:
                if self.client:
                    self.sock.sendto(data, self.client)
                continue
            self.client = addr
            self.seen.append(data)
            if len(self.seen) <= self.drop:
                continue
            self.sock.sendto(data, self.server)

    def close(self) -> None:
        self.running = False
        self.thread.join()
        self.sock.close()


def test_lost_requests_are_resent_unchanged(engine):
    relay = LossyRelay(engine.udp, drop=2)
    try:
        with ringrpc.connect(f"udp://{relay.addr}", timeout=5) as c:
            t0 = time.monotonic()
            assert c.call("/echo", b"third time lucky") == b"third time lucky"
            # Sent at 0, 20 ms and 60 ms: the third send went through.
            assert 0.05 <= time.monotonic() - t0 < 2
            assert c.stats.resends == 2
            assert len(relay.seen) == 3 and relay.seen[0] == relay.seen[1] == relay.seen[2]
    finally:
        relay.close()


def test_aio_resends_too():
    async def main():
        server = await AioUdpEndpoint.create("127.0.0.1:0")
        server.route("/up", lambda payload, ctx: payload.upper())
        relay = LossyRelay("%s:%d" % server.local_addr, drop=1)
        try:
            async with await aio.connect(f"udp://{relay.addr}", timeout=5) as c:
                assert await c.call("/up", b"x") == b"X"
                assert c.stats.resends == 1
        finally:
            relay.close()
            server.close()

    asyncio.run(main())


def test_unanswered_udp_call_times_out_after_five_sends():
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    try:
        with ringrpc.connect("udp://%s:%d" % silent.getsockname(), timeout=1) as c:
            t0 = time.monotonic()
            with pytest.raises(Timeout, match="no answer within 1"):
                c.call("/echo", b"anyone?")
            assert 0.95 <= time.monotonic() - t0 < 3
            assert c.stats.resends == 4  # 5 sends in all: 0, 20, 60, 140, 300 ms
    finally:
        silent.close()


def test_python_endpoint_serves_the_rust_udp_endpoint_once_per_call(peer):
    served = []
    with UdpEndpoint("127.0.0.1:0") as ep:
        def slow(payload, ctx):
            served.append(ctx.seq)
            time.sleep(0.15)  # the Rust caller resends at 20, 60, 140 ms meanwhile
            return b"served " + payload

        ep.route("/py/slow", slow)
        ep.route("/py/fail", lambda p, ctx: 1 / 0)
        addr = "%s:%d" % ep.local_addr
        with ringrpc.connect(peer.addr, timeout=10) as c:
            assert c.call("/srv/udp-call", f"{addr}\n/py/slow\nonce".encode()) == b"served once"
            assert len(served) == 1, "the handler ran once whatever the resends"
            assert ep.stats.duplicates >= 2
            with pytest.raises(CallError, match="division by zero"):
                c.call("/srv/udp-call", f"{addr}\n/py/fail\nx".encode())
            with pytest.raises(CallError, match="method not found"):
                c.call("/srv/udp-call", f"{addr}\n/py/none\nx".encode())


def test_aio_endpoint_serves_the_rust_udp_endpoint(peer):
    async def main():
        ep = await AioUdpEndpoint.create("127.0.0.1:0")
        runs = []

        async def handler(payload, ctx):
            runs.append(ctx.peer)
            await asyncio.sleep(0.1)
            return payload[::-1]

        ep.route("/py/rev", handler)
        try:
            async with await aio.connect(peer.addr, timeout=10) as c:
                addr = "%s:%d" % ep.local_addr
                assert await c.call("/srv/udp-call", f"{addr}\n/py/rev\nabc".encode()) == b"cba"
                assert len(runs) == 1
        finally:
            ep.close()

    asyncio.run(main())


def test_answers_from_the_wrong_address_are_dropped():
    """A forged answer from another port, with the right seq, must not complete the call."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    forger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    forger.bind(("127.0.0.1", 0))

    def respond() -> None:
        data, client = server.recvfrom(65535)
        f = decode_datagram(data)
        forger.sendto(encode_frame(RESPONSE, f.seq, f.method, b"forged"), client)
        time.sleep(0.05)
        server.sendto(encode_frame(RESPONSE, f.seq, f.method, b"genuine"), client)

    t = threading.Thread(target=respond)
    t.start()
    try:
        with ringrpc.connect("udp://%s:%d" % server.getsockname(), timeout=5,
                             retry=Retry(first_after=1.0)) as c:
            assert c.call("/q", b"?") == b"genuine"
            assert c.stats.foreign == 1
    finally:
        t.join()
        server.close()
        forger.close()


def test_garbage_datagrams_are_dropped_and_counted():
    with UdpEndpoint("127.0.0.1:0") as ep:
        ep.route("/ok", lambda p, ctx: b"ok")
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        one = encode_frame(REQUEST, 1, "/ok")
        for junk in (b"garbage", one + one, one[:-1], b"\xff" * 16):
            s.sendto(junk, ep.local_addr)
        wait_until(lambda: ep.stats.malformed == 4, what="4 malformed datagrams")
        s.close()
        with ringrpc.connect("udp://%s:%d" % ep.local_addr) as c:
            assert c.call("/ok") == b"ok"
