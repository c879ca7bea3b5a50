"""Calls/s and latency of the Python client against an engine, beside plain blocking sockets
(the gevent-style approach: struct-packed frames, sendall, recv, nothing else).

    python clients/python/bench.py --engine target/release/engine     # starts it on CPU 0
    python clients/python/bench.py --target 127.0.0.1:8888            # or an engine of yours

The client runs on CPU 1 (the engine started here on CPU 0, one core). Each round runs
every mode for --duration seconds, in turn; the report gives each mode's median over the
rounds of calls/s, p50, p99 and the client's CPU time per call (setup included).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import struct
import subprocess
import threading
import time
from typing import Callable, Dict, List, Tuple

import ringrpc

HEAD = struct.Struct("<IBBBBQ")
METHOD = b"/echo"


def percentile(sorted_ns: List[int], p: float) -> float:
    if not sorted_ns:
        return float("nan")
    return sorted_ns[min(len(sorted_ns) - 1, int(len(sorted_ns) * p))] / 1000.0


Result = Tuple[float, float, float, float]  # calls/s, p50 us, p99 us, client CPU us per call


def finish(lat: List[int], seconds: float, cpu_start: float) -> Result:
    """``cpu_start``: this process's CPU time when the mode started (setup included)."""
    cpu = time.process_time() - cpu_start
    lat.sort()
    n = max(1, len(lat))
    return len(lat) / seconds, percentile(lat, 0.50), percentile(lat, 0.99), cpu / n * 1e6


def threads_loop(n: int, seconds: float, make: Callable[[], Callable[[], None]]) -> Result:
    """``n`` threads, each calling its ``make()``'d function in a closed loop."""
    cpu_start = time.process_time()
    lats: List[List[int]] = [[] for _ in range(n)]
    calls = [make() for _ in range(n)]
    start = threading.Barrier(n + 1)
    stop_at = [0.0]

    def run(i: int) -> None:
        call, lat = calls[i], lats[i]
        start.wait()
        clock = time.perf_counter_ns
        while True:
            t0 = clock()
            call()
            t1 = clock()
            if t1 > stop_at[0]:
                return
            lat.append(t1 - t0)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    stop_at[0] = time.perf_counter_ns() + seconds * 1e9
    start.wait()
    for t in ts:
        t.join()
    return finish([x for lat in lats for x in lat], seconds, cpu_start)


def plain_socket_call(addr: Tuple[str, int], payload: bytes) -> Callable[[], None]:
    """One blocking socket, one call at a time: frame packed by hand, answer read whole."""
    sock = socket.create_connection(addr)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    seq = [0]

    def call() -> None:
        seq[0] += 1
        sock.sendall(HEAD.pack(len(METHOD) + len(payload), 0, 1, 0, len(METHOD), seq[0]) + METHOD + payload)
        head = b""
        while len(head) < 16:
            head += sock.recv(16 - len(head))
        body_len, _, _, flag, _, got_seq = HEAD.unpack(head)
        body = b""
        while len(body) < body_len:
            body += sock.recv(body_len - len(body))
        if got_seq != seq[0] or flag & 1:
            raise RuntimeError("bad answer")

    return call


def sync_mode(target: str, threads: int, payload: bytes, seconds: float) -> Result:
    client = ringrpc.connect(target, timeout=10)
    try:
        return threads_loop(threads, seconds, lambda: lambda: client.call("/echo", payload))
    finally:
        client.close()


def plain_mode(target: str, threads: int, payload: bytes, seconds: float) -> Result:
    host, port = target.rsplit(":", 1)
    return threads_loop(threads, seconds, lambda: plain_socket_call((host, int(port)), payload))


def aio_mode(target: str, conns: int, in_flight: int, payload: bytes, seconds: float) -> Result:
    async def main() -> Result:
        cpu_start = time.process_time()
        clients = [await ringrpc.aio.connect(target, timeout=10) for _ in range(conns)]
        lat: List[int] = []
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + seconds

        async def worker(c: ringrpc.aio.Client) -> None:
            clock = time.perf_counter_ns
            while loop.time() < stop_at:
                t0 = clock()
                await c.call("/echo", payload)
                lat.append(clock() - t0)

        await asyncio.gather(*(worker(c) for c in clients for _ in range(in_flight)))
        for c in clients:
            await c.close()
        return finish(lat, seconds, cpu_start)

    return asyncio.run(main())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", help="HOST:PORT of a running engine")
    ap.add_argument("--engine", help="engine binary to start (one core, CPU 0)")
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--payload", type=int, default=32)
    ap.add_argument("--client-cpu", type=int, default=1)
    args = ap.parse_args()
    proc = None
    target = args.target
    if args.engine:
        proc = subprocess.Popen(["taskset", "-c", "0", args.engine, "--cores", "1", "--no-pin", "--listen",
                                 "127.0.0.1:0", "--log", "warn"], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        target = proc.stdout.readline().decode().split()[3]
    if not target:
        ap.error("give --target or --engine")
    if hasattr(os, "sched_setaffinity") and args.client_cpu is not None:
        os.sched_setaffinity(0, {args.client_cpu})
    payload = bytes(args.payload)
    modes: Dict[str, Callable[[], Result]] = {
        "sync client, 1 thread": lambda: sync_mode(target, 1, payload, args.duration),
        "sync client, 8 threads, 1 conn": lambda: sync_mode(target, 8, payload, args.duration),
        "asyncio client, 8 conns x 10 in flight": lambda: aio_mode(target, 8, 10, payload, args.duration),
        "plain sockets, 1 thread": lambda: plain_mode(target, 1, payload, args.duration),
        "plain sockets, 8 threads x 1 conn each": lambda: plain_mode(target, 8, payload, args.duration),
    }
    results: Dict[str, List[Result]] = {name: [] for name in modes}
    try:
        for r in range(args.rounds):
            for name, run in modes.items():
                results[name].append(run())
                cps, p50, p99, cpu = results[name][-1]
                print(f"round {r + 1}: {name:40} {cps:8.0f} calls/s  p50 {p50:7.1f} us  p99 {p99:8.1f} us"
                      f"  client CPU {cpu:5.1f} us/call", flush=True)
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
    print(f"\nmedians of {args.rounds} rounds, {args.duration} s each, {args.payload} B payloads:")
    print("| mode | calls/s | p50 µs | p99 µs | client CPU µs/call |\n| --- | ---: | ---: | ---: | ---: |")
    for name, rs in results.items():
        med = [statistics.median(x[i] for x in rs) for i in range(4)]
        print(f"| {name} | {med[0]:.0f} | {med[1]:.0f} | {med[2]:.0f} | {med[3]:.1f} |")


if __name__ == "__main__":
    main()
