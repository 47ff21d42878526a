"""The partition contract of method.md §6.9, checked from the batches alone.

Every engine (sequential, per component, rounds, by claim) must pass it, so the checker
looks only at the graph, the emitted batches and the settings, never at how the batches
were produced. Property 6 (determinism) needs two runs and is left to the caller.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import networkx as nx

from graphgen_spark.partition.graph import Graph, batch_loss, batch_tokens
from graphgen_spark.partition.reference import (
    ECE_UNIT,
    EDGE_SEED,
    METHODS,
    OVER_BUDGET,
    UNIT_METHODS,
    Params,
    is_anchor,
    loss_mode,
)

EDGE_METHODS = frozenset({EDGE_SEED, "triple", "quintuple"})
FULL_COVER = frozenset({EDGE_SEED, "triple", "bfs", "dfs", "unit"})
LOSS_TOLERANCE = 1e-9


class BatchLike(Protocol):
    @property
    def method(self) -> str: ...
    @property
    def seed_id(self) -> str: ...
    @property
    def node_ids(self) -> Sequence[str]: ...
    @property
    def edge_ids(self) -> Sequence[str]: ...
    @property
    def n_units(self) -> int: ...
    @property
    def tokens(self) -> int: ...
    @property
    def loss(self) -> float | None: ...
    @property
    def flags(self) -> Sequence[str]: ...


def check_contract(
    graph: Graph,
    batches: Sequence[BatchLike],
    method: str,
    params: Params | None = None,
    uncovered: Iterable[str] | None = None,
) -> list[str]:
    """Violations of §6.9 properties 1–5 (empty when the batches meet the contract).

    ``uncovered``, when given, is the engine's report of units in no batch and must be exact.
    Batches with unknown ids are reported and skipped by the later checks.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    p = params or Params()
    problems = _check_shape(graph, batches, method, p)
    valid = [b for b in batches if _known(graph, b)]
    problems += _check_disjoint(valid, method)
    problems += _check_covered(graph, valid, method, p, uncovered)
    problems += [m for b in valid for m in _check_connected(graph, b)]
    problems += [m for b in valid for m in _check_budget(graph, b, method, p)]
    problems += _check_gaps_first(graph, valid, method, p)
    return problems


def _label(b: BatchLike) -> str:
    return f"batch seeded {b.seed_id}"


def _known(graph: Graph, b: BatchLike) -> bool:
    return all(v in graph.nodes for v in b.node_ids) and all(e in graph.edges for e in b.edge_ids)


# ---------------------------------------------------------------- shape and bookkeeping


def _check_shape(graph: Graph, batches: Sequence[BatchLike], method: str, p: Params) -> list[str]:
    """What every row must satisfy for the properties to be meaningful."""
    out: list[str] = []
    for seed, n in Counter(b.seed_id for b in batches).items():
        if n > 1:
            out.append(f"shape: seed {seed} heads {n} batches (batch_id not unique)")
    for b in batches:
        out += _check_row(graph, b, method, p)
    return out


def _check_row(graph: Graph, b: BatchLike, method: str, p: Params) -> list[str]:
    tag = _label(b)
    if b.method != method:
        return [f"shape: {tag}: method {b.method!r} is not {method!r}"]
    if not _known(graph, b):
        return [f"shape: {tag}: holds ids that are not in the graph"]
    out: list[str] = []
    units = [*b.node_ids, *b.edge_ids]
    if len(set(units)) != len(units):
        out.append(f"shape: {tag}: repeats a unit")
    if not units:
        out.append(f"shape: {tag}: is empty")
    if b.seed_id not in units:
        out.append(f"shape: {tag}: does not hold its seed")
    elif b.seed_id in graph.nodes and graph.nodes[b.seed_id].is_placeholder:
        out.append(f"shape: {tag}: a placeholder is the seed")
    if b.n_units != len(set(units)):
        out.append(f"shape: {tag}: n_units {b.n_units} != {len(set(units))}")
    if b.tokens != batch_tokens(graph, b.node_ids, b.edge_ids):
        out.append(f"shape: {tag}: tokens {b.tokens} is not the sum over its units")
    out += _check_loss(graph, b, method, p)
    if set(b.flags) - {OVER_BUDGET}:
        out.append(f"shape: {tag}: unknown flags {sorted(set(b.flags) - {OVER_BUDGET})}")
    if method in EDGE_METHODS:
        out += _check_edge_row(graph, b)
    return out


def _check_loss(graph: Graph, b: BatchLike, method: str, p: Params) -> list[str]:
    want = batch_loss(graph, b.node_ids, b.edge_ids, loss_mode(method, p.loss_strategy))
    same = (
        b.loss is None
        if want is None
        else b.loss is not None and abs(b.loss - want) <= LOSS_TOLERANCE
    )
    return [] if same else [f"shape: {_label(b)}: loss {b.loss} != {want}"]


def _check_edge_row(graph: Graph, b: BatchLike) -> list[str]:
    """Relation batches carry exactly their endpoints and are seeded by their first edge."""
    tag = _label(b)
    if not b.edge_ids:
        return [] if len(b.node_ids) == 1 else [f"shape: {tag}: edge-less batch of several nodes"]
    out: list[str] = []
    if b.edge_ids[0] != b.seed_id:
        out.append(f"shape: {tag}: the seed is not its first relation")
    ends = {v for e in b.edge_ids for v in graph.endpoints(e)}
    if set(b.node_ids) != ends:
        out.append(f"shape: {tag}: nodes are not exactly the endpoints of its relations")
    return out


# ---------------------------------------------------------------- 1. disjoint


def _check_disjoint(batches: Sequence[BatchLike], method: str) -> list[str]:
    out: list[str] = []
    edge_count = Counter(e for b in batches for e in b.edge_ids)
    out += [f"disjoint: relation {e} is in {n} batches" for e, n in edge_count.items() if n > 1]
    if method in UNIT_METHODS:
        node_count = Counter(v for b in batches for v in b.node_ids)
        out += [f"disjoint: entity {v} is in {n} batches" for v, n in node_count.items() if n > 1]
    return out


# ---------------------------------------------------------------- 2. covered


def _check_covered(
    graph: Graph,
    batches: Sequence[BatchLike],
    method: str,
    p: Params,
    uncovered: Iterable[str] | None,
) -> list[str]:
    out: list[str] = []
    in_batches = {u for b in batches for u in (*b.node_ids, *b.edge_ids)}
    missing = [u for u in graph.units() if u not in in_batches]
    if method in FULL_COVER:
        out += _check_full_cover(graph, batches, method, p, missing)
    if uncovered is not None:
        reported = set(uncovered)
        if reported != set(missing):
            out.append(
                f"covered: uncovered report is wrong (missing {sorted(set(missing) - reported)}, "
                f"extra {sorted(reported - set(missing))})"
            )
    return out


def _check_full_cover(
    graph: Graph, batches: Sequence[BatchLike], method: str, p: Params, missing: list[str]
) -> list[str]:
    """edge_seed and triple place every relation (§6.9); bfs, dfs, unit every unit (§6.5)."""
    if method in (EDGE_SEED, "triple"):
        out = [f"covered: relation {e} is in no batch" for e in missing if graph.is_edge(e)]
        return out + _check_isolated(graph, batches, method, p)
    return [f"covered: unit {u} is in no batch" for u in missing]


def _check_isolated(
    graph: Graph, batches: Sequence[BatchLike], method: str, p: Params
) -> list[str]:
    """Node-only batches are exactly the isolated entities under ``isolated_nodes = add``."""
    alone = {b.node_ids[0] for b in batches if not b.edge_ids and len(b.node_ids) == 1}
    isolated = {v for v, n in graph.nodes.items() if not n.is_placeholder and graph.degree(v) == 0}
    want = isolated if method == EDGE_SEED and p.isolated_nodes == "add" else set()
    out = [f"covered: isolated entity {v} has no batch of its own" for v in sorted(want - alone)]
    return out + [f"covered: entity {v} should not be a batch alone" for v in sorted(alone - want)]


# ---------------------------------------------------------------- 3. connected


def _check_connected(graph: Graph, b: BatchLike) -> list[str]:
    """Units are linked only through entities the batch itself holds (incidence graph)."""
    g = nx.Graph()
    g.add_nodes_from([*b.node_ids, *b.edge_ids])
    held = set(b.node_ids)
    for e in b.edge_ids:
        g.add_edges_from((e, v) for v in graph.endpoints(e) if v in held)
    if g.number_of_nodes() and not nx.is_connected(g):
        return [f"connected: {_label(b)} is not connected"]
    return []


# ---------------------------------------------------------------- 4. within budget


def _check_budget(graph: Graph, b: BatchLike, method: str, p: Params) -> list[str]:
    if method == EDGE_SEED:
        return _budget_edge_seed(graph, b, p)
    if method == ECE_UNIT:
        return _budget_ece_unit(b, p)
    caps = {"bfs": p.max_units_per_community, "dfs": p.max_units_per_community}
    caps |= {"anchor_bfs": p.anchor_max_units, "unit": 1}
    if method in caps:
        out = _no_flags(b)
        if b.n_units > caps[method]:
            out.append(f"budget: {_label(b)}: {b.n_units} units > {caps[method]}")
        if method == "anchor_bfs" and not is_anchor(graph, b.seed_id, p):
            out.append(f"budget: {_label(b)}: the seed is not an anchor")
        return out
    return _no_flags(b) + _path_shape(graph, b, method)


def _no_flags(b: BatchLike) -> list[str]:
    return [f"budget: {_label(b)}: over_budget flag on a method without one"] if b.flags else []


def _over_budget_ok(b: BatchLike, limit: int, single: bool) -> list[str]:
    """``over_budget`` is allowed only on a lone seed that really exceeds the limit."""
    tag = _label(b)
    if OVER_BUDGET in b.flags:
        if not single or b.tokens <= limit:
            return [f"budget: {tag}: over_budget flag on a batch that is not a lone over-long seed"]
        return []
    if b.tokens > limit:
        return [f"budget: {tag}: {b.tokens} tokens > {limit}"]
    return []


def _budget_edge_seed(graph: Graph, b: BatchLike, p: Params) -> list[str]:
    if not b.edge_ids:
        return _no_flags(b)
    tag = _label(b)
    out: list[str] = []
    if p.expand_method == "max_width":
        out += _no_flags(b)
        if len(b.edge_ids) > 1 + p.max_extra_edges:
            out.append(
                f"budget: {tag}: {len(b.edge_ids) - 1} extra relations > {p.max_extra_edges}"
            )
    else:
        out += _over_budget_ok(b, p.max_tokens, tuple(b.edge_ids) == (b.seed_id,))
    depth = _expansion_depth(graph, b, p.bidirectional)
    if depth > p.max_depth:
        out.append(f"budget: {tag}: expansion depth {depth} > {p.max_depth}")
    return out


def _expansion_depth(graph: Graph, b: BatchLike, bidirectional: bool) -> float:
    """Largest layer of a non-seed relation, counting from the seed's frontier (§6.3).

    A relation added in layer k touches a node reached within k−1 hops of the start
    frontier over the batch's own relations, so this bounds what ``max_depth`` allows.
    """
    seed = graph.edges[b.seed_id]
    start = {seed.src_id, seed.dst_id} if bidirectional else {seed.dst_id}
    rest = [e for e in b.edge_ids if e != b.seed_id]
    adj: dict[str, list[str]] = {}
    for e in rest:
        a, c = graph.endpoints(e)
        adj.setdefault(a, []).append(c)
        adj.setdefault(c, []).append(a)
    dist = {v: 0 for v in start}
    queue = deque(start)
    while queue:
        v = queue.popleft()
        for w in adj.get(v, []):
            if w not in dist:
                dist[w] = dist[v] + 1
                queue.append(w)
    layers = [1 + min(dist.get(v, float("inf")) for v in graph.endpoints(e)) for e in rest]
    return max(layers, default=0)


def _budget_ece_unit(b: BatchLike, p: Params) -> list[str]:
    tag = _label(b)
    out = _over_budget_ok(b, p.unit_max_tokens, b.n_units == 1)
    if b.n_units > p.unit_max_units:
        out.append(f"budget: {tag}: {b.n_units} units > {p.unit_max_units}")
    if b.n_units < p.unit_min_units and OVER_BUDGET not in b.flags:
        out.append(f"budget: {tag}: {b.n_units} units < min_units {p.unit_min_units}")
    return out


def _path_shape(graph: Graph, b: BatchLike, method: str) -> list[str]:
    """triple is n–e–n; quintuple is the path v1–u–v2 over two distinct relations."""
    tag = _label(b)
    if method == "triple":
        ok = len(b.edge_ids) == 1 and len(b.node_ids) == 2
        return [] if ok else [f"budget: {tag}: a triple must be one relation and its endpoints"]
    if len(b.edge_ids) != 2 or len(b.node_ids) != 3:
        return [f"budget: {tag}: a quintuple must be two relations and three entities"]
    shared = set(graph.endpoints(b.edge_ids[0])) & set(graph.endpoints(b.edge_ids[1]))
    if shared != {b.node_ids[1]}:
        return [f"budget: {tag}: the middle entity is not the relations' shared centre"]
    return []


# ---------------------------------------------------------------- 5. gaps first


def _check_gaps_first(
    graph: Graph, batches: Sequence[BatchLike], method: str, p: Params
) -> list[str]:
    """Checkable part of property 5: no batch holds a unit that outranks its seed.

    When a seed's batch is fixed, every better-ranked candidate is already assigned, so it
    cannot sit in that batch; and the best-ranked candidate overall must be a seed. Under
    ``ece/unit`` with ``release`` a failed (undersized) seed legitimately rejoins later
    batches, so only ``discard`` is checked there.
    """
    if method == EDGE_SEED:
        rank = graph.ranks(p.sampling, p.loss_strategy)
        return _seed_leads(batches, rank, lambda b: b.edge_ids, list(graph.edges))
    if method in ("bfs", "dfs"):
        rank = graph.rr_ranks()
        return _seed_leads(batches, rank, _units_of, graph.units())
    if method == "anchor_bfs":
        rank = graph.rr_ranks()
        anchors = [v for v in graph.nodes if is_anchor(graph, v, p)]
        return _seed_leads(
            batches, rank, lambda b: [v for v in b.node_ids if is_anchor(graph, v, p)], anchors
        )
    if method == ECE_UNIT and p.undersized == "discard":
        rank = graph.ranks(p.sampling, p.loss_strategy)
        return _seed_leads(batches, rank, _units_of, [])
    return []


def _units_of(b: BatchLike) -> list[str]:
    return [*b.node_ids, *b.edge_ids]


def _seed_leads(
    batches: Sequence[BatchLike],
    rank: dict[str, int],
    members: Callable[[BatchLike], Sequence[str]],
    candidates: list[str],
) -> list[str]:
    out: list[str] = []
    for b in batches:
        ranked = [u for u in members(b) if u in rank]
        if ranked and min(ranked, key=rank.__getitem__) != b.seed_id:
            out.append(f"gaps_first: {_label(b)}: holds a unit ranked before its seed")
    if candidates:
        best = min(candidates, key=rank.__getitem__)
        if best not in {b.seed_id for b in batches}:
            out.append(f"gaps_first: the best-ranked candidate {best} is not a seed")
    return out
