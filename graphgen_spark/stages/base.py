"""What every stage is, receives and returns.

A stage is one declared :class:`Stage`: its name, the tables it reads and MERGEs into, its
to-do set (``pending``), the LLM work it declares (``llm``) and the function that does the
work (``body``). It reads its input tables with Spark, transforms them with DataFrame
operations (LLM calls only through :mod:`graphgen_spark.llm`) and MERGEs its output into
its Delta tables. The driver never collects a corpus-sized set. ``pipeline.STAGES`` is
the tuple of every stage object; the dry run reads ``pending`` and ``llm`` of the same
objects, so what it counts is what the stage then sends.

Keeping a DataFrame from being computed twice, one rule:

* ``ctx.scratch.materialise(df)``: anything derived from LLM answers, and any
  intermediate a stage reads more than once. On a cluster, parquet in the stage's scratch
  folder on the output's storage survives a lost executor; the pipeline deletes the folder
  when the stage ends, also on errors and budget stops. Under a ``local`` master the
  executor is the driver's own JVM, so its blocks die only with the run: there it is a
  ``localCheckpoint``, a quarter of the cost of a parquet round trip, whose blocks the
  pipeline drops when the stage ends.
* ``localCheckpoint`` otherwise: never on a stage's path on a cluster (its blocks die with
  their executor); only the default ``keep`` of graph engines called outside a stage
  (tests, benches).
* ``persist``: only for small, cheap, deterministic frames read by a few actions in a row
  (export's rendered lines), unpersisted before the stage returns.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from pyspark.sql import Column, DataFrame, SparkSession

from graphgen_spark.config import Config
from graphgen_spark.llm.ledger import JOURNALS
from graphgen_spark.llm.work import ExecutionSummary
from graphgen_spark.tables import OutputLayout, Tables


@dataclass
class StageContext:
    spark: SparkSession
    cfg: Config
    tables: Tables
    run_id: str
    input_path: str | None = None
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("graphgen_spark"))
    scratch: Scratch = field(default_factory=lambda: _NO_SCRATCH)


@dataclass
class StageResult:
    """Counts for the ``runs`` table (rows written, quarantined, LLM usage)."""

    counts: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0

    @classmethod
    def of_llm(cls, summary: ExecutionSummary, prefix: str = "llm") -> StageResult:
        return cls(
            summary.counts(prefix), summary.prompt_tokens, summary.completion_tokens, summary.cost
        )

    def add(self, other: StageResult) -> StageResult:
        for k, v in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + v
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost += other.cost
        return self


class Scratch:
    """A stage's private staging folder under ``DIR/_staging``, opened and cleaned by
    :meth:`Stage.run`.

    ``materialise`` computes a DataFrame once (see the module docstring for where it
    keeps it), so anything derived from LLM answers is never re-evaluated (method.md §1 rule 2; the Spark form of GraphGen #141).
    """

    def __init__(self, ctx: StageContext, name: str) -> None:
        self.spark = ctx.spark
        self.path = ctx.tables.layout.staged(f"{name}-{uuid.uuid4().hex[:12]}")
        self.step = 0
        self.in_files = not ctx.spark.sparkContext.master.startswith("local")
        self._blocks: list[DataFrame] = []

    def materialise(self, df: DataFrame) -> DataFrame:
        if not self.in_files:
            kept = df.localCheckpoint(eager=True)
            self._blocks.append(kept)
            # fresh column identities, as a parquet read gives: two checkpoints of frames
            # that share a source column (joined or cogrouped later) must not share its id
            return kept.toDF(*kept.columns)
        self.step += 1
        path = f"{self.path}/step{self.step}"
        df.write.mode("overwrite").parquet(path)
        return self.spark.read.parquet(path)

    def cleanup(self) -> None:
        """Delete the folder and drop the checkpoint blocks: a stage leaves neither."""
        from graphgen_spark import fsutil

        for kept in self._blocks:
            # a checkpointed frame is a scan of the checkpointed RDD, which DataFrame's
            # unpersist does not reach: unpersist that RDD itself
            kept._jdf.queryExecution().analyzed().rdd().unpersist(False)
        self._blocks.clear()
        fsutil.delete(self.spark, self.path)


def sweep_scratch(spark: SparkSession, layout: OutputLayout) -> list[str]:
    """Remove the scratch folders a killed run left; returns them. Called under the run
    lease, so no other run is using one. The LLM journals stay: recovery merges them into
    ``llm_calls``."""
    from graphgen_spark import fsutil

    left = [
        p
        for p in fsutil.list_dirs(spark, layout.staging)
        if p.rstrip("/").rsplit("/", 1)[-1] != JOURNALS
    ]
    for path in left:
        fsutil.delete(spark, path)
    return left


class _NoScratch(Scratch):
    """``ctx.scratch`` outside :meth:`Stage.run`: using it is a programming error."""

    def __init__(self) -> None:
        self.path, self.step = "", 0

    def materialise(self, df: DataFrame) -> DataFrame:
        raise RuntimeError("ctx.scratch is opened by Stage.run(ctx); call the stage object")

    def cleanup(self) -> None:
        pass


_NO_SCRATCH = _NoScratch()


@dataclass(frozen=True)
class LLMDemand:
    """What a stage asks of an endpoint per unit of its to-do set: the dry run's input.

    ``key`` names a unit (a column of ``pending``). ``calls`` gives the fewest and most
    calls of one unit (per ``group`` value, e.g. a mode). One-shot stages give
    ``requests``, the first request of each pending unit; the dry run subtracts those
    answered before. Conversation stages key their conversations by ``key``; the dry run
    subtracts each conversation's turns answered before.
    """

    role: str
    key: str
    calls: Callable[[Config, str | None], tuple[int, int]]
    prompt_tokens: Callable[[], Column]
    max_tokens: Callable[[Config], int]
    note: str  # may name {fewest} and {most}
    requests: Callable[[StageContext, DataFrame], DataFrame] | None = None
    group: str | None = None

    def most_calls(self, cfg: Config, group: str | None = None) -> int:
        """The most calls one unit can take: what the runner sizes its waves by."""
        return self.calls(cfg, group)[1]


def _never(cfg: Config) -> str | None:
    return None


def _tables_only(ctx: StageContext) -> str | None:
    return ""


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline, declared (see the module docstring)."""

    name: str
    body: Callable[[StageContext], StageResult]
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    pending: Callable[[StageContext], DataFrame] | None = None
    llm: LLMDemand | None = None
    skip: Callable[[Config], str | None] = _never  # why this config skips the stage
    # a digest of what the stage reads or writes outside its tables (None: it cannot be
    # told, so the stage always runs): part of its fingerprint (graphgen_spark/settled.py)
    outside: Callable[[StageContext], str | None] = _tables_only

    def run(self, ctx: StageContext) -> StageResult:
        """Run the stage with its own scratch folder, removed however the stage ends; its
        Spark jobs are in the job group ``stage-<name>`` and named ``<name>`` (the LLM
        runner names its waves' jobs ``<name>: wave i/N``), so the Spark UI says which
        stage a job belongs to."""
        sc = ctx.spark.sparkContext
        sc.setJobGroup(f"stage-{self.name}", self.name)
        scratch = Scratch(ctx, self.name)
        try:
            return self.body(replace(ctx, scratch=scratch))
        finally:
            scratch.cleanup()
            sc.setLocalProperty("spark.jobGroup.id", None)
            sc.setJobDescription(None)
