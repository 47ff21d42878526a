"""Export stage (§7.5): `qa` → ``DIR/export/<mode>.<format>[.<split>].jsonl`` training files.

Rows with status ``ok`` (all rows with ``export.include_flagged``) are rendered once on the
executors (Q, A, metadata), optionally decontaminated against an evaluation file (dropped
rows are counted per mode and listed in ``export/decontamination.jsonl`` with the matching
n-gram), optionally split train / validation by the hash rank ``rr(qa_id)``, and written
in ``qa_id`` order so a rerun gives byte-identical files.

The driver never holds the table: a local output folder is filled by streaming one sorted
pass with ``toLocalIterator`` into temporary files renamed into place at the end; any other
filesystem (``s3://``, ``abfss://``, ``dbfs:/`` …) gets one single-partition Spark text
write per file, moved to its name with the Hadoop FileSystem API. Only the files this run
writes are replaced; a file for every (mode, format, split) is written, empty if need be,
so no stale file of a wholly contaminated mode survives.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame, Row
from pyspark.sql import functions as F
from pyspark.sql import types as T

from graphgen_spark import fsutil
from graphgen_spark.config import ExportConfig
from graphgen_spark.export.decontaminate import contaminated, eval_ngrams
from graphgen_spark.export.formats import (
    META_FIELDS,
    answer_text,
    meta_of,
    question_text,
    record,
    to_line,
)
from graphgen_spark.ids import h, h_col, rr
from graphgen_spark.stages.base import Stage, StageContext, StageResult
from graphgen_spark.tables import local_path

NAME = "export"
REPORT_FILE = "decontamination.jsonl"
RENDER_COLUMNS = ("qa_id", "mode", "question", "answer", "options", "answers", "language")
SPLITS = ("train", "validation")
Renderer = Callable[[DataFrame], DataFrame]
_HEX = 13  # hex digits of rr used as a uniform number: 52 bits, exact in a double


# -- names and split ------------------------------------------------------------------------
def file_name(mode: str, fmt: str, split: str = "") -> str:
    return f"{mode}.{fmt}.{split}.jsonl" if split else f"{mode}.{fmt}.jsonl"


def split_value(seed: int | str, qa_id: str) -> float:
    """rr(qa_id) as a number in [0, 1): the row is validation when below the fraction, so a
    larger fraction only moves rows from train to validation."""
    return int(rr(seed, qa_id)[:_HEX], 16) / 16**_HEX


def split_col(seed: int | str, fraction: float) -> Column:
    """Spark twin of :func:`split_value` giving ``train`` / ``validation`` ('' for no split)."""
    if fraction <= 0:
        return F.lit("")
    rank = F.substring(h_col(F.lit(str(seed)), "qa_id"), 1, _HEX)
    value = F.conv(rank, 16, 10).cast("double") / float(16**_HEX)
    return F.when(value < F.lit(fraction), "validation").otherwise("train")


def export_dir(ctx: StageContext) -> str:
    return ctx.tables.layout.export


# -- rendering ------------------------------------------------------------------------------
def _texts(row: Row) -> tuple[str, str]:
    d = row.asDict(recursive=True)
    return question_text(d), answer_text(d)


def _meta(meta: Row | None) -> dict[str, Any] | None:
    return None if meta is None else meta_of(meta.asDict(recursive=True))


def rendered(ctx: StageContext, qa: DataFrame) -> DataFrame:
    """Exportable rows of ``qa``: qa_id, mode, split, question (Q), answer (A), meta."""
    cfg = ctx.cfg.export
    if not cfg.include_flagged:
        qa = qa.filter(F.col("status") == "ok")
    texts = F.udf(
        _texts,
        T.StructType(
            [T.StructField("question", T.StringType()), T.StructField("answer", T.StringType())]
        ),
    )
    return qa.select(
        "qa_id",
        "mode",
        split_col(ctx.cfg.run.seed, cfg.validation_fraction).alias("split"),
        texts(F.struct(*RENDER_COLUMNS)).alias("t"),
        F.struct(*META_FIELDS).alias("meta"),
    ).select("qa_id", "mode", "split", "t.question", "t.answer", "meta")


def keyed(rows: DataFrame, formats: list[str]) -> DataFrame:
    """One row per (row, format) with its target ``file``; rendering comes after sorting."""
    suffix = F.when(F.col("split") == "", F.lit("")).otherwise(F.concat(F.lit("."), "split"))
    fmt = F.explode(F.array(*[F.lit(f) for f in formats])).alias("fmt")
    return rows.select("*", fmt).withColumn(
        "file", F.concat("mode", F.lit("."), "fmt", suffix, F.lit(".jsonl"))
    )


def render(cfg: ExportConfig) -> Renderer:
    """(file, qa_id, fmt, question, answer, meta) → (file, qa_id, line) of the format."""
    system, with_meta = cfg.system_prompt, cfg.include_metadata

    def line(fmt: str, q: str, a: str, meta: Row | None) -> str:
        return to_line(record(fmt, q, a, system, _meta(meta) if with_meta else None))

    udf = F.udf(line, T.StringType())
    return lambda df: df.select(
        "file", "qa_id", udf("fmt", "question", "answer", "meta").alias("line")
    )


def render_report(df: DataFrame) -> DataFrame:
    """Contaminated rows → lines of :data:`REPORT_FILE`."""
    cols = ["qa_id", "mode", "field", "ngram", "n_matched"]

    def line(*values: Any) -> str:
        return to_line(dict(zip(cols, values, strict=True)))

    return df.select("file", "qa_id", F.udf(line, T.StringType())(*cols).alias("line"))


# -- writing --------------------------------------------------------------------------------
def write_local(data: DataFrame, names: list[str], folder: Path, to_lines: Renderer) -> None:
    """Stream ``data`` sorted by (file, qa_id) into temporary files, then rename each into
    place: readers never see a half-written file, and a failed run leaves the old ones."""
    folder.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:12]
    tmp = {name: folder / f".{name}.{tag}.tmp" for name in names}
    handle = None
    try:
        current = None
        stream = to_lines(data.orderBy("file", "qa_id")).select("file", "line")
        for row in stream.toLocalIterator():
            if row["file"] != current:
                if handle:
                    handle.close()
                current = row["file"]
                handle = open(tmp[current], "w", encoding="utf-8", newline="")  # noqa: SIM115
            handle.write(row["line"] + "\n")
        if handle:
            handle.close()
        for name in names:
            tmp[name].touch()  # a (mode, format, split) without rows is an empty file
            os.replace(tmp[name], folder / name)
    finally:
        if handle and not handle.closed:
            handle.close()
        for path in tmp.values():
            path.unlink(missing_ok=True)


def write_spark(data: DataFrame, names: list[str], folder: str, to_lines: Renderer) -> None:
    """One single-partition text write per file into a temporary folder, moved to its name
    through Hadoop (object stores: no local disk on the driver is assumed). ``repartition(1)``
    then sort, not ``coalesce(1)``: only a sort inside the one partition guarantees order."""
    spark = data.sparkSession
    staging = f"{folder}/_tmp-{uuid.uuid4().hex[:12]}"
    try:
        for name in names:
            part = f"{staging}/{name}"
            one = data.filter(F.col("file") == name).repartition(1).sortWithinPartitions("qa_id")
            to_lines(one).select("line").write.mode("overwrite").text(part)
            fsutil.move_single_file(spark, part, f"{folder}/{name}")
    finally:
        fsutil.delete(spark, staging)


def write_files(ctx: StageContext, data: DataFrame, names: list[str], to_lines: Renderer) -> None:
    """Write every file of ``names`` (empty when ``data`` has no row for it)."""
    folder = export_dir(ctx)
    local = local_path(folder)
    if local is not None:
        write_local(data, names, local, to_lines)
    else:
        write_spark(data, names, folder, to_lines)


# -- the stage ------------------------------------------------------------------------------
def _tally(
    ctx: StageContext, qa: DataFrame, result: StageResult
) -> tuple[list[str], dict[str, int]]:
    """Modes to write (present in ``qa`` or configured) and exportable rows per count key;
    rows left out by their status are counted into ``result``."""
    cfg = ctx.cfg.export
    split = split_col(ctx.cfg.run.seed, cfg.validation_fraction).alias("split")
    status = F.coalesce("status", F.lit("none")).alias("status")
    groups = qa.groupBy("mode", status, split).count().collect()
    exported: dict[str, int] = {}
    for r in groups:
        if cfg.include_flagged or r["status"] == "ok":
            key = _count_key(r["mode"], r["split"])
            exported[key] = exported.get(key, 0) + r["count"]
        else:
            key = f"{r['mode']}_skipped_{r['status']}"
            result.counts[key] = result.counts.get(key, 0) + r["count"]
    modes = sorted({r["mode"] for r in groups if r["mode"]} | set(ctx.cfg.generate.modes))
    return modes, exported


def _count_key(mode: str, split: str) -> str:
    return f"{mode}_{split}" if split else f"{mode}_exported"


def _decontaminate(
    ctx: StageContext,
    rows: DataFrame,
    grams: DataFrame,
    cached: list[DataFrame],
    exported: dict[str, int],
    result: StageResult,
) -> DataFrame:
    """Contaminated rows (cached: counted, anti-joined and reported), counted per mode and
    taken out of the ``exported`` counts."""
    n = ctx.cfg.export.decontaminate_ngram
    grams = _cache(grams, cached)
    result.counts["decontaminate_eval_ngrams"] = grams.count()
    if not result.counts["decontaminate_eval_ngrams"]:
        ctx.log.warning(
            "export: %s has no text of %d or more words / characters: nothing can match",
            ctx.cfg.export.decontaminate_against,
            n,
        )
    texts = rows.select("qa_id", "mode", "split", "question", "answer")
    bad = _cache(contaminated(texts, grams, n), cached)
    total = 0
    for r in bad.groupBy("mode", "split").count().collect():
        key = f"{r['mode']}_contaminated"
        result.counts[key] = result.counts.get(key, 0) + r["count"]
        exported[_count_key(r["mode"], r["split"])] -= r["count"]
        total += r["count"]
    result.counts["contaminated"] = total
    return bad


def _cache(df: DataFrame, cached: list[DataFrame]) -> DataFrame:
    """Persist a DataFrame read more than once (no LLM lineage here, so a cache, not a
    staged copy, is enough) and remember it for unpersisting."""
    cached.append(df.persist())
    return df


def _run(ctx: StageContext) -> StageResult:
    cfg = ctx.cfg.export
    result = StageResult()
    grams = None
    if cfg.decontaminate_against:  # fail fast on a missing or broken evaluation file
        grams = eval_ngrams(ctx.spark, cfg.decontaminate_against, cfg.decontaminate_ngram)
    qa = ctx.tables.read("qa")  # one snapshot for counts and rows
    modes, exported = _tally(ctx, qa, result)
    splits = SPLITS if cfg.validation_fraction > 0 else ("",)
    names = [file_name(m, f, s) for m in modes for f in cfg.formats for s in splits]
    cached: list[DataFrame] = []
    try:
        # rendered once: the sort samples its whole input and decontamination reads it again
        rows = _cache(rendered(ctx, qa), cached)
        if grams is not None:
            bad = _decontaminate(ctx, rows, grams, cached, exported, result)
            rows = rows.join(bad.select("qa_id"), "qa_id", "left_anti")
            report = bad.withColumn("file", F.lit(REPORT_FILE))
            write_files(ctx, report, [REPORT_FILE], render_report)
        write_files(ctx, keyed(rows, cfg.formats), names, render(cfg))
    finally:
        for df in cached:
            df.unpersist()
    result.counts.update(exported)
    result.counts["exported"] = sum(exported.values())
    result.counts["files_written"] = len(names) + (grams is not None)
    ctx.log.info(
        "export: %d QA into %d files under %s (%d contaminated)",
        result.counts["exported"],
        result.counts["files_written"],
        export_dir(ctx),
        result.counts.get("contaminated", 0),
    )
    return result


def exported_files(ctx: StageContext) -> str | None:
    """A digest of the export folder (names, sizes, modification times), so a rerun writes
    the files again when one went missing or changed. None when it cannot be told: the
    folder is not local, or decontamination reads an evaluation file."""
    folder = local_path(export_dir(ctx))
    if folder is None or ctx.cfg.export.decontaminate_against:
        return None
    if not folder.is_dir():
        return "none"
    files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir())
    return h(*(f"{n}:{size}:{mtime}" for n, size, mtime in files))


# writes files, no table
STAGE = Stage(NAME, _run, reads=("qa",), writes=(), outside=exported_files)
