"""`triple` (§6.8) as one motif query: every relation with its endpoints is a batch.

The sequential reference emits the same set in rank order (its BFS order does not change
it), so no component has to fit in one task: the batches are the triplets ``(a)-[e]->(b)``
of the whole graph, with the reference's token and loss rules.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from graphgen_spark.graph.engines import GraphQueries
from graphgen_spark.partition.distributed import _loss, _mean, _tokens

METHOD = "triple"
ENGINE = "motif"


def triples(nodes: DataFrame, edges: DataFrame, queries: GraphQueries, loss_strategy: str):
    """``BATCH_SCHEMA`` rows of `triple` for ``nodes``/``edges`` as the partition stage has
    them (``component_id``, ``tokens``, ``loss``)."""
    v = nodes.select(F.col("entity_id").alias("id"), _tokens("tokens"), _loss("loss"))
    e = edges.select(
        F.col("src_id").alias("src"),
        F.col("dst_id").alias("dst"),
        "edge_id",
        "component_id",
        _tokens("tokens"),
        _loss("loss"),
    )
    found = queries.triplets(v, e)
    edge_loss = F.filter(F.array(F.col("e.loss")), lambda x: x.isNotNull())
    node_loss = F.filter(F.array(F.col("a.loss"), F.col("b.loss")), lambda x: x.isNotNull())
    if loss_strategy == "only_edge":
        loss = F.when(F.size(edge_loss) > 0, _mean(edge_loss)).when(
            F.size(node_loss) > 0, _mean(node_loss)
        )
    else:
        pool = F.concat(edge_loss, node_loss)
        loss = F.when(F.size(pool) > 0, _mean(pool))
    return found.select(
        F.col("e.component_id").alias("component_id"),
        F.lit(METHOD).alias("method"),
        F.col("e.edge_id").alias("seed_id"),
        F.array("a.id", "b.id").alias("node_ids"),
        F.array("e.edge_id").alias("edge_ids"),
        F.lit(3).alias("n_units"),
        (F.col("e.tokens") + F.col("a.tokens") + F.col("b.tokens")).alias("tokens"),
        loss.cast("double").alias("loss"),
        F.array().cast("array<string>").alias("flags"),
    )
