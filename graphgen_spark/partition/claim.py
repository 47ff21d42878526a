"""The "rounds, by claim" engine of method.md §6.9: `ece/edge_seed` on giant components.

The per-component engine runs the sequential algorithm of a whole component in one task;
a component too large for one task runs here instead, as Spark joins and windows over the
untaken relations, with only the loop over rounds on the driver. Each round:

1. **Prune**: every node keeps its best ``max_extra_edges + 2`` untaken relations (by rank).
   A seed's expansion only ever picks from these (at most ``max_extra_edges`` picks, at most
   ``max_extra_edges + 1`` of a node's better relations already in the seed's own batch), so
   the proposals below are exact while a round costs O(relations · max_extra_edges).
2. **Propose**: every untaken relation ``s`` computes its §6.3 expansion against the
   ``taken`` set of the round's start: frontier layers (``bidirectional``, ``max_depth``),
   candidates by rank (a rank-ordered window per seed), cut at the remaining budget.
3. **Claim**: ``s`` claims itself and its expansion; each claimed relation goes to its
   minimum-rank claimant; a seed is **accepted only if it wins all its claims**.
4. Accepted batches are disjoint and mark their relations taken. The globally best untaken
   relation always wins every claim, so each round places at least one batch.

:class:`Claim` is a :class:`graphgen_spark.partition.distributed.RoundEngine`: after
``max_rounds`` rounds, or as soon as fewer than ``collect_threshold`` relations remain,
the remaining subgraph (untaken relations and their endpoints, nothing else) is collected
and finished by :func:`graphgen_spark.partition.reference.ece_edge_seed` on the driver, which
respects ``taken`` because taken relations are simply absent. ``isolated_nodes = add`` gives
every non-placeholder degree-0 entity of the input its own batch (§6.2).

**How it differs from the sequential reference.** It meets the §6.9 contract (disjoint, every
relation exactly once, connected, within ``max_extra_edges``/``max_depth``, gaps first,
deterministic), not sequential equality. An accepted batch is exactly what its seed's
expansion gives at that point (an accepted seed's claims are disjoint from every other
accepted batch, and removing relations it did not pick cannot change a ``max_width`` pick),
and no batch holds a relation ranked before its seed. But a seed that loses a claim waits for
a later round, while worse-ranked seeds elsewhere are accepted now; when it comes back, its
neighbourhood may have been taken by them, so its batch (and theirs) can differ from the
sequential order's. Replaying the batches in (round, rank) order through the sequential
expansion reproduces every one of them (the tests check exactly that).

Supported: ``ece/edge_seed`` with ``expand_method = max_width``, any ``max_depth``,
``max_extra_edges`` and ``bidirectional``, both loss strategies and all samplings.
``expand_method = max_tokens`` (§6.4) is not: its pick depends on a running token sum and it
has no edge cap to prune by, so :func:`unsupported` names the reason and the stage falls back
to the per-component engine (logged). Other methods likewise.

Rounds are sequential where ranks are: a path whose ranks increase along it places about one
batch per round, so ``max_rounds`` bounds the rounds and the driver finishes the rest.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from graphgen_spark.partition.distributed import RoundEngine, union_all
from graphgen_spark.partition.reference import EDGE_SEED, Params

ENGINE = "claim"


def unsupported(method: str, params: Params) -> str | None:
    """Why the claim engine cannot run ``method`` with ``params``; None when it can."""
    if method != EDGE_SEED:
        return f"the claim engine implements {EDGE_SEED} only, not {method}"
    if params.expand_method != "max_width":
        return (
            "expand_method=max_tokens picks by a running token sum with no edge cap to prune "
            "by; the claim engine implements max_width only"
        )
    return None


# ---------------------------------------------------------------- the engine


class Claim(RoundEngine):
    """Batches of ``ece/edge_seed`` by claim rounds (``max_width`` only: :func:`unsupported`)."""

    name = ENGINE
    unsupported = staticmethod(unsupported)

    def one_round(self, live: DataFrame, nodes: DataFrame, edges: DataFrame) -> DataFrame:
        return _round(live, self.params)


def _round(live: DataFrame, p: Params) -> DataFrame:
    """``(seed_id, edge_id, pos)`` of the seeds accepted this round, ``pos`` 0 for the seed."""
    seeds = live.select(
        F.col("edge_id").alias("seed_id"), F.col("rank").alias("seed_rank"), "src_id", "dst_id"
    )
    claims = seeds.select(
        "seed_id", "seed_rank", F.col("seed_id").alias("edge_id"), F.lit(0).alias("pos")
    )
    if p.max_depth > 0 and p.max_extra_edges > 0:
        claims = claims.unionByName(_expansions(live, seeds, p))
    by_edge = Window.partitionBy("edge_id")
    by_seed = Window.partitionBy("seed_id")
    won = (F.col("seed_rank") == F.min("seed_rank").over(by_edge)).cast("int")
    return (
        claims.withColumn("won", won)
        .withColumn("all_won", F.min("won").over(by_seed))
        .filter(F.col("all_won") == 1)
        .select("seed_id", "edge_id", "pos")
    )


def _expansions(live: DataFrame, seeds: DataFrame, p: Params) -> DataFrame:
    """§6.3 for every seed at once: ``(seed_id, seed_rank, edge_id, pos)`` with ``pos`` ≥ 1.

    A layer joins the seed's frontier to the pruned incidence, drops what the seed already
    holds, numbers the rest by rank and keeps the first ``budget``. A seed whose layer
    filled its budget (or was empty) stops; the others go on from ``endpoints(C) − F``.
    """
    k = p.max_extra_edges
    incidence = live.select(
        F.col("src_id").alias("node"), "edge_id", "rank", "src_id", "dst_id"
    ).unionByName(live.select(F.col("dst_id").alias("node"), "edge_id", "rank", "src_id", "dst_id"))
    best = incidence.withColumn(
        "i", F.row_number().over(Window.partitionBy("node").orderBy("rank"))
    ).filter(F.col("i") <= k + 2)
    best = best.select("node", "edge_id", "rank", "src_id", "dst_id")
    ends = [F.col("dst_id")] if not p.bidirectional else [F.col("src_id"), F.col("dst_id")]
    frontier = seeds.select(
        "seed_id", "seed_rank", F.explode(F.array(*ends)).alias("node")
    )  # (seed_id, seed_rank, node)
    held = seeds.select("seed_id", F.col("seed_id").alias("edge_id"))  # the seed and its picks
    state = seeds.select("seed_id", F.lit(k).alias("budget"), F.lit(0).alias("offset"))
    picked: list[DataFrame] = []
    by_seed = Window.partitionBy("seed_id")
    for layer in range(p.max_depth):
        cands = frontier.join(best, "node").select(
            "seed_id", "seed_rank", "edge_id", "rank", "src_id", "dst_id"
        )
        if layer == 0:
            # a relation touching both ends of the seed is the seed itself (no multi-edges)
            cands = cands.filter(F.col("edge_id") != F.col("seed_id"))
        else:
            cands = cands.join(held, ["seed_id", "edge_id"], "left_anti").dropDuplicates(
                ["seed_id", "edge_id"]
            )
        if layer == 0:  # every seed starts with the whole budget: no join needed
            cands = cands.withColumn("budget", F.lit(k)).withColumn("offset", F.lit(0))
        else:
            cands = cands.join(state, "seed_id")
        cands = cands.withColumn("i", F.row_number().over(by_seed.orderBy("rank"))).withColumn(
            "n", F.count("*").over(by_seed)
        )
        chosen = cands.filter(F.col("i") <= F.col("budget"))
        picked.append(
            chosen.select(
                "seed_id", "seed_rank", "edge_id", (F.col("offset") + F.col("i")).alias("pos")
            )
        )
        if layer == p.max_depth - 1:
            break
        # seeds whose whole layer fit go on with the rest of their budget
        going = chosen.filter(F.col("n") < F.col("budget"))
        state = going.select(
            "seed_id",
            (F.col("budget") - F.col("n")).alias("budget"),
            (F.col("offset") + F.col("n")).alias("offset"),
        ).dropDuplicates(["seed_id"])
        held = held.unionByName(chosen.select("seed_id", "edge_id"))
        reached = going.select(
            "seed_id", "seed_rank", F.explode(F.array("src_id", "dst_id")).alias("node")
        ).dropDuplicates(["seed_id", "node"])
        frontier = reached.join(
            frontier.select("seed_id", "node"), ["seed_id", "node"], "left_anti"
        )
    return union_all(picked)
