"""The Python worker daemon (graphgen_spark.worker_daemon): the session's workers are forked
from it, and the two per-task costs it removes are gone in a real worker."""

from __future__ import annotations

import zipfile
import zipimport

from graphgen_spark import worker_daemon as wd


def test_workers_come_from_the_daemon_with_frozen_modules_and_kept_archives(spark):
    assert spark.conf.get("spark.python.daemon.module") == "graphgen_spark.worker_daemon"

    def probe(_rows):
        """In a Python worker: frozen objects, and what ``invalidate_caches`` costs each
        zipimporter of Spark's archives (does it replace the directory it holds?)."""
        import gc
        import importlib
        import sys
        import zipimport

        kept = {
            p: f._files
            for p, f in sys.path_importer_cache.items()
            if isinstance(f, zipimport.zipimporter) and f.archive.endswith(("pyspark.zip", ".jar"))
        }
        importlib.invalidate_caches()
        same = [sys.path_importer_cache[p]._files is files for p, files in kept.items()]
        yield gc.get_freeze_count(), len(same), all(same), "pandas" in sys.modules

    rdd = spark.sparkContext.parallelize(range(4), 4)
    for frozen, archives, kept, pandas in rdd.mapPartitions(probe).collect():
        # the daemon imported pandas and the stages, then froze them for the collector
        assert frozen > 10_000 and pandas
        # Spark's own archives are on the workers' path and keep their directory
        assert archives >= 1 and kept


def test_only_spark_archives_are_kept(tmp_path):
    path = [
        "/opt/spark/python/lib/pyspark.zip",
        "/opt/spark/python/lib/py4j-0.10.9.9-src.zip",
        "/opt/spark/jars/spark-core_2.13-4.0.1.jar",
        "/home/u/deps.zip",
        "/home/u/src",
    ]
    assert wd.spark_archives(path) == frozenset(path[:3])

    # a user's archive is still read again: a module added to it is found
    user = tmp_path / "user.zip"
    with zipfile.ZipFile(user, "w") as z:
        z.writestr("a.py", "")
    spark_zip = tmp_path / "pyspark.zip"
    with zipfile.ZipFile(spark_zip, "w") as z:
        z.writestr("b.py", "")
    original = zipimport.zipimporter.invalidate_caches
    try:
        wd.keep_archives(frozenset({str(spark_zip)}))
        finders = {p: zipimport.zipimporter(str(p)) for p in (user, spark_zip)}
        held = {p: f._files for p, f in finders.items()}
        for p in (user, spark_zip):
            with zipfile.ZipFile(p, "a") as z:
                z.writestr("new.py", "")
            finders[p].invalidate_caches()
        assert finders[user]._files is not held[user] and "new.py" in finders[user]._files
        assert finders[spark_zip]._files is held[spark_zip]
    finally:
        zipimport.zipimporter.invalidate_caches = original
