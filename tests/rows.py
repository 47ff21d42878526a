"""Schema-driven table rows for tests: every column of the table present, unknown names refused."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from graphgen_spark.ids import h
from graphgen_spark.tables import SCHEMAS, MergeResult, Tables


def row(table: str, **values: Any) -> dict[str, Any]:
    """A row of ``table``: the given values, None in every other column."""
    columns = SCHEMAS[table].fieldNames()
    unknown = sorted(set(values) - set(columns))
    if unknown:
        raise ValueError(
            f"table {table!r} has no column {', '.join(unknown)}; its columns: {', '.join(columns)}"
        )
    return {**dict.fromkeys(columns), **values}


def chunk_row(
    chunk_id: str, doc_id: str, text: str, language: str = "en", n_tokens: int = 10
) -> dict[str, Any]:
    """A ``chunks`` row: the whole of a one-chunk text, hashed as the chunk stage hashes it."""
    return row(
        "chunks",
        chunk_id=chunk_id,
        doc_id=doc_id,
        index=0,
        start_token=0,
        end_token=n_tokens,
        n_tokens=n_tokens,
        text=text,
        content_hash=h(text),
        language=language,
    )


def frame(spark: SparkSession, table: str, rows: Iterable[Mapping[str, Any]]) -> DataFrame:
    """``rows`` as a DataFrame with ``table``'s schema."""
    return spark.createDataFrame(list(rows), SCHEMAS[table])


def merge_rows(tables: Tables, table: str, rows: Iterable[Mapping[str, Any]]) -> MergeResult:
    """MERGE ``rows`` into ``table`` with its default (insert-only) policy."""
    return tables.merge(table, frame(tables.spark, table, rows))
