"""The distributed request executor: every LLM call is a row (architecture §4.1–4.2).

``execute`` takes a DataFrame of requests (REQUEST_SCHEMA), drops those already answered
successfully in ``llm_calls`` (the cache, shared by all runs), and sends the rest from
executor tasks: ``mapInPandas`` with an asyncio loop per task keeping up to the task's
share of in-flight requests. Work runs in waves; each wave's outcomes are written to a
staging folder once and then MERGEd into ``llm_calls`` before the next wave, so a crash
loses at most the wave in flight and a rerun resumes. Staged outcomes left by a crash
between write and MERGE are merged at the next start.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import openai
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from graphgen_spark import fsutil
from graphgen_spark.llm.client import RetryPolicy, call
from graphgen_spark.llm.endpoints import Endpoint, resolve_endpoint
from graphgen_spark.llm.limits import TaskLimiter, TaskLimits
from graphgen_spark.llm.requests import REQUEST_SCHEMA
from graphgen_spark.stages.base import StageContext, StageResult
from graphgen_spark.tables import SCHEMAS

CALL_COLUMNS = [f.name for f in SCHEMAS["llm_calls"].fields]


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


_COUNTED = ("requested", "cached", "sent", "ok", "failed", "invalid")


@dataclass(frozen=True)
class _TaskSpec:
    """Everything a task needs; pickled into the closure (never into a Spark conf)."""

    endpoints: dict[str, Endpoint]
    limits: dict[str, TaskLimits]
    policy: RetryPolicy
    run_id: str


async def _run_batch(pdf: pd.DataFrame, spec: _TaskSpec) -> pd.DataFrame:
    clients = {
        role: openai.AsyncOpenAI(
            base_url=ep.base_url, api_key=ep.api_key, max_retries=0, timeout=ep.timeout_s
        )
        for role, ep in spec.endpoints.items()
    }
    limiters = {role: TaskLimiter(lim) for role, lim in spec.limits.items()}
    try:

        async def one(row: dict) -> dict:
            ep = spec.endpoints[row["role"]]
            outcome = await call(
                clients[row["role"]],
                ep,
                json.loads(row["messages"]),
                json.loads(row["params"]),
                row["response_model"],
                limiters[row["role"]],
                spec.policy,
            )
            return {
                **row,
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
                "run_id": spec.run_id,
            }

        rows = await asyncio.gather(*(one(r) for r in pdf.to_dict("records")))
    finally:
        # one client per task loop, closed before the loop ends (see architecture §4.2)
        for client in clients.values():
            await client.close()
    out = pd.DataFrame(rows, columns=[c for c in CALL_COLUMNS if c != "updated_at"])
    out["updated_at"] = pd.Timestamp.now(tz="UTC").tz_localize(None)
    return out


def _partition_runner(spec: _TaskSpec):
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            if len(pdf):
                yield asyncio.run(_run_batch(pdf, spec))

    return run


class LLMExecutor:
    """Runs request DataFrames through the cache and the endpoints for one pipeline run."""

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.spark = ctx.spark
        self.tables = ctx.tables
        self.log = ctx.log

    # -- paths -------------------------------------------------------------------------
    def _staging_root(self) -> str:
        base = self.tables.output_dir.rstrip("/")
        return f"{base}/_staging/llm_calls"

    def _merge_outcomes(self, path: str) -> None:
        """MERGE a staged wave into llm_calls: new ids inserted; non-ok rows replaced,
        attempts accumulated; an ok row is never overwritten."""
        staged = self.spark.read.parquet(path)
        update = {c: f"s.`{c}`" for c in CALL_COLUMNS}
        update["attempts"] = "coalesce(t.attempts, 0) + coalesce(s.attempts, 0)"
        self.tables.merge("llm_calls", staged, update_when="t.status <> 'ok'", update_set=update)

    def recover_staged(self) -> int:
        """Merge wave outcomes a crashed run wrote but never merged; returns how many."""
        n = 0
        for path in fsutil.list_dirs(self.spark, self._staging_root()):
            if path.rsplit("/", 1)[-1].startswith("pending-"):
                fsutil.delete(self.spark, path)
                continue
            if fsutil.exists(self.spark, f"{path}/_SUCCESS"):
                self._merge_outcomes(path)
                n += 1
            fsutil.delete(self.spark, path)
        if n:
            self.log.info("llm: merged %d staged wave(s) left by an earlier run", n)
        return n

    # -- budget ----------------------------------------------------------------------------
    def _check_budget(self) -> None:
        run = self.ctx.cfg.run
        if run.max_tokens is None and run.max_cost is None:
            return
        row = (
            self.tables.read("llm_calls")
            .filter(F.col("run_id") == self.ctx.run_id)
            .agg(
                F.sum(F.col("prompt_tokens") + F.col("completion_tokens")).alias("tokens"),
                F.sum("cost").alias("cost"),
            )
            .first()
        )
        tokens, cost = int(row["tokens"] or 0), float(row["cost"] or 0.0)
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

    # -- main entry ----------------------------------------------------------------------------
    def execute(self, requests: DataFrame, stage: str) -> ExecutionSummary:
        """Send every request of ``requests`` not yet answered ok; record all outcomes."""
        t0 = time.monotonic()
        cfg = self.ctx.cfg
        self.recover_staged()
        requests = requests.select(*REQUEST_SCHEMA.fieldNames()).dropDuplicates(["request_id"])
        done = self.tables.read("llm_calls").filter(F.col("status") == "ok").select("request_id")
        pending_path = f"{self._staging_root()}/pending-{stage}-{uuid.uuid4().hex[:12]}"
        # materialise the pending set once: later waves must not re-derive it
        requests.join(done, "request_id", "left_anti").write.mode("overwrite").parquet(pending_path)
        pending = self.spark.read.parquet(pending_path)
        summary = ExecutionSummary()
        try:
            n_pending = pending.count()
            summary.requested = requests.count()
            summary.cached = summary.requested - n_pending
            if n_pending == 0:
                self.log.info(
                    "[%s] %d requests, all answered before: 0 sent", stage, summary.requested
                )
                return summary
            roles = [r["role"] for r in pending.select("role").distinct().collect()]
            spec = self._task_spec(roles)
            waves = max(1, math.ceil(n_pending / cfg.llm.wave_size))
            slots = max(1, self.spark.sparkContext.defaultParallelism)
            self.log.info(
                "[%s] %d requests: %d answered before, %d to send in %d wave(s) over %d task slot(s)",
                stage,
                summary.requested,
                summary.cached,
                n_pending,
                waves,
                slots,
            )
            keyed = pending.withColumn("_wave", F.pmod(F.xxhash64("request_id"), F.lit(waves)))
            for w in range(waves):
                self._check_budget()
                self._run_wave(
                    keyed.filter(F.col("_wave") == w).drop("_wave"),
                    spec,
                    stage,
                    w,
                    waves,
                    slots,
                    summary,
                )
        finally:
            fsutil.delete(self.spark, pending_path)
            summary.seconds = time.monotonic() - t0
        return summary

    def _task_spec(self, roles: list[str]) -> _TaskSpec:
        cfg = self.ctx.cfg
        slots = max(1, self.spark.sparkContext.defaultParallelism)
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

    def _run_wave(
        self,
        wave: DataFrame,
        spec: _TaskSpec,
        stage: str,
        w: int,
        waves: int,
        slots: int,
        summary: ExecutionSummary,
    ) -> None:
        t0 = time.monotonic()
        sc = self.spark.sparkContext
        sc.setJobDescription(f"{stage}: LLM wave {w + 1}/{waves}")
        n = wave.count()
        out_path = f"{self._staging_root()}/{stage}-{self.ctx.run_id[:12]}-{uuid.uuid4().hex[:8]}"
        (
            wave.repartition(max(1, min(n, slots)))
            .mapInPandas(_partition_runner(spec), schema=SCHEMAS["llm_calls"])
            .write.mode("overwrite")
            .parquet(out_path)
        )
        staged = self.spark.read.parquet(out_path)
        stats = (
            staged.groupBy("status", "error_kind")
            .agg(
                F.count("*").alias("n"),
                F.sum("prompt_tokens").alias("pt"),
                F.sum("completion_tokens").alias("ct"),
                F.sum("cost").alias("cost"),
            )
            .collect()
        )
        self._merge_outcomes(out_path)
        fsutil.delete(self.spark, out_path)
        sc.setJobDescription(None)
        for r in stats:
            k = int(r["n"])
            summary.sent += k
            if r["status"] == "ok":
                summary.ok += k
            elif r["status"] == "invalid":
                summary.invalid += k
            else:
                summary.failed += k
            if r["error_kind"]:
                summary.errors[r["error_kind"]] = summary.errors.get(r["error_kind"], 0) + k
            summary.prompt_tokens += int(r["pt"] or 0)
            summary.completion_tokens += int(r["ct"] or 0)
            summary.cost += float(r["cost"] or 0.0)
        dt = time.monotonic() - t0
        self.log.info(
            "[%s] wave %d/%d: %d requests in %.1f s (%.1f req/s); so far ok %d, failed %d, "
            "invalid %d; tokens %d; cost %.4f",
            stage,
            w + 1,
            waves,
            n,
            dt,
            n / dt if dt else 0.0,
            summary.ok,
            summary.failed,
            summary.invalid,
            summary.prompt_tokens + summary.completion_tokens,
            summary.cost,
        )

    # -- reading answers back ----------------------------------------------------------
    def results(self, requests: DataFrame) -> DataFrame:
        """``requests`` joined with their outcomes (status, parsed, response, logprobs, error)."""
        calls = self.tables.read("llm_calls").select(
            "request_id", "status", "parsed", "response", "logprobs", "error", "error_kind"
        )
        return requests.join(calls, "request_id", "left")
