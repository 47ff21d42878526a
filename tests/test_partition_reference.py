"""Sequential reference partitioners and the §6.9 contract checker (method.md §6).

Expected batches are worked out by hand from the pseudo-code. Ids are readable: entities
are capital letters, a relation is its sorted endpoints ("AB"), and ``rr`` defaults to the
id, so the ``rr`` order is plain string order.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

import pytest

from graphgen_spark.ids import h
from graphgen_spark.ids import rr as ids_rr
from graphgen_spark.partition.contract import check_contract
from graphgen_spark.partition.graph import Edge, Graph, Node, batch_loss, unit_rr
from graphgen_spark.partition.reference import (
    METHODS,
    OVER_BUDGET,
    Batch,
    Params,
    Partition,
    batch_id,
    make_batch,
    partition,
)


def n(
    i: str,
    tokens: int = 10,
    loss: float | None = None,
    rr: str | None = None,
    placeholder: bool = False,
    type: str = "person",
) -> Node:
    return Node(
        entity_id=i,
        tokens=0 if placeholder else tokens,
        loss=loss,
        rr=rr or i,
        is_placeholder=placeholder,
        type="UNKNOWN" if placeholder else type,
    )


def e(ab: str, tokens: int = 5, loss: float | None = None, rr: str | None = None) -> Edge:
    src, dst = sorted(ab)
    return Edge(edge_id=src + dst, src_id=src, dst_id=dst, tokens=tokens, loss=loss, rr=rr or ab)


def run(graph: Graph, method: str, **params: object) -> Partition:
    """Partition and require the contract, so every hand-made case also checks the checker."""
    p = Params(**params)
    part = partition(graph, method, p)
    uncovered = (*part.uncovered_nodes, *part.uncovered_edges)
    assert check_contract(graph, part.batches, method, p, uncovered) == []
    return part


def rows(part: Partition) -> list[tuple]:
    return [
        (b.seed_id, " ".join(b.node_ids), " ".join(b.edge_ids), b.tokens, b.loss, b.flags)
        for b in part.batches
    ]


def approx(x: float) -> object:
    return pytest.approx(x, abs=1e-12)


# ---------------------------------------------------------------- graphs


def path() -> Graph:
    """A-B-C-D-E; max_loss order of relations: CD, BC, DE, AB."""
    nodes = [n("A", loss=0.2), n("B", loss=0.4), n("C", loss=0.6), n("D", loss=0.8)]
    nodes.append(n("E", loss=1.0))
    edges = [e("AB", loss=0.1), e("BC", loss=0.5), e("CD", loss=0.9), e("DE", loss=0.3)]
    return Graph(nodes, edges)


def triangle_tail(**types: str) -> Graph:
    """Triangle A-B-C with the tail C-D-E-F; relation order AB, DE, BC, CD, AC, EF."""
    node_loss = {"A": 0.15, "B": 0.25, "C": 0.35, "D": 0.45, "E": 0.55, "F": 0.05}
    nodes = [n(v, loss=x, type=types.get(v, "person")) for v, x in node_loss.items()]
    edge_loss = {"AB": 0.9, "AC": 0.3, "BC": 0.5, "CD": 0.4, "DE": 0.8, "EF": 0.2}
    return Graph(nodes, [e(k, loss=x) for k, x in edge_loss.items()])


def star() -> Graph:
    """Centre S with leaves P, Q, R, T; Q's description is long."""
    tokens = {"P": 10, "Q": 40, "R": 5, "S": 10, "T": 5}
    nodes = [n(v, tokens=t) for v, t in tokens.items()]
    losses = {"PS": 0.9, "QS": 0.8, "RS": 0.7, "ST": 0.6}
    return Graph(nodes, [e(k, loss=x) for k, x in losses.items()])


def islands() -> Graph:
    """A-B, C-D-P (P a placeholder) and the isolated I and J (J unjudged)."""
    nodes = [n("A", loss=0.1), n("B", loss=0.2), n("C", loss=0.3), n("D", loss=0.4)]
    nodes += [n("P", placeholder=True), n("I", tokens=7, loss=0.4), n("J", tokens=3)]
    edges = [e("AB", loss=0.5), e("CD", loss=0.3), e("DP", loss=0.2)]
    return Graph(nodes, edges)


# ---------------------------------------------------------------- graph model and order


def test_graph_rejects_bad_input():
    with pytest.raises(ValueError, match="src_id < dst_id"):
        Edge(edge_id="BA", src_id="B", dst_id="A", tokens=1, loss=None, rr="x")
    with pytest.raises(ValueError, match="second relation"):
        Graph([n("A"), n("B")], [e("AB"), replace(e("AB"), edge_id="AB2")])
    with pytest.raises(ValueError, match="unknown endpoint"):
        Graph([n("A")], [e("AB")])
    with pytest.raises(ValueError, match="sampling"):
        Params(sampling="best")


def test_rr_and_batch_id_are_the_project_hashes():
    assert unit_rr(42, "x") == ids_rr(42, "x") == h(42, "x")
    assert batch_id("ece/edge_seed", "cfg", "AB") == h("ece/edge_seed", "cfg", "AB")
    b = run(path(), "triple").batches[0]
    assert b.batch_id("cfg") == h("triple", "cfg", b.seed_id)


def test_order_nulls_last_and_ties_by_rr_then_id():
    g = Graph(
        [
            n("A", loss=0.5, rr="2"),
            n("B", loss=0.5, rr="1"),
            n("C", rr="0"),
            n("D", loss=0.5, rr="1"),
        ],
        [],
    )
    for sampling, want in [("max_loss", "BDAC"), ("min_loss", "BDAC"), ("random", "CBDA")]:
        rank = g.ranks(sampling, "only_edge")
        assert "".join(sorted(rank, key=rank.__getitem__)) == want
    g2 = Graph([n("A", loss=0.1), n("B", loss=0.9)], [])
    assert g2.ranks("max_loss", "only_edge")["B"] == 0
    assert g2.ranks("min_loss", "only_edge")["A"] == 0


def test_batch_loss_rules():
    g = islands()
    assert batch_loss(g, ["A", "B"], ["AB"], "only_edge") == approx(0.5)
    assert batch_loss(g, ["A", "B"], ["AB"], "both") == approx(0.8 / 3)
    assert batch_loss(g, ["I"], [], "only_edge") == approx(0.4)
    assert batch_loss(g, ["J"], [], "only_edge") is None
    g2 = Graph([n("A", loss=0.2), n("B", loss=0.4)], [e("AB")])
    assert batch_loss(g2, ["A", "B"], ["AB"], "only_edge") == approx(0.3)


# ---------------------------------------------------------------- ece/edge_seed, max_width


def test_edge_seed_defaults_on_a_path():
    assert rows(run(path(), "ece/edge_seed")) == [
        ("CD", "C D B E", "CD BC DE", 55, approx(1.7 / 3), ()),
        ("AB", "A B", "AB", 25, approx(0.1), ()),
    ]


def test_edge_seed_defaults_on_triangle_and_tail():
    assert rows(run(triangle_tail(), "ece/edge_seed")) == [
        ("AB", "A B C", "AB BC AC", 45, approx(1.7 / 3), ()),
        ("DE", "D E C F", "DE CD EF", 55, approx(1.4 / 3), ()),
    ]


def test_edge_seed_depth_two():
    part = run(triangle_tail(), "ece/edge_seed", max_depth=2, max_extra_edges=3)
    assert rows(part) == [
        ("AB", "A B C D", "AB BC AC CD", 60, approx(2.1 / 4), ()),
        ("DE", "D E F", "DE EF", 40, approx(0.5), ()),
    ]


def test_edge_seed_one_directional_expands_from_dst_only():
    assert rows(run(triangle_tail(), "ece/edge_seed", bidirectional=False)) == [
        ("AB", "A B C", "AB BC", 40, approx(0.7), ()),
        ("DE", "D E F", "DE EF", 40, approx(0.5), ()),
        ("CD", "C D", "CD", 25, approx(0.4), ()),
        ("AC", "A C", "AC", 25, approx(0.3), ()),
    ]


def test_edge_seed_both_loss_strategy_orders_and_averages_every_unit():
    assert rows(run(path(), "ece/edge_seed", loss_strategy="both")) == [
        ("CD", "C D E B", "CD DE BC", 55, approx(4.5 / 7), ()),
        ("AB", "A B", "AB", 25, approx(0.7 / 3), ()),
    ]


def test_edge_seed_min_loss():
    assert rows(run(path(), "ece/edge_seed", sampling="min_loss")) == [
        ("AB", "A B C", "AB BC", 40, approx(0.3), ()),
        ("DE", "D E C", "DE CD", 40, approx(0.6), ()),
    ]


def test_edge_seed_random_follows_rr_not_loss():
    g = Graph(
        path().nodes.values(),
        [replace(x, rr=r) for x, r in zip(path().edges.values(), "3142", strict=True)],
    )
    assert rows(run(g, "ece/edge_seed", sampling="random")) == [
        ("BC", "B C A D", "BC AB CD", 55, approx(0.5), ()),
        ("DE", "D E", "DE", 25, approx(0.3), ()),
    ]


def test_edge_seed_null_losses_sort_last_and_are_skipped_in_the_mean():
    g = Graph(path().nodes.values(), [*path().edges.values()][:2] + [e("CD"), e("DE", loss=0.3)])
    assert rows(run(g, "ece/edge_seed")) == [
        ("BC", "B C A D", "BC AB CD", 55, approx(0.3), ()),
        ("DE", "D E", "DE", 25, approx(0.3), ()),
    ]


# ---------------------------------------------------------------- ece/edge_seed, max_tokens


def test_edge_seed_tokens_first_overflow_ends_and_lone_seed_is_flagged():
    part = run(star(), "ece/edge_seed", expand_method="max_tokens", max_tokens=50)
    assert rows(part) == [
        ("PS", "P S", "PS", 25, approx(0.9), ()),
        ("QS", "Q S", "QS", 55, approx(0.8), (OVER_BUDGET,)),
        ("RS", "R S T", "RS ST", 30, approx(0.65), ()),
    ]


def test_edge_seed_tokens_count_only_new_endpoints():
    part = run(
        triangle_tail(), "ece/edge_seed", expand_method="max_tokens", max_tokens=50, max_depth=2
    )
    assert rows(part) == [
        ("AB", "A B C", "AB BC AC", 45, approx(1.7 / 3), ()),
        ("DE", "D E C", "DE CD", 40, approx(0.6), ()),
        ("EF", "E F", "EF", 25, approx(0.2), ()),
    ]


# ---------------------------------------------------------------- isolated nodes


def test_isolated_nodes_add_gives_node_only_batches_without_crashing():
    part = run(islands(), "ece/edge_seed", isolated_nodes="add")
    assert rows(part) == [
        ("AB", "A B", "AB", 25, approx(0.5), ()),
        ("CD", "C D P", "CD DP", 30, approx(0.25), ()),
        ("I", "I", "", 7, approx(0.4), ()),
        ("J", "J", "", 3, None, ()),
    ]
    assert part.uncovered_nodes == () and part.uncovered_edges == ()


def test_isolated_nodes_ignore_reports_them_uncovered():
    part = run(islands(), "ece/edge_seed")
    assert [b.seed_id for b in part.batches] == ["AB", "CD"]
    assert part.uncovered_nodes == ("I", "J")


# ---------------------------------------------------------------- ece/unit


def test_ece_unit_caps_units_and_tokens():
    part = run(triangle_tail(), "ece/unit", unit_max_units=4, unit_min_units=3, unit_max_tokens=40)
    assert rows(part) == [
        ("AB", "B A", "AB BC", 30, approx(1.8 / 4), ()),
        ("DE", "E D", "DE EF", 30, approx(0.5), ()),
        ("CD", "C", "CD AC", 20, approx(1.05 / 3), ()),
    ]
    assert part.uncovered_nodes == ("F",)


def _fit_graph() -> Graph:
    """A is long and ranked first: its community fits only AB and B, below min_units."""
    loss = {"A": 0.9, "B": 0.6, "C": 0.5, "D": 0.3}
    tokens = {"A": 30, "B": 5, "C": 5, "D": 5}
    nodes = [n(v, tokens=tokens[v], loss=x) for v, x in loss.items()]
    return Graph(nodes, [e("AB", loss=0.4), e("BC", loss=0.8), e("CD", loss=0.7)])


def test_ece_unit_undersized_release_frees_units_for_later_seeds():
    part = run(_fit_graph(), "ece/unit", unit_max_units=10, unit_min_units=4, unit_max_tokens=40)
    assert rows(part) == [("BC", "B C D", "BC AB CD", 30, approx(3.3 / 6), ())]
    assert part.uncovered_nodes == ("A",) and part.uncovered_edges == ()


def test_ece_unit_undersized_discard_loses_them():
    part = run(
        _fit_graph(),
        "ece/unit",
        unit_max_units=10,
        unit_min_units=4,
        unit_max_tokens=40,
        undersized="discard",
    )
    assert rows(part) == [("BC", "C D", "BC CD", 20, approx(2.3 / 4), ())]
    assert part.uncovered_nodes == ("A", "B") and part.uncovered_edges == ("AB",)


def test_ece_unit_seed_alone_over_budget_is_flagged():
    g = Graph([n("A", tokens=100, loss=0.9), n("B", loss=0.1)], [e("AB", loss=0.5)])
    part = run(g, "ece/unit", unit_min_units=2, unit_max_tokens=40)
    assert rows(part) == [
        ("A", "A", "", 100, approx(0.9), (OVER_BUDGET,)),
        ("AB", "B", "AB", 15, approx(0.3), ()),
    ]


# ---------------------------------------------------------------- bfs, dfs, anchor_bfs


def test_bfs_and_dfs_defaults_are_single_units():
    for method in ("bfs", "dfs"):
        part = run(triangle_tail(), method)
        assert [b.seed_id for b in part.batches] == [
            "A",
            "AB",
            "AC",
            "B",
            "BC",
            "C",
            "CD",
            "D",
            "DE",
            "E",
            "EF",
            "F",
        ]


def test_bfs_and_dfs_on_triangle_and_tail():
    assert rows(run(triangle_tail(), "bfs", max_units_per_community=3))[:4] == [
        ("A", "A", "AB AC", 20, approx(1.35 / 3), ()),
        ("B", "B C", "BC", 25, approx(1.1 / 3), ()),
        ("CD", "D", "CD DE", 20, approx(1.65 / 3), ()),
        ("E", "E F", "EF", 25, approx(0.8 / 3), ()),
    ]
    assert [r[:3] for r in rows(run(triangle_tail(), "dfs", max_units_per_community=3))] == [
        ("A", "A B", "AB"),
        ("AC", "C", "AC BC"),
        ("CD", "D", "CD DE"),
        ("E", "E F", "EF"),
    ]


def test_bfs_and_dfs_with_five_units():
    assert [r[:3] for r in rows(run(triangle_tail(), "bfs", max_units_per_community=5))] == [
        ("A", "A B C", "AB AC"),
        ("BC", "", "BC"),
        ("CD", "D E", "CD DE EF"),
        ("F", "F", ""),
    ]
    assert [r[:3] for r in rows(run(triangle_tail(), "dfs", max_units_per_community=5))] == [
        ("A", "A B C", "AB BC"),
        ("AC", "", "AC"),
        ("CD", "D E", "CD DE EF"),
        ("F", "F", ""),
    ]


def test_dfs_walks_from_the_best_rr_endpoint_while_bfs_takes_both():
    edges = [replace(x, rr="0") if x.edge_id == "BC" else x for x in path().edges.values()]
    g = Graph(path().nodes.values(), edges)
    assert [r[:3] for r in rows(run(g, "dfs", max_units_per_community=3))] == [
        ("BC", "B", "BC AB"),
        ("A", "A", ""),
        ("C", "C D", "CD"),
        ("DE", "E", "DE"),
    ]
    assert [r[:3] for r in rows(run(g, "bfs", max_units_per_community=3))] == [
        ("BC", "B C", "BC"),
        ("A", "A", "AB"),
        ("CD", "D", "CD DE"),
        ("E", "E", ""),
    ]


def test_bfs_never_takes_a_placeholder():
    part = run(islands(), "bfs", max_units_per_community=3)
    assert [r[:3] for r in rows(part)] == [
        ("A", "A B", "AB"),
        ("C", "C D", "CD"),
        ("DP", "", "DP"),
        ("I", "I", ""),
        ("J", "J", ""),
    ]


def test_anchor_bfs_by_type_and_by_id():
    g = triangle_tail(A="disease", D="Rare DISEASE")
    part = run(g, "anchor_bfs", anchor_type="disease", anchor_max_units=3)
    assert [r[:3] for r in rows(part)] == [("A", "A", "AB AC"), ("D", "D", "CD DE")]
    assert part.uncovered_nodes == ("B", "C", "E", "F")
    assert part.uncovered_edges == ("BC", "EF")
    part = run(g, "anchor_bfs", anchor_ids=("F",), anchor_max_units=3)
    assert [r[:3] for r in rows(part)] == [("F", "F E", "EF")]
    with pytest.raises(ValueError, match="anchor"):
        partition(g, "anchor_bfs", Params())


def test_anchor_bfs_never_seeds_a_placeholder():
    part = run(islands(), "anchor_bfs", anchor_type="unknown")
    assert part.batches == ()


# ---------------------------------------------------------------- triple, quintuple, unit


def test_triple_is_every_relation_by_rank():
    assert [r[:3] for r in rows(run(triangle_tail(), "triple"))] == [
        ("AB", "A B", "AB"),
        ("DE", "D E", "DE"),
        ("BC", "B C", "BC"),
        ("CD", "C D", "CD"),
        ("AC", "A C", "AC"),
        ("EF", "E F", "EF"),
    ]


def test_quintuple_exact_pairings():
    assert [r[:3] for r in rows(run(triangle_tail(), "quintuple"))] == [
        ("AB", "B A C", "AB AC"),
        ("BC", "B C D", "BC CD"),
        ("DE", "D E F", "DE EF"),
    ]
    assert [r[:3] for r in rows(run(path(), "quintuple"))] == [
        ("AB", "A B C", "AB BC"),
        ("CD", "C D E", "CD DE"),
    ]
    part = run(star(), "quintuple")
    assert [r[:3] for r in rows(part)] == [("PS", "P S Q", "PS QS"), ("RS", "R S T", "RS ST")]
    odd = Graph([n(v) for v in "PQRS"], [e("PS"), e("QS"), e("RS")])
    part = run(odd, "quintuple")
    assert [r[:3] for r in rows(part)] == [("PS", "P S Q", "PS QS")]
    assert part.uncovered_edges == ("RS",) and part.uncovered_nodes == ("R",)


def test_unit_method_each_element_alone_by_rank_with_ties():
    part = run(islands(), "unit")
    assert [r[:3] for r in rows(part)] == [
        ("AB", "", "AB"),
        ("D", "D", ""),
        ("I", "I", ""),
        ("C", "C", ""),
        ("CD", "", "CD"),
        ("B", "B", ""),
        ("DP", "", "DP"),
        ("A", "A", ""),
        ("J", "J", ""),
    ]
    assert part.batches[0].loss == approx(0.5) and part.batches[-1].loss is None


# ---------------------------------------------------------------- the checker can fail


def _violations(graph: Graph, batches: list[Batch], method: str, **params: object) -> list[str]:
    return check_contract(graph, batches, method, Params(**params))


def test_contract_reports_a_disconnected_batch():
    g = path()
    bad = [make_batch(g, "bfs", "A", ["A", "C"], [], "only_edge")]
    found = _violations(g, bad, "bfs", max_units_per_community=5)
    assert any(v.startswith("connected:") for v in found)


def test_contract_reports_a_relation_in_two_batches_and_a_missing_one():
    g = path()
    bad = [
        make_batch(g, "ece/edge_seed", "CD", ["C", "D", "B"], ["CD", "BC"], "only_edge"),
        make_batch(g, "ece/edge_seed", "BC", ["B", "C"], ["BC"], "only_edge"),
    ]
    found = _violations(g, bad, "ece/edge_seed")
    assert "disjoint: relation BC is in 2 batches" in found
    assert "covered: relation AB is in no batch" in found
    assert "covered: relation DE is in no batch" in found


def test_contract_reports_an_entity_in_two_unit_batches():
    g = path()
    bad = [
        make_batch(g, "bfs", "AB", ["A", "B"], ["AB"], "only_edge"),
        make_batch(g, "bfs", "BC", ["B", "C"], ["BC"], "only_edge"),
    ]
    assert "disjoint: entity B is in 2 batches" in _violations(g, bad, "bfs")


def test_contract_reports_budget_breaches():
    g = triangle_tail()
    wide = make_batch(
        g, "ece/edge_seed", "AB", ["A", "B", "C", "D"], ["AB", "BC", "AC", "CD"], "only_edge"
    )
    found = _violations(g, [wide], "ece/edge_seed")
    assert any("3 extra relations > 2" in v for v in found)
    assert any("expansion depth 2 > 1" in v for v in found)
    src_side = make_batch(g, "ece/edge_seed", "AB", ["A", "B", "C"], ["AB", "AC"], "only_edge")
    assert any(
        "expansion depth inf > 1" in v
        for v in _violations(g, [src_side], "ece/edge_seed", bidirectional=False)
    )
    long = make_batch(g, "ece/edge_seed", "AB", ["A", "B", "C"], ["AB", "BC"], "only_edge")
    found = _violations(g, [long], "ece/edge_seed", expand_method="max_tokens", max_tokens=30)
    assert any("40 tokens > 30" in v for v in found)
    fake = replace(long, flags=(OVER_BUDGET,))
    found = _violations(g, [fake], "ece/edge_seed", expand_method="max_tokens", max_tokens=30)
    assert any("not a lone over-long seed" in v for v in found)
    small = make_batch(g, "ece/unit", "AB", ["A"], ["AB"], "only_edge")
    assert any("units < min_units" in v for v in _violations(g, [small], "ece/unit"))
    big = make_batch(g, "bfs", "A", ["A"], ["AB"], "only_edge")
    assert any("2 units > 1" in v for v in _violations(g, [big], "bfs"))


def test_contract_reports_wrong_bookkeeping_and_gaps_first():
    g = path()
    part = run(g, "ece/edge_seed")
    lied = [replace(part.batches[0], tokens=1, loss=0.0), *part.batches[1:]]
    found = _violations(g, lied, "ece/edge_seed")
    assert any("tokens 1 is not the sum" in v for v in found)
    assert any("loss 0.0 !=" in v for v in found)
    worse_seed = make_batch(g, "ece/edge_seed", "BC", ["B", "C", "D"], ["BC", "CD"], "only_edge")
    rest = [make_batch(g, "ece/edge_seed", x, list(x), [x], "only_edge") for x in ("AB", "DE")]
    found = _violations(g, [worse_seed, *rest], "ece/edge_seed")
    assert any(v.startswith("gaps_first: batch seeded BC") for v in found)
    assert "gaps_first: the best-ranked candidate CD is not a seed" in found
    wrong = check_contract(g, part.batches, "ece/edge_seed", Params(), uncovered=["AB"])
    assert any(v.startswith("covered: uncovered report is wrong") for v in wrong)


def test_contract_reports_a_broken_quintuple():
    g = path()
    bad = make_batch(g, "quintuple", "AB", ["A", "B", "D"], ["AB", "CD"], "only_edge")
    found = _violations(g, [bad], "quintuple")
    assert any("two relations and three entities" in v or "shared centre" in v for v in found)
    assert any(v.startswith("connected:") for v in found)


# ---------------------------------------------------------------- randomized properties


def random_graph(rng: random.Random, shuffle: bool = False) -> Graph:
    count = rng.randint(0, 14)
    ids = [f"N{i:02d}" for i in range(count)]
    pairs = [(a, b) for a, b in itertools.combinations(ids, 2) if rng.random() < 0.25]
    linked = {v for pair in pairs for v in pair}
    nodes = []
    for v in ids:
        placeholder = v in linked and rng.random() < 0.15
        loss = None if placeholder or rng.random() < 0.15 else round(rng.random(), 2)
        kind = rng.choice(["person", "disease", "Rare Disease", "place"])
        nodes.append(
            Node(v, 0 if placeholder else rng.randint(0, 30), loss, unit_rr(42, v), type=kind)
        )
        if placeholder:
            nodes[-1] = replace(nodes[-1], is_placeholder=True, type="UNKNOWN")
    edges = []
    for a, b in pairs:
        eid = h(a, b)
        loss = None if rng.random() < 0.15 else round(rng.random(), 2)
        edges.append(Edge(eid, a, b, rng.randint(0, 30), loss, unit_rr(42, eid)))
    if shuffle:
        rng.shuffle(nodes)
        rng.shuffle(edges)
    return Graph(nodes, edges)


def random_params(rng: random.Random) -> Params:
    max_units = rng.randint(1, 8)
    return Params(
        sampling=rng.choice(["max_loss", "min_loss", "random"]),
        loss_strategy=rng.choice(["only_edge", "both"]),
        expand_method=rng.choice(["max_width", "max_tokens"]),
        bidirectional=rng.random() < 0.7,
        max_depth=rng.randint(0, 3),
        max_extra_edges=rng.randint(0, 4),
        max_tokens=rng.randint(20, 150),
        isolated_nodes=rng.choice(["add", "ignore"]),
        unit_max_units=max_units,
        unit_min_units=rng.randint(0, max_units),
        unit_max_tokens=rng.randint(10, 120),
        undersized=rng.choice(["release", "discard"]),
        max_units_per_community=rng.randint(1, 6),
        anchor_type="disease",
        anchor_max_units=rng.randint(1, 6),
    )


def check_triple_brute_force(graph: Graph, part: Partition) -> None:
    got = {(b.edge_ids, frozenset(b.node_ids)) for b in part.batches}
    want = {((x.edge_id,), frozenset(x.endpoints)) for x in graph.edges.values()}
    assert got == want and len(part.batches) == len(graph.edges)


def check_quintuple_brute_force(graph: Graph, part: Partition) -> None:
    two_paths = {
        (v1, u, v2, graph.nx.edges[u, v1]["edge_id"], graph.nx.edges[u, v2]["edge_id"])
        for u in graph.nx
        for v1, v2 in itertools.permutations(graph.nx.adj[u], 2)
    }
    for b in part.batches:
        assert (*b.node_ids, *b.edge_ids) in two_paths
    used = [x for b in part.batches for x in b.edge_ids]
    assert len(used) == len(set(used))
    for u in graph.nx:
        free = [x for x in graph.incident(u) if x not in set(used)]
        assert len(free) <= 1, "two unpaired relations left at one centre"


@pytest.mark.parametrize("case", range(50))
def test_random_graphs_meet_the_contract_deterministically(case: int):
    rng = random.Random(1000 + case)
    state = rng.getstate()
    graph = random_graph(rng)
    rng.setstate(state)
    shuffled = random_graph(rng, shuffle=True)
    params = random_params(rng)
    for method in METHODS:
        part = partition(graph, method, params)
        uncovered = (*part.uncovered_nodes, *part.uncovered_edges)
        assert check_contract(graph, part.batches, method, params, uncovered) == [], method
        assert partition(graph, method, params) == part
        assert partition(shuffled, method, params) == part
    check_triple_brute_force(graph, partition(graph, "triple", params))
    check_quintuple_brute_force(graph, partition(graph, "quintuple", params))
