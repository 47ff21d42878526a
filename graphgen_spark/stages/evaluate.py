"""Stage evaluate: quality metrics of the ``qa`` rows with status ``ok`` (method §8, 1–4).

Per QA (``qa_item_metrics``, key ``qa_id``): answer length in ``eval.tokenizer`` tokens,
MTLD of the answer, and the near-duplicate cluster of question + answer within its mode.
Per (run, mode) (``qa_metrics``): n, length and MTLD mean / min / max, distinct-1 and
distinct-2 over all answers of the mode, near-duplicate rate = 1 - clusters / records.

Tokenising runs on the executors (``mapInPandas``); the driver only sees one row per mode.
Both MERGEs update a row only when a value changed and delete rows whose QA (or mode) is
gone, so rerunning on unchanged ``qa`` commits no Delta version.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from graphgen_spark.evaluate.lexical import content_tokens, mtld, ngram_keys, word_tokens
from graphgen_spark.evaluate.near_dup import near_duplicate_clusters
from graphgen_spark.language import main_language
from graphgen_spark.stages.base import Stage, StageContext, StageResult
from graphgen_spark.tables import SCHEMAS, UpdateWhenChanged
from graphgen_spark.tokenizer import count_tokens

DISTINCT_N = (1, 2)  # the qa_metrics columns distinct_1, distinct_2
ITEM_SCHEMA = T.StructType(
    [
        T.StructField("qa_id", T.StringType()),
        T.StructField("mode", T.StringType()),
        T.StructField("length", T.IntegerType()),
        T.StructField("mtld", T.DoubleType()),
        *(T.StructField(f"g{n}", T.ArrayType(T.StringType())) for n in DISTINCT_N),
        T.StructField("text", T.StringType()),  # question + answer, for near-duplicates
    ]
)
_ITEM_COLS = ITEM_SCHEMA.fieldNames()


ITEM_CHANGED = UpdateWhenChanged(["mode", "length", "near_dup_cluster"], approx=["mtld"])
METRICS_CHANGED = UpdateWhenChanged(
    ["n", "n_clusters"],
    approx=[
        "length_mean",
        "length_min",
        "length_max",
        "mtld_mean",
        "mtld_min",
        "mtld_max",
        "distinct_1",
        "distinct_2",
        "near_dup_rate",
    ],
)


def item_features(
    qa_id: str, mode: str, question: str | None, answer: str | None, cfg_eval: Any
) -> tuple:
    """One row of :data:`ITEM_SCHEMA`: the answer is tokenised once for MTLD and n-grams."""
    answer = answer or ""
    lang = main_language(answer)
    words = word_tokens(answer, lang)
    m = cfg_eval.mtld
    value = mtld(words, m.threshold, lang=lang, casefold=m.casefold) if answer.strip() else 0.0
    content = content_tokens(words)
    grams = [ngram_keys(content, n) for n in DISTINCT_N]
    text = f"{question or ''}\n{answer}"
    return (qa_id, mode, count_tokens(answer, cfg_eval.tokenizer), float(value), *grams, text)


def _featurizer(cfg_eval: Any):
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            cols = (pdf["qa_id"], pdf["mode"], pdf["question"], pdf["answer"])
            rows = [item_features(*r, cfg_eval) for r in zip(*cols, strict=True)]
            yield pd.DataFrame(rows, columns=_ITEM_COLS)

    return run


def ok_qa(ctx: StageContext) -> DataFrame:
    """The QA to evaluate (an absent ``qa`` table reads as empty)."""
    qa = ctx.tables.read("qa")
    return qa.where(F.col("status") == "ok").select("qa_id", "mode", "question", "answer")


def _distinct(items: DataFrame, n: int) -> DataFrame:
    grams = items.select("mode", F.explode(f"g{n}").alias("g"))
    return grams.groupBy("mode").agg(
        (F.countDistinct("g") / F.count(F.lit(1))).alias(f"distinct_{n}")
    )


def mode_metrics(items: DataFrame, per_item: DataFrame, run_id: str) -> DataFrame:
    """``qa_metrics`` rows: one per mode of ``per_item``."""
    base = per_item.groupBy("mode").agg(
        F.count(F.lit(1)).alias("n"),
        F.avg("length").alias("length_mean"),
        F.min("length").cast("double").alias("length_min"),
        F.max("length").cast("double").alias("length_max"),
        F.avg("mtld").alias("mtld_mean"),
        F.min("mtld").alias("mtld_min"),
        F.max("mtld").alias("mtld_max"),
        F.countDistinct("near_dup_cluster").alias("n_clusters"),
    )
    for n in DISTINCT_N:  # a mode without any n-gram has no row here: distinct 0
        base = base.join(_distinct(items, n), "mode", "left").fillna(0.0, [f"distinct_{n}"])
    return base.select(
        F.lit(run_id).alias("run_id"),
        "*",
        (1 - F.col("n_clusters") / F.col("n")).alias("near_dup_rate"),
    ).select(*SCHEMAS["qa_metrics"].fieldNames())


def _run(ctx: StageContext) -> StageResult:
    cfg, tables = ctx.cfg.eval, ctx.tables
    scratch = ctx.scratch
    items = scratch.materialise(
        ok_qa(ctx)
        .repartition("qa_id")  # spread tokenising; adaptive execution sizes it (see chunk)
        .mapInPandas(_featurizer(cfg), ITEM_SCHEMA)
    )
    n_qa = items.count()
    if not n_qa and not tables.exists("qa_item_metrics"):
        ctx.log.info("evaluate: no QA with status ok")
        return StageResult(counts={"qa_evaluated": 0, "modes": 0})
    nd = cfg.near_dup
    clusters = near_duplicate_clusters(
        items,
        "qa_id",
        "text",
        None,
        nd.shingle,
        nd.permutations,
        nd.jaccard,
        group_col="mode",
        seed=ctx.cfg.run.seed,
        keep=scratch.materialise,
    )
    per_item = scratch.materialise(
        items.join(clusters.withColumnRenamed("cluster_id", "near_dup_cluster"), "qa_id")
        .withColumn("run_id", F.lit(ctx.run_id))
        .select(*SCHEMAS["qa_item_metrics"].fieldNames())
    )
    item_res = tables.merge("qa_item_metrics", per_item, ITEM_CHANGED.replacing())
    rows = mode_metrics(items, per_item, ctx.run_id).collect()  # one row per mode
    metrics_res = tables.merge(
        "qa_metrics",
        ctx.spark.createDataFrame(rows, SCHEMAS["qa_metrics"]),
        METRICS_CHANGED.replacing(run_id=ctx.run_id),
    )
    counts = {
        "qa_evaluated": n_qa,
        "modes": len(rows),
        "item_metrics_written": item_res.inserted + item_res.updated,
        "item_metrics_deleted": item_res.deleted,
        "metrics_written": metrics_res.inserted + metrics_res.updated,
    }
    ctx.log.info("evaluate: %s", counts)
    return StageResult(counts=counts)


# -- printing ------------------------------------------------------------------------------

_HEADER = [
    "mode",
    "n",
    "length mean [min-max]",
    "MTLD mean [min-max]",
    "distinct-1",
    "distinct-2",
    "near-dup rate",
]


def _num(x: Any, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _row_cells(r: Mapping[str, Any]) -> list[str]:
    length = f"{_num(r['length_mean'])} [{_num(r['length_min'], 0)}-{_num(r['length_max'], 0)}]"
    mtld_ = f"{_num(r['mtld_mean'])} [{_num(r['mtld_min'])}-{_num(r['mtld_max'])}]"
    rate = "-" if r["near_dup_rate"] is None else f"{100 * r['near_dup_rate']:.1f}%"
    return [
        str(r["mode"]),
        str(r["n"]),
        length,
        mtld_,
        _num(r["distinct_1"], 3),
        _num(r["distinct_2"], 3),
        f"{rate} ({r['n_clusters']} clusters)",
    ]


def format_metrics(rows: Iterable[Any]) -> str:
    """``qa_metrics`` rows (Rows or dicts) as a small text table, one line per mode."""
    dicts = [r.asDict() if hasattr(r, "asDict") else dict(r) for r in rows]
    if not dicts:
        return "no QA evaluated"
    header = _HEADER
    body = [_row_cells(r) for r in sorted(dicts, key=lambda r: str(r["mode"]))]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(header), rule, *(fmt(b) for b in body)])


STAGE = Stage(
    "evaluate", _run, reads=("qa", "qa_item_metrics"), writes=("qa_item_metrics", "qa_metrics")
)
