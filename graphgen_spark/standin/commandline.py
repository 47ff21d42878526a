"""``python -m graphgen_spark.standin``: run the stand-in endpoint as a process.

A separate process lets benchmarks and the demo drive the endpoint from many
client processes; ``--port 0 --port-file F`` lets a parent find the port.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from .options import ALLOWED_FAULTS, DEFAULT_FAULTS, OptionError, StandinOptions
from .server import BANNER, StandinServer

# StandinOptions field -> CLI flag, where they differ beyond "_" vs "-".
_FLAGS = {"retry_after_s": "retry-after"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m graphgen_spark.standin",
        description=f"{BANNER}. Speaks the OpenAI chat-completions protocol for tests and demos.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port (default)")
    p.add_argument("--latency-ms", type=float, default=0.0, help="added latency per request")
    p.add_argument(
        "--max-concurrency", type=int, default=0, help="slots; extra requests queue (0 = unlimited)"
    )
    p.add_argument("--fault-rate", type=float, default=0.0, help="fraction of attempts that fault")
    p.add_argument(
        "--faults",
        default=",".join(DEFAULT_FAULTS),
        help=f"comma-separated fault kinds to draw from; allowed: {','.join(ALLOWED_FAULTS)}",
    )
    p.add_argument(
        "--fail-first", type=int, default=0, help="each distinct body faults N times first"
    )
    p.add_argument("--retry-after", type=float, default=1.0, help="Retry-After seconds on 429")
    p.add_argument("--hang-s", type=float, default=300.0, help="how long a 'hang' fault stalls")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--script", default=None, help='JSON rules file {"rules": [...]}')
    p.add_argument("--no-logprobs", action="store_true", help="ignore logprobs requests")
    p.add_argument("--port-file", default=None, help="write the bound port here once listening")
    return p


def _write_port_file(path: str, port: int) -> None:
    # Write-then-rename so a polling parent never reads a half-written file.
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(f"{port}\n", encoding="utf-8")
    os.replace(tmp, target)


def main(argv: list[str] | None = None) -> int:
    """Run until SIGINT/SIGTERM; return the process exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help or a malformed number: argparse already printed why
        return int(exc.code or 0)
    options = StandinOptions(
        host=args.host,
        port=args.port,
        latency_ms=args.latency_ms,
        max_concurrency=args.max_concurrency,
        fault_rate=args.fault_rate,
        faults=tuple(f.strip() for f in args.faults.split(",") if f.strip()),
        fail_first=args.fail_first,
        retry_after_s=args.retry_after,
        hang_s=args.hang_s,
        seed=args.seed,
        script=args.script,
        no_logprobs=args.no_logprobs,
    )
    try:
        server = StandinServer(options, announce=False)
        url = server.start()
    except OptionError as exc:
        flag = _FLAGS.get(exc.field, exc.field.replace("_", "-"))
        print(f"{parser.prog}: error: argument --{flag}: {exc.detail}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. port already in use
        print(
            f"{parser.prog}: error: cannot listen on {args.host}:{args.port}: {exc}",
            file=sys.stderr,
        )
        return 2

    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(BANNER, flush=True)
        print(f"serving {url}", flush=True)
        if args.port_file:
            _write_port_file(args.port_file, server.port or 0)
        while not stopping:
            time.sleep(0.1)
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("stand-in endpoint stopped", flush=True)
    return 0
