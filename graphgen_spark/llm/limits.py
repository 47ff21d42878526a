"""Per-task rate limiting: endpoint-wide limits shared out across Spark task slots.

Each executor task runs its own asyncio loop, so an endpoint-wide limit (RPM, TPM, max
concurrency) is divided by the number of task slots; every task then enforces its share
locally, with no coordination traffic between executors.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class TaskLimits:
    concurrency: int
    rpm: float | None = None
    tpm: float | None = None

    @classmethod
    def share(
        cls,
        slots: int,
        concurrency_per_task: int,
        max_concurrency: int | None,
        rpm: int | None,
        tpm: int | None,
    ) -> TaskLimits:
        slots = max(1, slots)
        conc = concurrency_per_task
        if max_concurrency:
            conc = max(1, math.ceil(max_concurrency / slots))
        return cls(
            concurrency=conc,
            rpm=rpm / slots if rpm else None,
            tpm=tpm / slots if tpm else None,
        )


class _Bucket:
    """Token bucket refilled continuously at ``per_minute``; a request larger than the
    bucket waits for a full bucket and then drives it negative (so huge prompts still run)."""

    def __init__(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)  # at most one second of burst
        self.level = self.capacity
        self.stamp = time.monotonic()

    async def take(self, amount: float) -> None:
        need = min(amount, self.capacity)
        while True:
            now = time.monotonic()
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now
            if self.level >= need:
                self.level -= amount
                return
            await asyncio.sleep((need - self.level) / self.rate)


class TaskLimiter:
    """Bounded in-flight requests plus optional RPM/TPM buckets for one task."""

    def __init__(self, limits: TaskLimits) -> None:
        self.sem = asyncio.Semaphore(limits.concurrency)
        self.rpm = _Bucket(limits.rpm) if limits.rpm else None
        self.tpm = _Bucket(limits.tpm) if limits.tpm else None

    async def __aenter__(self) -> TaskLimiter:
        await self.sem.acquire()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.sem.release()

    async def admit(self, est_tokens: int) -> None:
        """Wait for the rate buckets (call while holding a concurrency slot)."""
        if self.rpm:
            await self.rpm.take(1)
        if self.tpm:
            await self.tpm.take(est_tokens)
