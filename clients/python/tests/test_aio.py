"""The asyncio client against the real engine (and the client_peer example for what the
server starts), over raw TCP and WebSocket."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest

from ringrpc import CallError, Disconnected, Reconnect, Timeout, aio

from conftest import Lines, client_peer_argv, free_port, transports


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


@pytest.fixture(params=["tcp", "ws"])
def address(request, engine):
    return engine.addr if request.param == "tcp" else engine.ws


def test_call_kinds(address):
    async def main():
        async with await aio.connect(address, timeout=10) as c:
            assert await c.call("/echo", b"hello") == b"hello"
            assert await c.call("/echo", "wörld") == "wörld".encode()
            big = bytes(range(256)) * 300
            assert await c.call("/echo", big) == big
            assert await c.call_json("/echo", [1, {"a": "b"}]) == [1, {"a": "b"}]
            assert await c.call_msgpack("/echo", {"x": 1.5}) == {"x": 1.5}
            await c.notify("/echo", b"nobody answers")
            payload, md = await c.call_with_metadata("/echo", b"m", metadata=[("k", "v")])
            assert payload == b"m" and md is None
            with pytest.raises(CallError, match="^method not found$"):
                await c.call("/nope")
            assert await c.ping(5) < 5
            assert await c.call("/echo", b"after") == b"after"

    run(main())


def test_ten_thousand_concurrent_calls_on_one_connection(engine):
    async def main():
        async with await aio.connect(engine.addr, timeout=30) as c:
            n = 10_000
            answers = await asyncio.gather(*(c.call("/echo", b"call %d" % i) for i in range(n)))
            assert answers == [b"call %d" % i for i in range(n)]
            assert c._seq > n and not c._pending

    run(main())


def test_streams(address):
    async def main():
        async with await aio.connect(address, timeout=10) as c:
            s = c.open_stream("/echo/stream")
            await s.send(b"a")
            await s.send("b")
            await s.send(b"")  # carries nothing: not sent
            await s.close_send()
            assert [chunk async for chunk in s] == [b"a", b"b"]
            assert s.recv_closed and s.send_closed and not c._streams
            s = await c.request_stream("/echo/stream", b"question")
            assert await s.read_all() == b"question"
            s = c.open_stream("/no/such/stream")
            await s.send(b"x")
            with pytest.raises(CallError, match="stream method not found"):
                await s.recv()

    run(main())


def test_a_slow_stream_consumer_bounds_what_is_buffered(engine):
    limit = 64 * 1024
    total = 32 * 1024 * 1024

    async def main():
        async with await aio.connect(engine.addr, timeout=30, stream_queue_bytes=limit) as c:
            s = c.open_stream("/echo/stream")

            async def produce():
                chunk = b"x" * 65536
                for _ in range(total // len(chunk)):
                    await s.send(chunk)
                await s.close_send()

            producer = asyncio.ensure_future(produce())
            await asyncio.sleep(1.0)
            # Nothing read yet: reading stopped once the inbox passed the limit (plus at most
            # one receive), and the producer is held back by TCP instead of buffering 32 MiB.
            assert s._inbox_bytes <= limit + 256 * 1024 + 65536
            assert not producer.done()
            got = 0
            async for chunk in s:
                got += len(chunk)
            await producer
            assert got == total

    run(main())


def test_pubsub_across_python_and_rust_subscribers(engine):
    async def main():
        rust = subprocess.Popen(client_peer_argv("subscribe", engine.addr, "news"), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE)
        lines = Lines(rust)
        try:
            assert lines.get() == "subscribed"
            for address in (engine.addr, engine.ws):
                async with await aio.connect(address, timeout=10) as pub, await aio.connect(address) as sub_client:
                    sub = await sub_client.subscribe("news")
                    await pub.publish("news", b"from python via " + address.encode())
                    msg = await sub.get()
                    assert msg.name == "news" and msg.data == b"from python via " + address.encode()
                    assert abs(msg.timestamp - time.time_ns()) < 60 * 10**9
                    assert lines.get() == "from python via " + address
                    # A Rust publisher reaches the Python subscriber.
                    subprocess.run(client_peer_argv("publish", engine.addr, "news", "from rust"), check=True,
                                   timeout=30)
                    assert (await sub.get()).data == b"from rust"
                    assert lines.get() == "from rust"
                    await sub.unsubscribe()
                    assert await sub.get() is None
        finally:
            rust.kill()
            rust.wait()

    run(main())


def test_subscribe_as_an_async_iterator(engine):
    async def main():
        async with await aio.connect(engine.addr) as c:
            got = []

            async def listen():
                async for msg in c.subscribe("iter"):
                    got.append(msg.text())
                    if len(got) == 3:
                        return

            listener = asyncio.ensure_future(listen())
            while "iter" not in c._topics or c._topics["iter"] and next(iter(c._topics["iter"]))._ready.done() is False:
                await asyncio.sleep(0.01)
            for word in ("a", "b", "c"):
                await c.publish("iter", word)
            await asyncio.wait_for(listener, 10)
            assert got == ["a", "b", "c"]

    run(main())


def test_server_started_calls_notifies_broadcasts_and_streams(peer):
    async def main():
        for address in (peer.addr, peer.ws):
            async with await aio.connect(address, timeout=10) as c:
                heard = asyncio.Queue()

                async def upper(payload, ctx):
                    await asyncio.sleep(0.01)
                    return payload.upper()

                async def fail(payload, ctx):
                    raise RuntimeError("no way")

                async def news(payload, ctx):
                    await heard.put((payload, ctx.is_notify))

                async def shout(stream, ctx):
                    async for chunk in stream:
                        await stream.send(chunk.upper())

                c.route("/py/upper", upper)
                c.route("/py/fail", fail)
                c.route("/py/news", news)
                c.route_stream("/py/shout", shout)
                assert await c.call("/srv/call", b"/py/upper\nhi there") == b"HI THERE"
                with pytest.raises(CallError, match="no way"):
                    await c.call("/srv/call", b"/py/fail\nx")
                with pytest.raises(CallError, match="method not found"):
                    await c.call("/srv/call", b"/py/none\nx")
                assert await c.call("/srv/notify", b"/py/news\nn1") == b"sent"
                assert await c.call("/srv/broadcast", b"/py/news\nb1") == b"sent"
                got = sorted([await asyncio.wait_for(heard.get(), 10) for _ in range(2)])
                assert got == [(b"b1", True), (b"n1", True)]
                assert await c.call("/srv/stream", b"/py/shout\na\nb\nc") == b"A|B|C"
                with pytest.raises(CallError, match="stream method not found"):
                    await c.call("/srv/stream", b"/py/nothing\na")

    run(main())


def test_timeout_and_disconnect(engine_factory):
    async def main():
        e = engine_factory()
        for address in transports(e)[::2]:
            async with await aio.connect(address, timeout=5) as c:
                e.pause()
                try:
                    t0 = time.monotonic()
                    with pytest.raises(Timeout):
                        await c.call("/echo", b"never", timeout=0.3)
                    assert time.monotonic() - t0 < 3
                finally:
                    e.resume()
                assert await c.call("/echo", b"again") == b"again"
        c = await aio.connect(e.addr, timeout=60)
        e.pause()
        calls = [asyncio.ensure_future(c.call("/echo", b"x")) for _ in range(20)]
        stream = c.open_stream("/echo/stream")
        await stream.send(b"y")
        await asyncio.sleep(0.1)
        e.kill()
        results = await asyncio.wait_for(asyncio.gather(*calls, stream.recv(), return_exceptions=True), 5)
        assert all(isinstance(r, Disconnected) for r in results), results
        with pytest.raises(Disconnected):
            await c.call("/echo", b"z")
        await c.close()

    run(main())


def test_reconnect_restores_subscriptions(engine_factory, tmp_path):
    port = free_port()
    pw = tmp_path / "pw"
    pw.write_text("psk\n")
    args = ("--pubsub", "--pubsub-password-file", str(pw))
    e = engine_factory(*args, port=port)

    async def main():
        nonlocal e
        for address in (f"127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws"):
            c = await aio.connect(address, reconnect=Reconnect(initial=0.05, max=0.2), pubsub_password="psk")
            sub = await c.subscribe("t")
            await c.publish("t", b"one")
            assert (await sub.get()).data == b"one"
            e.kill()
            e = engine_factory(*args, port=port)
            assert await c.wait_connected(10)
            # Re-authenticated (in_A) and re-subscribed (in_S) before publishing works.
            for _ in range(200):
                if c.stats.frames_in >= 5:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            await c.publish("t", b"two")
            assert (await asyncio.wait_for(sub.get(), 5)).data == b"two"
            assert c.stats.reconnects == 1
            await c.close()
            with pytest.raises(Disconnected):
                await sub.get()

    run(main())


def test_password_refused_and_wrong_pubsub_password(engine_factory, tmp_path):
    secret = tmp_path / "s"
    secret.write_text("k")
    e = engine_factory("--auth-secret-file", str(secret))

    async def main():
        async with await aio.connect(e.ws, password="k") as c:
            assert await c.call("/echo", b"ok") == b"ok"
        with pytest.raises(CallError, match="authentication required"):
            await aio.connect(e.addr, password="no")

    run(main())


def test_server_calls_past_max_in_flight_are_refused_at_once(peer):
    async def main():
        async with await aio.connect(peer.addr, timeout=10, max_in_flight=2) as c:
            release = asyncio.Event()

            async def slow(payload, ctx):
                await release.wait()
                return b"done"

            c.route("/py/slow", slow)
            calls = [asyncio.ensure_future(c.call("/srv/call", b"/py/slow\nx")) for _ in range(3)]
            done, _ = await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
            with pytest.raises(CallError, match="too many requests in flight on this connection"):
                await done.pop()
            release.set()
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
            assert [o for o in outcomes if isinstance(o, bytes)] == [b"done", b"done"]

    run(main())
