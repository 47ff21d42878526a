"""The knowledge graph: normalisation, graph queries (GraphFrames or DataFrame joins),
statistics, and :func:`knowledge_graph` for users' own GraphFrame queries."""

from graphgen_spark.graph.kg import knowledge_graph

__all__ = ["knowledge_graph"]
