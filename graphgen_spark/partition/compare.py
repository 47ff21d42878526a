"""Batch statistics of a partition and the difference between two partitions of one graph.

Used to measure what an approximate engine (the claim engine of §6.9) changes against the
sequential reference on the same graph: how many batches, how full they are, their losses,
and how many seeds and batches are the same. Works on anything shaped like a batch (the
reference's ``Batch`` or a collected ``subgraphs``/``BATCH_SCHEMA`` row), on the driver.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from graphgen_spark.partition.contract import BatchLike


@dataclass(frozen=True)
class BatchStats:
    batches: int
    relation_batches: int  # batches holding at least one relation
    edges_covered: int  # distinct relations in some batch
    mean_edges: float | None  # per relation batch
    max_edges: int
    mean_nodes: float | None
    mean_tokens: float | None
    mean_loss: float | None  # over batches that have a loss
    edges_per_batch: dict[int, int] = field(default_factory=dict)  # relations → batches

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class PartitionDiff:
    """``candidate`` against ``reference``; ``delta`` is candidate − reference per number."""

    candidate: BatchStats
    reference: BatchStats
    delta: dict[str, float]
    same_seeds: int  # seeds of both partitions
    same_batches: int  # same seed and the same relations in the same order
    seeds_only_candidate: int
    seeds_only_reference: int
    relations_moved: int  # relations whose batch has a different seed in the two

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _mean(values: Sequence[float]) -> float | None:
    """Correctly rounded (``fsum``), so batch order never changes a statistic."""
    return math.fsum(values) / len(values) if values else None


def batch_stats(batches: Sequence[BatchLike]) -> BatchStats:
    """Counts and means over the batches (edge counts only over batches with relations)."""
    with_edges = [b for b in batches if b.edge_ids]
    sizes = [len(b.edge_ids) for b in with_edges]
    return BatchStats(
        batches=len(batches),
        relation_batches=len(with_edges),
        edges_covered=len({e for b in batches for e in b.edge_ids}),
        mean_edges=_mean(sizes),
        max_edges=max(sizes, default=0),
        mean_nodes=_mean([len(b.node_ids) for b in batches]),
        mean_tokens=_mean([b.tokens for b in batches]),
        mean_loss=_mean([b.loss for b in batches if b.loss is not None]),
        edges_per_batch=dict(sorted(Counter(sizes).items())),
    )


def compare(candidate: Sequence[BatchLike], reference: Sequence[BatchLike]) -> PartitionDiff:
    """How ``candidate`` differs from ``reference`` (two partitions of the same graph)."""
    a, b = batch_stats(candidate), batch_stats(reference)
    delta = {
        k: float(x) - float(y)
        for k, x in a.as_dict().items()
        if isinstance(x, int | float) and (y := getattr(b, k)) is not None and x is not None
    }
    seeds_a = {x.seed_id: tuple(x.edge_ids) for x in candidate}
    seeds_b = {x.seed_id: tuple(x.edge_ids) for x in reference}
    home_a = {e: x.seed_id for x in candidate for e in x.edge_ids}
    home_b = {e: x.seed_id for x in reference for e in x.edge_ids}
    return PartitionDiff(
        candidate=a,
        reference=b,
        delta=delta,
        same_seeds=len(seeds_a.keys() & seeds_b.keys()),
        same_batches=sum(1 for s, es in seeds_a.items() if seeds_b.get(s) == es),
        seeds_only_candidate=len(seeds_a.keys() - seeds_b.keys()),
        seeds_only_reference=len(seeds_b.keys() - seeds_a.keys()),
        relations_moved=sum(1 for e, s in home_a.items() if home_b.get(e) != s),
    )
