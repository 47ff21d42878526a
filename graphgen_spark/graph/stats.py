"""Graph statistics on GraphFrames: components, degrees, a dangling-edge check (§4.5).

GraphFrames computes connected components when its JVM artifact is on the classpath. On a
machine where it could not be installed, the same numbers come from iterative min-label
propagation with DataFrame joins (``engine = 'dataframe'`` in ``graph_stats``), so the run
still reports its graph instead of failing at the last step.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from graphgen_spark.session import has_graphframes


def graph_frames(vertices: DataFrame, edges: DataFrame):
    """A GraphFrame over entities (``id``) and relations (``src``, ``dst``)."""
    from graphframes import GraphFrame

    return GraphFrame(vertices, edges)


def _components_graphframes(
    spark: SparkSession, v: DataFrame, e: DataFrame, checkpoint: str
) -> DataFrame:
    spark.sparkContext.setCheckpointDir(checkpoint)
    return graph_frames(v, e).connectedComponents().select("id", "component")


def _components_dataframe(v: DataFrame, e: DataFrame, max_iter: int = 100) -> DataFrame:
    """Min-label propagation over undirected edges until no label changes."""
    both = e.select("src", "dst").union(
        e.select(F.col("dst").alias("src"), F.col("src").alias("dst"))
    )
    labels = v.select("id", F.col("id").alias("component")).localCheckpoint()
    for _ in range(max_iter):
        incoming = (
            both.join(labels, both.src == labels.id)
            .groupBy(both.dst.alias("id"))
            .agg(F.min("component").alias("cand"))
        )
        new = (
            labels.join(incoming, "id", "left")
            .select("id", F.least("component", F.coalesce("cand", "component")).alias("component"))
            .localCheckpoint()
        )
        changed = (
            new.join(labels.withColumnRenamed("component", "old"), "id")
            .filter("component <> old")
            .limit(1)
            .count()
        )
        labels = new
        if not changed:
            break
    return labels


def connected_components(
    spark: SparkSession, v: DataFrame, e: DataFrame, checkpoint: str
) -> tuple[DataFrame, str]:
    """``(id, component)`` for vertices ``v(id)`` and edges ``e(src, dst)``, and the engine:
    GraphFrames when its jar is present, else DataFrame min-label propagation."""
    if has_graphframes(spark):
        return _components_graphframes(spark, v, e, checkpoint), "graphframes"
    return _components_dataframe(v, e), "dataframe"


def compute_stats(
    spark: SparkSession, entities: DataFrame, relations: DataFrame, run_id: str, checkpoint: str
) -> DataFrame:
    """One ``graph_stats`` row for the current graph."""
    v = entities.select(F.col("entity_id").alias("id"), "is_placeholder")
    e = relations.select(F.col("src_id").alias("src"), F.col("dst_id").alias("dst"))
    comps, engine = connected_components(spark, v.select("id"), e, checkpoint)
    sizes = comps.groupBy("component").count()
    degree = (
        e.select(F.col("src").alias("id"))
        .union(e.select(F.col("dst").alias("id")))
        .groupBy("id")
        .count()
        .withColumnRenamed("count", "degree")
    )
    deg_all = v.join(degree, "id", "left").fillna(0, ["degree"])
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
    }
    from graphgen_spark.tables import SCHEMAS

    return spark.createDataFrame([row], SCHEMAS["graph_stats"])
