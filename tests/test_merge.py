"""Merge rules on hand-made mentions, with exact expected rows (method.md §4)."""

from __future__ import annotations

import pytest
from contexts import stage_context
from rows import chunk_row, merge_rows, row

from graphgen_spark.config import build_config
from graphgen_spark.ids import h
from graphgen_spark.pipeline import run_pipeline
from graphgen_spark.stages.merge import STAGE as MERGE
from graphgen_spark.standin import StandinOptions, StandinServer

GRAPH_STAGES = ["ingest", "chunk", "extract", "merge"]
LONG = "Apis mellifera workers forage for nectar and pollen across many kilometres of land. "


def chunk(cid, doc):
    return chunk_row(cid, doc, cid, n_tokens=1)


def mentioned_in(cid: str) -> dict[str, str]:
    """The columns naming the chunk a mention was read from (its text is its id)."""
    return {"chunk_id": cid, "content_hash": h(cid)}


def em(cid, key, display, etype, desc):
    return row(
        "entity_mentions",
        **mentioned_in(cid),
        key=key,
        display=display,
        type=etype,
        description=desc,
    )


def rm(cid, a, b, da, db, desc, dangling=False):
    return row(
        "relation_mentions",
        **mentioned_in(cid),
        src_key=a,
        dst_key=b,
        src_display=da,
        dst_display=db,
        description=desc,
        dangling=dangling,
    )


@pytest.fixture
def graph_tables(spark, tables):
    merge_rows(tables, "chunks", [chunk("c1", "d1"), chunk("c2", "d1"), chunk("c3", "d2")])
    merge_rows(
        tables,
        "entity_mentions",
        [
            em("c1", "apis mellifera", "Apis mellifera", "person", "A honeybee."),
            em("c2", "apis mellifera", "Apis mellifera", "concept", "a honeybee."),
            em("c3", "apis mellifera", "apis mellifera", "nature", "  Kept for honey.  "),
            em("c3", "apis mellifera", "Apis mellifera", "concept", ""),
            em(
                "c1",
                "karl von frisch",
                "Karl von Frisch",
                "person",
                "Decoded the waggle dance.",
            ),
            em("c2", "queen", "Queen", "concept", LONG * 6),
            em("c3", "queen", "Queen", "concept", "The queen lays eggs."),
            em("c3", "drone", "Drone", "nature", "A male bee."),
        ],
    )
    merge_rows(
        tables,
        "relation_mentions",
        [
            rm(
                "c1",
                "apis mellifera",
                "karl von frisch",
                "Apis mellifera",
                "Karl von Frisch",
                "Studied by him.",
            ),
            rm(
                "c3",
                "apis mellifera",
                "karl von frisch",
                "apis mellifera",
                "Karl von Frisch",
                "studied by him.",
            ),
            rm(
                "c2",
                "apis mellifera",
                "varroa",
                "Apis mellifera",
                "Varroa",
                "Parasitised by the mite.",
                True,
            ),
        ],
    )
    return tables


def ctx_for(spark, tables, server, **merge):
    cfg = {
        "merge": {"summary_threshold": 60, **merge},
        "llm": {
            "backoff_min_s": 0.01,
            "backoff_max_s": 0.05,
            "synthesizer": {"base_url": server.base_url, "model": "standin"},
        },
    }
    return stage_context(spark, tables, cfg, run_id="merge-test")


def by_key(tables, name, key):
    return {r[key]: r.asDict() for r in tables.read(name).collect()}


def test_merge_rules_give_exact_rows(spark, graph_tables):
    tables = graph_tables
    with StandinServer(StandinOptions(), announce=False) as server:
        result = MERGE.run(ctx_for(spark, tables, server))
        summary_calls = server.stats()["completions_ok"]
    ents = {r["key"]: r for r in by_key(tables, "entities", "entity_id").values()}
    bee = ents["apis mellifera"]
    assert bee["entity_id"] == h("apis mellifera")
    assert bee["type"] == "concept"  # 2 concept vs 1 person, 1 nature
    assert bee["name"] == "Apis mellifera"  # 3 of 4 mentions
    # de-duplicated by casefold keeping the lexically smallest original, sorted, empties dropped
    assert bee["descriptions"] == ["A honeybee.", "Kept for honey."]
    assert bee["description"] == "A honeybee.\nKept for honey."
    assert bee["summarised"] is False and bee["n_mentions"] == 4
    assert bee["chunk_ids"] == ["c1", "c2", "c3"] and bee["doc_ids"] == ["d1", "d2"]
    # a tie in the type vote goes to the lexically smallest type
    assert ents["drone"]["type"] == "nature"

    # only the long description is summarised, by exactly one call
    queen = ents["queen"]
    assert queen["summarised"] is True and queen["summary_levels"] == 1
    assert queen["description"] not in queen["descriptions"] and queen["description"]
    assert summary_calls == 1 and result.counts["llm_sent"] == 1

    # the endpoint without any entity mention becomes a placeholder with its relation's lineage
    mite = ents["varroa"]
    assert (mite["type"], mite["is_placeholder"], mite["description"], mite["n_tokens"]) == (
        "UNKNOWN",
        True,
        "",
        0,
    )
    assert mite["name"] == "Varroa" and mite["chunk_ids"] == ["c2"] and mite["doc_ids"] == ["d1"]

    # undirected: both mentions of the pair are one edge keyed by the sorted ids
    rels = by_key(tables, "relations", "edge_id")
    assert len(rels) == 2
    a, b = sorted([h("apis mellifera"), h("karl von frisch")])
    edge = rels[h(a, b)]
    assert (edge["src_id"], edge["dst_id"]) == (a, b) and a < b
    assert edge["descriptions"] == ["Studied by him."] and edge["n_mentions"] == 2
    assert edge["chunk_ids"] == ["c1", "c3"] and edge["doc_ids"] == ["d1", "d2"]
    assert {edge["src_name"], edge["dst_name"]} == {"Apis mellifera", "Karl von Frisch"}

    stats = tables.read("graph_stats").first()
    assert (stats["vertices"], stats["edges"], stats["placeholders"]) == (5, 2, 1)
    assert (stats["components"], stats["isolated"], stats["missing_endpoints"]) == (3, 2, 0)
    assert stats["degree_histogram"] == {0: 2, 1: 2, 2: 1}
    assert stats["component_sizes"] == {1: 2, 3: 1}


def test_rerun_rewrites_nothing_and_new_mentions_touch_only_their_rows(spark, graph_tables):
    tables = graph_tables
    with StandinServer(StandinOptions(), announce=False) as server:
        MERGE.run(ctx_for(spark, tables, server))
        before = by_key(tables, "entities", "entity_id")
        calls = server.stats()["requests_total"]
        again = MERGE.run(ctx_for(spark, tables, server))
        assert server.stats()["requests_total"] == calls  # the summary is cached
        assert again.counts["entities_inserted"] == again.counts["entities_updated"] == 0
        assert again.counts["relations_inserted"] == again.counts["relations_updated"] == 0

        merge_rows(tables, "chunks", [chunk("c4", "d3")])
        merge_rows(
            tables,
            "entity_mentions",
            [em("c4", "drone", "Drone", "nature", "Drones die after mating.")],
        )
        third = MERGE.run(ctx_for(spark, tables, server))
    assert third.counts["entities_updated"] == 1 and third.counts["entities_inserted"] == 0
    after = by_key(tables, "entities", "entity_id")
    changed = [k for k in after if after[k] != before[k]]
    assert changed == [h("drone")]
    assert after[h("drone")]["doc_ids"] == ["d2", "d3"]


def test_drop_policy_quarantines_relations_with_unknown_endpoints(spark, graph_tables):
    tables = graph_tables
    with StandinServer(StandinOptions(), announce=False) as server:
        result = MERGE.run(ctx_for(spark, tables, server, unknown_endpoints="drop"))
    assert result.counts["quarantined_unknown_endpoint"] == 1
    assert h("varroa") not in by_key(tables, "entities", "entity_id")
    assert len(by_key(tables, "relations", "edge_id")) == 1
    q = tables.read("quarantine").filter("reason = 'unknown_endpoint'").first()
    assert q["stage"] == "merge" and "varroa" in q["locator"]


def test_long_inputs_are_summarised_in_groups_never_truncated(spark, tables):
    descs = [(f"Fact {i}: " + LONG * 2).strip() for i in range(12)]
    merge_rows(tables, "chunks", [chunk(f"k{i}", "d") for i in range(12)])
    merge_rows(
        tables,
        "entity_mentions",
        [em(f"k{i}", "hive", "Hive", "artificial", d) for i, d in enumerate(descs)],
    )
    with StandinServer(StandinOptions(), announce=False) as server:
        run_ctx = ctx_for(spark, tables, server, summary_max_input=200)
        MERGE.run(run_ctx)
        calls = server.stats()["completions_ok"]
    hive = tables.read("entities").first()
    assert hive["summarised"] is True and hive["summary_levels"] >= 2
    assert len(hive["descriptions"]) == 12  # every input description is kept in the row
    assert calls >= 3  # several groups, then their summaries
    merged_inputs = [r["messages"] for r in tables.read("llm_calls").collect()]
    for d in descs:  # each description reached some summary request whole
        assert any(d in m for m in merged_inputs)


def test_pipeline_runs_extract_and_merge_end_to_end(spark, tmp_path):
    with StandinServer(StandinOptions(), announce=False) as server:
        cfg = build_config(
            {
                "llm": {"synthesizer": {"base_url": server.base_url, "model": "standin"}},
                "spark": {"shuffle_partitions": 4},
            },
            env=False,
        )
        from graphgen_spark.config import ROOT

        run_pipeline(
            cfg, str(ROOT / "examples" / "corpus"), tmp_path / "out", GRAPH_STAGES, spark=spark
        )
        from graphgen_spark.tables import Tables

        t = Tables(spark, tmp_path / "out")
        stats = t.read("graph_stats").first()
        assert stats["vertices"] == t.read("entities").count() > 10
        assert stats["edges"] == t.read("relations").count() > 5
        assert stats["missing_endpoints"] == 0
        run = t.read("runs").first()
        assert run["status"] == "ok"
        assert [s["stage"] for s in run["stage_stats"]] == ["ingest", "chunk", "extract", "merge"]


def test_new_documents_extract_only_new_texts_and_touch_only_their_rows(spark, tmp_path):
    from graphgen_spark.config import ROOT
    from graphgen_spark.tables import Tables

    corpus = ROOT / "examples" / "corpus"
    first = tmp_path / "first"
    first.mkdir()
    (first / "printing.md").write_text(
        (corpus / "printing.md").read_text(encoding="utf-8"), encoding="utf-8"
    )
    out = tmp_path / "out"
    with StandinServer(StandinOptions(), announce=False) as server:
        cfg = build_config(
            {
                "llm": {"synthesizer": {"base_url": server.base_url, "model": "standin"}},
                "spark": {"shuffle_partitions": 4},
            },
            env=False,
        )
        run_pipeline(cfg, str(first), out, GRAPH_STAGES, spark=spark)
        t = Tables(spark, out)
        before = {r["entity_id"]: r.asDict() for r in t.read("entities").collect()}
        versions = t.version("entities")
        sent_first = server.stats()["requests_total"]

        # nothing new: zero LLM calls, no table version moves
        run_pipeline(cfg, str(first), out, GRAPH_STAGES, spark=spark)
        assert server.stats()["requests_total"] == sent_first
        assert t.version("entities") == versions

        # one more file: only its chunk texts are extracted
        (first / "printing_zh.txt").write_text(
            (corpus / "printing_zh.txt").read_text(encoding="utf-8"), encoding="utf-8"
        )
        run_pipeline(cfg, str(first), out, GRAPH_STAGES, spark=spark)
        runs = sorted(t.read("runs").collect(), key=lambda r: r["started_at"])
        extract = next(s for s in runs[-1]["stage_stats"] if s["stage"] == "extract")
        new_texts = (
            t.read("chunks")
            .join(t.read("documents").filter("source like '%printing_zh.txt'"), "doc_id")
            .select("content_hash")
            .distinct()
            .count()
        )
        assert extract["counts"]["texts_to_extract"] == new_texts > 0
        assert server.stats()["requests_total"] > sent_first
    after = {r["entity_id"]: r.asDict() for r in t.read("entities").collect()}
    unchanged = [k for k in before if after[k] == before[k]]
    # the new Chinese text shares no entity with the English one: every old row is untouched
    assert len(unchanged) == len(before) and len(after) > len(before)
