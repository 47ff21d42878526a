"""A rerun skips the stages whose fingerprint still holds, and only those.

Real runs of the free stages (ingest, chunk) on a copy of the demo corpus: a stage is
skipped while its input files, its tables' Delta versions and the config that shapes its
rows are what they were when it settled; the endpoint's address is not part of that."""

from __future__ import annotations

import shutil

from contexts import CORPUS

from graphgen_spark.config import build_config
from graphgen_spark.pipeline import run_pipeline
from graphgen_spark.settled import is_settled, results_hash
from graphgen_spark.stages.base import StageResult
from graphgen_spark.tables import Tables

STAGES = ["ingest", "chunk"]


def _statuses(tables: Tables, run_id: str) -> dict[str, str]:
    run = tables.read("runs").filter(f"run_id = '{run_id}'").first()
    return {s["stage"]: s["status"] for s in run["stage_stats"]}


def _versions(tables: Tables) -> dict[str, int]:
    return {n: tables.version(n) for n in ("documents", "chunks", "quarantine")}


def test_a_rerun_skips_what_nothing_changed_for(spark, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    out = tmp_path / "out"
    tables = Tables(spark, out)
    conf = {"spark": {"master": "local[2]", "shuffle_partitions": 4}}

    def run(**overrides) -> dict[str, str]:
        cfg = build_config({**conf, **overrides}, env=False)
        return _statuses(tables, run_pipeline(cfg, str(corpus), out, STAGES, spark=spark))

    assert run() == {"ingest": "ok", "chunk": "ok"}
    before = _versions(tables)
    assert run() == {"ingest": "unchanged", "chunk": "unchanged"}
    assert _versions(tables) == before  # nothing was written
    # the endpoint's address, limits and prices do not shape rows
    moved = {"synthesizer": {"base_url": "http://127.0.0.1:9/v1", "price_prompt_per_1m": 3}}
    assert run(llm=moved, run={"max_cost": 5.0}) == {"ingest": "unchanged", "chunk": "unchanged"}
    # a config key that shapes rows: every stage runs again (the whole config is one part
    # of each fingerprint: no stage can be skipped on a key it might read)
    assert run(chunk={"size": 512}) == {"ingest": "ok", "chunk": "ok"}
    assert run(chunk={"size": 512}) == {"ingest": "unchanged", "chunk": "unchanged"}
    # a new input file: ingest reads again, and chunk sees a new documents version
    (corpus / "new.md").write_text("# Rice\n\nRice is a cereal grown in flooded paddies.\n")
    assert run(chunk={"size": 512}) == {"ingest": "ok", "chunk": "ok"}
    assert tables.read("documents").filter("source LIKE '%new.md'").count() == 1
    assert run(chunk={"size": 512}, run={"skip_settled": False}) == {"ingest": "ok", "chunk": "ok"}
    # a table changed by someone else: the stages that touch it run again
    tables.delete_keys("chunks", tables.read("chunks").limit(1))
    assert run(chunk={"size": 512}) == {"ingest": "unchanged", "chunk": "ok"}


def test_a_stage_with_work_left_does_not_settle():
    assert is_settled(StageResult({"llm_ok": 3, "quarantined": 2}))
    for left in ("llm_failed", "llm_invalid", "llm_skipped", "llm_program_errors"):
        assert not is_settled(StageResult({"llm_ok": 3, left: 1}))


def test_retrying_given_up_requests_shapes_results():
    base = build_config({}, env=False)
    retry = build_config({"llm": {"retry_given_up": True}}, env=False)
    waves = build_config({"llm": {"wave_seconds": 5, "concurrency_per_task": 2}}, env=False)
    assert results_hash(base) != results_hash(retry)
    assert results_hash(base) == results_hash(waves)
