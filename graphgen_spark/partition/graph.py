"""In-memory knowledge graph and the unit order of method.md §6.1.

Entities and relations are both *units*; their ids share one namespace (content hashes in
production). Relations are undirected and keyed by the sorted endpoint pair, so a
``networkx.Graph`` (no multi-edges) is an exact model: the edge attribute ``edge_id`` maps
an adjacency back to its relation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import networkx as nx

from graphgen_spark.ids import rr as _rr

SAMPLINGS = ("max_loss", "min_loss", "random")
LOSS_STRATEGIES = ("only_edge", "both")

SortKey = tuple[object, ...]


def unit_rr(seed: int | str, unit_id: str) -> str:
    """The project's hash rank ``rr = h(run.seed, id)`` (§0) for building nodes and edges."""
    return _rr(seed, unit_id)


@dataclass(frozen=True)
class Node:
    """An entity; ``tokens`` is len(description) as measured at merge (§0)."""

    entity_id: str
    tokens: int
    loss: float | None
    rr: str
    name: str = ""
    is_placeholder: bool = False
    type: str = ""


@dataclass(frozen=True)
class Edge:
    """An undirected relation, ``src_id < dst_id`` as stored by the merge (§4.2)."""

    edge_id: str
    src_id: str
    dst_id: str
    tokens: int
    loss: float | None
    rr: str

    def __post_init__(self) -> None:
        if not self.src_id < self.dst_id:
            raise ValueError(f"edge {self.edge_id}: need src_id < dst_id (sorted, no self-loop)")

    @property
    def endpoints(self) -> tuple[str, str]:
        return (self.src_id, self.dst_id)

    def other(self, node_id: str) -> str:
        """The endpoint that is not ``node_id``."""
        return self.dst_id if node_id == self.src_id else self.src_id


class Graph:
    """Nodes, edges and their adjacency, validated once so the algorithms can trust it."""

    def __init__(self, nodes: Iterable[Node], edges: Iterable[Edge]) -> None:
        self.nodes: dict[str, Node] = {}
        self.edges: dict[str, Edge] = {}
        self.nx = nx.Graph()
        for n in nodes:
            if n.entity_id in self.nodes:
                raise ValueError(f"duplicate entity {n.entity_id}")
            self.nodes[n.entity_id] = n
            self.nx.add_node(n.entity_id, node=n)
        for e in edges:
            self._add_edge(e)
        self._order_cache: dict[tuple[str, str], dict[str, int]] = {}

    def _add_edge(self, e: Edge) -> None:
        if e.edge_id in self.edges or e.edge_id in self.nodes:
            raise ValueError(f"duplicate unit id {e.edge_id}")
        for v in e.endpoints:
            if v not in self.nodes:
                raise ValueError(f"edge {e.edge_id}: unknown endpoint {v}")
        if self.nx.has_edge(e.src_id, e.dst_id):
            raise ValueError(f"edge {e.edge_id}: a second relation between {e.endpoints}")
        self.edges[e.edge_id] = e
        self.nx.add_edge(e.src_id, e.dst_id, edge_id=e.edge_id)

    def is_edge(self, unit_id: str) -> bool:
        return unit_id in self.edges

    def incident(self, node_id: str) -> list[str]:
        """Relations touching a node, in adjacency order (callers sort by rank)."""
        adj = self.nx.adj[node_id]
        return [adj[v]["edge_id"] for v in adj]

    def degree(self, node_id: str) -> int:
        return self.nx.degree(node_id)

    def endpoints(self, edge_id: str) -> tuple[str, str]:
        return self.edges[edge_id].endpoints

    def tokens(self, unit_id: str) -> int:
        u = self.edges.get(unit_id) or self.nodes[unit_id]
        return u.tokens

    def loss(self, unit_id: str) -> float | None:
        u = self.edges.get(unit_id) or self.nodes[unit_id]
        return u.loss

    def units(self) -> list[str]:
        """Seedable units: non-placeholder entities and all relations (§4.3, §6.5)."""
        return [v for v, n in self.nodes.items() if not n.is_placeholder] + list(self.edges)

    def sort_value(self, unit_id: str, loss_strategy: str) -> float | None:
        """The loss a unit is ordered by (§6.1); ``both`` sums the known parts of a relation."""
        if unit_id in self.nodes or loss_strategy == "only_edge":
            return self.loss(unit_id)
        e = self.edges[unit_id]
        parts = [x for x in (self.loss(e.src_id), self.loss(e.dst_id), e.loss) if x is not None]
        return sum(parts) if parts else None

    def sort_key(self, unit_id: str, sampling: str, loss_strategy: str) -> SortKey:
        """Total order of §6.1: loss (NULL last), then ``rr``, then id."""
        u = self.edges.get(unit_id) or self.nodes[unit_id]
        tail = (u.rr, unit_id)
        if sampling == "random":
            return tail
        value = self.sort_value(unit_id, loss_strategy)
        if value is None:
            return (1, 0.0, *tail)
        return (0, -value if sampling == "max_loss" else value, *tail)

    def ranks(self, sampling: str, loss_strategy: str) -> dict[str, int]:
        """rank(x) over every node and edge; one order, so sub-orders agree with it."""
        check_choice("sampling", sampling, SAMPLINGS)
        check_choice("loss_strategy", loss_strategy, LOSS_STRATEGIES)
        key = (sampling, loss_strategy)
        if key not in self._order_cache:
            ids = sorted(
                [*self.nodes, *self.edges], key=lambda u: self.sort_key(u, sampling, loss_strategy)
            )
            self._order_cache[key] = {u: i for i, u in enumerate(ids)}
        return self._order_cache[key]

    def rr_ranks(self) -> dict[str, int]:
        """The ``rr`` order used where the method says "in rr order"."""
        return self.ranks("random", "only_edge")


def by_rank(ids: Iterable[str], rank: dict[str, int]) -> list[str]:
    return sorted(ids, key=rank.__getitem__)


def batch_loss(
    graph: Graph, node_ids: Sequence[str], edge_ids: Sequence[str], mode: str
) -> float | None:
    """Batch loss of §6.1; ``mode`` is ``only_edge`` or ``both`` (also used by unit methods).

    ``only_edge`` averages the edges that have a loss and falls back to the nodes only when
    none has, so node-only batches never divide by zero.
    """
    edge_losses = [x for e in dict.fromkeys(edge_ids) if (x := graph.loss(e)) is not None]
    node_losses = [x for v in dict.fromkeys(node_ids) if (x := graph.loss(v)) is not None]
    pool = (edge_losses or node_losses) if mode == "only_edge" else edge_losses + node_losses
    return sum(pool) / len(pool) if pool else None


def batch_tokens(graph: Graph, node_ids: Iterable[str], edge_ids: Iterable[str]) -> int:
    """Σ len over distinct units (§6.1)."""
    return sum(graph.tokens(u) for u in {*node_ids, *edge_ids})


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
