"""Bad servers: garbage, a frame over the client's limit, a zip bomb, a half-closed
connection, a server that never answers or stops mid-frame. Each is a clear exception at
once (or the call's timeout), never a hang or an unbounded buffer; sync and asyncio."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from typing import Callable

import pytest

import ringrpc
from ringrpc import Disconnected, ProtocolError, Timeout, aio
from ringrpc.coders import compress_frame, encode_topic
from ringrpc.protocol import RESPONSE, FrameDecoder, encode_frame

from conftest import wait_until


class FakeServer:
    """A TCP server whose every connection is handled by ``behave(sock, first_request)``."""

    def __init__(self, behave: Callable[[socket.socket, object], None]) -> None:
        self.behave = behave
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.addr = "127.0.0.1:%d" % self.listener.getsockname()[1]
        self.conns = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.conns.append(sock)
            threading.Thread(target=self.handle, args=(sock,), daemon=True).start()

    def handle(self, sock: socket.socket) -> None:
        decoder = FrameDecoder()
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                decoder.feed(data)
                f = decoder.next_frame()
                if f is not None:
                    self.behave(sock, f)
                    return
        except OSError:
            return

    def close(self) -> None:
        self.listener.close()
        for s in self.conns:
            s.close()


def garbage(sock, f):
    sock.sendall(struct.pack("<IBBBBQ", 0, 0, 9, 0, 0, 0))


def oversize(sock, f):
    sock.sendall(struct.pack("<IBBBBQ", 10 << 20, 0, RESPONSE, 0, 0, f.seq) + b"x" * 100)
    time.sleep(5)  # the body never comes: the client must not wait for it


def zip_bomb(sock, f):
    sock.sendall(compress_frame(encode_frame(RESPONSE, f.seq, f.method, bytes(4 << 20)), 0, 9))


def half_close(sock, f):
    sock.shutdown(socket.SHUT_WR)
    time.sleep(5)  # still reading, never writing again


def silent(sock, f):
    time.sleep(5)


def mid_frame(sock, f):
    sock.sendall(encode_frame(RESPONSE, f.seq, f.method, b"abcdef")[:10])
    time.sleep(5)


CASES = [
    (garbage, ProtocolError, "unknown command 9"),
    (oversize, ProtocolError, "declared body of 10485760 bytes exceeds the maximum of 65536"),
    (zip_bomb, ProtocolError, "gzip-compressed frame: compressed frame inflates to a body over the maximum of 65536"),
    (half_close, Disconnected, "closed by the server"),
    (silent, Timeout, "timed out after 0.5 s"),
    (mid_frame, Timeout, "timed out after 0.5 s"),
]


@pytest.mark.parametrize("behave,error,text", CASES, ids=[c[0].__name__ for c in CASES])
def test_sync_client(behave, error, text):
    server = FakeServer(behave)
    try:
        c = ringrpc.connect(server.addr, timeout=0.5, max_body=65536)
        t0 = time.monotonic()
        with pytest.raises(error, match=text) as e:
            c.call("/echo", b"x")
        assert time.monotonic() - t0 < 2, "no hang"
        if error is ProtocolError:
            assert not c.connected
            assert e.value.kind in ("unknown_command", "body_too_large", "gzip")
        c.close()
    finally:
        server.close()


@pytest.mark.parametrize("behave,error,text", CASES, ids=[c[0].__name__ for c in CASES])
def test_aio_client(behave, error, text):
    server = FakeServer(behave)

    async def main():
        c = await aio.connect(server.addr, timeout=0.5, max_body=65536)
        t0 = time.monotonic()
        with pytest.raises(error, match=text):
            await c.call("/echo", b"x")
        assert time.monotonic() - t0 < 2, "no hang"
        if error is not Timeout:
            assert not c.connected
            with pytest.raises(Disconnected):
                await c.call("/echo", b"y")
        await c.close()

    try:
        asyncio.run(main())
    finally:
        server.close()


def test_websocket_message_over_the_client_limit(engine):
    """A publication larger than the subscriber's limit: the WebSocket closes (1009) with
    a clear error instead of buffering it."""
    with ringrpc.connect(engine.addr) as publisher:
        with ringrpc.connect(engine.ws, max_body=1024, timeout=5) as c:
            c.call("in_S", encode_topic("big"))
            publisher.publish("big", bytes(2000))
            wait_until(lambda: not c.connected, what="the disconnect")
            with pytest.raises(Disconnected, match="over the client's limit of 1040 bytes"):
                c.call("/echo", b"y")

        async def main():
            c = await aio.connect(engine.ws, max_body=1024, timeout=5)
            sub = await c.subscribe("big")
            publisher.publish("big", bytes(2000))
            with pytest.raises(ProtocolError, match="over the client's limit") as e:
                await sub.get()
            assert e.value.kind == "body_too_large"
            await c.close()

        asyncio.run(main())


def test_frames_over_the_limit_are_refused_when_sent():
    server = FakeServer(silent)
    try:
        with ringrpc.connect(server.addr, max_body=1024) as c:
            with pytest.raises(ringrpc.TooLarge, match="over the limit of 1024"):
                c.call("/echo", bytes(2000))
    finally:
        server.close()
