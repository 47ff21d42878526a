"""The graph queries of ``graphgen_spark/graph/engines.py``: GraphFrames 0.11 against plain
DataFrame joins, side by side in the same run.

For each size (``--sizes``, default 10k, 100k and 1M relations) one seeded synthetic
power-law graph is generated with :func:`bench.partition_scale.generate` (``--shape``,
default ``many``: a union of preferential-attachment components with P(s) ∝ s^-2 sizes plus
5 % isolated entities, as an extracted knowledge graph looks; ``giant``: one component) and
written as parquet (not timed):

* ``v(id)``: every entity; ``e(src, dst, edge_id)``: every relation (src < dst);
* the hub-capped graph for ``two_hop_paths``: the relations whose endpoints both have degree
  <= ``--hub-cap`` (50) in the whole graph, over the entities of degree <= 50 (the full 2-hop
  path set of a power-law graph explodes at its hubs);
* ``starts(seed_id, id)``: ``--seeds`` (1000) relations, the ones with the smallest edge_id
  (content hashes, so a deterministic pseudo-random pick), each with its two endpoints and
  ``seed_id`` = its edge_id.

Then each query runs once per engine, each (query, engine) in its own child process with a
fresh ``local[2]`` JVM (``graphgen_spark.session.build_session``, the GraphFrames jar from
``.jars``), so no run inherits another's heap, caches or JIT state:

* warm-up (not timed): the same query with the same engine on a 300-relation graph of the
  same shape;
* timed: the query called on DataFrames over the parquet inputs, and its result written to
  parquet (full evaluation, the same for both engines). Both engines get the same ``keep``:
  :meth:`graphgen_spark.stages.base.Scratch.materialise` (write parquet, read it back) into the
  child's work directory; GraphFrames checkpoints into the same directory;
* peak memory: the highest sum of RSS over the child's JVM and its Python workers during the
  timed span (:class:`bench.partition_scale.RssSampler`, every ``--sample-interval`` s), and
  the JVM's RSS when the span began; CPU used by other processes meanwhile
  (:class:`bench.CpuMeter`).

Queries and inputs: ``components``, ``degrees``, ``triplets`` and ``label_propagation``
(``--lp-iter`` 5 rounds) on the whole graph; ``two_hop_paths`` on the hub-capped graph;
``neighbourhood`` of the 1000 seeds, ``--hops`` 2, on the whole graph.

Extra formulations of the neighbourhood (GraphFrames only, each in its own child with a time
limit of ``--op-timeout`` s, default 600, for the timed span: a timer thread cancels its
Spark jobs with ``cancelAllJobs`` and the parent stops the child if that does not end it):

* ``bfs``: ``GraphFrame.bfs(fromExpr="id = '<x>'", toExpr="id != '<x>'", maxPathLength=2)``
  from ONE start vertex (the first seed's src) over the symmetrised relations. BFS stops at
  the first level with a match, so this returns the 1-hop paths only; checked against the
  vertex's direct neighbours. ``per_start_vertex_x_starts_s`` multiplies its time by the
  number of start vertices (an extrapolation, not a measurement);
* ``aggregate_neighbors``: ``GraphFrame.aggregate_neighbors`` from the seeds' start vertices,
  ``max_hops`` 2, over the symmetrised relations, with one accumulator ``path`` (the walk so
  far; ``path[0]`` is the start vertex, i.e. the seed accumulator) and the target condition
  "the walk has reached ``max_hops``" (a state that meets its target stops, so the target is
  the last hop and the hop-1 vertices are read from the paths). The walks are then deduplicated
  to ``(seed_id, id, min hop)``; compared with the DataFrame neighbourhood's rows.

Check (not timed, one child per size): for each query, both engines' result rows as multisets
(``exceptAll`` both ways and the row counts; components and label propagation exact
``(id, label)`` rows: the module promises identical labels; triplets their ``a``, ``e``, ``b``
structs). Unequal results fail the benchmark.

``ratio`` = GraphFrames seconds / DataFrame seconds of the same run (< 1: GraphFrames faster).

``python -m bench.graph_engines [--sizes 10000,100000,1000000] [--shape many] [--seed N]
[--op-timeout 600] [--no-write] [--keep]``; writes ``bench/results/graph_engines.json``. A line
per (size, query, engine) goes to stdout as it completes; progress to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import (
    CpuMeter,
    add_child_args,
    add_run_args,
    install_sigterm_exit,
    last_line,
    local_only_env,
    machine_facts,
    run_args,
    run_benchmark,
    run_child,
    spark_jobs,
    work_directory,
)
from bench.partition_scale import SHAPES, RssSampler, generate, stage_config

NAME = "graph_engines"
log = logging.getLogger("bench.graph_engines")

# the queries of graphgen_spark.graph.engines.OPS this bench knows how to feed (not imported
# here so that the summary does not need pyspark; run() records any it does not know)
OPS = (
    "components", "degrees", "triplets", "two_hop_paths", "neighbourhood", "label_propagation",
)  # fmt: skip
DATAFRAME, GRAPHFRAMES = "dataframe", "graphframes"
ENGINES = (DATAFRAME, GRAPHFRAMES)
EXTRAS = ("bfs", "aggregate_neighbors")
INPUTS = {
    "components": "whole graph",
    "degrees": "whole graph",
    "triplets": "whole graph",
    "two_hop_paths": "hub-capped graph",
    "neighbourhood": "whole graph, seeds' start vertices",
    "label_propagation": "whole graph",
    "bfs": "whole graph, one start vertex",
    "aggregate_neighbors": "whole graph, seeds' start vertices",
}
WARMUP_EDGES = 300
WARMUP_SEEDS = 20
ROW_GROUP = 65_536  # so a scan of the inputs splits over both task slots
JOB_GROUP = "bench-graph-op"
STARTUP_ALLOWANCE_S = 600.0  # session start, warm-up and input listing before the timed span


# -- the graphs (not timed) -------------------------------------------------------------------
def prepare_graph(
    shape: str, size: int, seed: int, share: float, folder: Path, n_seeds: int, hub_cap: int
) -> dict[str, Any]:
    """Write ``vertices``, ``edges``, ``vertices_capped``, ``edges_capped`` and ``starts``
    parquet files and ``graph.json`` (the figures, the bfs start vertex) into ``folder``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    g = generate(shape, size, seed, share)
    ids, src, dst, eid = g["entity_id"], g["src_id"], g["dst_id"], g["edge_id"]
    deg: Counter[str] = Counter(src)
    deg.update(dst)
    folder.mkdir(parents=True, exist_ok=True)

    def write(name: str, cols: dict[str, list[str]]) -> None:
        table = pa.table({k: pa.array(v, pa.string()) for k, v in cols.items()})
        pq.write_table(table, folder / f"{name}.parquet", row_group_size=ROW_GROUP)

    write("vertices", {"id": ids})
    write("edges", {"src": src, "dst": dst, "edge_id": eid})
    kept = [i for i in range(len(eid)) if deg[src[i]] <= hub_cap and deg[dst[i]] <= hub_cap]
    write(
        "edges_capped",
        {
            "src": [src[i] for i in kept],
            "dst": [dst[i] for i in kept],
            "edge_id": [eid[i] for i in kept],
        },
    )
    capped_v = [x for x in ids if deg.get(x, 0) <= hub_cap]
    write("vertices_capped", {"id": capped_v})
    seeds = sorted(range(len(eid)), key=eid.__getitem__)[:n_seeds]
    write(
        "starts",
        {
            "seed_id": [eid[i] for i in seeds for _ in (0, 1)],
            "id": [x for i in seeds for x in (src[i], dst[i])],
        },
    )
    # the 2-hop path count of the capped graph: sum over middle vertices of d (d - 1)
    cdeg: Counter[str] = Counter(src[i] for i in kept)
    cdeg.update(dst[i] for i in kept)
    bfs_vertex = src[seeds[0]]
    figures = {
        **g["figures"],
        "hub_cap": hub_cap,
        "hub_vertices": len(ids) - len(capped_v),
        "capped_vertices": len(capped_v),
        "capped_edges": len(kept),
        "capped_edges_share": round(len(kept) / max(1, len(eid)), 4),
        "capped_two_hop_paths_expected": sum(d * (d - 1) for d in cdeg.values()),
        "seeds": len(seeds),
        "start_vertices": len({x for i in seeds for x in (src[i], dst[i])}),
        "start_vertices_max_degree": max(
            (deg[x] for i in seeds for x in (src[i], dst[i])), default=0
        ),
        "bfs_vertex": bfs_vertex,
        "bfs_vertex_degree": deg[bfs_vertex],
    }
    (folder / "graph.json").write_text(json.dumps(figures) + "\n")
    return figures


# -- child: one query on one engine ----------------------------------------------------------
def load_inputs(spark, folder: Path) -> dict[str, Any]:
    def read(name: str):
        return spark.read.parquet(str(folder / f"{name}.parquet"))

    return {
        "v": read("vertices"),
        "e": read("edges"),
        "v_capped": read("vertices_capped"),
        "e_capped": read("edges_capped"),
        "starts": read("starts"),
        "meta": json.loads((folder / "graph.json").read_text()),
    }


def bfs_query(inp: dict[str, Any], hops: int):
    """GraphFrames' BFS from one vertex to any other over the symmetrised relations."""
    from graphframes import GraphFrame

    from graphgen_spark.graph.engines import symmetrised

    x = inp["meta"]["bfs_vertex"]
    g = GraphFrame(inp["v"].select("id"), symmetrised(inp["e"], "edge_id"))
    return g.bfs(fromExpr=f"id = '{x}'", toExpr=f"id != '{x}'", maxPathLength=hops)


def aggregate_neighbors_query(inp: dict[str, Any], hops: int):
    """``(seed_id, id, hop)`` from GraphFrames' AggregateNeighbors: every walk of ``hops``
    steps from the seeds' start vertices, deduplicated to the smallest hop per vertex."""
    from graphframes import GraphFrame
    from graphframes.graphframe import AggregateNeighbors as AN
    from pyspark.sql import functions as F

    from graphgen_spark.graph.engines import symmetrised

    starts = inp["starts"]
    start_ids = starts.select("id").distinct().withColumn("is_start", F.lit(True))
    verts = (
        inp["v"]
        .select("id")
        .join(start_ids, "id", "left")
        .select("id", F.coalesce("is_start", F.lit(False)).alias("is_start"))
    )
    g = GraphFrame(verts, symmetrised(inp["e"].select("src", "dst")))
    walks = g.aggregate_neighbors(
        starting_vertices=F.col("is_start"),
        max_hops=hops,
        accumulator_names=["path"],
        accumulator_inits=[F.array(F.col("id"))],
        accumulator_updates=[F.concat(F.col("path"), F.array(AN.dst_attr("id")))],
        # evaluated on the state before the step: a walk of hops - 1 steps takes its last one
        target_condition=F.size(F.col("path")) == hops,
    )
    reached = walks.select(
        F.col("path")[0].alias("start"), F.posexplode("path").alias("hop", "id")
    ).distinct()
    by_seed = starts.select("seed_id", F.col("id").alias("start")).join(reached, "start")
    out = by_seed.groupBy("seed_id", "id").agg(F.min("hop").cast("int").alias("hop"))
    return out, walks


def query(op: str, engine: Any, inp: dict[str, Any], args: argparse.Namespace):
    """The DataFrame of one query (lazy where the formulation allows) and what to unpersist."""
    v, e = inp["v"], inp["e"]
    if op == "components":
        return engine.components(v, e), None
    if op == "degrees":
        return engine.degrees(v, e), None
    if op == "triplets":
        return engine.triplets(v, e), None
    if op == "two_hop_paths":
        return engine.two_hop_paths(inp["v_capped"], inp["e_capped"]), None
    if op == "neighbourhood":
        return engine.neighbourhood(v, e, inp["starts"], args.hops), None
    if op == "label_propagation":
        return engine.label_propagation(v, e, args.lp_iter), None
    if op == "bfs":
        return bfs_query(inp, args.hops), None
    if op == "aggregate_neighbors":
        return aggregate_neighbors_query(inp, args.hops)
    raise ValueError(f"unknown query {op!r}")


class Watchdog:
    """After ``timeout_s`` cancels the session's Spark jobs, every 0.5 s until stopped (a cancel
    between two jobs of a loop cancels nothing)."""

    def __init__(self, spark, timeout_s: float) -> None:
        self.spark = spark
        self.timeout_s = timeout_s
        self.fired = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        if self._done.wait(self.timeout_s):
            return
        self.fired = True
        while not self._done.is_set():
            with contextlib.suppress(Exception):  # the session may be going down
                self.spark.sparkContext.cancelAllJobs()
            self._done.wait(0.5)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=10)


def _short_error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    head = [ln for ln in text if ln.strip()][:3]
    return f"{type(exc).__name__}: {' | '.join(head)}"[:600]


def child_op(args: argparse.Namespace, spec: dict[str, Any], out: Path) -> None:
    from graphgen_spark.graph.engines import DataFrameGraph, GraphFramesGraph
    from graphgen_spark.session import build_session, has_graphframes
    from graphgen_spark.stages.base import Scratch, StageContext
    from graphgen_spark.tables import Tables

    op, engine_name = spec["op"], spec["engine"]
    work = Path(spec["work"])
    work.mkdir(parents=True, exist_ok=True)
    cfg = stage_config(args)
    t0 = time.monotonic()
    spark = build_session(cfg)
    spark.sparkContext.setLogLevel("ERROR")
    res: dict[str, Any] = {
        "op": op,
        "engine": engine_name,
        "session_start_s": round(time.monotonic() - t0, 1),
        "java": machine_facts(spark).get("java"),
    }
    try:
        if engine_name == GRAPHFRAMES and not has_graphframes(spark):
            res["error"] = "GraphFrames is not on the classpath (run `make setup`)"
            return
        checkpoints = str(work / "checkpoints")
        spark.sparkContext.setCheckpointDir(checkpoints)
        scratch = Scratch(
            StageContext(spark, cfg, Tables(spark, work), NAME), f"{op}-{engine_name}"
        )
        keep = scratch.materialise
        engine: Any = None
        if engine_name == DATAFRAME:
            engine = DataFrameGraph(keep)
        elif op not in EXTRAS:
            engine = GraphFramesGraph(spark, checkpoints, keep)

        spark.sparkContext.setJobGroup("bench-warmup", "bench: warm-up")
        t0 = time.monotonic()
        warm, held = query(op, engine, load_inputs(spark, Path(spec["warmup"])), args)
        warm.write.mode("overwrite").parquet(str(work / "warmup_result"))
        if held is not None:
            held.unpersist()
        res["warmup_s"] = round(time.monotonic() - t0, 1)
        steps_before = scratch.step

        inp = load_inputs(spark, Path(spec["graph"]))
        result_path = spec["result"]
        sampler = RssSampler(args.sample_interval)
        meter = CpuMeter()
        watchdog = Watchdog(spark, spec["timeout_s"])
        error: BaseException | None = None
        sampler.start()
        meter.start()
        watchdog.start()
        wall0 = time.time()
        spark.sparkContext.setJobGroup(JOB_GROUP, f"bench: {op} / {engine_name}")
        t0 = time.monotonic()
        try:
            df, held = query(op, engine, inp, args)
            df.write.mode("overwrite").parquet(result_path)
            if held is not None:
                held.unpersist()
        except Exception as exc:  # noqa: BLE001 - recorded; a timeout arrives as one too
            error = exc
        finally:
            seconds = time.monotonic() - t0
            watchdog.stop()
            cpu = meter.stop()
            rss = sampler.stop(seconds)
        spark.sparkContext.setJobGroup("bench-analysis", "bench: reading the result back")
        jobs = spark_jobs(spark, JOB_GROUP, since=wall0)
        res.update(
            {
                "seconds": round(seconds, 3),
                "timeout_s": spec["timeout_s"],
                "timed_out": watchdog.fired,
                "within_timeout": error is None and seconds <= spec["timeout_s"],
                "peak_mb": rss["peak_jvm_plus_workers_rss_mb"],
                "jvm_rss_at_start_mb": rss["rss_at_stage_start_mb"].get("spark_jvm"),
                "materialisations": scratch.step - steps_before,
                "spark_jobs": len(jobs),
                "other_processes_cores": cpu["other_processes_cores"],
                "rss": rss,
                "cpu": cpu,
            }
        )
        if error is not None:
            res["error"] = (
                f"cancelled after the {spec['timeout_s']:.0f} s time limit"
                if watchdog.fired
                else _short_error(error)
            )
            res["exception"] = _short_error(error)
        else:
            res["rows"] = spark.read.parquet(result_path).count()
    finally:
        out.write_text(json.dumps(res, default=str) + "\n")
        spark.stop()


# -- child: the checks (not timed) ------------------------------------------------------------
def _complete(path: str | None) -> bool:
    return bool(path) and (Path(path) / "_SUCCESS").exists()


def child_check(args: argparse.Namespace, spec: dict[str, Any], out: Path) -> None:
    """Multiset equality of result pairs, and the bfs targets against the direct neighbours."""
    from pyspark.sql import functions as F

    from graphgen_spark.session import build_session

    spark = build_session(stage_config(args))
    spark.sparkContext.setLogLevel("ERROR")
    res: dict[str, Any] = {}
    try:
        for pair in spec["pairs"]:
            name, left, right = pair["name"], pair["left"], pair["right"]
            if not (_complete(left) and _complete(right)):
                missing = [s for s, p in (("left", left), ("right", right)) if not _complete(p)]
                res[name] = {"equal": None, "reason": f"no complete result: {', '.join(missing)}"}
                continue
            t0 = time.monotonic()
            a = spark.read.parquet(left)
            b = spark.read.parquet(right).select(*a.columns)
            only_l, only_r = a.exceptAll(b), b.exceptAll(a)
            n_l, n_r = only_l.count(), only_r.count()
            rows_l, rows_r = a.count(), b.count()
            res[name] = {
                "equal": n_l == 0 and n_r == 0 and rows_l == rows_r,
                "rows_left": rows_l,
                "rows_right": rows_r,
                "only_left": n_l,
                "only_right": n_r,
                "examples_left": [r.asDict() for r in only_l.limit(3).collect()] if n_l else [],
                "examples_right": [r.asDict() for r in only_r.limit(3).collect()] if n_r else [],
                "check_s": round(time.monotonic() - t0, 1),
            }
        bfs = spec.get("bfs")
        if bfs:
            if not _complete(bfs["result"]):
                res["bfs"] = {"equal": None, "reason": "no complete bfs result"}
            else:
                x = bfs["vertex"]
                e = spark.read.parquet(bfs["edges"])
                nbrs = (
                    e.filter(F.col("src") == x)
                    .select(F.col("dst").alias("id"))
                    .union(e.filter(F.col("dst") == x).select(F.col("src").alias("id")))
                    .distinct()
                )
                paths = spark.read.parquet(bfs["result"])
                got = paths.select(F.col("to.id").alias("id")).distinct()
                edge_cols = [c for c in paths.columns if c.startswith("e")]
                res["bfs"] = {
                    "paths": paths.count(),
                    "distinct_targets": got.count(),
                    "direct_neighbours": nbrs.count(),
                    "path_length": len(edge_cols),
                    "equal": got.exceptAll(nbrs).count() == 0 and nbrs.exceptAll(got).count() == 0,
                    "compared_with": "the start vertex's direct neighbours (BFS stops at the "
                    "first level with a match)",
                }
    finally:
        out.write_text(json.dumps(res, default=str) + "\n")
        spark.stop()


# -- parent -----------------------------------------------------------------------------------
def _child(
    args: argparse.Namespace,
    kind: str,
    spec: dict[str, Any],
    out: Path,
    label: str,
    timeout_s: float | None,
) -> dict[str, Any]:
    """Run a child; its JSON, or an ``error`` from its log's tail if it wrote none."""
    cmd = [sys.executable, "-m", "bench.graph_engines", "--child", kind]
    cmd += ["--child-spec", json.dumps(spec), "--child-out", str(out), *_child_args(args)]
    log_path = out.with_suffix(".log")
    out.unlink(missing_ok=True)
    run = run_child(cmd, log_path, label, args.progress_interval, timeout_s, log=log)
    res: dict[str, Any] = {}
    if out.exists():
        try:
            res = json.loads(out.read_text())
        except ValueError:
            res = {}
    if run.timed_out:
        res["timed_out"] = True
        res["within_timeout"] = False
        res.setdefault("error", f"child stopped by the parent after {timeout_s:.0f} s")
    elif run.returncode != 0 or not res:
        tail = " | ".join(log_path.read_text().splitlines()[-6:]) if log_path.exists() else ""
        res.setdefault("error", f"child exit {run.returncode}: {tail[-800:]}")
    res["child"] = {"wall_s": round(run.wall_s, 1), "exit": run.returncode}
    if run.returncode != 0 or res.get("error"):
        log.warning("%s: %s (log %s: %s)", label, res.get("error"), log_path, last_line(log_path))
    return res


def _child_args(args: argparse.Namespace) -> list[str]:
    return [*run_args(args), "--hops", str(args.hops), "--lp-iter", str(args.lp_iter)]


def _spec(work: Path, size: int, op: str, engine: str, timeout_s: float) -> dict[str, Any]:
    """What a child runs: the query, the engine, the graph, where it works and writes."""
    rdir = work / f"{size}.{op}.{engine}"
    return {
        "op": op,
        "engine": engine,
        "graph": str(work / f"graph-{size}"),
        "warmup": str(work / "warmup"),
        "work": str(rdir),
        "result": str(rdir / "result"),
        "timeout_s": timeout_s,
    }


def _run_op(
    args: argparse.Namespace,
    work: Path,
    size: int,
    op: str,
    engine: str,
    timeout_s: float,
    specs: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """One (query, engine) in its own child with a time limit on its timed span; its spec is
    kept in ``specs`` for the checks."""
    key = f"{op}.{engine}"
    specs[key] = _spec(work, size, op, engine, timeout_s)
    log.info("%s: %s / %s (limit %.0f s)", size, op, engine, timeout_s)
    out = work / f"{size}.{key}.json"
    return _child(args, "op", specs[key], out, f"{size} {key}", timeout_s + STARTUP_ALLOWANCE_S)


def _fmt_s(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _op_line(size: int, op: str, who: str, r: dict[str, Any]) -> str:
    head = f"{size:>10,} {op:<19} {who:<19}"
    if r.get("error") and r.get("seconds") is None:
        return f"{head} FAILED: {r['error']}"
    line = (
        f"{head} {_fmt_s(r.get('seconds')):>9} s  peak {r.get('peak_mb', 0):>6,} MB"
        f" (JVM at start {r.get('jvm_rss_at_start_mb') or 0:,})"
    )
    if r.get("error"):
        return f"{line}  NOT FINISHED: {r['error']}"
    return (
        f"{line}  rows {r.get('rows', 0):>11,}  jobs {r.get('spark_jobs', 0):>4}  other load "
        f"{r.get('other_processes_cores', 0):.2f} cores"
    )


def _ratio(gf: dict[str, Any], df: dict[str, Any]) -> tuple[float | None, str | None]:
    ok_gf = gf.get("seconds") is not None and not gf.get("error")
    ok_df = df.get("seconds") is not None and not df.get("error")
    if ok_gf and ok_df:
        ratio = round(gf["seconds"] / max(df["seconds"], 1e-9), 3)
        return ratio, GRAPHFRAMES if gf["seconds"] < df["seconds"] else DATAFRAME
    if ok_gf:
        return None, GRAPHFRAMES
    if ok_df:
        return None, DATAFRAME
    return None, None


def _equality(eq: dict[str, Any]) -> dict[str, Any]:
    """A row's ``equal`` from the check, with the reason where it could not be checked."""
    if eq.get("equal") is None:
        return {"equal": None, "equal_reason": eq.get("reason", "not checked")}
    return {"equal": eq["equal"]}


def _query_row(
    size: int, op: str, gf: dict[str, Any], df: dict[str, Any], eq: dict[str, Any], figures: dict
) -> dict[str, Any]:
    """One line of the headline table: both engines' figures for ``op`` side by side."""
    ratio, winner = _ratio(gf, df)
    row = {
        "relations": size,
        "op": op,
        "input": INPUTS[op],
        "graphframes_s": gf.get("seconds"),
        "dataframe_s": df.get("seconds"),
        "ratio": ratio,
        "winner": winner,
        "graphframes_peak_mb": gf.get("peak_mb"),
        "dataframe_peak_mb": df.get("peak_mb"),
        "graphframes_jvm_at_start_mb": gf.get("jvm_rss_at_start_mb"),
        "dataframe_jvm_at_start_mb": df.get("jvm_rss_at_start_mb"),
        "rows": df.get("rows") if df.get("rows") is not None else gf.get("rows"),
        "rows_graphframes": gf.get("rows"),
        "rows_dataframe": df.get("rows"),
        **_equality(eq),
        "graphframes_error": gf.get("error"),
        "dataframe_error": df.get("error"),
        "other_load_cores": [gf.get("other_processes_cores"), df.get("other_processes_cores")],
    }
    if op == "two_hop_paths":
        row["capped_edges"] = figures["capped_edges"]
        row["paths_expected"] = figures["capped_two_hop_paths_expected"]
    return row


def _extra_row(
    size: int,
    extra: str,
    r: dict[str, Any],
    eq: dict[str, Any],
    df_nb: dict[str, Any],
    figures: dict,
    time_limit_s: float,
) -> dict[str, Any]:
    """One line of the extras table: a GraphFrames-only neighbourhood formulation."""
    row = {
        "relations": size,
        "formulation": extra,
        "input": INPUTS[extra],
        "seconds": r.get("seconds"),
        "time_limit_s": time_limit_s,
        "within_time_limit": bool(r.get("within_timeout")),
        "timed_out": bool(r.get("timed_out")),
        "error": r.get("error"),
        "peak_mb": r.get("peak_mb"),
        "rows": r.get("rows"),
        **_equality(eq),
        "dataframe_neighbourhood_s": df_nb.get("seconds"),
    }
    finished = r.get("seconds") is not None and not r.get("error")
    if extra != "bfs":
        row["compared_with"] = "the DataFrame neighbourhood rows"
        if finished and df_nb.get("seconds"):
            row["ratio_vs_dataframe_neighbourhood"] = round(r["seconds"] / df_nb["seconds"], 3)
        return row
    row |= {
        "start_vertices_measured": 1,
        "bfs_vertex_degree": figures["bfs_vertex_degree"],
        "compared_with": "the start vertex's direct neighbours",
        "paths": eq.get("paths"),
        "path_length_found": eq.get("path_length"),
    }
    if finished:
        row["per_start_vertex_x_starts_s"] = round(r["seconds"] * figures["start_vertices"], 1)
        row["extrapolation"] = (
            f"one vertex's BFS time x {figures['start_vertices']:,} start vertices (an "
            "extrapolation, not a measurement)"
        )
    row["note"] = (
        "BFS returns the shortest paths to the nearest matching vertices and stops at the first "
        "level with a match, so with toExpr 'any other vertex' it yields the 1-hop paths only: "
        "it does not answer the 2-hop neighbourhood query"
    )
    return row


def _check_spec(
    args: argparse.Namespace, specs: dict[str, dict[str, Any]], gdir: Path, figures: dict
) -> dict[str, Any]:
    """What the check child compares: both engines' results per query, aggregate_neighbors
    against the DataFrame neighbourhood, bfs against the start vertex's neighbours."""

    def result(op: str, engine: str) -> str | None:
        return specs.get(f"{op}.{engine}", {}).get("result")

    pairs = [
        {"name": op, "left": result(op, DATAFRAME), "right": result(op, GRAPHFRAMES)}
        for op in args.op_list
    ]
    if "aggregate_neighbors" in args.extra_list:
        pairs.append(
            {
                "name": "aggregate_neighbors",
                "left": result("neighbourhood", DATAFRAME),
                "right": result("aggregate_neighbors", GRAPHFRAMES),
            }
        )
    spec: dict[str, Any] = {"pairs": pairs}
    if "bfs" in args.extra_list:
        spec["bfs"] = {
            "result": result("bfs", GRAPHFRAMES),
            "edges": str(gdir / "edges.parquet"),
            "vertex": figures["bfs_vertex"],
        }
    return spec


def _prepare_size(args: argparse.Namespace, work: Path, size: int) -> tuple[dict, float]:
    """The graph of ``size`` relations written under ``work`` (not timed): figures, seconds."""
    t0 = time.monotonic()
    figures = prepare_graph(
        args.shape,
        size,
        args.seed,
        args.max_component_share,
        work / f"graph-{size}",
        args.seeds,
        args.hub_cap,
    )
    gen_s = round(time.monotonic() - t0, 1)
    print(
        f"{size:>10,} graph: {figures['edges']:,} relations, {figures['nodes']:,} entities, "
        f"{figures['components']:,} components, max degree {figures['max_degree']:,}; capped "
        f"(degree <= {args.hub_cap}): {figures['capped_edges']:,} relations; "
        f"{figures['seeds']:,} seeds on {figures['start_vertices']:,} start vertices; generated "
        f"in {gen_s} s; load {[round(x, 2) for x in os.getloadavg()]}",
        flush=True,
    )
    return figures, gen_s


def _measure_size(args: argparse.Namespace, work: Path, size: int) -> dict[str, Any]:
    """Every query on both engines and the extras on one graph, then the check: the size's
    table rows, extras rows, record and failures."""
    load_start = [round(x, 2) for x in os.getloadavg()]
    figures, gen_s = _prepare_size(args, work, size)
    runs: dict[str, dict[str, Any]] = {}
    specs: dict[str, dict[str, Any]] = {}
    jobs = [(op, engine, args.main_op_timeout) for op in args.op_list for engine in ENGINES]
    jobs += [(extra, GRAPHFRAMES, args.op_timeout) for extra in args.extra_list]
    for op, engine, timeout_s in jobs:
        r = _run_op(args, work, size, op, engine, timeout_s, specs)
        runs[f"{op}.{engine}"] = r
        who = engine if op in OPS else "graphframes (extra)"
        print(_op_line(size, op, who, r), flush=True)

    log.info("%s: checking the results", size)
    spec = _check_spec(args, specs, work / f"graph-{size}", figures)
    check = _child(args, "check", spec, work / f"{size}.check.json", "check", None)
    failures = [f"{size}: check failed: {check['error']}"] if check.get("error") else []

    table = []
    for op in args.op_list:
        gf, df = runs[f"{op}.{GRAPHFRAMES}"], runs[f"{op}.{DATAFRAME}"]
        row = _query_row(size, op, gf, df, check.get(op, {}), figures)
        table.append(row)
        failures += [
            f"{size} {op} {e}: {r['error']}"
            for e, r in ((GRAPHFRAMES, gf), (DATAFRAME, df))
            if r.get("error")
        ]
        if row["equal"] is False:
            failures.append(f"{size} {op}: the engines' results differ")
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.3f}"
        print(
            f"{size:>10,} {op:<19} GF/DF = {ratio} -> {row['winner'] or '-'}; "
            f"equal: {row['equal']}",
            flush=True,
        )
    extras = []
    df_nb = runs.get(f"neighbourhood.{DATAFRAME}", {})
    for extra in args.extra_list:
        r = runs[f"{extra}.{GRAPHFRAMES}"]
        row = _extra_row(size, extra, r, check.get(extra, {}), df_nb, figures, args.op_timeout)
        extras.append(row)
        if extra == "aggregate_neighbors" and row["equal"] is False:
            failures.append(f"{size} aggregate_neighbors: differs from neighbourhood")
        print(
            f"{size:>10,} {extra:<19} {_fmt_s(row['seconds'])} s, within "
            f"{args.op_timeout:.0f} s: {row['within_time_limit']}; equal: {row['equal']}",
            flush=True,
        )
    load_end = [round(x, 2) for x in os.getloadavg()]
    print(f"{size:>10,} done; load {load_start} -> {load_end}", flush=True)
    record = {
        "relations": size,
        "figures": figures,
        "generate_s": gen_s,
        "load_avg_1_5_15_start": load_start,
        "load_avg_1_5_15_end": load_end,
        "runs": runs,
        "check": check,
    }
    java = next((r["java"] for r in runs.values() if r.get("java")), None)
    return {"table": table, "extras": extras, "record": record, "failures": failures, "java": java}


def run(args: argparse.Namespace) -> dict[str, Any]:
    from importlib.metadata import version

    from graphgen_spark.graph import engines as product
    from graphgen_spark.jars import coordinates

    unknown = [op for op in product.OPS if op not in OPS]
    if unknown:
        log.warning("engines.OPS has queries this bench does not run: %s", unknown)
    missing = [op for op in OPS if op not in product.OPS]
    if missing:
        raise RuntimeError(f"engines.OPS lacks {missing}; update bench/graph_engines.py")
    t_all = time.monotonic()
    print(
        f"graph_engines: {args.master}, shape {args.shape}, sizes {args.size_list}; "
        f"queries {', '.join(args.op_list)}; extras {', '.join(args.extra_list) or '-'}",
        flush=True,
    )
    with work_directory(args.keep, "graphgen_bench_graph_engines_") as work:
        warm_dir = work / "warmup"
        prepare_graph(args.shape, WARMUP_EDGES, args.seed + 1, 1.0, warm_dir, WARMUP_SEEDS, 50)
        per_size = [_measure_size(args, work, size) for size in args.size_list]

    table = [row for m in per_size for row in m["table"]]
    largest = max(args.size_list)
    winners = {r["op"]: r["winner"] for r in table if r["relations"] == largest}
    # what `graph.engine: auto` picks for each measured (size, query), beside the winner
    auto = []
    for r in table:
        pick = product.auto_choice(r["op"], r["relations"])
        auto.append(
            {
                "relations": r["relations"],
                "op": r["op"],
                "auto_picks": pick,
                "winner": r["winner"],
                "agrees": pick == r["winner"],
            }
        )
    return {
        "benchmark": NAME,
        "headline": {
            "table": table,
            "extras": [row for m in per_size for row in m["extras"]],
            "all_equal": all(r["equal"] is True for r in table),
            "winner_at_largest_size": {"relations": largest, **winners},
            "engines_py_GRAPHFRAMES_FROM": dict(product.GRAPHFRAMES_FROM),
            "engines_py_queries_not_measured": unknown,
            "auto_choice": auto,
        },
        "sizes": [m["record"] for m in per_size],
        "failures": [f for m in per_size for f in m["failures"]],
        "machine": {
            **machine_facts(),
            "java": next((m["java"] for m in per_size if m["java"]), None),
            "spark_master": args.master,
        },
        "config": {
            "cli": {k: v for k, v in vars(args).items() if not k.startswith("child")},
            "graphframes_py": version("graphframes-py"),
            "graphframes_jar": coordinates().get("graphframes"),
            "inputs": INPUTS,
            "warmup_edges": WARMUP_EDGES,
            "timed": "the query call on DataFrames over the parquet inputs plus writing its "
            "result to parquet, in a fresh local JVM per (query, engine) after a warm-up",
            "keep": "graphgen_spark.stages.base.Scratch.materialise (parquet, read back)",
        },
        "bench_total_s": round(time.monotonic() - t_all, 1),
    }


def summary_lines(res: dict[str, Any]) -> list[str]:
    h = res["headline"]
    cfg = res.get("config", {}).get("cli", {})
    lines = [
        f"graph_engines (GraphFrames {res.get('config', {}).get('graphframes_py', '?')} vs "
        f"DataFrame joins, {res.get('machine', {}).get('spark_master', '?')}, shape "
        f"{cfg.get('shape', '?')}; ratio = GF s / DF s):"
    ]
    for r in h["table"]:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:6.3f}"
        rows = "-" if r["rows"] is None else f"{r['rows']:,}"
        lines.append(
            f"  {r['relations']:>9,} rel {r['op']:<19} GF {_fmt_s(r['graphframes_s']):>8} s / "
            f"DF {_fmt_s(r['dataframe_s']):>8} s = {ratio} x -> {r['winner'] or '-':<11} peak "
            f"{r['graphframes_peak_mb'] or 0:,} / {r['dataframe_peak_mb'] or 0:,} MB; "
            f"{rows} rows; equal {r['equal']}"
        )
    for r in h["extras"]:
        extra = (
            f" (x {r['per_start_vertex_x_starts_s']} s for all starts, extrapolated)"
            if r.get("per_start_vertex_x_starts_s") is not None
            else ""
        )
        if r.get("ratio_vs_dataframe_neighbourhood") is not None:
            extra = f" = {r['ratio_vs_dataframe_neighbourhood']} x DF neighbourhood"
        state = "" if r["within_time_limit"] else f" NOT within {r['time_limit_s']:.0f} s"
        lines.append(
            f"  {r['relations']:>9,} rel {r['formulation']:<19} GF {_fmt_s(r['seconds']):>8} s"
            f"{extra}{state}; rows {r['rows']}; equal {r['equal']}"
            + (f"; {r['error']}" if r.get("error") else "")
        )
    w = h["winner_at_largest_size"]
    lines.append(
        f"  faster at {w['relations']:,}: " + ", ".join(f"{op} {w[op]}" for op in OPS if op in w)
    )
    wrong = [a for a in h.get("auto_choice", []) if not a["agrees"]]
    lines.append(
        "  graph.engine auto picks the faster engine at every measured size"
        if not wrong
        else "  graph.engine auto picks the slower engine at: "
        + ", ".join(f"{a['relations']:,} {a['op']} ({a['auto_picks']})" for a in wrong)
    )
    for f in res.get("failures", []):
        lines.append(f"  FAILED: {f}")
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.graph_engines", description=__doc__)
    p.add_argument("--sizes", default="10000,100000,1000000", help="relations per graph")
    p.add_argument("--shape", default="many", choices=SHAPES, help="graph shape")
    p.add_argument("--seed", type=int, default=7, help="graph generator seed")
    p.add_argument(
        "--max-component-share",
        type=float,
        default=0.02,
        help="many: largest component size as a share of the relations",
    )
    p.add_argument("--seeds", type=int, default=1000, help="neighbourhood seeds (relations)")
    p.add_argument("--hops", type=int, default=2, help="neighbourhood hops")
    p.add_argument("--hub-cap", type=int, default=50, help="two_hop_paths: max endpoint degree")
    p.add_argument("--lp-iter", type=int, default=5, help="label propagation rounds")
    p.add_argument("--ops", default=",".join(OPS), help="queries to run")
    p.add_argument("--extras", default=",".join(EXTRAS), help="extra GraphFrames formulations")
    p.add_argument(
        "--op-timeout",
        type=float,
        default=600.0,
        help="time limit of an extra formulation's timed span (s)",
    )
    p.add_argument(
        "--main-op-timeout",
        type=float,
        default=3600.0,
        help="safety time limit of a query's timed span (s)",
    )
    add_run_args(p, shuffle_partitions=8, driver_memory="6g")
    add_child_args(p)
    p.add_argument("--child", choices=("op", "check"), help=argparse.SUPPRESS)
    p.add_argument("--child-spec", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.size_list = [int(x) for x in str(args.sizes).split(",") if x.strip()]
    args.op_list = [x.strip() for x in str(args.ops).split(",") if x.strip()]
    args.extra_list = [x.strip() for x in str(args.extras).split(",") if x.strip()]
    if not args.size_list or any(s < 1 for s in args.size_list):
        p.error("sizes must be >= 1")
    bad = [x for x in args.op_list if x not in OPS] + [
        x for x in args.extra_list if x not in EXTRAS
    ]
    if bad:
        p.error(f"unknown queries {bad}; allowed: {', '.join(OPS + EXTRAS)}")
    if "aggregate_neighbors" in args.extra_list and "neighbourhood" not in args.op_list:
        p.error("aggregate_neighbors is checked against neighbourhood: keep it in --ops")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        install_sigterm_exit()  # the parent's SIGTERM (time limit) still stops Spark
        local_only_env()
        spec, out = json.loads(args.child_spec), Path(args.child_out)
        if args.child == "op":
            child_op(args, spec, out)
        else:
            child_check(args, spec, out)
        return 0
    res = run_benchmark(NAME, args, run, summary_lines)
    if res["failures"]:
        print(f"FAILED: {'; '.join(res['failures'])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
