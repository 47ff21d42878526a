"""The stored knowledge graph as a ``GraphFrame``, for a user's own queries in a notebook.

>>> from graphgen_spark.graph import knowledge_graph
>>> g = knowledge_graph(spark, "out")                      # or catalog="main", schema="kg"
>>> g.find("(a)-[e]->(b)").filter("a.type = 'PERSON'").select("a.name", "e.description", "b.name")

Vertices are the ``entities`` (``id`` = ``entity_id``), edges the ``relations`` (``src`` /
``dst`` = the sorted endpoint ids; relations are undirected, so a pattern that should match
either direction uses :meth:`GraphFrame.as_undirected` or two patterns). Names, types,
descriptions, lineage (``chunk_ids``, ``doc_ids``) and the trainee's ``loss`` (from
``gap_scores``) are attributes.
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from graphgen_spark.session import require_graphframes
from graphgen_spark.tables import Tables

VERTEX_COLUMNS = (
    "name", "type", "description", "n_mentions", "is_placeholder", "chunk_ids", "doc_ids",
)  # fmt: skip
EDGE_COLUMNS = (
    "edge_id", "src_name", "dst_name", "description", "n_mentions", "chunk_ids", "doc_ids",
)  # fmt: skip


def knowledge_graph(
    spark: SparkSession,
    output: str | Path | None = None,
    *,
    catalog: str | None = None,
    schema: str | None = None,
    trainee_model: str | None = None,
):
    """A ``GraphFrame`` over the KG of an output folder (``output``) or a catalog schema.

    ``loss`` is the gap score of ``trainee_model`` (``model@revision`` as stored); when not
    given, of the only trainee scored, and NULL when none or several were.
    """
    require_graphframes(spark)
    from graphframes import GraphFrame

    if output is None and not (catalog and schema):
        raise ValueError("knowledge_graph needs an output folder or both catalog and schema")
    tables = Tables(spark, str(output or ""), catalog, schema)
    for name in ("entities", "relations"):
        if not tables.exists(name):
            raise ValueError(f"no {name} table at {tables.location(name)}: run the merge stage")
    losses = _losses(tables, trainee_model)
    v = (
        tables.read("entities")
        .select(F.col("entity_id").alias("id"), *VERTEX_COLUMNS)
        .join(losses.withColumnRenamed("element_id", "id"), "id", "left")
    )
    e = (
        tables.read("relations")
        .select(F.col("src_id").alias("src"), F.col("dst_id").alias("dst"), *EDGE_COLUMNS)
        .join(losses.withColumnRenamed("element_id", "edge_id"), "edge_id", "left")
    )
    return GraphFrame(v, e)


def _losses(tables: Tables, trainee_model: str | None) -> DataFrame:
    scores = tables.read("gap_scores")
    if trainee_model is None:
        models = [r[0] for r in scores.select("trainee_model").distinct().limit(2).collect()]
        trainee_model = models[0] if len(models) == 1 else None
    if trainee_model is None:
        return tables.spark.createDataFrame([], "element_id string, loss double")
    return scores.filter(F.col("trainee_model") == trainee_model).select("element_id", "loss")
