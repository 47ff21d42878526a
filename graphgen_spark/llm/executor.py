"""The distributed request executor: every LLM call is a row (architecture §4.1–4.2).

Two entry points share one mechanism:

* ``execute(requests)`` sends a DataFrame of requests (REQUEST_SCHEMA) that are not yet
  answered ok in ``llm_calls`` (the cache shared by all runs);
* ``converse(rows, program)`` runs a *program* per row inside the executor task, e.g. a
  whole extraction conversation, whose every turn is a request answered from the row's
  cached calls or sent. Running the conversation where the answers arrive keeps the
  endpoint busy: the driver does not synchronise between turns.

Rows run in waves of Spark jobs (``mapInPandas`` with one asyncio loop per task keeping up
to the task's share of in-flight requests, handing finished rows to the JVM as they come);
``llm/waves.py`` sizes each wave to about ``llm.wave_seconds`` of work. Two waves are in
flight at once, so a task slot that finishes its part of one wave starts on the next
without waiting for the driver. Each wave writes its outcomes, with the call rows nested,
to a staging folder once; the staged waves are MERGEd into ``llm_calls`` at the end of the
call (and every ``_MERGE_EVERY_S``), so a crash loses at most the waves in flight and the
next start merges whatever was staged. Per-wave progress and the budget guard use Spark
accumulators, because any other Spark job would queue behind the running wave's tasks.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any

import openai
import pandas as pd
from pyspark.accumulators import AccumulatorParam
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window

from graphgen_spark import fsutil
from graphgen_spark.config import Config
from graphgen_spark.llm.client import RetryPolicy, call
from graphgen_spark.llm.endpoints import Endpoint, resolve_endpoint
from graphgen_spark.llm.limits import TaskLimiter, TaskLimits
from graphgen_spark.llm.requests import REQUEST_SCHEMA
from graphgen_spark.llm.waves import WavePlan
from graphgen_spark.stages.base import StageContext, StageResult
from graphgen_spark.tables import SCHEMAS

CALL_COLUMNS = [f.name for f in SCHEMAS["llm_calls"].fields]
CALLS_FIELD = T.StructField("calls", T.ArrayType(SCHEMAS["llm_calls"]))
CACHED_SCHEMA = T.ArrayType(
    T.StructType(
        [T.StructField(c, T.StringType()) for c in ("request_id", "parsed", "response", "logprobs")]
    )
)
_IN_FLIGHT_WAVES = 2
_MERGE_EVERY_S = 600.0
# a task hands finished rows to the JVM every _FLUSH_ROWS rows or _FLUSH_S seconds
_FLUSH_ROWS = 256
_FLUSH_S = 10.0


class BudgetExceeded(RuntimeError):
    """run.max_tokens / run.max_cost reached: no new calls; rerun later to resume."""


@dataclass
class ExecutionSummary:
    requested: int = 0
    cached: int = 0
    sent: int = 0
    ok: int = 0
    failed: int = 0
    invalid: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    seconds: float = 0.0
    rows: int = 0  # rows whose program finished (requests or conversations)
    errors: dict[str, int] = field(default_factory=dict)

    def to_result(self, prefix: str = "llm") -> StageResult:
        counts = {f"{prefix}_{k}": int(v) for k, v in asdict(self).items() if k in _COUNTED}
        counts.update({f"{prefix}_error_{k}": v for k, v in self.errors.items()})
        return StageResult(counts, self.prompt_tokens, self.completion_tokens, self.cost)

    def add_stats(self, stats: dict[str, float]) -> None:
        for k, v in stats.items():
            if k.startswith("error:"):
                self.errors[k[6:]] = self.errors.get(k[6:], 0) + int(v)
            elif k == "cost":
                self.cost += v
            else:
                setattr(self, k, getattr(self, k) + int(v))


_COUNTED = ("requested", "cached", "sent", "ok", "failed", "invalid")


class _StatsParam(AccumulatorParam):
    """Counts summed over tasks: how each wave went, without a Spark job to ask."""

    def zero(self, value: dict) -> dict:
        return {}

    def addInPlace(self, a: dict, b: dict) -> dict:  # noqa: N802 (PySpark's name)
        for k, v in b.items():
            a[k] = a.get(k, 0) + v
        return a


@dataclass(frozen=True)
class Answer:
    """What a program sees of one request: the cached or fresh outcome."""

    request_id: str
    status: str
    parsed: str | None = None
    response: str | None = None
    logprobs: str | None = None
    error: str | None = None
    error_kind: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


Ask = Callable[[dict[str, Any]], Awaitable[Answer]]
Program = Callable[[dict[str, Any], Ask], Awaitable[dict[str, Any]]]
# Looks at the call rows of a one-request first wave; raising stops the call before the
# other requests are sent (e.g. a trainee that returns no logprobs).
Probe = Callable[[list[dict[str, Any]]], None]


@dataclass(frozen=True)
class _TaskSpec:
    """Everything a task needs; pickled into the closure (never into a Spark conf)."""

    endpoints: dict[str, Endpoint]
    limits: dict[str, TaskLimits]
    policy: RetryPolicy
    run_id: str


def _call_row(req: dict, ep: Endpoint, outcome: Any, run_id: str, conversation: str | None):
    return {
        **{k: req[k] for k in REQUEST_SCHEMA.fieldNames()},
        "conversation": conversation,
        "base_url": ep.base_url,
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
    stats["sent"] = stats.get("sent", 0) + 1
    status = row["status"] if row["status"] in ("ok", "invalid") else "failed"
    stats[status] = stats.get(status, 0) + 1
    if row["error_kind"]:
        key = f"error:{row['error_kind']}"
        stats[key] = stats.get(key, 0) + 1
    stats["prompt_tokens"] = stats.get("prompt_tokens", 0) + row["prompt_tokens"]
    stats["completion_tokens"] = stats.get("completion_tokens", 0) + row["completion_tokens"]
    stats["cost"] = stats.get("cost", 0.0) + row["cost"]


class _Programs:
    """The programs of one task's rows, run on one event loop; finished rows are handed
    back in batches while the others are still in flight."""

    def __init__(
        self, spec: _TaskSpec, program: Program, key: str, stats: dict[str, float]
    ) -> None:
        self.spec, self.program, self.key, self.stats = spec, program, key, stats
        self.clients: dict[str, openai.AsyncOpenAI] = {}
        self.limiters: dict[str, TaskLimiter] = {}
        self.tasks: list[asyncio.Task] = []
        self.done: asyncio.Queue[asyncio.Task] = asyncio.Queue()

    async def start(self, rows: list[dict]) -> None:
        spec = self.spec
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

    async def finished(self, most: int, within_s: float) -> list[dict]:
        """At least one finished row; more as they finish, up to ``most`` or ``within_s``.

        A program that raised re-raises here: that is a bug, and it fails the task loudly
        rather than writing a half-empty row.
        """
        out = [(await self.done.get()).result()]
        deadline = time.monotonic() + within_s
        while len(out) < most:
            while len(out) < most and not self.done.empty():
                out.append(self.done.get_nowait().result())
            left = deadline - time.monotonic()
            if len(out) >= most or left <= 0:
                break
            try:
                out.append((await asyncio.wait_for(self.done.get(), left)).result())
            except TimeoutError:
                break
        return out

    async def close(self) -> None:
        """Cancel what is still running (only after a failure) and close the clients:
        one client per task loop, closed before the loop ends (architecture §4.2)."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for client in self.clients.values():
            await client.close()

    async def _one(self, row: dict) -> dict:
        spec, stats = self.spec, self.stats
        # a list column arrives as a numpy array (or None): never test it for truth
        stored = row.pop("_cached", None)
        cached = {c["request_id"]: c for c in (() if stored is None else stored)}
        calls: list[dict] = []

        async def ask(req: dict) -> Answer:
            stats["requested"] = stats.get("requested", 0) + 1
            hit = cached.get(req["request_id"])
            if hit is not None:
                stats["cached"] = stats.get("cached", 0) + 1
                return Answer(status="ok", **hit)
            ep = spec.endpoints[req["role"]]
            outcome = await call(
                self.clients[req["role"]],
                ep,
                json.loads(req["messages"]),
                json.loads(req["params"]),
                req["response_model"],
                self.limiters[req["role"]],
                spec.policy,
            )
            call_row = _call_row(req, ep, outcome, spec.run_id, row.get(self.key))
            calls.append(call_row)
            _tally(stats, call_row)
            return Answer(
                req["request_id"],
                outcome.status,
                outcome.parsed,
                outcome.response,
                outcome.logprobs,
                outcome.error,
                outcome.error_kind,
            )

        out = await self.program(row, ask)
        stats["rows"] = stats.get("rows", 0) + 1
        return {**out, "calls": calls}


def _stream_programs(
    pdf: pd.DataFrame,
    spec: _TaskSpec,
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
            rows = loop.run_until_complete(runner.finished(min(left, flush_rows), flush_s))
            left -= len(rows)
            yield rows
    finally:
        loop.run_until_complete(runner.close())
        loop.close()


def _partition_runner(spec: _TaskSpec, program: Program, key: str, columns: list[str], acc):
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        stats: dict[str, float] = {}
        try:
            for pdf in batches:
                for rows in _stream_programs(pdf, spec, program, key, stats):
                    yield pd.DataFrame(rows, columns=columns)
        finally:
            acc.add(stats)

    return run


async def _send_request(row: dict, ask: Ask) -> dict:
    """The program of ``execute``: the row is the request."""
    await ask(row)
    return {"request_id": row["request_id"]}


@dataclass
class _Staged:
    """Staged wave folders of one call; the first ``merged`` are already in llm_calls."""

    paths: list[str] = field(default_factory=list)
    merged: int = 0


@dataclass
class _Wave:
    index: int
    slices: range
    path: str
    acc: Any
    future: Future


@dataclass
class _WaveRun:
    """One ``_run``'s pending rows and everything its waves share."""

    pending: DataFrame
    plan: WavePlan
    slots: int
    spec: _TaskSpec
    program: Program
    key: str
    columns: list[str]
    schema: T.StructType
    stage: str
    unit: str  # "requests" or "conversations", for progress lines
    summary: ExecutionSummary
    before: tuple[int, float]
    staged: _Staged


class LLMExecutor:
    """Runs request DataFrames and per-row programs through the cache and the endpoints."""

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.spark = ctx.spark
        self.tables = ctx.tables
        self.log = ctx.log

    # -- paths -------------------------------------------------------------------------
    def _staging_root(self) -> str:
        base = self.tables.output_dir.rstrip("/")
        return f"{base}/_staging/llm_calls"

    def _merge_staged(self, paths: list[str]) -> None:
        """MERGE staged waves into llm_calls: new ids inserted; non-ok rows replaced,
        attempts accumulated; an ok row is never overwritten."""
        if not paths:
            return
        calls = self.spark.read.parquet(*paths).select(F.explode("calls").alias("c"))
        best = Window.partitionBy("request_id").orderBy(
            F.desc(F.col("status") == "ok"), F.desc("updated_at")
        )
        staged = (
            calls.select("c.*")
            .withColumn("_n", F.row_number().over(best))
            .filter("_n = 1")
            .drop("_n")
        )
        update = {c: f"s.`{c}`" for c in CALL_COLUMNS}
        update["attempts"] = "coalesce(t.attempts, 0) + coalesce(s.attempts, 0)"
        self.tables.merge("llm_calls", staged, update_when="t.status <> 'ok'", update_set=update)

    def recover_staged(self) -> int:
        """Merge wave outcomes a crashed run wrote but never merged; returns how many."""
        paths = fsutil.list_dirs(self.spark, self._staging_root())
        done = [
            p
            for p in paths
            if not p.rsplit("/", 1)[-1].startswith("pending-")
            and fsutil.exists(self.spark, f"{p}/_SUCCESS")
        ]
        self._merge_staged(done)
        for path in paths:
            fsutil.delete(self.spark, path)
        if done:
            self.log.info("llm: merged %d staged wave(s) left by an earlier run", len(done))
        return len(done)

    # -- budget ----------------------------------------------------------------------------
    def _spent_this_run(self) -> tuple[int, float]:
        row = (
            self.tables.read("llm_calls")
            .filter(F.col("run_id") == self.ctx.run_id)
            .agg(
                F.sum(F.col("prompt_tokens") + F.col("completion_tokens")).alias("tokens"),
                F.sum("cost").alias("cost"),
            )
            .first()
        )
        return int(row["tokens"] or 0), float(row["cost"] or 0.0)

    def _check_budget(self, before: tuple[int, float], summary: ExecutionSummary) -> None:
        run = self.ctx.cfg.run
        tokens = before[0] + summary.prompt_tokens + summary.completion_tokens
        cost = before[1] + summary.cost
        if run.max_tokens is not None and tokens >= run.max_tokens:
            raise BudgetExceeded(
                f"run.max_tokens={run.max_tokens} reached ({tokens} tokens this run); "
                "no new calls were sent. Raise the limit and rerun the same command to resume."
            )
        if run.max_cost is not None and cost >= run.max_cost:
            raise BudgetExceeded(
                f"run.max_cost={run.max_cost} reached ({cost:.4f} this run); no new calls were "
                "sent. Raise the limit and rerun the same command to resume."
            )

    # -- entry points ----------------------------------------------------------------------
    def execute(
        self, requests: DataFrame, stage: str, probe: Probe | None = None
    ) -> ExecutionSummary:
        """Send every request of ``requests`` not yet answered ok; record all outcomes.

        With ``probe``, one of the requests is sent alone first and ``probe`` sees its call
        row: it raises to stop before anything else is paid for. The probe is a real
        request of the set, so it costs nothing extra and the stage does not wait for a
        separate round.
        """
        self.recover_staged()
        requests = requests.select(*REQUEST_SCHEMA.fieldNames()).dropDuplicates(["request_id"])
        done = self.tables.read("llm_calls").filter(F.col("status") == "ok").select("request_id")
        pending = requests.join(done, "request_id", "left_anti")
        out = T.StructType([T.StructField("request_id", T.StringType())])
        summary, _ = self._run(
            pending, _send_request, out, stage, "request_id", 1, None, None, probe
        )
        summary.requested = requests.count()
        summary.cached = summary.requested - summary.sent
        if not summary.sent:
            self.log.info("[%s] %d requests, all answered before: 0 sent", stage, summary.requested)
        return summary

    def converse(
        self,
        rows: DataFrame,
        program: Program,
        out_schema: T.StructType,
        stage: str,
        key: str,
        calls_per_row: int,
        scratch_path: str,
        roles: tuple[str, ...] = ("synthesizer",),
    ) -> tuple[ExecutionSummary, DataFrame]:
        """Run ``program(row, ask)`` for every row of ``rows`` on the executors.

        ``key`` identifies a row's conversation: its calls are stored with it in
        ``llm_calls.conversation`` and handed back to the program as its cache on a later
        run, so a replayed conversation pays only for turns never answered ok. Returns the
        summary and the programs' outputs (``out_schema``), written to ``scratch_path``.
        """
        self.recover_staged()
        cached = (
            self.tables.read("llm_calls")
            .filter((F.col("stage") == stage) & (F.col("status") == "ok"))
            .join(rows.select(F.col(key).alias("conversation")), "conversation", "left_semi")
            .groupBy(F.col("conversation").alias(key))
            .agg(
                F.collect_list(F.struct("request_id", "parsed", "response", "logprobs")).alias(
                    "_cached"
                )
            )
        )
        rows = rows.join(cached, key, "left")
        return self._run(rows, program, out_schema, stage, key, calls_per_row, roles, scratch_path)

    # -- waves -----------------------------------------------------------------------------
    def _run(
        self,
        rows: DataFrame,
        program: Program,
        out_schema: T.StructType,
        stage: str,
        key: str,
        calls_per_row: int,
        roles: tuple[str, ...] | None,
        scratch_path: str | None,
        probe: Probe | None = None,
    ) -> tuple[ExecutionSummary, DataFrame | None]:
        t0 = time.monotonic()
        summary = ExecutionSummary()
        pending_path = f"{self._staging_root()}/pending-{stage}-{uuid.uuid4().hex[:12]}"
        cfg = self.ctx.cfg
        slots = max(1, self.spark.sparkContext.defaultParallelism)
        staged = _Staged()
        unit = "requests" if calls_per_row == 1 else "conversations"
        try:
            # written once to count them and slice them without computing ``rows`` twice
            rows.write.mode("overwrite").parquet(f"{pending_path}-all")
            all_rows = self.spark.read.parquet(f"{pending_path}-all")
            n_rows = all_rows.count()
            if n_rows == 0:
                summary.seconds = time.monotonic() - t0
                return summary, self._outputs([], out_schema, scratch_path)
            if roles is None:  # request rows name their role
                roles = tuple(r["role"] for r in all_rows.select("role").distinct().collect())
            spec = self._task_spec(list(roles), slots)
            per_slot = min(lim.concurrency for lim in spec.limits.values())
            plan = WavePlan.for_rows(
                n_rows,
                in_flight=per_slot * slots,
                slots=slots,
                calls_per_row=calls_per_row,
                wave_seconds=cfg.llm.wave_seconds,
                wave_size=cfg.llm.wave_size,
            )
            self._write_pending(all_rows, pending_path, key, plan.slices, slots, probe is not None)
            self.log.info(
                "[%s] %d %s to run over %d task slot(s), %d in flight per slot, in %d slice(s) "
                "of ~%d; waves of ~%.0f s",
                stage,
                n_rows,
                unit,
                slots,
                per_slot,
                plan.slices,
                plan.slice_rows,
                plan.wave_seconds,
            )
            before = self._spent_this_run()
            columns = [*out_schema.fieldNames(), "calls"]
            schema = T.StructType([*out_schema.fields, CALLS_FIELD])
            waves = _WaveRun(
                self.spark.read.parquet(pending_path),
                plan,
                slots,
                spec,
                program,
                key,
                columns,
                schema,
                stage,
                unit,
                summary,
                before,
                staged,
            )
            self._waves(waves, probe)
        finally:
            fsutil.delete(self.spark, f"{pending_path}-all")
            fsutil.delete(self.spark, pending_path)
            t_merge = time.monotonic()
            self._merge_staged(staged.paths[staged.merged :])
            self.log.info(
                "[%s] %d wave(s) merged into llm_calls in %.1f s",
                stage,
                len(staged.paths) - staged.merged,
                time.monotonic() - t_merge,
            )
            summary.seconds = time.monotonic() - t0
        outputs = self._outputs(staged.paths, out_schema, scratch_path)
        for path in staged.paths:
            fsutil.delete(self.spark, path)
        return summary, outputs

    def _budget_rows(self, run: _WaveRun, inflight: list[_Wave]) -> float | None:
        """Rows the budget left is estimated to pay for, after the waves in flight, from
        the tokens and cost per row so far; None without a limit or a measurement."""
        limits = self.ctx.cfg.run
        done = run.summary.rows
        if not done:
            return None
        owed = sum(len(w.slices) for w in inflight) * run.plan.slice_rows
        tokens = run.summary.prompt_tokens + run.summary.completion_tokens
        left: list[float] = []
        if limits.max_tokens is not None:
            left.append((limits.max_tokens - run.before[0] - tokens) / max(tokens / done, 1e-9))
        if limits.max_cost is not None and run.summary.cost > 0:
            left.append(
                (limits.max_cost - run.before[1] - run.summary.cost) / (run.summary.cost / done)
            )
        return min(left) - owed if left else None

    def _waves(self, run: _WaveRun, probe: Probe | None = None) -> None:
        """Submit waves keeping two in flight; each finished wave lands in ``run.staged``,
        also when this raises, so the caller merges everything that was paid for. With
        ``probe`` the pending row of slice -1 runs alone first."""
        sc = self.spark.sparkContext
        stage, plan, summary, staged = run.stage, run.plan, run.summary, run.staged
        t0 = last_merge = time.monotonic()
        inflight: list[_Wave] = []

        def job(name: str, slices: range, path: str, acc: Any) -> None:
            sc.setJobDescription(f"{stage}: {name}")
            col = F.col("_slice")
            (
                run.pending.filter((col >= slices.start) & (col < slices.stop))
                .drop("_slice")
                .coalesce(run.slots)
                .mapInPandas(
                    _partition_runner(run.spec, run.program, run.key, run.columns, acc),
                    schema=run.schema,
                )
                .write.mode("overwrite")
                # prompts are long and unique: dictionary pages only cost the JVM CPU
                .option("parquet.enable.dictionary", "false")
                .parquet(path)
            )

        def land(wave: _Wave) -> None:
            staged.paths.append(wave.path)
            stats = wave.acc.value
            summary.add_stats(stats)
            plan.finished(int(stats.get("rows", 0)), time.monotonic())

        def finish_one() -> None:
            """Land whichever wave in flight ends first, not the one submitted first: the
            slot it frees gets the next wave at once."""
            wait([w.future for w in inflight], return_when=FIRST_COMPLETED)
            wave = next(w for w in inflight if w.future.done())
            inflight.remove(wave)
            wave.future.result()
            land(wave)
            elapsed = time.monotonic() - t0
            self.log.info(
                "[%s] wave %d done: %d calls sent so far (%.1f req/s), %d answered from cache; "
                "%d/%d %s; ok %d, failed %d, invalid %d; tokens %d; cost %.4f",
                stage,
                wave.index + 1,
                summary.sent,
                summary.sent / elapsed if elapsed else 0.0,
                summary.cached,
                summary.rows,
                plan.rows,
                run.unit,
                summary.ok,
                summary.failed,
                summary.invalid,
                summary.prompt_tokens + summary.completion_tokens,
                summary.cost,
            )

        if probe is not None:
            path = f"{self._staging_root()}/{stage}-{uuid.uuid4().hex[:12]}"
            acc = sc.accumulator({}, _StatsParam())
            try:
                job("LLM probe", range(-1, 0), path, acc)
            finally:
                sc.setJobDescription(None)
            staged.paths.append(path)
            summary.add_stats(acc.value)
            calls = self.spark.read.parquet(path).select(F.explode("calls").alias("c"))
            probe([r.asDict() for r in calls.select("c.*").collect()])
            self.log.info("[%s] probe request answered as expected; sending the rest", stage)
        with ThreadPoolExecutor(
            max_workers=_IN_FLIGHT_WAVES, thread_name_prefix="llm-wave"
        ) as pool:
            try:
                w = 0
                while plan.left:
                    while len(inflight) >= _IN_FLIGHT_WAVES:
                        finish_one()
                    if time.monotonic() - last_merge > _MERGE_EVERY_S:
                        # a checkpoint: the next wave waits for this merge's Spark jobs
                        self._merge_staged(staged.paths[staged.merged :])
                        staged.merged = len(staged.paths)
                        last_merge = time.monotonic()
                    self._check_budget(run.before, summary)
                    slices = plan.next_wave(time.monotonic(), self._budget_rows(run, inflight))
                    path = f"{self._staging_root()}/{stage}-{uuid.uuid4().hex[:12]}"
                    acc = sc.accumulator({}, _StatsParam())
                    future = pool.submit(job, f"LLM wave {w + 1}", slices, path, acc)
                    inflight.append(_Wave(w, slices, path, acc, future))
                    w += 1
                while inflight:
                    finish_one()
            finally:
                for wave in inflight:  # let waves in flight land: what they paid for is kept
                    try:
                        wave.future.result()
                        land(wave)
                    except Exception:  # noqa: BLE001 - the first error is being raised already
                        pass
                sc.setJobDescription(None)

    def _write_pending(
        self, rows: DataFrame, path: str, key: str, slices: int, slots: int, probe: bool
    ) -> None:
        """Write the rows to send to ``path``, one folder per slice and ``slots`` files in
        each.

        A wave's job then reads its slices' folders into one task per slot without a
        shuffle: a shuffle stage would wait for a free slot, i.e. for the previous wave to
        end. With ``probe`` the row with the smallest key goes to slice -1, to be sent alone.
        """
        part = F.pmod(F.xxhash64(key), F.lit(slices))
        if probe:
            first = rows.agg(F.min(key)).first()[0]
            part = F.when(F.col(key) == F.lit(first), F.lit(-1)).otherwise(part)
        (
            rows.withColumn("_slice", part)
            .repartition(slots)
            .write.mode("overwrite")
            .partitionBy("_slice")
            .parquet(path)
        )

    def _outputs(
        self, staged: list[str], out_schema: T.StructType, scratch_path: str | None
    ) -> DataFrame | None:
        if scratch_path is None:
            return None
        if staged:
            outs = self.spark.read.parquet(*staged).select(*out_schema.fieldNames())
        else:
            outs = self.spark.createDataFrame([], out_schema)
        outs.write.mode("overwrite").parquet(scratch_path)
        return self.spark.read.parquet(scratch_path)

    def _task_spec(self, roles: list[str], slots: int) -> _TaskSpec:
        cfg: Config = self.ctx.cfg
        endpoints = {role: resolve_endpoint(cfg, role) for role in roles}
        limits = {}
        for role in roles:
            ep = getattr(cfg.llm, role)
            limits[role] = TaskLimits.share(
                slots, cfg.llm.concurrency_per_task, ep.max_concurrency, ep.rpm, ep.tpm
            )
        policy = RetryPolicy(
            max_retries=cfg.llm.max_retries,
            backoff_min_s=cfg.llm.backoff_min_s,
            backoff_max_s=cfg.llm.backoff_max_s,
            repair_attempts=cfg.llm.repair_attempts,
        )
        return _TaskSpec(endpoints, limits, policy, self.ctx.run_id)

    # -- reading answers back ----------------------------------------------------------
    def results(self, requests: DataFrame) -> DataFrame:
        """``requests`` joined with their outcomes (status, parsed, response, logprobs, error)."""
        calls = self.tables.read("llm_calls").select(
            "request_id", "status", "parsed", "response", "logprobs", "error", "error_kind"
        )
        return requests.join(calls, "request_id", "left")
