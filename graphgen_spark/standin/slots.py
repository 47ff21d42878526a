"""A FIFO pool of C "decoding slots" with exact slot timing.

A plain ``asyncio.Semaphore`` loses throughput under load: when C requests finish
in the same loop tick, each waiter only starts its latency timer after the loop
has written all C responses, so every round drifts late and capacity falls below
C / latency. Here a released slot is handed to the next waiter *with the time it
became free*, and the waiter measures its latency from that instant, so the
stand-in behaves like an ideal server with C slots as long as the loop keeps up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


class SlotPool:
    """``capacity`` slots; ``acquire`` returns the loop time the slot became free."""

    def __init__(self, capacity: int) -> None:
        self._free = capacity
        self._waiters: deque[asyncio.Future[float]] = deque()

    async def acquire(self, arrival: float) -> float:
        """Wait for a slot; return its start time (never earlier than ``arrival``)."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return arrival
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            freed_at = await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # handed a slot, then cancelled: pass it on
                self.release(asyncio.get_running_loop().time())
            else:
                with contextlib.suppress(ValueError):  # release() may have dropped it already
                    self._waiters.remove(fut)
            raise
        return max(arrival, freed_at)

    def release(self, freed_at: float) -> None:
        """Give the slot to the oldest waiter, or back to the pool."""
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(freed_at)
                return
        self._free += 1
