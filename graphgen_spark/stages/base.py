"""What every stage receives and returns.

A stage is a function ``run(ctx) -> StageResult``: it reads its input tables with Spark,
transforms them with DataFrame operations (LLM calls only through :mod:`graphgen_spark.llm`)
and MERGEs its output into its Delta table. The driver never collects a corpus-sized set.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession

from graphgen_spark.config import Config
from graphgen_spark.llm.work import ExecutionSummary
from graphgen_spark.tables import Tables


@dataclass
class StageContext:
    spark: SparkSession
    cfg: Config
    tables: Tables
    run_id: str
    input_path: str | None = None
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("graphgen_spark"))


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
    """A stage's private staging folder under ``DIR/_staging``.

    ``materialise`` writes a DataFrame once and reads it back, so anything derived from LLM
    answers is never re-evaluated (method.md §1 rule 2; the Spark form of GraphGen #141).
    """

    def __init__(self, ctx: StageContext, name: str) -> None:
        self.spark = ctx.spark
        self.path = ctx.tables.layout.staged(f"{name}-{uuid.uuid4().hex[:12]}")
        self.step = 0

    def materialise(self, df: DataFrame) -> DataFrame:
        self.step += 1
        path = f"{self.path}/step{self.step}"
        df.write.mode("overwrite").parquet(path)
        return self.spark.read.parquet(path)

    def cleanup(self) -> None:
        from graphgen_spark import fsutil

        fsutil.delete(self.spark, self.path)
