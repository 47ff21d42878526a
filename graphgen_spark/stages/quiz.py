"""Quiz stage: true/false statements per fact for gap scoring (method.md §5.1).

For each element description d: d itself (yes), n−1 paraphrases (yes) and n negations (no),
from one structured call. Statements must be distinct after normalisation and in d's
language; a failed check re-requests with a new seed (a new request id) up to
``quiz.max_attempts``. Statement ids hash the description, so a changed description gets
new statements while unchanged ones are never asked again.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pandas as pd
from pydantic import BaseModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from graphgen_spark.config import Config
from graphgen_spark.ids import h, h_col
from graphgen_spark.language import main_language
from graphgen_spark.llm.executor import LLMExecutor
from graphgen_spark.llm.requests import REQUEST_SCHEMA, request_row
from graphgen_spark.prompts.quiz import quiz_messages
from graphgen_spark.stages.base import LLMDemand, Stage, StageContext, StageResult
from graphgen_spark.tables import SCHEMAS, as_quarantine

NAME = "quiz"


class QuizAnswer(BaseModel):
    paraphrases: list[str]
    negations: list[str]


ELEMENT_REQUEST = T.StructType(
    [
        T.StructField("element_id", T.StringType()),
        T.StructField("element_kind", T.StringType()),
        T.StructField("description", T.StringType()),
        T.StructField("description_hash", T.StringType()),
    ]
    + REQUEST_SCHEMA.fields
)
VALIDATED = T.StructType(
    SCHEMAS["statements"].fields + [T.StructField("complete", T.BooleanType())]
)


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s).strip().casefold()


def build_statements(
    row: dict, answer: QuizAnswer | None, n: int, last_attempt: bool
) -> list[dict]:
    """Valid statements for one element; ``complete`` marks a full, accepted set.

    A full set is the original, n−1 paraphrases and n negations, all distinct and in the
    description's language. On the last attempt a partial set is accepted if it still has
    a negation (the original is the yes statement).
    """
    d = row["description"]
    lang = main_language(d)
    seen = {_norm(d)}
    picked: list[tuple[str, int, str, str]] = [("original", 0, d, "yes")]
    for kind, texts, label, want in (
        ("paraphrase", answer.paraphrases if answer else [], "yes", n - 1),
        ("negation", answer.negations if answer else [], "no", n),
    ):
        idx = 0
        for text in texts:
            t = (text or "").strip()
            if not t or _norm(t) in seen or main_language(t) != lang or idx >= want:
                continue
            seen.add(_norm(t))
            picked.append((kind, idx, t, label))
            idx += 1
    full = len(picked) == 2 * n
    has_no = any(label == "no" for *_, label in picked)
    if not full and not (last_attempt and has_no):
        return []
    return [
        {
            "statement_id": h(row["element_id"], row["description_hash"], kind, idx),
            "element_id": row["element_id"],
            "element_kind": row["element_kind"],
            "description_hash": row["description_hash"],
            "kind": kind,
            "idx": idx,
            "text": text,
            "label": label,
            "language": lang,
            "request_id": row["request_id"],
            "complete": full,
        }
        for kind, idx, text, label in picked
    ]


def elements(ctx: StageContext) -> DataFrame:
    """Quizzable elements: relations and (scope all) non-placeholder entities with text."""
    t = ctx.tables
    rels = t.read("relations").select(
        F.col("edge_id").alias("element_id"), F.lit("relation").alias("element_kind"), "description"
    )
    out = rels
    if ctx.cfg.gap.scope == "all":
        ents = (
            t.read("entities")
            .filter(~F.col("is_placeholder"))
            .select(
                F.col("entity_id").alias("element_id"),
                F.lit("entity").alias("element_kind"),
                "description",
            )
        )
        out = rels.unionByName(ents)
    return out.filter(F.length(F.trim("description")) > 0).withColumn(
        "description_hash", h_col("description")
    )


def _requests_fn(cfg: Config, attempt: int):
    n = cfg.quiz.samples

    def build(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            rows = []
            for r in pdf.to_dict("records"):
                msgs = quiz_messages(r["description"], n, main_language(r["description"]))
                req = request_row(
                    cfg,
                    NAME,
                    "synthesizer",
                    msgs,
                    QuizAnswer,
                    temperature=cfg.quiz.temperature,
                    seed=attempt,
                )
                rows.append({**r, **req})
            yield pd.DataFrame(rows, columns=ELEMENT_REQUEST.fieldNames())

    return build


def _validate_fn(cfg: Config, last_attempt: bool):
    n = cfg.quiz.samples

    def validate(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            rows = []
            for r in pdf.to_dict("records"):
                answer = None
                if r["status"] == "ok" and r["parsed"]:
                    try:
                        answer = QuizAnswer.model_validate_json(r["parsed"])
                    except ValueError:
                        answer = None
                rows += build_statements(r, answer, n, last_attempt)
            yield pd.DataFrame(rows, columns=VALIDATED.fieldNames())

    return validate


def pending(ctx: StageContext) -> DataFrame:
    """Elements whose current description has no statements yet."""
    have = ctx.tables.read("statements").select("element_id", "description_hash").distinct()
    return elements(ctx).join(have, ["element_id", "description_hash"], "left_anti")


def _first_requests(ctx: StageContext, todo: DataFrame) -> DataFrame:
    return todo.mapInPandas(_requests_fn(ctx.cfg, 0), ELEMENT_REQUEST)


def _run(ctx: StageContext) -> StageResult:
    todo = ctx.scratch.materialise(pending(ctx))
    result, todo, n_todo = _attempts(ctx, todo)
    if n_todo:
        ctx.tables.merge("quarantine", _incomplete(ctx, todo))
    result.counts["quiz_incomplete"] = n_todo
    return result


def _attempts(ctx: StageContext, todo: DataFrame) -> tuple[StageResult, DataFrame, int]:
    """Up to ``quiz.max_attempts`` rounds of requests; the elements still without a valid
    yes/no pair and how many."""
    cfg, tables, scratch = ctx.cfg, ctx.tables, ctx.scratch
    llm = LLMExecutor(ctx)
    n_todo = todo.count()
    result = StageResult({"elements_to_quiz": n_todo})
    written = 0
    for attempt in range(cfg.quiz.max_attempts):
        if not n_todo:
            break
        last = attempt == cfg.quiz.max_attempts - 1
        reqs = scratch.materialise(todo.mapInPandas(_requests_fn(cfg, attempt), ELEMENT_REQUEST))
        summary = llm.execute(reqs.select(*REQUEST_SCHEMA.fieldNames()), NAME)
        result.add(StageResult.of_llm(summary))
        answers = llm.results(reqs)
        valid = scratch.materialise(answers.mapInPandas(_validate_fn(cfg, last), VALIDATED))
        written += tables.merge("statements", valid.drop("complete")).inserted
        todo = scratch.materialise(
            todo.join(valid.select("element_id").distinct(), "element_id", "left_anti")
        )
        n_todo = todo.count()
    result.counts["statements_written"] = written
    return result, todo, n_todo


def _incomplete(ctx: StageContext, todo: DataFrame) -> DataFrame:
    """Quarantine rows for elements with no yes/no pair after every attempt (retried next run)."""
    attempts = ctx.cfg.quiz.max_attempts
    return as_quarantine(
        todo,
        NAME,
        ctx.run_id,
        source=F.lit("statements"),
        locator=F.concat_ws(":", "element_kind", "element_id", "description_hash"),
        reason=F.lit("quiz_incomplete"),
        detail=F.lit(f"no valid yes/no statement pair after {attempts} attempts"),
        excerpt="description",
    )


STAGE = Stage(
    NAME,
    _run,
    reads=("relations", "entities", "statements", "llm_calls"),
    writes=("statements", "quarantine", "llm_calls"),
    pending=pending,
    llm=LLMDemand(
        "synthesizer",
        "element_id",
        calls=lambda cfg, _: (1, cfg.quiz.max_attempts),
        prompt_tokens=lambda: F.length("description") / 3,  # characters / 3 ~ tokens
        max_tokens=lambda cfg: cfg.llm.synthesizer.max_tokens,
        note="one call per element, up to quiz.max_attempts={most} when checks fail",
        requests=_first_requests,
    ),
)
