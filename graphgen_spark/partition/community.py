"""`community` partitioning (§6.7): Leiden communities cut into connected pieces.

Runs on one connected component at a time (the engine hands each component to a task),
so Leiden's modularity optimisation never sees two components at once. A component over
``community.max_component_nodes`` is first cut by label propagation (:func:`cut_oversized`,
on GraphFrames or DataFrame joins) and Leiden runs per label; relations between labels are
in no batch and are counted as uncovered. Oversized
communities are split by BFS from their best-ranked unassigned node, which keeps every
piece connected (the reference slices by list position and may disconnect them).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import igraph
import leidenalg
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from graphgen_spark.graph.engines import GraphQueries
from graphgen_spark.partition.graph import Graph, by_rank
from graphgen_spark.partition.reference import Batch, Params, Partition, make_batch

METHOD = "community"


def leiden_communities(graph: Graph, node_ids: list[str], seed: int) -> list[list[str]]:
    """Modularity Leiden over the subgraph induced by ``node_ids`` (deterministic for a seed)."""
    order = sorted(node_ids)
    index = {v: i for i, v in enumerate(order)}
    pairs = sorted(
        (index[e.src_id], index[e.dst_id])
        for e in graph.edges.values()
        if e.src_id in index and e.dst_id in index
    )
    g = igraph.Graph(n=len(order), edges=pairs)
    part = leidenalg.find_partition(g, leidenalg.ModularityVertexPartition, seed=seed)
    return [[order[i] for i in members] for members in part]


def _pieces(
    graph: Graph, members: list[str], max_size: int, rank: dict[str, int]
) -> list[list[str]]:
    """Connected pieces of at most ``max_size`` nodes: BFS from the best-ranked unassigned node
    over the community's unassigned nodes, repeated."""
    left = set(members)
    pieces = []
    while left:
        start = min(left, key=rank.__getitem__)
        piece, queue = [start], deque([start])
        left.discard(start)
        while queue and len(piece) < max_size:
            x = queue.popleft()
            for y in by_rank([v for v in graph.nx.adj[x] if v in left], rank):
                if len(piece) == max_size:
                    break
                piece.append(y)
                left.discard(y)
                queue.append(y)
        pieces.append(piece)
    return pieces


def community(graph: Graph, params: Params, max_size: int, seed: int) -> Partition:
    """Batches = pieces with their induced relations; pieces without a relation, crossing
    relations and degree-0 nodes are reported uncovered."""
    rank = graph.ranks(params.sampling, params.loss_strategy)
    linked = [v for v in graph.nodes if graph.degree(v) > 0]
    batches: list[Batch] = []
    if linked:
        comms = leiden_communities(graph, linked, seed)
        comms.sort(key=lambda c: min(rank[v] for v in c))
        for members in comms:
            for piece in _pieces(graph, members, max_size, rank):
                inside = set(piece)
                edges = by_rank(
                    {
                        graph.nx.adj[v][w]["edge_id"]
                        for v in piece
                        for w in graph.nx.adj[v]
                        if w in inside
                    },
                    rank,
                )
                if edges:
                    batches.append(
                        make_batch(graph, METHOD, piece[0], piece, edges, params.loss_strategy)
                    )
    in_batch_nodes = {v for b in batches for v in b.node_ids}
    in_batch_edges = {e for b in batches for e in b.edge_ids}
    return Partition(
        METHOD,
        tuple(batches),
        tuple(sorted(v for v in graph.units() if v in graph.nodes and v not in in_batch_nodes)),
        tuple(sorted(e for e in graph.edges if e not in in_batch_edges)),
    )


@dataclass(frozen=True)
class Cut:
    """Nodes and edges with ``component_id`` replaced by the label group for cut components;
    ``groups`` maps ``group_id`` back to ``component_id`` (None when nothing was cut)."""

    nodes: DataFrame
    edges: DataFrame
    groups: DataFrame | None = None
    n_cut: int = 0

    def restore(self, batches: DataFrame, graph_engine: str) -> DataFrame:
        """Batches of cut groups get their component id back and name label propagation."""
        assert self.groups is not None
        g = self.groups.withColumnRenamed("component_id", "_component")
        return (
            batches.join(g.withColumnRenamed("group_id", "component_id"), "component_id", "left")
            .withColumn(
                "graph_engine",
                F.when(F.col("_component").isNotNull(), F.lit(graph_engine)).otherwise(
                    F.col("graph_engine")
                ),
            )
            .withColumn("component_id", F.coalesce("_component", "component_id"))
            .drop("_component")
        )


def cut_oversized(
    nodes: DataFrame, edges: DataFrame, max_nodes: int, queries: GraphQueries, iters: int
) -> Cut:
    """Cut every component of more than ``max_nodes`` nodes by label propagation (§6.7)."""
    sizes = nodes.groupBy("component_id").count()
    big = [r["component_id"] for r in sizes.filter(F.col("count") > max_nodes).collect()]
    if not big:
        return Cut(nodes, edges)
    inside = F.col("component_id").isin(big)
    labels = queries.label_propagation(
        nodes.filter(inside).select(F.col("entity_id").alias("id")),
        edges.filter(inside).select(F.col("src_id").alias("src"), F.col("dst_id").alias("dst")),
        iters,
    )
    grouped = nodes.join(labels.withColumnRenamed("id", "entity_id"), "entity_id", "left")
    group = F.when(F.col("label").isNotNull(), F.concat_ws("/", "component_id", "label")).otherwise(
        F.col("component_id")
    )
    new_nodes = grouped.withColumn("group_id", group)
    groups = (
        new_nodes.filter(F.col("label").isNotNull()).select("group_id", "component_id").distinct()
    )
    node_group = new_nodes.select(F.col("entity_id").alias("src_id"), F.col("group_id").alias("gs"))
    new_edges = (
        edges.join(node_group, "src_id")
        .join(node_group.withColumnsRenamed({"src_id": "dst_id", "gs": "gd"}), "dst_id")
        .filter(F.col("gs") == F.col("gd"))  # relations between labels fall out
        .withColumn("component_id", F.col("gs"))
        .drop("gs", "gd")
    )
    return Cut(
        new_nodes.withColumn("component_id", F.col("group_id")).drop("group_id", "label"),
        new_edges,
        groups,
        len(big),
    )
