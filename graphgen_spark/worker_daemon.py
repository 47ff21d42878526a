"""PySpark's Python worker daemon, made cheap per task (``spark.python.daemon.module``).

Spark starts one daemon per executor and forks the Python workers from it; a worker then
runs task after task. PySpark's own daemon cost about 0.1 s per task on top of the task's
work (64 tasks of an empty ``mapInPandas`` took 4 s on 2 cores; 1.6 s with this daemon),
which the pipeline's many small Python tasks paid again and again. Set before the fork,
so that every worker inherits it:

* **A full garbage collection after every task** (PySpark's ``gc.collect()``) walked every
  object of pandas, pyarrow and the project's modules. They are imported here, in the
  daemon, and frozen (``gc.freeze``): a collection in a worker walks only what its tasks
  made. Importing them once per executor also saves each new worker ~2 s of imports.
* **``importlib.invalidate_caches()`` before every task**, which on Python before 3.13
  makes each ``zipimporter`` read its archive's whole directory again: Spark's
  ``pyspark.zip``, py4j's zip and the spark-core jar, thousands of entries each. Those
  come with the Spark installation and do not change while the executor lives, so their
  finders keep their directory; any other archive (``--py-files``) is re-read as before.

Nothing else changes, and no thread, file or connection is opened before the fork.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import sys
import zipimport

#: What the stages' UDFs and mapInPandas functions run on (pipeline imports every stage).
PRELOAD = ("pandas", "pyarrow", "pyspark.sql.pandas.serializers", "graphgen_spark.pipeline")


def spark_archives(path: list[str]) -> frozenset[str]:
    """The Spark installation's own archives on ``path``: pyspark.zip, py4j-*.zip and jars."""
    name = os.path.basename
    return frozenset(
        p
        for p in path
        if p.endswith(".jar") or (p.endswith(".zip") and name(p).startswith(("pyspark", "py4j")))
    )


def keep_archives(archives: frozenset[str]) -> None:
    """Finders into ``archives`` keep their directory on ``invalidate_caches``."""
    reread = zipimport.zipimporter.invalidate_caches

    def invalidate_caches(self: zipimport.zipimporter) -> None:
        if self.archive not in archives:
            reread(self)

    zipimport.zipimporter.invalidate_caches = invalidate_caches  # type: ignore[method-assign]


def preload() -> None:
    """Import :data:`PRELOAD`; a module missing here is left to the task that needs it,
    which then fails with its own error (a daemon that died would fail every task)."""
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


if __name__ == "__main__":
    keep_archives(spark_archives(sys.path))
    preload()
    from pyspark import daemon

    gc.freeze()
    daemon.manager()
