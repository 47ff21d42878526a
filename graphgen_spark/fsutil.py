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


def list_files(spark: SparkSession, path: str, suffix: str = "") -> list[str]:
    """Data files directly in ``path`` ending in ``suffix`` (none if it does not exist)."""
    jpath, fs = _fs(spark, path)
    if not fs.exists(jpath):
        return []
    return sorted(
        str(s.getPath().toString())
        for s in fs.listStatus(jpath)
        if s.isFile() and s.getPath().getName().endswith(suffix)
    )


def qualified(spark: SparkSession, path: str) -> str:
    """``path`` with its scheme and, for a relative local path, the driver's folder: what
    an executor (another working directory, another machine) can open."""
    jpath, fs = _fs(spark, path)
    return str(fs.makeQualified(jpath).toString())


def delete(spark: SparkSession, path: str) -> None:
    jpath, fs = _fs(spark, path)
    if fs.exists(jpath):
        fs.delete(jpath, True)


def move_single_file(spark: SparkSession, src_dir: str, dest: str) -> None:
    """Move the one data file Spark wrote into ``src_dir`` to ``dest`` (replacing it), then
    remove ``src_dir``: how a ``coalesce(1)`` write becomes a named file on any filesystem."""
    src, fs = _fs(spark, src_dir)
    parts = [
        s.getPath()
        for s in fs.listStatus(src)
        if s.isFile() and not s.getPath().getName().startswith(("_", "."))
    ]
    if len(parts) != 1:
        raise RuntimeError(f"expected one data file in {src_dir}, found {len(parts)}")
    target, _ = _fs(spark, dest)
    if fs.exists(target):
        fs.delete(target, False)
    if not fs.rename(parts[0], target):
        raise OSError(f"could not move {parts[0].toString()} to {dest}")
    fs.delete(src, True)


def read_text(spark: SparkSession, path: str) -> str | None:
    """The whole (small) file as text, or None when it does not exist."""
    jpath, fs = _fs(spark, path)
    if not fs.exists(jpath):
        return None
    jvm = spark.sparkContext._jvm  # type: ignore[attr-defined]
    stream = fs.open(jpath)
    try:
        data = jvm.org.apache.commons.io.IOUtils.toByteArray(stream)
    finally:
        stream.close()
    return bytes(data).decode("utf-8", errors="replace")


def write_text(spark: SparkSession, path: str, text: str, overwrite: bool) -> bool:
    """Write a small file; without ``overwrite``, False when it exists already."""
    jpath, fs = _fs(spark, path)
    if not overwrite and fs.exists(jpath):
        return False
    try:
        stream = fs.create(jpath, overwrite)
    except Exception as exc:  # py4j: FileAlreadyExistsException when created meanwhile
        if not overwrite and "AlreadyExists" in str(exc):
            return False
        raise
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()
    return True
