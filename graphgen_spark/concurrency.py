"""Independent Spark actions run side by side from driver threads.

On a small run most of an action's time is the driver's (planning, Delta's snapshot and
commit, scheduling), not the executors': actions on different tables overlap well. The
threads inherit the caller's job group and description, so the Spark UI and the progress
listener still name the stage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from pyspark.sql import SparkSession
from pyspark.util import inheritable_thread_target

T_ = TypeVar("T_")
MAX_THREADS = 4


def side_by_side(spark: SparkSession, actions: Sequence[Callable[[], T_]]) -> list[T_]:
    """Each action's result, in order; the first failure (in order) is raised once all
    have finished, so none is left running behind the caller's back."""
    if len(actions) < 2:
        return [a() for a in actions]
    wrap = inheritable_thread_target(spark)
    with ThreadPoolExecutor(min(MAX_THREADS, len(actions)), "spark-side") as pool:
        futures = [pool.submit(wrap(a)) for a in actions]
    return [f.result() for f in futures]


def in_background(spark: SparkSession, action: Callable[[], T_]) -> Future[T_]:
    """``action`` started now on a driver thread (same job group); the caller takes
    ``result()`` where it needs it finished."""
    pool = ThreadPoolExecutor(1, "spark-background")
    try:
        return pool.submit(inheritable_thread_target(spark)(action))
    finally:
        pool.shutdown(wait=False)
