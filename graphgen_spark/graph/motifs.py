"""Fixed-shape paths for `triple` / `quintuple` sampling and multi-hop candidates (§6.8).

The GraphFrames formulation is the reference: motif ``(a)-[e1]->(b); (b)-[e2]->(c)`` over
symmetrised edges. The same query as two DataFrame joins runs where the GraphFrames jar is
missing; tests hold both to a brute-force enumeration.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from graphgen_spark.session import has_graphframes


def symmetrised(relations: DataFrame) -> DataFrame:
    """Both directions of every undirected relation: ``(src, dst, edge_id)``."""
    r = relations.select(F.col("src_id").alias("src"), F.col("dst_id").alias("dst"), "edge_id")
    back = r.select(F.col("dst").alias("src"), F.col("src").alias("dst"), "edge_id")
    return r.union(back)


def two_hop_paths(relations: DataFrame, entities: DataFrame, engine: str = "auto") -> DataFrame:
    """Every path ``a -e1- b -e2- c`` with ``a != c``: columns a, e1, b, e2, c (both orders)."""
    spark = relations.sparkSession
    if engine == "graphframes" or (engine == "auto" and has_graphframes(spark)):
        from graphframes import GraphFrame

        g = GraphFrame(entities.select(F.col("entity_id").alias("id")), symmetrised(relations))
        found = g.find("(a)-[e1]->(b); (b)-[e2]->(c)").filter("a.id != c.id")
        return found.select(
            F.col("a.id").alias("a"),
            F.col("e1.edge_id").alias("e1"),
            F.col("b.id").alias("b"),
            F.col("e2.edge_id").alias("e2"),
            F.col("c.id").alias("c"),
        )
    s = symmetrised(relations)
    first = s.select(F.col("src").alias("a"), F.col("edge_id").alias("e1"), F.col("dst").alias("b"))
    second = s.select(
        F.col("src").alias("b"), F.col("edge_id").alias("e2"), F.col("dst").alias("c")
    )
    return first.join(second, "b").filter("a != c").select("a", "e1", "b", "e2", "c")
