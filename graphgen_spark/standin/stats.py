"""Request counters the tests and benchmarks read back through ``/stats``.

Mutated only on the server's event-loop thread; snapshots taken from other
threads are marshalled onto that loop by the server, so no lock is needed.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

_ARRIVALS = 200_000


@dataclass
class Stats:
    requests_total: int = 0  # every POST /v1/chat/completions, faulted and malformed included
    completions_ok: int = 0  # 200 responses carrying a normal completion
    bad_requests: int = 0  # malformed bodies answered with 400
    in_flight: int = 0  # requests holding a concurrency slot right now
    max_in_flight: int = 0
    queued: int = 0  # requests waiting for a slot right now
    max_queued: int = 0
    faults_by_kind: Counter[str] = field(default_factory=Counter)
    by_model: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    # arrival times (event-loop clock) of the last _ARRIVALS requests: rate limits are
    # checked at the endpoint as the most requests in any window
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=_ARRIVALS))

    def busiest(self, window_s: float) -> int:
        """The most requests that arrived within any ``window_s`` seconds."""
        times, most, lo = list(self.arrivals), 0, 0
        for hi, t in enumerate(times):
            while t - times[lo] >= window_s:
                lo += 1
            most = max(most, hi - lo + 1)
        return most

    def enter_queue(self) -> None:
        self.queued += 1
        self.max_queued = max(self.max_queued, self.queued)

    def enter_slot(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def reset(self) -> None:
        """Zero the counters; live gauges (in_flight, queued) keep their current value."""
        self.requests_total = self.completions_ok = self.bad_requests = 0
        self.max_in_flight = self.in_flight
        self.max_queued = self.queued
        self.faults_by_kind.clear()
        self.by_model.clear()
        self.by_status.clear()
        self.arrivals.clear()

    def snapshot(self, distinct_bodies: int) -> dict[str, Any]:
        return {
            "requests_total": self.requests_total,
            "completions_ok": self.completions_ok,
            "bad_requests": self.bad_requests,
            "faults_by_kind": dict(self.faults_by_kind),
            "faults_total": sum(self.faults_by_kind.values()),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "busiest_60s": self.busiest(60.0),
            "busiest_10s": self.busiest(10.0),
            "queued": self.queued,
            "max_queued": self.max_queued,
            "distinct_bodies": distinct_bodies,
            "by_model": dict(self.by_model),
            "by_status": {str(k): v for k, v in self.by_status.items()},
        }
