"""The stage object's contract: its scratch folder never outlives the stage, and a run
removes the scratch a killed run left (issue 14)."""

from __future__ import annotations

from pathlib import Path

import pytest
from contexts import stage_context
from test_partition import locally_checkpointed

from graphgen_spark.config import build_config
from graphgen_spark.errors import BudgetExceeded
from graphgen_spark.pipeline import NAMES, STAGES, run_pipeline
from graphgen_spark.stages.base import Stage, StageContext, StageResult


@pytest.mark.parametrize("error", [RuntimeError("boom"), BudgetExceeded("llm.max_cost")])
def test_scratch_is_removed_when_a_stage_fails(spark, tmp_path, error):
    seen: list[str] = []

    def body(ctx: StageContext) -> StageResult:
        ctx.scratch.in_files = True  # a cluster's way: parquet in the scratch folder
        ctx.scratch.materialise(ctx.spark.range(3))
        seen.append(ctx.scratch.path)
        assert Path(ctx.scratch.path).is_dir()
        raise error

    with pytest.raises(type(error)):
        Stage("probe", body, reads=(), writes=()).run(
            stage_context(spark, tmp_path, run_id="stage-test")
        )
    assert seen and not Path(seen[0]).exists()


def test_a_local_master_materialises_without_files(spark, tmp_path):
    def body(ctx: StageContext) -> StageResult:
        kept = ctx.scratch.materialise(ctx.spark.range(5))
        assert not ctx.scratch.in_files and sorted(r.id for r in kept.collect()) == [0, 1, 2, 3, 4]
        assert not Path(ctx.scratch.path).exists()
        return StageResult()

    before = locally_checkpointed(spark)
    Stage("probe", body, reads=(), writes=()).run(stage_context(spark, tmp_path, run_id="local"))
    assert locally_checkpointed(spark) <= before  # its blocks went with the stage


def test_scratch_outside_a_stage_is_an_error(spark, tmp_path):
    with pytest.raises(RuntimeError, match="Stage.run"):
        stage_context(spark, tmp_path, run_id="stage-test").scratch.materialise(spark.range(1))


def test_a_run_sweeps_what_a_killed_run_left(spark, tmp_path):
    out = tmp_path / "out"
    left = out / "_staging" / "extract-0123456789ab" / "step1"
    journal = out / "_staging" / "llm_calls" / "extract-0123456789ab.journal"
    left.mkdir(parents=True)
    journal.mkdir(parents=True)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("Lyra Venn mapped the Coldwater estuary in 1881.", "utf-8")
    run_pipeline(build_config({}, env=False), str(corpus), out, ["ingest"], spark=spark)
    assert not left.parent.exists() and journal.exists()


def test_the_pipeline_is_its_declared_stages():
    assert tuple(s.name for s in STAGES) == NAMES and len(set(NAMES)) == len(NAMES)
    produced = {"llm_calls"}
    for stage in STAGES:  # every table a stage reads is written by an earlier stage (or itself)
        assert set(stage.reads) <= produced | set(stage.writes), stage.name
        produced |= set(stage.writes)
