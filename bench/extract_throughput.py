"""Extract-stage throughput against the stand-in endpoint at its capacity (architecture §4.2).

The stand-in runs as a separate process with 200 ms latency and 64 decoding slots, so its
capacity is 64 / 0.2 s = 320 requests/s. A seeded synthetic English corpus (capitalised
names, so the stand-in finds entities and gleaning runs) goes through ingest + chunk
(untimed); then the extract stage is timed on ``local[2]`` with
``llm.synthesizer.max_concurrency = 64`` (32 in flight per task slot).

Reported, all from the one run:

* ``ratio_stage``  achieved requests/s over the whole extract stage ÷ capacity;
* ``ratio_waves``  sum of requests ÷ sum of wave durations (the executor's own
  "[extract] wave i/n" log lines, which include each wave's bookkeeping) ÷ capacity;
* ``ratio_send``   requests ÷ time the endpoint had anything in flight ÷ capacity;
* ``busy_fraction`` mean in-flight ÷ 64 over the stage, sampled from ``/stats`` at 20 Hz;
* LLM calls per chunk (stand-in requests ÷ chunks) and its distribution (1 … 1 + 2R);
* where the rest of the stage time went (per wave, per Spark call site) and CPU by process.

``python -m bench.extract_throughput [--chunks N] [--keep]``; writes
``bench/results/extract_throughput.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import random
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import (
    LOCAL_SPARK_CONF,
    CpuMeter,
    StandinProcess,
    callsite,
    install_sigterm_exit,
    local_only_env,
    machine_facts,
    setup_logging,
    spark_jobs,
    standin,
    union_seconds,
    work_directory,
    write_result,
)

NAME = "extract_throughput"
log = logging.getLogger("bench.extract_throughput")


# -- the corpus ---------------------------------------------------------------------------------
def _items(text: str, sep: str | None = None) -> list[str]:
    return [x.strip() for x in text.split(sep) if x.strip()]


FIRST = _items(
    "Alice Bruno Chiara Dmitri Elena Farid Greta Hiro Ingrid Jonas Kamala Lars Mei Nikolai "
    "Olga Pedro Quentin Rosa Sven Tomas Ulrike Viktor Wen Xavier Yara Zoltan Amara Bjorn "
    "Carmen Dario Esther Felix Goran Hana Ivo Jana Kenji Leila Marco Nadia Oskar Priya Rafael "
    "Sofia Theo Uma Vera Willem Yusuf Zara"
)
LAST = _items(
    "Abbott Brennan Castillo Delacroix Eriksen Fontaine Gallagher Hartmann Ishikawa Jansen "
    "Kowalski Lindqvist Moreau Nakamura Okafor Petrov Quinlan Rossi Schneider Takahashi "
    "Ulrich Varga Whitfield Yamamoto Zielinski Andersen Bianchi Costa Dubois Esposito Fischer "
    "Garcia Horvath Ivanova Jovanovic Keller Lombardi Muller Novak Olsen Pereira Rinaldi "
    "Santos Torres Urban Vogel Weber Young Zimmermann Novotny"
)
PLACES = _items(
    "Lisbon Kyoto Tromso Valparaiso Marrakesh Tallinn Hobart Quito Bergen Lyon Krakow Osaka "
    "Nairobi Montreal Reykjavik Seville Tbilisi Dunedin Cusco Ljubljana Porto Gdansk Salzburg "
    "Antwerp Halifax Perth Trieste Uppsala Zagreb Bologna Granada Leiden Tampere Brno Ghent "
    "Aarhus Coimbra Innsbruck Riga Vilnius"
)
ORG_A = _items(
    "Northfield Harbor Silverline Blue Ridge Crescent Meridian Aurora Granite Kestrel Summit "
    "Lakeshore Redwood Polaris Ironbridge Cobalt Juniper Orion Westgate Highland Sterling"
)
ORG_B = _items(
    "Institute Dynamics Laboratories Foundation Observatory Analytics Works Society Academy "
    "Consortium Systems Collective Council Museum Archive"
)
WORKS = _items(
    "Project Atlas|the Helios Survey|the Tidewater Report|Operation Lantern|the Borealis "
    "Atlas|the Cartwright Codex|Program Zephyr|the Larkspur Study|the Halcyon Index|Mission "
    "Vesper|the Marlowe Papers|the Sable Catalogue|Project Quill|the Ember Protocol",
    "|",
)
EVENTS = _items(
    "Winter Symposium|Harbor Conference|Northern Forum|Spring Colloquium|Coastal Summit|"
    "Alpine Workshop|Autumn Congress|Lakeside Meeting",
    "|",
)
FIELDS = _items(
    "glacier monitoring|soil chemistry|coastal erosion|bird migration|seismic imaging|"
    "river ecology|solar forecasting|coral restoration|urban hydrology|ancient textiles|"
    "crop genetics|deep sea mapping|wind energy|protein folding|volcanic gases",
    "|",
)
TEMPLATES = (
    "{p} met {q} in {place} in {year} to discuss {field}.",
    "{p} joined {org} after several years of research on {field} in {place}.",
    "{p} and {q} wrote {work} together while working for {org}.",
    "{org} opened a laboratory in {place} in {year}, with {p} as its first director.",
    "{p} presented the results of {work} at the {event} in {place}.",
    "{q} criticised {work} for ignoring earlier measurements of {field}.",
    "{p} later moved to {place}, where {org} had funded new work on {field}.",
    "{org} and {org2} shared the cost of {work}, which {q} coordinated from {place}.",
    "{p} received a grant from {org} in {year} to extend {work}.",
    "{q} described {place} as the best site for {field} in a letter to {p}.",
    "{p} trained {q} in the methods of {field} at {org}.",
    "{work} relied on samples that {q} collected near {place} in {year}.",
)


def _document(rng: random.Random, target_tokens: int, count_tokens) -> str:
    people = [f"{rng.choice(FIRST)} {rng.choice(LAST)}" for _ in range(rng.randint(6, 10))]
    places = rng.sample(PLACES, rng.randint(3, 5))
    orgs = [f"{rng.choice(ORG_A)} {rng.choice(ORG_B)}" for _ in range(rng.randint(2, 4))]
    works = rng.sample(WORKS, 2)
    events = rng.sample(EVENTS, 2)
    years = [str(rng.randint(1890, 2024)) for _ in range(4)]
    sentences: list[str] = []
    tokens = 0
    while tokens < target_tokens:
        p, q = rng.sample(people, 2)
        o, o2 = rng.sample(orgs, 2)
        s = rng.choice(TEMPLATES).format(
            p=p,
            q=q,
            org=o,
            org2=o2,
            place=rng.choice(places),
            year=rng.choice(years),
            work=rng.choice(works),
            event=rng.choice(events),
            field=rng.choice(FIELDS),
        )
        s = s[0].upper() + s[1:]
        sentences.append(s)
        tokens += count_tokens(s) + 1
    # paragraphs of 4-7 sentences
    paras, i = [], 0
    while i < len(sentences):
        n = rng.randint(4, 7)
        paras.append(" ".join(sentences[i : i + n]))
        i += n
    return "\n\n".join(paras)


def expected_chunks(n_tokens: int, size: int, overlap: int) -> int:
    if n_tokens <= size:
        return 1
    return 1 + math.ceil((n_tokens - size) / (size - overlap))


def generate_corpus(
    path: Path, target_chunks: int, seed: int, size: int, overlap: int
) -> dict[str, Any]:
    """Write a JSONL corpus (field ``content``) expected to cut into >= target_chunks chunks."""
    from graphgen_spark.tokenizer import count_tokens

    rng = random.Random(seed)
    docs = chunks = tokens = 0
    t0 = time.monotonic()
    with path.open("w", encoding="utf-8") as f:
        while chunks < target_chunks:
            want = rng.randint(int(size * 0.9), int(size * 3.7))
            text = _document(rng, want, count_tokens)
            n = count_tokens(text)
            f.write(json.dumps({"id": f"doc-{docs:06d}", "content": text}) + "\n")
            docs += 1
            tokens += n
            chunks += expected_chunks(n, size, overlap)
    return {
        "documents": docs,
        "tokens": tokens,
        "expected_chunks": chunks,
        "seed": seed,
        "generate_s": round(time.monotonic() - t0, 1),
        "bytes": path.stat().st_size,
    }


# -- measuring ----------------------------------------------------------------------------------
_WAVE = re.compile(r"\[extract\] wave (\d+)/(\d+): (\d+) requests in ([\d.]+) s")
_EXECUTE = re.compile(
    r"\[extract\] (\d+) requests: (\d+) answered before, (\d+) to send in (\d+) wave"
)


class LogCapture(logging.Handler):
    """Keeps (time, message) of every graphgen_spark record."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.created, record.getMessage()))


class Sampler(threading.Thread):
    """Polls the stand-in's /stats; samples are (unix time, in_flight, queued, requests)."""

    def __init__(self, endpoint: StandinProcess, period_s: float = 0.05) -> None:
        super().__init__(name="standin-sampler", daemon=True)
        self.endpoint = endpoint
        self.period_s = period_s
        self.samples: list[tuple[float, int, int, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                s = self.endpoint.stats()
                self.samples.append((time.time(), s["in_flight"], s["queued"], s["requests_total"]))
            except Exception:
                pass
            self._halt.wait(self.period_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def _send_windows(samples: list[tuple[float, int, int, int]], gap_s: float = 0.3):
    """Intervals during which the endpoint had requests in flight (gaps < gap_s merged)."""
    out: list[list[float]] = []
    for t, inflight, _, _ in samples:
        if inflight > 0:
            if out and t - out[-1][1] <= gap_s:
                out[-1][1] = t
            else:
                out.append([t, t])
    return out


def _mean_inflight(samples, t0: float, t1: float) -> float | None:
    """Time-weighted mean of in_flight over [t0, t1] (sample-and-hold)."""
    pts = [(t, f) for t, f, _, _ in samples]
    if not pts:
        return None
    area, prev_t, prev_f = 0.0, t0, 0
    for t, f in pts:
        if t <= t0:
            prev_f = f
            continue
        if t >= t1:
            break
        area += prev_f * (t - prev_t)
        prev_t, prev_f = t, f
    area += prev_f * (t1 - prev_t)
    return area / (t1 - t0) if t1 > t0 else None


# -- client ceiling: the executor's task loop without Spark ------------------------------------
def _probe_worker(rows: list[dict[str, Any]], spec: Any, start_at: float) -> dict[str, Any]:
    """One task slot's loop (``executor._run_programs``) over ``rows``, in its own process."""
    import asyncio
    import resource

    import pandas as pd

    from graphgen_spark.llm.executor import _run_programs, _send_request

    pdf = pd.DataFrame(rows)
    while time.time() < start_at:
        time.sleep(0.005)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.time()
    outs = asyncio.run(_run_programs(pdf, spec, _send_request, "request_id", {}))
    out = pd.DataFrame([c for o in outs for c in o["calls"]])
    t1 = time.time()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {
        "requests": len(out),
        "ok": int((out["status"] == "ok").sum()),
        "start": t0,
        "end": t1,
        "cpu_s": cpu,
    }


def client_probe(
    tables, cfg, endpoint: StandinProcess, n: int, capacity: float, latency_s: float
) -> dict[str, Any]:
    """Replay ``n`` of the stage's requests through the executor's per-task loop in 1 and in 2
    processes (32 in flight each, as in the stage), without Spark: the ceiling of the client
    side and its CPU cost per request."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from pyspark.sql import functions as F

    from graphgen_spark.llm.client import RetryPolicy
    from graphgen_spark.llm.endpoints import resolve_endpoint
    from graphgen_spark.llm.executor import _TaskSpec
    from graphgen_spark.llm.limits import TaskLimits
    from graphgen_spark.llm.requests import REQUEST_SCHEMA

    slots = 2
    ep = cfg.llm.synthesizer
    limits = TaskLimits.share(slots, cfg.llm.concurrency_per_task, ep.max_concurrency, None, None)
    spec = _TaskSpec(
        {"synthesizer": resolve_endpoint(cfg, "synthesizer")},
        {"synthesizer": limits},
        RetryPolicy(),
        "bench-client-probe",
    )
    sample = (
        tables.read("llm_calls")
        .select(*REQUEST_SCHEMA.fieldNames())
        .orderBy(F.xxhash64("request_id"))
        .limit(n)
        .toPandas()
    )
    rows = sample.to_dict("records")
    out: dict[str, Any] = {
        "sample_requests": len(rows),
        "concurrency_per_process": limits.concurrency,
    }
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=slots, mp_context=ctx) as pool:
        # warm the worker processes (imports) before timing
        list(pool.map(_noop, range(slots)))
        # (processes, in flight per process): one stage slot, both slots, one slot doing all
        for procs, conc in (
            (1, limits.concurrency),
            (2, limits.concurrency),
            (1, 2 * limits.concurrency),
        ):
            parts = [rows[i::procs] for i in range(procs)]
            if procs == 1:
                parts = [rows[: len(rows) * conc // (2 * limits.concurrency)]]
            pspec = dataclasses.replace(
                spec, limits={"synthesizer": dataclasses.replace(limits, concurrency=conc)}
            )
            endpoint.reset_stats()
            start_at = time.time() + 1.0
            res = list(pool.map(_probe_worker, parts, [pspec] * procs, [start_at] * procs))
            st = endpoint.stats()
            reqs = sum(r["requests"] for r in res)
            span = max(r["end"] for r in res) - min(r["start"] for r in res)
            cpu = sum(r["cpu_s"] for r in res)
            ideal = min(capacity, procs * conc / latency_s)
            out[f"{procs}x{conc}"] = {
                "processes": procs,
                "in_flight_per_process": conc,
                "requests": reqs,
                "ok": sum(r["ok"] for r in res),
                "seconds": round(span, 2),
                "req_s": round(reqs / span, 1),
                "ratio_to_capacity": round(reqs / span / capacity, 3),
                "ideal_req_s": round(ideal, 1),
                "ratio_to_ideal": round(reqs / span / ideal, 3),
                "client_cpu_ms_per_request": round(1000 * cpu / reqs, 2),
                "client_cores_busy": round(cpu / span, 2),
                "standin_requests": st["requests_total"],
                "standin_max_in_flight": st["max_in_flight"],
            }
    return out


def _noop(_: int) -> int:
    import graphgen_spark.llm.executor  # noqa: F401

    return 0


# -- the benchmark ------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.extract_throughput", description=__doc__)
    p.add_argument("--chunks", type=int, default=6000, help="target number of chunks")
    p.add_argument("--chunk-size", type=int, default=1024)
    p.add_argument("--chunk-overlap", type=int, default=100)
    p.add_argument("--latency-ms", type=float, default=200.0)
    p.add_argument("--max-concurrency", type=int, default=64, help="the stand-in's slots")
    p.add_argument(
        "--client-concurrency",
        type=int,
        default=None,
        help="llm.synthesizer.max_concurrency (default: the stand-in's slots; more keeps a "
        "queue at the endpoint, as one does with a self-hosted server)",
    )
    p.add_argument("--master", default="local[2]")
    p.add_argument("--shuffle-partitions", type=int, default=4)
    p.add_argument("--wave-size", type=int, default=None, help="llm.wave_size (default: config)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--driver-memory", default="4g")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--no-write", action="store_true", help="do not write bench/results")
    p.add_argument("--json", default=None, help="also write the result to this path")
    p.add_argument("--min-llm-seconds", type=float, default=60.0)
    p.add_argument(
        "--client-probe",
        type=int,
        default=4800,
        help="requests replayed through the executor's task loop without Spark (0: skip)",
    )
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from pyspark.sql import functions as F

    from graphgen_spark.config import build_config
    from graphgen_spark.pipeline import run_pipeline
    from graphgen_spark.session import build_session
    from graphgen_spark.tables import Tables

    capacity = args.max_concurrency / (args.latency_ms / 1000.0)
    t_all = time.monotonic()
    with work_directory(args.keep, "graphgen_bench_extract_") as work:
        corpus_path = work / "corpus.jsonl"
        log.info("generating corpus (target %d chunks) in %s", args.chunks, corpus_path)
        corpus = generate_corpus(
            corpus_path, args.chunks, args.seed, args.chunk_size, args.chunk_overlap
        )
        log.info("corpus: %s", corpus)
        with standin(args.latency_ms, args.max_concurrency, work) as endpoint:
            llm: dict[str, Any] = {
                "synthesizer": {
                    "base_url": endpoint.base_url,
                    "model": "standin",
                    "max_concurrency": args.client_concurrency or args.max_concurrency,
                    "timeout_s": 120,
                },
            }
            if args.wave_size:
                llm["wave_size"] = args.wave_size
            conf = {**LOCAL_SPARK_CONF, "spark.driver.memory": args.driver_memory}
            cfg_data = {
                "spark": {
                    "master": args.master,
                    "shuffle_partitions": args.shuffle_partitions,
                    "conf": conf,
                },
                "chunk": {"size": args.chunk_size, "overlap": args.chunk_overlap},
                "llm": llm,
            }
            cfg = build_config(cfg_data, env=False)
            args.gleaning_rounds = cfg.extract.max_gleaning_rounds
            t0 = time.monotonic()
            spark = build_session(cfg)
            spark.sparkContext.setLogLevel("ERROR")
            session_s = time.monotonic() - t0
            try:
                out = work / "out"
                t0 = time.monotonic()
                run_pipeline(cfg, str(corpus_path), out, stages=["ingest", "chunk"], spark=spark)
                prep_s = time.monotonic() - t0
                tables = Tables(spark, out)
                ch = (
                    tables.read("chunks")
                    .agg(
                        F.count("*").alias("n"),
                        F.countDistinct("content_hash").alias("distinct"),
                        F.avg("n_tokens").alias("mean_tokens"),
                    )
                    .first()
                )
                n_chunks, n_distinct = int(ch["n"]), int(ch["distinct"])
                log.info(
                    "ingest+chunk: %d chunks (%d distinct texts, mean %.0f tokens) in %.1f s",
                    n_chunks,
                    n_distinct,
                    ch["mean_tokens"],
                    prep_s,
                )

                # ---- the timed part: the extract stage ----
                endpoint.reset_stats()
                capture = LogCapture()
                glog = logging.getLogger("graphgen_spark")
                glog.addHandler(capture)
                sampler = Sampler(endpoint)
                meter = CpuMeter(extra={"standin": endpoint.proc.pid})
                sampler.start()
                meter.start()
                wall0 = time.time()
                t0 = time.monotonic()
                try:
                    run_id = run_pipeline(
                        cfg, str(corpus_path), out, stages=["extract"], spark=spark
                    )
                finally:
                    stage_s = time.monotonic() - t0
                    wall1 = time.time()
                    cpu = meter.stop()
                    time.sleep(0.2)
                    sampler.stop()
                    glog.removeHandler(capture)
                    spark.sparkContext.setJobGroup("bench-analysis", "bench: reading results back")
                stats = endpoint.stats()
                result = analyse(
                    spark=spark,
                    tables=tables,
                    run_id=run_id,
                    capacity=capacity,
                    args=args,
                    stats=stats,
                    capture=capture,
                    samples=sampler.samples,
                    wall=(wall0, wall1),
                    stage_s=stage_s,
                    n_chunks=n_chunks,
                    n_distinct=n_distinct,
                )
                result["cpu_during_extract"] = cpu
                sb = cpu["cpu_s_by_role"]
                result["cpu_ms_per_request"] = {
                    role: round(1000 * sb.get(role, 0.0) / max(1, stats["requests_total"]), 2)
                    for role in ("standin", "spark_python_workers", "spark_jvm", "driver_python")
                }
                if args.client_probe:
                    log.info("client probe: replaying %d requests without Spark", args.client_probe)
                    try:
                        result["client_probe"] = client_probe(
                            tables,
                            cfg,
                            endpoint,
                            args.client_probe,
                            capacity,
                            args.latency_ms / 1000,
                        )
                    except Exception as exc:  # the probe uses executor internals; never fatal
                        log.exception("client probe failed")
                        result["client_probe"] = {"error": f"{type(exc).__name__}: {exc}"}
                result["corpus"] = {
                    **corpus,
                    "chunks": n_chunks,
                    "distinct_chunk_texts": n_distinct,
                    "mean_chunk_tokens": round(float(ch["mean_tokens"]), 1),
                }
                result["untimed"] = {
                    "session_start_s": round(session_s, 1),
                    "ingest_chunk_s": round(prep_s, 1),
                }
                result["machine"] = machine_facts(spark)
                result["config"] = {
                    "cli": vars(args),
                    "pipeline": cfg.model_dump(
                        mode="json",
                        include={"spark", "chunk", "llm", "extract"},
                        exclude={"llm": {"synthesizer": {"api_key"}, "trainee": {"api_key"}}},
                    ),
                    "standin": {
                        "latency_ms": args.latency_ms,
                        "max_concurrency": args.max_concurrency,
                        "process": "separate (python -m graphgen_spark.standin)",
                    },
                }
            finally:
                spark.stop()
    result["bench_total_s"] = round(time.monotonic() - t_all, 1)
    return result


def analyse(
    *,
    spark,
    tables,
    run_id: str,
    capacity: float,
    args,
    stats: dict[str, Any],
    capture: LogCapture,
    samples,
    wall: tuple[float, float],
    stage_s: float,
    n_chunks: int,
    n_distinct: int,
) -> dict[str, Any]:
    from pyspark.sql import functions as F

    requests = int(stats["requests_total"])
    # per-execute and per-wave lines from the executor
    waves, rounds = [], []
    kinds = ["extract"] + ["check", "glean"] * args_rounds(args)
    for t, msg in capture.records:
        m = _EXECUTE.search(msg)
        if m:
            rounds.append(
                {
                    "round": kinds[len(rounds)] if len(rounds) < len(kinds) else "?",
                    "requests": int(m.group(1)),
                    "cached": int(m.group(2)),
                    "sent": int(m.group(3)),
                    "waves": int(m.group(4)),
                }
            )
        m = _WAVE.search(msg)
        if m:
            n, dt = int(m.group(3)), float(m.group(4))
            waves.append(
                {
                    "round": rounds[-1]["round"] if rounds else "?",
                    "requests": n,
                    "seconds": dt,
                    "end": t,
                    "start": t - dt,
                }
            )
    windows = _send_windows(samples)
    for w in waves:
        inside = [(a, b) for a, b in windows if b >= w["start"] and a <= w["end"]]
        send = sum(min(b, w["end"]) - max(a, w["start"]) for a, b in inside)
        w["send_s"] = round(send, 2)
        w["bookkeeping_s"] = round(w["seconds"] - send, 2)
        w["ratio"] = round(w["requests"] / w["seconds"] / capacity, 3) if w["seconds"] else None
        w["ratio_send"] = round(w["requests"] / send / capacity, 3) if send else None
        w["mean_in_flight"] = round(_mean_inflight(samples, w["start"], w["end"]) or 0, 1)
    wave_req = sum(w["requests"] for w in waves)
    wave_s = sum(w["seconds"] for w in waves)
    send_s = sum(b - a for a, b in windows)
    mean_inflight = _mean_inflight(samples, *wall) or 0.0

    # calls per chunk and its distribution, from extractions.request_ids
    ex = tables.read("extractions")
    dist = {
        int(r["calls"]): int(r["n"])
        for r in ex.groupBy(F.size("request_ids").alias("calls"))
        .agg(F.count("*").alias("n"))
        .collect()
    }
    status = {
        r["status"]: int(r["n"])
        for r in ex.groupBy("status").agg(F.count("*").alias("n")).collect()
    }
    ent = ex.agg(F.avg("n_entities").alias("e"), F.avg("n_relations").alias("r")).first()
    run_row = tables.read("runs").filter(F.col("run_id") == run_id).first()
    stage_stats = {s["stage"]: s for s in (run_row["stage_stats"] or [])} if run_row else {}
    ex_stats = stage_stats.get("extract")
    counts = dict(ex_stats["counts"]) if ex_stats else {}

    jobs = spark_jobs(spark, "stage-extract")
    busy_jobs = union_seconds([(j["start"], j["end"]) for j in jobs])
    # A wave's jobs are those inside its time window (its count, the LLM write, the stats,
    # the llm_calls MERGE); its LLM job is the longest of them (with AQE the write runs as a
    # query-stage job whose call site is Spark's, not the executor's).
    llm_job_ids: set[int] = set()
    wave_job_ids: set[int] = set()
    for w in waves:
        inside = [j for j in jobs if j["start"] >= w["start"] - 0.5 and j["end"] <= w["end"] + 0.5]
        wave_job_ids.update(j["job"] for j in inside)
        if inside:
            llm = max(inside, key=lambda j: j["end"] - j["start"])
            llm_job_ids.add(llm["job"])
            w["llm_job_s"] = round(llm["end"] - llm["start"], 2)
    by_site: Counter[str] = Counter()
    n_by_site: Counter[str] = Counter()
    for j in jobs:
        if j["job"] in llm_job_ids:
            key = "LLM requests (mapInPandas -> staged parquet)"
        elif j["job"] in wave_job_ids:
            key = "wave bookkeeping: " + callsite(j)
        else:
            key = "rounds/stage: " + callsite(j)
        by_site[key] += j["end"] - j["start"]
        n_by_site[key] += 1
    top_sites = [
        {"site": k, "jobs": n_by_site[k], "seconds": round(v, 1)}
        for k, v in by_site.most_common(20)
    ]
    llm_job_s = sum(j["end"] - j["start"] for j in jobs if j["job"] in llm_job_ids)
    calls_per_chunk = requests / n_chunks if n_chunks else None
    calls_per_text = requests / n_distinct if n_distinct else None
    r = lambda x, d=3: round(x, d) if x is not None else None  # noqa: E731
    return {
        "benchmark": NAME,
        "capacity_req_s": capacity,
        "target_ratio": 0.90,
        "headline": {
            "ratio_stage": r(requests / stage_s / capacity),
            "ratio_waves": r(wave_req / wave_s / capacity) if wave_s else None,
            "ratio_llm_jobs": r(wave_req / llm_job_s / capacity) if llm_job_s else None,
            "ratio_send": r(requests / send_s / capacity) if send_s else None,
            "busy_fraction_stage": r(mean_inflight / args.max_concurrency),
            "meets_target_stage": requests / stage_s / capacity >= 0.90,
            "requests": requests,
            "stage_s": r(stage_s, 1),
            "achieved_req_s": r(requests / stage_s, 1),
            "llm_seconds_at_capacity": r(requests / capacity, 1),
            "calls_per_chunk": r(calls_per_chunk),
            "max_in_flight": stats["max_in_flight"],
        },
        "requests": {
            "standin_requests_total": requests,
            "standin_completions_ok": stats["completions_ok"],
            "standin_max_in_flight": stats["max_in_flight"],
            "standin_max_queued": stats["max_queued"],
            "standin_by_status": stats["by_status"],
            "executor_counts": counts,
            "per_round": rounds,
        },
        "calls_per_chunk": {
            "mean_per_chunk": r(calls_per_chunk),
            "mean_per_distinct_text": r(calls_per_text),
            "max_possible": 1 + 2 * args_rounds(args),
            "distribution": {str(k): v for k, v in sorted(dist.items())},
            "extraction_status": status,
            "mean_entities_per_text": r(ent["e"], 1),
            "mean_relations_per_text": r(ent["r"], 1),
        },
        "time": {
            "stage_s": r(stage_s, 1),
            "pipeline_stage_s": r(float(ex_stats["seconds"]), 1) if ex_stats else None,
            "waves_total_s": r(wave_s, 1),
            "waves_requests": wave_req,
            "send_windows_s": r(send_s, 1),
            "llm_wave_jobs_s": r(llm_job_s, 1),
            "wave_bookkeeping_s": r(wave_s - send_s, 1),
            "outside_waves_s": r(stage_s - wave_s, 1),
            "spark_jobs": len(jobs),
            "spark_jobs_busy_s": r(busy_jobs, 1),
            "driver_gaps_s": r(stage_s - busy_jobs, 1),
            "top_spark_call_sites": top_sites,
        },
        "waves": [
            {
                k: (round(v, 2) if isinstance(v, float) else v)
                for k, v in w.items()
                if k not in ("start", "end")
            }
            for w in waves
        ],
        "send_windows": [[round(a - wall[0], 2), round(b - wall[0], 2)] for a, b in windows],
    }


def args_rounds(args) -> int:
    """extract.max_gleaning_rounds of the run (set on ``args`` once the config is built)."""
    return int(getattr(args, "gleaning_rounds", 3))


def summary_lines(res: dict[str, Any]) -> list[str]:
    h = res["headline"]
    c = res["calls_per_chunk"]
    lines = [
        f"extract_throughput: {h['requests']} requests in {h['stage_s']} s "
        f"= {h['achieved_req_s']} req/s of {res['capacity_req_s']:.0f} capacity",
        f"  ratio stage {h['ratio_stage']}  waves {h['ratio_waves']}  "
        f"send windows {h['ratio_send']}  busy fraction {h['busy_fraction_stage']}  "
        f"(target >= {res['target_ratio']}: {'MET' if h['meets_target_stage'] else 'NOT met'})",
        f"  calls per chunk {c['mean_per_chunk']}  distribution {c['distribution']}  "
        f"max in flight {h['max_in_flight']}",
    ]
    probe = res.get("client_probe") or {}
    both = next(
        (v for v in probe.values() if isinstance(v, dict) and v.get("processes") == 2), None
    )
    if both:
        lines.append(
            f"  executor task loop without Spark, 2 processes x {both['in_flight_per_process']} "
            f"in flight: {both['req_s']} req/s = ratio {both['ratio_to_capacity']} "
            f"({both['client_cpu_ms_per_request']} ms client CPU per request)"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    install_sigterm_exit()
    local_only_env()
    args = parse_args(argv)
    res = run(args)
    h = res["headline"]
    if h["llm_seconds_at_capacity"] < args.min_llm_seconds:
        log.warning(
            "only %.0f s of LLM work at capacity (< %.0f s): raise --chunks",
            h["llm_seconds_at_capacity"],
            args.min_llm_seconds,
        )
    if not args.no_write:
        path = write_result(NAME, res)
        log.info("wrote %s", path)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str) + "\n")
    print("\n".join(summary_lines(res)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
