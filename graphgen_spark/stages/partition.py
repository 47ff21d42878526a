"""Partition stage (§6): the `subgraphs` table, one set of batches per partition method.

The methods come from the configured generation modes (§7.2 defaults, `generate.methods`
overrides). The stage reads the graph: every unit with its sort key in Spark (loss from the
trainee's `gap_scores`, then `rr`, then id) and its component (GraphFrames or DataFrame
label propagation); builds each method's batches as the partition plan
(:mod:`graphgen_spark.partition.plan`) routes them, per component, by rounds or by one motif
query; and merges them. Each row's `engine` column names the engine, `graph_engine` who
answered the graph queries behind it. Every intermediate, the round engines' and the graph
queries' included, goes through the stage's scratch folder (``Scratch.materialise``).
Rows are keyed by ``batch_id = h(method, config_hash, seed_id)``: a rerun on the same graph
writes nothing, a changed graph rewrites only the batches whose content changed and
removes batches of the same configuration that no longer exist.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from graphgen_spark.graph.engines import GraphQueries
from graphgen_spark.ids import h_col
from graphgen_spark.partition.community import METHOD as COMMUNITY
from graphgen_spark.partition.community import Cut, cut_oversized
from graphgen_spark.partition.distributed import rank_units, union_all
from graphgen_spark.partition.plan import (
    COMPONENT,
    ROUND_ENGINES,
    PartitionPlan,
    config_hash,
    method_for,
)
from graphgen_spark.partition.triple import ENGINE as MOTIF
from graphgen_spark.partition.triple import triples
from graphgen_spark.stages.base import Scratch, Stage, StageContext, StageResult
from graphgen_spark.tables import SCHEMAS, UpdateWhenChanged

NAME = "partition"
# a batch is rewritten when its content, its loss or the engines behind it changed
CHANGED = UpdateWhenChanged(["node_ids", "edge_ids", "loss", "engine", "graph_engine"])


def unit_frames(ctx: StageContext, queries: GraphQueries) -> tuple[DataFrame, DataFrame]:
    """Nodes and edges with tokens, loss, rr and component id (the smallest entity id)."""
    cfg, tables = ctx.cfg, ctx.tables
    seed = str(cfg.run.seed)
    if cfg.gap_scoring == "on":
        losses = (
            tables.read("gap_scores")
            .filter(F.col("trainee_model") == cfg.trainee_model())
            .select(F.col("element_id").alias("id"), "loss")
        )
    else:
        losses = ctx.spark.createDataFrame([], "id string, loss double")
    ents = tables.read("entities").select(
        F.col("entity_id"),
        F.col("n_tokens").alias("tokens"),
        F.coalesce("is_placeholder", F.lit(False)).alias("is_placeholder"),
        "name",
        "type",
    )
    rels = tables.read("relations").select(
        "edge_id", "src_id", "dst_id", F.col("n_tokens").alias("tokens")
    )
    comps = queries.components(
        ents.select(F.col("entity_id").alias("id")),
        rels.select(F.col("src_id").alias("src"), F.col("dst_id").alias("dst")),
    )
    comps = comps.select(F.col("id").alias("entity_id"), F.col("component").alias("component_id"))
    nodes = (
        ents.join(comps, "entity_id")
        .join(losses.withColumnRenamed("id", "entity_id"), "entity_id", "left")
        .withColumn("rr", h_col(F.lit(seed), "entity_id"))
    )
    edges = (
        rels.join(comps.withColumnRenamed("entity_id", "src_id"), "src_id")
        .join(losses.withColumnRenamed("id", "edge_id"), "edge_id", "left")
        .withColumn("rr", h_col(F.lit(seed), "edge_id"))
    )
    return nodes, edges


def difficulty_cuts(batches: DataFrame) -> tuple[float, float] | None:
    """Loss terciles (§7.3): q1 = value at ⌊N/3⌋, q2 = value at ⌊2N/3⌋ of the sorted losses."""
    losses = batches.filter(F.col("loss").isNotNull()).select("loss").orderBy("loss")
    n = losses.count()
    if not n:
        return None
    i1, i2 = n // 3, (2 * n) // 3
    picked = dict(
        losses.rdd.zipWithIndex()
        .filter(lambda x: x[1] in (i1, i2))
        .map(lambda x: (x[1], x[0][0]))
        .collect()
    )
    return picked[i1], picked[i2]


def with_difficulty(batches: DataFrame, cuts: tuple[float, float] | None) -> DataFrame:
    if cuts is None:
        return batches.withColumn("difficulty", F.lit(None).cast("int"))
    q1, q2 = cuts
    tier = (
        F.when(F.col("loss").isNull(), F.lit(None))
        .when(F.col("loss") < q1, 0)
        .when(F.col("loss") < q2, 1)
        .otherwise(2)
    )
    return batches.withColumn("difficulty", tier.cast("int"))


def giant_components(edges: DataFrame, local_max_edges: int) -> dict[str, int]:
    """Components with more than ``local_max_edges`` relations: id → relation count."""
    over = edges.groupBy("component_id").count().filter(F.col("count") > local_max_edges)
    return {r["component_id"]: r["count"] for r in over.collect()}


def _run(ctx: StageContext) -> StageResult:
    cfg, scratch = ctx.cfg, ctx.scratch
    queries = GraphQueries(
        ctx.spark, cfg.graph.engine, f"{scratch.path}/checkpoint", scratch.materialise
    )
    nodes, edges = unit_frames(ctx, queries)
    nodes, edges = scratch.materialise(nodes), scratch.materialise(edges)
    p = cfg.partition
    ranks = rank_units(nodes, edges, cfg.sampling(), p.loss_strategy, queries.keep)
    giant = giant_components(edges, p.local_max_edges)
    _log_giant(ctx, giant)
    shared = _Shared(ctx, PartitionPlan.of(cfg, giant), ranks, scratch, queries)
    result = _partition_methods(shared, nodes, edges)
    result.counts["components_engine_graphframes"] = int(
        queries.used["components"] == "graphframes"
    )
    return result


def _log_giant(ctx: StageContext, giant: dict[str, int]) -> None:
    """Name the components over ``local_max_edges``: a warning where each runs in one task."""
    if not giant:
        return
    p = ctx.cfg.partition
    one_task = p.engine == COMPONENT
    ctx.log.log(
        logging.WARNING if one_task else logging.INFO,
        "partition: %d components over partition.local_max_edges=%d relations (largest "
        "%d); engine=%s: %s",
        len(giant),
        p.local_max_edges,
        max(giant.values()),
        p.engine,
        "each runs in one task" if one_task else "ece/edge_seed runs them by rounds (method §6.9)",
    )


@dataclass(frozen=True)
class _Shared:
    """What every method of one partition run shares."""

    ctx: StageContext
    plan: PartitionPlan
    ranks: DataFrame
    scratch: Scratch
    queries: GraphQueries

    def graph_engine(self, *ops: str) -> str:
        """``subgraphs.graph_engine``: who answered the graph queries behind a batch."""
        used = self.queries.used
        return ",".join(f"{op}={used[op]}" for op in ("components", *ops) if op in used)


def _partition_methods(shared: _Shared, nodes: DataFrame, edges: DataFrame) -> StageResult:
    """Every configured method's batches, built one method at a time and merged at once:
    one MERGE whatever the number of methods."""
    cfg = shared.ctx.cfg
    result = StageResult()
    methods = sorted({method_for(cfg, m) for m in cfg.generate.modes})
    n_units = nodes.filter(~F.col("is_placeholder")).count() + edges.count()
    rows: list[DataFrame] = []
    for method in methods:
        if method == COMMUNITY:
            cut = _community_cut(shared, nodes, edges)
            built, counts = _method_rows(shared, method, cut.nodes, cut.edges, cut)
        else:
            built, counts = _method_rows(shared, method, nodes, edges)
        rows.append(built)
        result.add(StageResult(counts))
    return result.add(_merge(shared.ctx, methods, union_all(rows), nodes, n_units))


def _community_cut(shared: _Shared, nodes: DataFrame, edges: DataFrame) -> Cut:
    """`community`'s input: the largest component alone under ``use_lcc``, components over
    ``max_component_nodes`` cut by label propagation."""
    cfg = shared.ctx.cfg
    comm = cfg.partition.community
    if comm.use_lcc:
        top = edges.groupBy("component_id").count().orderBy(F.desc("count"), "component_id")
        lcc = top.limit(1).select("component_id")
        nodes, edges = nodes.join(lcc, "component_id"), edges.join(lcc, "component_id")
    iters = cfg.graph.label_propagation_iters
    return cut_oversized(nodes, edges, comm.max_component_nodes, shared.queries, iters)


def _key(method: str) -> str:
    """A method as the prefix of its counts."""
    return method.replace("/", "_")


def _tagged(batches: DataFrame, engine: str, graph_engine: str) -> DataFrame:
    return batches.withColumn("engine", F.lit(engine)).withColumn(
        "graph_engine", F.lit(graph_engine)
    )


def _build_batches(
    shared: _Shared, method: str, nodes: DataFrame, edges: DataFrame
) -> tuple[DataFrame, dict[str, int]]:
    """Batches with ``engine`` and ``graph_engine`` columns, and how many components each
    engine took."""
    route = shared.plan.route(method)
    if route.engine == MOTIF:  # one motif query over the whole graph, whatever the components
        found = triples(nodes, edges, shared.queries, shared.plan.params.loss_strategy)
        return _tagged(found, MOTIF, shared.graph_engine("triplets")), {}
    if route.fallback:
        _log_fallback(shared, method, route.fallback)
    n_components = nodes.select("component_id").distinct().count()
    counts = {f"{_key(method)}_engine_{e}_components": 0 for e in (COMPONENT, *ROUND_ENGINES)}
    big, rest = route.split(nodes, edges)
    parts: list[DataFrame] = []
    if route.by_rounds:
        taken = n_components if route.components is None else len(route.components)
        batches, round_counts = _by_rounds(shared, method, route.engine, *big, taken)
        parts.append(batches)
        counts.update(round_counts)
    if route.per_component:
        batches = shared.plan.by_component(method, *rest)
        parts.append(_tagged(batches, COMPONENT, shared.graph_engine()))
        taken = n_components - len(route.components or ())
        counts[f"{_key(method)}_engine_{COMPONENT}_components"] = taken
    return union_all(parts), counts


def _log_fallback(shared: _Shared, method: str, reason: str) -> None:
    giant = shared.plan.giant
    shared.ctx.log.warning(
        "partition %s: the per-component engine runs every component (%s)%s",
        method,
        reason,
        f"; {len(giant)} of them over partition.local_max_edges run in one task each"
        if giant
        else "",
    )


def _by_rounds(
    shared: _Shared, method: str, name: str, nodes: DataFrame, edges: DataFrame, taken: int
) -> tuple[DataFrame, dict[str, int]]:
    """Batches of the round engine ``name`` on the ``taken`` components it runs, and its
    counts."""
    engine = shared.plan.round_engine(name, shared.queries, shared.ctx.log)
    run = engine.run(nodes, edges, shared.ranks)
    shared.ctx.log.info(
        "partition %s: %s engine on %d components: %d rounds placed %d relations, "
        "%d finished on the driver",
        method,
        name,
        taken,
        run.rounds,
        run.placed,
        run.collected,
    )
    key = _key(method)
    counts = {
        f"{key}_engine_{name}_components": taken,
        f"{key}_{name}_rounds": run.rounds,
        f"{key}_{name}_collected": run.collected,
    }
    ops = engine.graph_ops if run.rounds else ()
    return _tagged(run.batches, name, shared.graph_engine(*ops)), counts


def _method_rows(
    shared: _Shared, method: str, nodes: DataFrame, edges: DataFrame, cut: Cut | None = None
) -> tuple[DataFrame, dict[str, int]]:
    """One method's `subgraphs` rows (materialised) and its engine counts."""
    ctx, scratch = shared.ctx, shared.scratch
    chash = config_hash(ctx.cfg, method)
    batches, engine_counts = _build_batches(shared, method, nodes, edges)
    if cut is not None and cut.groups is not None:
        batches = cut.restore(batches, shared.graph_engine("label_propagation"))
        engine_counts[f"{method}_cut_components"] = cut.n_cut
    batches = scratch.materialise(batches)
    batches = with_difficulty(batches, difficulty_cuts(batches))
    rows = (
        batches.join(shared.ranks.withColumnRenamed("unit_id", "seed_id"), "seed_id", "left")
        .withColumn("batch_id", h_col(F.lit(method), F.lit(chash), "seed_id"))
        .withColumn("config_hash", F.lit(chash))
        .withColumn("run_id", F.lit(ctx.run_id))
        .select(*SCHEMAS["subgraphs"].fieldNames())
    )
    return scratch.materialise(rows), engine_counts


def _merge(
    ctx: StageContext, methods: list[str], rows: DataFrame, nodes: DataFrame, n_units: int
) -> StageResult:
    """MERGE every method's rows (removing the vanished batches of each method's current
    configuration) and count, per method, its batches and the units no batch covers."""
    slices = [{"method": m, "config_hash": config_hash(ctx.cfg, m)} for m in methods]
    res = ctx.tables.merge("subgraphs", rows, CHANGED.replacing_each(slices))
    counts = {"subgraphs_written": res.inserted, "subgraphs_updated": res.updated}
    counts["subgraphs_removed"] = res.deleted
    per_method = {r["method"]: r.asDict() for r in _per_method(rows, nodes).collect()}
    for method in methods:
        got = per_method.get(method) or {}
        batches, over, covered = (got.get(k) or 0 for k in ("batches", "over_budget", "covered"))
        ctx.log.info(
            "partition %s: %d batches; units covered %d of %d", method, batches, covered, n_units
        )
        key = _key(method)
        counts[f"{key}_batches"] = int(batches)
        counts[f"{key}_over_budget"] = int(over)
        counts[f"{key}_units_uncovered"] = max(0, n_units - int(covered))
    ctx.log.info(
        "partition: %d batches written, %d updated, %d removed",
        res.inserted,
        res.updated,
        res.deleted,
    )
    return StageResult(counts)


def _per_method(rows: DataFrame, nodes: DataFrame) -> DataFrame:
    """Per method: its batches, those over budget, and how many distinct units are in
    some batch (placeholders not counted)."""
    placeholders = nodes.filter("is_placeholder").select(F.col("entity_id").alias("u"))
    covered = (
        rows.select("method", F.explode(F.concat("node_ids", "edge_ids")).alias("u"))
        .distinct()
        .join(placeholders, "u", "left_anti")
        .groupBy("method")
        .agg(F.count("*").alias("covered"))
    )
    return (
        rows.groupBy("method")
        .agg(
            F.count("*").alias("batches"),
            F.sum(F.array_contains("flags", "over_budget").cast("long")).alias("over_budget"),
        )
        .join(covered, "method", "left")
    )


STAGE = Stage(
    NAME,
    _run,
    reads=("entities", "relations", "gap_scores", "subgraphs"),
    writes=("subgraphs",),
)
