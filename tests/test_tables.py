"""The vocabulary of ``tables.py``: output layout and its locality rule, quarantine rows,
merge policies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from graphgen_spark.config import build_config
from graphgen_spark.pipeline import run_pipeline
from graphgen_spark.tables import (
    EXCERPT_CHARS,
    SCHEMAS,
    MergeResult,
    OutputLayout,
    RetryUntilOk,
    Tables,
    UpdateWhenChanged,
    as_quarantine,
    local_path,
)


@pytest.mark.parametrize(
    ("path", "local"),
    [
        ("/data/out", "/data/out"),
        ("out/run", "out/run"),
        ("/dbfs/mnt/out", "/dbfs/mnt/out"),  # Databricks' FUSE mount of dbfs:/
        ("file:/data/out", "/data/out"),
        ("file:///data/out", "/data/out"),
        ("dbfs:/mnt/out", None),
        ("s3a://bucket/out", None),
        ("abfss://c@acct.dfs.core.windows.net/out", None),
        ("gs://bucket/out", None),
        ("hdfs://nn:8020/out", None),
    ],
)
def test_one_rule_says_which_paths_are_local(path, local):
    assert local_path(path) == (None if local is None else Path(local))
    assert OutputLayout(path).is_local is (local is not None)


def test_layout_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plain = OutputLayout("out/")  # a plain path is resolved against the driver's folder
    assert plain.root == str(tmp_path.resolve() / "out")
    remote = OutputLayout("s3a://bucket/out/")  # a URI is kept, but for the trailing slash
    assert remote.root == "s3a://bucket/out"
    assert OutputLayout("file:/data/out").root == "file:/data/out"
    assert (remote.tables, remote.table("qa")) == (
        "s3a://bucket/out/tables",
        "s3a://bucket/out/tables/qa",
    )
    assert (remote.staging, remote.staged("quiz-1")) == (
        "s3a://bucket/out/_staging",
        "s3a://bucket/out/_staging/quiz-1",
    )
    assert remote.export == "s3a://bucket/out/export"
    assert remote.report == "s3a://bucket/out/report"
    assert remote.lease == "s3a://bucket/out/_lease.json"


def test_a_file_uri_output_gets_tables_and_a_report(spark, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a misread URI would land in a folder named file: here
    corpus = tmp_path / "in.jsonl"
    corpus.write_text(json.dumps({"text": "Bees make honey."}) + "\n", "utf-8")
    out = tmp_path / "out"
    cfg = build_config({}, env=False)
    run_pipeline(cfg, str(corpus), f"file:{out}", ["ingest"], spark=spark)
    assert (out / "report" / "index.html").is_file()
    assert Tables(spark, out).read("documents").count() == 1
    assert not (tmp_path / "file:").exists()


def test_quarantine_rows_have_the_table_columns_and_a_cut_excerpt(spark):
    df = spark.createDataFrame([("d1", "x" * 500), ("d2", None)], "id string, text string")
    rows = as_quarantine(
        df,
        "stage-x",
        "run-1",
        source="id",
        locator=F.lit("file"),
        reason=F.lit("r"),
        excerpt="text",
    )
    columns = [(f.name, f.dataType) for f in SCHEMAS["quarantine"].fields]
    assert [(f.name, f.dataType) for f in rows.schema.fields] == columns
    got = {r["source"]: r.asDict() for r in rows.collect()}
    assert got["d1"] == {
        "source": "d1",
        "locator": "file",
        "stage": "stage-x",
        "reason": "r",
        "detail": None,
        "excerpt": "x" * EXCERPT_CHARS,
        "run_id": "run-1",
    }
    assert got["d2"]["excerpt"] is None


def test_a_first_write_creates_the_table_with_its_schema_in_one_commit(spark, tables):
    """Every table created by its first write has exactly the declared schema; the rows
    count as inserted; later writes MERGE on the key."""
    for name, schema in SCHEMAS.items():
        assert tables.merge(name, spark.createDataFrame([], schema)) == MergeResult()
        assert tables.version(name) == 0, name
        assert tables.read(name).schema == schema, name
    extra = Tables(spark, tables.output_dir + "-rows")
    keyed = [{"content_hash": h, "status": "ok", "attempts": 1} for h in ("a", "b", "c")]
    first = spark.createDataFrame(keyed, SCHEMAS["extractions"])
    assert extra.merge("extractions", first) == MergeResult(inserted=3)
    assert extra.version("extractions") == 0
    again = spark.createDataFrame([*keyed, {"content_hash": "d"}], SCHEMAS["extractions"])
    assert extra.merge("extractions", again) == MergeResult(inserted=1)
    assert sorted(r[0] for r in extra.read("extractions").collect()) == ["a", "b", "c", "d"]


def test_retry_until_ok_keeps_the_ok_outcome_and_adds_up_attempts(spark, tables):
    policy = RetryUntilOk(summed=["attempts"])
    for status, records in [("failed", "a"), ("failed", "b"), ("ok", "c"), ("failed", "d")]:
        row = {"content_hash": "h", "status": status, "records": records, "attempts": 1}
        tables.merge("extractions", spark.createDataFrame([row], SCHEMAS["extractions"]), policy)
    got = tables.read("extractions").collect()
    assert [(r["status"], r["records"], r["attempts"]) for r in got] == [("ok", "c", 3)]


def test_update_when_changed_rewrites_only_changed_rows_and_replacing_deletes(spark, tables):
    def merge(rows, policy):
        scores = [{"element_id": e, "trainee_model": m, "loss": x} for e, m, x in rows]
        return tables.merge(
            "gap_scores", spark.createDataFrame(scores, SCHEMAS["gap_scores"]), policy
        )

    changed = UpdateWhenChanged(["loss"])
    merge([("e1", "m", 1.0), ("e2", "m", 2.0), ("e1", "other", 1.0)], changed)
    version = tables.version("gap_scores")
    assert merge([("e1", "m", 1.0)], changed) == MergeResult()
    assert tables.version("gap_scores") == version  # nothing changed: no commit
    assert merge([("e1", "m", 1.5)], changed) == MergeResult(updated=1)
    # the new rows are the whole slice trainee_model = m: e2 goes, the other model stays
    assert merge([("e1", "m", 1.5)], changed.replacing(trainee_model="m")) == MergeResult(deleted=1)
    got = {
        (r["element_id"], r["trainee_model"], r["loss"])
        for r in tables.read("gap_scores").collect()
    }
    assert got == {("e1", "m", 1.5), ("e1", "other", 1.0)}
