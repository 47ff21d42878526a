"""The partition plan (§6.9): which engine builds which components of each method.

One :class:`PartitionPlan` per partition run, from the configuration and the graph's giant
components (more than ``partition.local_max_edges`` relations), decided once: every batch
builder reads it. ``triple`` is one motif query over the whole graph
(:mod:`graphgen_spark.partition.triple`); every other method runs per component
(:mod:`graphgen_spark.partition.engine`) unless a round engine
(:class:`graphgen_spark.partition.distributed.RoundEngine`) takes components:

- ``engine: auto`` sends the giant components to the claim engine where it can run the
  method. The exact rounds engine is opt-in (``engine: rounds``): on power-law graphs few
  relations are the best within twice the depth, so rounds place little and the driver
  finishes most of the graph (bench/results/partition_scale_rounds.json);
- ``engine: claim`` or ``rounds`` runs every component that way;
- an engine that cannot run the method falls back to per component, and the route says why.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from graphgen_spark.config import Config
from graphgen_spark.graph.engines import GraphQueries
from graphgen_spark.ids import h
from graphgen_spark.partition.claim import ENGINE as CLAIM
from graphgen_spark.partition.claim import Claim
from graphgen_spark.partition.distributed import RoundEngine
from graphgen_spark.partition.engine import per_component
from graphgen_spark.partition.reference import Params
from graphgen_spark.partition.rounds import ExactRounds
from graphgen_spark.partition.triple import ENGINE as MOTIF
from graphgen_spark.partition.triple import METHOD as TRIPLE

AUTO = "auto"
COMPONENT = "component"
ROUND_ENGINES: dict[str, type[RoundEngine]] = {e.name: e for e in (Claim, ExactRounds)}
Frames = tuple[DataFrame, DataFrame]  # (nodes, edges) with component_id


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


def params_for(cfg: Config) -> Params:
    """The algorithms' settings from ``partition`` (and the sampling the config resolves)."""
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


@dataclass(frozen=True)
class Route:
    """Which engine builds which components of one method.

    ``engine`` takes ``components`` (None: every component); the per-component engine builds
    the others. ``fallback`` says why the per-component engine builds every component though
    a round engine was asked for or giant components are present (the stage logs it).
    """

    engine: str
    components: tuple[str, ...] | None = None
    fallback: str | None = None

    @property
    def by_rounds(self) -> bool:
        return self.engine in ROUND_ENGINES

    @property
    def per_component(self) -> bool:
        return self.engine == COMPONENT or self.components is not None

    def split(self, nodes: DataFrame, edges: DataFrame) -> tuple[Frames, Frames]:
        """The frames ``engine`` takes and the frames left to the per-component engine."""
        if self.components is None:
            return (nodes, edges), (nodes, edges)
        inside = F.col("component_id").isin(list(self.components))
        return (nodes.filter(inside), edges.filter(inside)), (
            nodes.filter(~inside),
            edges.filter(~inside),
        )


@dataclass(frozen=True)
class PartitionPlan:
    """Everything the batch builders of one partition run need (defaults as in §9)."""

    params: Params
    engine: str = AUTO  # partition.engine
    giant: tuple[str, ...] = ()  # components over partition.local_max_edges relations
    max_rounds: int = 50
    collect_threshold: int = 100_000
    community_max_size: int = 20
    community_seed: int = 42

    @classmethod
    def of(cls, cfg: Config, giant: Iterable[str]) -> PartitionPlan:
        p = cfg.partition
        return cls(
            params=params_for(cfg),
            engine=p.engine,
            giant=tuple(sorted(giant)),
            max_rounds=p.max_rounds,
            collect_threshold=p.collect_threshold,
            community_max_size=p.community.max_size,
            community_seed=p.community.seed,
        )

    def route(self, method: str) -> Route:
        """The engine choice for ``method`` (module docstring)."""
        if method == TRIPLE:
            return Route(MOTIF)
        if self.engine in ROUND_ENGINES:
            return self._by_rounds(self.engine, method, None)
        if not self.giant:
            return Route(COMPONENT)
        if self.engine == COMPONENT:
            reason = Claim.unsupported(method, self.params) or "partition.engine is component"
            return Route(COMPONENT, fallback=reason)
        return self._by_rounds(CLAIM, method, self.giant)

    def _by_rounds(self, engine: str, method: str, components: tuple[str, ...] | None) -> Route:
        reason = ROUND_ENGINES[engine].unsupported(method, self.params)
        return Route(COMPONENT, fallback=reason) if reason else Route(engine, components)

    def round_engine(self, name: str, graph: GraphQueries, log: logging.Logger) -> RoundEngine:
        """The round engine ``name``, keeping its frames through ``graph.keep``."""
        return ROUND_ENGINES[name](self.params, graph, self.max_rounds, self.collect_threshold, log)

    def by_component(self, method: str, nodes: DataFrame, edges: DataFrame) -> DataFrame:
        """Batches of ``method`` by the per-component engine."""
        return per_component(
            nodes, edges, method, self.params, self.community_max_size, self.community_seed
        )
