"""Stage 1, ingest: input files or a table -> ``documents`` + ``quarantine`` (method.md §2.1).

``ctx.input_path`` is a file, a directory (read recursively; Spark skips names starting with
``_`` or ``.``) or, for ``input.format: table``, a Delta path or a table name (``auto``
also recognises a Delta path). The format of each file comes from ``input.format`` or, in
``auto`` mode, from its extension (see :mod:`graphgen_spark.stages.readers`).

Bad records are never fatal and never dropped silently: they become ``quarantine`` rows
(stage ``ingest``) with one of the reasons in :data:`readers.REASONS`. ``doc_id = h(text)``;
identical documents collapse into one row that keeps every source in ``sources`` (sorted);
``source`` / ``locator`` / ``source_id`` / ``metadata`` / ``format`` are those of the first.

Both writes are MERGEs: a rerun on the same input changes nothing (no new table version); a
known document seen from a new source gets the union of the sources (its text, ``prechunked``
and ``parts`` stay, so its existing chunks stay valid). Spark actions: one listing aggregate
(file inputs), one count over the parsed rows (cached) that also tells how many rows each
MERGE must write, and the MERGEs that have something to write (none on a rerun); file
contents never reach the driver.
"""

from __future__ import annotations

from functools import reduce

from delta.tables import DeltaTable
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from graphgen_spark.config import InputConfig
from graphgen_spark.ids import h_col
from graphgen_spark.stages import readers as R
from graphgen_spark.stages.base import StageContext, StageResult
from graphgen_spark.tables import MergeResult

STAGE = "ingest"
_BINARY_MAX_LENGTH = "spark.sql.sources.binaryFile.maxLength"

# A known document seen from new sources: union the sources; the representative fields
# follow the smallest source reference, as a one-shot run over all inputs would choose.
_S_FIRST = "struct(s.source, s.locator, s.source_id) < struct(t.source, t.locator, t.source_id)"
DOC_UPDATE_WHEN = "size(array_except(s.sources, t.sources)) > 0"
DOC_UPDATE_SET = {
    "sources": "array_sort(array_union(t.sources, s.sources))",
    **{
        c: f"CASE WHEN {_S_FIRST} THEN s.{c} ELSE t.{c} END"
        for c in ("source", "locator", "source_id", "metadata", "format")
    },
}


def run(ctx: StageContext) -> StageResult:
    if not ctx.input_path:
        raise ValueError("ingest needs an input path (--input)")
    icfg = ctx.cfg.input
    parsed = read_input(ctx.spark, ctx.input_path, icfg, ctx.log)
    checked = check(parsed, icfg.max_doc_chars).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        docs = new_or_changed(
            collapse(checked.filter(F.col("reason").isNull())), ctx.tables.read("documents")
        )
        bad = new_quarantine(quarantine_rows(checked, ctx.run_id), ctx.tables.read("quarantine"))
        # one small action: records per reason, and how many rows each MERGE has to write
        stats = (
            _tally(checked.groupBy("reason").count(), "read", "reason")
            .unionByName(
                _tally(docs.groupBy(F.col("_known").cast("string")).count(), "docs", "_known")
            )
            .unionByName(_tally(bad.agg(F.count(F.lit(1)).alias("count")), "bad"))
            .collect()
        )
        per_reason = {r["key"]: r["count"] for r in stats if r["what"] == "read"}
        new_docs = sum(r["count"] for r in stats if r["what"] == "docs" and r["key"] == "false")
        changed_docs = sum(r["count"] for r in stats if r["what"] == "docs" and r["key"] == "true")
        new_bad = sum(r["count"] for r in stats if r["what"] == "bad")
        n_docs = per_reason.pop(None, 0)
        n_bad = sum(per_reason.values())

        # A rerun has nothing to write and runs no MERGE (an empty one still costs seconds);
        # only new documents: an insert-only MERGE (Delta's fast path).
        doc_res = MergeResult()
        if changed_docs:
            doc_res = ctx.tables.merge(
                "documents", docs, update_when=DOC_UPDATE_WHEN, update_set=DOC_UPDATE_SET
            )
        elif new_docs:
            doc_res = ctx.tables.merge("documents", docs)
        q_res = MergeResult()
        if new_bad:
            q_res = ctx.tables.merge("quarantine", bad)
    finally:
        checked.unpersist()

    counts = {
        "documents_read": n_docs,
        "documents_written": doc_res.inserted,
        "documents_updated": doc_res.updated,
        "quarantined": n_bad,
        "quarantine_written": q_res.inserted,
        **{f"quarantined_{r}": per_reason.get(r, 0) for r in R.REASONS},
    }
    ctx.log.info("ingest %s: %s", ctx.input_path, counts)
    return StageResult(counts=counts)


def _tally(counts: DataFrame, what: str, key: str | None = None) -> DataFrame:
    key_col = F.col(key).cast("string") if key else F.lit(None).cast("string")
    return counts.select(
        F.lit(what).alias("what"), key_col.alias("key"), F.col("count").cast("long")
    )


# -- reading -------------------------------------------------------------------------------
def read_input(spark: SparkSession, path: str, icfg: InputConfig, log=None) -> DataFrame:
    """All records of the input as :data:`readers.PARSED` rows (lazy, except a listing)."""
    fmt = icfg.format
    tf, idf = icfg.text_field, icfg.id_field
    if fmt == "table" or (fmt == "auto" and _is_delta(spark, path)):
        return R.tabular_rows(read_table(spark, path), F.lit(path), "table", tf, idf)

    max_len = int(spark.conf.get(_BINARY_MAX_LENGTH, str(2**31 - 1)))
    listing = (
        spark.read.format("binaryFile")
        .option("recursiveFileLookup", "true")
        .load(path)
        .select(R.plain_path(F.col("path")).alias("path"), "length")
    )
    ext = R.extension_col(F.col("path"))
    file_fmt = F.when(ext.isin(*R.FILE_FORMATS), ext) if fmt == "auto" else F.lit(fmt)
    listing = listing.withColumn("fmt", file_fmt)

    # one small action: which formats occur, and the paths of the tabular files
    tabular = F.col("fmt").isin(*R.TABULAR_FORMATS)
    summary = (
        listing.groupBy("fmt")
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.sort_array(F.collect_list(F.when(tabular, F.col("path")))).alias("paths"),
        )
        .collect()
    )
    found = {r["fmt"]: (int(r["n"]), list(r["paths"])) for r in summary}
    if log is not None:
        log.info("ingest %s: files per format %s", path, {k: v[0] for k, v in found.items()})

    pieces: list[DataFrame] = []
    if any(f in found for f in R.TEXT_FORMATS):
        reader = spark.read.format("binaryFile").option("recursiveFileLookup", "true")
        if fmt == "auto":
            reader = reader.option("pathGlobFilter", R.case_insensitive_glob(R.TEXT_FORMATS))
        files = reader.load(path).filter(F.col("length") <= max_len).select("path", "content")
        per_file = None if fmt == "auto" else fmt
        pieces.append(files.mapInPandas(R.parse_files(per_file, tf, idf), R.PARSED))
        too_big = listing.filter(F.col("fmt").isin(*R.TEXT_FORMATS) & (F.col("length") > max_len))
        pieces.append(
            _file_rejects(
                too_big,
                R.OVERSIZED_DOCUMENT,
                F.format_string(
                    f"file of %d bytes exceeds {_BINARY_MAX_LENGTH} = {max_len}", "length"
                ),
            )
        )
    if None in found:  # auto mode: extensions it cannot read
        unsupported = listing.filter(F.col("fmt").isNull()).withColumn("fmt", ext)
        detail = F.format_string(
            "cannot read '%s' files; supported: " + ", ".join(R.FILE_FORMATS),
            F.when(ext == "", F.lit("extension-less")).otherwise(ext),
        )
        pieces.append(_file_rejects(unsupported, R.UNSUPPORTED_FORMAT, detail))
    for csv_path in found.get("csv", (0, []))[1]:
        pieces.append(R.tabular_rows(read_csv(spark, csv_path), F.lit(csv_path), "csv", tf, idf))
    parquet_paths = found.get("parquet", (0, []))[1]
    if parquet_paths:
        df = spark.read.option("mergeSchema", "true").parquet(*map(R.literal_path, parquet_paths))
        source = R.decoded_path(F.col("_metadata.file_path"))
        pieces.append(R.tabular_rows(df, source, "parquet", tf, idf))

    if not pieces:
        return spark.createDataFrame([], R.PARSED)
    return reduce(DataFrame.unionByName, [p.select(*R.PARSED_COLS) for p in pieces])


def read_csv(spark: SparkSession, path: str) -> DataFrame:
    """One CSV file with its own header (RFC 4180 quoting, quoted newlines allowed).

    The header comes from a single-line read (it reads the first line only); the rows from
    a multi-line read with that schema. Spark's multi-line schema inference cannot open a
    file whose name holds glob characters such as ``[`` (it globs the path twice).
    """
    reader = spark.read.option("header", "true").option("escape", '"')
    pattern = R.literal_path(path)
    header = reader.csv(pattern).schema
    return reader.schema(header).option("multiLine", "true").csv(pattern)


def read_table(spark: SparkSession, name: str) -> DataFrame:
    """A Delta path, or a table name known to the session's catalog."""
    if _is_delta(spark, name):
        return spark.read.format("delta").load(name)
    return spark.read.table(name)


def _is_delta(spark: SparkSession, path: str) -> bool:
    try:
        return bool(DeltaTable.isDeltaTable(spark, path))
    except Exception:  # not a path at all (e.g. a table name)
        return False


def _file_rejects(files: DataFrame, reason: str, detail) -> DataFrame:
    """Whole-file quarantine rows (locator ``file``) from listing rows (path, fmt)."""
    return files.select(
        F.col("path").alias("source"),
        F.lit("file").alias("locator"),
        F.lit(None).cast("string").alias("source_id"),
        F.lit(None).cast("string").alias("text"),
        F.col("fmt").alias("format"),
        F.lit(None).cast("boolean").alias("prechunked"),
        F.lit(None).cast("array<string>").alias("parts"),
        F.lit(None).cast("map<string,string>").alias("metadata"),
        F.lit(reason).alias("reason"),
        detail.alias("detail"),
        F.lit(None).cast("string").alias("excerpt"),
    )


# -- checks, collapse, quarantine ------------------------------------------------------------
def check(parsed: DataFrame, max_doc_chars: int) -> DataFrame:
    """The checks common to every format: missing, empty (after strip) and oversized text."""
    text = F.col("text")
    n_chars = F.length(text)
    empty = text.rlike(R.BLANK_REGEX)
    reason = F.coalesce(
        F.col("reason"),
        F.when(text.isNull(), F.lit(R.MISSING_TEXT))
        .when(empty, F.lit(R.EMPTY_DOCUMENT))
        .when(n_chars > max_doc_chars, F.lit(R.OVERSIZED_DOCUMENT)),
    )
    detail = F.coalesce(
        F.col("detail"),
        F.when(text.isNull(), F.lit("no text"))
        .when(empty, F.lit("text is empty after stripping whitespace"))
        .when(
            n_chars > max_doc_chars,
            F.format_string(
                f"%d characters, more than input.max_doc_chars = {max_doc_chars}", n_chars
            ),
        ),
    )
    return parsed.withColumn("reason", reason).withColumn("detail", detail)


def collapse(docs: DataFrame) -> DataFrame:
    """One row per ``doc_id = h(text)``, all source references kept (sorted)."""
    ref = F.struct("source", "locator", "source_id")
    first = F.struct(
        "source", "locator", "source_id", "text", "format", "prechunked", "parts", "metadata"
    )
    return (
        docs.withColumn("doc_id", h_col("text"))
        .groupBy("doc_id")
        .agg(
            F.array_sort(F.collect_set(ref)).alias("sources"),
            F.min_by(first, ref).alias("first"),
        )
        .select("doc_id", "first.*", "sources")
        .withColumn("n_chars", F.length("text").cast("long"))
    )


def new_or_changed(docs: DataFrame, current: DataFrame) -> DataFrame:
    """The collapsed documents the MERGE has to touch: new ones and known ones with new sources
    (flag ``_known``; the MERGE ignores columns outside the table schema).

    Delta rewrites every file holding a matched key even when ``update_when`` rejects all
    of them, committing a new version; with only these rows as the source, a rerun's MERGE
    source is empty and Delta commits nothing.
    """
    known = current.select("doc_id", F.col("sources").alias("_sources"))
    return (
        docs.join(known, "doc_id", "left")
        .filter(F.col("_sources").isNull() | (F.size(F.array_except("sources", "_sources")) > 0))
        .withColumn("_known", F.col("_sources").isNotNull())
        .drop("_sources")
    )


def new_quarantine(rows: DataFrame, current: DataFrame) -> DataFrame:
    """Quarantine rows whose key (source, locator) is not in the table yet."""
    return rows.join(current.select("source", "locator"), ["source", "locator"], "left_anti")


def quarantine_rows(checked: DataFrame, run_id: str) -> DataFrame:
    return (
        checked.filter(F.col("reason").isNotNull())
        .select(
            "source",
            "locator",
            F.lit(STAGE).alias("stage"),
            "reason",
            "detail",
            "excerpt",
            F.lit(run_id).alias("run_id"),
        )
        .dropDuplicates(["source", "locator"])
    )
