"""Filesystem operations through Hadoop, so staging works on local disks and object stores."""

from __future__ import annotations

from pyspark.sql import SparkSession


def _fs(spark: SparkSession, path: str):
    jvm = spark.sparkContext._jvm  # type: ignore[attr-defined]
    jpath = jvm.org.apache.hadoop.fs.Path(path)
    return jpath, jpath.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())  # type: ignore[attr-defined]


def exists(spark: SparkSession, path: str) -> bool:
    jpath, fs = _fs(spark, path)
    return bool(fs.exists(jpath))


def list_dirs(spark: SparkSession, path: str) -> list[str]:
    jpath, fs = _fs(spark, path)
    if not fs.exists(jpath):
        return []
    return sorted(str(s.getPath().toString()) for s in fs.listStatus(jpath) if s.isDirectory())


def delete(spark: SparkSession, path: str) -> None:
    jpath, fs = _fs(spark, path)
    if fs.exists(jpath):
        fs.delete(jpath, True)
