"""Partition stage (§6): the `subgraphs` table, one set of batches per partition method.

The methods come from the configured generation modes (§7.2 defaults, `generate.methods`
overrides). Every unit gets its sort key in Spark (loss from the trainee's `gap_scores`,
then `rr`, then id); components come from GraphFrames or DataFrame label propagation; the
per-component exact engine (:mod:`graphgen_spark.partition.engine`) builds the batches, and
for `ece/edge_seed` (`max_width`) the components over `partition.local_max_edges` relations go
to the claim engine (:mod:`graphgen_spark.partition.claim`) under `engine: auto`; `engine:
claim` or `rounds` (the exact rounds engine, :mod:`graphgen_spark.partition.rounds`) runs
every component that way. Each row's `engine` column names the engine.
Rows are keyed by ``batch_id = h(method, config_hash, seed_id)``: a rerun on the same graph
writes nothing, a changed graph rewrites only the batches whose content changed and
removes batches of the same configuration that no longer exist.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from graphgen_spark.config import Config
from graphgen_spark.graph.engines import GraphQueries, Keep
from graphgen_spark.ids import h, h_col
from graphgen_spark.partition.claim import ENGINE as CLAIM
from graphgen_spark.partition.claim import Claim
from graphgen_spark.partition.claim import unsupported as claim_unsupported
from graphgen_spark.partition.community import METHOD as COMMUNITY
from graphgen_spark.partition.community import Cut, cut_oversized
from graphgen_spark.partition.distributed import rank_units, union_all
from graphgen_spark.partition.engine import per_component
from graphgen_spark.partition.reference import Params
from graphgen_spark.partition.rounds import ENGINE as ROUNDS
from graphgen_spark.partition.rounds import ExactRounds
from graphgen_spark.partition.rounds import unsupported as rounds_unsupported
from graphgen_spark.partition.triple import ENGINE as MOTIF
from graphgen_spark.partition.triple import METHOD as TRIPLE
from graphgen_spark.partition.triple import triples
from graphgen_spark.stages.base import Scratch, StageContext, StageResult
from graphgen_spark.tables import SCHEMAS

STAGE = "partition"
COMPONENT = "component"
# settings that choose how batches are computed, not what a method's batches mean
ENGINE_KEYS = {"engine", "local_max_edges", "max_rounds", "collect_threshold"}
MODE_METHOD = {
    "atomic": "unit",
    "true_false": "unit",
    "aggregated": "ece/edge_seed",
    "multi_hop": "ece/edge_seed",
    "cot": "community",
    "multiple_choice": "ece/unit",
    "multi_answer": "ece/unit",
    "fill_in_blank": "ece/unit",
}


def method_for(cfg: Config, mode: str) -> str:
    """The partition method a mode samples with (§7.2), ``ece`` resolved by `ece.variant`."""
    chosen = cfg.generate.methods.get(mode)
    if chosen is None:
        return MODE_METHOD[mode]
    return f"ece/{cfg.ece.variant}" if chosen == "ece" else chosen


def params_for(cfg: Config) -> Params:
    p = cfg.partition
    return Params(
        sampling=cfg.sampling(),
        loss_strategy=p.loss_strategy,
        expand_method=p.expand_method,
        bidirectional=p.bidirectional,
        max_depth=p.max_depth,
        max_extra_edges=p.max_extra_edges,
        max_tokens=p.max_tokens,
        isolated_nodes=p.isolated_nodes,
        unit_max_units=p.unit.max_units,
        unit_min_units=p.unit.min_units,
        unit_max_tokens=p.unit.max_tokens,
        undersized=p.unit.undersized,
        max_units_per_community=p.max_units_per_community,
        anchor_type=p.anchor.type,
        anchor_ids=tuple(p.anchor.ids),
        anchor_max_units=p.anchor.max_units,
    )


def config_hash(cfg: Config, method: str) -> str:
    """Everything that shapes a method's batches: its settings, the order and its losses."""
    shaping = {
        "method": method,
        "partition": cfg.partition.model_dump(mode="json", exclude=ENGINE_KEYS),
        "sampling": cfg.sampling(),
        "trainee": cfg.trainee_model() if cfg.sampling() != "random" else None,
        "seed": cfg.run.seed,
    }
    return h(json.dumps(shaping, sort_keys=True))


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


def unit_ranks(nodes: DataFrame, edges: DataFrame, cfg: Config, keep: Keep) -> DataFrame:
    """``(unit_id, seed_rank)``: position of every unit in the §6.1 order."""
    return rank_units(nodes, edges, cfg.sampling(), cfg.partition.loss_strategy, keep)


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


def run(ctx: StageContext) -> StageResult:
    cfg, log = ctx.cfg, ctx.log
    result = StageResult()
    scratch = Scratch(ctx, STAGE)
    try:
        queries = GraphQueries(
            ctx.spark, cfg.graph.engine, f"{scratch.path}/checkpoint", scratch.materialise
        )
        nodes, edges = unit_frames(ctx, queries)
        nodes = scratch.materialise(nodes)
        edges = scratch.materialise(edges)
        ranks = unit_ranks(nodes, edges, cfg, queries.keep)  # materialised inside
        giant = giant_components(edges, cfg.partition.local_max_edges)
        if giant:
            log.log(
                logging.WARNING if cfg.partition.engine == COMPONENT else logging.INFO,
                "partition: %d components over partition.local_max_edges=%d relations (largest "
                "%d); engine=%s: %s",
                len(giant),
                cfg.partition.local_max_edges,
                max(giant.values()),
                cfg.partition.engine,
                "each runs in one task"
                if cfg.partition.engine == COMPONENT
                else "ece/edge_seed runs them by rounds (method §6.9)",
            )
        if cfg.partition.community.use_lcc:
            top = edges.groupBy("component_id").count().orderBy(F.desc("count"), "component_id")
            lcc = top.limit(1).select("component_id")
            comm_nodes, comm_edges = (
                nodes.join(lcc, "component_id"),
                edges.join(lcc, "component_id"),
            )
        else:
            comm_nodes, comm_edges = nodes, edges
        plan = _Plan(ctx, params_for(cfg), ranks, sorted(giant), scratch, queries)
        methods = sorted({method_for(cfg, m) for m in cfg.generate.modes})
        n_units = nodes.filter(~F.col("is_placeholder")).count() + edges.count()
        for method in methods:
            if method == COMMUNITY:
                cut = cut_oversized(
                    comm_nodes,
                    comm_edges,
                    cfg.partition.community.max_component_nodes,
                    queries,
                    cfg.graph.label_propagation_iters,
                )
                result.add(_partition_method(plan, method, cut.nodes, cut.edges, n_units, cut))
            else:
                result.add(_partition_method(plan, method, nodes, edges, n_units))
        result.counts["components_engine_graphframes"] = int(
            queries.used["components"] == "graphframes"
        )
    finally:
        scratch.cleanup()
    return result


def giant_components(edges: DataFrame, local_max_edges: int) -> dict[str, int]:
    """Components with more than ``local_max_edges`` relations: id → relation count."""
    over = edges.groupBy("component_id").count().filter(F.col("count") > local_max_edges)
    return {r["component_id"]: r["count"] for r in over.collect()}


def _unsupported(engine: str, method: str, params: Params) -> str | None:
    return {CLAIM: claim_unsupported, ROUNDS: rounds_unsupported}[engine](method, params)


def engine_plan(
    engine: str, method: str, params: Params, giant: list[str]
) -> tuple[str, list[str] | None]:
    """Which engine runs which components of ``method``: ``(name, None)`` runs every
    component; ``(name, ids)`` runs the giant components ``ids``, the per-component engine
    the rest. ``auto`` sends giant components to the claim engine where it can run them;
    the exact rounds engine is opt-in (``engine: rounds``): on power-law graphs few
    relations are the best within twice the depth, so rounds place little and the driver
    finishes most of the graph (bench/results/partition_scale_rounds.json). An engine that
    cannot run the method falls back to per component."""
    if engine == COMPONENT:
        return COMPONENT, None
    if engine in (CLAIM, ROUNDS):
        return (COMPONENT if _unsupported(engine, method, params) else engine), None
    if giant and not _unsupported(CLAIM, method, params):
        return CLAIM, giant
    return COMPONENT, None


@dataclass(frozen=True)
class _Plan:
    """What every method of one partition run shares."""

    ctx: StageContext
    params: Params
    ranks: DataFrame
    giant: list[str]
    scratch: Scratch
    queries: GraphQueries

    def graph_engine(self, *ops: str) -> str:
        """``subgraphs.graph_engine``: who answered the graph queries behind a batch."""
        used = self.queries.used
        return ",".join(f"{op}={used[op]}" for op in ("components", *ops) if op in used)


def _build_batches(
    plan: _Plan, method: str, nodes: DataFrame, edges: DataFrame
) -> tuple[DataFrame, dict[str, int]]:
    """Batches with ``engine`` and ``graph_engine`` columns, and how many components each
    engine took."""
    ctx, params, giant = plan.ctx, plan.params, plan.giant
    cfg = ctx.cfg
    if method == TRIPLE:  # one motif query over the whole graph, whatever the components
        found = triples(nodes, edges, plan.queries, params.loss_strategy)
        batches = found.withColumn("engine", F.lit(MOTIF)).withColumn(
            "graph_engine", F.lit(plan.graph_engine("triplets"))
        )
        return batches, {}
    p, comm = cfg.partition, cfg.partition.community
    key = method.replace("/", "_")
    name, ids = engine_plan(p.engine, method, params, giant)
    wanted = p.engine if p.engine in (CLAIM, ROUNDS) else CLAIM if giant else None
    if name == COMPONENT and wanted:
        ctx.log.warning(
            "partition %s: the per-component engine runs every component (%s)%s",
            method,
            _unsupported(wanted, method, params),
            f"; {len(giant)} of them over partition.local_max_edges run in one task each"
            if giant
            else "",
        )
    n_components = nodes.select("component_id").distinct().count()
    counts = {f"{key}_engine_{e}_components": 0 for e in (COMPONENT, CLAIM, ROUNDS)}
    parts: list[DataFrame] = []
    local_nodes, local_edges = nodes, edges
    if name != COMPONENT:
        if ids is not None:
            inside = F.col("component_id").isin(ids)
            big_nodes, big_edges = nodes.filter(inside), edges.filter(inside)
            local_nodes, local_edges = nodes.filter(~inside), edges.filter(~inside)
        else:
            big_nodes, big_edges = nodes, edges
        engine = (Claim if name == CLAIM else ExactRounds)(
            params, plan.queries, p.max_rounds, p.collect_threshold, ctx.log
        )
        run = engine.run(big_nodes, big_edges, plan.ranks)
        ops = engine.graph_ops if run.rounds else ()
        parts.append(
            run.batches.withColumn("engine", F.lit(name)).withColumn(
                "graph_engine", F.lit(plan.graph_engine(*ops))
            )
        )
        taken = len(ids) if ids is not None else n_components
        counts[f"{key}_engine_{name}_components"] = taken
        counts[f"{key}_{name}_rounds"] = run.rounds
        counts[f"{key}_{name}_collected"] = run.collected
        ctx.log.info(
            "partition %s: %s engine on %d components: %d rounds placed %d relations, "
            "%d finished on the driver",
            method,
            name,
            taken,
            run.rounds,
            run.placed,
            run.collected,
        )
    if name == COMPONENT or ids is not None:
        parts.append(
            per_component(local_nodes, local_edges, method, params, comm.max_size, comm.seed)
            .withColumn("engine", F.lit(COMPONENT))
            .withColumn("graph_engine", F.lit(plan.graph_engine()))
        )
        counts[f"{key}_engine_{COMPONENT}_components"] = n_components - len(ids or [])
    return union_all(parts), counts


def _partition_method(
    plan: _Plan,
    method: str,
    nodes: DataFrame,
    edges: DataFrame,
    n_units: int,
    cut: Cut | None = None,
) -> StageResult:
    ctx, ranks, scratch = plan.ctx, plan.ranks, plan.scratch
    cfg, tables = ctx.cfg, ctx.tables
    chash = config_hash(cfg, method)
    batches, engine_counts = _build_batches(plan, method, nodes, edges)
    if cut is not None and cut.groups is not None:
        batches = cut.restore(batches, plan.graph_engine("label_propagation"))
        engine_counts[f"{method}_cut_components"] = cut.n_cut
    batches = scratch.materialise(batches)
    batches = with_difficulty(batches, difficulty_cuts(batches))
    rows = (
        batches.join(ranks.withColumnRenamed("unit_id", "seed_id"), "seed_id", "left")
        .withColumn("batch_id", h_col(F.lit(method), F.lit(chash), "seed_id"))
        .withColumn("config_hash", F.lit(chash))
        .withColumn("run_id", F.lit(ctx.run_id))
        .select(*SCHEMAS["subgraphs"].fieldNames())
    )
    rows = scratch.materialise(rows)
    changed = (
        "NOT (t.node_ids <=> s.node_ids AND t.edge_ids <=> s.edge_ids AND t.loss <=> s.loss"
        " AND t.engine <=> s.engine AND t.graph_engine <=> s.graph_engine)"
    )
    res = tables.merge(
        "subgraphs",
        rows,
        update_when=changed,
        delete_missing_where=f"t.method = '{method}' AND t.config_hash = '{chash}'",
    )
    stats = rows.agg(
        F.count("*").alias("batches"),
        F.sum(F.size("edge_ids")).alias("edges"),
        F.sum(F.size("node_ids")).alias("nodes"),
        F.sum(F.array_contains("flags", "over_budget").cast("long")).alias("over_budget"),
    ).first()
    placeholders = nodes.filter("is_placeholder").select(F.col("entity_id").alias("u"))
    covered = (
        rows.select(F.explode(F.concat("node_ids", "edge_ids")).alias("u"))
        .distinct()
        .join(placeholders, "u", "left_anti")
        .count()
    )
    key = method.replace("/", "_")
    ctx.log.info(
        "partition %s: %d batches (%d written, %d updated, %d removed); units covered %d of %d",
        method,
        stats["batches"],
        res.inserted,
        res.updated,
        res.deleted,
        covered,
        n_units,
    )
    return StageResult(
        {
            f"{key}_batches": int(stats["batches"] or 0),
            f"{key}_written": res.inserted,
            f"{key}_updated": res.updated,
            f"{key}_removed": res.deleted,
            f"{key}_over_budget": int(stats["over_budget"] or 0),
            f"{key}_units_uncovered": max(0, n_units - covered),
            **engine_counts,
        }
    )
