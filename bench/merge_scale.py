"""Merge-stage wall time on a synthetic mention set of at least 1,000,000 mentions.

The mentions are written straight into the ``chunks``, ``entity_mentions`` and
``relation_mentions`` Delta tables with Spark (``spark.range``, no Python loops):

* chunks: ``--chunks`` chunks, 8 per document;
* entity mentions: 4–12 per chunk (mean 8); keys drawn log-uniformly from ``--keys`` names
  (P(k) ~ 1/k, a Zipf-like reuse: a few entities in thousands of chunks, most in one or
  two); the type is the key's own type with 10 % noise (so the vote has work); descriptions
  are short and each key has at most 3 distinct ones, so nothing crosses
  ``merge.summary_threshold`` (also raised to 10^9: the benchmark sends no LLM request);
* relation mentions: consecutive entity mentions of a chunk (as the stand-in relates
  neighbours), endpoints sorted (src_key < dst_key), self-loops dropped; ``--dangling`` of
  them point at a name no entity mention has (placeholders, ``dangling = true``).

Then ``run_pipeline(stages=["merge"])`` is timed on ``local[2]``. Reported: wall time, rows
in and out, mentions per second, the ratio of the stage's time to a same-run yardstick (a bare
group-by of both mention tables by graph key, written to parquet: the least any merge does),
the Spark jobs by call site and CPU by process.

``python -m bench.merge_scale [--chunks N] [--keep]``; writes ``bench/results/merge_scale.json``.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections import Counter
from typing import Any

from bench import (
    LOCAL_SPARK_CONF,
    CpuMeter,
    add_run_args,
    callsite,
    machine_facts,
    run_benchmark,
    spark_jobs,
    union_seconds,
    work_directory,
)

NAME = "merge_scale"
log = logging.getLogger("bench.merge_scale")

FIRST = [
    "Alice", "Bruno", "Chiara", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ingrid", "Jonas",
    "Kamala", "Lars", "Mei", "Nikolai", "Olga", "Pedro", "Quentin", "Rosa", "Sven", "Tomas",
    "Ulrike", "Viktor", "Wen", "Xavier", "Yara", "Zoltan", "Amara", "Bjorn", "Carmen", "Dario",
    "Esther", "Felix", "Goran", "Hana", "Ivo", "Jana", "Kenji", "Leila", "Marco", "Nadia",
]  # fmt: skip
LAST = [
    "Abbott", "Brennan", "Castillo", "Delacroix", "Eriksen", "Fontaine", "Gallagher", "Hartmann",
    "Ishikawa", "Jansen", "Kowalski", "Lindqvist", "Moreau", "Nakamura", "Okafor", "Petrov",
    "Quinlan", "Rossi", "Schneider", "Takahashi", "Ulrich", "Varga", "Whitfield", "Yamamoto",
    "Zielinski", "Andersen", "Bianchi", "Costa", "Dubois", "Esposito", "Fischer", "Garcia",
    "Horvath", "Ivanova", "Jovanovic", "Keller", "Lombardi", "Muller", "Novak", "Olsen",
]  # fmt: skip
PER_DOC = 8
MAX_PER_CHUNK = 12


def _unit(col, salt: int):
    """A deterministic pseudo-uniform number in [0, 1) from a column and a salt."""
    from pyspark.sql import functions as F

    return F.pmod(F.xxhash64(col, F.lit(salt)), F.lit(1 << 40)).cast("double") / float(1 << 40)


def _name(idx):
    """Display name of key index ``idx``: 'First Last', then 'First Last N' past 1600."""
    from pyspark.sql import functions as F

    nf, nl = len(FIRST), len(LAST)
    first = F.element_at(F.array(*[F.lit(x) for x in FIRST]), (idx % nf + 1).cast("int"))
    last = F.element_at(
        F.array(*[F.lit(x) for x in LAST]), ((idx / nf).cast("long") % nl + 1).cast("int")
    )
    gen = (idx / (nf * nl)).cast("long")
    return F.when(gen == 0, F.concat_ws(" ", first, last)).otherwise(
        F.concat_ws(" ", first, last, gen.cast("string"))
    )


def write_mentions(spark, tables, args) -> dict[str, Any]:
    """Generate and write chunks / entity_mentions / relation_mentions; return row counts."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from graphgen_spark.config import DEFAULT_ENTITY_TYPES
    from graphgen_spark.tables import SCHEMAS

    seed = args.seed
    types = F.array(*[F.lit(t) for t in DEFAULT_ENTITY_TYPES])
    n_types = len(DEFAULT_ENTITY_TYPES)

    def save(name: str, df) -> None:
        cols = [F.col(f.name).cast(f.dataType) for f in SCHEMAS[name].fields]
        df.select(*cols).write.format("delta").mode("overwrite").save(tables.location(name))

    chunks = (
        spark.range(args.chunks)
        .select(
            F.sha2(F.concat(F.lit("chunk\x1f"), F.col("id").cast("string")), 256).alias("chunk_id"),
            F.sha2(
                F.concat(F.lit("doc\x1f"), (F.col("id") / PER_DOC).cast("long").cast("string")), 256
            ).alias("doc_id"),
            (F.col("id") % PER_DOC).alias("index"),
            ((F.col("id") % PER_DOC) * 924).alias("start_token"),
            ((F.col("id") % PER_DOC) * 924 + 1024).alias("end_token"),
            F.lit(1024).alias("n_tokens"),
            F.concat(F.lit("synthetic chunk "), F.col("id").cast("string")).alias("text"),
            F.lit("en").alias("language"),
        )
        .withColumn("content_hash", F.sha2("text", 256))
    )
    save("chunks", chunks)

    # entity mentions: slot `pos` of chunk `c` exists when pos < 4 + h(c) % 9
    ln_k = math.log(args.keys)
    slots = spark.range(args.chunks * MAX_PER_CHUNK).select(
        (F.col("id") / MAX_PER_CHUNK).cast("long").alias("c"),
        (F.col("id") % MAX_PER_CHUNK).alias("pos"),
        F.col("id").alias("m"),
    )
    per_chunk = 4 + F.pmod(F.xxhash64("c", F.lit(seed)), F.lit(9))
    ents = (
        slots.filter(F.col("pos") < per_chunk)
        .withColumn("idx", (F.exp(_unit("m", seed + 1) * ln_k) - 1).cast("long"))
        .withColumn("display", _name(F.col("idx")))
        .withColumn("key", F.lower("display"))
        .withColumn(
            "type",
            F.when(
                _unit("m", seed + 2) < 0.1,
                F.element_at(
                    types,
                    (F.pmod(F.xxhash64("m", F.lit(seed + 3)), F.lit(n_types)) + 1).cast("int"),
                ),
            ).otherwise(
                F.element_at(
                    types,
                    (F.pmod(F.xxhash64("idx", F.lit(seed + 4)), F.lit(n_types)) + 1).cast("int"),
                )
            ),
        )
        .withColumn(
            "description",
            F.concat(
                F.col("display"),
                F.lit(" is named in this passage ("),
                F.element_at(
                    F.array(F.lit("as an author"), F.lit("as a speaker"), F.lit("in a list")),
                    (F.col("m") % 3 + 1).cast("int"),
                ),
                F.lit(")."),
            ),
        )
        .withColumn(
            "chunk_id", F.sha2(F.concat(F.lit("chunk\x1f"), F.col("c").cast("string")), 256)
        )
        .withColumn(
            "content_hash",
            F.sha2(F.concat(F.lit("synthetic chunk "), F.col("c").cast("string")), 256),
        )
    )
    # one mention per (chunk, key): the first slot; staged once so both tables agree
    first_slot = Window.partitionBy("chunk_id", "key").orderBy("m")
    staged = f"{tables.layout.root}/_bench_staging/entity_mentions"
    (
        ents.withColumn("_r", F.row_number().over(first_slot))
        .filter("_r = 1")
        .drop("_r")
        .write.mode("overwrite")
        .parquet(staged)
    )
    ents = spark.read.parquet(staged)
    save("entity_mentions", ents)
    em = tables.read("entity_mentions")

    # relation mentions: each entity mention with the next one of its chunk
    w = Window.partitionBy("chunk_id").orderBy("m")
    pairs = (
        ents.select("chunk_id", "content_hash", "m", "key", "display")
        .withColumn("key2", F.lead("key").over(w))
        .withColumn("display2", F.lead("display").over(w))
        .filter(F.col("key2").isNotNull() & (F.col("key") != F.col("key2")))
    )
    dangling = _unit("m", seed + 5) < args.dangling
    ghost = F.concat(F.lit("Unlisted Name "), (F.col("m") % 50000).cast("string"))
    pairs = (
        pairs.withColumn("dangling", dangling)
        .withColumn("display2", F.when(F.col("dangling"), ghost).otherwise(F.col("display2")))
        .withColumn("key2", F.when(F.col("dangling"), F.lower(ghost)).otherwise(F.col("key2")))
    )
    first = F.col("key") < F.col("key2")
    rels = pairs.select(
        "chunk_id",
        "content_hash",
        F.when(first, F.col("key")).otherwise(F.col("key2")).alias("src_key"),
        F.when(first, F.col("key2")).otherwise(F.col("key")).alias("dst_key"),
        F.when(first, F.col("display")).otherwise(F.col("display2")).alias("src_display"),
        F.when(first, F.col("display2")).otherwise(F.col("display")).alias("dst_display"),
        F.concat(
            F.col("display"), F.lit(" and "), F.col("display2"), F.lit(" appear together.")
        ).alias("description"),
        "dangling",
    ).dropDuplicates(["chunk_id", "src_key", "dst_key"])
    save("relation_mentions", rels)
    rm = tables.read("relation_mentions")

    top = em.groupBy("key").count().orderBy(F.desc("count")).limit(3).collect()
    stats = em.agg(F.count("*").alias("n"), F.countDistinct("key").alias("keys")).first()
    rstats = rm.agg(
        F.count("*").alias("n"),
        F.sum(F.col("dangling").cast("int")).alias("dangling"),
        F.countDistinct("src_key", "dst_key").alias("pairs"),
    ).first()
    return {
        "chunks": tables.read("chunks").count(),
        "entity_mentions": int(stats["n"]),
        "relation_mentions": int(rstats["n"]),
        "mentions_total": int(stats["n"]) + int(rstats["n"]),
        "distinct_entity_keys": int(stats["keys"]),
        "distinct_relation_pairs": int(rstats["pairs"]),
        "dangling_relation_mentions": int(rstats["dangling"] or 0),
        "top_keys_mentions": [int(r["count"]) for r in top],
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.merge_scale", description=__doc__)
    p.add_argument("--chunks", type=int, default=80_000, help="chunks (about 15 mentions each)")
    p.add_argument("--keys", type=int, default=150_000, help="entity name space")
    p.add_argument("--dangling", type=float, default=0.02, help="share of dangling relations")
    p.add_argument("--min-mentions", type=int, default=1_000_000)
    add_run_args(p, shuffle_partitions=8, driver_memory="6g")
    p.add_argument("--seed", type=int, default=11)
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from pyspark.sql import functions as F

    from graphgen_spark.config import build_config
    from graphgen_spark.pipeline import run_pipeline
    from graphgen_spark.session import build_session, has_graphframes
    from graphgen_spark.tables import Tables

    t_all = time.monotonic()
    with work_directory(args.keep, "graphgen_bench_merge_") as work:
        cfg = build_config(
            {
                "spark": {
                    "master": args.master,
                    "shuffle_partitions": args.shuffle_partitions,
                    "conf": {**LOCAL_SPARK_CONF, "spark.driver.memory": args.driver_memory},
                },
                # no LLM is reachable, and none is needed: nothing may be summarised
                "llm": {"synthesizer": {"base_url": "http://127.0.0.1:9/v1", "model": "none"}},
                "merge": {"summary_threshold": 10**9},
            },
            env=False,
        )
        spark = build_session(cfg)
        spark.sparkContext.setLogLevel("ERROR")
        try:
            out = work / "out"
            tables = Tables(spark, out)
            t0 = time.monotonic()
            spark.sparkContext.setJobGroup("bench-generate", "bench: synthetic mentions")
            data = write_mentions(spark, tables, args)
            gen_s = time.monotonic() - t0
            log.info("mentions written in %.1f s: %s", gen_s, data)
            if data["mentions_total"] < args.min_mentions:
                raise RuntimeError(
                    f"only {data['mentions_total']} mentions (< {args.min_mentions}); raise --chunks"
                )
            # same-run yardstick: the least any merge must do (group both mention tables by
            # their graph key, collect chunk ids, write the groups)
            spark.sparkContext.setJobGroup("bench-baseline", "bench: group-by baseline")
            t0 = time.monotonic()
            base = f"{work}/baseline"
            em, rm = tables.read("entity_mentions"), tables.read("relation_mentions")
            em.groupBy("key").agg(
                F.count("*").alias("n"), F.collect_set("chunk_id").alias("chunks")
            ).write.mode("overwrite").parquet(f"{base}/entities")
            rm.groupBy("src_key", "dst_key").agg(
                F.count("*").alias("n"), F.collect_set("chunk_id").alias("chunks")
            ).write.mode("overwrite").parquet(f"{base}/relations")
            baseline_s = time.monotonic() - t0
            log.info("group-by baseline: %.1f s", baseline_s)
            meter = CpuMeter()
            meter.start()
            t0 = time.monotonic()
            run_id = run_pipeline(cfg, None, out, stages=["merge"], spark=spark)
            stage_s = time.monotonic() - t0
            cpu = meter.stop()
            spark.sparkContext.setJobGroup("bench-analysis", "bench: reading results back")

            run_row = tables.read("runs").filter(F.col("run_id") == run_id).first()
            stage = {s["stage"]: s for s in run_row["stage_stats"]}["merge"]
            counts = dict(stage["counts"])
            ents = tables.read("entities")
            e = ents.agg(
                F.count("*").alias("n"),
                F.sum(F.col("is_placeholder").cast("int")).alias("placeholders"),
                F.max("n_mentions").alias("max_mentions"),
                F.sum(F.col("summarised").cast("int")).alias("summarised"),
            ).first()
            n_rel = tables.read("relations").count()
            gs = tables.read("graph_stats").filter(F.col("run_id") == run_id).first().asDict()
            gs.pop("degree_histogram", None)
            gs = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in gs.items()}

            jobs = spark_jobs(spark, "stage-merge")
            by_site: Counter[str] = Counter()
            n_site: Counter[str] = Counter()
            for j in jobs:
                by_site[callsite(j)] += j["end"] - j["start"]
                n_site[callsite(j)] += 1
            mentions = data["mentions_total"]
            result = {
                "benchmark": NAME,
                "headline": {
                    "mentions_in": mentions,
                    "stage_s": round(stage_s, 1),
                    "mentions_per_s": round(mentions / stage_s, 0),
                    "entities_out": int(e["n"]),
                    "relations_out": n_rel,
                    "rows_out_per_s": round((int(e["n"]) + n_rel) / stage_s, 0),
                    "llm_requests": counts.get("llm_sent", 0),
                    "graph_engine": gs.get("engine"),
                    "baseline_groupby_s": round(baseline_s, 1),
                    "stage_over_baseline": round(stage_s / baseline_s, 2),
                },
                "rows_in": data,
                "rows_out": {
                    "entities": int(e["n"]),
                    "placeholders": int(e["placeholders"] or 0),
                    "relations": n_rel,
                    "max_mentions_per_entity": int(e["max_mentions"] or 0),
                    "summarised": int(e["summarised"] or 0),
                    "stage_counts": counts,
                },
                "graph_stats": gs,
                "time": {
                    "generate_and_write_s": round(gen_s, 1),
                    "merge_stage_s": round(stage_s, 1),
                    "spark_jobs": len(jobs),
                    "spark_jobs_busy_s": round(
                        union_seconds([(j["start"], j["end"]) for j in jobs]), 1
                    ),
                    "top_spark_call_sites": [
                        {"site": k, "jobs": n_site[k], "seconds": round(v, 1)}
                        for k, v in by_site.most_common(20)
                    ],
                },
                "cpu_during_merge": cpu,
                "machine": {
                    **machine_facts(spark),
                    "graphframes_on_classpath": has_graphframes(spark),
                },
                "config": {
                    "cli": vars(args),
                    "pipeline": cfg.model_dump(mode="json", include={"spark", "merge"}),
                },
            }
        finally:
            spark.stop()
    result["bench_total_s"] = round(time.monotonic() - t_all, 1)
    return result


def summary_lines(res: dict[str, Any]) -> list[str]:
    h = res["headline"]
    lines = [
        f"merge_scale: {h['mentions_in']} mentions -> {h['entities_out']} entities + "
        f"{h['relations_out']} relations in {h['stage_s']} s "
        f"({h['mentions_per_s']:.0f} mentions/s; graph engine {h['graph_engine']}; "
        f"LLM requests {h['llm_requests']})",
    ]
    if "stage_over_baseline" in h:
        lines.append(
            f"  = {h['stage_over_baseline']} x the same run's group-by baseline "
            f"({h['baseline_groupby_s']} s to group and write the mentions by key)"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run_benchmark(NAME, args, run, summary_lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
