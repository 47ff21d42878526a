"""Endpoint-wide limits shared out across the Spark tasks that run LLM work at once.

Each executor task runs its own asyncio loop, so an endpoint-wide limit is divided among
the tasks that can run at once and every task enforces its share locally, with no
coordination traffic between executors. Shares round *down*: the sum over tasks never
exceeds the cap. A cap below the number of task slots runs fewer tasks (one request in
flight each) and one wave at a time, since two waves' tasks would otherwise share the
slots. Rate buckets start empty and hold one request at most, so the requests in any
60 s window stay within ``rpm`` plus one per task.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class TaskLayout:
    """How many tasks a wave runs, how many waves may run at once, and so how many tasks
    can hold requests at the same moment (never more than the task slots)."""

    tasks_per_wave: int
    waves_in_flight: int
    concurrent_tasks: int

    @classmethod
    def for_caps(cls, slots: int, caps: list[int | None], waves: int = 2) -> TaskLayout:
        """A wave per ``slots`` tasks, ``waves`` at once, unless an endpoint's cap is below
        the slots: then ``cap`` tasks and one wave, one request in flight per task."""
        slots = max(1, slots)
        cap = min((c for c in caps if c), default=None)
        if cap is not None and cap < slots:
            return cls(tasks_per_wave=cap, waves_in_flight=1, concurrent_tasks=cap)
        return cls(tasks_per_wave=slots, waves_in_flight=waves, concurrent_tasks=slots)


@dataclass(frozen=True)
class TaskLimits:
    concurrency: int
    rpm: float | None = None
    tpm: float | None = None

    @classmethod
    def share(
        cls,
        tasks: int,
        concurrency_per_task: int,
        max_concurrency: int | None,
        rpm: int | None,
        tpm: int | None,
    ) -> TaskLimits:
        """One task's share when ``tasks`` tasks run at once (see :class:`TaskLayout`)."""
        tasks = max(1, tasks)
        conc = concurrency_per_task
        if max_concurrency:
            conc = max(1, min(conc, max_concurrency // tasks))
        return cls(
            concurrency=conc,
            rpm=rpm / tasks if rpm else None,
            tpm=tpm / tasks if tpm else None,
        )


class _Bucket:
    """Token bucket refilled continuously at ``per_minute``, starting empty; a request
    larger than the bucket waits for a full bucket and then drives it negative (so huge
    prompts still run)."""

    def __init__(self, per_minute: float, capacity: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = capacity
        self.level = 0.0
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
        # one request of burst: a new task (every wave starts new ones) adds at most one
        self.rpm = _Bucket(limits.rpm, 1.0) if limits.rpm else None
        self.tpm = _Bucket(limits.tpm, max(1.0, limits.tpm / 60.0)) if limits.tpm else None

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


def estimate_tokens(messages: list[dict], max_tokens: int) -> int:
    """A request's tokens before it is sent: about 3 characters a token plus the most it
    may generate (an upper bound for budgets and TPM buckets at usual tokenizers)."""
    chars = sum(len(str(m.get("content") or "")) for m in messages)
    return chars // 3 + max_tokens
