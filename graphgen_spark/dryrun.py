"""``--dry-run``: what the LLM stages of a configuration would cost, before any call (§10).

Free stages (ingest, chunk, partition) run for real, because the estimates need their
tables; every LLM stage is only counted from the current tables: units still to do, the
fewest and most requests they can take, and prompt tokens (the facts sent; prompt
templates add a few hundred tokens per request). Completion tokens are bounded by
``max_tokens`` per request. Nothing is sent and nothing is written for the LLM stages.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from graphgen_spark.config import Config
from graphgen_spark.llm.ledger import Ledger
from graphgen_spark.stages.base import LLMDemand, Stage, StageContext

TEMPLATE_TOKENS = 300  # prompt scaffolding per request, a generous round figure


@dataclass
class Estimate:
    stage: str
    units: int
    min_requests: int
    max_requests: int
    prompt_tokens: int  # for the fewest requests
    max_completion_tokens: int
    note: str = ""
    role: str = "synthesizer"

    def cost(self, cfg: Config) -> tuple[float, float]:
        ep = getattr(cfg.llm, self.role)
        low = (self.prompt_tokens + TEMPLATE_TOKENS * self.min_requests) * ep.price_prompt_per_1m
        high = low + self.max_completion_tokens * ep.price_completion_per_1m
        return low / 1e6, high / 1e6


def estimate(ctx: StageContext, stages: list[Stage]) -> list[Estimate]:
    """One estimate per LLM stage (per group, e.g. generate's modes) the config runs."""
    out: list[Estimate] = []
    for stage in stages:
        if stage.llm is None or stage.skip(ctx.cfg):
            continue
        if stage.pending is None:  # its to-do set exists only once earlier stages ran
            out.append(Estimate(stage.name, 0, 0, 0, 0, 0, stage.llm.note, stage.llm.role))
            continue
        todo = stage.pending(ctx)
        groups = [None] if stage.llm.group is None else _groups(ctx, stage.llm.group)
        for g in groups:
            rows = todo if g is None else todo.filter(F.col(stage.llm.group) == g)
            out.append(_estimate(ctx, stage.name, stage.llm, rows, g))
    return out


def _groups(ctx: StageContext, column: str) -> list[str]:
    """The values a stage estimates apart; generate's ``mode`` is the only group so far."""
    assert column == "mode", column
    return list(ctx.cfg.generate.modes)


def _estimate(
    ctx: StageContext, stage: str, llm: LLMDemand, rows: DataFrame, group: str | None
) -> Estimate:
    fewest, most = llm.calls(ctx.cfg, group)
    agg = rows.agg(F.count("*").alias("n"), F.sum(llm.prompt_tokens()).alias("tok")).first()
    units, tokens = int(agg["n"] or 0), int(agg["tok"] or 0)
    done = _answered(ctx, stage)
    if llm.requests is not None:
        low, high = _request_calls(ctx, llm, rows, done, fewest, most)
    else:
        low, high = _conversation_calls(llm, rows, done, fewest, most)
    return Estimate(
        stage if group is None else f"{stage}:{group}",
        units,
        low,
        high,
        tokens * fewest,
        high * llm.max_tokens(ctx.cfg),
        llm.note.format(fewest=fewest, most=most),
        llm.role,
    )


def _answered(ctx: StageContext, stage: str) -> DataFrame:
    """The stage's calls a run does not send again (the ledger's cache)."""
    if not ctx.tables.exists("llm_calls"):
        return ctx.tables.read("llm_calls").select("request_id", "conversation")
    ledger = Ledger(ctx.spark, ctx.tables, ctx.run_id, ctx.log, None, ctx.cfg.llm.retry_given_up)
    return ledger.answered().filter(F.col("stage") == stage).select("request_id", "conversation")


def _request_calls(
    ctx: StageContext, llm: LLMDemand, rows: DataFrame, done: DataFrame, fewest: int, most: int
) -> tuple[int, int]:
    """One-shot stages send each distinct first request not answered before (units with
    the same prompt share one), then up to ``most`` attempts of it."""
    assert llm.requests is not None
    reqs = llm.requests(ctx, rows).select("request_id").distinct()
    n = reqs.join(done, "request_id", "left_anti").count()
    return n * fewest, n * most


def _conversation_calls(
    llm: LLMDemand, rows: DataFrame, done: DataFrame, fewest: int, most: int
) -> tuple[int, int]:
    """A replayed conversation pays only for turns not answered before."""
    key = llm.key
    turns = done.select(F.col("conversation").alias(key)).join(rows.select(key), key, "left_semi")
    n = F.coalesce(F.col("_answered"), F.lit(0))
    agg = (
        rows.join(turns.groupBy(key).agg(F.count("*").alias("_answered")), key, "left")
        .agg(
            F.sum(F.greatest(F.lit(fewest) - n, F.lit(0))).alias("low"),
            F.sum(F.greatest(F.lit(most) - n, F.lit(0))).alias("high"),
        )
        .first()
    )
    return int(agg["low"] or 0), int(agg["high"] or 0)


def render(cfg: Config, estimates: list[Estimate]) -> str:
    head = f"{'stage':<26}{'units':>9}{'requests':>19}{'prompt tok':>13}{'cost':>21}  note"
    lines = ["DRY RUN: nothing was sent to any endpoint", head, "-" * len(head)]
    for e in estimates:
        low, high = e.cost(cfg)
        reqs = f"{e.min_requests}..{e.max_requests}"
        lines.append(
            f"{e.stage:<26}{e.units:>9}{reqs:>19}{e.prompt_tokens:>13}"
            f"{f'{low:.4f}..{high:.4f}':>21}  {e.note}"
        )
    lines.append(
        "cost: prompt tokens (+ templates) at the configured prices .. plus every request "
        "using its max_tokens; set llm.<role>.price_* to see money"
    )
    return "\n".join(lines)
