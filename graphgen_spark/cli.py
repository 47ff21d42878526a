"""The ``graphgen-spark`` command: run, submit, demo, standin, setup, status, submit-args.

Every command ends with a line that says what to do next; the exit codes are
:class:`graphgen_spark.errors.ExitCode` (README: Exit codes).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from graphgen_spark.config import MODES, ROOT, Config, ConfigError, load_config
from graphgen_spark.errors import ANTICIPATED, NEXT_STEP, ExitCode, exit_code_for
from graphgen_spark.secrets import ScrubFilter, config_secrets, remember, scrub

if TYPE_CHECKING:
    from graphgen_spark.tables import OutputLayout

log = logging.getLogger("graphgen_spark")


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("py4j", "httpx", "httpx2", "openai"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:  # no key in any log line
        handler.addFilter(ScrubFilter())


def _load(path: str) -> Config:
    """The config, its keys registered so nothing printed by this process shows them."""
    cfg = load_config(path)
    remember(*config_secrets(cfg))
    return cfg


def cmd_run(args: argparse.Namespace) -> int:
    from graphgen_spark.pipeline import run_pipeline, select_stages
    from graphgen_spark.tables import OutputLayout

    cfg = _load(args.config)
    if args.retry_given_up:
        cfg = cfg.model_copy(update={"llm": cfg.llm.model_copy(update={"retry_given_up": True})})
    stages = select_stages(args.stages)
    _check_input(cfg, args.input, stages)
    if args.dry_run:
        from graphgen_spark.dryrun import render
        from graphgen_spark.pipeline import dry_run

        print(render(cfg, dry_run(cfg, args.input, args.output, stages, master=args.master)))
        return 0
    run_id = run_pipeline(cfg, args.input, args.output, stages, master=args.master)
    left, quarantined = _outcome(cfg, args.output, run_id, args.master)
    layout = OutputLayout(args.output)
    where = f"tables under {layout.tables}"
    if quarantined:
        where += (
            f"; {quarantined} input row(s) quarantined by this run: "
            f"`graphgen-spark status --output {args.output}` says why"
        )
    if left:
        per_stage = ", ".join(f"{stage} {n}" for stage, n in sorted(left.items()))
        print(
            f"run {run_id} finished with {sum(left.values())} request(s) not done "
            f"({per_stage}): rerun the same command to retry them; {where}"
        )
        return ExitCode.REQUESTS_LEFT
    print(
        f"run {run_id} finished: every request done; {where}; training files in "
        f"{layout.export}, report {layout.report}/index.html"
    )
    return ExitCode.OK


def _outcome(cfg: Config, output: str, run_id: str, master: str | None) -> tuple[dict, int]:
    """Requests not done per stage, and input rows this run quarantined."""
    from pyspark.sql import functions as F

    from graphgen_spark.llm.ledger import Ledger
    from graphgen_spark.session import build_session
    from graphgen_spark.tables import Tables

    spark = build_session(cfg, master)
    tables = Tables(spark, output, cfg.tables.catalog, cfg.tables.db_schema)
    left = Ledger(spark, tables, run_id, log).left_by_stage(run_id)
    quarantined = 0
    if tables.exists("quarantine"):
        quarantined = tables.read("quarantine").filter(F.col("run_id") == run_id).count()
    return left, quarantined


@contextlib.contextmanager
def standin_process(extra: list[str] | None = None) -> Iterator[str]:
    """Start the stand-in endpoint as a child process; yields its base URL."""
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        cmd = [
            sys.executable,
            "-m",
            "graphgen_spark.standin",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            *(extra or []),
        ]
        proc = subprocess.Popen(cmd)
        try:
            deadline = time.monotonic() + 30
            while not port_file.exists() or not port_file.read_text().strip():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the stand-in endpoint did not start")
                time.sleep(0.1)
            yield f"http://127.0.0.1:{int(port_file.read_text())}/v1"
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job on the embedded default, with the stand-in unless an endpoint is set."""
    from graphgen_spark.pipeline import run_pipeline

    with contextlib.ExitStack() as stack:
        if not os.environ.get("SYNTHESIZER_BASE_URL"):
            url = stack.enter_context(standin_process())
            log.info("demo: using the bundled STAND-IN endpoint at %s (not a language model)", url)
            for role in ("SYNTHESIZER", "TRAINEE"):
                os.environ.setdefault(f"{role}_BASE_URL", url)
        cfg = _load(args.config)
        # the demo shows every mode and format; a user's run takes them from the config
        every = cfg.generate.model_copy(update={"modes": list(MODES)})
        formats = cfg.export.model_copy(update={"formats": ["alpaca", "sharegpt", "chatml"]})
        cfg = cfg.model_copy(update={"generate": every, "export": formats})
        run_pipeline(cfg, args.input, args.output)
    return 0 if _print_summary(args.output) else cmd_status(args)


def _print_summary(output: str) -> bool:
    """What the run produced, from its report's ``run.json`` (no table is read again): QA
    per mode, quarantine, LLM calls, the graph, the QA metrics, then the files written.
    False when there is no report (an output folder that is not local)."""
    from graphgen_spark.stages.evaluate import format_metrics
    from graphgen_spark.tables import OutputLayout, local_path

    layout = OutputLayout(output)
    report = local_path(layout.report)
    try:
        f = json.loads((report / "run.json").read_text("utf-8"))  # type: ignore[operator]
    except (TypeError, OSError, ValueError):
        return False
    print(f"\nRun {f['run']['run_id'][:12]}: {f['run']['status']}, {f['qa_ok']} QA kept")
    for r in f["qa"]:
        print(f"  qa[{r['mode']}/{r['status']}/{r['language']}]: {r['count']}")
    for r in f["quarantine"]:
        print(f"  quarantine[{r['stage']}/{r['reason']}]: {r['rows']}")
    for r in f["llm_calls"]:
        print(f"  llm_calls[{r['stage']}/{r['status']}]: {r['calls']}")
    if g := f["graph"]:
        print(
            f"  graph: {g['vertices']} vertices ({g['placeholders']} placeholders, "
            f"{g['isolated']} isolated), {g['edges']} edges, {g['components']} components "
            f"(largest {g['largest_component']}), max degree {g['max_degree']}"
        )
    if f["qa_metrics"]:
        print(format_metrics(f["qa_metrics"]))
    _print_files(layout)
    return True


def _print_files(layout: OutputLayout) -> None:
    from graphgen_spark.tables import local_path

    for folder in (layout.export, layout.report):
        local = local_path(folder)
        files = sorted(local.glob("*")) if local is not None and local.is_dir() else []
        if files:
            print(f"\n{local.name}/ ({local})")
            for f in files:
                print(f"  {f.name:<40} {f.stat().st_size:>10} bytes")


def cmd_status(args: argparse.Namespace) -> int:
    """Row counts of every table under an output folder, and the latest runs."""
    from pyspark.sql import functions as F

    from graphgen_spark.session import build_session
    from graphgen_spark.tables import SCHEMAS, Tables

    cfg = load_config(args.config)
    spark = build_session(cfg)
    tables = Tables(spark, args.output, cfg.tables.catalog, cfg.tables.db_schema)
    print(f"\nTables under {tables.location('')}")
    for name in SCHEMAS:
        if tables.exists(name):
            print(f"  {name:<18} {tables.read(name).count():>8} rows")
    if tables.exists("quarantine"):
        reasons = tables.read("quarantine").groupBy("stage", "reason").count().collect()
        for r in sorted(reasons, key=lambda r: (r["stage"], r["reason"])):
            print(f"  quarantine[{r['stage']}/{r['reason']}]: {r['count']}")
    if tables.exists("graph_stats"):
        g = tables.read("graph_stats").orderBy(F.desc("computed_at")).first()
        print(
            f"  graph ({g['engine']}): {g['vertices']} vertices ({g['placeholders']} placeholders, "
            f"{g['isolated']} isolated), {g['edges']} edges, {g['components']} components "
            f"(largest {g['largest_component']}), max degree {g['max_degree']}, "
            f"mean degree {g['mean_degree']:.2f}"
        )
    if tables.exists("llm_calls"):
        calls = tables.read("llm_calls").groupBy("stage", "status").count().collect()
        for r in sorted(calls, key=lambda r: (r["stage"], r["status"])):
            print(f"  llm_calls[{r['stage']}/{r['status']}]: {r['count']}")
    if tables.exists("qa"):
        qa = tables.read("qa").groupBy("mode", "status").count().collect()
        for r in sorted(qa, key=lambda r: (r["mode"], r["status"])):
            print(f"  qa[{r['mode']}/{r['status']}]: {r['count']}")
    if tables.exists("qa_metrics"):
        from graphgen_spark.stages.evaluate import format_metrics

        print(format_metrics(tables.read("qa_metrics").collect()))
    _print_files(tables.layout)
    return 0


def cmd_gap_compare(args: argparse.Namespace) -> int:
    """Loss, accuracy and ECE per element kind for two trainee models (before / after)."""
    from graphgen_spark.report.compare import compare_trainees, format_comparison
    from graphgen_spark.session import build_session
    from graphgen_spark.tables import Tables

    cfg = load_config(args.config)
    tables = Tables(build_session(cfg), args.output, cfg.tables.catalog, cfg.tables.db_schema)
    rows = compare_trainees(tables, args.before, args.after)
    if not rows:
        print(
            f"no elements are scored for both {args.before!r} and {args.after!r}", file=sys.stderr
        )
        return 1
    print(format_comparison(rows, args.before, args.after))
    return 0


def cmd_setup(_: argparse.Namespace) -> int:
    from graphgen_spark import assets, jars

    path = assets.install_cl100k()
    print(f"tokenizer: cl100k_base ranks verified at {path}")
    return jars.main()


def cmd_submit_args(_: argparse.Namespace) -> int:
    from graphgen_spark.jars import coordinates

    print(",".join(coordinates().values()))
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    """Build the cluster's ``spark-submit`` command; print it, or run it and pass on its
    exit code (the job's own, see ExitCode)."""
    import shlex

    from graphgen_spark import submit
    from graphgen_spark.pipeline import select_stages

    cfg = _load(args.config)
    _check_input(cfg, args.input, select_stages(args.stages))
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(submit.SubmitOptions)}
    opts = submit.SubmitOptions(**{**given, "conf": tuple(args.conf or ())})
    cmd = submit.command(opts, submit.python_env(opts))
    if args.print:
        print(shlex.join(cmd))
        return ExitCode.OK
    log.info("submit: %s", shlex.join(cmd))
    return subprocess.run(cmd).returncode


def _check_input(cfg: Config, path: str | None, stages: list[str]) -> None:
    """A missing or unreadable ``--input`` stops here, before Spark starts."""
    if "ingest" in stages:
        from graphgen_spark.readers import check_input

        check_input(path, cfg.input.format)


def cmd_classpath(args: argparse.Namespace) -> int:
    """Start a session as the config would and say which JVM artifacts it really has."""
    from graphgen_spark.jars import coordinates
    from graphgen_spark.session import build_session, has_delta, has_graphframes

    cfg = load_config(args.config)
    spark = build_session(cfg, "local[1]", {"spark.ui.enabled": "false"}, require=False)
    try:
        found = {"delta": has_delta(spark), "graphframes": has_graphframes(spark)}
    finally:
        spark.stop()
    for name, coord in coordinates().items():
        print(f"classpath: {coord}: {'present' if found[name] else 'ABSENT'}")
    if not found["graphframes"]:
        print("classpath: graph queries run as DataFrame joins (graph.engine: auto)")
    return 0 if found["delta"] else 1


def _job_args(p: argparse.ArgumentParser) -> None:
    """The arguments ``run`` and ``submit`` share: what to run, on what, into where."""
    p.add_argument("--config", default=str(ROOT / "conf" / "local.yaml"))
    p.add_argument("--input", required=False, help="file, folder or table to ingest")
    p.add_argument("--output", required=True, help="output folder (tables/, export/, report/)")
    p.add_argument("--stages", help="comma-separated subset, e.g. ingest,chunk")


def _add_run(sub) -> None:
    run = sub.add_parser("run", help="run the pipeline (all stages by default)")
    _job_args(run)
    run.add_argument(
        "--retry-given-up",
        action="store_true",
        help="send again the requests given up after llm.give_up_after attempts",
    )
    run.add_argument("--master", help="override spark.master (spark-submit sets it itself)")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="run only the free stages and print what the LLM stages would cost",
    )
    run.set_defaults(func=cmd_run)


def _add_submit(sub) -> None:
    sm = sub.add_parser(
        "submit",
        help="run the pipeline on a cluster through spark-submit, shipping jars and Python env",
    )
    sm.add_argument("--master", required=True, help="the cluster, e.g. spark://HOST:7077")
    _job_args(sm)
    sm.add_argument(
        "--print",
        action="store_true",
        help="print the spark-submit command instead of running it (the Python env is "
        "still built, so the command runs as printed)",
    )
    sm.add_argument(
        "--packages",
        action="store_true",
        help="let the cluster resolve the jars from Maven Central instead of shipping the "
        "cached ones",
    )
    sm.add_argument("--conf", action="append", metavar="NAME=VALUE", help="extra Spark setting")
    sm.add_argument("--python-env", help="a packed env (venv-pack / conda-pack) to ship instead")
    sm.add_argument(
        "--python-prefix",
        help="where the workers' Python is installed, when not at this machine's path",
    )
    sm.set_defaults(func=cmd_submit)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="graphgen-spark", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    _add_run(sub)
    _add_submit(sub)

    demo = sub.add_parser("demo", help="the whole pipeline on the bundled sample corpus")
    demo.add_argument("--config", default=str(ROOT / "conf" / "local.yaml"))
    demo.add_argument("--input", default=str(ROOT / "examples" / "corpus"))
    demo.add_argument("--output", default=str(ROOT / "out"))
    demo.set_defaults(func=cmd_demo)

    status = sub.add_parser("status", help="row counts of the tables under an output folder")
    status.add_argument("--config", default=str(ROOT / "conf" / "local.yaml"))
    status.add_argument("--output", required=True)
    status.set_defaults(func=cmd_status)

    cmp_ = sub.add_parser("gap-compare", help="compare two trainee models' gap scores and ECE")
    cmp_.add_argument("--config", default=str(ROOT / "conf" / "local.yaml"))
    cmp_.add_argument("--output", required=True)
    cmp_.add_argument("--before", required=True, help="trainee model (name[@revision]) before")
    cmp_.add_argument("--after", required=True, help="trainee model (name[@revision]) after")
    cmp_.set_defaults(func=cmd_gap_compare)

    setup = sub.add_parser("setup", help="install run-time assets (tokenizer ranks, jars)")
    setup.set_defaults(func=cmd_setup)

    sa = sub.add_parser(
        "submit-args", help="print the Maven coordinates for spark-submit --packages"
    )
    sa.set_defaults(func=cmd_submit_args)

    cp = sub.add_parser(
        "classpath", help="start a local session and report which pinned jars it loaded"
    )
    cp.add_argument("--config", default=str(ROOT / "conf" / "local.yaml"))
    cp.set_defaults(func=cmd_classpath)

    sub.add_parser(
        "standin", help="run the offline stand-in endpoint (see standin --help)", add_help=False
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["standin"]:
        from graphgen_spark.standin import main as standin_main

        return standin_main(argv[1:])
    args = build_parser().parse_args(argv)
    _setup_logging()
    try:
        return int(args.func(args))
    except ConfigError as exc:
        return _stopped(ExitCode.CONFIG, f"configuration error: {exc}")
    except ANTICIPATED as exc:
        # anticipated: the message says what happened, the last line what to do
        return _stopped(exit_code_for(exc), f"{type(exc).__name__}: {exc}")
    except Exception:
        # the traceback Python would print, without the keys (a gateway may echo one)
        return _stopped(ExitCode.FAILED, traceback.format_exc().rstrip())


def _stopped(code: ExitCode, message: str) -> int:
    """Print why the command stopped and, last, what to do next; return the exit code."""
    print(scrub(message), file=sys.stderr)
    print(f"next: {NEXT_STEP[code]} (exit code {int(code)})", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
