"""Machinery shared by the round-based engines of method.md §6.9 (claim and exact rounds).

The §6.1 order as Spark ranks (:func:`rank_units`); :class:`RoundEngine`, the interface of
both engines: a configured object, in the shape of graphframes' ``Pregel``, whose ``run``
loops rounds on the driver and finishes sequentially, and which keeps every round's frames
through its graph engine's ``keep``; and batch rows built from ``(seed_id, edge_id, pos)``
picks with the reference's token, loss and flag rules (:func:`batch_rows`).
"""

from __future__ import annotations

import logging
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import ClassVar

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from graphgen_spark.graph.engines import DataFrameGraph, GraphQueries, Keep, local_keep
from graphgen_spark.partition.engine import BATCH_SCHEMA, build_graph
from graphgen_spark.partition.reference import EDGE_SEED, OVER_BUDGET, Params, ece_edge_seed

LOG = logging.getLogger(__name__)


# ---------------------------------------------------------------- the §6.1 order in Spark


def rank_units(
    nodes: DataFrame,
    edges: DataFrame,
    sampling: str,
    loss_strategy: str,
    keep: Keep = local_keep,
) -> DataFrame:
    """``(unit_id, seed_rank)``: position (1-based) of every entity and relation in §6.1 order.

    The same order as :meth:`Graph.ranks`: loss (NULL last), then ``rr``, then id. Under
    ``both`` a relation's key adds the known parts in the reference's order (src, dst, edge),
    so the double is bit-identical and ties break the same way. The ranking is a distributed
    sort (:func:`global_position`), never a window over one partition.
    """
    if loss_strategy == "both":
        ends = nodes.select(F.col("entity_id").alias("e"), F.col("loss").alias("l"))
        parts = [F.col("ls"), F.col("ld"), F.col("loss")]
        total = (F.coalesce(parts[0], F.lit(0.0)) + F.coalesce(parts[1], F.lit(0.0))) + F.coalesce(
            parts[2], F.lit(0.0)
        )
        edge_value = (
            edges.join(ends.withColumnRenamed("e", "src_id").withColumnRenamed("l", "ls"), "src_id")
            .join(ends.withColumnRenamed("e", "dst_id").withColumnRenamed("l", "ld"), "dst_id")
            .select("edge_id", "rr", F.when(F.coalesce(*parts).isNotNull(), total).alias("value"))
        )
    else:
        edge_value = edges.select("edge_id", "rr", F.col("loss").alias("value"))
    units = nodes.select(F.col("entity_id").alias("unit_id"), "rr", F.col("loss").alias("value"))
    units = units.union(edge_value.withColumnRenamed("edge_id", "unit_id"))
    if sampling == "random":
        order = [F.col("rr"), F.col("unit_id")]
    else:
        value = F.col("value") if sampling == "min_loss" else -F.col("value")
        order = [F.col("value").isNull(), value, F.col("rr"), F.col("unit_id")]
    return global_position(units, order, "seed_rank", keep)


def global_position(
    df: DataFrame, order: list[Column], name: str, keep: Keep = local_keep
) -> DataFrame:
    """``df``'s first column with its 1-based position ``name`` in ``order`` (a total order).

    ``row_number()`` over an unpartitioned window moves every row into one task; here the
    rows are range-sorted over all partitions, each row takes its index inside its sorted
    partition, and a partition's offset is the row count of the partitions before it (one
    small collect). The sorted rows are materialised first so the counts and the indexes
    see the same partitions (range bounds come from sampling).
    """
    key = df.columns[0]
    part = F.spark_partition_id()
    sorted_rows = keep(
        df.orderBy(*order).select(
            key,
            part.alias("_p"),
            # monotonically_increasing_id is (partition index << 33) + index in the partition
            (F.monotonically_increasing_id() - F.shiftleft(part.cast("long"), 33)).alias("_i"),
        )
    )
    counts = sorted_rows.groupBy("_p").count().orderBy("_p").collect()
    offsets, seen = [], 0
    for row in counts:
        offsets.append((row["_p"], seen))
        seen += row["count"]
    spark = df.sparkSession
    offset = spark.createDataFrame(offsets or [(0, 0)], "_p int, _o long")
    return sorted_rows.join(F.broadcast(offset), "_p").select(
        key, (F.col("_o") + F.col("_i") + 1).cast("long").alias(name)
    )


# ---------------------------------------------------------------- the loop


@dataclass(frozen=True)
class RoundsRun:
    """The batches (``BATCH_SCHEMA``) of a round-based engine and how they were made.

    ``seed_rounds`` is ``(seed_id, round)`` for every relation seed: rounds 1..``rounds``, and
    ``rounds + 1`` for the seeds of the sequential finish; ``placed`` relations went in
    rounds, ``collected`` ones were finished on the driver.
    """

    batches: DataFrame
    seed_rounds: DataFrame
    rounds: int
    placed: int
    collected: int


@dataclass(frozen=True)
class RoundEngine(ABC):
    """A round engine of §6.9 for ``ece/edge_seed``, configured once and then :meth:`run`.

    ``graph`` answers the engine's graph queries and owns the checkpoint policy: every
    round's frames go through ``graph.keep`` (a stage's scratch folder, so a lost executor
    costs a re-read, not the run; ``localCheckpoint`` for a bare ``DataFrameGraph``).
    ``max_rounds`` bounds the rounds; below ``collect_threshold`` untaken relations the
    driver finishes with the sequential reference.
    """

    params: Params
    graph: GraphQueries | DataFrameGraph = field(default_factory=DataFrameGraph)
    max_rounds: int = 50
    collect_threshold: int = 100_000
    log: logging.Logger = LOG

    name: ClassVar[str]
    graph_ops: ClassVar[tuple[str, ...]] = ()  # graph queries its rounds ask

    def __post_init__(self) -> None:
        if self.max_rounds < 0 or self.collect_threshold < 0:
            raise ValueError("max_rounds and collect_threshold must be >= 0")
        reason = self.unsupported(EDGE_SEED, self.params)
        if reason:
            raise ValueError(reason)

    @staticmethod
    @abstractmethod
    def unsupported(method: str, params: Params) -> str | None:
        """Why the engine cannot run ``method`` with ``params``; None when it can."""

    @abstractmethod
    def one_round(self, live: DataFrame, nodes: DataFrame, edges: DataFrame) -> DataFrame:
        """``(seed_id, edge_id, pos)`` of the batches fixed this round, from the untaken
        relations ``live(edge_id, src_id, dst_id, rank)``."""

    @property
    def keep(self) -> Keep:
        return self.graph.keep

    def run(self, nodes: DataFrame, edges: DataFrame, ranks: DataFrame | None = None) -> RoundsRun:
        """Rounds until no relation is left, ``max_rounds`` rounds were run or fewer than
        ``collect_threshold`` relations remain; the driver finishes the rest sequentially.

        ``nodes``/``edges`` carry ``component_id`` (frames as for ``engine.per_component``);
        ``ranks`` is :func:`rank_units` (computed when not given).
        """
        if ranks is None:
            ranks = rank_units(
                nodes, edges, self.params.sampling, self.params.loss_strategy, self.keep
            )
        edge_rank = ranks.select(
            F.col("unit_id").alias("edge_id"), F.col("seed_rank").alias("rank")
        )
        live = self.keep(edges.select("edge_id", "src_id", "dst_id").join(edge_rank, "edge_id"))
        total = live.count()
        placed, live, remaining = self._place(live, total, nodes, edges)
        finish = None
        if remaining:
            finish = finish_on_driver(nodes, edges, live, self.params, len(placed) + 1)
            self.log.info("partition %s: %d relations finished on the driver", self.name, remaining)
        return self._result(nodes, edges, placed, finish, total - remaining, remaining)

    def _place(
        self, live: DataFrame, remaining: int, nodes: DataFrame, edges: DataFrame
    ) -> tuple[list[DataFrame], DataFrame, int]:
        """Rounds while enough relations are left: each round's ``(seed_id, edge_id, pos,
        round)``, the untaken relations after the last one, and how many they are."""
        placed: list[DataFrame] = []
        while remaining and remaining >= self.collect_threshold and len(placed) < self.max_rounds:
            n = len(placed) + 1
            won = self.keep(self.one_round(live, nodes, edges).withColumn("round", F.lit(n)))
            placed.append(won)
            live = self.keep(live.join(won.select("edge_id"), "edge_id", "left_anti"))
            before, remaining = remaining, live.count()
            self.log.info(
                "partition %s round %d: %d relations placed, %d remain",
                self.name,
                n,
                before - remaining,
                remaining,
            )
        return placed, live, remaining

    def _result(
        self,
        nodes: DataFrame,
        edges: DataFrame,
        placed: list[DataFrame],
        finish: tuple[DataFrame, DataFrame] | None,
        n_placed: int,
        collected: int,
    ) -> RoundsRun:
        """The batches of the rounds, of the driver's finish and of isolated entities."""
        spark = edges.sparkSession
        parts, seed_rounds = [], []
        if placed:
            picks = union_all(placed)
            parts.append(batch_rows(picks, nodes, edges, self.params))
            seed_rounds.append(picks.filter(F.col("pos") == 0).select("seed_id", "round"))
        if finish is not None:
            parts.append(finish[0])
            seed_rounds.append(finish[1])
        if self.params.isolated_nodes == "add":
            parts.append(isolated_batches(nodes, edges))
        return RoundsRun(
            batches=union_all(parts) if parts else spark.createDataFrame([], BATCH_SCHEMA),
            seed_rounds=union_all(seed_rounds)
            if seed_rounds
            else spark.createDataFrame([], "seed_id string, round int"),
            rounds=len(placed),
            placed=n_placed,
            collected=collected,
        )


def union_all(frames: list[DataFrame]) -> DataFrame:
    """``unionByName`` of one or more frames with the same columns."""
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f)
    return out


# ---------------------------------------------------------------- rows


def finish_on_driver(
    nodes: DataFrame, edges: DataFrame, live: DataFrame, p: Params, round_no: int
) -> tuple[DataFrame, DataFrame]:
    """The sequential reference on the untaken relations and their endpoints (driver)."""
    spark = edges.sparkSession
    sub_edges = edges.join(live.select("edge_id"), "edge_id")
    ends = sub_edges.select(F.explode(F.array("src_id", "dst_id")).alias("entity_id")).distinct()
    sub_nodes = nodes.join(ends, "entity_id")
    e_pd = sub_edges.select("edge_id", "src_id", "dst_id", "tokens", "loss", "rr", "component_id")
    n_pd = sub_nodes.select(
        "entity_id", "tokens", "loss", "rr", "name", "is_placeholder", "type"
    ).toPandas()
    e_pd = e_pd.toPandas()
    component = dict(zip(e_pd["edge_id"], e_pd["component_id"], strict=True))
    graph = build_graph(n_pd, e_pd)
    result = ece_edge_seed(graph, replace(p, isolated_nodes="ignore"))
    rows = [
        (
            component[b.seed_id],
            b.method,
            b.seed_id,
            list(b.node_ids),
            list(b.edge_ids),
            b.n_units,
            b.tokens,
            b.loss,
            list(b.flags),
        )
        for b in result.batches
    ]
    batches = spark.createDataFrame(rows, BATCH_SCHEMA)
    rounds = spark.createDataFrame(
        [(b.seed_id, round_no) for b in result.batches], "seed_id string, round int"
    )
    return batches, rounds


def batch_rows(claims: DataFrame, nodes: DataFrame, edges: DataFrame, p: Params) -> DataFrame:
    """``BATCH_SCHEMA`` rows from ``(seed_id, edge_id, pos)``: orders, tokens, loss and flags
    of §6.1 (shared with the exact rounds engine)."""
    e = edges.select(
        "edge_id", "src_id", "dst_id", "component_id", _tokens("tokens"), _loss("loss")
    )
    per_seed = (
        claims.join(e, "edge_id")
        .groupBy("seed_id")
        .agg(
            F.sort_array(
                F.collect_list(F.struct("pos", "edge_id", "src_id", "dst_id", "tokens", "loss"))
            ).alias("es"),
            F.min("component_id").alias("component_id"),
        )
        .withColumn(
            "node_ids",
            F.array_distinct(F.flatten(F.transform("es", lambda x: F.array(x.src_id, x.dst_id)))),
        )
    )
    n = nodes.select(F.col("entity_id").alias("node"), _tokens("tokens"), _loss("loss"))
    per_node = (
        per_seed.select("seed_id", F.posexplode("node_ids").alias("i", "node"))
        .join(n, "node")
        .groupBy("seed_id")
        .agg(F.sort_array(F.collect_list(F.struct("i", "tokens", "loss"))).alias("ns"))
    )
    edge_losses = F.filter(F.transform("es", lambda x: x.loss), lambda x: x.isNotNull())
    node_losses = F.filter(F.transform("ns", lambda x: x.loss), lambda x: x.isNotNull())
    if p.loss_strategy == "only_edge":
        loss = F.when(F.size(edge_losses) > 0, _mean(edge_losses)).when(
            F.size(node_losses) > 0, _mean(node_losses)
        )
    else:
        pool = F.concat(edge_losses, node_losses)
        loss = F.when(F.size(pool) > 0, _mean(pool))
    tokens = _sum_long(F.transform("es", lambda x: x.tokens)) + _sum_long(
        F.transform("ns", lambda x: x.tokens)
    )
    edge_ids = F.transform("es", lambda x: x.edge_id)
    no_flags = F.array().cast("array<string>")
    flags = no_flags  # as the reference: only a max_tokens seed alone can be over budget
    if p.expand_method == "max_tokens":
        flags = F.when(tokens > p.max_tokens, F.array(F.lit(OVER_BUDGET))).otherwise(no_flags)
    return per_seed.join(per_node, "seed_id").select(
        "component_id",
        F.lit(EDGE_SEED).alias("method"),
        "seed_id",
        "node_ids",
        edge_ids.alias("edge_ids"),
        (F.size("node_ids") + F.size(edge_ids)).cast("int").alias("n_units"),
        tokens.cast("long").alias("tokens"),
        loss.cast("double").alias("loss"),
        flags.alias("flags"),
    )


def isolated_batches(nodes: DataFrame, edges: DataFrame) -> DataFrame:
    """One node-only batch per non-placeholder entity of degree 0 (§6.2, ``add``)."""
    linked = edges.select(F.explode(F.array("src_id", "dst_id")).alias("entity_id"))
    alone = nodes.filter(~F.coalesce(F.col("is_placeholder"), F.lit(False))).join(
        linked, "entity_id", "left_anti"
    )
    return alone.select(
        "component_id",
        F.lit(EDGE_SEED).alias("method"),
        F.col("entity_id").alias("seed_id"),
        F.array("entity_id").alias("node_ids"),
        F.array().cast("array<string>").alias("edge_ids"),
        F.lit(1).cast("int").alias("n_units"),
        _tokens("tokens"),
        _loss("loss"),
        F.array().cast("array<string>").alias("flags"),
    )


def _tokens(name: str) -> Column:
    return F.coalesce(F.col(name), F.lit(0)).cast("long").alias(name)


def _loss(name: str) -> Column:
    """A loss as the reference reads it: NaN is no loss, like NULL."""
    x = F.col(name).cast("double")
    return F.when(~F.isnan(x), x).alias(name)


def _sum_long(values: Column) -> Column:
    return F.aggregate(values, F.lit(0).cast("long"), lambda acc, x: acc + x)


def _mean(values: Column) -> Column:
    """Σ/len in list order, the way the reference's ``sum(pool) / len(pool)`` rounds.

    Python 3.12 made ``sum`` of floats compensated (Neumaier); this follows the running
    interpreter so both engines give bit-identical batch losses.
    """
    if sys.version_info >= (3, 12):
        start = F.struct(F.lit(0.0).alias("s"), F.lit(0.0).alias("c"))

        def step(acc: Column, x: Column) -> Column:
            t = acc.s + x
            c = F.when(F.abs(acc.s) >= F.abs(x), (acc.s - t) + x).otherwise((x - t) + acc.s)
            return F.struct(t.alias("s"), (acc.c + c).alias("c"))

        total = F.aggregate(
            values, start, step, lambda acc: F.when(acc.c != 0, acc.s + acc.c).otherwise(acc.s)
        )
    else:
        total = F.aggregate(values, F.lit(0.0), lambda acc, x: acc + x)
    return total / F.size(values)
