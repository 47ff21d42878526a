"""The claim engine of method §6.9 on real local Spark: it meets the contract for
`ece/edge_seed`, each batch is its seed's sequential expansion at the point it was accepted,
it is deterministic, and the stage routes giant components to it.

Spark rounds cost the same for one graph or twenty, so the hand-made graphs run together
(ids prefixed, one component each) and so do the random ones.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

import networkx as nx
import pytest
from pyspark.sql import functions as F
from test_partition import make_cfg, reference_graph, run_stage, stored, write_graph
from test_partition_reference import e, islands, n, path, star, triangle_tail

from graphgen_spark.config import ConfigError, build_config
from graphgen_spark.ids import h
from graphgen_spark.partition.claim import Claim, unsupported
from graphgen_spark.partition.compare import batch_stats, compare
from graphgen_spark.partition.contract import check_contract
from graphgen_spark.partition.distributed import global_position, rank_units
from graphgen_spark.partition.graph import Edge, Graph, Node, unit_rr
from graphgen_spark.partition.plan import PartitionPlan, config_hash, params_for
from graphgen_spark.partition.reference import EDGE_SEED, Params, _expand_width, partition
from graphgen_spark.tables import Tables

NODE_SCHEMA = (
    "component_id string, entity_id string, tokens int, loss double, rr string, name string, "
    "is_placeholder boolean, type string"
)
EDGE_SCHEMA = (
    "component_id string, edge_id string, src_id string, dst_id string, tokens int, "
    "loss double, rr string"
)


# ---------------------------------------------------------------- helpers


def rename(graph: Graph, prefix: str) -> Graph:
    """The same graph with every id prefixed (``rr`` kept, so the order is unchanged)."""
    return Graph(
        [replace(x, entity_id=prefix + x.entity_id) for x in graph.nodes.values()],
        [
            replace(
                x, edge_id=prefix + x.edge_id, src_id=prefix + x.src_id, dst_id=prefix + x.dst_id
            )
            for x in graph.edges.values()
        ],
    )


def union(*graphs: Graph) -> Graph:
    return Graph(
        [x for g in graphs for x in g.nodes.values()], [x for g in graphs for x in g.edges.values()]
    )


def frames(spark, graph: Graph, partitions: int | None = None):
    component = {v: min(c) for c in nx.connected_components(graph.nx) for v in c}
    nodes = spark.createDataFrame(
        [
            (component[x.entity_id], x.entity_id, x.tokens, x.loss, x.rr, x.name)
            + (x.is_placeholder, x.type)
            for x in graph.nodes.values()
        ],
        NODE_SCHEMA,
    )
    edges = spark.createDataFrame(
        [
            (component[x.src_id], x.edge_id, x.src_id, x.dst_id, x.tokens, x.loss, x.rr)
            for x in graph.edges.values()
        ],
        EDGE_SCHEMA,
    )
    if partitions:
        nodes, edges = nodes.repartition(partitions), edges.repartition(partitions, "src_id")
    return nodes, edges


def claim(spark, graph: Graph, params: Params, partitions: int | None = None, **kw):
    """Run the engine; rows, ``seed_id → round`` and the run."""
    nodes, edges = frames(spark, graph, partitions)
    kw.setdefault("collect_threshold", 0)
    run = Claim(params, **kw).run(nodes, edges)
    rows = run.batches.collect()
    rounds = {r["seed_id"]: r["round"] for r in run.seed_rounds.collect()}
    return rows, rounds, run


def as_tuple(b) -> tuple:
    return (
        b.seed_id,
        tuple(b.node_ids),
        tuple(b.edge_ids),
        b.n_units,
        b.tokens,
        b.loss,
        tuple(b.flags),
    )


def of(graph: Graph, rows) -> list:
    """The rows of one component graph, by seed."""
    return sorted(
        (r for r in rows if r.seed_id in graph.edges or r.seed_id in graph.nodes),
        key=lambda r: r.seed_id,
    )


def check_replay(graph: Graph, rows, rounds: dict[str, int], p: Params) -> None:
    """Replayed in (round, rank) order, the sequential expansion rebuilds every batch."""
    rank = graph.ranks(p.sampling, p.loss_strategy)
    taken: set[str] = set()
    relation_rows = [r for r in rows if r.edge_ids]
    for r in sorted(relation_rows, key=lambda r: (rounds[r.seed_id], rank[r.seed_id])):
        assert r.seed_id not in taken
        taken.add(r.seed_id)
        assert list(r.edge_ids) == [r.seed_id, *_expand_width(graph, r.seed_id, taken, rank, p)]


def random_graph(case: int) -> Graph:
    """15–40 entities, 30–80 relations; placeholders, NULL and tied losses, isolated nodes."""
    rng = random.Random(7000 + case)
    ids = [f"g{case:02d}n{i:02d}" for i in range(rng.randint(15, 40))]
    pairs = rng.sample(list(itertools.combinations(ids, 2)), rng.randint(30, 80))
    linked = {v for pair in pairs for v in pair}
    nodes = []
    for v in ids:
        if v in linked and rng.random() < 0.1:
            nodes.append(Node(v, 0, None, unit_rr(42, v), is_placeholder=True, type="UNKNOWN"))
        else:
            loss = None if rng.random() < 0.15 else round(rng.random(), 1)
            nodes.append(Node(v, rng.randint(0, 30), loss, unit_rr(42, v)))
    edges = [
        Edge(
            h(a, b),
            a,
            b,
            rng.randint(0, 30),
            None if rng.random() < 0.15 else round(rng.random(), 1),
            unit_rr(42, h(a, b)),
        )
        for a, b in pairs
    ]
    return Graph(nodes, edges)


def k1_path() -> Graph:
    """A-B-C-D-E-F; relation order AB, CD, EF, BC, DE: where claim and sequential differ."""
    nodes = [n(v) for v in "ABCDEF"]
    losses = {"AB": 0.9, "CD": 0.8, "EF": 0.7, "BC": 0.6, "DE": 0.5}
    return Graph(nodes, [e(k, loss=x) for k, x in losses.items()])


RANDOM = [random_graph(i) for i in range(20)]


# ---------------------------------------------------------------- hand-made graphs


def test_hand_made_graphs_exact_batches(spark):
    """Star, path, triangle with a tail, two components and isolated nodes (add), defaults."""
    parts = {"P:": path(), "S:": star(), "T:": triangle_tail(), "I:": islands()}
    graphs = {k: rename(g, k) for k, g in parts.items()}
    p = Params(isolated_nodes="add")
    rows, rounds, run = claim(spark, union(*graphs.values()), p)
    assert run.rounds == 2 and run.collected == 0
    for g in graphs.values():
        got = of(g, rows)
        assert check_contract(g, got, EDGE_SEED, p) == []
        # forced answers: here the claim rounds give exactly the sequential batches
        want = sorted(partition(g, EDGE_SEED, p).batches, key=lambda b: b.seed_id)
        assert [as_tuple(r) for r in got] == [as_tuple(b) for b in want]
    by_seed = {r.seed_id: r for r in rows}
    assert as_tuple(by_seed["P:CD"])[:3] == (
        "P:CD",
        ("P:C", "P:D", "P:B", "P:E"),
        ("P:CD", "P:BC", "P:DE"),
    )
    assert as_tuple(by_seed["S:PS"])[:3] == (
        "S:PS",
        ("S:P", "S:S", "S:Q", "S:R"),
        ("S:PS", "S:QS", "S:RS"),
    )
    assert tuple(by_seed["S:ST"].edge_ids) == ("S:ST",)
    assert tuple(by_seed["I:I"].node_ids) == ("I:I",) and by_seed["I:J"].loss is None
    assert rounds["P:CD"] == 1 and rounds["P:AB"] == 2


def test_a_seed_that_loses_a_claim_waits_and_batches_differ(spark):
    """max_extra_edges=1 on A-B-C-D-E-F: CD loses BC to AB; EF takes DE in round 1.

    Sequential: AB+BC, CD+DE, EF. Claim: AB+BC, EF+DE, then CD alone. Both meet the
    contract. Islands run alongside with ``isolated_nodes = ignore``.
    """
    p = Params(max_extra_edges=1)
    g, isl = rename(k1_path(), "K:"), rename(islands(), "I:")
    rows, rounds, _ = claim(spark, union(g, isl), p)
    got = {r.seed_id: tuple(r.edge_ids) for r in of(g, rows)}
    assert got == {"K:AB": ("K:AB", "K:BC"), "K:EF": ("K:EF", "K:DE"), "K:CD": ("K:CD",)}
    assert (rounds["K:AB"], rounds["K:EF"], rounds["K:CD"]) == (1, 1, 2)
    seq = {b.seed_id: b.edge_ids for b in partition(g, EDGE_SEED, p).batches}
    assert seq == {"K:AB": ("K:AB", "K:BC"), "K:CD": ("K:CD", "K:DE"), "K:EF": ("K:EF",)}
    assert check_contract(g, of(g, rows), EDGE_SEED, p) == []
    assert check_contract(isl, of(isl, rows), EDGE_SEED, p) == []
    assert {r.seed_id for r in of(isl, rows)} == {"I:AB", "I:CD"}  # I and J ignored
    diff = compare(of(g, rows), partition(g, EDGE_SEED, p).batches)
    assert (diff.same_seeds, diff.same_batches, diff.relations_moved) == (3, 1, 1)
    assert diff.delta["mean_edges"] == 0 and diff.delta["max_edges"] == 0
    assert compare(of(g, rows)[::-1], partition(g, EDGE_SEED, p).batches) == diff


# ---------------------------------------------------------------- random graphs


@pytest.fixture(scope="module")
def random_run(spark):
    p = Params(isolated_nodes="add")
    return p, *claim(spark, union(*RANDOM), p)


def test_random_graphs_meet_the_contract(random_run):
    p, rows, rounds, run = random_run
    assert run.rounds > 2 and run.collected == 0
    for g in RANDOM:
        got = of(g, rows)
        assert check_contract(g, got, EDGE_SEED, p) == []
        placed = sorted(x for r in got for x in r.edge_ids)
        assert placed == sorted(g.edges)  # every relation exactly once
        check_replay(g, got, rounds, p)
        # the globally best relation is a seed with its full sequential expansion
        best = partition(g, EDGE_SEED, p).batches[0]
        assert as_tuple(next(r for r in got if r.seed_id == best.seed_id)) == as_tuple(best)
        stats = batch_stats(got)
        assert stats.edges_covered == len(g.edges) and stats.max_edges <= 1 + p.max_extra_edges


def test_random_graphs_deterministic_across_partitioning(spark, random_run):
    p, rows, rounds, _ = random_run
    conf = {"spark.sql.shuffle.partitions": "3", "spark.sql.adaptive.enabled": "false"}
    before = {k: spark.conf.get(k) for k in conf}
    try:
        for k, v in conf.items():
            spark.conf.set(k, v)
        again, rounds_again, _ = claim(spark, union(*RANDOM), p, partitions=5)
    finally:
        for k, v in before.items():
            spark.conf.set(k, v)
    assert sorted(map(as_tuple, again)) == sorted(map(as_tuple, rows))
    assert rounds_again == rounds


@pytest.mark.parametrize(
    ("params", "limits"),
    [
        (  # stopped by max_rounds
            Params(
                sampling="min_loss",
                loss_strategy="both",
                bidirectional=False,
                max_depth=2,
                max_extra_edges=3,
            ),
            {"max_rounds": 2},
        ),
        (  # stopped by collect_threshold
            Params(sampling="random", max_depth=2, max_extra_edges=4),
            {"collect_threshold": 200},
        ),
    ],
)
def test_rounds_then_sequential_finish(spark, params, limits):
    graph = union(*RANDOM[:6])
    rows, rounds, run = claim(spark, graph, params, **limits)
    assert run.rounds >= 1 and 0 < run.collected < len(graph.edges)
    if "max_rounds" in limits:
        assert run.rounds == 2
    else:
        assert run.collected < 200
    assert run.placed + run.collected == len(graph.edges)
    assert sum(1 for s in rounds.values() if s == run.rounds + 1) >= 1  # finish seeds
    for g in RANDOM[:6]:
        got = of(g, rows)
        assert check_contract(g, got, EDGE_SEED, params) == []
        check_replay(g, got, rounds, params)


def test_below_the_threshold_everything_is_sequential(spark):
    """Nothing to round: the driver runs the reference, so the batches are its batches."""
    g = union(*RANDOM[:3])
    p = Params(max_extra_edges=3)
    rows, _, run = claim(spark, g, p, collect_threshold=10_000)
    assert run.rounds == 0 and run.collected == len(g.edges)
    assert sorted(map(as_tuple, rows)) == sorted(map(as_tuple, partition(g, EDGE_SEED, p).batches))


def test_rank_units_is_the_reference_order(spark):
    g = union(*RANDOM[:3])
    nodes, edges = frames(spark, g)
    for sampling, strategy in [("max_loss", "both"), ("min_loss", "only_edge"), ("random", "both")]:
        got = {
            r["unit_id"]: r["seed_rank"] - 1
            for r in rank_units(nodes, edges, sampling, strategy).collect()
        }
        assert got == g.ranks(sampling, strategy)


def test_global_position_counts_across_sorted_partitions(spark):
    """Positions stay global when the range sort spreads rows over several partitions."""
    conf = {"spark.sql.adaptive.enabled": "false", "spark.sql.shuffle.partitions": "5"}
    before = {k: spark.conf.get(k) for k in conf}
    try:
        for k, v in conf.items():
            spark.conf.set(k, v)
        df = spark.range(1000).select(F.col("id").cast("string").alias("k"), "id").repartition(3)
        order = [F.col("id") % 7, F.desc("id")]
        got = {r["k"]: r["pos"] for r in global_position(df, order, "pos").collect()}
        sorted_rows = df.orderBy(*order).select("k", F.spark_partition_id().alias("p")).collect()
    finally:
        for k, v in before.items():
            spark.conf.set(k, v)
    assert len({r["p"] for r in sorted_rows}) > 1  # the case this guards
    want = sorted(range(1000), key=lambda i: (i % 7, -i))
    assert got == {str(i): n + 1 for n, i in enumerate(want)}


def test_unsupported_configurations_are_named():
    assert unsupported(EDGE_SEED, Params()) is None
    assert "max_tokens" in unsupported(EDGE_SEED, Params(expand_method="max_tokens"))
    assert "ece/edge_seed only" in unsupported("ece/unit", Params())
    with pytest.raises(ValueError, match="max_tokens"):
        Claim(Params(expand_method="max_tokens"))


# ---------------------------------------------------------------- config and stage


def test_config_engine_settings():
    p = build_config({"partition": {"engine": "claim"}}, env=False).partition
    assert (p.engine, p.max_rounds, p.collect_threshold) == ("claim", 50, 100_000)
    with pytest.raises(ConfigError, match="collect_threshold"):
        build_config({"partition": {"local_max_edges": 10}}, env=False)
    with pytest.raises(ConfigError, match="max_rounds"):
        build_config({"partition": {"max_rounds": -1}}, env=False)
    cfg = build_config({"partition": {"engine": "claim", "max_rounds": 3}}, env=False)
    assert config_hash(cfg, EDGE_SEED) == config_hash(build_config({}, env=False), EDGE_SEED)


def engine_plan(engine: str, method: str, params: Params, giant: list[str]):
    """``(engine, components it takes or None for all)`` as the plan routes ``method``."""
    route = PartitionPlan(params, engine, tuple(giant)).route(method)
    return route.engine, None if route.components is None else list(route.components)


def test_engine_plan():
    giant = ["c1"]
    assert engine_plan("auto", EDGE_SEED, Params(), giant) == ("claim", giant)
    assert engine_plan("auto", EDGE_SEED, Params(), []) == ("component", None)
    assert engine_plan("claim", EDGE_SEED, Params(), []) == ("claim", None)
    assert engine_plan("claim", "ece/unit", Params(), giant) == ("component", None)
    assert engine_plan("auto", "ece/unit", Params(), giant) == ("component", None)
    assert engine_plan("component", EDGE_SEED, Params(), giant) == ("component", None)


def test_stage_auto_sends_the_giant_component_to_the_claim_engine(spark, tmp_path):
    """local_max_edges=4: the 6-relation component goes by claim (one round, then the
    driver), the 2-relation one and the isolated entity per component."""
    tables = Tables(spark, tmp_path / "out")
    write_graph(spark, tables)
    cfg = make_cfg(
        generate={"modes": ["aggregated"]},
        partition={"local_max_edges": 4, "collect_threshold": 0, "max_rounds": 1},
    )
    result = run_stage(spark, tables, cfg)
    rows = stored(tables, EDGE_SEED)
    assert {s: r["engine"] for s, r in rows.items()} == {
        "r-bc": "claim",
        "r-de": "claim",
        "r-gh": "component",
    }
    assert tuple(rows["r-bc"]["edge_ids"]) == ("r-bc", "r-ab", "r-cd")
    assert tuple(rows["r-de"]["edge_ids"]) == ("r-de", "r-ep", "r-bd")
    assert check_contract(reference_graph(), list(rows.values()), EDGE_SEED, params_for(cfg)) == []
    c = result.counts
    assert c["ece_edge_seed_engine_claim_components"] == 1
    assert c["ece_edge_seed_engine_component_components"] == 2  # f-g-h and the isolated i
    assert (c["ece_edge_seed_claim_rounds"], c["ece_edge_seed_claim_collected"]) == (1, 3)
    assert tables.read("subgraphs").filter(F.col("engine") == "claim").count() == 2
