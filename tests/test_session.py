"""The real stack works together: Delta through the session builder, GraphFrames when present."""

from __future__ import annotations

import pytest
from rows import merge_rows, row

from graphgen_spark.jars import coordinates
from graphgen_spark.session import has_graphframes, require_graphframes


def test_delta_round_trip_through_the_session(spark, tables):
    df = spark.createDataFrame(
        [("r1", "synthesizer", "ok")], "request_id string, role string, status string"
    )
    full = df.selectExpr(
        "request_id",
        "'t' as stage",
        "role",
        "'m' as model",
        "null as base_url",
        "'[]' as messages",
        "'{}' as params",
        "null as response_model",
        "status",
        "null as response",
        "null as parsed",
        "null as logprobs",
        "null as error",
        "null as error_kind",
        "1 as attempts",
        "0L as prompt_tokens",
        "0L as completion_tokens",
        "0.0 as latency_ms",
        "0.0 as cost",
        "'run' as run_id",
        "current_timestamp() as updated_at",
        "null as conversation",
    )
    assert tables.merge("llm_calls", full).inserted == 1
    assert tables.merge("llm_calls", full).inserted == 0  # keyed MERGE: a rerun adds nothing
    assert tables.read("llm_calls").count() == 1
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{tables.location('llm_calls')}`").first()
    assert detail["format"] == "delta"


def test_graphframes_query_through_the_session_builder(spark, tmp_path):
    if not has_graphframes(spark):
        with pytest.raises(RuntimeError, match=coordinates()["graphframes"]):
            require_graphframes(spark)
        pytest.skip(
            f"GraphFrames jar {coordinates()['graphframes']} could not be resolved from Maven "
            "Central on this machine (make setup printed why)"
        )
    from graphframes import GraphFrame

    v = spark.createDataFrame([("a",), ("b",), ("c",), ("d",)], ["id"])
    e = spark.createDataFrame([("a", "b"), ("b", "c")], ["src", "dst"])
    spark.sparkContext.setCheckpointDir(str(tmp_path / "checkpoints"))
    g = GraphFrame(v, e)
    comps = {r["id"]: r["component"] for r in g.connectedComponents().collect()}
    assert comps["a"] == comps["b"] == comps["c"] != comps["d"]
    paths = g.find("(x)-[]->(y); (y)-[]->(z)").collect()
    assert [(p["x"]["id"], p["y"]["id"], p["z"]["id"]) for p in paths] == [("a", "b", "c")]


def test_concurrent_merges_into_one_table_all_land(spark, tables, caplog):
    """Three threads MERGE into one Delta table at once, the first writes racing to create
    it: Delta rejects the commits that lose the race (a MERGE reads the whole target) and
    ``Tables.merge`` repeats them, so every row lands and nothing raises."""
    import logging
    from concurrent.futures import ThreadPoolExecutor

    def write(worker: int) -> None:
        for i in range(4):
            merge_rows(
                tables,
                "quarantine",
                [row("quarantine", **_quarantine_key(worker, i, c)) for c in range(3)],
            )

    with caplog.at_level(logging.WARNING, logger="graphgen_spark"), ThreadPoolExecutor(3) as pool:
        list(pool.map(write, range(3)))
    assert tables.read("quarantine").count() == 3 * 4 * 3
    assert any("write conflict" in r.getMessage() for r in caplog.records)


def _quarantine_key(worker: int, i: int, c: int) -> dict:
    from graphgen_spark.tables import KEYS

    return {k: f"w{worker}-m{i}-r{c}-{k}" for k in KEYS["quarantine"]}
