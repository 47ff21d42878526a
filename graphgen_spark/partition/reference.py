"""Single-process sequential partitioners, line by line after method.md §6.2–6.8.

These are the oracle: the exact distributed engines (§6.9) must reproduce their batches,
the approximate ones must meet the contract they meet. Clarity beats speed here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from graphgen_spark.ids import h
from graphgen_spark.partition.graph import (
    LOSS_STRATEGIES,
    SAMPLINGS,
    Graph,
    batch_loss,
    batch_tokens,
    by_rank,
    check_choice,
)

EDGE_SEED = "ece/edge_seed"
ECE_UNIT = "ece/unit"
METHODS = (EDGE_SEED, ECE_UNIT, "bfs", "dfs", "anchor_bfs", "triple", "quintuple", "unit")
UNIT_METHODS = frozenset({ECE_UNIT, "bfs", "dfs", "anchor_bfs", "unit"})
OVER_BUDGET = "over_budget"


@dataclass(frozen=True)
class Params:
    """Partition settings with the defaults of §9; each method reads only its own."""

    sampling: str = "max_loss"
    loss_strategy: str = "only_edge"
    expand_method: str = "max_width"
    bidirectional: bool = True
    max_depth: int = 1
    max_extra_edges: int = 2
    max_tokens: int = 256
    isolated_nodes: str = "ignore"
    unit_max_units: int = 20
    unit_min_units: int = 5
    unit_max_tokens: int = 10240
    undersized: str = "release"
    max_units_per_community: int = 1
    anchor_type: str | None = None
    anchor_ids: tuple[str, ...] = ()
    anchor_max_units: int = 10

    def __post_init__(self) -> None:
        check_choice("sampling", self.sampling, SAMPLINGS)
        check_choice("loss_strategy", self.loss_strategy, LOSS_STRATEGIES)
        check_choice("expand_method", self.expand_method, ("max_width", "max_tokens"))
        check_choice("isolated_nodes", self.isolated_nodes, ("add", "ignore"))
        check_choice("undersized", self.undersized, ("release", "discard"))
        for name in ("max_depth", "max_extra_edges", "max_tokens", "unit_min_units"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("unit_max_units", "max_units_per_community", "anchor_max_units"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


@dataclass(frozen=True)
class Batch:
    """One ``subgraphs`` row (§6.1) before ids and difficulty are attached."""

    method: str
    seed_id: str
    node_ids: tuple[str, ...]
    edge_ids: tuple[str, ...]
    n_units: int
    tokens: int
    loss: float | None
    flags: tuple[str, ...] = ()

    def batch_id(self, config_hash: str) -> str:
        return batch_id(self.method, config_hash, self.seed_id)


@dataclass(frozen=True)
class Partition:
    """A method's batches in emission order plus the units no batch holds (§1 rule 4)."""

    method: str
    batches: tuple[Batch, ...]
    uncovered_nodes: tuple[str, ...] = ()
    uncovered_edges: tuple[str, ...] = ()


def batch_id(method: str, config_hash: str, seed_id: str) -> str:
    """``batch_id = h(method, config_hash, seed_id)`` (§6.1)."""
    return h(method, config_hash, seed_id)


def loss_mode(method: str, loss_strategy: str) -> str:
    """Unit methods average every unit like ``both`` (§6.1)."""
    return "both" if method in UNIT_METHODS else loss_strategy


def make_batch(
    graph: Graph,
    method: str,
    seed_id: str,
    node_ids: Sequence[str],
    edge_ids: Sequence[str],
    loss_strategy: str,
    flags: tuple[str, ...] = (),
) -> Batch:
    return Batch(
        method=method,
        seed_id=seed_id,
        node_ids=tuple(node_ids),
        edge_ids=tuple(edge_ids),
        n_units=len(node_ids) + len(edge_ids),
        tokens=batch_tokens(graph, node_ids, edge_ids),
        loss=batch_loss(graph, node_ids, edge_ids, loss_mode(method, loss_strategy)),
        flags=flags,
    )


def partition(graph: Graph, method: str, params: Params | None = None) -> Partition:
    """Run ``method`` (one of :data:`METHODS`) with ``params`` (defaults of §9)."""
    params = params or Params()
    runners: dict[str, Callable[[Graph, Params], Partition]] = {
        EDGE_SEED: ece_edge_seed,
        ECE_UNIT: ece_unit,
        "bfs": bfs,
        "dfs": dfs,
        "anchor_bfs": anchor_bfs,
        "triple": triple,
        "quintuple": quintuple,
        "unit": unit,
    }
    if method not in runners:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return runners[method](graph, params)


# ---------------------------------------------------------------- ece/edge_seed §6.2–6.4


def ece_edge_seed(graph: Graph, params: Params | None = None) -> Partition:
    """Greedy seed-and-expand over relations by rank; every relation lands exactly once."""
    p = params or Params()
    rank = graph.ranks(p.sampling, p.loss_strategy)
    taken: set[str] = set()
    batches: list[Batch] = []
    for s in by_rank(graph.edges, rank):
        if s in taken:
            continue
        taken.add(s)
        edges = [s, *expand(graph, s, taken, rank, p)]
        flags = _edge_seed_flags(graph, edges, p)
        nodes = _endpoints_in_order(graph, edges)
        batches.append(make_batch(graph, EDGE_SEED, s, nodes, edges, p.loss_strategy, flags))
    isolated = by_rank(
        (v for v, n in graph.nodes.items() if not n.is_placeholder and graph.degree(v) == 0), rank
    )
    if p.isolated_nodes == "add":
        batches += [make_batch(graph, EDGE_SEED, v, [v], [], p.loss_strategy) for v in isolated]
    return _partition(graph, EDGE_SEED, batches)


def expand(graph: Graph, seed: str, taken: set[str], rank: dict[str, int], p: Params) -> list[str]:
    """The seed's extra relations by ``p.expand_method`` (§6.3 / §6.4), added to ``taken``."""
    if p.expand_method == "max_width":
        return _expand_width(graph, seed, taken, rank, p)
    return _expand_tokens(graph, seed, taken, rank, p)


def _edge_seed_flags(graph: Graph, edges: list[str], p: Params) -> tuple[str, ...]:
    """Only a seed whose own triple exceeds ``max_tokens`` can end up over budget."""
    if p.expand_method != "max_tokens":
        return ()
    over = batch_tokens(graph, _endpoints_in_order(graph, edges), edges) > p.max_tokens
    return (OVER_BUDGET,) if over else ()


def cands(
    graph: Graph, frontier: Iterable[str], taken: set[str], rank: dict[str, int]
) -> list[str]:
    """The distinct untaken relations touching the frontier, by rank (§6.2)."""
    found = {e for v in frontier for e in graph.incident(v) if e not in taken}
    return by_rank(found, rank)


def _start_frontier(graph: Graph, seed: str, bidirectional: bool) -> set[str]:
    e = graph.edges[seed]
    return {e.src_id, e.dst_id} if bidirectional else {e.dst_id}


def _endpoints_of(graph: Graph, edges: Iterable[str]) -> set[str]:
    return {v for e in edges for v in graph.endpoints(e)}


def _expand_width(
    graph: Graph, seed: str, taken: set[str], rank: dict[str, int], p: Params
) -> list[str]:
    """§6.3: whole frontier layers by rank until ``max_extra_edges`` or ``max_depth``."""
    frontier = _start_frontier(graph, seed, p.bidirectional)
    budget = p.max_extra_edges
    added: list[str] = []
    for _ in range(p.max_depth):
        if budget == 0:
            break
        layer = cands(graph, frontier, taken, rank)
        if not layer:
            break
        if len(layer) >= budget:
            chosen = layer[:budget]
            taken.update(chosen)
            added += chosen
            break
        taken.update(layer)
        added += layer
        budget -= len(layer)
        frontier = _endpoints_of(graph, layer) - frontier
    return added


def _expand_tokens(
    graph: Graph, seed: str, taken: set[str], rank: dict[str, int], p: Params
) -> list[str]:
    """§6.4: add relations by rank while their new descriptions fit; first overflow stops."""
    frontier = _start_frontier(graph, seed, p.bidirectional)
    counted = set(graph.endpoints(seed))
    budget = p.max_tokens - batch_tokens(graph, counted, [seed])
    added: list[str] = []
    for _ in range(p.max_depth):
        if budget <= 0:
            break
        layer = cands(graph, frontier, taken, rank)
        if not layer:
            break
        for e in layer:
            new = set(graph.endpoints(e)) - counted
            cost = graph.tokens(e) + sum(graph.tokens(v) for v in new)
            if cost > budget:
                return added
            budget -= cost
            taken.add(e)
            added.append(e)
            counted |= new
        frontier = _endpoints_of(graph, layer) - frontier
    return added


def _endpoints_in_order(graph: Graph, edges: Iterable[str]) -> list[str]:
    """Nodes by first appearance along the edge list, so the seed's endpoints come first."""
    return list(dict.fromkeys(v for e in edges for v in graph.endpoints(e)))


# ---------------------------------------------------------------- ece/unit §6.6


def ece_unit(graph: Graph, params: Params | None = None) -> Partition:
    """Units by rank grow BFS communities under a unit cap and a token fit check."""
    p = params or Params()
    rank = graph.ranks(p.sampling, p.loss_strategy)
    used: set[str] = set()
    tried: set[str] = set()
    batches: list[Batch] = []
    for s in by_rank(graph.units(), rank):
        if s in used or s in tried:
            continue
        community = _grow_fitting(graph, s, used, rank, p)
        if graph.tokens(s) > p.unit_max_tokens:
            batches.append(_unit_batch(graph, ECE_UNIT, s, community, p, (OVER_BUDGET,)))
        elif len(community) < p.unit_min_units:
            tried.add(s)
            if p.undersized == "release":
                used -= set(community)
        else:
            batches.append(_unit_batch(graph, ECE_UNIT, s, community, p))
    return _partition(graph, ECE_UNIT, batches)


def _grow_fitting(
    graph: Graph, seed: str, used: set[str], rank: dict[str, int], p: Params
) -> list[str]:
    """BFS that skips neighbours that do not fit instead of stopping (the fit check)."""
    community = [seed]
    total = graph.tokens(seed)
    used.add(seed)
    queue = deque([seed])
    while queue and len(community) < p.unit_max_units and total < p.unit_max_tokens:
        x = queue.popleft()
        for y in unit_neighbours(graph, x, used, rank):
            if len(community) == p.unit_max_units:
                break
            if total + graph.tokens(y) > p.unit_max_tokens:
                continue
            community.append(y)
            used.add(y)
            total += graph.tokens(y)
            queue.append(y)
    return community


def unit_neighbours(graph: Graph, x: str, used: set[str], rank: dict[str, int]) -> list[str]:
    """Unused neighbours of a unit by rank: node → incident relations, relation → endpoints.

    Placeholders are not units (§4.3), so a relation never pulls one in.
    """
    if graph.is_edge(x):
        near: Iterable[str] = (v for v in graph.endpoints(x) if not graph.nodes[v].is_placeholder)
    else:
        near = graph.incident(x)
    return by_rank((y for y in near if y not in used), rank)


def _unit_batch(
    graph: Graph,
    method: str,
    seed: str,
    community: list[str],
    p: Params,
    flags: tuple[str, ...] = (),
) -> Batch:
    nodes = [u for u in community if not graph.is_edge(u)]
    edges = [u for u in community if graph.is_edge(u)]
    return make_batch(graph, method, seed, nodes, edges, p.loss_strategy, flags)


# ---------------------------------------------------------------- bfs, dfs, anchor_bfs §6.5, §6.8


def bfs(graph: Graph, params: Params | None = None) -> Partition:
    """Every unused unit, in ``rr`` order, grows a breadth-first community."""
    p = params or Params()
    return _grow_all(graph, "bfs", graph.units(), p.max_units_per_community, False, p)


def dfs(graph: Graph, params: Params | None = None) -> Partition:
    """Like :func:`bfs` with a stack; a node pushes only its first unused relation (a walk)."""
    p = params or Params()
    return _grow_all(graph, "dfs", graph.units(), p.max_units_per_community, True, p)


def anchor_bfs(graph: Graph, params: Params | None = None) -> Partition:
    """BFS communities seeded only at anchors; other units are pulled in, never seed."""
    p = params or Params()
    if not p.anchor_type and not p.anchor_ids:
        raise ValueError("anchor_bfs needs anchor_type or anchor_ids")
    anchors = [v for v in graph.nodes if is_anchor(graph, v, p)]
    return _grow_all(graph, "anchor_bfs", anchors, p.anchor_max_units, False, p)


def is_anchor(graph: Graph, node_id: str, p: Params) -> bool:
    """Type contains ``anchor_type`` (case-insensitive) or id listed; never a placeholder."""
    n = graph.nodes[node_id]
    if n.is_placeholder:
        return False
    typed = bool(p.anchor_type) and p.anchor_type.casefold() in n.type.casefold()
    return typed or node_id in p.anchor_ids


def _grow_all(
    graph: Graph, method: str, seeds: Iterable[str], cap: int, stack: bool, p: Params
) -> Partition:
    rank = graph.rr_ranks()
    used: set[str] = set()
    batches: list[Batch] = []
    for s in by_rank(seeds, rank):
        if s in used:
            continue
        community = _grow(graph, s, used, rank, cap, stack)
        batches.append(_unit_batch(graph, method, s, community, p))
    return _partition(graph, method, batches)


def _grow(
    graph: Graph, seed: str, used: set[str], rank: dict[str, int], cap: int, stack: bool
) -> list[str]:
    """A unit joins when it is popped unused, so ``stack`` gives a true depth-first walk.

    The stack is filled in reverse so the best ``rr`` neighbour is visited first. For the
    queue, joining at pop gives the same community as joining at discovery.
    """
    community: list[str] = []
    pending = deque([seed])
    while pending and len(community) < cap:
        x = pending.pop() if stack else pending.popleft()
        if x in used:
            continue
        used.add(x)
        community.append(x)
        near = unit_neighbours(graph, x, used, rank)
        if stack:
            pending.extend(reversed(near[:1] if not graph.is_edge(x) else near))
        else:
            pending.extend(near)
    return community


# ---------------------------------------------------------------- triple, quintuple, unit §6.8


def triple(graph: Graph, params: Params | None = None) -> Partition:
    """Each relation with its endpoints, by rank; isolated nodes are ignored."""
    p = params or Params()
    rank = graph.ranks(p.sampling, p.loss_strategy)
    batches = [
        make_batch(graph, "triple", e, graph.endpoints(e), [e], p.loss_strategy)
        for e in by_rank(graph.edges, rank)
    ]
    return _partition(graph, "triple", batches)


def quintuple(graph: Graph, params: Params | None = None) -> Partition:
    """BFS over nodes in ``rr`` order pairing each centre's unused relations by ``rr``.

    The batch is seeded by its first relation: a centre can head several batches, a
    relation only one, so ``batch_id`` stays unique.
    """
    p = params or Params()
    rank = graph.rr_ranks()
    visited: set[str] = set()
    used: set[str] = set()
    batches: list[Batch] = []
    for start in by_rank(graph.nodes, rank):
        if start in visited:
            continue
        visited.add(start)
        queue = deque([start])
        while queue:
            u = queue.popleft()
            incident = by_rank(graph.incident(u), rank)
            free = [e for e in incident if e not in used]
            for e1, e2 in zip(free[0::2], free[1::2], strict=False):
                used |= {e1, e2}
                path = [graph.edges[e1].other(u), u, graph.edges[e2].other(u)]
                batches.append(make_batch(graph, "quintuple", e1, path, [e1, e2], p.loss_strategy))
            for e in incident:
                v = graph.edges[e].other(u)
                if v not in visited:
                    visited.add(v)
                    queue.append(v)
    return _partition(graph, "quintuple", batches)


def unit(graph: Graph, params: Params | None = None) -> Partition:
    """Every unit alone, by rank; a relation's endpoints are named in its own line (§7.1)."""
    p = params or Params()
    rank = graph.ranks(p.sampling, p.loss_strategy)
    batches = [_unit_batch(graph, "unit", u, [u], p) for u in by_rank(graph.units(), rank)]
    return _partition(graph, "unit", batches)


# ---------------------------------------------------------------- shared


def _partition(graph: Graph, method: str, batches: list[Batch]) -> Partition:
    nodes_in = {v for b in batches for v in b.node_ids}
    edges_in = {e for b in batches for e in b.edge_ids}
    return Partition(
        method=method,
        batches=tuple(batches),
        uncovered_nodes=tuple(
            sorted(v for v in graph.units() if not graph.is_edge(v) and v not in nodes_in)
        ),
        uncovered_edges=tuple(sorted(e for e in graph.edges if e not in edges_in)),
    )
