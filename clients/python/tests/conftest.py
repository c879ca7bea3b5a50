"""Test support: runs the real ``engine`` binary and the ``client_peer`` example (the Rust
side of server-started traffic) as child processes on ports the kernel picks.

The binaries are $RINGRPC_ENGINE and $RINGRPC_CLIENT_PEER, else under $CARGO_TARGET_DIR
(or the repository's target/)/debug; ``clients/python/run-tests.sh`` builds both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[3]


def _binary(env: str, rel: str) -> str:
    if os.environ.get(env):
        return os.environ[env]
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    path = target / "debug" / rel
    if not path.exists():
        pytest.fail(f"{path} not found: run clients/python/run-tests.sh (it builds it) or set {env}")
    return str(path)


class Proc:
    """A child process that printed ``... listening on ADDR [udp:ADDR] ...`` on its first line."""

    def __init__(self, argv: List[str]) -> None:
        self.argv = argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if " listening on " not in line:
            self.kill()
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise RuntimeError(f"{argv[0]} did not start: {line!r} {err}")
        words = line.split(" listening on ", 1)[1].split()
        self.addrs: Dict[str, str] = {}
        for w in words:
            if w == "with":
                break
            kind, _, rest = w.partition(":") if w.startswith(("udp:", "ws:", "metrics:")) else ("tcp", "", w)
            self.addrs.setdefault(kind, rest)
        self.addr = self.addrs["tcp"] if "tcp" in self.addrs else ""
        self.port = int(self.addr.rsplit(":", 1)[1]) if self.addr else 0

    @property
    def udp(self) -> str:
        return self.addrs["udp"]

    @property
    def ws(self) -> str:
        return f"ws://{self.addr}/ws"

    def pause(self) -> None:
        """SIGSTOP, then waits until every thread is stopped (so nothing more is answered)."""
        self.proc.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            tasks = Path(f"/proc/{self.proc.pid}/task")
            states = []
            for t in tasks.iterdir():
                stat = (t / "stat").read_text()
                states.append(stat[stat.rindex(")") + 2])
            if all(s == "T" for s in states):
                return
            time.sleep(0.01)
        raise RuntimeError("the engine did not stop")

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


def start_engine(*args: str, port: int = 0, udp: bool = False) -> Proc:
    argv = [_binary("RINGRPC_ENGINE", "engine"), "--cores", "1", "--no-pin", "--listen", f"127.0.0.1:{port}",
            "--log", "warn", *args]
    if udp:
        argv += ["--udp-listen", "127.0.0.1:0"]
    deadline = time.monotonic() + 10
    while True:
        try:
            return Proc(argv)
        except RuntimeError as e:
            # A killed engine's io_uring is torn down after the process is gone, and its
            # listening socket with it: restarting on the same port may have to wait.
            if port == 0 or "already in use" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(scope="session")
def engine() -> Iterator[Proc]:
    """One engine for the session: TCP with WebSocket, UDP, pub/sub."""
    e = start_engine("--pubsub", udp=True)
    yield e
    e.kill()


@pytest.fixture
def engine_factory() -> Iterator[Callable[..., Proc]]:
    """Starts engines of the test's own (killed at the end)."""
    started: List[Proc] = []

    def make(*args: str, port: int = 0, udp: bool = False) -> Proc:
        e = start_engine(*args, port=port, udp=udp)
        started.append(e)
        return e

    yield make
    for e in started:
        e.resume()
        e.kill()


@pytest.fixture(scope="session")
def peer() -> Iterator[Proc]:
    """The client_peer example: a server that calls, notifies and streams to its clients."""
    p = Proc([_binary("RINGRPC_CLIENT_PEER", "examples/client_peer"), "serve"])
    yield p
    p.kill()


def client_peer_argv(*args: str) -> List[str]:
    return [_binary("RINGRPC_CLIENT_PEER", "examples/client_peer"), *args]


def transports(e: Proc) -> List[str]:
    return [e.addr, f"tcp://{e.addr}", e.ws]


def wait_until(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def free_port() -> int:
    """A free port below the ephemeral range: a client reconnecting to a port nobody listens
    on may otherwise be given that very port as its source and connect to itself (TCP
    simultaneous open), taking the port from the engine about to restart there."""
    import random
    import socket

    low = 32768
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    for _ in range(100):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


class Lines:
    """The stdout lines of a child process, read by a thread of its own."""

    def __init__(self, proc: "subprocess.Popen[bytes]") -> None:
        import queue
        import threading

        self._q: "queue.Queue[str]" = queue.Queue()
        self._proc = proc

        def pump() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                self._q.put(raw.decode().rstrip("\n"))

        threading.Thread(target=pump, daemon=True).start()

    def get(self, timeout: float = 10.0) -> Optional[str]:
        import queue

        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None
