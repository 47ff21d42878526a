"""Judge-stage throughput against the stand-in endpoint at its capacity (architecture §4.2).

The stand-in runs as a separate process with 200 ms latency and 64 decoding slots, so its
capacity is 64 / 0.2 s = 320 requests/s. A seeded synthetic knowledge graph is written
straight into the ``entities``, ``relations`` and ``statements`` Delta tables (untimed; quiz
is not run): per element its description (yes), one paraphrase (yes) and two negations (no),
as quiz writes them with the default ``quiz.samples = 2``. Every statement text is
different, so every statement is one trainee request. Then the judge stage is timed on
``local[2]`` with the trainee endpoint pointed at the stand-in and
``llm.trainee.max_concurrency = 64`` (32 in flight per task slot). The stage function runs
with a :class:`StageContext` as the pipeline runs it, without the ``runs`` bookkeeping.

Reported, all from the one run (the timeline analysis is :mod:`bench.timeline`'s):

* ``ratio_stage``   achieved requests/s over the whole judge stage ÷ capacity;
* ``ratio_waves``   statement requests ÷ the union of the statement waves' spans (the Spark
  jobs described "judge: wave i/N", first start to last end per wave) ÷ capacity;
* ``ratio_llm_jobs``  statement requests ÷ the union of those waves' LLM jobs ÷ capacity;
* ``ratio_send``    requests ÷ time the endpoint had anything in flight ÷ capacity;
* ``ratio_busy_span``  requests ÷ ``busy_span_s`` (first to last /stats sample of the stage
  with a request in flight) ÷ capacity;
* ``busy_fraction`` mean in-flight ÷ 64 over the stage, sampled from ``/stats`` at 20 Hz;
* the judgements by status (ok, no_verdict, failed, no_logprobs) and the stage's counts;
* where the rest of the stage time went: per phase of the stage (to-do set, request
  building, the probe wave with the first statement alone, waves, verdicts and MERGEs after
  sending), per wave, per Spark call site;
  CPU by process.

``python -m bench.judge_throughput [--statements N] [--keep]``; writes
``bench/results/judge_throughput.json``.
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import re
import sys
import time
from collections import Counter
from typing import Any

from bench import (
    LOCAL_SPARK_CONF,
    add_run_args,
    machine_facts,
    run_benchmark,
    spark_jobs,
    standin,
    work_directory,
)
from bench import timeline as tl
from bench.extract_throughput import (
    FIELDS,
    FIRST,
    LAST,
    ORG_A,
    ORG_B,
    PLACES,
    WORKS,
)

NAME = "judge_throughput"
log = logging.getLogger("bench.judge_throughput")
STAGE = "judge"
JOB_GROUP = "stage-judge"  # what Stage.run sets for the stage (stages/base.py)

# -- the synthetic graph and its statements ------------------------------------------------------
ROLES = (
    "researcher",
    "engineer",
    "curator",
    "field technician",
    "data analyst",
    "lecturer",
    "archivist",
    "lab manager",
)
INITIALS = "ABCDEFGHJKLMNOPRSTVW"
# per element: the description (yes), paraphrase 0 (yes), negations 0 and 1 (no)
PER_ELEMENT = (("original", 0, "yes"), ("paraphrase", 0, "yes"), ("negation", 0, "no"))
PER_ELEMENT += (("negation", 1, "no"),)


def _other(rng: random.Random, pool, current):
    while True:
        x = rng.choice(pool)
        if x != current:
            return x


def _entity_texts(rng: random.Random, name: str) -> tuple[str, list[str]]:
    f = {
        "name": name,
        "role": rng.choice(ROLES),
        "org": f"{rng.choice(ORG_A)} {rng.choice(ORG_B)}",
        "place": rng.choice(PLACES),
        "field": rng.choice(FIELDS),
        "year": rng.randint(1950, 2020),
    }
    orig = "{name} is a {role} at the {org} in {place} who has studied {field} since {year}."
    para = "Since {year}, {name} has worked on {field} as a {role} at the {org} in {place}."
    year2 = f["year"] + rng.choice((-7, -4, -2, 3, 5, 9))
    place2 = _other(rng, PLACES, f["place"])
    texts = [
        orig.format(**f),
        para.format(**f),
        orig.format(**{**f, "year": year2}),
        orig.format(**{**f, "place": place2}),
    ]
    return texts[0], texts


def _relation_texts(rng: random.Random, p: str, q: str) -> tuple[str, list[str]]:
    f = {
        "p": p,
        "q": q,
        "work": rng.choice(WORKS),
        "org": f"{rng.choice(ORG_A)} {rng.choice(ORG_B)}",
        "year": rng.randint(1950, 2020),
    }
    orig = "{p} and {q} wrote {work} together at the {org} in {year}."
    para = "In {year}, {p} co-authored {work} with {q} at the {org}."
    year2 = f["year"] + rng.choice((-6, -3, -1, 2, 4, 8))
    if rng.random() < 0.5:
        neg1 = orig.format(**{**f, "org": f"{_other(rng, ORG_A, '')} {_other(rng, ORG_B, '')}"})
        if neg1 == orig.format(**f):
            neg1 = "{p} and {q} never worked together on {work} at the {org}.".format(**f)
    else:
        neg1 = "{p} and {q} never worked together on {work} at the {org}.".format(**f)
    texts = [orig.format(**f), para.format(**f), orig.format(**{**f, "year": year2}), neg1]
    return texts[0], texts


def _names(rng: random.Random, n: int) -> list[str]:
    """``n`` distinct person names ('First I. Last', then numbered once combinations run out)."""
    out: list[str] = []
    seen: set[str] = set()
    combos = len(FIRST) * len(INITIALS) * len(LAST)
    while len(out) < n:
        if len(seen) < combos * 0.8:
            name = f"{rng.choice(FIRST)} {rng.choice(INITIALS)}. {rng.choice(LAST)}"
        else:
            name = (
                f"{rng.choice(FIRST)} {rng.choice(INITIALS)}. {rng.choice(LAST)} "
                f"{rng.randint(2, 10**6)}"
            )
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out


def generate_graph(n_statements: int, seed: int, relation_share: float) -> dict[str, list[dict]]:
    """Rows for entities, relations and statements: ``n_statements`` statements, 4 per element
    (the last element may have fewer), every statement text distinct."""
    from graphgen_spark.ids import h

    rng = random.Random(seed)
    n_elements = math.ceil(n_statements / len(PER_ELEMENT))
    n_rel = round(n_elements * relation_share)
    n_ent = n_elements - n_rel
    names = _names(rng, max(n_ent, 2))
    entities, relations, statements = [], [], []
    texts_seen: set[str] = set()

    def add_statements(element_id: str, kind: str, description: str, texts: list[str]) -> None:
        dh = h(description)
        quiz_request = h("bench-quiz", element_id, dh)
        for (skind, idx, label), text in zip(PER_ELEMENT, texts, strict=True):
            if len(statements) >= n_statements:
                return
            if text in texts_seen:  # cannot happen with unique names/pairs; kept as a guard
                text = f"{text[:-1]} (record {len(statements)})."
            texts_seen.add(text)
            statements.append(
                {
                    "statement_id": h(element_id, dh, skind, idx),
                    "element_id": element_id,
                    "element_kind": kind,
                    "description_hash": dh,
                    "kind": skind,
                    "idx": idx,
                    "text": text,
                    "label": label,
                    "language": "en",
                    "request_id": quiz_request,
                }
            )

    ids = []
    for i, name in enumerate(names[:n_ent] if n_ent else []):
        key = name.casefold()
        eid = h(key)
        ids.append(eid)
        desc, texts = _entity_texts(rng, name)
        entities.append(
            {
                "entity_id": eid,
                "key": key,
                "name": name,
                "type": "person",
                "description": desc,
                "n_tokens": max(1, len(desc) // 4),
                "n_mentions": 1,
                "descriptions": [desc],
                "summarised": False,
                "summary_levels": 0,
                "chunk_ids": [h("bench-chunk", i)],
                "doc_ids": [h("bench-doc", i // 8)],
                "is_placeholder": False,
                "row_hash": h("bench-entity", eid, desc),
            }
        )
        add_statements(eid, "entity", desc, texts)
    # relations between distinct pairs of the entities (or of spare names if there are none)
    pool = [(e["entity_id"], e["name"]) for e in entities] or [(h(n.casefold()), n) for n in names]
    pairs: set[tuple[str, str]] = set()
    while len(relations) < n_rel:
        (a_id, a), (b_id, b) = rng.sample(pool, 2)
        if a_id > b_id:
            (a_id, a), (b_id, b) = (b_id, b), (a_id, a)
        if (a_id, b_id) in pairs:
            continue
        pairs.add((a_id, b_id))
        desc, texts = _relation_texts(rng, a, b)
        edge_id = h(a_id, b_id)
        i = len(relations)
        relations.append(
            {
                "edge_id": edge_id,
                "src_id": a_id,
                "dst_id": b_id,
                "src_name": a,
                "dst_name": b,
                "description": desc,
                "n_tokens": max(1, len(desc) // 4),
                "n_mentions": 1,
                "descriptions": [desc],
                "summarised": False,
                "summary_levels": 0,
                "chunk_ids": [h("bench-chunk", i)],
                "doc_ids": [h("bench-doc", i // 8)],
                "row_hash": h("bench-relation", edge_id, desc),
            }
        )
        add_statements(edge_id, "relation", desc, texts)
    return {"entities": entities, "relations": relations, "statements": statements}


def write_graph(spark, tables, args) -> dict[str, Any]:
    """Generate the rows and write them as the Delta tables judge (and quiz) read."""
    import pandas as pd

    from graphgen_spark.tables import SCHEMAS

    t0 = time.monotonic()
    rows = generate_graph(args.statements, args.seed, args.relation_share)
    gen_s = time.monotonic() - t0
    t0 = time.monotonic()
    ints = {"n_tokens", "n_mentions", "summary_levels", "idx"}
    for name in ("entities", "relations", "statements"):
        schema = SCHEMAS[name]
        pdf = pd.DataFrame(rows[name], columns=schema.fieldNames())
        for c in ints & set(pdf.columns):
            pdf[c] = pdf[c].astype("int32")
        df = spark.createDataFrame(pdf, schema) if len(pdf) else spark.createDataFrame([], schema)
        df.repartition(2).write.format("delta").mode("overwrite").save(tables.location(name))
    st = rows["statements"]
    by_kind = Counter((s["element_kind"], s["kind"]) for s in st)
    return {
        "statements": len(st),
        "distinct_texts": len({s["text"] for s in st}),
        "entities": len(rows["entities"]),
        "relations": len(rows["relations"]),
        "labels": dict(Counter(s["label"] for s in st)),
        "by_element_kind_and_kind": {f"{a}/{b}": n for (a, b), n in sorted(by_kind.items())},
        "mean_text_chars": round(sum(len(s["text"]) for s in st) / max(1, len(st)), 1),
        "seed": args.seed,
        "generate_s": round(gen_s, 1),
        "write_s": round(time.monotonic() - t0, 1),
    }


# -- measuring ----------------------------------------------------------------------------------
_REPORT = re.compile(r"judge: reliability diagram")


_PROBE_JOB = "judge: probe"


def _round(k: int) -> str:
    """The judge stage calls the executor once; its first statement goes alone (the probe)."""
    return "statements"


def _probe_jobs(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [j for j in jobs if j["description"] == _PROBE_JOB]


def _marks(
    calls: list[dict[str, Any]],
    waves: list[dict[str, Any]],
    wall0: float,
    jobs: list[dict[str, Any]],
) -> list[tl.Mark]:
    """Where the judge stage's phases start: the executor's log lines and the waves' jobs."""
    probe = _probe_jobs(jobs)
    main = [w for w in waves if w["round"] == "statements"]
    at = [c["logged_at"] for c in calls] + [None]
    return [
        (
            wall0,
            "to-do set (anti-join with judgements, checkpoint, count), requests built "
            "(mapInPandas + checkpoint), pending set (anti-join with llm_calls, parquet write)",
        ),
        (at[0], "before the probe"),
        (min((j["start"] for j in probe), default=None), "probe wave (the first statement alone)"),
        (max((j["end"] for j in probe), default=None), "probe answer read"),
        (
            min((w["start"] for w in main), default=None),
            "statement waves (first wave start to last wave end)",
        ),
        (
            max((w["end"] for w in main), default=None),
            "after sending: staged outcomes into llm_calls, results join, verdicts, "
            "judgements MERGE, gap_scores MERGE, calibration",
        ),
        (_REPORT, "reliability diagram, gap_scores status counts"),
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.judge_throughput", description=__doc__)
    p.add_argument("--statements", type=int, default=100_000, help="statements to judge")
    p.add_argument(
        "--relation-share", type=float, default=0.4, help="share of elements that are relations"
    )
    p.add_argument("--latency-ms", type=float, default=200.0)
    p.add_argument("--max-concurrency", type=int, default=64)
    add_run_args(p, shuffle_partitions=4, driver_memory="4g")
    p.add_argument("--wave-size", type=int, default=None, help="llm.wave_size (default: config)")
    p.add_argument(
        "--wave-seconds", type=float, default=None, help="llm.wave_seconds (default: config)"
    )
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--min-llm-seconds", type=float, default=60.0)
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from graphgen_spark.config import build_config
    from graphgen_spark.ids import h
    from graphgen_spark.session import build_session
    from graphgen_spark.stages.base import StageContext
    from graphgen_spark.stages.judge import STAGE as JUDGE
    from graphgen_spark.tables import Tables

    capacity = args.max_concurrency / (args.latency_ms / 1000.0)
    t_all = time.monotonic()
    with (
        work_directory(args.keep, "graphgen_bench_judge_") as work,
        standin(args.latency_ms, args.max_concurrency, work) as endpoint,
    ):
        ep = {
            "base_url": endpoint.base_url,
            "model": "standin",
            "max_concurrency": args.max_concurrency,
            "timeout_s": 120,
        }
        llm: dict[str, Any] = {
            # the synthesizer is not used by judge; it points at the stand-in all the same
            "synthesizer": dict(ep),
            "trainee": dict(ep),
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
            "llm": llm,
        }
        cfg0 = build_config(cfg_data, env=False)
        # every task slot keeps its share in flight: 64 in all over the slots of the master
        t0 = time.monotonic()
        spark = build_session(cfg0)
        spark.sparkContext.setLogLevel("ERROR")
        session_s = time.monotonic() - t0
        slots = max(1, spark.sparkContext.defaultParallelism)
        llm["concurrency_per_task"] = math.ceil(args.max_concurrency / slots)
        cfg = build_config(cfg_data, env=False)
        try:
            out = work / "out"
            tables = Tables(spark, out)
            spark.sparkContext.setJobGroup("bench-generate", "bench: synthetic statements")
            log.info("writing %d synthetic statements to %s", args.statements, out)
            data = write_graph(spark, tables, args)
            log.info("synthetic graph: %s", data)
            if data["distinct_texts"] != data["statements"]:
                raise RuntimeError(f"statement texts are not all distinct: {data}")

            # ---- the timed part: the judge stage ----
            run_id = h("bench-judge", cfg.config_hash(), str(out), time.time())
            ctx = StageContext(
                spark, cfg, tables, run_id, None, logging.getLogger("graphgen_spark")
            )
            with tl.TimedStage(spark, endpoint) as timed:
                spark.sparkContext.setJobGroup(JOB_GROUP, "graphgen-spark stage judge")
                stage_result = JUDGE.run(ctx)
            stage_s = timed.stage_s
            log.info("judge stage: %.1f s, counts %s", stage_s, stage_result.counts)
            stats = endpoint.stats()
            result = analyse(
                spark=spark,
                tables=tables,
                capacity=capacity,
                args=args,
                cfg=cfg,
                stats=stats,
                timed=timed,
                stage_counts=dict(stage_result.counts),
            )
            result["cpu_during_judge"] = timed.cpu
            result["cpu_ms_per_request"] = tl.cpu_ms_per_request(timed.cpu, stats["requests_total"])
            result["statements_table"] = data
            result["untimed"] = {
                "session_start_s": round(session_s, 1),
                "generate_s": data["generate_s"],
                "write_tables_s": data["write_s"],
            }
            result["machine"] = machine_facts(spark)
            result["config"] = {
                "cli": vars(args),
                "pipeline": cfg.model_dump(
                    mode="json",
                    include={"spark", "llm", "judge", "quiz", "gap", "ece", "gap_scoring"},
                    exclude={"llm": {"synthesizer": {"api_key"}, "trainee": {"api_key"}}},
                ),
                "task_slots": slots,
                "in_flight_per_task": math.ceil(args.max_concurrency / slots),
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
    capacity: float,
    args,
    cfg,
    stats: dict[str, Any],
    timed: tl.TimedStage,
    stage_counts: dict[str, int],
) -> dict[str, Any]:
    from pyspark.sql import functions as F

    requests = int(stats["requests_total"])
    r = lambda x, d=3: round(x, d) if x is not None else None  # noqa: E731
    wall, samples, stage_s = timed.wall, timed.samples, timed.stage_s

    # every Spark job submitted during the stage, whichever driver thread submitted it
    jobs = spark_jobs(spark, None, since=wall[0] - 0.05, until=wall[1] + 0.05)
    executes = tl.executor_calls(timed.capture, STAGE, _round)
    waves = tl.llm_waves(jobs, STAGE, executes, samples, capacity)
    main = [w for w in waves if w["round"] == "statements"]
    pre_sent = len(_probe_jobs(jobs))
    main_req = max(0, requests - pre_sent)
    _, waves_union, llm_union = tl.wave_spans(main)
    windows = tl.send_windows(samples)

    # judgements by status (this trainee), gap scores and calibration as the stage left them
    trainee = cfg.trainee_model()
    jd = tables.read("judgements").filter(F.col("trainee_model") == trainee)
    by_status = {
        r_["status"]: int(r_["n"])
        for r_ in jd.groupBy("status").agg(F.count("*").alias("n")).collect()
    }
    n_statements = tables.read("statements").count()
    gap = {
        r_["status"]: int(r_["n"])
        for r_ in tables.read("gap_scores")
        .filter(F.col("trainee_model") == trainee)
        .groupBy("status")
        .agg(F.count("*").alias("n"))
        .collect()
    }
    cal = (
        tables.read("calibration")
        .filter((F.col("trainee_model") == trainee) & (F.col("scope") == "all"))
        .select("n", "n_no_verdict", "ece", "brier")
        .first()
    )

    return {
        "benchmark": NAME,
        "capacity_req_s": capacity,
        "target_ratio": 0.90,
        "headline": tl.headline(
            timed, stats, capacity, args.max_concurrency, (main_req, waves_union, llm_union)
        )
        | {
            "statements": n_statements,
            "judged_ok": by_status.get("ok", 0),
            "no_verdict": by_status.get("no_verdict", 0),
            "failed": by_status.get("failed", 0),
            "no_logprobs": by_status.get("no_logprobs", 0),
        },
        "requests": tl.standin_counts(stats)
        | {
            "statement_requests": main_req,
            "preflight_requests": pre_sent,
            "per_execute": tl.call_rows(executes),
            "stage_counts": stage_counts,
        },
        "judgements": {
            "statements": n_statements,
            "judgements": sum(by_status.values()),
            "by_status": by_status,
            "gap_scores_by_status": gap,
            "calibration_all": cal.asDict() if cal else None,
        },
        "time": {
            "stage_s": r(stage_s, 1),
            "statement_waves": len(main),
            "statement_waves_s": r(waves_union, 1),
            "statement_llm_jobs_s": r(llm_union, 1),
            "wave_bookkeeping_s": r(waves_union - llm_union, 1),
            "outside_statement_waves_s": r(stage_s - waves_union, 1),
        }
        | tl.stage_time(stage_s, windows, jobs, waves),
        "phases": tl.phases(
            timed.capture, _marks(executes, waves, wall[0], jobs), wall, jobs, samples, stage_s
        ),
        "waves": tl.wave_rows(waves, wall[0]),
        "send_windows": [[round(a - wall[0], 2), round(b - wall[0], 2)] for a, b in windows],
    }


def summary_lines(res: dict[str, Any]) -> list[str]:
    h = res["headline"]
    t = res["time"]
    lines = [
        f"judge_throughput: {h['statements']} statements, {h['requests']} requests in "
        f"{h['stage_s']} s = {h['achieved_req_s']} req/s of {res['capacity_req_s']:.0f} capacity",
        tl.ratio_line(res),
        f"  judged ok {h['judged_ok']}  no_verdict {h['no_verdict']}  failed {h['failed']}  "
        f"no_logprobs {h['no_logprobs']}  max in flight {h['max_in_flight']}",
        f"  time: {t['statement_waves']} statement wave(s) {t['statement_waves_s']} s (LLM jobs "
        f"{t['statement_llm_jobs_s']} s), outside them {t['outside_statement_waves_s']} s; "
        f"endpoint idle {t['endpoint_idle_s']} s",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    res = run_benchmark(NAME, args, run, summary_lines)
    tl.warn_if_short(res, args, log, "--statements")
    return 0


if __name__ == "__main__":
    sys.exit(main())
