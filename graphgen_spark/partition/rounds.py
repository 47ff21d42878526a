"""The "rounds, exact" engine of method.md §6.9: `ece/edge_seed` on giant components,
equal to the sequential reference, for both expand methods.

A seed's batch only ever holds untaken relations within line-graph distance ``max_depth`` of
it (layer ``d`` touches the endpoints of layer ``d − 1``). So a relation whose rank is the
best among the untaken relations within distance ``2 · max_depth`` is a seed of the
sequential run, and its batch is its expansion against the current ``taken`` set: every
better-ranked untaken relation is farther away, so neither it nor any batch it starts can
reach this seed's neighbourhood. Such *active* seeds are pairwise more than ``2 · max_depth``
apart, so their neighbourhoods (balls of radius ``max_depth``) are disjoint. Each round:

1. **Active seeds**: the minimum rank within distance ``2 · max_depth``, by alternating
   min-aggregations over the node–relation incidence of the untaken relations.
2. **Balls**: every untaken relation within distance ``max_depth`` of an active seed is
   labelled with that seed (frontier joins; the labels cannot collide, see above).
3. **Expand**: per seed (``applyInPandas``), the reference's own expansion
   (:func:`graphgen_spark.partition.reference.expand`, ``max_width`` or ``max_tokens``) on
   the seed's ball, which holds everything the expansion can look at.
4. The batches are final; their relations leave the untaken set.

By induction every batch equals the sequential one; rounds only change the order in which
they are found. :class:`ExactRounds` is a
:class:`graphgen_spark.partition.distributed.RoundEngine`: after ``max_rounds`` rounds, or
below ``collect_threshold`` untaken relations, the driver finishes with the reference on
what is left (still exact). Compared with the
claim engine (:mod:`graphgen_spark.partition.claim`) it places fewer seeds per round (only
local minima of a larger neighbourhood), and a hub's whole ball is expanded in one task;
it is the engine for ``max_tokens``, whose running token sum the claim engine cannot prune.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from graphgen_spark.partition.distributed import RoundEngine
from graphgen_spark.partition.graph import Edge, Graph, Node
from graphgen_spark.partition.reference import EDGE_SEED, Params, expand

ENGINE = "rounds"
PICK_SCHEMA = "seed_id string, edge_id string, pos int"


def unsupported(method: str, params: Params) -> str | None:
    """Why the rounds engine cannot run ``method``; None when it can."""
    if method != EDGE_SEED:
        return f"the rounds engine implements {EDGE_SEED} only, not {method}"
    return None


def reach(params: Params) -> int:
    """How far (line-graph hops) a seed's batch can reach: 0 when it is the seed alone."""
    if params.max_depth == 0:
        return 0
    if params.expand_method == "max_width" and params.max_extra_edges == 0:
        return 0
    return params.max_depth


class ExactRounds(RoundEngine):
    """Exact batches of ``ece/edge_seed`` by rounds; ``graph`` answers the neighbourhood
    query of the balls."""

    name = ENGINE
    graph_ops = ("neighbourhood",)
    unsupported = staticmethod(unsupported)

    def one_round(self, live: DataFrame, nodes: DataFrame, edges: DataFrame) -> DataFrame:
        depth = reach(self.params)
        seeds = self.keep(self._active(live, 2 * depth))
        if depth:
            balls = self._balls(live, seeds, depth)
        else:  # every relation is its own batch
            balls = seeds.select(F.col("seed_id").alias("edge_id"), "seed_id")
        return _expand(balls, live, _unit_tokens(nodes, edges, self.params), self.params)

    def _active(self, live: DataFrame, radius: int) -> DataFrame:
        """``seed_id`` of every untaken relation with the best rank within ``radius`` hops."""
        best = live.select("edge_id", "src_id", "dst_id", "rank", F.col("rank").alias("m"))
        for _ in range(radius):
            at_node = (
                best.select(F.explode(F.array("src_id", "dst_id")).alias("node"), "m")
                .groupBy("node")
                .agg(F.min("m").alias("nm"))
            )
            best = self.keep(
                best.join(at_node.withColumnsRenamed({"node": "src_id", "nm": "ms"}), "src_id")
                .join(at_node.withColumnsRenamed({"node": "dst_id", "nm": "md"}), "dst_id")
                .select("edge_id", "src_id", "dst_id", "rank", F.least("m", "ms", "md").alias("m"))
            )
        return best.filter(F.col("m") == F.col("rank")).select(F.col("edge_id").alias("seed_id"))

    def _balls(self, live: DataFrame, seeds: DataFrame, depth: int) -> DataFrame:
        """``(edge_id, seed_id)``: the untaken relations within ``depth`` hops of each seed.

        A relation is within line-graph distance ``depth`` of a seed when it touches a node
        within ``depth - 1`` hops of the seed's endpoints: a k-hop neighbourhood query."""
        ends = seeds.join(live.withColumnRenamed("edge_id", "seed_id"), "seed_id").select(
            "seed_id", F.explode(F.array("src_id", "dst_id")).alias("id")
        )
        e = live.select(F.col("src_id").alias("src"), F.col("dst_id").alias("dst"))
        v = e.select(F.explode(F.array("src", "dst")).alias("id")).distinct()
        near = self.graph.neighbourhood(v, e, ends, depth - 1)
        incidence = live.select(F.explode(F.array("src_id", "dst_id")).alias("id"), "edge_id")
        return self.keep(near.join(incidence, "id").select("edge_id", "seed_id").distinct())


def _unit_tokens(nodes: DataFrame, edges: DataFrame, params: Params) -> DataFrame | None:
    """``(unit_id, tokens)`` for ``max_tokens``; the width expansion needs none."""
    if params.expand_method != "max_tokens":
        return None
    return nodes.select(F.col("entity_id").alias("unit_id"), "tokens").unionByName(
        edges.select(F.col("edge_id").alias("unit_id"), "tokens")
    )


def _expand(
    balls: DataFrame, live: DataFrame, tokens: DataFrame | None, params: Params
) -> DataFrame:
    """``(seed_id, edge_id, pos)``: each seed's batch by the reference expansion on its ball."""
    rows = balls.join(live, "edge_id")
    if tokens is None:
        zero = F.lit(0).cast("long")
        rows = rows.select(
            "seed_id", "edge_id", "src_id", "dst_id", "rank", zero.alias("t"), zero.alias("ts")
        ).withColumn("td", F.col("ts"))
    else:
        t = tokens.withColumn("tokens", F.coalesce(F.col("tokens").cast("long"), F.lit(0)))
        rows = (
            rows.join(t.withColumnsRenamed({"unit_id": "edge_id", "tokens": "t"}), "edge_id")
            .join(t.withColumnsRenamed({"unit_id": "src_id", "tokens": "ts"}), "src_id", "left")
            .join(t.withColumnsRenamed({"unit_id": "dst_id", "tokens": "td"}), "dst_id", "left")
            .select("seed_id", "edge_id", "src_id", "dst_id", "rank", "t", "ts", "td")
        )
    return rows.groupBy("seed_id").applyInPandas(_ball_expansion(params), PICK_SCHEMA)


def _ball_expansion(params: Params) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def run(ball: pd.DataFrame) -> pd.DataFrame:
        seed = ball["seed_id"].iloc[0]
        node_tokens: dict[str, int] = {}
        for r in ball.itertuples(index=False):
            node_tokens[r.src_id] = int(r.ts or 0)
            node_tokens[r.dst_id] = int(r.td or 0)
        graph = Graph(
            [Node(v, t, None, "") for v, t in node_tokens.items()],
            [
                Edge(r.edge_id, r.src_id, r.dst_id, int(r.t or 0), None, "")
                for r in ball.itertuples(index=False)
            ],
        )
        rank = dict(zip(ball["edge_id"], ball["rank"].astype(int), strict=True))
        edges = [seed, *expand(graph, seed, {seed}, rank, params)]
        return pd.DataFrame(
            {"seed_id": seed, "edge_id": edges, "pos": list(range(len(edges)))}
        ).astype({"pos": "int32"})

    return run
