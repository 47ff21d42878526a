"""Schema-driven table rows for tests: every column of the table present, unknown names refused."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pyspark.sql import DataFrame, SparkSession

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


def frame(spark: SparkSession, table: str, rows: Iterable[Mapping[str, Any]]) -> DataFrame:
    """``rows`` as a DataFrame with ``table``'s schema."""
    return spark.createDataFrame(list(rows), SCHEMAS[table])


def merge_rows(tables: Tables, table: str, rows: Iterable[Mapping[str, Any]]) -> MergeResult:
    """MERGE ``rows`` into ``table`` with its default (insert-only) policy."""
    return tables.merge(table, frame(tables.spark, table, rows))
