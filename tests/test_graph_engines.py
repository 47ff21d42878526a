"""Both formulations of every graph query (GraphFrames and DataFrame joins) against brute
force on hand-made graphs: components, degrees, 2-hop paths, k-hop neighbourhoods, label
propagation and the community cut it feeds."""

from __future__ import annotations

import itertools
from collections import Counter

import networkx as nx
import pytest
from pyspark.sql import functions as F

from graphgen_spark.graph import engines
from graphgen_spark.graph.engines import (
    DATAFRAME,
    GRAPHFRAMES,
    GRAPHFRAMES_FROM,
    LOCAL,
    OPS,
    DataFrameGraph,
    GraphFramesGraph,
    GraphQueries,
    auto_choice,
)
from graphgen_spark.jars import coordinates
from graphgen_spark.session import has_graphframes

# a hub with a tail, a triangle, a square (label propagation oscillates on it), a pair,
# and an isolated vertex
EDGES = [
    ("h", "a"), ("h", "b"), ("h", "c"), ("h", "d"), ("d", "t1"), ("t1", "t2"),
    ("x", "y"), ("y", "z"), ("x", "z"),
    ("s1", "s2"), ("s2", "s3"), ("s3", "s4"), ("s1", "s4"),
    ("p", "q"),
]  # fmt: skip
ISOLATED = ["i"]
VERTICES = sorted({v for e in EDGES for v in e} | set(ISOLATED))


def eid(a: str, b: str) -> str:
    return "e_" + "_".join(sorted((a, b)))


@pytest.fixture(params=[DATAFRAME, GRAPHFRAMES])
def engine(request, spark, tmp_path):
    if request.param == DATAFRAME:
        return DataFrameGraph()
    if not has_graphframes(spark):
        pytest.skip(f"GraphFrames jar {coordinates()['graphframes']} is not on the classpath")
    return GraphFramesGraph(spark, str(tmp_path / "checkpoints"))


@pytest.fixture
def graph(spark):
    v = spark.createDataFrame([(x,) for x in VERTICES], "id string")
    e = spark.createDataFrame(
        [(min(a, b), max(a, b), eid(a, b)) for a, b in EDGES],
        "src string, dst string, edge_id string",
    )
    g = nx.Graph(EDGES)
    g.add_nodes_from(ISOLATED)
    return v, e, g


def rows(df, *cols):
    return {tuple(r) for r in df.select(*cols).collect()}


def test_components_are_labelled_by_their_smallest_id(engine, graph):
    v, e, g = graph
    want = {(x, min(c)) for c in nx.connected_components(g) for x in c}
    got = engine.components(v, e)
    assert dict(got.dtypes)["component"] == "string"
    assert rows(got, "id", "component") == want


def test_degrees_count_every_vertex(engine, graph):
    v, e, g = graph
    assert rows(engine.degrees(v, e), "id", "degree") == set(g.degree())


def test_triplets_carry_both_endpoints_rows(engine, graph):
    v, e, g = graph
    v = v.withColumn("tag", F.concat(F.lit("v:"), "id"))
    found = engine.triplets(v, e.withColumn("w", F.length("edge_id")))
    got = rows(found, "a.id", "a.tag", "e.edge_id", "e.w", "b.id", "b.tag")
    want = {
        (a, f"v:{a}", eid(a, b), len(eid(a, b)), b, f"v:{b}") for a, b in (sorted(p) for p in EDGES)
    }
    assert got == want


def test_two_hop_paths_equal_brute_force(engine, graph):
    v, e, g = graph
    want = {(a, eid(a, b), b, eid(b, c), c) for b in g for a, c in itertools.permutations(g[b], 2)}
    assert rows(engine.two_hop_paths(v, e), "a", "e1", "b", "e2", "c") == want


@pytest.mark.parametrize("hops", [0, 1, 2, 3])
def test_k_hop_neighbourhoods_equal_brute_force(engine, graph, spark, hops):
    v, e, g = graph
    starts = [("s_hub", "a"), ("s_hub", "c"), ("s_sq", "s1"), ("s_lone", "i"), ("s_tail", "t2")]
    want = set()
    for seed in {s for s, _ in starts}:
        dist: dict[str, int] = {}
        for _, x in (p for p in starts if p[0] == seed):
            for y, d in nx.single_source_shortest_path_length(g, x, cutoff=hops).items():
                dist[y] = min(d, dist.get(y, d))
        want |= {(seed, y, d) for y, d in dist.items()}
    got = engine.neighbourhood(
        v, e, spark.createDataFrame(starts, "seed_id string, id string"), hops
    )
    assert rows(got, "seed_id", "id", "hop") == want


def brute_force_labels(g: nx.Graph, max_iter: int) -> dict[str, str]:
    """Synchronous propagation on id-order indexes: most frequent neighbour label, ties to
    the smallest; a vertex without neighbours keeps its own; labels named by smallest id."""
    order = sorted(g)
    label = {x: i for i, x in enumerate(order)}
    for _ in range(max_iter):
        new = {}
        for x in order:
            votes = Counter(label[y] for y in g[x])
            new[x] = min(votes, key=lambda k: (-votes[k], k)) if votes else label[x]
        changed = new != label
        label = new
        if not changed:
            break
    name = {}
    for x in order:
        name.setdefault(label[x], x)
    return {x: name[label[x]] for x in order}


@pytest.mark.parametrize("max_iter", [1, 2, 5])
def test_label_propagation_equals_brute_force(engine, graph, max_iter):
    v, e, g = graph
    want = set(brute_force_labels(g, max_iter).items())
    assert rows(engine.label_propagation(v, e, max_iter), "id", "label") == want


def test_auto_takes_the_measured_faster_one_for_the_graph_size(spark, tmp_path, graph, monkeypatch):
    v, e, _ = graph
    assert set(GRAPHFRAMES_FROM) == set(OPS)
    assert auto_choice("components", 99_999) == DATAFRAME
    assert auto_choice("components", GRAPHFRAMES_FROM["components"]) == GRAPHFRAMES
    assert auto_choice("neighbourhood", 10**9) == (
        GRAPHFRAMES if GRAPHFRAMES_FROM["neighbourhood"] else DATAFRAME
    )
    queries = GraphQueries(spark, "auto", str(tmp_path / "ck"))
    local = queries.components(v, e)  # a small graph: union-find on the driver
    assert queries.used == {"components": LOCAL}
    assert sorted(local.collect()) == sorted(DataFrameGraph().components(v, e).collect())
    monkeypatch.setattr(engines, "LOCAL_MAX_EDGES", 0)
    queries = GraphQueries(spark, "auto", str(tmp_path / "ck"))
    queries.components(v, e)  # too many edges for the driver: DataFrame joins were faster
    assert queries.used == {"components": DATAFRAME}
    forced = GraphQueries(spark, "dataframe", str(tmp_path / "ck"))
    forced.degrees(v, e)
    assert forced.used == {"degrees": DATAFRAME}
    if has_graphframes(spark):
        forced = GraphQueries(spark, "graphframes", str(tmp_path / "ck"))
        forced.degrees(v, e)
        assert forced.used == {"degrees": GRAPHFRAMES}
    with pytest.raises(ValueError, match="graph.engine must be one of"):
        GraphQueries(spark, "networkx", str(tmp_path / "ck"))


def test_cut_oversized_components_by_label_propagation(engine, graph, spark, tmp_path):
    """The community cut of method §6.7: components over max_component_nodes are split by
    the labels; relations between labels fall out; small components stay whole."""
    from graphgen_spark.partition.community import cut_oversized

    v, e, g = graph
    comp = {x: min(c) for c in nx.connected_components(g) for x in c}
    nodes = v.select(F.col("id").alias("entity_id")).withColumn(
        "component_id", F.udf(comp.get, "string")("entity_id")
    )
    edges = e.select(F.col("src").alias("src_id"), F.col("dst").alias("dst_id"), "edge_id")
    edges = edges.withColumn("component_id", F.udf(comp.get, "string")("src_id"))
    queries = GraphQueries(spark, engine.name, str(tmp_path / "ck"))
    cut = cut_oversized(nodes, edges, 4, queries, 5)
    size = Counter(comp.values())
    big = {c for c, n in size.items() if n > 4}  # the hub component only (7 nodes)
    labels = brute_force_labels(g.subgraph([x for x in g if comp[x] in big]), 5)
    assert cut.n_cut == len(big) == 1
    want_nodes = {(x, f"{comp[x]}/{labels[x]}" if comp[x] in big else comp[x]) for x in comp}
    assert rows(cut.nodes, "entity_id", "component_id") == want_nodes
    group = dict(want_nodes)
    want_edges = {(eid(a, b), group[a]) for a, b in EDGES if group[a] == group[b]}
    assert rows(cut.edges, "edge_id", "component_id") == want_edges
    assert rows(cut.groups, "component_id") == {(c,) for c in big}


def test_graph_stats_count_every_figure_including_dangling_endpoints(spark, tmp_path):
    """a-b-c, d alone, placeholder p-a; relation x-y names no entity at both ends and c-z
    at one: three missing endpoints."""
    from graphgen_spark.graph.stats import compute_stats

    ents = spark.createDataFrame(
        [(i, i == "p") for i in "abcdp"], "entity_id string, is_placeholder boolean"
    )
    rels = spark.createDataFrame(
        [("a", "b"), ("b", "c"), ("p", "a"), ("x", "y"), ("c", "z")], "src_id string, dst_id string"
    )
    queries = GraphQueries(spark, "dataframe", str(tmp_path / "ck"))
    got = compute_stats(spark, ents, rels, "r", queries).first().asDict()
    assert (got["vertices"], got["edges"], got["placeholders"], got["isolated"]) == (5, 5, 1, 1)
    assert got["missing_endpoints"] == 3
    assert got["degree_histogram"] == {0: 1, 1: 1, 2: 3}  # d; p; a, b, c
    assert (got["max_degree"], got["mean_degree"]) == (2, 7 / 5)
    assert got["component_sizes"] == {1: 1, 4: 1}
    assert (got["components"], got["largest_component"]) == (2, 4)
