"""``python -m bench.demo_tables``: are the demo's tables what they were? (a recorded check)

A refactor must not change what the pipeline writes. This runs ``graphgen-spark demo`` in
a fresh folder (or reads ``--output`` of one already run), reduces every table to a digest
of its sorted rows, and compares it with ``bench/results/demo_tables.json``; ``--record``
writes that file instead. Columns that differ between any two runs (run ids, times,
attempts, latency, the stand-in's port, the checkout's path, which graph formulation
answered) are left out or normalised,
and doubles are compared to 12 significant digits;
``runs`` is all such columns and is skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import ROOT

RESULT = ROOT / "bench" / "results" / "demo_tables.json"
VOLATILE = {
    "run_id",
    "updated_at",
    "created_at",
    "computed_at",
    "ingested_at",
    "attempts",
    "latency_ms",
    "base_url",
}
# which formulation answered a graph query (GraphFrames, DataFrame joins, the driver's
# union-find) is provenance, not a result: tests/test_graph_pipeline.py compares the rows
# each formulation gives
PROVENANCE = {"graph_stats": {"engine"}, "subgraphs": {"graph_engine"}}
SKIPPED = {"runs"}
_PATHS = re.compile(r"(/[^\s\"']*)?/examples/corpus/")


def digests(output: Path) -> dict[str, dict[str, object]]:
    """Per table: rows and a sha256 of its sorted rows without the volatile columns."""
    from graphgen_spark.config import build_config
    from graphgen_spark.session import build_session
    from graphgen_spark.tables import Tables

    cfg = build_config({"spark": {"master": "local[2]", "shuffle_partitions": 4}}, env=False)
    spark = build_session(cfg, extra_conf={"spark.ui.enabled": "false"})
    tables = Tables(spark, output)
    out: dict[str, dict[str, object]] = {}
    for folder in sorted(Path(tables.layout.tables).iterdir()):
        if folder.name in SKIPPED:
            continue
        drop = VOLATILE | PROVENANCE.get(folder.name, set())
        rows = sorted(
            _row(r.asDict(recursive=True), drop) for r in tables.read(folder.name).collect()
        )
        out[folder.name] = {
            "rows": len(rows),
            "sha256": hashlib.sha256("\n".join(rows).encode()).hexdigest(),
        }
    return out


def _row(d: dict, drop: set[str]) -> str:
    kept = {k: _rounded(v) for k, v in d.items() if k not in drop}
    return _PATHS.sub("<corpus>/", json.dumps(kept, sort_keys=True, default=str))


def _rounded(value: object) -> object:
    """Doubles to 12 significant digits: a sum over rows in another order (another file
    layout) differs in its last bits, which is not a change of result."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.demo_tables", description=__doc__)
    p.add_argument("--output", type=Path, help="a demo output folder (default: run the demo)")
    p.add_argument("--record", action="store_true", help=f"write {RESULT.name}")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        output = args.output or Path(tmp) / "demo"
        if args.output is None:
            cmd = [sys.executable, "-m", "graphgen_spark.cli", "demo", "--output", str(output)]
            subprocess.run(cmd, cwd=ROOT, check=True)
        now = digests(output)
    if args.record:
        RESULT.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
        print(f"recorded {len(now)} tables in {RESULT}")
        return 0
    before = json.loads(RESULT.read_text())
    changed = sorted(n for n in before.keys() | now.keys() if before.get(n) != now.get(n))
    for name in changed:
        print(f"{name}: recorded {before.get(name)} now {now.get(name)}")
    print(f"{len(now) - len(changed)} of {len(now)} tables identical to the recording")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
