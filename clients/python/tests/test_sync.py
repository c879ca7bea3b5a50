"""The blocking client against the real engine, over raw TCP and WebSocket."""

from __future__ import annotations

import threading
import time

import pytest

import ringrpc
from ringrpc import CallError, Disconnected, Timeout

from conftest import free_port, transports, wait_until


@pytest.fixture(params=["host:port", "tcp://", "ws://"])
def address(request, engine):
    return dict(zip(["host:port", "tcp://", "ws://"], transports(engine)))[request.param]


def test_call_kinds(address):
    with ringrpc.connect(address, timeout=10) as c:
        assert c.call("/echo", b"hello") == b"hello"
        assert c.call("/echo", "héllo wörld") == "héllo wörld".encode()
        assert c.call("/echo") == b""
        big = bytes(i * 31 & 0xFF for i in range(70000))
        assert c.call("/echo", big) == big
        assert c.call_json("/echo", {"a": [1, 2, "x"], "b": None}) == {"a": [1, 2, "x"], "b": None}
        assert c.call_msgpack("/echo", {"k": b"\x00\x01", "n": 3}) == {"k": b"\x00\x01", "n": 3}
        c.notify("/echo", b"fire and forget")
        c.notify("/unknown", b"also fine")
        payload, md = c.call_with_metadata("/echo", b"p", metadata={"trace": "abc", "bin": b"\x00\x01"})
        assert payload == b"p" and md is None  # the engine takes the block off
        assert c.call_frame("/echo", b"x", is_async=True, user_flags=0x20).payload == b"x"
        assert c.connected and not c.closed
    assert c.closed and not c.connected


def test_error_response_raises_with_the_server_text(address):
    with ringrpc.connect(address) as c:
        with pytest.raises(CallError) as e:
            c.call("/nope", b"x")
        assert str(e.value) == "method not found" and e.value.method == "/nope"
        assert c.call("/echo", b"still fine") == b"still fine"


def test_many_threads_share_one_connection(address):
    with ringrpc.connect(address, timeout=20) as c:
        errors = []

        def worker(t: int) -> None:
            try:
                for i in range(200):
                    want = f"thread {t} call {i}".encode()
                    assert c.call("/echo", want) == want
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert c.stats.frames_in >= 1600


def test_gzip_both_ways(engine_factory):
    e = engine_factory("--gzip-threshold", "100")
    for addr in transports(e):
        with ringrpc.connect(addr, gzip_threshold=100) as c:
            big = b"compress me " * 1000
            assert c.call("/echo", big) == big  # sent compressed, answered compressed
            assert c.call("/echo", b"small") == b"small"
            assert c.stats.gzip_out == 1


def test_timeout_when_the_engine_never_answers(engine_factory):
    e = engine_factory()
    for addr in transports(e):
        with ringrpc.connect(addr, timeout=5) as c:
            assert c.call("/echo", b"up") == b"up"
            e.pause()
            try:
                t0 = time.monotonic()
                with pytest.raises(Timeout):
                    c.call("/echo", b"never", timeout=0.3)
                assert 0.29 <= time.monotonic() - t0 < 3
            finally:
                e.resume()
            # The late answer is ignored; the connection still works.
            assert c.call("/echo", b"again") == b"again"


def test_disconnect_fails_pending_calls_at_once(engine_factory):
    e = engine_factory()
    c = ringrpc.connect(e.addr, timeout=60)
    e.pause()
    outcomes = []

    def caller(i: int) -> None:
        try:
            c.call("/echo", b"p%d" % i)
            outcomes.append("answered")
        except Disconnected as err:
            outcomes.append(err)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    e.kill()
    for t in threads:
        t.join(10)
    assert time.monotonic() - t0 < 5
    assert len(outcomes) == 10 and all(isinstance(o, Disconnected) for o in outcomes), outcomes
    with pytest.raises(Disconnected, match="not connected"):
        c.call("/echo", b"after")
    c.close()


def test_reconnect_after_an_engine_restart(engine_factory):
    port = free_port()
    e = engine_factory(port=port)
    for addr in (f"127.0.0.1:{port}", f"ws://127.0.0.1:{port}/ws"):
        c = ringrpc.connect(addr, reconnect=ringrpc.Reconnect(initial=0.05, max=0.2), timeout=5)
        assert c.call("/echo", b"before") == b"before"
        e.kill()
        wait_until(lambda: not c.connected, what="the disconnect")
        with pytest.raises(Disconnected):
            c.call("/echo", b"while down")
        e = engine_factory(port=port)
        assert c.wait_connected(10)
        assert c.call("/echo", b"after") == b"after"
        assert c.stats.reconnects == 1
        c.close()


def test_password_is_the_auth_secret(engine_factory, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    e = engine_factory("--auth-secret-file", str(secret))
    for addr in transports(e):
        with ringrpc.connect(addr, password="s3cret") as c:
            assert c.call("/echo", b"in") == b"in"
        with pytest.raises(CallError, match="authentication required"):
            ringrpc.connect(addr, password="wrong")
        with ringrpc.connect(addr, timeout=5) as c:
            with pytest.raises(CallError, match="authentication required"):
                c.call("/echo", b"no secret")


def test_pings_are_answered(engine_factory):
    e = engine_factory("--keepalive", "0.1")
    with ringrpc.connect(e.addr) as c:
        wait_until(lambda: c.stats.pings_answered >= 2, what="two pings")
        assert c.call("/echo", b"alive") == b"alive"


def test_connect_errors_are_clear():
    port = free_port()
    with pytest.raises(Disconnected, match=f"cannot connect to tcp://127.0.0.1:{port}"):
        ringrpc.connect(f"127.0.0.1:{port}", timeout=2)
    with pytest.raises(ValueError, match="unknown transport"):
        ringrpc.connect("http://127.0.0.1:1")
    with pytest.raises(ValueError, match="no valid port"):
        ringrpc.connect("127.0.0.1")


def test_server_calls_notifies_and_broadcasts(peer, tmp_path):
    for addr in transports(peer):
        with ringrpc.connect(addr, timeout=10) as c:
            got = []
            c.route("/py/upper", lambda payload, ctx: payload.upper())

            def fail(payload, ctx):
                raise ValueError("boom")

            c.route("/py/fail", fail)
            c.route("/py/news", lambda payload, ctx: got.append((payload, ctx.is_notify)))
            assert c.call("/srv/call", b"/py/upper\nhello") == b"HELLO"
            with pytest.raises(CallError, match="boom"):
                c.call("/srv/call", b"/py/fail\nx")
            with pytest.raises(CallError, match="method not found"):
                c.call("/srv/call", b"/py/missing\nx")
            assert c.call("/srv/notify", b"/py/news\nnotified") == b"sent"
            assert c.call("/srv/broadcast", b"/py/news\nbroadcast") == b"sent"
            wait_until(lambda: len(got) == 2, what="the notify and the broadcast")
            assert sorted(got) == [(b"broadcast", True), (b"notified", True)]


def test_server_calls_past_max_in_flight_are_refused_at_once(peer):
    with ringrpc.connect(peer.addr, timeout=10, max_in_flight=2) as c:
        release = threading.Event()
        c.route("/py/slow", lambda payload, ctx: release.wait(5) and b"done")
        outcomes = []

        def ask() -> None:
            try:
                outcomes.append(c.call("/srv/call", b"/py/slow\nx"))
            except CallError as e:
                outcomes.append(str(e))
                release.set()

        threads = [threading.Thread(target=ask) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(outcomes, key=str) == [b"done", b"done",
                                             "client answered: peer returned an error: "
                                             "too many requests in flight on this connection"]
