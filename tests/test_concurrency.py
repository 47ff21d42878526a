"""``side_by_side``: results in order, the caller's job group in every thread, failures
raised only after every action finished; ``in_background``: the caller goes on at once."""

from __future__ import annotations

import threading
import time

import pytest

from graphgen_spark.concurrency import in_background, side_by_side


def test_actions_run_in_threads_under_the_callers_job_group(spark):
    sc = spark.sparkContext
    sc.setJobGroup("stage-test", "test: side by side")
    try:

        def action(n: int):
            return lambda: (n, sc.getLocalProperty("spark.jobGroup.id"), spark.range(n).count())

        got = side_by_side(spark, [action(n) for n in (3, 1, 2)])
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
        sc.setLocalProperty("spark.job.description", None)
    assert got == [(3, "stage-test", 3), (1, "stage-test", 1), (2, "stage-test", 2)]


def test_a_failure_is_raised_after_the_other_actions_finished(spark):
    finished = []

    def slow():
        time.sleep(0.5)
        finished.append("slow")

    def fail():
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        side_by_side(spark, [fail, slow])
    assert finished == ["slow"]


def test_in_background_returns_at_once_and_keeps_the_job_group(spark):
    sc = spark.sparkContext
    release = threading.Event()
    sc.setJobGroup("stage-test", "test: in background")
    try:

        def action():
            release.wait(30)
            return sc.getLocalProperty("spark.jobGroup.id"), spark.range(4).count()

        running = in_background(spark, action)
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
        sc.setLocalProperty("spark.job.description", None)
    assert not running.done()  # the caller was not held up
    release.set()
    assert running.result(60) == ("stage-test", 4)
    failed = in_background(spark, lambda: 1 / 0)
    assert isinstance(failed.exception(60), ZeroDivisionError)
