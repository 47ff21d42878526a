"""``--dry-run``: what the LLM stages of a configuration would cost, before any call (§10).

Free stages (ingest, chunk, partition) run for real, because the estimates need their
tables; every LLM stage is only counted from the current tables: units still to do, the
fewest and most requests they can take, and prompt tokens (the facts sent; prompt
templates add a few hundred tokens per request). Completion tokens are bounded by
``max_tokens`` per request. Nothing is sent and nothing is written for the LLM stages.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import functions as F

from graphgen_spark.config import Config
from graphgen_spark.stages.base import StageContext
from graphgen_spark.stages.extract import calls_per_text

FREE_STAGES = ("ingest", "chunk", "partition")
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

    def cost(self, cfg: Config, role: str) -> tuple[float, float]:
        ep = getattr(cfg.llm, role)
        low = (self.prompt_tokens + TEMPLATE_TOKENS * self.min_requests) * ep.price_prompt_per_1m
        high = low + self.max_completion_tokens * ep.price_completion_per_1m
        return low / 1e6, high / 1e6


def _extract(ctx: StageContext) -> Estimate:
    t = ctx.tables
    done = t.read("extractions").filter("status = 'ok'").select("content_hash")
    texts = (
        t.read("chunks")
        .groupBy("content_hash")
        .agg(F.first("n_tokens").alias("n_tokens"))
        .join(done, "content_hash", "left_anti")
    )
    row = texts.agg(F.count("*").alias("n"), F.sum("n_tokens").alias("tok")).first()
    n, tok = int(row["n"] or 0), int(row["tok"] or 0)
    most = calls_per_text(ctx.cfg)
    return Estimate(
        "extract",
        n,
        n,
        n * most,
        tok,
        n * most * ctx.cfg.llm.synthesizer.max_tokens,
        f"1..{most} calls per distinct chunk text (gleaning); later turns resend the text",
    )


def _quiz(ctx: StageContext) -> Estimate:
    from graphgen_spark.stages.quiz import elements

    have = ctx.tables.read("statements").select("element_id", "description_hash").distinct()
    todo = elements(ctx).join(have, ["element_id", "description_hash"], "left_anti")
    n = todo.count()
    tok = todo.select(F.sum(F.length("description"))).first()[0] or 0
    attempts = ctx.cfg.quiz.max_attempts
    return Estimate(
        "quiz",
        n,
        n,
        n * attempts,
        int(tok) // 3,  # characters / 3 ~ tokens; descriptions are short
        n * attempts * ctx.cfg.llm.synthesizer.max_tokens,
        f"one call per element, up to quiz.max_attempts={attempts} when checks fail",
    )


def _judge(ctx: StageContext) -> Estimate:
    if ctx.cfg.gap_scoring == "off":
        return Estimate("judge", 0, 0, 0, 0, 0, "gap_scoring is off")
    judged = (
        ctx.tables.read("judgements")
        .filter(F.col("trainee_model") == ctx.cfg.trainee_model())
        .select("statement_id")
    )
    todo = ctx.tables.read("statements").join(judged, "statement_id", "left_anti")
    n = todo.count()
    tok = todo.select(F.sum(F.length("text"))).first()[0] or 0
    return Estimate(
        "judge",
        n,
        n,
        n,
        int(tok) // 3,
        n * ctx.cfg.judge.max_tokens,
        "one 1-token call per statement (2n per element); statements exist only after quiz",
    )


def _generate(ctx: StageContext) -> list[Estimate]:
    from graphgen_spark.generate.programs import calls_per_unit
    from graphgen_spark.stages.generate import mode_batches, mode_units, n_items, pending_units

    out = []
    for mode in ctx.cfg.generate.modes:
        todo = pending_units(ctx, mode, mode_units(ctx, mode, mode_batches(ctx, mode)))
        row = todo.agg(F.count("*").alias("n"), F.sum("prompt_tokens").alias("tok")).first()
        n, tok = int(row["n"] or 0), int(row["tok"] or 0)
        steps = 2 if mode in ("aggregated", "cot") else 1
        checks = n_items(ctx.cfg, mode) if ctx.cfg.generate.qa_check else 0
        most = calls_per_unit(mode, checks)
        out.append(
            Estimate(
                f"generate:{mode}",
                n,
                n * steps,
                n * most,
                tok * steps,
                n * most * ctx.cfg.generate.max_tokens,
                f"{steps} call(s) per batch, at most {most} with language retries"
                + (" and answer checks" if checks else ""),
            )
        )
    return out


def estimate(ctx: StageContext, stages: list[str]) -> list[Estimate]:
    est: list[Estimate] = []
    if "extract" in stages:
        est.append(_extract(ctx))
    if "merge" in stages:
        est.append(
            Estimate(
                "merge",
                0,
                0,
                0,
                0,
                0,
                "summarises only descriptions over merge.summary_threshold tokens: known after "
                "extract",
            )
        )
    if "quiz" in stages and ctx.cfg.gap_scoring == "on":
        est.append(_quiz(ctx))
    if "judge" in stages:
        est.append(_judge(ctx))
    if "generate" in stages:
        est += _generate(ctx)
    return est


ROLE = {"judge": "trainee"}


def render(cfg: Config, estimates: list[Estimate]) -> str:
    head = f"{'stage':<26}{'units':>9}{'requests':>19}{'prompt tok':>13}{'cost':>21}  note"
    lines = ["DRY RUN: nothing was sent to any endpoint", head, "-" * len(head)]
    for e in estimates:
        low, high = e.cost(cfg, ROLE.get(e.stage, "synthesizer"))
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
