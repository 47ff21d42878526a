"""Judge stage: the trainee's verdict on every statement, losses, gap scores, calibration.

The trainee answers each statement closed-book with one token and its top-k
log-probabilities (method.md §5.2); yes/no masses over all candidates give p_yes and the
loss −ln P(correct label) (§5.3). ``gap_scores`` averages per element; ``calibration``
holds binned ECE, MCE and Brier per scope, computed from Spark aggregates (no corpus is
collected). A trainee endpoint without logprobs is a configuration error found by the first
statement, sent alone before any other — never a silent constant loss.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from graphgen_spark.concurrency import side_by_side
from graphgen_spark.config import Config, ConfigError
from graphgen_spark.errors import StageIncomplete
from graphgen_spark.gap.calibration import Bin
from graphgen_spark.gap.verdict import (
    NO_WORDS,
    YES_WORDS,
    BadLogprobs,
    first_top_logprobs,
    normalise_token,
    read_verdict,
    statement_loss,
)
from graphgen_spark.llm.endpoints import resolve_endpoint
from graphgen_spark.llm.executor import LLMExecutor
from graphgen_spark.llm.requests import REQUEST_SCHEMA, request_row
from graphgen_spark.prompts.quiz import judge_messages
from graphgen_spark.report.reliability import reliability_png
from graphgen_spark.stages.base import LLMDemand, Stage, StageContext, StageResult
from graphgen_spark.tables import (
    SCHEMAS,
    RetryUntilOk,
    UpdateWhenChanged,
    Upsert,
    local_path,
)

NAME = "judge"
JUDGE_REQUEST = T.StructType(
    [T.StructField("statement_id", T.StringType())] + REQUEST_SCHEMA.fields
)


def judge_request(cfg: Config, text: str, language: str) -> dict:
    lang = language if cfg.judge.prompt_language == "auto" else cfg.judge.prompt_language
    return request_row(
        cfg,
        NAME,
        "trainee",
        judge_messages(text, lang),
        max_tokens=cfg.judge.max_tokens,
        temperature=cfg.judge.temperature,
        logprobs=True,
        top_logprobs=cfg.judge.top_k,
        seed=0,
    )


def logprobs_probe(cfg: Config):
    """The check on the first statement sent, alone, before any other (executor probe):
    the trainee must return logprobs with top_logprobs, else nothing more is paid for."""
    ep = resolve_endpoint(cfg, "trainee")

    def check(calls: list[dict]) -> None:
        first = calls[0]
        if first["status"] == "ok":
            return
        if first["error_kind"] == "no_logprobs":
            raise ConfigError(
                f"the trainee endpoint {ep.base_url} (model {ep.model}) returned no chat "
                "logprobs: gap scoring needs `logprobs` with `top_logprobs` (vLLM and SGLang "
                "serve them). Point TRAINEE_BASE_URL / llm.trainee at such an endpoint, or set "
                "`gap_scoring: off` to sample without gap scores."
            )
        raise StageIncomplete(
            f"judge: the first statement sent to the trainee endpoint {ep.base_url} (model "
            f"{ep.model}) failed, so no other was sent: {first['error_kind']}: "
            f"{first['error']}. Rerun the same command once the endpoint answers."
        )

    return check


def _verdict_fn(cfg: Config, trainee_model: str):
    yes = YES_WORDS | {normalise_token(w) for w in cfg.judge.synonyms.yes}
    no = NO_WORDS | {normalise_token(w) for w in cfg.judge.synonyms.no}
    floor, k = cfg.judge.prob_floor, cfg.judge.top_k
    cols = SCHEMAS["judgements"].fieldNames()

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            rows = []
            for r in pdf.to_dict("records"):
                row = dict.fromkeys(cols)
                row.update(
                    statement_id=r["statement_id"],
                    trainee_model=trainee_model,
                    top_k=k,
                    request_id=r["request_id"],
                )
                row.update(judge_reply(r, yes, no, floor))
                rows.append(row)
            yield pd.DataFrame(rows, columns=cols)

    return score


def judge_reply(r: dict, yes: frozenset[str], no: frozenset[str], floor: float) -> dict:
    """Status, masses, verdict and loss of one trainee reply (``status``, ``logprobs``,
    ``label``); logprobs that are not log-probabilities give ``no_verdict`` with a reason."""
    if r["status"] != "ok" or not r["logprobs"]:
        return {"status": "failed" if r["status"] != "ok" else "no_logprobs"}
    try:
        v = read_verdict(first_top_logprobs(r["logprobs"]), yes, no)
    except BadLogprobs as exc:
        return {"status": "no_verdict", "reason": f"bad_logprobs: {exc}"[:300]}
    out = {"yes_mass": v.yes_mass, "no_mass": v.no_mass, "verdict_mass": v.verdict_mass}
    if not v.ok:
        return {**out, "status": "no_verdict", "reason": "no_yes_no_candidate"}
    p_yes = v.p_yes
    predicted = "yes" if p_yes >= 0.5 else "no"
    return {
        **out,
        "p_yes": p_yes,
        "p_no": 1.0 - p_yes,
        "predicted": predicted,
        "correct": predicted == r["label"],
        "confidence": max(p_yes, 1.0 - p_yes),
        "loss": statement_loss(p_yes, r["label"] == "yes", floor),
        "status": "ok",
    }


def calibration_rows(judged: DataFrame, trainee_model: str, bins: int, run_id: str) -> list[dict]:
    """Per scope: ECE, MCE, Brier and the bins, from one grouped aggregate."""
    scoped = judged.withColumn(
        "scopes",
        F.array(
            F.lit("all"),
            F.col("element_kind"),
            F.concat(F.lit("kind:"), "kind"),
            F.concat(F.lit("language:"), "language"),
        ),
    ).select(F.explode("scopes").alias("scope"), "*")
    ok = scoped.filter("status = 'ok'").withColumn(
        "k", F.greatest(F.lit(1), F.ceil(F.col("confidence") * bins - F.lit(1e-9))).cast("int")
    )
    per_bin = (
        ok.groupBy("scope", "k")
        .agg(
            F.count("*").alias("count"),
            F.avg(F.col("correct").cast("double")).alias("acc"),
            F.avg("confidence").alias("conf"),
        )
        .collect()
    )
    totals = {
        r["scope"]: r
        for r in scoped.groupBy("scope")
        .agg(
            F.sum((F.col("status") == "ok").cast("long")).alias("n"),
            F.sum((F.col("status") == "no_verdict").cast("long")).alias("n_no_verdict"),
            F.avg(
                F.when(
                    F.col("status") == "ok",
                    (F.col("p_yes") - (F.col("label") == "yes").cast("double")) ** 2,
                )
            ).alias("brier"),
        )
        .collect()
    }
    out = []
    for scope, tot in sorted(totals.items()):
        n = int(tot["n"] or 0)
        got = {r["k"]: r for r in per_bin if r["scope"] == scope}
        bl, ece, mce = [], 0.0, 0.0
        for k in range(1, bins + 1):
            b = Bin(k, (k - 1) / bins, k / bins)
            if k in got:
                b.count, b.acc, b.conf = (
                    int(got[k]["count"]),
                    float(got[k]["acc"]),
                    float(got[k]["conf"]),
                )
                gap = abs(b.acc - b.conf)
                ece += b.count / n * gap
                mce = max(mce, gap)
            bl.append(
                {"k": b.k, "lo": b.lo, "hi": b.hi, "count": b.count, "acc": b.acc, "conf": b.conf}
            )
        out.append(
            {
                "trainee_model": trainee_model,
                "scope": scope,
                "n": n,
                "n_no_verdict": int(tot["n_no_verdict"] or 0),
                "ece": ece if n else None,
                "mce": mce if n else None,
                "brier": float(tot["brier"]) if tot["brier"] is not None else None,
                "bins": bl,
                "run_id": run_id,
            }
        )
    return out


def pending(ctx: StageContext) -> DataFrame:
    """Statements without a final judgement by this trainee: ok and no_verdict are final
    (a rerun would get the same cached reply); any other outcome is sent again."""
    done = ctx.tables.read("judgements").filter(
        (F.col("trainee_model") == ctx.cfg.trainee_model())
        & F.col("status").isin("ok", "no_verdict")
    )
    statements = ctx.tables.read("statements")
    return statements.join(done.select("statement_id"), "statement_id", "left_anti")


def _requests(ctx: StageContext, todo: DataFrame) -> DataFrame:
    return todo.select("statement_id", "text", "language").mapInPandas(
        _requests_fn(ctx.cfg), JUDGE_REQUEST
    )


def _judge_pending(ctx: StageContext, trainee_model: str) -> StageResult:
    """Send every pending statement and MERGE the verdicts."""
    cfg, tables, scratch = ctx.cfg, ctx.tables, ctx.scratch
    todo = scratch.materialise(pending(ctx))
    n_todo = todo.count()
    result = StageResult({"statements_to_judge": n_todo})
    if not n_todo:
        return result
    reqs = scratch.materialise(_requests(ctx, todo))
    llm = LLMExecutor(ctx)
    summary = llm.execute(
        reqs.select(*REQUEST_SCHEMA.fieldNames()), NAME, probe=logprobs_probe(cfg)
    )
    result.add(StageResult.of_llm(summary))
    answers = llm.results(reqs).join(todo.select("statement_id", "label"), "statement_id")
    judged = answers.mapInPandas(_verdict_fn(cfg, trainee_model), SCHEMAS["judgements"])
    res = tables.merge("judgements", judged, RetryUntilOk(final=["ok", "no_verdict"]))
    result.counts["judgements_written"] = res.inserted + res.updated
    return result


def _requests_fn(cfg: Config):
    def build(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            rows = [
                {"statement_id": r.statement_id, **judge_request(cfg, r.text, r.language)}
                for r in pdf.itertuples()
            ]
            yield pd.DataFrame(rows, columns=JUDGE_REQUEST.fieldNames())

    return build


def _run(ctx: StageContext) -> StageResult:
    trainee_model = ctx.cfg.trainee_model()
    result = _judge_pending(ctx, trainee_model)
    statements = ctx.tables.read("statements").select(
        "statement_id", "element_id", "element_kind", "kind", "label", "language"
    )
    mine = (
        ctx.tables.read("judgements")
        .filter(F.col("trainee_model") == trainee_model)
        .join(statements, "statement_id")
    )
    changed = UpdateWhenChanged(["loss", "n_ok", "n_total", "status"])
    side_by_side(  # two tables drawn from the same judgements
        ctx.spark,
        [
            lambda: ctx.tables.merge("gap_scores", gap_scores(mine, trainee_model), changed),
            lambda: _calibrate(ctx, mine, trainee_model),
        ],
    )
    _check_unjudged(ctx, mine, trainee_model, result)
    return result


def gap_scores(mine: DataFrame, trainee_model: str) -> DataFrame:
    """One row per element: mean loss, accuracy and confidence over its ok judgements."""
    ok = F.col("status") == "ok"
    return (
        mine.groupBy("element_id", "element_kind")
        .agg(
            F.avg(F.when(ok, F.col("loss"))).alias("loss"),
            F.avg(F.when(ok, F.col("correct").cast("double"))).alias("accuracy"),
            F.avg(F.when(ok, F.col("confidence"))).alias("confidence"),
            F.sum(ok.cast("int")).alias("n_ok"),
            F.count("*").cast("int").alias("n_total"),
        )
        .select(
            "element_id",
            "element_kind",
            F.lit(trainee_model).alias("trainee_model"),
            "loss",
            "accuracy",
            "confidence",
            "n_ok",
            "n_total",
            F.when(F.col("n_ok") > 0, "ok").otherwise("unjudged").alias("status"),
        )
    )


def _calibrate(ctx: StageContext, mine: DataFrame, trainee_model: str) -> None:
    """Store the calibration rows, draw the reliability diagram and log ECE and Brier."""
    tables = ctx.tables
    cal = calibration_rows(mine, trainee_model, ctx.cfg.ece.bins, ctx.run_id)
    tables.merge("calibration", ctx.spark.createDataFrame(cal, SCHEMAS["calibration"]), Upsert())
    overall = next((c for c in cal if c["scope"] == "all"), None)
    report_dir = local_path(tables.layout.report)
    if overall and overall["n"] and report_dir is not None:
        png = reliability_png(overall, report_dir)
        ctx.log.info("judge: reliability diagram %s", png)
    if overall and overall["ece"] is not None:
        ctx.log.info(
            "judge: %s — %d judged statements, ECE %.4f, Brier %.4f",
            trainee_model,
            overall["n"],
            overall["ece"],
            overall["brier"],
        )


def _check_unjudged(
    ctx: StageContext, mine: DataFrame, trainee_model: str, result: StageResult
) -> None:
    """Count scored and unjudged elements; too many unjudged stops the run (a rerun
    resends only what is not final)."""
    g = ctx.tables.read("gap_scores").filter(F.col("trainee_model") == trainee_model)
    counts = {r["status"]: r["count"] for r in g.groupBy("status").count().collect()}
    total = sum(counts.values())
    unjudged = counts.get("unjudged", 0)
    result.counts.update(elements_scored=counts.get("ok", 0), elements_unjudged=unjudged)
    limit = ctx.cfg.judge.max_unjudged_fraction
    if not total or unjudged / total <= limit:
        return
    reasons = (
        mine.filter("status <> 'ok'").groupBy("status").count().orderBy(F.desc("count")).collect()
    )
    median_mass = mine.approxQuantile("verdict_mass", [0.5], 0.01)
    outcomes = ", ".join(f"{r['status']}={r['count']}" for r in reasons)
    raise StageIncomplete(
        f"judge: {unjudged} of {total} elements have no usable judgement (more than "
        f"judge.max_unjudged_fraction={limit}); statement outcomes: {outcomes}; median "
        f"verdict mass {median_mass[0] if median_mass else 'n/a'}. Check the trainee's "
        "answers to the yes/no prompt (judge.synonyms can extend the word lists)."
    )


def _skipped(cfg: Config) -> str | None:
    if cfg.gap_scoring == "off":
        return "gap_scoring is off — no trainee is scored; sampling will use random order"
    return None


STAGE = Stage(
    NAME,
    _run,
    reads=("statements", "judgements", "llm_calls"),
    writes=("judgements", "gap_scores", "calibration", "llm_calls"),
    pending=pending,
    llm=LLMDemand(
        "trainee",
        "statement_id",
        calls=lambda cfg, _: (1, 1),
        prompt_tokens=lambda: F.length("text") / 3,
        max_tokens=lambda cfg: cfg.judge.max_tokens,
        note="one 1-token call per statement (2n per element); statements exist only after quiz",
        requests=_requests,
    ),
    skip=_skipped,
)
