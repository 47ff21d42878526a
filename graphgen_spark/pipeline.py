"""Runs the stages in order and records each run in the ``runs`` table (when it starts
and when it ends, with each stage's statistics and fingerprint).

``STAGES`` is the pipeline (method.md §1): the declared stage objects, imported, in
order. A failed stage marks the run failed with its error; running the same command again
resumes (every stage is a keyed MERGE and every LLM call is cached).
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path

from pyspark.sql import Row, SparkSession

from graphgen_spark.concurrency import in_background, side_by_side
from graphgen_spark.config import Config, ConfigError
from graphgen_spark.ids import h
from graphgen_spark.lease import Lease
from graphgen_spark.secrets import config_secrets, scrub
from graphgen_spark.session import build_session, warm_python_workers
from graphgen_spark.settled import Settled
from graphgen_spark.stages import (
    chunk,
    evaluate,
    export,
    extract,
    generate,
    ingest,
    judge,
    merge,
    partition,
    quiz,
)
from graphgen_spark.stages.base import Stage, StageContext, sweep_scratch
from graphgen_spark.tables import SCHEMAS, Tables, Upsert

STAGES: tuple[Stage, ...] = (
    ingest.STAGE,
    chunk.STAGE,
    extract.STAGE,
    merge.STAGE,
    quiz.STAGE,
    judge.STAGE,
    partition.STAGE,
    generate.STAGE,
    export.STAGE,
    evaluate.STAGE,
)
NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)

log = logging.getLogger("graphgen_spark")


def stage_named(name: str) -> Stage:
    return STAGES[NAMES.index(name)]


def select_stages(spec: str | None) -> list[str]:
    """Parse ``--stages a,b``; unknown names are a clear error listing the allowed ones."""
    if not spec:
        return list(NAMES)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise ConfigError(f"--stages: unknown stage(s) {unknown}; allowed: {', '.join(NAMES)}")
    return [s for s in NAMES if s in names]


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _write_run(tables: Tables, row: dict, first: bool = False) -> None:
    """A run's record: added when it starts, rewritten once when it ends."""
    df = tables.spark.createDataFrame([Row(**row)], SCHEMAS["runs"])
    if first:
        tables.append("runs", df)
    else:
        tables.merge("runs", df, Upsert())


def run_pipeline(
    cfg: Config,
    input_path: str | None,
    output_dir: str | Path,
    stages: list[str] | None = None,
    spark: SparkSession | None = None,
    master: str | None = None,
) -> str:
    """Run the selected stages; returns the run id."""
    stages = stages or list(NAMES)
    spark = spark or build_session(cfg, master)
    warm_python_workers(spark)
    tables = Tables(spark, output_dir, cfg.tables.catalog, cfg.tables.db_schema)
    tables.check_schema()
    started = _now()
    run_id = h(cfg.config_hash(), input_path, str(output_dir), started.isoformat())
    run = {
        "run_id": run_id,
        "started_at": started,
        "finished_at": None,
        "status": "running",
        "config_hash": cfg.config_hash(),
        "input": str(input_path) if input_path else None,
        "output": str(output_dir),
        "stages": stages,
        "error": None,
        "stage_stats": [],
        "settled": {},
    }
    with Lease(spark, tables.output_dir, run_id, cfg.run.lease_ttl_s):
        for path in sweep_scratch(spark, tables.layout):
            log.info("removed scratch a stopped run left: %s", path)
        # what earlier runs settled, read before this run's record exists (a first run
        # then reads no table at all)
        settled = Settled.load(tables, cfg)
        # the opening record is the session's first Delta commit (seconds of cold JVM
        # code): it is written while the first stage starts
        opening = functools.partial(_write_run, tables, copy.deepcopy(run), first=True)
        opened = in_background(spark, opening)
        ctx = StageContext(spark, cfg, tables, run_id, run["input"], log)
        _run_stages(cfg, ctx, run, settled, opened)
    return run_id


def _run_stages(
    cfg: Config, ctx: StageContext, run: dict, settled: Settled, opened: Future
) -> None:
    tables, run_id, stages = ctx.tables, ctx.run_id, run["stages"]
    log.info("run %s: stages %s -> %s", run_id[:12], ",".join(stages), tables.location("*"))
    run["settled"] = settled.recorded
    try:
        for name in stages:
            stats = _run_stage(stage_named(name), ctx, settled)
            run["stage_stats"].append(stats)
        run["status"] = "ok"
    except BaseException as exc:
        run["status"] = "failed"
        run["error"] = (scrub(f"{type(exc).__name__}: {exc}", config_secrets(cfg)) or "")[:4000]
        raise
    finally:
        run["finished_at"] = _now()
        _close(cfg, tables, run, opened)


def _close(cfg: Config, tables: Tables, run: dict, opened: Future) -> None:
    """The closing record and the report, side by side (the report is drawn from ``run``,
    not from ``runs``); only once the opening record is written, so the two never race."""
    failed = opened.exception()
    if failed is not None:
        log.warning("run record: the opening write failed (%s); the closing one adds it", failed)
    side_by_side(tables.spark, [lambda: _write_run(tables, run), lambda: _report(cfg, tables, run)])


def _run_stage(stage: Stage, ctx: StageContext, settled: Settled) -> dict:
    """Run one stage (or log why its config skips it, or that nothing it reads or writes
    changed since it settled); its ``stage_stats`` entry."""
    name = stage.name
    t0 = time.monotonic()
    skipped = stage.skip(ctx.cfg)
    if skipped:
        log.info("stage %s: skipped: %s", name, skipped)
        return _not_run(name, "skipped", t0)
    if settled.unchanged(stage, ctx):
        log.info("stage %s: unchanged: nothing it reads or writes changed since it settled", name)
        return _not_run(name, "unchanged", t0)
    log.info("stage %s: started", name)
    ctx.tables.touched.clear()
    result = stage.run(ctx)
    settled.record(stage, ctx, result)
    seconds = time.monotonic() - t0
    log.info(
        "stage %s: done in %.1f s %s",
        name,
        seconds,
        " ".join(f"{k}={v}" for k, v in sorted(result.counts.items()) if v) or "(nothing to do)",
    )
    return {
        "stage": name,
        "status": "ok",
        "seconds": seconds,
        "counts": {k: int(v) for k, v in result.counts.items()},
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "cost": result.cost,
    }


def _not_run(name: str, status: str, t0: float) -> dict:
    seconds = time.monotonic() - t0
    return {"stage": name, "status": status, "seconds": seconds, "counts": {}, "cost": 0.0}


def _report(cfg: Config, tables: Tables, run: dict) -> None:
    """The HTML report of a run (local output folders); it never masks the run's own error."""
    if not tables.layout.is_local:
        log.info("report: %s is not a local folder; skipped", tables.output_dir)
        return
    try:
        from graphgen_spark.report.index import write_report

        log.info("report: %s", write_report(cfg, tables, run["run_id"], run))
    except Exception as exc:  # noqa: BLE001 - reporting is best effort after the run
        log.warning("report: not written (%s: %s)", type(exc).__name__, exc)


def dry_run(
    cfg: Config,
    input_path: str | None,
    output_dir: str | Path,
    stages: list[str] | None = None,
    spark: SparkSession | None = None,
    master: str | None = None,
):
    """Run the free stages of the selection, then estimate the LLM stages (nothing sent)."""
    from graphgen_spark.dryrun import estimate

    stages = stages or list(NAMES)
    spark = spark or build_session(cfg, master)
    free = [s for s in stages if stage_named(s).llm is None]
    if free:
        run_pipeline(cfg, input_path, output_dir, free, spark=spark)
    tables = Tables(spark, output_dir, cfg.tables.catalog, cfg.tables.db_schema)
    ctx = StageContext(spark, cfg, tables, "dry-run", str(input_path) if input_path else None, log)
    return estimate(ctx, [stage_named(s) for s in stages])
