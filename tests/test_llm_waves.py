"""Wave sizing (llm/waves.py) and the task loop's streaming of finished rows."""

from __future__ import annotations

import asyncio
import logging
import re

import pandas as pd

from graphgen_spark.llm.client import RetryPolicy
from graphgen_spark.llm.runner import TaskSpec, _stream_programs
from graphgen_spark.llm.waves import WavePlan
from graphgen_spark.standin import StandinOptions, StandinServer
from tests.test_llm_executor import calls, executor, make_cfg, requests_df


def plan(rows=10_000, in_flight=64, slots=2, calls_per_row=1, wave_seconds=60.0, wave_size=50_000):
    return WavePlan.for_rows(
        rows,
        in_flight=in_flight,
        slots=slots,
        calls_per_row=calls_per_row,
        wave_seconds=wave_seconds,
        wave_size=wave_size,
    )


def test_slices_hold_four_rows_per_place_in_flight_within_the_limits():
    p = plan(in_flight=32)
    assert (p.slice_rows, p.slices) == (128, 79)
    # a huge set: at most 256 slices on 2 slots, so slices grow
    assert plan(rows=1_000_000).slices == 256
    # many slots: slices x slots files stay within 10,000
    assert plan(rows=1_000_000, in_flight=10, slots=200).slices == 50
    # wave_size (requests) caps a slice, in rows of calls_per_row requests
    assert plan(rows=20, in_flight=8, wave_size=5).slice_rows == 5
    assert plan(rows=100, in_flight=64, calls_per_row=7, wave_size=350).slice_rows == 50


def test_waves_grow_to_the_measured_duration_and_cover_every_slice_once():
    p = plan(rows=10_000, in_flight=32, wave_seconds=10.0)  # 79 slices of 128
    first = p.next_wave(now=0.0)
    second = p.next_wave(now=0.1)  # submitted before anything finished: one slice again
    assert (first, second) == (range(0, 1), range(1, 2))
    p.finished(128, now=2.0)  # 64 rows/s since the first submission -> 640 rows in 10 s
    assert p.next_wave(now=2.0) == range(2, 7)  # 5 slices of 128
    p.finished(128, now=2.5)  # 256 rows in 2.5 s
    assert p.next_wave(now=2.5) == range(7, 15)  # 1024 rows = 8 slices
    p.finished(640 + 1024, now=10.0)  # 1920 rows in 10 s
    # the budget leaves 300 rows: two slices, not 15
    assert p.next_wave(now=10.0, budget_rows=300) == range(15, 17)
    assert p.next_wave(now=10.0, budget_rows=-5) == range(17, 18)  # at least one slice
    seen = [first, second]
    while p.left:
        seen.append(p.next_wave(now=11.0))
    # 61 slices left and 15 wanted per wave: 15, 15, 15, then half of what is left each time
    assert [len(r) for r in seen[2:]] == [15, 15, 15, 8, 4, 2, 1, 1]
    assert seen[-1].stop == p.slices == 79
    assert p.next_slice == 79 and not p.left


def test_wave_size_caps_a_wave():
    p = plan(rows=10_000, in_flight=32, wave_seconds=600.0, wave_size=1000)
    p.next_wave(now=0.0)
    p.finished(128, now=1.0)
    assert len(p.next_wave(now=1.0)) == 1000 // 128  # 7 slices, not 600 s worth


def test_a_wave_is_named_with_the_count_it_is_known_to_or_expected_to_reach():
    p = plan(rows=10_000, in_flight=32, wave_seconds=10.0)  # 79 slices of 128
    p.next_wave(now=0.0)
    assert p.waves(1) == "?"  # nothing measured yet
    p.finished(128, now=2.0)  # 5 slices per wave from here, then the taper
    p.next_wave(now=2.0)
    assert p.waves(2) == "~19"  # 73 left: 14 waves of 5, then 2 and 1
    while p.left:
        p.next_wave(now=2.0)
    assert p.waves(19) == "19"


def _spec() -> TaskSpec:
    return TaskSpec({}, {}, RetryPolicy(), "run-1")


def test_a_task_hands_back_finished_rows_in_batches():
    async def program(row, ask):
        await asyncio.sleep(0.001 * (row["i"] % 7))
        return {"i": row["i"]}

    pdf = pd.DataFrame({"i": range(50)})
    stats: dict[str, float] = {}
    batches = list(_stream_programs(pdf, _spec(), program, "i", stats, flush_rows=8))
    assert all(1 <= len(b) <= 8 for b in batches) and len(batches) >= 7
    got = sorted(r["i"] for b in batches for r in b)
    assert got == list(range(50))  # every row once
    assert stats["rows"] == 50


def test_a_program_that_raises_is_counted_and_the_other_rows_finish(capfd):
    """One row's poison or bug must not fail the task: its calls are journaled, the row is
    left out of the outputs (so it stays to do) and counted."""

    async def program(row, ask):
        if row["i"] == 3:
            raise ValueError("a bug in the program")
        await asyncio.sleep(0.01)
        return {"i": row["i"]}

    pdf = pd.DataFrame({"i": range(10)})
    stats: dict[str, float] = {}
    batches = list(_stream_programs(pdf, _spec(), program, "i", stats, flush_rows=4))
    assert sorted(r["i"] for b in batches for r in b) == [i for i in range(10) if i != 3]
    assert (stats["rows"], stats["program_errors"]) == (9, 1)
    assert "i=3 raised ValueError: a bug in the program" in capfd.readouterr().err


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_executor_runs_growing_waves_and_sends_every_request_once(spark, tables):
    """Slices of 4 x 2 slots x 2 in flight = 16 requests; the first wave is one slice, later
    ones grow to what the measured rate sends in wave_seconds."""
    lines = _Lines()
    log = logging.getLogger("graphgen_spark")
    level = log.level
    log.addHandler(lines)
    log.setLevel(logging.INFO)
    try:
        with StandinServer(StandinOptions(latency_ms=30), announce=False) as server:
            cfg = make_cfg(
                server.base_url, concurrency_per_task=2, wave_seconds=5.0, wave_size=10_000
            )
            summary = executor(spark, tables, cfg).execute(requests_df(spark, cfg, 400), "test")
            assert (summary.sent, summary.ok, summary.rows) == (400, 400, 400)
            assert server.stats()["requests_total"] == 400
    finally:
        log.removeHandler(lines)
        log.setLevel(level)
    assert len(calls(tables)) == 400
    assert any("in 25 slice(s) of ~16" in line for line in lines.lines), lines.lines
    sent = [
        int(m.group(1))
        for line in lines.lines
        if (m := re.search(r"\[test\] wave \d+ done: (\d+) calls sent so far", line))
    ]
    sizes = [b - a for a, b in zip([0, *sent], sent, strict=False)]
    assert sent[-1] == 400 and len(sizes) >= 3
    assert sizes[0] <= 32 and max(sizes) > 2 * sizes[0]  # one slice first, then longer waves
