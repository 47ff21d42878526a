"""The per-component exact engine (§6.9): the sequential algorithm on each connected component.

No batch spans two components and the sequential algorithm on a component depends only on
that component's order, so running :mod:`graphgen_spark.partition.reference` per component
(``cogroup(...).applyInPandas`` keyed by component id) reproduces the global sequential
result exactly, with components spread over the executors. How it differs from the
sequential reference: only in where it runs — a component larger than one task's memory is
the limit. For `ece/edge_seed` with `max_width` the claim engine of §6.9
(:mod:`graphgen_spark.partition.claim`) takes such components; other methods (and
`max_tokens`) still run them in one task, and the stage logs it, unless ``engine: rounds``
sends `ece/edge_seed` to the exact rounds engine (:mod:`graphgen_spark.partition.rounds`).
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import types as T

from graphgen_spark.partition.community import METHOD as COMMUNITY
from graphgen_spark.partition.community import community
from graphgen_spark.partition.graph import Edge, Graph, Node
from graphgen_spark.partition.reference import Params, Partition, partition

NODE_COLUMNS = ("entity_id", "tokens", "loss", "rr", "name", "is_placeholder", "type")
EDGE_COLUMNS = ("edge_id", "src_id", "dst_id", "tokens", "loss", "rr")
BATCH_SCHEMA = T.StructType(
    [
        T.StructField("component_id", T.StringType()),
        T.StructField("method", T.StringType()),
        T.StructField("seed_id", T.StringType()),
        T.StructField("node_ids", T.ArrayType(T.StringType())),
        T.StructField("edge_ids", T.ArrayType(T.StringType())),
        T.StructField("n_units", T.IntegerType()),
        T.StructField("tokens", T.LongType()),
        T.StructField("loss", T.DoubleType()),
        T.StructField("flags", T.ArrayType(T.StringType())),
    ]
)


def _none(x: object) -> object:
    return None if x is None or (isinstance(x, float) and pd.isna(x)) else x


def build_graph(nodes: pd.DataFrame, edges: pd.DataFrame) -> Graph:
    return Graph(
        [
            Node(
                r.entity_id,
                int(r.tokens or 0),
                _none(r.loss),
                r.rr,
                r.name or "",
                bool(r.is_placeholder),
                r.type or "",
            )
            for r in nodes.itertuples(index=False)
        ],
        [
            Edge(r.edge_id, r.src_id, r.dst_id, int(r.tokens or 0), _none(r.loss), r.rr)
            for r in edges.itertuples(index=False)
        ],
    )


def run_method(graph: Graph, method: str, params: Params, max_size: int, seed: int) -> Partition:
    if method == COMMUNITY:
        return community(graph, params, max_size, seed)
    return partition(graph, method, params)


def _component_fn(
    method: str, params: Params, max_size: int, seed: int
) -> Callable[[pd.DataFrame, pd.DataFrame], pd.DataFrame]:
    def run(nodes: pd.DataFrame, edges: pd.DataFrame) -> pd.DataFrame:
        if nodes.empty:
            return pd.DataFrame([], columns=BATCH_SCHEMA.fieldNames())
        component = nodes["component_id"].iloc[0]
        result = run_method(build_graph(nodes, edges), method, params, max_size, seed)
        rows = [
            {
                "component_id": component,
                "method": b.method,
                "seed_id": b.seed_id,
                "node_ids": list(b.node_ids),
                "edge_ids": list(b.edge_ids),
                "n_units": b.n_units,
                "tokens": b.tokens,
                "loss": b.loss,
                "flags": list(b.flags),
            }
            for b in result.batches
        ]
        return pd.DataFrame(rows, columns=BATCH_SCHEMA.fieldNames())

    return run


def per_component(
    nodes: DataFrame, edges: DataFrame, method: str, params: Params, max_size: int, seed: int
) -> DataFrame:
    """Batches of ``method`` for every component; ``nodes``/``edges`` carry ``component_id``."""
    n = nodes.select("component_id", *NODE_COLUMNS)
    e = edges.select("component_id", *EDGE_COLUMNS)
    return (
        n.groupBy("component_id")
        .cogroup(e.groupBy("component_id"))
        .applyInPandas(_component_fn(method, params, max_size, seed), BATCH_SCHEMA)
    )
