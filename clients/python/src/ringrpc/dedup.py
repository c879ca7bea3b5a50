"""UDP's retry schedule and duplicate suppression (docs/protocol.md "Over UDP"), sans-IO:
time comes in as an argument, nothing here touches a socket.

Invariants: the cache holds at most ``capacity`` entries and forgets each after ``window``
seconds; a seq evicted for a peer raises that peer's floor past it, so a late retry of it is
dropped as stale and a handler never runs twice for one call; the floors table holds at most
``capacity`` peers.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Hashable, Iterator, Optional, Tuple

__all__ = ["Retry", "DedupCache", "NEW", "RUNNING", "ANSWERED", "STALE", "first_udp_seq"]

NEW = "new"
RUNNING = "running"
ANSWERED = "answered"
STALE = "stale"


@dataclass(frozen=True)
class Retry:
    """A call unanswered after ``first_after`` seconds is sent again, unchanged (same seq),
    then after twice that, and so on, ``max_attempts`` sends in all, never past the call's
    timeout (the Rust ``UdpEndpoint``'s schedule: 20 ms, 40, 80, ... 5 sends)."""

    first_after: float = 0.02
    max_attempts: int = 5

    def send_times(self, timeout: float) -> Iterator[float]:
        """Offsets from the first send at which to resend, within ``timeout``."""
        at = 0.0
        wait = self.first_after
        for _ in range(self.max_attempts - 1):
            at += wait
            if at >= timeout:
                return
            yield at
            wait *= 2


def first_udp_seq() -> int:
    """Where an endpoint's seqs start: microseconds since the epoch, so a new endpoint that
    happens to reuse a recent one's port still numbers its calls above the old ones (the
    answering side drops seqs below a peer's floor as stale)."""
    return time.time_ns() // 1000


class DedupCache:
    """What each ``(peer, seq)`` Request got, for ``window`` seconds."""

    def __init__(self, window: float = 5.0, capacity: int = 65536) -> None:
        if capacity < 1 or window < 0:
            raise ValueError("dedup capacity must be >= 1 and window >= 0")
        self.window = window
        self.capacity = capacity
        # (peer, seq) -> (time first seen, answer bytes or None while running)
        self._entries: "OrderedDict[Tuple[Hashable, int], Tuple[float, Optional[bytes]]]" = OrderedDict()
        self._floors: "OrderedDict[Hashable, int]" = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _evict(self, now: float) -> None:
        entries = self._entries
        while entries:
            (peer, seq), (at, _) = next(iter(entries.items()))
            if len(entries) <= self.capacity and now - at <= self.window:
                break
            entries.popitem(last=False)
            floor = self._floors.pop(peer, 0)
            self._floors[peer] = max(floor, seq + 1)
            while len(self._floors) > self.capacity:
                self._floors.popitem(last=False)

    def begin(self, peer: Hashable, seq: int, now: float) -> Tuple[str, Optional[bytes]]:
        """Classifies a Request: ``NEW`` (recorded as running: serve it), ``RUNNING`` (a retry
        of one being served: drop it), ``ANSWERED`` (resend the cached answer) or ``STALE``
        (below the peer's floor: drop it)."""
        self._evict(now)
        hit = self._entries.get((peer, seq))
        if hit is not None:
            return (RUNNING, None) if hit[1] is None else (ANSWERED, hit[1])
        if seq < self._floors.get(peer, 0):
            return STALE, None
        self._entries[(peer, seq)] = (now, None)
        self._evict(now)
        return NEW, None

    def finish(self, peer: Hashable, seq: int, answer: bytes) -> None:
        """Records the answer a Request got (if it is still remembered)."""
        hit = self._entries.get((peer, seq))
        if hit is not None:
            self._entries[(peer, seq)] = (hit[0], answer)

    def forget(self, peer: Hashable, seq: int) -> None:
        """Drops a Request that got no answer (a Notify-like outcome), so a retry runs it."""
        self._entries.pop((peer, seq), None)


def same_address(a: Any, b: Any) -> bool:
    """Whether two socket addresses name the same host and port (flow info and scope of
    IPv6 addresses aside)."""
    return bool(a[0] == b[0] and a[1] == b[1])

