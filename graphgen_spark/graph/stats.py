"""Graph statistics: components, degrees, a dangling-edge check (§4.5).

The graph queries run on the formulation ``graph.engine`` picks (:mod:`.engines`):
GraphFrames where its jar is present, DataFrame joins where not; ``graph_stats.engine`` names
the one that computed the components.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from graphgen_spark.graph.engines import GraphQueries


def compute_stats(
    spark: SparkSession,
    entities: DataFrame,
    relations: DataFrame,
    run_id: str,
    queries: GraphQueries,
) -> DataFrame:
    """One ``graph_stats`` row for the current graph, from three small queries (the
    figures are sums over the histograms, taken on the driver)."""
    v = entities.select(F.col("entity_id").alias("id"), "is_placeholder")
    e = relations.select(F.col("src_id").alias("src"), F.col("dst_id").alias("dst"))
    comps = queries.components(v.select("id"), e)
    engine = queries.used["components"]
    deg_all = v.join(queries.degrees(v.select("id"), e), "id")
    by_degree = deg_all.groupBy("degree").agg(
        F.count("*").alias("n"), F.sum(F.col("is_placeholder").cast("long")).alias("p")
    )
    hist, placeholders = {}, 0
    for r in by_degree.collect():
        hist[int(r["degree"])] = int(r["n"])
        placeholders += int(r["p"] or 0)
    sizes = comps.groupBy("component").count()
    size_hist = {
        int(r["count"]): int(r["n"])
        for r in sizes.groupBy("count").agg(F.count("*").alias("n")).collect()
    }
    edges, missing = _edges_and_missing_endpoints(v.select("id"), e)
    vertices = sum(hist.values())
    row = {
        "run_id": run_id,
        "engine": engine,
        "vertices": vertices,
        "edges": edges,
        "placeholders": placeholders,
        "isolated": hist.get(0, 0),
        "components": sum(size_hist.values()),
        "largest_component": max(size_hist, default=0),
        "max_degree": max(hist, default=0),
        "mean_degree": sum(d * n for d, n in hist.items()) / vertices if vertices else 0.0,
        "degree_histogram": hist,
        "missing_endpoints": missing,
        "computed_at": datetime.now(UTC).replace(tzinfo=None),
        "component_sizes": size_hist,
    }
    from graphgen_spark.tables import SCHEMAS

    return spark.createDataFrame([row], SCHEMAS["graph_stats"])


def _edges_and_missing_endpoints(ids: DataFrame, e: DataFrame) -> tuple[int, int]:
    """Relations, and endpoints naming no entity (an edge missing both counts twice)."""
    known = ids.select("id", F.lit(1).alias("known"))
    r = (
        e.join(known.withColumnRenamed("id", "src").withColumnRenamed("known", "s"), "src", "left")
        .join(known.withColumnRenamed("id", "dst").withColumnRenamed("known", "d"), "dst", "left")
        .agg(
            F.count("*").alias("edges"),
            F.sum(F.col("s").isNull().cast("long") + F.col("d").isNull().cast("long")).alias("m"),
        )
        .first()
    )
    return int(r["edges"]), int(r["m"] or 0)
