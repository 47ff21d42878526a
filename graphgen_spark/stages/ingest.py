"""Stage 1, ingest: input files or a table -> ``documents`` + ``quarantine`` (method.md §2.1).

``ctx.input_path`` is a file, a directory (read recursively; Spark skips names starting with
``_`` or ``.``) or, for ``input.format: table``, a Delta path or a table name (``auto``
also recognises a Delta path). The format of each file comes from ``input.format`` or, in
``auto`` mode, from its extension (see :mod:`graphgen_spark.readers`).

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

import hashlib
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce

from delta.tables import DeltaTable
from py4j.protocol import Py4JJavaError
from pyspark import StorageLevel
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, DataFrameReader, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from graphgen_spark import readers as R
from graphgen_spark.config import InputConfig
from graphgen_spark.ids import h_col
from graphgen_spark.stages.base import Stage, StageContext, StageResult
from graphgen_spark.tables import MergeResult, UpdateWhen, as_quarantine

NAME = "ingest"
_BINARY_MAX_LENGTH = "spark.sql.sources.binaryFile.maxLength"

# A known document seen from new sources: union the sources; the representative fields
# follow the smallest source reference, as a one-shot run over all inputs would choose.
_S_FIRST = "struct(s.source, s.locator, s.source_id) < struct(t.source, t.locator, t.source_id)"
ADD_SOURCES = UpdateWhen(
    "size(array_except(s.sources, t.sources)) > 0",
    {
        "sources": "array_sort(array_union(t.sources, s.sources))",
        **{
            c: f"CASE WHEN {_S_FIRST} THEN s.{c} ELSE t.{c} END"
            for c in ("source", "locator", "source_id", "metadata", "format")
        },
    },
)


def _run(ctx: StageContext) -> StageResult:
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
            doc_res = ctx.tables.merge("documents", docs, ADD_SOURCES)
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
Found = dict[str | None, tuple[int, int]]  # format (None: unsupported) -> (files, bytes)


def read_input(spark: SparkSession, path: str, icfg: InputConfig, log=None) -> DataFrame:
    """All records of the input as :data:`readers.PARSED` rows.

    Lazy but for a few small actions: a listing summary, the CSV headers, and the parquet
    files that gave no row. One Spark read per format group, whatever the number of files.
    """
    fmt = icfg.format
    tf, idf = icfg.text_field, icfg.id_field
    if fmt == "table" or (fmt == "auto" and _is_delta(spark, path)):
        return R.tabular_rows(read_table(spark, path), F.lit(path), "table", tf, idf)

    files, link_rejects = input_files(path, icfg)
    listing = files.listing(spark)
    found = _summary(listing)
    if log is not None:
        log.info("ingest %s: files per format %s", path, {k: v[0] for k, v in found.items()})

    pieces: list[DataFrame] = []
    if link_rejects:
        pieces.append(spark.createDataFrame(link_rejects, R.PARSED))
    pieces += _text_rows(spark, files, listing, icfg, found)
    if None in found:  # auto mode: extensions it cannot read
        ext = R.extension_col(F.col("path"))
        unsupported = listing.filter(F.col("fmt").isNull()).withColumn("fmt", ext)
        detail = F.format_string(
            "cannot read '%s' files; supported: " + ", ".join(R.FILE_FORMATS),
            F.when(ext == "", F.lit("extension-less")).otherwise(ext),
        )
        pieces.append(_file_rejects(unsupported, R.UNSUPPORTED_FORMAT, detail))
    if "csv" in found:
        pieces += _csv_rows(spark, files, listing, icfg, found["csv"])
    if "parquet" in found:
        pieces += _parquet_rows(spark, files, listing, icfg, found["parquet"])

    if not pieces:
        return spark.createDataFrame([], R.PARSED)
    return reduce(DataFrame.unionByName, [p.select(*R.PARSED_COLS) for p in pieces])


@dataclass(frozen=True)
class InputFiles:
    """The input files: the input path read recursively, or, when some entries must be
    skipped (symbolic links that leave the folder), an explicit list of files. ``sizes``:
    the non-empty files and their sizes when a local walk found them."""

    path: str
    fmt: str
    files: tuple[str, ...] | None = None
    sizes: tuple[tuple[str, int], ...] | None = None

    def load(self, reader: DataFrameReader, fmts: Sequence[str] = ()) -> DataFrame:
        """``reader`` over the input files of formats ``fmts`` (all files when empty)."""
        reader = reader.option("recursiveFileLookup", "true")
        by_name = bool(fmts) and self.fmt == "auto"
        if self.files is None:
            if by_name:
                reader = reader.option("pathGlobFilter", R.case_insensitive_glob(fmts))
            return reader.load(self.path)
        keep = [f for f in self.files if not by_name or R.extension(f) in fmts]
        return reader.load([R.literal_path(f) for f in keep])

    def listing(self, spark: SparkSession) -> DataFrame:
        """``path``, ``length`` and ``fmt`` (NULL: unsupported) of every input file; no file
        is opened (``binaryFile`` without ``content``)."""
        ext = R.extension_col(F.col("path"))
        file_fmt = F.when(ext.isin(*R.FILE_FORMATS), ext) if self.fmt == "auto" else F.lit(self.fmt)
        if self.sizes is not None:  # a local walk listed them already
            listed = spark.createDataFrame(list(self.sizes), "path string, length long")
        else:
            listed = self.load(spark.read.format("binaryFile")).select(
                R.plain_path(F.col("path")).alias("path"), "length"
            )
        return listed.coalesce(_cores(spark) * 4).withColumn("fmt", file_fmt)


def _summary(listing: DataFrame) -> Found:
    """One small action: how many files and bytes of each format."""
    rows = listing.groupBy("fmt").agg(F.count(F.lit(1)).alias("n"), F.sum("length").alias("bytes"))
    return {r["fmt"]: (int(r["n"]), int(r["bytes"] or 0)) for r in rows.collect()}


def _cores(spark: SparkSession) -> int:
    return max(1, spark.sparkContext.defaultParallelism)


def _packed(spark: SparkSession, df: DataFrame, n_files: int, n_bytes: int) -> DataFrame:
    """``df`` in as many tasks as the cores, files over 1,000 per task or bytes over 64 MiB
    per task ask for. Spark's own packing (about 16 small files a task) makes 20,000 small
    files 1,250 tasks, whose start-up (a Python worker each for the text formats) dominates.
    """
    tasks = max(min(n_files, _cores(spark)), -(-n_bytes // (64 << 20)), -(-n_files // 1000), 1)
    return df.coalesce(tasks)


# -- input files: symbolic links, empty files ---------------------------------------------------
def input_files(path: str, icfg: InputConfig) -> tuple[InputFiles, list[dict]]:
    """Which files to read, and reject rows for what a local input holds that Spark would
    follow or skip without a trace.

    Hadoop's local file system follows every link, so a link inside the input folder could
    read any file the job can open; and Spark's scans skip empty files. A local input is
    walked first: links that leave it (unless ``input.follow_symlinks``) or lead nowhere,
    and empty files, are quarantined; if a link is skipped, Spark gets the list of the other
    files instead of the folder. Other file systems are read as they are.
    """
    local = _local_path(path)
    if local is None:
        return InputFiles(path, icfg.format), []
    files, rejects = walk_local(os.path.abspath(local), icfg.follow_symlinks)
    explicit = tuple(f for f, _size in files) if rejects else None
    for f, size in files:
        if size == 0:
            fmt = icfg.format if icfg.format != "auto" else R.extension(f) or None
            rejects.append(R.file_reject(f, fmt, R.EMPTY_FILE, "empty file (0 bytes)"))
    sizes = tuple((f, size) for f, size in files if size > 0)
    return InputFiles(path, icfg.format, explicit, sizes), rejects


def input_listing(ctx: StageContext) -> str | None:
    """A digest of every file under a local input (path, size, modification time): what
    tells a rerun that nothing was added, changed or removed. None for other inputs (an
    object store, a table), which ingest then always reads."""
    local = _local_path(ctx.input_path or "")
    if local is None:
        return None
    root = os.path.abspath(local)
    digest = hashlib.sha256(f"{root}\0{ctx.cfg.input.follow_symlinks}".encode())
    walked = (
        [(root, [], [""])]
        if os.path.isfile(root)
        else os.walk(root, followlinks=ctx.cfg.input.follow_symlinks)
    )
    for folder, dirs, names in walked:
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(folder, name) if name else folder
            try:
                st = os.stat(path)
            except OSError:
                st = os.lstat(path)  # a dangling link
            digest.update(f"\0{path}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return digest.hexdigest()


def _local_path(path: str) -> str | None:
    """The local file or folder that ``path`` (plain or ``file:``) names, or None."""
    if re.match(r"^[A-Za-z][\w+.-]+:", path) and not path.startswith("file:"):
        return None  # hdfs://, s3a://, dbfs:/ ...
    local = re.sub(r"^file:(//)?(?=/)", "", path)
    return local if os.path.exists(local) else None


def _spark_skips(name: str) -> bool:
    """Names Spark's file listing leaves out (hidden and temporary files)."""
    if name.startswith(("_common_metadata", "_metadata")):
        return False
    hidden = name.startswith(".") or (name.startswith("_") and "=" not in name)
    return hidden or name.endswith("._COPYING_")


def walk_local(root: str, follow: bool = False) -> tuple[list[tuple[str, int]], list[dict]]:
    """``(path, size)`` of the files under ``root`` as Spark would list them, and a reject
    row per link not followed: one that leads nowhere, or (unless ``follow``) leaves
    ``root``. Each folder is visited once, so a link loop ends."""
    if not os.path.isdir(root):
        return [(root, os.path.getsize(root))], []
    base = os.path.realpath(root)
    files: list[tuple[str, int]] = []
    rejects: list[dict] = []
    seen: set[str] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        if os.path.realpath(folder) in seen:
            continue
        seen.add(os.path.realpath(folder))
        with os.scandir(folder) as entries:
            for e in sorted(entries, key=lambda e: e.name):
                if _spark_skips(e.name):
                    continue
                why = _link_problem(e.path, base, follow) if e.is_symlink() else None
                if why:
                    rejects.append(R.file_reject(e.path, None, R.UNFOLLOWED_SYMLINK, why))
                elif e.is_dir():
                    stack.append(e.path)
                elif e.is_file():
                    files.append((e.path, e.stat().st_size))
    return files, rejects


def _link_problem(link: str, base: str, follow: bool) -> str | None:
    target = os.path.realpath(link)
    if not os.path.exists(target):
        return f"symbolic link to {target}, which does not exist"
    if not follow and os.path.commonpath([target, base]) != base:
        return (
            f"symbolic link to {target}, outside the input folder {base}; not followed "
            "(input.follow_symlinks: true follows it)"
        )
    return None


# -- text formats --------------------------------------------------------------------------------
def _text_rows(
    spark: SparkSession, files: InputFiles, listing: DataFrame, icfg: InputConfig, found: Found
) -> list[DataFrame]:
    """Text files in two reads: whole-file formats (a file is a document, so one larger than
    ``4 * max_doc_chars`` bytes cannot fit and is not read) and record formats (bounded by
    the ``binaryFile`` length limit only). The length filter is pushed into the scan."""
    max_len = int(spark.conf.get(_BINARY_MAX_LENGTH, str(2**31 - 1)))
    # 4 bytes per character at most, plus a byte-order mark
    fits = min(max_len, 4 * icfg.max_doc_chars + 4)
    per_file = None if icfg.format == "auto" else icfg.format
    parse = R.parse_files(per_file, icfg.text_field, icfg.id_field)
    pieces = []
    for group, limit in ((R.WHOLE_FILE_FORMATS, fits), (R.RECORD_FORMATS, max_len)):
        present = [f for f in group if f in found]
        if not present:
            continue
        n_files, n_bytes = (sum(found[f][i] for f in present) for i in (0, 1))
        read = files.load(spark.read.format("binaryFile"), group)
        read = read.filter(F.col("length") <= limit).select("path", "content")
        pieces.append(_packed(spark, read, n_files, n_bytes).mapInPandas(parse, R.PARSED))
        length = F.col("length")
        detail = F.when(
            length > max_len,
            F.format_string(f"file of %d bytes exceeds {_BINARY_MAX_LENGTH} = {max_len}", length),
        ).otherwise(
            F.format_string(
                f"file of %d bytes, more than input.max_doc_chars = {icfg.max_doc_chars} "
                "characters at 4 bytes each; not read",
                length,
            )
        )
        too_big = listing.filter(F.col("fmt").isin(*group) & (length > limit))
        pieces.append(_file_rejects(too_big, R.OVERSIZED_DOCUMENT, detail))
    return pieces


# -- CSV -----------------------------------------------------------------------------------------
def _csv_rows(
    spark: SparkSession,
    files: InputFiles,
    listing: DataFrame,
    icfg: InputConfig,
    found: tuple[int, int],
) -> list[DataFrame]:
    """Every CSV file in one read, each with its own header (RFC 4180 quoting, quoted
    newlines allowed); files with no row are ``empty_file`` (an empty file never reaches
    a Spark scan: :func:`input_files` finds those).

    One small action first reads each file's first line and counts its non-blank lines.
    Then all files are read by position (``_c0``, ``_c1``...) and each row is named by its
    file's header: a plain read would take one file's header for all of them.
    """
    heads, rejects = [], []
    for r in _csv_headers(spark, files, listing, found):
        if (r["lines"] or 0) > 1:
            heads.append(R.csv_file_row(r["path"], r["header"], icfg.text_field, icfg.id_field))
            continue
        if r["lines"]:
            detail = "a header and no rows"
        else:
            detail = f"no records in its {r['length']} bytes (blank lines)"
        rejects.append(R.file_reject(r["path"], "csv", R.EMPTY_FILE, detail))
    pieces = [spark.createDataFrame(rejects, R.PARSED)] if rejects else []
    if heads:
        width = max(len(h[1]) for h in heads)
        common = Counter(tuple(h[1]) for h in heads).most_common(1)[0][0]
        cols = R.positional_names(list(common), width)
        reader = (
            spark.read.format("csv")
            .schema(T.StructType([T.StructField(c, T.StringType()) for c in cols]))
            .option("header", "true")
            .option("escape", '"')
            .option("multiLine", "true")
        )
        values = _packed(spark, files.load(reader, ("csv",)), *found).select(
            R.decoded_path(F.col("_metadata.file_path")).alias("source"),
            F.array(*map(R.column, cols)).alias("values"),
        )
        pieces.append(R.csv_rows(values, spark.createDataFrame(heads, R.CSV_FILES)))
    return pieces


def _csv_headers(
    spark: SparkSession, files: InputFiles, listing: DataFrame, found: tuple[int, int]
) -> list[Row]:
    """``path``, ``length``, ``header`` (first line) and ``lines`` (non-blank) per CSV file.

    A file's first line is the one at block start 0 read first (the id order of a task).
    """
    lines = _packed(spark, files.load(spark.read.format("text"), ("csv",)), *found).select(
        R.decoded_path(F.col("_metadata.file_path")).alias("path"),
        F.col("_metadata.file_block_start").alias("start"),
        F.monotonically_increasing_id().alias("i"),
        "value",
    )
    per_file = lines.groupBy("path").agg(
        F.min_by("value", F.when(F.col("start") == 0, F.col("i"))).alias("header"),
        F.count(F.when(~F.col("value").rlike(R.BLANK_REGEX), 1)).alias("lines"),
    )
    csv_files = listing.filter(F.col("fmt") == "csv").select("path", "length")
    return csv_files.join(per_file, "path", "left").collect()


# -- parquet -------------------------------------------------------------------------------------
def _parquet_rows(
    spark: SparkSession,
    files: InputFiles,
    listing: DataFrame,
    icfg: InputConfig,
    found: tuple[int, int],
) -> list[DataFrame]:
    """Every parquet file in one read (schemas merged) that skips unreadable files; one
    small action then finds the files that gave no row, and their footers say why."""
    reader = (
        spark.read.format("parquet")
        .option("mergeSchema", "true")
        .option("ignoreCorruptFiles", "true")
    )
    parquet_files = listing.filter(F.col("fmt") == "parquet").select("path", "length")
    try:
        df = files.load(reader, ("parquet",))
    except AnalysisException:  # no readable footer at all: no schema to infer
        df = None
    pieces = []
    if df is not None:
        df = _packed(spark, df, *found)
        source = R.decoded_path(F.col("_metadata.file_path"))
        pieces.append(R.tabular_rows(df, source, "parquet", icfg.text_field, icfg.id_field))
        read = df.select(source.alias("path")).distinct()
        parquet_files = parquet_files.join(read, "path", "left_anti")
    rejects = [_parquet_reject(spark, r["path"], r["length"]) for r in parquet_files.collect()]
    if rejects:
        pieces.append(spark.createDataFrame(rejects, R.PARSED))
    return pieces


def _parquet_reject(spark: SparkSession, path: str, length: int) -> dict:
    """The quarantine row of a parquet file that gave no row, from its footer."""
    try:
        rows = _parquet_row_count(spark, path)
    except Py4JJavaError as exc:
        why = str(exc.java_exception.getMessage()).splitlines()[0]
        detail = f"not a readable parquet file ({length} bytes; truncated or corrupt): {why}"
        return R.file_reject(path, "parquet", R.CORRUPT_FILE, detail)
    if rows == 0:
        return R.file_reject(path, "parquet", R.EMPTY_FILE, "a parquet file with no rows")
    detail = f"its footer counts {rows} rows, but reading it failed; rerun to retry"
    return R.file_reject(path, "parquet", R.CORRUPT_FILE, detail)


def _parquet_row_count(spark: SparkSession, path: str) -> int:
    """Rows in a parquet file by its footer, read on the driver through Hadoop."""
    jvm = spark.sparkContext._jvm  # type: ignore[attr-defined]
    conf = spark.sparkContext._jsc.hadoopConfiguration()  # type: ignore[attr-defined]
    jfile = jvm.org.apache.parquet.hadoop.util.HadoopInputFile.fromPath(
        jvm.org.apache.hadoop.fs.Path(path), conf
    )
    reader = jvm.org.apache.parquet.hadoop.ParquetFileReader.open(jfile)
    try:
        return int(reader.getRecordCount())
    finally:
        reader.close()


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


def _file_rejects(files: DataFrame, reason: str, detail: Column) -> DataFrame:
    """Whole-file quarantine rows (locator ``file``) from listing rows (path, fmt)."""
    return R.as_parsed(
        files,
        source=F.col("path"),
        locator=F.lit("file"),
        format=F.col("fmt"),
        reason=F.lit(reason),
        detail=detail,
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

    Delta rewrites every file holding a matched key even when :data:`ADD_SOURCES` rejects all
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
    rows = as_quarantine(
        checked.filter(F.col("reason").isNotNull()),
        NAME,
        run_id,
        source="source",
        locator="locator",
        reason="reason",
        detail="detail",
        excerpt="excerpt",
    )
    return rows.dropDuplicates(["source", "locator"])


STAGE = Stage(NAME, _run, reads=(), writes=("documents", "quarantine"), outside=input_listing)
