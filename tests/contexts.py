"""The one way tests build a :class:`StageContext` (after GraphRAG's ``create_test_context``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from graphgen_spark.config import Config, build_config
from graphgen_spark.stages.base import StageContext
from graphgen_spark.tables import Tables


def stage_context(
    spark: SparkSession,
    tables: Tables | str | Path,
    cfg: Config | Mapping[str, Any] | None = None,
    *,
    run_id: str = "test",
    input_path: str | Path | None = None,
) -> StageContext:
    """A context on ``tables`` (or an output folder); ``cfg`` is a Config or the overrides
    for ``build_config`` (the environment is never read)."""
    if not isinstance(cfg, Config):
        cfg = build_config(dict(cfg or {}), env=False)
    if not isinstance(tables, Tables):
        tables = Tables(spark, tables)
    path = None if input_path is None else str(input_path)
    return StageContext(spark, cfg, tables, run_id, input_path=path)
