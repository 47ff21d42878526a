"""The request ledger: ``llm_calls`` and the journals that feed it (architecture §4.1).

Every call an executor task makes is journaled at once (``llm/journal.py``); the ledger
MERGEs journals into ``llm_calls`` after each call of the runner and when a run starts
(``recover``: what a killed run journaled but never merged). A request's row keeps its
best outcome (an ok answer is never replaced) and adds up attempts, tokens and cost over
every try, so the table says what the endpoint was paid for. The ledger also answers what
is already paid for: cached turns, results, and the spend a budget is held against.
"""

from __future__ import annotations

import logging

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window

from graphgen_spark import fsutil
from graphgen_spark.tables import SCHEMAS, RetryUntilOk, Tables

_SUMMED = ("attempts", "prompt_tokens", "completion_tokens", "cost")
# journals store the timestamp as epoch microseconds (JSON has no timestamp type)
_JOURNAL_SCHEMA = T.StructType(
    [
        T.StructField(f.name, T.LongType()) if f.name == "updated_at" else f
        for f in SCHEMAS["llm_calls"].fields
    ]
)
JOURNAL_SUFFIX = ".journal"

JOURNALS = "llm_calls"  # the folder under _staging holding the waves' journals


class Ledger:
    """``llm_calls`` of one output and the staging area its journals live in."""

    def __init__(
        self,
        spark: SparkSession,
        tables: Tables,
        run_id: str,
        log: logging.Logger,
        give_up_after: int | None = None,
        retry_given_up: bool = False,
    ) -> None:
        self.spark, self.tables, self.run_id, self.log = spark, tables, run_id, log
        self.give_up_after, self.retry_given_up = give_up_after, retry_given_up

    # -- staging ---------------------------------------------------------------------------
    @property
    def staging_root(self) -> str:
        return self.tables.layout.staged(JOURNALS)

    def journal_uri(self, wave_path: str) -> str:
        """The wave's journal folder as a fully qualified URI, for executors to write to."""
        return fsutil.qualified(self.spark, wave_path + JOURNAL_SUFFIX)

    def journaled(self, wave_paths: list[str]) -> DataFrame | None:
        """The call rows journaled beside these waves; None when there are none."""
        dirs = [p + JOURNAL_SUFFIX for p in wave_paths]
        files = [f for d in dirs for f in fsutil.list_files(self.spark, d, suffix=".jsonl")]
        if not files:
            return None
        return (
            self.spark.read.schema(_JOURNAL_SCHEMA)
            .option("mode", "DROPMALFORMED")
            .json(files)
            .where(F.col("request_id").isNotNull())
            .withColumn("updated_at", F.timestamp_micros("updated_at"))
        )

    def merge_journals(self, wave_paths: list[str], drop: bool = False) -> None:
        """MERGE the calls journaled beside these waves into llm_calls; with ``drop`` (for
        waves whose tasks have all ended) their journals are removed after."""
        calls = self.journaled(wave_paths)
        if calls is not None:
            self._merge_calls(calls)
        for path in wave_paths if drop else ():
            fsutil.delete(self.spark, path + JOURNAL_SUFFIX)

    def _merge_calls(self, calls: DataFrame) -> None:
        """Best outcome per request (ok first, then latest), with every try added up; into
        a stored row the same way: an ok answer stays, the counts add.

        Idempotent: a row's ``updated_at`` becomes its latest call's, and only calls newer
        than that are added, so merging a journal twice (a crash right after a merge)
        counts nothing twice.
        """
        best = Window.partitionBy("request_id").orderBy(
            F.desc(F.col("status") == "ok"), F.desc("updated_at")
        )
        totals = calls.groupBy("request_id").agg(
            *(F.sum(c).alias(c) for c in _SUMMED), F.max("updated_at").alias("_latest")
        )
        staged = (
            calls.withColumn("_n", F.row_number().over(best))
            .filter("_n = 1")
            .drop("_n", *_SUMMED)
            .join(totals, "request_id")
            .withColumn("updated_at", F.col("_latest"))
            .drop("_latest")
        )
        staged = staged.withColumn("status", self._give_up())
        policy = RetryUntilOk(summed=_SUMMED, newer="updated_at", give_up_after=self.give_up_after)
        self.tables.merge("llm_calls", staged, policy)

    def _over(self, attempts: str) -> str:
        return "false" if self.give_up_after is None else f"{attempts} >= {self.give_up_after}"

    def _give_up(self) -> F.Column:
        """A staged row's status: gave_up once its attempts reach ``give_up_after``."""
        over = (F.col("status") != "ok") & F.expr(self._over("attempts"))
        return F.when(over, F.lit("gave_up")).otherwise(F.col("status"))

    def recover(self) -> int:
        """Merge what earlier runs journaled but never merged, then clear the staging area.

        Safe because one run at a time holds the output (``lease.py``). Returns how many
        journal folders were merged.
        """
        paths = fsutil.list_dirs(self.spark, self.staging_root)
        journals = [p[: -len(JOURNAL_SUFFIX)] for p in paths if p.endswith(JOURNAL_SUFFIX)]
        self.merge_journals(journals)
        for path in paths:
            fsutil.delete(self.spark, path)
        if journals:
            self.log.info(
                "llm: merged the calls of %d wave(s) left by an earlier run", len(journals)
            )
        return len(journals)

    # -- what is paid for ------------------------------------------------------------------
    def answered(self) -> DataFrame:
        """Requests not to send again: answered ok, or given up (unless retried)."""
        final = ["ok"] if self.retry_given_up else ["ok", "gave_up"]
        return self.tables.read("llm_calls").filter(F.col("status").isin(final))

    def cached_turns(self, rows: DataFrame, key: str, stage: str) -> DataFrame:
        """``rows`` with ``_cached``: the ok turns already answered for each row's key."""
        cached = (
            self.answered()
            .filter(F.col("stage") == stage)
            .join(rows.select(F.col(key).alias("conversation")), "conversation", "left_semi")
            .groupBy(F.col("conversation").alias(key))
            .agg(
                F.collect_list(
                    F.struct("request_id", "status", "parsed", "response", "logprobs", "error")
                ).alias("_cached")
            )
        )
        return rows.join(cached, key, "left")

    def results(self, requests: DataFrame) -> DataFrame:
        """``requests`` joined with their outcomes (status, parsed, response, logprobs, error)."""
        calls = self.tables.read("llm_calls").select(
            "request_id", "status", "parsed", "response", "logprobs", "error", "error_kind"
        )
        return requests.join(calls, "request_id", "left")

    def spent(self, scope: str) -> tuple[int, float]:
        """Tokens and cost the budget is held against: everything this output's ledger
        records (``output``), or only this invocation's calls (``invocation``)."""
        calls = self.tables.read("llm_calls")
        if scope == "invocation":
            calls = calls.filter(F.col("run_id") == self.run_id)
        row = calls.agg(
            F.sum(F.col("prompt_tokens") + F.col("completion_tokens")).alias("tokens"),
            F.sum("cost").alias("cost"),
        ).first()
        return int(row["tokens"] or 0), float(row["cost"] or 0.0)

    def left_by_stage(self, run_id: str) -> dict[str, int]:
        """Requests a run tried and did not get answered ok, per stage: what a rerun of
        the same command retries."""
        rows = (
            self.tables.read("llm_calls")
            .filter((F.col("run_id") == run_id) & (F.col("status") != "ok"))
            .groupBy("stage")
            .count()
            .collect()
        )
        return {r["stage"]: int(r["count"]) for r in rows}
