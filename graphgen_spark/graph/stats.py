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
    """One ``graph_stats`` row for the current graph."""
    v = entities.select(F.col("entity_id").alias("id"), "is_placeholder")
    e = relations.select(F.col("src_id").alias("src"), F.col("dst_id").alias("dst"))
    comps = queries.components(v.select("id"), e)
    engine = queries.used["components"]
    sizes = comps.groupBy("component").count()
    deg_all = v.join(queries.degrees(v.select("id"), e), "id")
    hist = {
        int(r["degree"]): int(r["n"])
        for r in deg_all.groupBy("degree").agg(F.count("*").alias("n")).collect()
    }
    agg = deg_all.agg(
        F.count("*").alias("vertices"),
        F.sum(F.col("is_placeholder").cast("long")).alias("placeholders"),
        F.sum((F.col("degree") == 0).cast("long")).alias("isolated"),
        F.max("degree").alias("max_degree"),
        F.avg("degree").alias("mean_degree"),
    ).first()
    comp = sizes.agg(F.count("*").alias("n"), F.max("count").alias("largest")).first()
    size_hist = {
        int(r["count"]): int(r["n"])
        for r in sizes.groupBy("count").agg(F.count("*").alias("n")).collect()
    }
    ids = v.select("id")
    missing = (
        e.join(ids.withColumnRenamed("id", "src"), "src", "left_anti")
        .union(e.join(ids.withColumnRenamed("id", "dst"), "dst", "left_anti"))
        .count()
    )
    row = {
        "run_id": run_id,
        "engine": engine,
        "vertices": int(agg["vertices"] or 0),
        "edges": e.count(),
        "placeholders": int(agg["placeholders"] or 0),
        "isolated": int(agg["isolated"] or 0),
        "components": int(comp["n"] or 0),
        "largest_component": int(comp["largest"] or 0),
        "max_degree": int(agg["max_degree"] or 0),
        "mean_degree": float(agg["mean_degree"] or 0.0),
        "degree_histogram": hist,
        "missing_endpoints": int(missing),
        "computed_at": datetime.now(UTC).replace(tzinfo=None),
        "component_sizes": size_hist,
    }
    from graphgen_spark.tables import SCHEMAS

    return spark.createDataFrame([row], SCHEMAS["graph_stats"])
