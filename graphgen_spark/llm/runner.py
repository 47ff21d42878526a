"""The runner: an :class:`LLMWork`'s rows sent in waves of Spark tasks (architecture §4.2).

Rows run in waves of Spark jobs (``mapInPandas`` with one asyncio loop per task keeping up
to the task's share of in-flight requests, handing finished rows to the JVM as they come);
``llm/waves.py`` sizes each wave to about ``llm.wave_seconds`` of work. Up to two waves are
in flight at once, so a task slot that finishes its part of one wave starts on the next
without waiting for the driver. Every call is journaled from the task as it is answered
(``llm/journal.py``); the ledger merges the journals into ``llm_calls``. Per-wave counts
and the budget use Spark accumulators, because any other Spark job would queue behind the
running wave's tasks; an accumulator reaches the driver only when its task ends, so the
live progress line (``llm/progress.py``) adds what the running tasks last wrote to their
progress files beside the journal. Each wave's jobs are named ``<stage>: wave i/N`` for
the Spark UI, in the stage's job group.

Budget: before a wave is submitted the driver gives each of its tasks an allowance out of
what the budget has left (minus what the waves in flight may still spend); a task sends a
request only if its estimate fits in what the allowance has left, so the overshoot is at
most the estimates' error on the requests in flight.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any

import openai
import pandas as pd
from pyspark import TaskContext
from pyspark.accumulators import AccumulatorParam
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.util import inheritable_thread_target

from graphgen_spark import fsutil
from graphgen_spark.config import Config
from graphgen_spark.errors import BudgetExceeded
from graphgen_spark.llm.client import RetryPolicy, call
from graphgen_spark.llm.endpoints import Endpoint, resolve_endpoint
from graphgen_spark.llm.journal import (
    JournalWriter,
    earlier_answers,
    read_progress,
    write_progress,
)
from graphgen_spark.llm.ledger import Ledger
from graphgen_spark.llm.limits import TaskLayout, TaskLimiter, TaskLimits, estimate_tokens
from graphgen_spark.llm.progress import REDRAW_S, Progress, Tally
from graphgen_spark.llm.requests import REQUEST_SCHEMA
from graphgen_spark.llm.waves import WavePlan
from graphgen_spark.llm.work import Answer, ExecutionSummary, LLMWork, Program

# a task hands finished rows to the JVM every _FLUSH_ROWS rows or _FLUSH_S seconds
_FLUSH_ROWS = 256
_FLUSH_S = 10.0
_MERGE_EVERY_S = 600.0


@dataclass(frozen=True)
class Allowance:
    """What one task of a wave may spend; None: no limit of that kind."""

    tokens: float | None = None
    cost: float | None = None


@dataclass(frozen=True)
class TaskSpec:
    """Everything a task needs; pickled into the closure (never into a Spark conf)."""

    endpoints: dict[str, Endpoint]
    limits: dict[str, TaskLimits]
    policy: RetryPolicy
    run_id: str
    journal: str | None = None  # the wave's journal folder (a URI); None in unit tests
    allowance: Allowance = field(default_factory=Allowance)
    progress_s: float | None = None  # how often a task writes its counts; None: never


class _Spend:
    """A task's allowance: requests reserve their estimate before they are sent and
    settle it with what the endpoint reported."""

    def __init__(self, allowance: Allowance) -> None:
        self.tokens, self.cost = allowance.tokens, allowance.cost

    def reserve(self, tokens: float, cost: float) -> bool:
        if (self.tokens is not None and tokens > self.tokens) or (
            self.cost is not None and cost > self.cost
        ):
            return False
        self._add(-tokens, -cost)
        return True

    def settle(self, reserved: tuple[float, float], tokens: float, cost: float) -> None:
        self._add(reserved[0] - tokens, reserved[1] - cost)

    def _add(self, tokens: float, cost: float) -> None:
        if self.tokens is not None:
            self.tokens += tokens
        if self.cost is not None:
            self.cost += cost


class _StatsParam(AccumulatorParam):
    """Counts summed over tasks: how each wave went, without a Spark job to ask."""

    def zero(self, value: dict) -> dict:
        return {}

    def addInPlace(self, a: dict, b: dict) -> dict:  # noqa: N802 (PySpark's name)
        for k, v in b.items():
            a[k] = a.get(k, 0) + v
        return a


def _bump(stats: dict[str, float], key: str, by: float = 1) -> None:
    stats[key] = stats.get(key, 0) + by


def _call_row(req: dict, ep: Endpoint, outcome: Any, run_id: str, conversation: str | None):
    return {
        **{k: req[k] for k in REQUEST_SCHEMA.fieldNames()},
        "conversation": conversation,
        "base_url": ep.safe_url,  # credentials in a URL never reach the table
        "status": outcome.status,
        "response": outcome.response,
        "parsed": outcome.parsed,
        "logprobs": outcome.logprobs,
        "error": outcome.error,
        "error_kind": outcome.error_kind,
        "attempts": outcome.attempts,
        "prompt_tokens": outcome.prompt_tokens,
        "completion_tokens": outcome.completion_tokens,
        "latency_ms": outcome.latency_ms,
        "cost": ep.cost(outcome.prompt_tokens, outcome.completion_tokens),
        "run_id": run_id,
        "updated_at": pd.Timestamp.now(tz="UTC").tz_localize(None),
    }


def _tally(stats: dict[str, float], row: dict) -> None:
    _bump(stats, "sent")
    _bump(stats, row["status"] if row["status"] in ("ok", "invalid") else "failed")
    if row["error_kind"]:
        _bump(stats, f"error:{row['error_kind']}")
    _bump(stats, "prompt_tokens", row["prompt_tokens"])
    _bump(stats, "completion_tokens", row["completion_tokens"])
    _bump(stats, "cost", row["cost"])


def _answer(request_id: str, hit: dict[str, Any]) -> Answer:
    return Answer(
        request_id,
        hit.get("status") or "ok",
        hit.get("parsed"),
        hit.get("response"),
        hit.get("logprobs"),
        hit.get("error"),
        hit.get("error_kind"),
    )


class _Programs:
    """The programs of one task's rows, run on one event loop; finished rows are handed
    back in batches while the others are still in flight."""

    def __init__(self, spec: TaskSpec, program: Program, key: str, stats: dict[str, float]) -> None:
        self.spec, self.program, self.key, self.stats = spec, program, key, stats
        self.clients: dict[str, openai.AsyncOpenAI] = {}
        self.limiters: dict[str, TaskLimiter] = {}
        self.tasks: list[asyncio.Task] = []
        self.done: asyncio.Queue[asyncio.Task] = asyncio.Queue()
        self.spend = _Spend(spec.allowance)
        self.journal: JournalWriter | None = None
        self.earlier: dict[str, dict[str, Any]] = {}
        self.reporter: asyncio.Task | None = None
        self.where = (0, 0)  # partition and attempt

    async def start(self, rows: list[dict]) -> None:
        spec = self.spec
        if spec.journal is not None:
            ctx = TaskContext.get()
            part, attempt = (ctx.partitionId(), ctx.attemptNumber()) if ctx else (0, 0)
            # a retried task reuses what its earlier attempts were answered
            self.earlier = earlier_answers(spec.journal, part, attempt)
            self.journal = JournalWriter(spec.journal, part, attempt)
            self.where = (part, attempt)
            if spec.progress_s:
                self.reporter = asyncio.create_task(self._report())
        self.clients = {
            role: openai.AsyncOpenAI(
                base_url=ep.base_url, api_key=ep.api_key, max_retries=0, timeout=ep.timeout_s
            )
            for role, ep in spec.endpoints.items()
        }
        self.limiters = {role: TaskLimiter(lim) for role, lim in spec.limits.items()}
        for row in rows:
            task = asyncio.create_task(self._one(row))
            task.add_done_callback(self.done.put_nowait)
            self.tasks.append(task)

    async def finished(self, most: int, within_s: float) -> tuple[int, list[dict]]:
        """How many rows finished and their outputs (a row whose program raised is
        counted, not returned): at least one, more as they finish, up to ``most`` or
        ``within_s``."""
        got = [await self.done.get()]
        deadline = time.monotonic() + within_s
        while len(got) < most:
            while len(got) < most and not self.done.empty():
                got.append(self.done.get_nowait())
            left = deadline - time.monotonic()
            if len(got) >= most or left <= 0:
                break
            try:
                got.append(await asyncio.wait_for(self.done.get(), left))
            except TimeoutError:
                break
        return len(got), [out for task in got if (out := task.result()) is not None]

    async def close(self) -> None:
        """Cancel what is still running (only after a failure), close the clients (one per
        task loop, closed before the loop ends) and wait for the journal to be on disk."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.reporter is not None:
            self.reporter.cancel()
            await asyncio.gather(self.reporter, return_exceptions=True)
            self._write_progress(dict(self.stats))
        for client in self.clients.values():
            await client.close()
        if self.journal is not None:
            self.journal.close()

    async def _report(self) -> None:
        """Write the task's counts every ``progress_s``: the driver sees a running wave."""
        while True:
            await asyncio.sleep(self.spec.progress_s)
            await asyncio.to_thread(self._write_progress, dict(self.stats))

    def _write_progress(self, stats: dict[str, float]) -> None:
        try:
            write_progress(self.spec.journal, *self.where, stats)
        except OSError as exc:  # progress is a view: a task goes on without it
            print(f"graphgen-spark: progress not written: {exc}", file=sys.stderr)

    async def _one(self, row: dict) -> dict | None:
        # a list column arrives as a numpy array (or None): never test it for truth
        stored = row.pop("_cached", None)
        cached = {c["request_id"]: c for c in (() if stored is None else stored)}
        conversation = row.get(self.key)

        async def ask(req: dict) -> Answer:
            _bump(self.stats, "requested")
            hit = cached.get(req["request_id"]) or self.earlier.get(req["request_id"])
            if hit is not None:
                _bump(self.stats, "cached")
                return _answer(req["request_id"], hit)
            return await self._send(req, conversation)

        try:
            out = await self.program(row, ask)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - one row's bug or poison must not fail the wave
            _bump(self.stats, "program_errors")
            print(
                f"graphgen-spark: the program of {self.key}={conversation} raised "
                f"{type(exc).__name__}: {exc}; its calls are kept, the row stays to do",
                file=sys.stderr,
            )
            return None
        _bump(self.stats, "rows")
        return out

    async def _send(self, req: dict, conversation: str | None) -> Answer:
        ep = self.spec.endpoints[req["role"]]
        messages, params = json.loads(req["messages"]), json.loads(req["params"])
        est = estimate_tokens(messages, int(params.get("max_tokens", ep.max_tokens)))
        reserved = (float(est), ep.cost(est, est))
        if not self.spend.reserve(*reserved):
            _bump(self.stats, "skipped")
            return Answer(req["request_id"], "skipped", error="budget", error_kind="budget")
        outcome = await call(
            self.clients[req["role"]],
            ep,
            messages,
            params,
            req["response_model"],
            self.limiters[req["role"]],
            self.spec.policy,
        )
        row = _call_row(req, ep, outcome, self.spec.run_id, conversation)
        self.spend.settle(reserved, row["prompt_tokens"] + row["completion_tokens"], row["cost"])
        if self.journal is not None:
            self.journal.append(row)
        _tally(self.stats, row)
        return _answer(req["request_id"], row)


def _stream_programs(
    pdf: pd.DataFrame,
    spec: TaskSpec,
    program: Program,
    key: str,
    stats: dict[str, float],
    flush_rows: int = _FLUSH_ROWS,
    flush_s: float = _FLUSH_S,
) -> Iterator[list[dict]]:
    """Run the programs of ``pdf``'s rows, yielding finished rows in batches.

    The JVM writes each batch while the loop goes on, so neither a task's memory nor the
    write at its end grows with the wave (long waves keep the endpoint busy: every task
    start and end costs a moment with fewer requests in flight).
    """
    loop = asyncio.new_event_loop()
    runner = _Programs(spec, program, key, stats)
    try:
        loop.run_until_complete(runner.start(pdf.to_dict("records")))
        left = len(pdf)
        while left:
            n, rows = loop.run_until_complete(runner.finished(min(left, flush_rows), flush_s))
            left -= n
            if rows:
                yield rows
    finally:
        loop.run_until_complete(runner.close())
        loop.close()


def _partition_runner(spec: TaskSpec, program: Program, key: str, columns: list[str], acc):
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        stats: dict[str, float] = {}
        try:
            for pdf in batches:
                for rows in _stream_programs(pdf, spec, program, key, stats):
                    yield pd.DataFrame(rows, columns=columns)
        finally:
            acc.add(stats)

    return run


@dataclass(frozen=True)
class Pending:
    """Rows staged to run: ``path``-all holds them, ``path`` their slices."""

    path: str
    rows: DataFrame
    n: int


@dataclass
class _Wave:
    index: int
    slices: range
    path: str
    acc: Any
    future: Future
    allowance: Allowance
    journal: str  # its tasks' progress files are read from here while it runs


@dataclass
class _Budget:
    """The run's limits against the ledger's spend; what each new wave may take."""

    max_tokens: int | None
    max_cost: float | None
    spent: tuple[int, float]  # before this runner call, per run.budget_scope

    @property
    def limited(self) -> bool:
        return self.max_tokens is not None or self.max_cost is not None

    def left(self, summary: ExecutionSummary, inflight: list[_Wave], tasks: int) -> Allowance:
        """What the budget has left after the landed waves and the allowances in flight."""
        tokens = self.spent[0] + summary.prompt_tokens + summary.completion_tokens
        cost = self.spent[1] + summary.cost
        held_tokens = tasks * sum(w.allowance.tokens or 0.0 for w in inflight)
        held_cost = tasks * sum(w.allowance.cost or 0.0 for w in inflight)
        return Allowance(
            None if self.max_tokens is None else self.max_tokens - tokens - held_tokens,
            None if self.max_cost is None else self.max_cost - cost - held_cost,
        )

    def describe(self) -> str:
        limits = [f"run.max_tokens={self.max_tokens}"] if self.max_tokens is not None else []
        return ", ".join(limits + ([f"run.max_cost={self.max_cost}"] if self.max_cost else []))

    def exhausted(self, left: Allowance) -> str | None:
        if left.tokens is not None and left.tokens <= 0:
            return f"run.max_tokens={self.max_tokens} reached"
        if left.cost is not None and left.cost <= 0:
            return f"run.max_cost={self.max_cost} reached"
        return None


def _share(left: Allowance, tasks: int, parts: int) -> Allowance:
    """One task's allowance: what is left split over the waves that may still run at once."""
    split = max(1, tasks * parts)
    return Allowance(
        None if left.tokens is None else max(0.0, left.tokens) / split,
        None if left.cost is None else max(0.0, left.cost) / split,
    )


class WaveRunner:
    """Sends one :class:`LLMWork` in waves; every call lands in the ledger."""

    def __init__(self, spark: SparkSession, cfg: Config, ledger: Ledger, log: Any) -> None:
        self.spark, self.cfg, self.ledger, self.log = spark, cfg, ledger, log

    def stage(self, rows: DataFrame, stage: str) -> Pending:
        """Write the rows to run once, so they are counted, inspected (e.g. for the roles
        they name) and sliced without computing ``rows`` again."""
        path = f"{self.ledger.staging_root}/pending-{stage}-{uuid.uuid4().hex[:12]}"
        rows.write.mode("overwrite").parquet(f"{path}-all")
        staged = self.spark.read.parquet(f"{path}-all")
        return Pending(path, staged, staged.count())

    def run(self, work: LLMWork, pending: Pending) -> tuple[ExecutionSummary, DataFrame | None]:
        """Send ``pending`` (from :meth:`stage`) in waves; its staging is removed after."""
        t0 = time.monotonic()
        summary = ExecutionSummary()
        waves: list[str] = []
        try:
            if pending.n:
                self._waves(work, pending, summary, waves)
        finally:
            fsutil.delete(self.spark, f"{pending.path}-all")
            fsutil.delete(self.spark, pending.path)
            t_merge = time.monotonic()
            # every wave has landed here (the loop waits for those in flight, also on errors)
            self.ledger.merge_journals(waves, drop=True)
            if waves:
                self.log.info(
                    "[%s] %d wave(s) merged into llm_calls in %.1f s",
                    work.stage,
                    len(waves),
                    time.monotonic() - t_merge,
                )
            summary.seconds = time.monotonic() - t0
        outputs = self._outputs(waves, work)
        for path in waves:
            fsutil.delete(self.spark, path)
        return summary, outputs

    # -- setting up ------------------------------------------------------------------------
    def _task_spec(self, roles: tuple[str, ...], tasks: int) -> TaskSpec:
        cfg = self.cfg
        endpoints = {role: resolve_endpoint(cfg, role) for role in roles}
        limits = {}
        for role in roles:
            ep = getattr(cfg.llm, role)
            limits[role] = TaskLimits.share(
                tasks, cfg.llm.concurrency_per_task, ep.max_concurrency, ep.rpm, ep.tpm
            )
        policy = RetryPolicy(
            max_retries=cfg.llm.max_retries,
            backoff_min_s=cfg.llm.backoff_min_s,
            backoff_max_s=cfg.llm.backoff_max_s,
            repair_attempts=cfg.llm.repair_attempts,
        )
        return TaskSpec(endpoints, limits, policy, self.ledger.run_id)

    def _layout(self, roles: tuple[str, ...]) -> TaskLayout:
        slots = max(1, self.spark.sparkContext.defaultParallelism)
        caps = [getattr(self.cfg.llm, role).max_concurrency for role in roles]
        return TaskLayout.for_caps(slots, caps)

    def _budget(self) -> _Budget:
        run = self.cfg.run
        spent = (
            self.ledger.spent(run.budget_scope) if (run.max_tokens or run.max_cost) else (0, 0.0)
        )
        return _Budget(run.max_tokens, run.max_cost, spent)

    # -- waves -----------------------------------------------------------------------------
    def _waves(
        self, work: LLMWork, pending: Pending, summary: ExecutionSummary, waves: list[str]
    ) -> None:
        layout = self._layout(work.roles)
        spec = self._task_spec(work.roles, layout.concurrent_tasks)
        per_task = min(lim.concurrency for lim in spec.limits.values())
        plan = WavePlan.for_rows(
            pending.n,
            in_flight=per_task * layout.concurrent_tasks,
            slots=layout.tasks_per_wave,
            calls_per_row=work.calls_per_row,
            wave_seconds=self.cfg.llm.wave_seconds,
            wave_size=self.cfg.llm.wave_size,
        )
        _write_pending(pending.rows, pending.path, work.key, plan.slices, layout, work.probe)
        self.log.info(
            "[%s] %d %s to run over %d task(s) per wave, %d wave(s) at once, %d in flight "
            "per task, in %d slice(s) of ~%d; waves of ~%.0f s",
            work.stage,
            pending.n,
            work.unit,
            layout.tasks_per_wave,
            layout.waves_in_flight,
            per_task,
            plan.slices,
            plan.slice_rows,
            plan.wave_seconds,
        )
        sliced = self.spark.read.parquet(pending.path)
        _WaveLoop(self, work, spec, layout, plan, sliced, summary, waves).run()

    def _outputs(self, waves: list[str], work: LLMWork) -> DataFrame | None:
        if work.outputs_path is None:
            return None
        if waves:
            outs = self.spark.read.parquet(*waves).select(*work.out_schema.fieldNames())
        else:
            outs = self.spark.createDataFrame([], work.out_schema)
        outs.write.mode("overwrite").parquet(work.outputs_path)
        return self.spark.read.parquet(work.outputs_path)


def _write_pending(
    rows: DataFrame, path: str, key: str, slices: int, layout: TaskLayout, probe: Any
) -> None:
    """Write the rows to send to ``path``, one folder per slice and one file per task.

    A wave's job then reads its slices' folders into one task per file without a shuffle:
    a shuffle stage would wait for a free slot, i.e. for the previous wave to end. With
    ``probe`` the row with the smallest key goes to slice -1, to be sent alone.
    """
    part = F.pmod(F.xxhash64(key), F.lit(slices))
    if probe is not None:
        first = rows.agg(F.min(key)).first()[0]
        part = F.when(F.col(key) == F.lit(first), F.lit(-1)).otherwise(part)
    (
        rows.withColumn("_slice", part)
        .repartition(layout.tasks_per_wave)
        .write.mode("overwrite")
        .partitionBy("_slice")
        .parquet(path)
    )


class _WaveLoop:
    """One ``run``'s waves: submitted while the plan has slices, landed as they end."""

    def __init__(
        self,
        runner: WaveRunner,
        work: LLMWork,
        spec: TaskSpec,
        layout: TaskLayout,
        plan: WavePlan,
        pending: DataFrame,
        summary: ExecutionSummary,
        waves: list[str],
    ) -> None:
        self.runner, self.work, self.spec, self.layout = runner, work, spec, layout
        self.plan, self.pending, self.summary, self.waves = plan, pending, summary, waves
        self.sc = runner.spark.sparkContext
        self.log = runner.log
        self.budget = runner._budget()
        self.inflight: list[_Wave] = []
        self.landed: list[str] = []  # waves whose tasks all ended, not yet merged
        self.t0 = time.monotonic()
        self.columns = work.out_schema.fieldNames()

    def run(self) -> None:
        """Send the waves under a live progress line; then stop if the budget is spent."""
        cfg = self.runner.cfg
        work = self.work
        with Progress(work.stage, self.plan.rows, work.unit, self.log, cfg.llm.progress_s) as p:
            self.progress = p
            # tasks write their counts twice per line shown, never more than once a second
            self.spec = replace(self.spec, progress_s=max(REDRAW_S, p.every_s / 2))
            self._run()
        self._stop_if_spent()

    def _run(self) -> None:
        """Submit waves keeping ``waves_in_flight`` running; every wave submitted lands in
        ``waves`` (also when this raises), so its calls reach the ledger."""
        work = self.work
        if work.probe is not None:
            self._probe()
        last_merge = time.monotonic()
        with ThreadPoolExecutor(self.layout.waves_in_flight, "llm-wave") as pool:
            try:
                w = 0
                while self.plan.left:
                    while len(self.inflight) >= self.layout.waves_in_flight:
                        self._finish_one()
                    if time.monotonic() - last_merge > _MERGE_EVERY_S:
                        # a checkpoint: the next wave waits for this merge's Spark jobs
                        self.runner.ledger.merge_journals(self.landed, drop=True)
                        self.landed, last_merge = [], time.monotonic()
                    allowance = self._allowance()
                    if allowance is None:
                        break
                    budget_rows = None if not self.budget.limited else self._budget_rows()
                    slices = self.plan.next_wave(time.monotonic(), budget_rows)
                    self._submit(pool, w, slices, allowance)
                    w += 1
                while self.inflight:
                    self._finish_one()
            finally:
                self._land_the_rest()
                self._show()

    def _allowance(self) -> Allowance | None:
        """Each task's allowance for the next wave; None when the budget is spent (after
        the waves in flight have landed and given back what they did not use)."""
        budget, tasks = self.budget, self.layout.tasks_per_wave
        if not budget.limited:
            return Allowance()
        if self.summary.skipped:
            return None  # tasks hit their allowance: the budget is nearly spent
        left = budget.left(self.summary, self.inflight, tasks)
        while budget.exhausted(left) and self.inflight:
            self._finish_one()
            left = budget.left(self.summary, self.inflight, tasks)
        if budget.exhausted(left):
            return None
        free = self.layout.waves_in_flight - len(self.inflight)
        return _share(left, tasks, free)

    def _budget_rows(self) -> float | None:
        """Rows the budget left is estimated to pay for, from the spend per row so far."""
        done, s = self.summary.rows, self.summary
        if not done:
            return None
        left = self.budget.left(s, self.inflight, self.layout.tasks_per_wave)
        per_row = [
            left.tokens / max((s.prompt_tokens + s.completion_tokens) / done, 1e-9)
            if left.tokens is not None
            else None,
            left.cost / (s.cost / done) if left.cost is not None and s.cost > 0 else None,
        ]
        known = [r for r in per_row if r is not None]
        return min(known) if known else None

    def _stop_if_spent(self) -> None:
        if not (self.summary.skipped or (self.plan.left and self.budget.limited)):
            return
        s, budget = self.summary, self.budget
        tokens = budget.spent[0] + s.prompt_tokens + s.completion_tokens
        cost = budget.spent[1] + s.cost
        raise BudgetExceeded(
            f"[{self.work.stage}] budget reached ({budget.describe()}; "
            f"run.budget_scope={self.runner.cfg.run.budget_scope}): {tokens} tokens and "
            f"{cost:.4f} spent, and what is left does not cover the next requests' estimates; "
            f"{s.skipped} request(s) were not sent. Everything answered is kept: raise the "
            "limit and rerun the same command to resume."
        )

    # -- one wave --------------------------------------------------------------------------
    def _spec(self, path: str, allowance: Allowance) -> TaskSpec:
        return replace(self.spec, journal=self.runner.ledger.journal_uri(path), allowance=allowance)

    def _job(self, name: str, slices: range, path: str, acc: Any, spec: TaskSpec) -> None:
        work = self.work
        self.sc.setJobDescription(f"{work.stage}: {name}")  # this thread's jobs only
        col = F.col("_slice")
        (
            self.pending.filter((col >= slices.start) & (col < slices.stop))
            .drop("_slice")
            .coalesce(self.layout.tasks_per_wave)
            .mapInPandas(
                _partition_runner(spec, work.program, work.key, self.columns, acc),
                schema=work.out_schema,
            )
            .write.mode("overwrite")
            .parquet(path)
        )

    def _new_path(self) -> str:
        return f"{self.runner.ledger.staging_root}/{self.work.stage}-{uuid.uuid4().hex[:12]}"

    def _submit(self, pool: ThreadPoolExecutor, w: int, slices: range, allowance: Allowance):
        path, acc = self._new_path(), self.sc.accumulator({}, _StatsParam())
        self.waves.append(path)
        name = f"wave {w + 1}/{self.plan.waves(w + 1)}"
        # pinned threads start with no local properties: give it the stage's job group
        job = inheritable_thread_target(self.runner.spark)(self._job)
        spec = self._spec(path, allowance)
        future = pool.submit(job, name, slices, path, acc, spec)
        self.inflight.append(_Wave(w, slices, path, acc, future, allowance, spec.journal or ""))

    def _probe(self) -> None:
        path, acc = self._new_path(), self.sc.accumulator({}, _StatsParam())
        self.waves.append(path)
        allowance = self._allowance() or Allowance(0.0, 0.0)
        description = self.sc.getLocalProperty("spark.job.description")
        try:
            self._job("probe", range(-1, 0), path, acc, self._spec(path, _share(allowance, 1, 1)))
        finally:
            self.sc.setJobDescription(description)  # back to the stage's
        self.summary.add_stats(acc.value)
        self._show()
        calls = self.runner.ledger.journaled([path])  # merged with the other waves' calls
        self.work.probe([] if calls is None else [r.asDict() for r in calls.collect()])
        self.log.info("[%s] probe request answered as expected; sending the rest", self.work.stage)

    def _land(self, wave: _Wave) -> None:
        self.landed.append(wave.path)
        stats = wave.acc.value
        self.summary.add_stats(stats)
        self.plan.finished(int(stats.get("rows", 0)), time.monotonic())

    def _finish_one(self) -> None:
        """Land whichever wave in flight ends first, not the one submitted first: the slot
        it frees gets the next wave at once. The progress line moves on while they run."""
        futures = [w.future for w in self.inflight]
        while not wait(futures, self.progress.every_s, FIRST_COMPLETED).done:
            self._show()
        wave = next(w for w in self.inflight if w.future.done())
        self.inflight.remove(wave)
        wave.future.result()
        self._land(wave)
        self._show()
        s, elapsed = self.summary, time.monotonic() - self.t0
        self.log.info(
            "[%s] wave %d done: %d calls sent so far (%.1f req/s), %d answered from cache; "
            "%d/%d %s; ok %d, failed %d, invalid %d; tokens %d; cost %.4f",
            self.work.stage,
            wave.index + 1,
            s.sent,
            s.sent / elapsed if elapsed else 0.0,
            s.cached,
            s.rows,
            self.plan.rows,
            self.work.unit,
            s.ok,
            s.failed,
            s.invalid,
            s.prompt_tokens + s.completion_tokens,
            s.cost,
        )

    def _show(self) -> None:
        """Landed waves from their accumulators, running ones from their tasks' files."""
        running = [read_progress(w.journal) for w in self.inflight]
        self.progress.show(Tally.of(vars(self.summary), *running))

    def _land_the_rest(self) -> None:
        for wave in self.inflight:  # waves in flight land: what they paid for is kept
            try:
                wave.future.result()
                self._land(wave)
            except Exception:  # noqa: BLE001 - the first error is being raised already
                pass
        self.inflight.clear()
