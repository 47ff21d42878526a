"""``python -m bench.demo_speed``: how long a newcomer's ``make demo`` takes, against a floor.

In one run, each in a fresh process, as a user would start them:

1. **floor**: a local session with Delta started from the demo's own config
   (``conf/local.yaml``), which creates and MERGEs a dozen tiny tables, then exits;
2. **demo**: ``graphgen-spark demo`` into a new folder (the bundled corpus and stand-in);
3. **rerun**: the same command again on the same folder: nothing new to do.

Reported: the ratios demo / floor and rerun / floor (issue 15's targets: at most 2 and 1),
and each stage's seconds from the ``stage X: done in S s`` lines (``unchanged``: skipped).
``bench/results/demo_speed_before.json`` is the recording before the fixed costs were cut.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import ROOT, machine_facts, run_benchmark, work_directory

FLOOR_TABLES = 12
FLOOR_SCRIPT = """
from delta.tables import DeltaTable
from pyspark.sql import types as T
from graphgen_spark.config import load_config
from graphgen_spark.session import build_session
spark = build_session(load_config(None, env=False))
SCHEMA = T.StructType([T.StructField("id", T.StringType()), T.StructField("v", T.LongType())])
for i in range({n}):
    path = {out!r} + f"/t{{i}}"
    DeltaTable.createIfNotExists(spark).addColumns(SCHEMA).location(path).execute()
    rows = spark.createDataFrame([(f"k{{j}}", j) for j in range(10)], SCHEMA)
    (DeltaTable.forPath(spark, path).alias("t").merge(rows.alias("s"), "t.id = s.id")
        .whenNotMatchedInsertAll().execute())
spark.stop()
"""
STAGE_LINE = re.compile(r"stage (\w+): (?:done in ([\d.]+) s|(unchanged))")


def _timed(cmd: list[str], log: Path) -> tuple[float, str]:
    """Wall seconds of ``cmd`` from process start to exit, and what it printed."""
    t0 = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - t0
    text = log.read_text(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[2:4]} failed ({proc.returncode}); see {log}:\n{text[-2000:]}")
    return seconds, text


def _stages(text: str) -> dict[str, float | str]:
    """Each stage's seconds, or ``unchanged`` for a stage the run skipped (settled.py)."""
    return {m[1]: m[3] or float(m[2]) for m in STAGE_LINE.finditer(text)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    with work_directory(args.keep, "demo-speed-") as work:
        floor, _ = _timed(
            [sys.executable, "-c", FLOOR_SCRIPT.format(n=FLOOR_TABLES, out=str(work / "floor"))],
            work / "floor.log",
        )
        demo_cmd = [
            sys.executable,
            "-m",
            "graphgen_spark.cli",
            "demo",
            "--output",
            str(work / "out"),
        ]
        demo, demo_log = _timed(demo_cmd, work / "demo.log")
        rerun, rerun_log = _timed(demo_cmd, work / "rerun.log")
    return {
        "benchmark": "demo_speed",
        "machine": machine_facts(),
        "floor": f"fresh process: session with Delta + {FLOOR_TABLES} tiny tables created and MERGEd",
        "seconds": {"floor": round(floor, 1), "demo": round(demo, 1), "rerun": round(rerun, 1)},
        "ratio_demo_to_floor": round(demo / floor, 2),
        "ratio_rerun_to_floor": round(rerun / floor, 2),
        "targets": {"demo_to_floor": 2.0, "rerun_to_floor": 1.0},
        "stage_seconds": {"demo": _stages(demo_log), "rerun": _stages(rerun_log)},
    }


def summary_lines(res: dict[str, Any]) -> list[str]:
    s = res["seconds"]
    lines = [
        f"floor {s['floor']} s, demo {s['demo']} s ({res['ratio_demo_to_floor']}x, target 2x), "
        f"rerun {s['rerun']} s ({res['ratio_rerun_to_floor']}x, target 1x)"
    ]
    for run_name, stages in res["stage_seconds"].items():
        shown = (f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in stages.items())
        lines.append(f"  {run_name}: " + ", ".join(shown))
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--no-write", action="store_true", help="do not write bench/results")
    p.add_argument("--json", default=None, help="also write the result to this path")
    run_benchmark("demo_speed", p.parse_args(argv), run, summary_lines)


if __name__ == "__main__":
    main()
