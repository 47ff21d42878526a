"""``python -m bench [NAME ...]`` (``make bench``): run the benchmarks and print a summary.

Each benchmark runs in its own Python process (its own JVM and, for the extract and judge
benchmarks, its own stand-in endpoint), so one cannot disturb or inherit the Spark session of
another.
Results go to ``bench/results/<name>.json``; extra arguments after ``--`` are passed on, e.g.
``python -m bench extract_throughput -- --chunks 8000``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import subprocess
import sys
import time

from bench import ROOT, install_sigterm_exit, read_result

BENCHMARKS = (
    "extract_throughput",
    "judge_throughput",
    "merge_scale",
    "partition_scale",
    "graph_engines",
    "demo_speed",
)


def _run_one(name: str, extra: list[str]) -> int:
    cmd = [sys.executable, "-m", f"bench.{name}", *extra]
    print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT)
    try:
        return proc.wait()
    except BaseException:
        # interrupted: let the child stop its stand-in and Spark, then give up
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})",
    )
    p.add_argument("--summary", action="store_true", help="only print the recorded results")
    args = p.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; allowed: {', '.join(BENCHMARKS)}")
    names = args.names or list(BENCHMARKS)
    install_sigterm_exit()

    failed = []
    if not args.summary:
        for name in names:
            t0 = time.monotonic()
            rc = _run_one(name, extra)
            print(f"== {name}: exit {rc} after {time.monotonic() - t0:.0f} s", flush=True)
            if rc:
                failed.append(name)
    print("\nSummary (bench/results):")
    for name in names:
        res = read_result(name)
        if res is None:
            print(f"  {name}: no result recorded")
            continue
        mod = importlib.import_module(f"bench.{name}")
        stamp = res.get("machine", {}).get("date_utc", "?")
        for line in mod.summary_lines(res):
            print(f"  {line}")
        print(f"    (recorded {stamp}, {res.get('bench_total_s', '?')} s for the whole benchmark)")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
