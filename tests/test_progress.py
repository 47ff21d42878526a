"""Live progress of an LLM stage in a real terminal (a pty) and in a log, and the names its
Spark jobs carry, from a driver of its own (``progress_child.py``) against the stand-in.

Each driver starts its own Spark and MERGEs its calls into a Delta ledger (about a minute
on two busy cores); the stand-in answers slowly enough (800 ms a request, four in flight
per wave) that each wave runs for a few seconds, so lines are shown while the waves run,
not only when they end.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import IO

import pytest
from eventlog import spark_events
from progress_child import REQUESTS

from graphgen_spark.standin import StandinOptions, StandinServer

ROOT = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).with_name("progress_child.py")
# done/total, elapsed<ETA, rate, tokens, cost: the fields of both forms of the line
LINE = re.compile(
    rf"rewrite: (?:\s*\d+%\|[^|]*\| )?(\d+)/{REQUESTS} (?:requests )?"
    r"\[\d\d:\d\d<(?:\d\d:\d\d|\?), +(?:[\d.]+|\?) requests/s, ([\d,]+) tokens, \$([\d.]+)\]"
)


@pytest.fixture(scope="module")
def standin():
    with StandinServer(StandinOptions(latency_ms=800), announce=False) as server:
        yield server


def _start(standin: StandinServer, tmp: Path, out: IO | int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    (tmp / "events").mkdir()
    args = [standin.base_url, str(tmp / "out"), str(tmp / "events")]
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=out,
    )


def _read_pty(fd: int, proc: subprocess.Popen, timeout_s: float = 240) -> str:
    """Everything the child wrote to the terminal until it exits (read as it comes, so a
    full pty buffer never blocks it)."""
    chunks, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if select.select([fd], [], [], 0.5)[0]:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _fields(lines: list[str]) -> list[tuple[int, int, float]]:
    return [
        (int(m[1]), int(m[2].replace(",", "")), float(m[3])) for m in map(LINE.search, lines) if m
    ]


def _ledger(text: str) -> tuple[int, float]:
    m = re.search(r"ledger: (\d+) tokens, \$([\d.]+)", text)
    assert m, text[-3000:]
    return int(m[1]), float(m[2])


def _moves_and_ends_at_the_ledger(shown: list[tuple[int, int, float]], text: str) -> None:
    """Figures grow, also between the ends of waves (the totals the "wave i done" lines
    log), and the last equal the ledger's."""
    for column in zip(*shown, strict=True):
        assert list(column) == sorted(column), shown
    landed = {int(n) for n in re.findall(rf"\[rewrite\] wave \d+ done: .*?(\d+)/{REQUESTS} ", text)}
    assert landed and any(done not in landed | {0} for done, _, _ in shown), (landed, shown)
    tokens, cost = _ledger(text)
    assert shown[-1] == (REQUESTS, tokens, pytest.approx(cost, abs=1e-4))


def test_a_terminal_gets_one_line_redrawn_in_place(standin, tmp_path):
    main, child = os.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = _start(standin, tmp_path, child)
    os.close(child)
    try:
        text = _read_pty(main, proc)
    finally:
        os.close(main)
    assert proc.returncode == 0, text[-3000:]
    redraws = [part for line in text.splitlines() for part in line.split("\r")]
    shown = _fields([r for r in redraws if "%|" in r])  # the bar's form
    assert len(shown) >= 3, text[-3000:]
    assert re.search(r"\rrewrite: +\d+%\|", text), "the line is not redrawn in place"
    _moves_and_ends_at_the_ledger(shown, text)


@pytest.fixture(scope="module")
def logged(standin, tmp_path_factory):
    """The child with stderr to a file: its output and its event log's job start events."""
    tmp = tmp_path_factory.mktemp("logged")
    with (tmp / "run.log").open("w") as log:
        proc = _start(standin, tmp, log)
        proc.wait(timeout=240)
    text = (tmp / "run.log").read_text()
    assert proc.returncode == 0, text[-3000:]
    starts = [e for e in spark_events(tmp / "events") if e["Event"] == "SparkListenerJobStart"]
    return text, starts


def test_a_log_gets_plain_lines_with_the_same_fields(logged):
    text, _ = logged
    assert "\r" not in text
    lines = [line for line in text.splitlines() if " INFO graphgen_spark: rewrite: " in line]
    shown = _fields(lines)
    assert len(shown) == len(lines) >= 3, lines
    assert not any("%|" in line for line in lines)  # no bar drawn in a log
    _moves_and_ends_at_the_ledger(shown, text)


def test_spark_jobs_are_named_by_stage_and_wave(logged):
    _, starts = logged
    named = [(s["Properties"].get("spark.job.description"), s["Properties"]) for s in starts]
    groups = {desc: props.get("spark.jobGroup.id") for desc, props in named}
    waves = [d for d, _ in named if d and re.fullmatch(r"rewrite: wave \d+/(\d+|~\d+|\?)", d)]
    # two waves are in flight at once, so their jobs may start in either order
    numbered = sorted((int(re.search(r"wave (\d+)/", w)[1]), w) for w in waves)
    assert numbered and numbered[0][1] == "rewrite: wave 1/?", groups  # nothing measured yet
    last = re.fullmatch(r"rewrite: wave (\d+)/(\d+)", numbered[-1][1])
    assert last and last[1] == last[2], waves  # the last wave knows it is the last
    # the waves run in the stage's job group; the stage's other jobs carry its name
    assert {groups[w] for w in waves} == {"stage-rewrite"}
    assert groups.get("rewrite") == "stage-rewrite" and groups.get("count") == "stage-count"
