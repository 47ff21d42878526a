"""Shared fixtures: one real local Spark session (Delta + GraphFrames when cached) per run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from graphgen_spark.config import build_config
from graphgen_spark.session import build_session
from graphgen_spark.tables import Tables

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# Tests never reach a real endpoint by accident.
for var in ("SYNTHESIZER_BASE_URL", "SYNTHESIZER_API_KEY", "TRAINEE_BASE_URL", "TRAINEE_API_KEY"):
    os.environ.pop(var, None)


@pytest.fixture(scope="session")
def spark():
    cfg = build_config({"spark": {"master": "local[2]", "shuffle_partitions": 4}}, env=False)
    session = build_session(
        cfg,
        extra_conf={
            "spark.ui.enabled": "false",
            "spark.driver.memory": "4g",  # one session serves the whole suite
            # ...and runs thousands of queries: keep the status of few (each holds its plan)
            "spark.sql.ui.retainedExecutions": "50",
            "spark.ui.retainedJobs": "100",
            "spark.ui.retainedStages": "100",
            "spark.databricks.delta.snapshotPartitions": "2",
            "spark.sql.sources.parallelPartitionDiscovery.parallelism": "2",
        },
    )
    yield session
    session.stop()


@pytest.fixture
def tables(spark, tmp_path) -> Tables:
    return Tables(spark, tmp_path / "out")


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"shared sample data not found at {SHARED_DATA}")
    return SHARED_DATA
