"""Extract-stage throughput against the stand-in endpoint at its capacity (architecture §4.2).

The stand-in runs as a separate process with 200 ms latency and 64 decoding slots, so its
capacity is 64 / 0.2 s = 320 requests/s. A seeded synthetic English corpus (capitalised
names, so the stand-in finds entities and gleaning runs) goes through ingest + chunk
(untimed); then the extract stage is timed on ``local[2]`` with
``llm.synthesizer.max_concurrency = 64`` (32 in flight per task slot).

Reported, all from the one run (the timeline analysis is :mod:`bench.timeline`'s):

* ``ratio_stage``  achieved requests/s over the whole extract stage ÷ capacity;
* ``ratio_waves``  requests sent in the waves (the executor's cumulative "[extract] wave i
  done: N calls sent so far" lines) ÷ the union of the waves' spans (the Spark jobs described
  "extract: wave i/N", first start to last end per wave) ÷ capacity;
* ``ratio_llm_jobs``  the same requests ÷ the union of the waves' LLM jobs ÷ capacity;
* ``ratio_send``   requests ÷ time the endpoint had anything in flight ÷ capacity;
* ``ratio_busy_span``  requests ÷ ``busy_span_s`` (first to last /stats sample of the stage
  with a request in flight) ÷ capacity;
* ``busy_fraction`` mean in-flight ÷ 64 over the stage, sampled from ``/stats`` at 20 Hz;
* LLM calls per chunk (stand-in requests ÷ chunks) and its distribution (1 … 1 + 2R);
* where the rest of the stage time went: per phase of the stage (to-do set, pending set,
  waves, the llm_calls MERGE of the staged waves, outputs and the extractions MERGE,
  mentions, and the pipeline's run bookkeeping before and after the stage: the ``runs`` row,
  the HTML report), per wave, per Spark call site; CPU by process.

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
import sys
import time
from pathlib import Path
from typing import Any

from bench import (
    LOCAL_SPARK_CONF,
    StandinProcess,
    add_run_args,
    machine_facts,
    run_benchmark,
    spark_jobs,
    standin,
    work_directory,
)
from bench import timeline as tl

NAME = "extract_throughput"
STAGE = "extract"
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


# -- client ceiling: the executor's task loop without Spark ------------------------------------
def _probe_worker(rows: list[dict[str, Any]], spec: Any, start_at: float) -> dict[str, Any]:
    """One task slot's loop (``runner._stream_programs``) over ``rows``, in its own process."""
    import resource

    import pandas as pd

    from graphgen_spark.llm.executor import _send_request
    from graphgen_spark.llm.runner import _stream_programs

    pdf = pd.DataFrame(rows)
    while time.time() < start_at:
        time.sleep(0.005)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.time()
    stats: dict[str, float] = {}
    for _ in _stream_programs(pdf, spec, _send_request, "request_id", stats):
        pass
    t1 = time.time()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {
        "requests": int(stats.get("sent", 0)),
        "ok": int(stats.get("ok", 0)),
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
    from graphgen_spark.llm.limits import TaskLimits
    from graphgen_spark.llm.requests import REQUEST_SCHEMA
    from graphgen_spark.llm.runner import TaskSpec

    slots = 2
    ep = cfg.llm.synthesizer
    limits = TaskLimits.share(slots, cfg.llm.concurrency_per_task, ep.max_concurrency, None, None)
    spec = TaskSpec(
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
    add_run_args(p, shuffle_partitions=4, driver_memory="4g")
    p.add_argument("--wave-size", type=int, default=None, help="llm.wave_size (default: config)")
    p.add_argument(
        "--wave-seconds", type=float, default=None, help="llm.wave_seconds (default: config)"
    )
    p.add_argument("--seed", type=int, default=7)
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
            if args.wave_seconds:
                llm["wave_seconds"] = args.wave_seconds
            conf = {
                **LOCAL_SPARK_CONF,
                "spark.driver.memory": args.driver_memory,
                # keep every job of the stage in the status store for the breakdown
                "spark.ui.retainedJobs": "100000",
                "spark.ui.retainedStages": "100000",
            }
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
                with tl.TimedStage(spark, endpoint) as timed:
                    run_id = run_pipeline(
                        cfg, str(corpus_path), out, stages=["extract"], spark=spark
                    )
                stats = endpoint.stats()
                result = analyse(
                    spark=spark,
                    tables=tables,
                    run_id=run_id,
                    capacity=capacity,
                    args=args,
                    stats=stats,
                    timed=timed,
                    n_chunks=n_chunks,
                    n_distinct=n_distinct,
                )
                result["cpu_during_extract"] = timed.cpu
                result["cpu_ms_per_request"] = tl.cpu_ms_per_request(
                    timed.cpu, stats["requests_total"]
                )
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
                    "standin": tl.standin_config(args),
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
    timed: tl.TimedStage,
    n_chunks: int,
    n_distinct: int,
) -> dict[str, Any]:
    from pyspark.sql import functions as F

    r = lambda x, d=3: round(x, d) if x is not None else None  # noqa: E731
    requests = int(stats["requests_total"])
    wall, samples, stage_s = timed.wall, timed.samples, timed.stage_s

    # every Spark job submitted during the stage: the waves run in the executor's own
    # threads, whose jobs carry no job group
    jobs = spark_jobs(spark, None, since=wall[0] - 0.05, until=wall[1] + 0.05)
    calls = tl.executor_calls(timed.capture, STAGE, lambda k: f"attempt {k + 1}")
    waves = tl.llm_waves(jobs, STAGE, calls, samples, capacity)
    wave_req, waves_s, llm_s = tl.wave_spans(waves)
    if wave_req is None and waves:  # every request of the stage is sent in a wave
        wave_req = requests
    windows = tl.send_windows(samples)

    # calls per chunk and its distribution, from extractions.request_ids
    ex = tables.read("extractions")
    dist = {
        int(r_["calls"]): int(r_["n"])
        for r_ in ex.groupBy(F.size("request_ids").alias("calls"))
        .agg(F.count("*").alias("n"))
        .collect()
    }
    status = {
        r_["status"]: int(r_["n"])
        for r_ in ex.groupBy("status").agg(F.count("*").alias("n")).collect()
    }
    ent = ex.agg(F.avg("n_entities").alias("e"), F.avg("n_relations").alias("r")).first()
    run_row = tables.read("runs").filter(F.col("run_id") == run_id).first()
    stage_stats = {s["stage"]: s for s in (run_row["stage_stats"] or [])} if run_row else {}
    ex_stats = stage_stats.get(STAGE)
    counts = dict(ex_stats["counts"]) if ex_stats else {}
    calls_per_chunk = requests / n_chunks if n_chunks else None
    calls_per_text = requests / n_distinct if n_distinct else None
    return {
        "benchmark": NAME,
        "capacity_req_s": capacity,
        "target_ratio": 0.90,
        "headline": tl.headline(
            timed, stats, capacity, args.max_concurrency, (wave_req, waves_s, llm_s)
        )
        | {"calls_per_chunk": r(calls_per_chunk)},
        "requests": tl.standin_counts(stats)
        | {"executor_counts": counts, "per_execute": tl.call_rows(calls)},
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
            "waves": len(waves),
            "waves_total_s": r(waves_s, 1),
            "waves_requests": wave_req,
            "llm_wave_jobs_s": r(llm_s, 1),
            "wave_bookkeeping_s": r(waves_s - llm_s, 1),
            "outside_waves_s": r(stage_s - waves_s, 1),
        }
        | tl.stage_time(stage_s, windows, jobs, waves),
        "phases": tl.phases(
            timed.capture, _marks(calls, waves, wall[0]), wall, jobs, samples, stage_s
        ),
        "waves": tl.wave_rows(waves, wall[0]),
        "send_windows": [[round(a - wall[0], 2), round(b - wall[0], 2)] for a, b in windows],
    }


def _marks(calls: list[dict[str, Any]], waves: list[dict[str, Any]], wall0: float) -> list[tl.Mark]:
    """Where the extract stage's phases start (stages/extract.py and llm/executor.py log
    lines, the waves' Spark jobs); with several attempts each attempt has its own phases."""
    marks: list[tl.Mark] = [
        (wall0, "run bookkeeping: the run's row in runs"),
        (
            rf"stage {STAGE}: started",
            "to-do set: distinct chunk texts not in extractions (group-by, anti-join, count)",
        ),
        (r"extract: \d+ distinct chunk texts to extract", "pending set: written per slice, count"),
    ]
    for k, call in enumerate(calls):
        at = f"attempt {k + 1}: " if len(calls) > 1 else ""
        mine = [w for w in waves if w["round"] == call["round"]]
        if k:
            marks.append(
                (
                    rf"extract: attempt {k} recorded in extractions",
                    f"{at}texts left, pending set: written per slice, count",
                )
            )
        marks += [
            (call["logged_at"], f"{at}before the first wave (roles, budget)"),
            (min((w["start"] for w in mine), default=None), f"{at}waves (first start to last end)"),
            (max((w["end"] for w in mine), default=None), f"{at}staged waves MERGE into llm_calls"),
            (call["merged_at"], f"{at}outputs to scratch, extractions MERGE"),
        ]
    marks += [
        (r"extract: attempt \d+ recorded in extractions", "retry check, mentions written"),
        (r"extract: mentions written", "scratch cleanup, stage stats"),
        (rf"stage {STAGE}: done in", "run bookkeeping: runs table, HTML report"),
    ]
    return marks


def args_rounds(args) -> int:
    """extract.max_gleaning_rounds of the run (set on ``args`` once the config is built)."""
    return int(getattr(args, "gleaning_rounds", 3))


def summary_lines(res: dict[str, Any]) -> list[str]:
    h = res["headline"]
    c = res["calls_per_chunk"]
    t = res["time"]
    lines = [
        f"extract_throughput: {h['requests']} requests in {h['stage_s']} s "
        f"= {h['achieved_req_s']} req/s of {res['capacity_req_s']:.0f} capacity",
        tl.ratio_line(res),
        f"  calls per chunk {c['mean_per_chunk']}  distribution {c['distribution']}  "
        f"max in flight {h['max_in_flight']}",
    ]
    if t.get("waves"):
        lines.append(
            f"  time: {t['waves']} wave(s) {t['waves_total_s']} s (LLM jobs "
            f"{t['llm_wave_jobs_s']} s), outside them {t['outside_waves_s']} s; "
            f"endpoint idle {t['endpoint_idle_s']} s"
        )
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
    args = parse_args(argv)
    res = run_benchmark(NAME, args, run, summary_lines)
    tl.warn_if_short(res, args, log, "--chunks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
