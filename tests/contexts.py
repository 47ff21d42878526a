"""The one way tests build a :class:`StageContext` (after GraphRAG's ``create_test_context``),
and the ``llm`` settings that point a whole run at the stand-in endpoint."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

from graphgen_spark.config import ROOT, Config, build_config
from graphgen_spark.stages.base import Scratch, StageContext
from graphgen_spark.tables import Tables

CORPUS = ROOT / "examples" / "corpus"  # the bundled demo corpus


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


@contextmanager
def with_scratch(ctx: StageContext) -> Iterator[StageContext]:
    """``ctx`` with a scratch folder, as ``Stage.run`` gives a stage's body (to test one of
    its steps alone); the folder and checkpoints are removed after."""
    scratch = Scratch(ctx, "test")
    try:
        yield replace(ctx, scratch=scratch)
    finally:
        scratch.cleanup()


def llm_conf(url: str) -> dict:
    """``llm`` settings with the stand-in at ``url`` as synthesizer and trainee, fast backoff."""
    return {
        "synthesizer": {"base_url": url, "model": "standin"},
        "trainee": {"base_url": url, "model": "standin"},
        "concurrency_per_task": 4,
        "backoff_min_s": 0.01,
        "backoff_max_s": 0.05,
    }
