"""How the executor cuts pending rows into waves (architecture §4.2).

The rows to send are written once in *slices* of a few seconds' work each. A wave is a run
of consecutive slices whose length is chosen when the wave is submitted: the first wave is
one slice (the first progress line and any endpoint error come quickly), later ones take
as many slices as the measured rate finishes in ``llm.wave_seconds``, but never more than
half of what is left (the last waves taper off). Long waves keep the
endpoint busy (each task start and end is a moment with fewer requests in flight) and
short ones lose less to a crash; measuring makes the wave a duration whatever the endpoint's
speed. Near a budget limit waves shrink to what the remaining budget pays for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# slices x task slots files are written; keep that ten thousand at most
_MAX_FILES = 10_000


@dataclass
class WavePlan:
    rows: int
    slice_rows: int
    wave_seconds: float
    max_wave_rows: int
    next_slice: int = 0
    rows_done: int = 0
    first_start: float | None = None
    last_end: float | None = None

    @classmethod
    def for_rows(
        cls,
        rows: int,
        *,
        in_flight: int,
        slots: int,
        calls_per_row: int,
        wave_seconds: float,
        wave_size: int,
    ) -> WavePlan:
        """A slice holds four rows per request in flight (a few seconds of work at usual
        latencies), more when that would write too many files; never more than a wave of
        ``wave_size`` requests may hold."""
        max_wave_rows = max(1, wave_size // max(1, calls_per_row))
        max_slices = max(16, min(256, _MAX_FILES // max(1, slots)))
        slice_rows = max(4 * in_flight, math.ceil(rows / max_slices))
        return cls(rows, max(1, min(slice_rows, max_wave_rows)), wave_seconds, max_wave_rows)

    @property
    def slices(self) -> int:
        return max(1, math.ceil(self.rows / self.slice_rows))

    @property
    def left(self) -> bool:
        return self.next_slice < self.slices

    def rate(self) -> float | None:
        """Rows finished per second since the first wave was submitted."""
        if not self.rows_done or self.first_start is None or self.last_end is None:
            return None
        span = self.last_end - self.first_start
        return self.rows_done / span if span > 0 else None

    def next_wave(self, now: float, budget_rows: float | None = None) -> range:
        """The slices of the next wave: ``wave_seconds`` at the measured rate, at most
        ``max_wave_rows`` and ``budget_rows`` (what the budget left is estimated to pay
        for); at least one slice."""
        if self.first_start is None:
            self.first_start = now
        lo = self.next_slice
        self.next_slice = min(self.slices, lo + self._size(self.slices - lo, budget_rows))
        return range(lo, self.next_slice)

    def _size(self, left: int, budget_rows: float | None = None) -> int:
        """Slices of a wave with ``left`` slices to go, at the rate measured so far."""
        rate = self.rate()
        want = rate * self.wave_seconds if rate else 0.0
        want = min(want, self.max_wave_rows)
        if budget_rows is not None:
            want = min(want, budget_rows)
        k = max(1, int(want // self.slice_rows))
        # taper: at most half of what is left, so the last waves are short and the task
        # slots (whose tasks start staggered) run out of work at nearly the same time
        return min(k, math.ceil(left / 2))

    def waves(self, submitted: int) -> str:
        """The wave count for a job's name after ``submitted`` waves: exact once no slice
        is left, ``~N`` at the rate measured so far, ``?`` before anything is measured."""
        left = self.slices - self.next_slice
        if not left:
            return str(submitted)
        if self.rate() is None:
            return "?"
        n = submitted
        while left:
            left -= self._size(left)
            n += 1
        return f"~{n}"

    def finished(self, rows: int, now: float) -> None:
        self.rows_done += rows
        self.last_end = now
