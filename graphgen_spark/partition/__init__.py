"""Partitioning the knowledge graph into generation batches (method.md §6).

``reference`` holds the single-process sequential algorithms, the oracle every distributed
engine must reproduce or, for approximate engines, satisfy ``contract`` for.
"""
