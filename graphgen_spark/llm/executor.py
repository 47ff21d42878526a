"""The distributed request executor: every LLM call is a row (architecture §4.1–4.2).

Two entry points share one mechanism:

* ``execute(requests)`` sends a DataFrame of requests (REQUEST_SCHEMA) that are not yet
  answered ok in ``llm_calls`` (the cache shared by all runs);
* ``converse(rows, program)`` runs a *program* per row inside the executor task, e.g. a
  whole extraction conversation, whose every turn is a request answered from the row's
  cached calls or sent. Running the conversation where the answers arrive keeps the
  endpoint busy: the driver does not synchronise between turns.

Rows run in waves of Spark jobs (``mapInPandas`` with one asyncio loop per task keeping up
to the task's share of in-flight requests). Two waves are in flight at once, so a task
slot that finishes its part of one wave starts on the next without waiting for the
driver. Each wave writes its outcomes, with the call rows nested, to a staging folder
once; the staged waves are MERGEd into ``llm_calls`` at the end of the call (and at least
every ``_MERGE_EVERY_S``), so a crash loses at most the waves in flight and the next
start merges whatever was staged. Per-wave progress and the budget guard use Spark
accumulators, because any other Spark job would queue behind the running wave's tasks.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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


async def _run_programs(
    pdf: pd.DataFrame, spec: _TaskSpec, program: Program, key: str, stats: dict[str, float]
) -> list[dict]:
    clients = {
        role: openai.AsyncOpenAI(
            base_url=ep.base_url, api_key=ep.api_key, max_retries=0, timeout=ep.timeout_s
        )
        for role, ep in spec.endpoints.items()
    }
    limiters = {role: TaskLimiter(lim) for role, lim in spec.limits.items()}
    try:

        async def one(row: dict) -> dict:
            cached = {c["request_id"]: c for c in (row.pop("_cached", None) or [])}
            calls: list[dict] = []

            async def ask(req: dict) -> Answer:
                stats["requested"] = stats.get("requested", 0) + 1
                hit = cached.get(req["request_id"])
                if hit is not None:
                    stats["cached"] = stats.get("cached", 0) + 1
                    return Answer(status="ok", **hit)
                ep = spec.endpoints[req["role"]]
                outcome = await call(
                    clients[req["role"]],
                    ep,
                    json.loads(req["messages"]),
                    json.loads(req["params"]),
                    req["response_model"],
                    limiters[req["role"]],
                    spec.policy,
                )
                call_row = _call_row(req, ep, outcome, spec.run_id, row.get(key))
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

            # programs handle bad answers themselves; an exception here is a bug and fails
            # the task loudly rather than writing a half-empty row
            out = await program(row, ask)
            return {**out, "calls": calls}

        return await asyncio.gather(*(one(r) for r in pdf.to_dict("records")))
    finally:
        # one client per task loop, closed before the loop ends (see architecture §4.2)
        for client in clients.values():
            await client.close()


def _partition_runner(spec: _TaskSpec, program: Program, key: str, columns: list[str], acc):
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            if not len(pdf):
                continue
            stats: dict[str, float] = {}
            rows = asyncio.run(_run_programs(pdf, spec, program, key, stats))
            acc.add(stats)
            yield pd.DataFrame(rows, columns=columns)

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
    path: str
    acc: Any
    started: float
    future: Future


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
        per_wave = max(1, cfg.llm.wave_size // max(1, calls_per_row))
        staged = _Staged()
        try:
            n_rows = self._write_pending(
                rows, key, per_wave, slots, pending_path, probe is not None
            )
            if n_rows == 0:
                summary.seconds = time.monotonic() - t0
                return summary, self._outputs([], out_schema, scratch_path)
            pending = self.spark.read.parquet(pending_path)
            if roles is None:  # request rows name their role
                roles = tuple(r["role"] for r in pending.select("role").distinct().collect())
            spec = self._task_spec(list(roles), slots)
            waves = max(1, math.ceil(n_rows / per_wave))
            self.log.info(
                "[%s] %d %s to run in %d wave(s) over %d task slot(s), %d in flight per slot",
                stage,
                n_rows,
                "requests" if calls_per_row == 1 else "conversations",
                waves,
                slots,
                min(lim.concurrency for lim in spec.limits.values()),
            )
            before = self._spent_this_run()
            columns = [*out_schema.fieldNames(), "calls"]
            schema = T.StructType([*out_schema.fields, CALLS_FIELD])
            self._waves(
                pending,
                waves,
                slots,
                spec,
                program,
                key,
                columns,
                schema,
                stage,
                summary,
                before,
                staged,
                probe,
            )
        finally:
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

    def _waves(
        self,
        keyed: DataFrame,
        waves: int,
        slots: int,
        spec: _TaskSpec,
        program: Program,
        key: str,
        columns: list[str],
        schema: T.StructType,
        stage: str,
        summary: ExecutionSummary,
        before: tuple[int, float],
        staged: _Staged,
        probe: Probe | None = None,
    ) -> None:
        """Submit waves keeping two in flight; each finished wave lands in ``staged``, also
        when this raises, so the caller merges everything that was paid for. With ``probe``
        the pending row of wave -1 runs alone first."""
        sc = self.spark.sparkContext
        t0 = last_merge = time.monotonic()
        inflight: deque[_Wave] = deque()

        def job(w: int, path: str, acc: Any) -> None:
            sc.setJobDescription(
                f"{stage}: LLM probe" if w < 0 else f"{stage}: LLM wave {w + 1}/{waves}"
            )
            (
                keyed.filter(F.col("_wave") == w)
                .drop("_wave")
                .coalesce(slots)
                .mapInPandas(_partition_runner(spec, program, key, columns, acc), schema=schema)
                .write.mode("overwrite")
                # prompts are long and unique: dictionary pages only cost the JVM CPU
                .option("parquet.enable.dictionary", "false")
                .parquet(path)
            )

        def finish(wave: _Wave) -> None:
            wave.future.result()
            staged.paths.append(wave.path)
            summary.add_stats(wave.acc.value)
            elapsed = time.monotonic() - t0
            self.log.info(
                "[%s] wave %d/%d done: %d calls sent so far (%.1f req/s), %d answered from cache; "
                "ok %d, failed %d, invalid %d; tokens %d; cost %.4f",
                stage,
                wave.index + 1,
                waves,
                summary.sent,
                summary.sent / elapsed if elapsed else 0.0,
                summary.cached,
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
                job(-1, path, acc)
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
                for w in range(waves):
                    while len(inflight) >= _IN_FLIGHT_WAVES:
                        finish(inflight.popleft())
                    if time.monotonic() - last_merge > _MERGE_EVERY_S and not inflight:
                        self._merge_staged(staged.paths[staged.merged :])  # a checkpoint
                        staged.merged = len(staged.paths)
                        last_merge = time.monotonic()
                    self._check_budget(before, summary)
                    path = f"{self._staging_root()}/{stage}-{uuid.uuid4().hex[:12]}"
                    acc = sc.accumulator({}, _StatsParam())
                    inflight.append(
                        _Wave(w, path, acc, time.monotonic(), pool.submit(job, w, path, acc))
                    )
                while inflight:
                    finish(inflight.popleft())
            finally:
                for wave in inflight:  # let waves in flight land: what they paid for is kept
                    try:
                        wave.future.result()
                        staged.paths.append(wave.path)
                        summary.add_stats(wave.acc.value)
                    except Exception:  # noqa: BLE001 - the first error is being raised already
                        pass
                sc.setJobDescription(None)

    def _write_pending(
        self, rows: DataFrame, key: str, per_wave: int, slots: int, path: str, probe: bool
    ) -> int:
        """Write the rows to send once, one folder per wave and ``slots`` files in each.

        A wave's job then reads its own folder into one task per slot without a shuffle:
        a shuffle stage would wait for a free slot, i.e. for the previous wave to end.
        With ``probe`` the row with the smallest key goes to wave -1, to be sent alone.
        """
        rows.write.mode("overwrite").parquet(f"{path}-all")
        try:
            n_rows = self.spark.read.parquet(f"{path}-all").count()
            if n_rows:
                waves = max(1, math.ceil(n_rows / per_wave))
                wave = F.pmod(F.xxhash64(key), F.lit(waves))
                if probe:
                    first = self.spark.read.parquet(f"{path}-all").agg(F.min(key)).first()[0]
                    wave = F.when(F.col(key) == F.lit(first), F.lit(-1)).otherwise(wave)
                (
                    self.spark.read.parquet(f"{path}-all")
                    .withColumn("_wave", wave)
                    .repartition(slots)
                    .write.mode("overwrite")
                    .partitionBy("_wave")
                    .parquet(path)
                )
        finally:
            fsutil.delete(self.spark, f"{path}-all")
        return n_rows

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
