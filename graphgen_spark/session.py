"""SparkSession with Delta and GraphFrames, for local runs and clusters alike.

``spark.jars`` decides where the JVM artifacts come from: ``cached`` (the local cache made
by ``make setup``: offline, fast), ``packages`` (``spark.jars.packages`` with the pinned
coordinates, resolved at start), ``present`` (the cluster already has them, as Databricks
has Delta). Nothing secret is ever put into the Spark conf; should a user put one there
(``spark.executorEnv.SYNTHESIZER_API_KEY``, ``spark.yarn.appMasterEnv.*``), the redaction
regex below keeps its value off the Spark UI's environment page and out of event logs.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pyspark import SparkConf, SparkContext
from pyspark.sql import SparkSession

from graphgen_spark.config import Config
from graphgen_spark.errors import MissingArtifact
from graphgen_spark.jars import cached_jars, coordinates

if TYPE_CHECKING:
    import pandas as pd

DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}
# LLM stages must not run a task twice on purpose: speculation would re-send requests.
BASE_CONF = {
    "spark.speculation": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.databricks.delta.schema.autoMerge.enabled": "false",
    "spark.sql.adaptive.enabled": "true",
    # pyspark counts as a shell, so Spark would draw its stage bar on stderr: it overwrites
    # the LLM progress line in a terminal and fills a log with carriage returns
    "spark.ui.showConsoleProgress": "false",
    # every query's plan is rendered as text for the listeners; the iterative graph
    # algorithms' plans render to hundreds of MB and ran a 2 GB driver out of heap (seen in
    # CI): 1 MiB of plan text is plenty to read
    "spark.sql.maxPlanStringLength": str(1 << 20),
    # Python workers are forked with the project's modules already imported (worker_daemon)
    "spark.python.daemon.module": "graphgen_spark.worker_daemon",
}
#: Spark's own default ``spark.redaction.regex``, kept as a part of ours.
SPARK_DEFAULT_REDACTION = "(?i)secret|password|token|access[.]?key"
#: The key names this project and its users' endpoints use (``SYNTHESIZER_API_KEY``...).
PROJECT_REDACTION = "secret|password|token|api[_.-]?key|access[_.-]?key|credential|authorization"


def redaction_regex(user: str | None = None) -> str:
    """``spark.redaction.regex`` covering Spark's default, the project's key names and a
    user's own pattern (Spark redacts a conf entry whose name or value matches)."""
    names = PROJECT_REDACTION.split("|") + SPARK_DEFAULT_REDACTION[4:].split("|")
    parts = list(dict.fromkeys(names)) + ([f"(?:{user})"] if user else [])
    return "(?i)" + "|".join(parts)


def build_session(
    cfg: Config, master: str | None = None, extra_conf: dict | None = None, require: bool = True
) -> SparkSession:
    """Get or create the session for this config (an existing session is reused as is).

    The SparkContext starts first, so that with ``require`` a classpath without Delta
    stops here, with the fix, before Spark tries to load Delta's session extension (and
    not deep inside the first table read)."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    master = master or cfg.spark.master
    conf = (
        SparkConf()
        .setAppName(cfg.spark.app_name)
        .setAll(list(_session_conf(cfg, master, extra_conf).items()))
    )
    if master:
        conf.setMaster(master)
    sc = SparkContext.getOrCreate(conf)
    if require and not _has_class(sc, "io.delta.tables.DeltaTable"):
        sc.stop()
        raise MissingArtifact(_missing_delta(cfg))
    _quiet_checkpoint_cleanup(sc)
    return SparkSession.builder.getOrCreate()


def _quiet_checkpoint_cleanup(sc: SparkContext) -> None:
    """Spark warns each time it cleans up a local checkpoint that nothing will recompute
    (every ``Scratch.materialise`` of a local run): dozens of lines that bury the job's own.
    That one logger is set to ERROR."""
    jvm = sc._jvm  # type: ignore[attr-defined]
    jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
        "org.apache.spark.rdd.MapPartitionsRDD", jvm.org.apache.logging.log4j.Level.ERROR
    )


def _session_conf(cfg: Config, master: str | None, extra: dict | None) -> dict[str, str]:
    """Every Spark setting the config implies, the user's own last."""
    conf = {
        **DELTA_CONF,
        **BASE_CONF,
        "spark.sql.shuffle.partitions": str(cfg.spark.shuffle_partitions),
        "spark.log.level": cfg.spark.log_level,  # from the context's start, not after it
    }
    if cfg.spark.jars == "cached":
        jars = cached_jars(cfg.spark.jar_cache)
        if not any("delta-spark" in j for j in jars):
            raise MissingArtifact(
                f"Delta jars are not in the cache {cfg.spark.jar_cache!r}; run `make setup` "
                f"(it resolves {coordinates()['delta']} from Maven Central), or set "
                "spark.jars: packages / present in the config"
            )
        conf["spark.jars"] = ",".join(jars)
    elif cfg.spark.jars == "packages":
        conf["spark.jars.packages"] = ",".join(coordinates().values())
    if master and master.startswith("local"):
        # python workers of a local session must use this interpreter (the project's venv);
        # PySpark reads the environment variable, not the conf, when it starts them
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    conf.update(cfg.spark.conf)
    conf.update(extra or {})
    conf["spark.redaction.regex"] = redaction_regex(conf.get("spark.redaction.regex"))
    return conf


def _missing_delta(cfg: Config) -> str:
    coord = coordinates()["delta"]
    return (
        f"Delta Lake is not on the Spark classpath (io.delta.tables.DeltaTable not found; "
        f"spark.jars: {cfg.spark.jars}): this job needs {coord}. Start it with `graphgen-spark "
        "submit` (it passes the jars `make setup` cached), or give spark-submit "
        f"`--jars` with those jars, or `--packages {coord}` where the cluster reaches Maven "
        "Central; on Databricks, use a runtime that includes Delta"
    )


def _has_class(sc: SparkContext, name: str) -> bool:
    jvm = sc._jvm
    try:
        loader = jvm.Thread.currentThread().getContextClassLoader()  # type: ignore[union-attr]
        jvm.java.lang.Class.forName(name, True, loader)  # type: ignore[union-attr]
        return True
    except Exception:
        return False


def has_graphframes(spark: SparkSession) -> bool:
    """Whether the GraphFrames JVM classes are on this session's classpath."""
    return _has_class(spark.sparkContext, "org.graphframes.GraphFrame")


def has_delta(spark: SparkSession) -> bool:
    """Whether Delta Lake's JVM classes are on this session's classpath."""
    return _has_class(spark.sparkContext, "io.delta.tables.DeltaTable")


def require_graphframes(spark: SparkSession) -> None:
    if not has_graphframes(spark):
        raise RuntimeError(
            f"GraphFrames is not on the classpath: run `make setup` to resolve "
            f"{coordinates()['graphframes']} from Maven Central (or copy the jar into .jars/extra/, "
            "or pass it with --packages on a cluster)"
        )


def warm_python_workers(spark: SparkSession) -> threading.Thread:
    """Start the executors' Python workers in the background: the first Python task of a
    session waits seconds for the worker daemon's imports and the JVM's first Arrow
    exchange. A pipeline calls this before its first Delta commit, which keeps the driver
    busy about as long; the stages then find the workers running. A failure here is
    only logged: the first stage would start the workers itself."""

    def warm() -> None:
        sc = spark.sparkContext
        sc.setJobDescription("warm-up: start the Python workers")
        try:
            n = sc.defaultParallelism
            spark.range(n, numPartitions=n).mapInPandas(_passthrough, "id long").collect()
        except Exception as exc:  # noqa: BLE001 - an optimisation, never a failure
            logging.getLogger("graphgen_spark").debug("python worker warm-up failed: %s", exc)

    thread = threading.Thread(target=warm, name="python-warm-up", daemon=True)
    thread.start()
    return thread


def _passthrough(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    yield from batches
