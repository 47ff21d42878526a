"""The exact rounds engine of method §6.9 on real local Spark: for `ece/edge_seed` with
either expand method it gives exactly the sequential reference's batches, whether the
rounds place everything or the driver finishes, and the stage runs it on request.
"""

from __future__ import annotations

import random

import pytest
from test_partition import (
    locally_checkpointed,
    make_cfg,
    reference_graph,
    run_stage,
    stored,
    write_graph,
)
from test_partition_claim import RANDOM, as_tuple, engine_plan, frames, rename, union

from graphgen_spark.ids import h
from graphgen_spark.partition.graph import Edge, Graph, Node, unit_rr
from graphgen_spark.partition.plan import params_for
from graphgen_spark.partition.reference import EDGE_SEED, Params, partition
from graphgen_spark.partition.rounds import ExactRounds, reach, unsupported
from graphgen_spark.tables import Tables


def random_tree(case: int, size: int = 120) -> Graph:
    """A random tree (sparse: many seeds per round), some NULL losses, tokens 0–40."""
    rng = random.Random(9100 + case)
    ids = [f"t{case}n{i:03d}" for i in range(size)]
    nodes = [Node(v, rng.randint(0, 40), round(rng.random(), 2), unit_rr(42, v)) for v in ids]
    edges = []
    for i in range(1, size):
        a, b = sorted((ids[i], ids[rng.randrange(i)]))
        loss = None if rng.random() < 0.1 else round(rng.random(), 2)
        edges.append(Edge(h(a, b), a, b, rng.randint(0, 40), loss, unit_rr(42, h(a, b))))
    return Graph(nodes, edges)


GRAPH = union(*RANDOM[:8], random_tree(1), rename(random_tree(2), "x"))


def rounds_rows(spark, graph: Graph, params: Params, **kw):
    nodes, edges = frames(spark, graph)
    kw.setdefault("collect_threshold", 0)
    run = ExactRounds(params, **kw).run(nodes, edges)
    return run.batches.collect(), run


@pytest.mark.parametrize(
    ("params", "max_rounds"),
    [
        (Params(isolated_nodes="add"), 4),
        (Params(expand_method="max_tokens", max_tokens=90, max_depth=2, loss_strategy="both"), 4),
        (Params(max_depth=2, max_extra_edges=5, bidirectional=False, sampling="min_loss"), 3),
    ],
    ids=["defaults", "max_tokens-depth2-both", "width-depth2-dst-min_loss"],
)
def test_equals_the_sequential_reference(spark, params, max_rounds):
    rows, run = rounds_rows(spark, GRAPH, params, max_rounds=max_rounds)
    assert run.rounds == max_rounds and 0 < run.collected < len(GRAPH.edges)
    want = partition(GRAPH, EDGE_SEED, params).batches
    assert sorted(map(as_tuple, rows)) == sorted(map(as_tuple, want))
    if params.expand_method == "max_tokens":  # flags come through both routes
        assert any(r.flags for r in want) and any(r.flags for r in rows)


def test_rounds_alone_place_a_sparse_graph(spark):
    graph = union(random_tree(3), rename(random_tree(4), "y"))
    p = Params(expand_method="max_tokens", max_tokens=120)
    rows, run = rounds_rows(spark, graph, p, max_rounds=50)
    assert run.collected == 0 and run.placed == len(graph.edges)
    assert sorted(map(as_tuple, rows)) == sorted(
        map(as_tuple, partition(graph, EDGE_SEED, p).batches)
    )


def test_reach_and_supported_methods():
    assert reach(Params()) == 1
    assert reach(Params(max_extra_edges=0)) == 0  # the seed alone: one round places all
    assert reach(Params(expand_method="max_tokens", max_extra_edges=0, max_depth=3)) == 3
    assert unsupported(EDGE_SEED, Params(expand_method="max_tokens")) is None
    assert "ece/edge_seed only" in unsupported("bfs", Params())


def test_engine_plan_runs_rounds_on_request():
    giant, maxtok = ["c1"], Params(expand_method="max_tokens")
    assert engine_plan("rounds", EDGE_SEED, maxtok, giant) == ("rounds", None)
    assert engine_plan("rounds", EDGE_SEED, Params(), []) == ("rounds", None)
    assert engine_plan("auto", EDGE_SEED, maxtok, giant) == ("component", None)
    assert engine_plan("claim", EDGE_SEED, maxtok, giant) == ("component", None)
    assert engine_plan("rounds", "bfs", Params(), giant) == ("component", None)


def test_stage_runs_max_tokens_by_rounds(spark, tmp_path):
    """engine: rounds on every component (6 relations, 2 relations, an isolated entity)."""
    tables = Tables(spark, tmp_path / "out")
    write_graph(spark, tables)
    cfg = make_cfg(
        generate={"modes": ["aggregated"]},
        partition={
            "engine": "rounds",
            "collect_threshold": 0,
            "max_rounds": 2,
            "expand_method": "max_tokens",
            "max_tokens": 200,
        },
    )
    before = locally_checkpointed(spark)
    result = run_stage(spark, tables, cfg)
    assert locally_checkpointed(spark) <= before  # rounds and their queries use the scratch
    rows = stored(tables, EDGE_SEED)
    want = partition(reference_graph(), EDGE_SEED, params_for(cfg)).batches
    assert {s: tuple(r["edge_ids"]) for s, r in rows.items()} == {
        b.seed_id: tuple(b.edge_ids) for b in want
    }
    assert {r["engine"] for r in rows.values()} == {"rounds"}
    c = result.counts
    assert c["ece_edge_seed_engine_rounds_components"] == 3
    assert c["ece_edge_seed_engine_component_components"] == 0
    assert 1 <= c["ece_edge_seed_rounds_rounds"] <= 2
