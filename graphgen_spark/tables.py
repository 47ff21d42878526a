"""Table names, schemas and the Delta read / MERGE helpers every stage uses.

Tables live under ``DIR/tables/<name>`` (or ``catalog.schema.<name>`` on Databricks); every
other path of an output folder comes from :class:`OutputLayout`. Every write is a MERGE on
the table key (architecture §4.5), so reruns add nothing; what a MERGE does to a key the
table has already is a named :class:`MergePolicy`. The helpers return Delta's own operation
metrics so stages can report what they changed. Quarantine rows of every stage are built by
:func:`as_quarantine`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Self, TypeVar
from urllib.parse import urlparse

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from graphgen_spark.config import ConfigError
from graphgen_spark.errors import WriteConflict

STR, LONG, INT, DBL, BOOL = (
    T.StringType(),
    T.LongType(),
    T.IntegerType(),
    T.DoubleType(),
    T.BooleanType(),
)


def _schema(*fields: tuple[str, T.DataType]) -> T.StructType:
    return T.StructType([T.StructField(n, t, True) for n, t in fields])


SOURCE_REF = _schema(("source", STR), ("locator", STR), ("source_id", STR))

SCHEMAS: dict[str, T.StructType] = {
    "documents": _schema(
        ("doc_id", STR),
        ("source", STR),
        ("locator", STR),
        ("source_id", STR),
        ("sources", T.ArrayType(SOURCE_REF)),
        ("text", STR),
        ("n_chars", LONG),
        ("format", STR),
        ("prechunked", BOOL),
        ("parts", T.ArrayType(STR)),
        ("metadata", T.MapType(STR, STR)),
    ),
    "quarantine": _schema(
        ("source", STR),
        ("locator", STR),
        ("stage", STR),
        ("reason", STR),
        ("detail", STR),
        ("excerpt", STR),
        ("run_id", STR),
    ),
    "chunks": _schema(
        ("chunk_id", STR),
        ("doc_id", STR),
        ("index", INT),
        ("start_token", INT),
        ("end_token", INT),
        ("n_tokens", INT),
        ("text", STR),
        ("content_hash", STR),
        ("language", STR),
    ),
    "llm_calls": _schema(
        ("request_id", STR),
        ("stage", STR),
        ("role", STR),
        ("model", STR),
        ("base_url", STR),
        ("messages", STR),
        ("params", STR),
        ("response_model", STR),
        ("status", STR),
        ("response", STR),
        ("parsed", STR),
        ("logprobs", STR),
        ("error", STR),
        ("error_kind", STR),
        ("attempts", INT),
        ("prompt_tokens", LONG),
        ("completion_tokens", LONG),
        ("latency_ms", DBL),
        ("cost", DBL),
        ("run_id", STR),
        ("updated_at", T.TimestampType()),
        ("conversation", STR),  # the multi-turn conversation a call belongs to (extract)
    ),
    "extractions": _schema(
        ("content_hash", STR),
        ("status", STR),
        ("reason", STR),
        ("rounds", INT),
        ("attempts", INT),
        ("n_entities", INT),
        ("n_relations", INT),
        ("records", STR),
        ("request_ids", T.ArrayType(STR)),
        ("run_id", STR),
    ),
    "entity_mentions": _schema(
        ("chunk_id", STR),
        ("content_hash", STR),
        ("key", STR),
        ("display", STR),
        ("type", STR),
        ("description", STR),
    ),
    "relation_mentions": _schema(
        ("chunk_id", STR),
        ("content_hash", STR),
        ("src_key", STR),
        ("dst_key", STR),
        ("src_display", STR),
        ("dst_display", STR),
        ("description", STR),
        ("dangling", BOOL),
    ),
    # a chunk's row is written last, after both mention tables and its quarantine rows: a
    # chunk without one is redone whole (its mentions MERGE again on their keys)
    "mentioned_chunks": _schema(
        ("chunk_id", STR),
        ("content_hash", STR),
        ("n_entities", INT),
        ("n_relations", INT),
        ("run_id", STR),
    ),
    "entities": _schema(
        ("entity_id", STR),
        ("key", STR),
        ("name", STR),
        ("type", STR),
        ("description", STR),
        ("n_tokens", INT),
        ("n_mentions", INT),
        ("descriptions", T.ArrayType(STR)),
        ("summarised", BOOL),
        ("summary_levels", INT),
        ("chunk_ids", T.ArrayType(STR)),
        ("doc_ids", T.ArrayType(STR)),
        ("is_placeholder", BOOL),
        ("row_hash", STR),
    ),
    "relations": _schema(
        ("edge_id", STR),
        ("src_id", STR),
        ("dst_id", STR),
        ("src_name", STR),
        ("dst_name", STR),
        ("description", STR),
        ("n_tokens", INT),
        ("n_mentions", INT),
        ("descriptions", T.ArrayType(STR)),
        ("summarised", BOOL),
        ("summary_levels", INT),
        ("chunk_ids", T.ArrayType(STR)),
        ("doc_ids", T.ArrayType(STR)),
        ("row_hash", STR),
    ),
    "graph_stats": _schema(
        ("run_id", STR),
        ("engine", STR),
        ("vertices", LONG),
        ("edges", LONG),
        ("placeholders", LONG),
        ("isolated", LONG),
        ("components", LONG),
        ("largest_component", LONG),
        ("max_degree", LONG),
        ("mean_degree", DBL),
        ("degree_histogram", T.MapType(LONG, LONG)),
        ("missing_endpoints", LONG),
        ("computed_at", T.TimestampType()),
        ("component_sizes", T.MapType(LONG, LONG)),  # component size -> how many components
    ),
    "statements": _schema(
        ("statement_id", STR),
        ("element_id", STR),
        ("element_kind", STR),
        ("description_hash", STR),
        ("kind", STR),
        ("idx", INT),
        ("text", STR),
        ("label", STR),
        ("language", STR),
        ("request_id", STR),
    ),
    "judgements": _schema(
        ("statement_id", STR),
        ("trainee_model", STR),
        ("top_k", INT),
        ("yes_mass", DBL),
        ("no_mass", DBL),
        ("verdict_mass", DBL),
        ("p_yes", DBL),
        ("p_no", DBL),
        ("predicted", STR),
        ("correct", BOOL),
        ("confidence", DBL),
        ("loss", DBL),
        ("status", STR),
        ("request_id", STR),
        ("reason", STR),  # why a reply gave no verdict (e.g. a non-finite logprob)
    ),
    "gap_scores": _schema(
        ("element_id", STR),
        ("element_kind", STR),
        ("trainee_model", STR),
        ("loss", DBL),
        ("accuracy", DBL),
        ("confidence", DBL),
        ("n_ok", INT),
        ("n_total", INT),
        ("status", STR),
    ),
    "calibration": _schema(
        ("trainee_model", STR),
        ("scope", STR),
        ("n", LONG),
        ("n_no_verdict", LONG),
        ("ece", DBL),
        ("mce", DBL),
        ("brier", DBL),
        (
            "bins",
            T.ArrayType(
                _schema(
                    ("k", INT),
                    ("lo", DBL),
                    ("hi", DBL),
                    ("count", LONG),
                    ("acc", DBL),
                    ("conf", DBL),
                )
            ),
        ),
        ("run_id", STR),
    ),
    # -- issue 5: sampling, generation, evaluation (method §6–8) ---------------------------
    "subgraphs": _schema(
        ("batch_id", STR),  # h(method, config_hash, seed_id)
        ("method", STR),
        ("config_hash", STR),  # of the partition settings that shaped the batch
        ("seed_id", STR),
        ("seed_rank", LONG),  # position of the seed in the sampling order (caps use it)
        ("node_ids", T.ArrayType(STR)),  # order of first appearance, seed endpoints first
        ("edge_ids", T.ArrayType(STR)),  # order of addition, seed first
        ("n_units", INT),
        ("tokens", LONG),
        ("loss", DBL),
        ("difficulty", INT),  # loss tercile 0/1/2 among batches of the method (§7.3)
        ("component_id", STR),
        ("engine", STR),  # partition engine: component / claim / rounds
        ("graph_engine", STR),  # who answered its graph queries, e.g. components=graphframes
        ("flags", T.ArrayType(STR)),  # e.g. over_budget
        ("run_id", STR),
    ),
    "qa": _schema(
        ("qa_id", STR),  # h(batch_id, mode, item_index, prompt_version, synthesizer_model)
        ("mode", STR),
        ("item_index", INT),
        ("question", STR),
        ("answer", STR),
        ("options", T.MapType(STR, STR)),  # choice modes: A..D -> text
        ("answers", T.ArrayType(STR)),  # multi_answer letters / fill_in_blank answers
        ("reasoning_path", STR),  # cot step A
        ("language", STR),
        ("batch_id", STR),
        ("node_ids", T.ArrayType(STR)),
        ("edge_ids", T.ArrayType(STR)),
        ("chunk_ids", T.ArrayType(STR)),
        ("doc_ids", T.ArrayType(STR)),
        ("loss", DBL),
        ("difficulty", INT),
        ("style", STR),
        ("request_id", STR),  # the (last) request that produced the item
        ("status", STR),  # ok | duplicate | unsupported
        ("flags", T.ArrayType(STR)),
        ("duplicate_of", STR),
        ("prompt_version", STR),
        ("synthesizer_model", STR),
        ("run_id", STR),
    ),
    "qa_item_metrics": _schema(
        ("qa_id", STR),
        ("mode", STR),
        ("length", INT),  # answer tokens (eval.tokenizer)
        ("mtld", DBL),
        ("near_dup_cluster", STR),  # smallest qa_id of its near-duplicate cluster
        ("run_id", STR),
    ),
    "qa_metrics": _schema(
        ("run_id", STR),
        ("mode", STR),
        ("n", LONG),
        ("length_mean", DBL),
        ("length_min", DBL),
        ("length_max", DBL),
        ("mtld_mean", DBL),
        ("mtld_min", DBL),
        ("mtld_max", DBL),
        ("distinct_1", DBL),
        ("distinct_2", DBL),
        ("near_dup_rate", DBL),
        ("n_clusters", LONG),
    ),
    "runs": _schema(
        ("run_id", STR),
        ("started_at", T.TimestampType()),
        ("finished_at", T.TimestampType()),
        ("status", STR),
        ("config_hash", STR),
        ("input", STR),
        ("output", STR),
        ("stages", T.ArrayType(STR)),
        ("error", STR),
        (
            "stage_stats",
            T.ArrayType(
                _schema(
                    ("stage", STR),
                    ("status", STR),
                    ("seconds", DBL),
                    ("counts", T.MapType(STR, LONG)),
                    ("prompt_tokens", LONG),
                    ("completion_tokens", LONG),
                    ("cost", DBL),
                )
            ),
        ),
        # per stage, its fingerprint when it settled ("" when not): graphgen_spark/settled.py
        ("settled", T.MapType(STR, STR)),
    ),
}

KEYS: dict[str, tuple[str, ...]] = {
    "documents": ("doc_id",),
    "quarantine": ("source", "locator"),
    "chunks": ("chunk_id",),
    "llm_calls": ("request_id",),
    "extractions": ("content_hash",),
    "entity_mentions": ("chunk_id", "key"),
    "relation_mentions": ("chunk_id", "src_key", "dst_key"),
    "mentioned_chunks": ("chunk_id",),
    "entities": ("entity_id",),
    "relations": ("edge_id",),
    "graph_stats": ("run_id",),
    "statements": ("statement_id",),
    "judgements": ("statement_id", "trainee_model"),
    "gap_scores": ("element_id", "trainee_model"),
    "calibration": ("trainee_model", "scope"),
    "subgraphs": ("batch_id",),
    "qa": ("qa_id",),
    "qa_item_metrics": ("qa_id",),
    "qa_metrics": ("run_id", "mode"),
    "runs": ("run_id",),
}


# -- where an output folder keeps things -----------------------------------------------------
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")  # two letters at least: C: is a drive


def local_path(path: str) -> Path | None:
    """The local path that ``path`` names, or None when only Hadoop can reach it.

    A plain path (``/dbfs/...`` too: Databricks' FUSE mount) or a ``file:`` URI is local;
    any other scheme (``dbfs:/``, ``s3a://``, ``abfss://``, ``gs://``, ``hdfs://``) is not.
    """
    if path.startswith("file:"):
        return Path(urlparse(path).path)
    return None if _SCHEME.match(path) else Path(path)


class OutputLayout:
    """Every path of one output folder, so no caller concatenates them.

    A plain path is resolved (the driver's working folder is not the executors'); a URI,
    ``file:`` included, is kept as given so Hadoop picks its filesystem.
    """

    def __init__(self, output_dir: str | Path) -> None:
        given = str(output_dir)
        self.root = given.rstrip("/") if _SCHEME.match(given) else str(Path(given).resolve())

    @property
    def is_local(self) -> bool:
        """Whether the driver can write the folder with plain file operations."""
        return local_path(self.root) is not None

    @property
    def tables(self) -> str:
        return f"{self.root}/tables"

    def table(self, name: str) -> str:
        return f"{self.tables}/{name}"

    @property
    def staging(self) -> str:
        """Scratch space of stages and the LLM journals: a stage's scratch goes when the
        stage ends; a killed run's is swept by the next run, which merges its journals."""
        return f"{self.root}/_staging"

    def staged(self, name: str) -> str:
        return f"{self.staging}/{name}"

    @property
    def export(self) -> str:
        return f"{self.root}/export"

    @property
    def report(self) -> str:
        return f"{self.root}/report"

    @property
    def lease(self) -> str:
        return f"{self.root}/_lease.json"


# -- quarantine rows ----------------------------------------------------------------------------
EXCERPT_CHARS = 200  # characters of the offending text a quarantine row keeps
ColumnLike = str | Column  # a column name or an expression


def _column(c: ColumnLike | None) -> Column:
    if c is None:
        return F.lit(None).cast("string")
    return F.col(c) if isinstance(c, str) else c


def as_quarantine(
    df: DataFrame,
    stage: str,
    run_id: str,
    *,
    source: ColumnLike,
    locator: ColumnLike,
    reason: ColumnLike,
    detail: ColumnLike | None = None,
    excerpt: ColumnLike | None = None,
) -> DataFrame:
    """``df`` as ``quarantine`` rows of ``stage`` (strings name columns of ``df``).

    The one place the row is built, so every stage fills the same columns and cuts its
    excerpt to :data:`EXCERPT_CHARS`.
    """
    return df.select(
        _column(source).alias("source"),
        _column(locator).alias("locator"),
        F.lit(stage).alias("stage"),
        _column(reason).alias("reason"),
        _column(detail).alias("detail"),
        F.substring(_column(excerpt), 1, EXCERPT_CHARS).alias("excerpt"),
        F.lit(run_id).alias("run_id"),
    )


# -- merge policies ------------------------------------------------------------------------------
def _sql_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _sql_list(values: Sequence[str]) -> str:
    return ", ".join(_sql_str(v) for v in values)


@dataclass(frozen=True)
class MergePolicy:
    """Insert new keys, leave stored ones alone: Delta's ``whenNotMatchedInsertAll``.

    Subclasses add a ``whenMatchedUpdate`` clause and :meth:`replacing` adds
    ``whenNotMatchedBySourceDelete``, so a call site names what it means instead of writing
    merge SQL.
    """

    delete_missing: str | None = field(default=None, kw_only=True)

    def update_when(self) -> str | None:
        """SQL over ``t.`` (stored) and ``s.`` (new) columns: update a matched row when true."""
        return None

    def update_set(self, columns: Sequence[str]) -> dict[str, str] | None:
        """Column -> SQL expression for the non-key ``columns`` of an updated row; None: all
        from the new row."""
        return None

    def replacing(self, **where: str) -> Self:
        """This policy, the new rows being the complete state of the stored rows whose
        columns equal ``where`` (the whole table without any): rows there whose key is not
        among the new rows are deleted."""
        return replace(self, delete_missing=_slice(where))

    def replacing_each(self, slices: Iterable[Mapping[str, str]]) -> Self:
        """:meth:`replacing` for several slices at once (one MERGE for all of them): rows
        in any of them whose key is not among the new rows are deleted."""
        conds = [f"({_slice(where)})" for where in slices]
        return replace(self, delete_missing=" OR ".join(conds) or "false")


def _slice(where: Mapping[str, str]) -> str:
    """The stored rows whose columns equal ``where``: SQL over ``t.``, the whole table
    without any."""
    return " AND ".join(f"t.`{c}` = {_sql_str(v)}" for c, v in where.items()) or "true"


INSERT_ONLY = MergePolicy()


@dataclass(frozen=True)
class Upsert(MergePolicy):
    """Every matched row takes the new row: for rows recomputed whole (a run's record,
    graph statistics, calibration)."""

    def update_when(self) -> str:
        return "true"


@dataclass(frozen=True)
class UpdateWhen(MergePolicy):
    """Delta's ``whenMatchedUpdate(condition, set)`` as written, for a rule that is one
    table's own (documents gaining sources); the other policies name the common ones."""

    condition: str
    assignments: Mapping[str, str] | None = None

    def update_when(self) -> str:
        return self.condition

    def update_set(self, columns: Sequence[str]) -> dict[str, str] | None:
        return None if self.assignments is None else dict(self.assignments)


def _same(col: str) -> str:
    return f"t.`{col}` <=> s.`{col}`"


def _close(col: str) -> str:
    """Both null, or within 1e-9 relative: Spark sums doubles in partition order, so the
    last bits of a mean can move between runs."""
    return (
        f"coalesce(abs(t.`{col}` - s.`{col}`) <= 1e-9 * greatest(1.0, abs(s.`{col}`)), "
        f"t.`{col}` IS NULL AND s.`{col}` IS NULL)"
    )


@dataclass(frozen=True)
class UpdateWhenChanged(MergePolicy):
    """Update a matched row only when one of ``columns`` differs (null-safe) or one of the
    doubles ``approx`` moved by more than 1e-9 relative; ``only`` limits the update to
    those columns. Unchanged rows are not rewritten, so a rerun commits no version."""

    columns: Sequence[str]
    approx: Sequence[str] = ()
    only: Sequence[str] | None = None

    def update_when(self) -> str:
        same = [_same(c) for c in self.columns] + [_close(c) for c in self.approx]
        return "NOT (" + " AND ".join(same) + ")"

    def update_set(self, columns: Sequence[str]) -> dict[str, str] | None:
        return None if self.only is None else {c: f"s.`{c}`" for c in self.only}


@dataclass(frozen=True)
class RetryUntilOk(MergePolicy):
    """Rows of work that is retried: a stored row whose ``status`` is in ``final`` keeps
    its outcome, any other takes the new try's; ``summed`` columns add up over the tries.

    With ``newer`` (a timestamp column) a matched row is updated only by a newer row, final
    or not, so merging the same rows twice counts nothing twice; with ``give_up_after``, a
    row whose summed ``attempts`` reach it without a final outcome becomes ``gave_up``.
    """

    final: Sequence[str] = ("ok",)
    summed: Sequence[str] = ()
    newer: str | None = None
    give_up_after: int | None = None

    def update_when(self) -> str:
        if self.newer is None:
            return f"t.status NOT IN ({_sql_list(self.final)})"
        return f"t.`{self.newer}` IS NULL OR s.`{self.newer}` > t.`{self.newer}`"

    def update_set(self, columns: Sequence[str]) -> dict[str, str]:
        kept = f"t.status IN ({_sql_list(self.final)})"
        out = {c: f"CASE WHEN {kept} THEN t.`{c}` ELSE s.`{c}` END" for c in columns}
        out |= {c: f"coalesce(t.`{c}`, 0) + coalesce(s.`{c}`, 0)" for c in self.summed}
        if self.newer is not None:
            out[self.newer] = f"s.`{self.newer}`"
        out["status"] = f"CASE WHEN {kept} THEN t.status {self._give_up(out)}ELSE s.status END"
        return out

    def _give_up(self, update: dict[str, str]) -> str:
        """The CASE branch that gives a row up on its summed attempts ('' when never)."""
        if self.give_up_after is None:
            return ""
        over = f"{update['attempts']} >= {self.give_up_after}"
        return f"WHEN s.status NOT IN ({_sql_list(self.final)}) AND {over} THEN 'gave_up' "


@dataclass(frozen=True)
class MergeResult:
    inserted: int = 0
    updated: int = 0
    deleted: int = 0


T_ = TypeVar("T_")
_log = logging.getLogger("graphgen_spark")
# Delta's optimistic-concurrency failures: another writer committed first
_CONFLICTS = (
    "ConcurrentAppendException",
    "ConcurrentDeleteReadException",
    "ConcurrentDeleteDeleteException",
    "ConcurrentTransactionException",
    "MetadataChangedException",
    "ProtocolChangedException",
    "DELTA_CONCURRENT_",
)
# a create-with-rows that found the table there: another writer created it first
_ALREADY_EXISTS = ("DELTA_PATH_EXISTS", "TABLE_OR_VIEW_ALREADY_EXISTS", "already exists")
# the commits a first write makes (path, catalog): their rows count as inserted
_CREATING_WRITES = ("WRITE", "CREATE TABLE AS SELECT")


def retry_conflicts(table: str, write: Callable[[], T_], attempts: int = 10) -> T_:
    """Run ``write``, repeating it when a concurrent commit made Delta reject it.

    Only for idempotent writes (a keyed MERGE): repeating one after the other writer's
    commit gives the same table as running it after that commit in the first place.
    """
    for attempt in range(attempts):
        try:
            return write()
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"
            if not any(c in text for c in _CONFLICTS):
                raise
            if attempt == attempts - 1:
                raise WriteConflict(
                    f"{table}: the write conflicted {attempts} times with another writer's "
                    "commits (Delta optimistic concurrency); another job is writing this table "
                    f"at the same time. First line of the last conflict: {text.splitlines()[0]}"
                ) from exc
            _log.warning(
                "%s: write conflict with another writer (%s); retrying (%d/%d)",
                table,
                text.splitlines()[0][:160],
                attempt + 1,
                attempts - 1,
            )
            time.sleep(min(8.0, 0.25 * 2**attempt) * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")


def _conflicts_retried(write: Callable[..., T_]) -> Callable[..., T_]:
    """A ``Tables`` write on table ``name``, retried on a Delta write conflict (every
    write it decorates is a keyed MERGE, safe to repeat; see :func:`retry_conflicts`)."""

    @functools.wraps(write)
    def retried(self: Tables, name: str, *args: Any, **kwargs: Any) -> T_:
        return retry_conflicts(self.location(name), lambda: write(self, name, *args, **kwargs))

    return retried


class Tables:
    """Access to the run's Delta tables: path resolution, reads, keyed MERGEs."""

    def __init__(
        self,
        spark: SparkSession,
        output_dir: str | Path,
        catalog: str | None = None,
        schema: str | None = None,
    ) -> None:
        self.spark = spark
        self.output_dir = str(output_dir)
        self.catalog = catalog
        self.db_schema = schema
        self.layout = OutputLayout(output_dir)
        self._columns_checked: set[str] = set()
        self.touched: set[str] = set()  # tables named since the pipeline last cleared it

    # -- where -----------------------------------------------------------------------
    def location(self, name: str) -> str:
        """Filesystem path (local / cluster) or fully qualified table name (catalog)."""
        self.touched.add(name)
        if self.catalog and self.db_schema:
            if self.catalog == "spark_catalog":
                # open-source Delta's table builder parses two-part names only
                return f"{self.db_schema}.{name}"
            return f"{self.catalog}.{self.db_schema}.{name}"
        return self.layout.table(name)

    def _delta(self, name: str) -> DeltaTable:
        loc = self.location(name)
        if self.catalog and self.db_schema:
            return DeltaTable.forName(self.spark, loc)
        return DeltaTable.forPath(self.spark, loc)

    # -- lifecycle -----------------------------------------------------------------------
    def check_schema(self) -> None:
        """In catalog mode the schema must exist (creating one is an administrator's
        choice: location, owner, grants); say so before any stage runs."""
        if not (self.catalog and self.db_schema):
            return
        qualified = f"{self.catalog}.{self.db_schema}"
        if not self.spark.catalog.databaseExists(qualified):
            raise ConfigError(
                f"tables.catalog / tables.schema: schema {qualified} does not exist; create "
                f"it (CREATE SCHEMA {qualified}) or name an existing one"
            )

    def _local_log(self, name: str) -> Path | None:
        """The ``_delta_log`` folder of a table in a local output folder: read with plain
        file operations, it tells a table's version and last commit without loading a
        Delta snapshot (a tenth of a second each, a few hundred times a run)."""
        if self.catalog and self.db_schema:
            return None
        root = local_path(self.location(name))
        return None if root is None else root / "_delta_log"

    def exists(self, name: str) -> bool:
        loc = self.location(name)
        if self.catalog and self.db_schema:
            return self.spark.catalog.tableExists(loc)
        log = self._local_log(name)
        if log is not None:
            return bool(_commits(log))
        return DeltaTable.isDeltaTable(self.spark, loc)

    def _add_missing_columns(self, name: str) -> None:
        """Add the columns a newer version of the schema introduced to a stored table an
        older version created (once per table and session)."""
        checked = self._columns_checked
        if name in checked:
            return
        have = set(self._delta(name).toDF().columns)
        missing = [f for f in SCHEMAS[name].fields if f.name not in have]
        if missing:
            loc = self.location(name)
            target = loc if self.catalog and self.db_schema else f"delta.`{loc}`"
            cols = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in missing)
            self.spark.sql(f"ALTER TABLE {target} ADD COLUMNS ({cols})")
        checked.add(name)

    def read(self, name: str) -> DataFrame:
        """The table as a DataFrame; an empty one with the schema if it does not exist."""
        if not self.exists(name):
            return self.spark.createDataFrame([], SCHEMAS[name])
        self._add_missing_columns(name)
        loc = self.location(name)
        if self.catalog and self.db_schema:
            return self.spark.read.table(loc)
        return self.spark.read.format("delta").load(loc)

    # -- writes ----------------------------------------------------------------------------
    @_conflicts_retried
    def merge(self, name: str, df: DataFrame, policy: MergePolicy = INSERT_ONLY) -> MergeResult:
        """MERGE ``df`` into table ``name`` on its key: new keys are inserted, stored ones
        are updated or deleted as ``policy`` says (by default left alone)."""
        if not self.exists(name):
            created = self._create_with(name, df)
            if created is not None:
                return created
        self._add_missing_columns(name)
        cols = [f.name for f in SCHEMAS[name].fields]
        df = df.select(*cols)
        update_when = policy.update_when()
        if update_when not in (None, "true") and policy.delete_missing is None:
            # Delta rewrites every file holding a matched key and commits a version even when
            # update_when rejects them all: send only new rows and rows that satisfy it.
            keys = KEYS[name]
            on = [F.col(f"s.`{k}`").eqNullSafe(F.col(f"t.`{k}`")) for k in keys]
            df = (
                df.alias("s")
                .join(self.read(name).alias("t"), on, "left")
                .where(f"t.`{keys[0]}` IS NULL OR ({update_when})")
                .select("s.*")
            )
        if policy.delete_missing is not None and not self._would_change(
            name, df, update_when, policy.delete_missing
        ):
            return MergeResult()  # Delta would commit an empty version
        cond = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in KEYS[name])
        before = self.version(name)
        m = self._delta(name).alias("t").merge(df.alias("s"), cond)
        if update_when is not None:
            update_set = policy.update_set([c for c in cols if c not in KEYS[name]])
            if update_set:
                m = m.whenMatchedUpdate(condition=update_when, set=update_set)
            else:
                m = m.whenMatchedUpdateAll(condition=update_when)
        m = m.whenNotMatchedInsertAll()
        if policy.delete_missing is not None:
            m = m.whenNotMatchedBySourceDelete(condition=policy.delete_missing)
        m.execute()
        # a MERGE that changes nothing commits no version: then there is nothing to report
        return self.last_merge(name) if self.version(name) > before else MergeResult()

    @_conflicts_retried
    def append(self, name: str, df: DataFrame) -> None:
        """Add rows whose keys are new by construction (a run's first record): a blind
        append, which joins nothing against the stored rows and never conflicts; the
        first one creates the table."""
        if self.exists(name):
            self._add_missing_columns(name)
        self._write(name, df, "append")

    def _conformed(self, name: str, df: DataFrame) -> DataFrame:
        """``df``'s columns in the table's order and types, as a table created from it
        must have them (Delta makes a created table's columns nullable, as ours are)."""
        return df.select(
            *(F.col(f"`{f.name}`").cast(f.dataType).alias(f.name) for f in SCHEMAS[name])
        )

    def _write(self, name: str, df: DataFrame, mode: str) -> None:
        writer = self._conformed(name, df).write.format("delta").mode(mode)
        loc = self.location(name)
        if self.catalog and self.db_schema:
            writer.saveAsTable(loc)
        else:
            writer.save(loc)

    def _create_with(self, name: str, df: DataFrame) -> MergeResult | None:
        """A table's first write creates it holding ``df``'s rows in one commit, which is
        what a MERGE into the new empty table would leave, without the empty table's own
        commit and the MERGE's join (on a small run, most of a stage's Delta time).
        ``None`` when another writer created the table first: then the caller MERGEs."""
        try:
            self._write(name, df, "errorifexists")
        except Exception as exc:
            if any(c in str(exc) for c in _ALREADY_EXISTS):
                return None
            raise
        return self.last_merge(name)

    @_conflicts_retried
    def delete_keys(self, name: str, keys: DataFrame) -> int:
        """Delete the rows whose key is in ``keys``; returns how many."""
        if not self.exists(name):
            return 0
        cond = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in KEYS[name])
        before = self.version(name)
        src = keys.select(*KEYS[name]).distinct()
        self._delta(name).alias("t").merge(src.alias("s"), cond).whenMatchedDelete().execute()
        return self.last_merge(name).deleted if self.version(name) > before else 0

    def _would_change(
        self, name: str, df: DataFrame, update_when: str | None, delete_where: str
    ) -> bool:
        keys = KEYS[name]
        on = [F.col(f"s.`{k}`").eqNullSafe(F.col(f"t.`{k}`")) for k in keys]
        target = self.read(name).alias("t")
        changed = (
            df.alias("s")
            .join(target, on, "left")
            .where(f"t.`{keys[0]}` IS NULL OR ({update_when or 'false'})")
            .limit(1)
            .count()
        )
        if changed:
            return True
        stale = target.where(delete_where).join(df.alias("s"), on, "left_anti").limit(1).count()
        return bool(stale)

    def last_merge(self, name: str) -> MergeResult:
        """What the table's last commit did to its rows: a MERGE's counts, or the rows a
        creating write inserted."""
        log = self._local_log(name)
        if log is not None:
            info = _commit_info(log, self.version(name))
        else:
            row = self._delta(name).history(1).select("operation", "operationMetrics").first()
            info = row.asDict() if row is not None else {}
        m = info.get("operationMetrics") or {}
        if info.get("operation") in _CREATING_WRITES:
            return MergeResult(inserted=int(m.get("numOutputRows", 0)))
        if info.get("operation") != "MERGE":
            return MergeResult()
        return MergeResult(
            inserted=int(m.get("numTargetRowsInserted", 0)),
            updated=int(m.get("numTargetRowsUpdated", 0)),
            deleted=int(m.get("numTargetRowsDeleted", 0)),
        )

    def version(self, name: str) -> int:
        """Current Delta version of a table (-1 when it does not exist)."""
        log = self._local_log(name)
        if log is not None:
            return max(_commits(log), default=-1)
        if not self.exists(name):
            return -1
        return int(self._delta(name).history(1).select("version").first()[0])


_COMMIT = re.compile(r"^(\d{20})\.json$")


def _commits(log: Path) -> list[int]:
    """The versions whose commit files a local ``_delta_log`` holds."""
    try:
        names = os.listdir(log)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [int(m[1]) for n in names if (m := _COMMIT.match(n))]


def _commit_info(log: Path, version: int) -> dict[str, Any]:
    """The ``commitInfo`` action of one commit (operation, operationMetrics...)."""
    with (log / f"{version:020d}.json").open(encoding="utf-8") as f:
        for line in f:
            action = json.loads(line)
            if "commitInfo" in action:
                return action["commitInfo"]
    return {}
