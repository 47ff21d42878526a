"""The partition stage on real Spark and Delta: the per-component engine reproduces the
sequential reference exactly, meets the §6.9 contract, and is incremental."""

from __future__ import annotations

import itertools

import networkx as nx
import pytest
from contexts import stage_context
from pyspark.sql import functions as F
from rows import merge_rows, row

from graphgen_spark.config import build_config
from graphgen_spark.graph.engines import GraphQueries
from graphgen_spark.ids import rr
from graphgen_spark.partition.contract import check_contract
from graphgen_spark.partition.engine import run_method
from graphgen_spark.partition.graph import Edge, Graph, Node
from graphgen_spark.partition.plan import config_hash, params_for
from graphgen_spark.pipeline import run_pipeline
from graphgen_spark.session import has_graphframes
from graphgen_spark.stages import partition as stage
from graphgen_spark.tables import Tables

# two components, a placeholder, an isolated entity; tokens and losses chosen by hand
NODES = {  # id: (tokens, loss, placeholder)
    "a": (10, 0.9, False),
    "b": (12, 0.2, False),
    "c": (8, None, False),
    "d": (20, 1.5, False),
    "e": (5, 0.1, False),
    "p": (0, None, True),
    "f": (7, 0.3, False),
    "g": (9, 0.8, False),
    "h": (11, None, False),
    "i": (6, 2.0, False),
}
EDGES = {  # (src, dst): (tokens, loss)
    ("a", "b"): (15, 0.7),
    ("b", "c"): (9, 2.1),
    ("c", "d"): (14, 0.4),
    ("b", "d"): (6, None),
    ("d", "e"): (10, 1.2),
    ("e", "p"): (4, 0.05),
    ("f", "g"): (13, 0.6),
    ("g", "h"): (8, 0.9),
}


def eid(pair: tuple[str, str]) -> str:
    return f"r-{pair[0]}{pair[1]}"


def write_graph(spark, tables, edges=EDGES):
    ents = [
        row(
            "entities",
            entity_id=v,
            key=v,
            name=v.upper(),
            type="UNKNOWN" if ph else "concept",
            description="" if ph else f"about {v}",
            n_tokens=tok,
            is_placeholder=ph,
        )
        for v, (tok, _, ph) in NODES.items()
    ]
    rels = [
        row(
            "relations",
            edge_id=eid(pair),
            src_id=pair[0],
            dst_id=pair[1],
            description=f"{pair[0]} relates to {pair[1]}",
            n_tokens=tok,
        )
        for pair, (tok, _) in edges.items()
    ]
    scores = [
        row(
            "gap_scores",
            element_id=uid,
            element_kind=kind,
            trainee_model="trainee-a",
            loss=loss,
            status="ok",
        )
        for uid, kind, loss in [(v, "entity", x[1]) for v, x in NODES.items()]
        + [(eid(p), "relation", x[1]) for p, x in edges.items()]
        if loss is not None
    ]
    merge_rows(tables, "entities", ents)
    merge_rows(tables, "relations", rels)
    merge_rows(tables, "gap_scores", scores)


def reference_graph(edges=EDGES) -> Graph:
    return Graph(
        [Node(v, tok, loss, rr(42, v), v.upper(), ph) for v, (tok, loss, ph) in NODES.items()],
        [Edge(eid(p), p[0], p[1], tok, loss, rr(42, eid(p))) for p, (tok, loss) in edges.items()],
    )


def make_cfg(**extra):
    data = {
        "llm": {"trainee": {"model": "trainee-a"}},
        "generate": {"modes": ["aggregated", "atomic", "multiple_choice", "cot"]},
        "partition": {"unit": {"min_units": 2, "max_units": 4}, "community": {"max_size": 3}},
    }
    for k, v in extra.items():
        data[k] = {**data.get(k, {}), **v}
    return build_config(data, env=False)


def locally_checkpointed(spark) -> set[int]:
    """Ids of the RDDs Spark holds as ``localCheckpoint`` blocks: those die with their
    executor and fail the job, so a stage must leave none (it writes to its scratch)."""
    rdds = spark.sparkContext._jsc.sc().getPersistentRDDs().values().iterator()
    out = set()
    while rdds.hasNext():
        rdd = rdds.next()
        if rdd.isLocallyCheckpointed():
            out.add(rdd.id())
    return out


def run_stage(spark, tables, cfg, run_id="p-1"):
    return stage.STAGE.run(stage_context(spark, tables, cfg, run_id=run_id))


def stored(tables, method):
    rows = tables.read("subgraphs").filter(F.col("method") == method).collect()
    return {r["seed_id"]: r for r in rows}


def as_tuple(b):
    return (b.seed_id, tuple(b.node_ids), tuple(b.edge_ids), b.n_units, b.tokens, tuple(b.flags))


@pytest.fixture(scope="module")
def partitioned(spark, tmp_path_factory):
    tables = Tables(spark, tmp_path_factory.mktemp("partition_out"))
    write_graph(spark, tables)
    cfg = make_cfg(
        generate={"modes": ["aggregated", "atomic", "multiple_choice", "cot", "multi_hop"]}
    )
    cfg = cfg.model_copy(
        update={"generate": cfg.generate.model_copy(update={"methods": {"multi_hop": "triple"}})}
    )
    before = locally_checkpointed(spark)
    result = run_stage(spark, tables, cfg)
    assert locally_checkpointed(spark) <= before  # every intermediate went to the scratch
    return tables, cfg, result


@pytest.fixture
def edge_seed_only(spark, tables):
    write_graph(spark, tables)
    cfg = make_cfg(generate={"modes": ["aggregated"]})
    run_stage(spark, tables, cfg)
    return tables, cfg


@pytest.mark.parametrize("method", ["ece/edge_seed", "unit", "ece/unit", "community", "triple"])
def test_engine_reproduces_the_sequential_reference(partitioned, method):
    tables, cfg, _ = partitioned
    params = params_for(cfg)
    expected = run_method(reference_graph(), method, params, 3, 42)
    rows = stored(tables, method)
    assert {as_tuple(b) for b in expected.batches} == {as_tuple(r) for r in rows.values()}
    for b in expected.batches:
        r = rows[b.seed_id]
        assert r["loss"] == pytest.approx(b.loss) if b.loss is not None else r["loss"] is None
    if method != "community":
        assert check_contract(reference_graph(), list(rows.values()), method, params) == []


def test_edge_seed_batches_by_hand(partitioned):
    """max_loss order of relations: bc 2.1, de 1.2, gh 0.9, ab 0.7, fg 0.6, cd 0.4, ep 0.05, bd."""
    tables, _, result = partitioned
    rows = stored(tables, "ece/edge_seed")
    assert [tuple(rows["r-bc"]["edge_ids"]), tuple(rows["r-bc"]["node_ids"])] == [
        ("r-bc", "r-ab", "r-cd"),  # seed + two best untaken relations touching b or c
        ("b", "c", "a", "d"),
    ]
    assert tuple(rows["r-de"]["edge_ids"]) == ("r-de", "r-ep", "r-bd")
    assert tuple(rows["r-gh"]["edge_ids"]) == ("r-gh", "r-fg")
    assert set(rows) == {"r-bc", "r-de", "r-gh"}  # every relation exactly once
    assert rows["r-bc"]["seed_rank"] < rows["r-de"]["seed_rank"] < rows["r-gh"]["seed_rank"]
    assert result.counts["ece_edge_seed_batches"] == 3
    # loss terciles over the 3 batch losses: q1 = 2nd smallest, q2 = 3rd
    tiers = {s: r["difficulty"] for s, r in rows.items()}
    losses = sorted(rows, key=lambda s: rows[s]["loss"])
    assert [tiers[s] for s in losses] == [0, 1, 2]


def test_community_batches_are_connected_and_small(partitioned):
    tables, _, _ = partitioned
    g = reference_graph()
    for r in stored(tables, "community").values():
        assert len(r["edge_ids"]) >= 1 and len(r["node_ids"]) <= 3
        assert all(set(g.endpoints(e)) <= set(r["node_ids"]) for e in r["edge_ids"])
        assert nx.is_connected(g.nx.subgraph(r["node_ids"]))


def test_rerun_writes_nothing(spark, edge_seed_only):
    tables, cfg = edge_seed_only
    before = tables.version("subgraphs")
    result = run_stage(spark, tables, cfg, run_id="p-2")
    assert tables.version("subgraphs") == before
    assert result.counts["subgraphs_written"] == 0


def test_changed_graph_updates_only_touched_batches(spark, edge_seed_only):
    tables, cfg = edge_seed_only
    grown = {**EDGES, ("c", "e"): (3, 3.0)}  # a new, worst-known relation in component 1
    write_graph(spark, tables, grown)
    run_stage(spark, tables, cfg, run_id="p-3")
    rows = stored(tables, "ece/edge_seed")
    expected = run_method(reference_graph(grown), "ece/edge_seed", params_for(cfg), 3, 42)
    assert {as_tuple(b) for b in expected.batches} == {as_tuple(r) for r in rows.values()}
    assert rows["r-gh"]["run_id"] == "p-1"  # the other component's batch was not rewritten
    assert rows["r-ce"]["run_id"] == "p-3"
    assert "r-bc" not in rows or rows["r-bc"]["run_id"] == "p-3"


def test_gap_scoring_off_orders_by_rr(spark, tables):
    write_graph(spark, tables)
    cfg = make_cfg(generate={"modes": ["aggregated"]})
    off = build_config(
        {**cfg.model_dump(mode="json", by_alias=True), "gap_scoring": "off"}, env=False
    )
    assert off.sampling() == "random"
    run_stage(spark, tables, off)
    rows = stored(tables, "ece/edge_seed")
    graph = reference_graph()
    expected = run_method(graph, "ece/edge_seed", params_for(off), 3, 42)
    assert {as_tuple(b) for b in expected.batches} == {as_tuple(r) for r in rows.values()}
    assert config_hash(off, "ece/edge_seed") != config_hash(cfg, "ece/edge_seed")


def brute_force_paths(edges):
    adj: dict[str, list[tuple[str, str]]] = {}
    for a, b in edges:
        adj.setdefault(a, []).append((eid((a, b)), b))
        adj.setdefault(b, []).append((eid((a, b)), a))
    return {
        (a, e1, b, e2, c)
        for b, nbrs in adj.items()
        for (e1, a), (e2, c) in itertools.permutations(nbrs, 2)
        if a != c
    }


@pytest.mark.parametrize("engine", ["dataframe", "graphframes"])
def test_two_hop_motif_equals_brute_force(spark, tables, engine):
    if engine == "graphframes" and not has_graphframes(spark):
        pytest.skip("GraphFrames jar not on the classpath (see make setup)")
    write_graph(spark, tables)
    e = tables.read("relations").select(
        F.col("src_id").alias("src"), F.col("dst_id").alias("dst"), "edge_id"
    )
    v = tables.read("entities").select(F.col("entity_id").alias("id"))
    queries = GraphQueries(spark, engine, str(tables.output_dir) + "/ck")
    paths = queries.two_hop_paths(v, e)
    assert queries.used["two_hop_paths"] == engine
    got = {tuple(r) for r in paths.select("a", "e1", "b", "e2", "c").collect()}
    assert got == brute_force_paths(EDGES)


def test_triple_and_quintuple_against_brute_force(spark, tables):
    write_graph(spark, tables)
    cfg = make_cfg(generate={"modes": ["multi_hop", "aggregated"]})
    cfg = cfg.model_copy(
        update={
            "generate": cfg.generate.model_copy(
                update={"methods": {"multi_hop": "triple", "aggregated": "quintuple"}}
            )
        }
    )
    run_stage(spark, tables, cfg)
    triples = stored(tables, "triple")
    assert {tuple(r["edge_ids"]) for r in triples.values()} == {(eid(p),) for p in EDGES}
    for r in triples.values():
        (e,) = r["edge_ids"]
        assert sorted(r["node_ids"]) == sorted(e[2:])
    paths = brute_force_paths(EDGES)
    used: list[str] = []
    for r in stored(tables, "quintuple").values():
        v1, u, v2 = r["node_ids"]
        e1, e2 = r["edge_ids"]
        assert (v1, e1, u, e2, v2) in paths
        used += [e1, e2]
    assert len(used) == len(set(used))  # every relation in at most one quintuple


def test_report_says_when_gap_scoring_is_off(spark, tmp_path):
    tables = Tables(spark, tmp_path / "out")
    write_graph(spark, tables)
    data = make_cfg(generate={"modes": ["aggregated"]}).model_dump(mode="json", by_alias=True)
    off = build_config({**data, "gap_scoring": False}, env=False)
    run_pipeline(off, None, tmp_path / "out", ["partition"], spark=spark)
    page = (tmp_path / "out" / "report" / "index.html").read_text("utf-8")
    assert "Gap scoring was <b>off</b>" in page and "<b>random</b>" in page
    assert "ece/edge_seed" in page  # the batches table names the method
