"""What every stage receives and returns.

A stage is a function ``run(ctx) -> StageResult``: it reads its input tables with Spark,
transforms them with DataFrame operations (LLM calls only through :mod:`graphgen_spark.llm`)
and MERGEs its output into its Delta table. The driver never collects a corpus-sized set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from pyspark.sql import SparkSession

from graphgen_spark.config import Config
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

    def add(self, other: StageResult) -> StageResult:
        for k, v in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + v
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost += other.cost
        return self
