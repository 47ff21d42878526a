"""``ece/edge_seed`` partitioning: the Spark stage against the single-process reference.

For each shape and target edge count (``--sizes``, default 10k, 100k and 1M edges) a seeded
synthetic power-law graph is generated (not timed):

* ``giant``: one connected preferential-attachment graph (Barabási–Albert style; each new
  node attaches to m ∈ {1, 2, 3, 4} distinct existing nodes with probabilities
  0.45 / 0.30 / 0.15 / 0.10, chosen in proportion to degree; so a power-law degree tail and
  many leaves);
* ``many``: a union of such components whose sizes (in edges) follow a truncated power law
  P(s) ∝ s^-2 on [1, ``--max-component-share`` × edges], plus isolated entities (5 % of the
  connected ones), as a knowledge graph extracted from many documents looks.

Entity and relation ids are 64-hex content hashes as in production; description token
counts (lognormal) and trainee losses (exponential, 5 % missing) come from a seeded RNG; the
order key is the project's ``rr = ids.rr(42, id)``. The graph is stored as parquet and
written into the ``entities``, ``relations`` and ``gap_scores`` Delta tables (not timed).

Then, one after the other on the same machine, each in its own process:

* **reference**: a child Python process loads the same rows, builds
  :class:`graphgen_spark.partition.graph.Graph` and runs
  :func:`graphgen_spark.partition.reference.ece_edge_seed` with the stage's parameters.
  Timed from reading its input to the last batch (interpreter start and imports excluded);
  peak memory = the child's ``ru_maxrss`` (``os.wait4``).
* **spark**: a child process with a fresh ``local[2]`` JVM writes the Delta tables, warms
  up on a 300-edge graph (not timed) and runs
  ``graphgen_spark.stages.partition.run(StageContext(...))`` with
  ``generate.modes: [aggregated]`` (only ``ece/edge_seed``). Peak memory = the highest sum of
  RSS over the driver JVM and its Python workers, sampled from /proc every
  ``--sample-interval`` seconds during the stage.

The stage's batches (``subgraphs``: seed_id → edge_ids) must equal the reference's, or the
benchmark fails. ``crossover``: the smallest size at which the stage is faster, per shape.

``python -m bench.partition_scale [--sizes 10000,100000,1000000] [--shapes giant,many]
[--seed N] [--no-write] [--keep]``; writes ``bench/results/partition_scale.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import (
    LOCAL_SPARK_CONF,
    CpuMeter,
    _die_with_parent,
    _machine_cpu,
    add_run_args,
    callsite,
    local_only_env,
    machine_facts,
    run_benchmark,
    spark_jobs,
    union_seconds,
    work_directory,
)

NAME = "partition_scale"
log = logging.getLogger("bench.partition_scale")

RR_SEED = 42  # run.seed: rr = ids.rr(42, id)
TRAINEE = "bench-trainee"
METHOD = "ece/edge_seed"
JOB_GROUP = "stage-partition"
M_CHOICES = (1, 2, 3, 4)
M_WEIGHTS = (0.45, 0.30, 0.15, 0.10)
ISOLATED_SHARE = 0.05
LOSS_MISSING = 0.05
WARMUP_EDGES = 300
PAGE = os.sysconf("SC_PAGE_SIZE")
SHAPES = ("giant", "many")


# -- graph generation (not timed) -----------------------------------------------------------
def pa_component(n_edges: int, rng: random.Random) -> tuple[list[tuple[int, int]], int]:
    """A connected preferential-attachment graph with exactly ``n_edges`` edges.

    Returns the edges over local node indices 0..n-1 and n. Targets are drawn from the
    list of edge endpoints (so in proportion to degree), distinct per new node.
    """
    if n_edges <= 0:
        return [], 1
    edges = [(0, 1)]
    ends = [0, 1]
    n = 2
    while len(edges) < n_edges:
        v = n
        n += 1
        m = min(rng.choices(M_CHOICES, M_WEIGHTS)[0], n_edges - len(edges), v)
        chosen: set[int] = set()
        while len(chosen) < m:
            chosen.add(ends[rng.randrange(len(ends))])
        for u in sorted(chosen):
            edges.append((u, v))
            ends += (u, v)
    return edges, n


def component_sizes(total: int, max_size: int, rng: random.Random) -> list[int]:
    """Edge counts P(s) ∝ s^-2 on [1, max_size] (inverse CDF) summing to exactly ``total``."""
    sizes: list[int] = []
    left = total
    a, b = 1.0, float(max_size + 1)
    while left > 0:
        u = rng.random()
        s = int(1.0 / (1.0 / a - u * (1.0 / a - 1.0 / b)))  # Pareto(1) truncated to [a, b)
        s = max(1, min(s, max_size, left))
        sizes.append(s)
        left -= s
    return sizes


def generate(shape: str, target_edges: int, seed: int, share: float) -> dict[str, Any]:
    """Nodes, edges and attributes of one graph as column lists, plus its shape figures."""
    import numpy as np

    from graphgen_spark.ids import h

    rng = random.Random(f"{seed}/{shape}/{target_edges}")
    if shape == "giant":
        sizes = [target_edges]
    elif shape == "many":
        sizes = component_sizes(target_edges, max(1, int(target_edges * share)), rng)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    pairs: list[tuple[int, int]] = []
    comp_nodes: list[int] = []
    offset = 0
    for s in sizes:
        edges, n = pa_component(s, rng)
        pairs += [(u + offset, v + offset) for u, v in edges]
        comp_nodes.append(n)
        offset += n
    isolated = round(ISOLATED_SHARE * offset) if shape == "many" else 0
    n_nodes = offset + isolated

    tag = f"{seed}/{shape}/{target_edges}"
    ent_ids = [h("bench-entity", tag, i) for i in range(n_nodes)]
    src, dst, eids = [], [], []
    for u, v in pairs:
        a, b = ent_ids[u], ent_ids[v]
        if b < a:
            a, b = b, a
        src.append(a)
        dst.append(b)
        eids.append(h("bench-relation", a, b))

    gen = np.random.default_rng([seed, target_edges, SHAPES.index(shape)])
    n_edges = len(pairs)
    node_tokens = (8 + gen.lognormal(3.0, 0.6, n_nodes)).astype("int32")
    edge_tokens = (10 + gen.lognormal(3.2, 0.5, n_edges)).astype("int32")
    node_loss = gen.exponential(1.0, n_nodes)
    edge_loss = gen.exponential(1.0, n_edges)
    node_known = gen.random(n_nodes) >= LOSS_MISSING
    edge_known = gen.random(n_edges) >= LOSS_MISSING

    flat = np.fromiter((x for p in pairs for x in p), dtype=np.int64, count=2 * n_edges)
    degree = np.bincount(flat, minlength=n_nodes) if n_edges else np.zeros(n_nodes, int)
    big = int(np.argmax(sizes))
    return {
        "entity_id": ent_ids,
        "node_tokens": node_tokens,
        "node_loss": node_loss,
        "node_known": node_known,
        "edge_id": eids,
        "src_id": src,
        "dst_id": dst,
        "edge_tokens": edge_tokens,
        "edge_loss": edge_loss,
        "edge_known": edge_known,
        "figures": {
            "edges": n_edges,
            "nodes": n_nodes,
            "isolated_nodes": isolated,
            "components": len(sizes) + isolated,
            "components_with_edges": len(sizes),
            "largest_component_edges": int(sizes[big]),
            "largest_component_nodes": int(comp_nodes[big]),
            "components_of_1_edge": sum(1 for s in sizes if s == 1),
            "max_degree": int(degree.max()) if n_nodes else 0,
            "mean_degree": round(float(degree.mean()), 3) if n_nodes else 0.0,
            "leaf_nodes": int((degree == 1).sum()),
        },
    }


def write_parquet(g: dict[str, Any], folder: Path) -> None:
    """``entities`` / ``relations`` / ``gap_scores`` rows (the columns the stage reads)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    n = len(g["entity_id"])
    pq.write_table(
        pa.table(
            {
                "entity_id": pa.array(g["entity_id"], pa.string()),
                "name": pa.array([f"Entity {i}" for i in range(n)], pa.string()),
                "type": pa.array(["concept"] * n, pa.string()),
                "n_tokens": pa.array(g["node_tokens"], pa.int32()),
                "is_placeholder": pa.array([False] * n, pa.bool_()),
            }
        ),
        folder / "entities.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "edge_id": pa.array(g["edge_id"], pa.string()),
                "src_id": pa.array(g["src_id"], pa.string()),
                "dst_id": pa.array(g["dst_id"], pa.string()),
                "n_tokens": pa.array(g["edge_tokens"], pa.int32()),
            }
        ),
        folder / "relations.parquet",
    )
    ids, kinds, losses = [], [], []
    for kind, id_col, loss, known in (
        ("entity", "entity_id", "node_loss", "node_known"),
        ("relation", "edge_id", "edge_loss", "edge_known"),
    ):
        for uid, x, k in zip(g[id_col], g[loss].tolist(), g[known].tolist(), strict=True):
            if k:
                ids.append(uid)
                kinds.append(kind)
                losses.append(x)
    pq.write_table(
        pa.table(
            {
                "element_id": pa.array(ids, pa.string()),
                "element_kind": pa.array(kinds, pa.string()),
                "trainee_model": pa.array([TRAINEE] * len(ids), pa.string()),
                "loss": pa.array(losses, pa.float64()),
                "status": pa.array(["ok"] * len(ids), pa.string()),
            }
        ),
        folder / "gap_scores.parquet",
    )


def stage_config(args: argparse.Namespace):
    from graphgen_spark.config import build_config

    return build_config(
        {
            "spark": {
                "master": args.master,
                "shuffle_partitions": args.shuffle_partitions,
                "conf": {
                    **LOCAL_SPARK_CONF,
                    "spark.driver.memory": args.driver_memory,
                    "spark.ui.retainedJobs": "100000",
                    "spark.ui.retainedStages": "100000",
                },
            },
            # no LLM is used by the partition stage
            "llm": {
                "synthesizer": {"base_url": "http://127.0.0.1:9/v1", "model": "none"},
                "trainee": {"model": TRAINEE},
            },
            "run": {"seed": RR_SEED},
            "generate": {"modes": ["aggregated"]},
        },
        env=False,
    )


# -- process memory ---------------------------------------------------------------------------
def _proc_table() -> dict[int, tuple[str, int, int]]:
    """pid -> (comm, ppid, rss bytes) of every live process."""
    table: dict[int, tuple[str, int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        rest = raw[raw.rindex(")") + 2 :].split()
        table[int(entry)] = (comm, int(rest[1]), int(rest[21]) * PAGE)
    return table


def _pss(pid: int) -> int:
    """Proportional set size in bytes (pages shared with other processes split among them)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


MEM_ROLES = ("driver_python", "spark_jvm", "spark_python_workers")


def _vmhwm(pid: int) -> int:
    """Peak RSS of a live process over its whole life (VmHWM), bytes."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def spark_processes(me: int) -> tuple[dict[str, int], dict[int, str]]:
    """RSS bytes by role (this driver, the JVM below it, the JVM's Python workers, the
    pyspark daemon included) and the role of each pid."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    rss = dict.fromkeys(MEM_ROLES, 0)
    roles: dict[int, str] = {}

    def walk(pid: int, role: str) -> None:
        comm, _, r = table[pid]
        if pid == me:
            role = "driver_python"
        elif comm == "java":
            role = "spark_jvm"
        elif role in ("spark_jvm", "spark_python_workers"):
            role = "spark_python_workers"
        if role in rss:
            rss[role] += r
            roles[pid] = role
        for c in children.get(pid, []):
            walk(c, role)

    if me in table:
        walk(me, "other")
    return rss, roles


class RssSampler:
    """Samples the RSS of the driver, JVM and Python workers in a thread and keeps the
    peaks by role and of the JVM + workers sum. Every ``rescan_every``-th sample scans all
    of /proc for the process tree (:func:`spark_processes`, a few ms on a busy machine); the
    others re-read ``statm`` of the processes found then.

    Python workers are forked from one daemon, so the RSS sum counts their shared pages
    repeatedly; every ``pss_every``-th sample also sums the workers' PSS (shared pages
    split; ``smaps_rollup``), added to the JVM's RSS (reading the JVM's own smaps is slow
    and its pages are not shared). At the end, the largest VmHWM (lifetime peak RSS) of a
    single process per role.
    """

    def __init__(self, interval: float, pss_every: int = 4, rescan_every: int = 4) -> None:
        self.interval = interval
        self.pss_every = pss_every
        self.rescan_every = rescan_every
        self._current: dict[int, str] = {}
        self.peak = dict.fromkeys(MEM_ROLES, 0)
        self.peak_sum = 0
        self.peak_pss_sum = 0
        self.peak_workers_pss = 0
        self.first: dict[str, int] | None = None
        self.samples = 0
        self.sample_s = 0.0
        self.max_workers = 0
        self.roles: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _known(self) -> tuple[dict[str, int], dict[int, str]]:
        """RSS by role re-read from ``statm`` for the processes of the last full scan."""
        rss = dict.fromkeys(MEM_ROLES, 0)
        alive: dict[int, str] = {}
        for pid, role in self._current.items():
            try:
                pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
            except (OSError, ValueError, IndexError):
                continue
            rss[role] += pages * PAGE
            alive[pid] = role
        return rss, alive

    def sample(self, rescan: bool = False) -> None:
        t0 = time.monotonic()
        if rescan or self.samples % self.rescan_every == 0:
            rss, roles = spark_processes(os.getpid())
            self._current = roles
        else:
            rss, roles = self._known()
        workers = [pid for pid, r in roles.items() if r == "spark_python_workers"]
        if self.samples % self.pss_every == 0:
            wpss = sum(_pss(pid) for pid in workers)
            self.peak_workers_pss = max(self.peak_workers_pss, wpss)
            self.peak_pss_sum = max(self.peak_pss_sum, rss["spark_jvm"] + wpss)
        self.sample_s += time.monotonic() - t0
        self.roles.update(roles)
        if self.first is None:
            self.first = dict(rss)
        self.samples += 1
        self.max_workers = max(self.max_workers, len(workers))
        for k, v in rss.items():
            self.peak[k] = max(self.peak[k], v)
        self.peak_sum = max(self.peak_sum, rss["spark_jvm"] + rss["spark_python_workers"])

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def start(self) -> None:
        self._thread.start()

    def stop(self, wall_s: float) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        self.sample(rescan=True)  # so workers started since the last scan count too
        hwm = dict.fromkeys(MEM_ROLES, 0)
        for pid, role in self.roles.items():
            hwm[role] = max(hwm[role], _vmhwm(pid))

        def mb(x: int) -> int:
            return round(x / 2**20)

        return {
            "peak_jvm_plus_workers_rss_mb": mb(self.peak_sum),
            "peak_jvm_rss_plus_workers_pss_mb": mb(self.peak_pss_sum),
            "peak_rss_by_role_mb": {k: mb(v) for k, v in self.peak.items()},
            "peak_workers_pss_mb": mb(self.peak_workers_pss),
            "rss_at_stage_start_mb": {k: mb(v) for k, v in (self.first or {}).items()},
            "largest_single_process_vmhwm_mb": {k: mb(v) for k, v in hwm.items()},
            "max_python_worker_processes": self.max_workers,
            "samples": self.samples,
            "interval_s": self.interval,
            "mean_sample_ms": round(1000 * self.sample_s / max(1, self.samples), 1),
            "sampler_share_of_one_core": round(self.sample_s / wall_s, 3) if wall_s else None,
        }


def _vm(field: str) -> int | None:
    """A /proc/self/status field in MB (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024)
    return None


# -- child: the single-process reference ------------------------------------------------------
def child_reference(graph_dir: Path, out: Path, params_json: str) -> None:
    import pyarrow.parquet as pq

    from graphgen_spark.ids import rr
    from graphgen_spark.partition.graph import Edge, Graph, Node
    from graphgen_spark.partition.reference import Params, ece_edge_seed

    raw = json.loads(params_json)
    raw["anchor_ids"] = tuple(raw["anchor_ids"])
    params = Params(**raw)
    import pyarrow.dataset  # noqa: F401  (read_table imports it, and pandas, on first use)

    rss_imports = _vm("VmRSS")

    t0 = time.monotonic()
    ents = pq.read_table(graph_dir / "entities.parquet").to_pydict()
    rels = pq.read_table(graph_dir / "relations.parquet").to_pydict()
    gap = pq.read_table(graph_dir / "gap_scores.parquet").to_pydict()
    loss = {
        u: x
        for u, x, t in zip(gap["element_id"], gap["loss"], gap["trainee_model"], strict=True)
        if t == TRAINEE
    }
    nodes = [
        Node(v, tok, loss.get(v), rr(RR_SEED, v), name, ph, typ)
        for v, tok, name, ph, typ in zip(
            ents["entity_id"],
            ents["n_tokens"],
            ents["name"],
            ents["is_placeholder"],
            ents["type"],
            strict=True,
        )
    ]
    edges = [
        Edge(e, s, d, tok, loss.get(e), rr(RR_SEED, e))
        for e, s, d, tok in zip(
            rels["edge_id"], rels["src_id"], rels["dst_id"], rels["n_tokens"], strict=True
        )
    ]
    del ents, rels, gap, loss
    t1 = time.monotonic()
    graph = Graph(nodes, edges)
    del nodes, edges
    t2 = time.monotonic()
    part = ece_edge_seed(graph, params)
    t3 = time.monotonic()

    # not timed: the batches for the equality check
    import pyarrow as pa

    pq.write_table(
        pa.table(
            {
                "seed_id": [b.seed_id for b in part.batches],
                "edge_ids": [list(b.edge_ids) for b in part.batches],
            }
        ),
        out.with_suffix(".batches.parquet"),
    )
    res = {
        "load_s": round(t1 - t0, 3),
        "build_graph_s": round(t2 - t1, 3),
        "ece_edge_seed_s": round(t3 - t2, 3),
        "reference_s": round(t3 - t0, 3),
        "batches": len(part.batches),
        "uncovered_edges": len(part.uncovered_edges),
        "rss_after_imports_mb": rss_imports,
        "self_vmhwm_mb": _vm("VmHWM"),
    }
    out.write_text(json.dumps(res) + "\n")


# -- child: the Spark stage -------------------------------------------------------------------
def _write_delta(spark, tables, graph_dir: Path) -> None:
    from pyspark.sql import functions as F

    from graphgen_spark.tables import SCHEMAS

    for name in ("entities", "relations", "gap_scores"):
        df = spark.read.parquet(str(graph_dir / f"{name}.parquet"))
        have = set(df.columns)
        cols = [
            (F.col(f.name) if f.name in have else F.lit(None)).cast(f.dataType).alias(f.name)
            for f in SCHEMAS[name].fields
        ]
        if name == "entities":
            cols[[f.name for f in SCHEMAS[name].fields].index("key")] = F.col("entity_id").alias(
                "key"
            )
        df.select(*cols).write.format("delta").mode("overwrite").save(tables.location(name))


class _Phases:
    """Wall time of the stage's main calls (components, each materialise, the MERGE)."""

    NAMES = (
        "materialise nodes (entities + components + losses + rr)",
        "materialise edges",
        "materialise ranks (global row_number)",
        "materialise batches (applyInPandas per component)",
        "materialise subgraphs rows",
    )

    def __init__(self) -> None:
        self.spans: list[tuple[str, float]] = []
        self._step = 0

    def wrap(self, fn, label: str | None = None):
        def timed(*a, **kw):
            name = label
            if name is None:
                name = self.NAMES[self._step] if self._step < len(self.NAMES) else "materialise"
                self._step += 1
            t0 = time.monotonic()
            try:
                return fn(*a, **kw)
            finally:
                self.spans.append((name, time.monotonic() - t0))

        return timed


def child_spark(graph_dir: Path, warm_dir: Path, out: Path, args: argparse.Namespace) -> None:
    from pyspark.sql import functions as F

    import graphgen_spark.stages.partition as stage
    from graphgen_spark.session import build_session
    from graphgen_spark.stages.base import StageContext
    from graphgen_spark.tables import Tables

    cfg = stage_config(args)
    t0 = time.monotonic()
    spark = build_session(cfg)
    spark.sparkContext.setLogLevel("ERROR")
    session_s = time.monotonic() - t0
    work = out.parent / f"{out.stem}.spark"
    try:
        spark.sparkContext.setJobGroup("bench-generate", "bench: write the synthetic graph")
        t0 = time.monotonic()
        tables = Tables(spark, work / "out")
        _write_delta(spark, tables, graph_dir)
        write_s = time.monotonic() - t0

        # warm-up on a small graph (JIT, Delta and Python worker start-up), not timed
        spark.sparkContext.setJobGroup("bench-warmup", "bench: warm-up")
        t0 = time.monotonic()
        warm = Tables(spark, work / "warmup")
        _write_delta(spark, warm, warm_dir)
        stage.run(StageContext(spark, cfg, warm, "bench-warmup"))
        warmup_s = time.monotonic() - t0

        phases = _Phases()
        orig_cc, orig_mat = stage.connected_components, stage.Scratch.materialise
        stage.connected_components = phases.wrap(orig_cc, "components (label propagation)")
        stage.Scratch.materialise = phases.wrap(orig_mat)  # type: ignore[method-assign]
        tables.merge = phases.wrap(tables.merge, "MERGE into subgraphs")  # type: ignore[method-assign]
        ctx = StageContext(spark, cfg, tables, "bench-partition")
        sampler = RssSampler(args.sample_interval)
        meter = CpuMeter()
        sampler.start()
        meter.start()
        wall0 = time.time()
        t0 = time.monotonic()
        spark.sparkContext.setJobGroup(JOB_GROUP, "graphgen-spark stage partition")
        try:
            result = stage.run(ctx)
        finally:
            stage_s = time.monotonic() - t0
            wall1 = time.time()
            cpu = meter.stop()
            rss = sampler.stop(stage_s)
            stage.connected_components, stage.Scratch.materialise = orig_cc, orig_mat
            spark.sparkContext.setJobGroup("bench-analysis", "bench: reading results back")

        jobs = spark_jobs(spark, JOB_GROUP)
        by_site: Counter[str] = Counter()
        n_site: Counter[str] = Counter()
        for j in jobs:
            by_site[callsite(j)] += j["end"] - j["start"]
            n_site[callsite(j)] += 1
        busy = union_seconds([(max(j["start"], wall0), min(j["end"], wall1)) for j in jobs])
        spans: Counter[str] = Counter()
        for name, s in phases.spans:
            spans[name] += s
        (
            tables.read("subgraphs")
            .filter(F.col("method") == METHOD)
            .select("seed_id", "edge_ids")
            .coalesce(1)
            .write.mode("overwrite")
            .parquet(str(out.with_suffix(".batches.parquet")))
        )
        facts = machine_facts(spark)
        res = {
            "spark_s": round(stage_s, 3),
            "counts": dict(result.counts),
            "session_start_s": round(session_s, 1),
            "write_delta_s": round(write_s, 1),
            "warmup_s": round(warmup_s, 1),
            "phases_s": {k: round(v, 2) for k, v in spans.items()}
            | {"other (counts, difficulty cuts, stats)": round(stage_s - sum(spans.values()), 2)},
            "spark_jobs": len(jobs),
            "spark_jobs_busy_s": round(busy, 2),
            "no_spark_job_running_s": round(stage_s - busy, 2),
            "top_spark_call_sites": [
                {"site": k, "jobs": n_site[k], "seconds": round(v, 2)}
                for k, v in by_site.most_common(12)
            ],
            "rss": rss,
            "cpu": cpu,
            "java": facts.get("java"),
            "spark_default_parallelism": facts.get("spark_default_parallelism"),
        }
    finally:
        spark.stop()
    out.write_text(json.dumps(res) + "\n")


# -- parent -----------------------------------------------------------------------------------
def _child(kind: str, extra: list[str], out: Path, log_path: Path) -> dict[str, Any]:
    """Run ``--child KIND`` and return its JSON plus its rusage (wall, maxrss, CPU)."""
    cmd = [sys.executable, "-m", "bench.partition_scale", "--child", kind, *extra]
    cmd += ["--child-out", str(out)]
    m0 = _machine_cpu()
    t0 = time.monotonic()
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            cmd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )
        try:
            _, status, ru = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    m1 = _machine_cpu()
    if proc.returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-40:])
        raise RuntimeError(f"{kind} child failed (exit {proc.returncode}):\n{tail}")
    res = json.loads(out.read_text())
    cpu = ru.ru_utime + ru.ru_stime
    res["child"] = {"wall_s": round(wall, 2), "maxrss_mb": round(ru.ru_maxrss / 1024)}
    if kind == "reference":
        # the Spark child's JVM and workers are not its reaped children: its rusage misses
        # them (the Spark figures come from /proc instead)
        res["child"]["cpu_s"] = round(cpu, 2)
        res["child"]["other_processes_cores"] = round(max(0.0, m1[0] - m0[0] - cpu) / wall, 2)
    return res


def _read_batches(path: Path) -> dict[str, tuple[str, ...]]:
    import pyarrow.parquet as pq

    t = pq.read_table(path).to_pydict()
    return {s: tuple(e) for s, e in zip(t["seed_id"], t["edge_ids"], strict=True)}


def compare(ref_path: Path, spark_path: Path) -> dict[str, Any]:
    ref, got = _read_batches(ref_path), _read_batches(spark_path)
    only_ref = ref.keys() - got.keys()
    only_spark = got.keys() - ref.keys()
    differ = [s for s in ref.keys() & got.keys() if ref[s] != got[s]]
    return {
        "batches_equal": not (only_ref or only_spark or differ),
        "reference_batches": len(ref),
        "spark_batches": len(got),
        "seeds_only_in_reference": len(only_ref),
        "seeds_only_in_spark": len(only_spark),
        "batches_with_other_edges": len(differ),
        "examples": [{"seed": s, "reference": ref[s], "spark": got[s]} for s in sorted(differ)[:3]],
    }


def crossover(rows: list[dict[str, Any]], shape: str, master: str) -> dict[str, Any]:
    mine = sorted((r for r in rows if r["shape"] == shape), key=lambda r: r["edges"])
    trend = [{"edges": r["edges"], "ratio": r["ratio_spark_over_reference"]} for r in mine]
    faster = [r for r in mine if r["spark_s"] < r["reference_s"]]
    if faster:
        first = faster[0]
        below = [r for r in mine if r["edges"] < first["edges"]]
        text = (
            f"Spark first faster at {first['edges']:,} edges "
            f"(ratio {first['ratio_spark_over_reference']})"
            + (f"; slower at {below[-1]['edges']:,}" if below else "; the smallest size measured")
        )
    else:
        top = mine[-1]["edges"] if mine else 0
        text = f"none up to {top:,} edges on {master}"
        if len(mine) > 1:
            direction = "falling" if trend[-1]["ratio"] < trend[0]["ratio"] else "not falling"
            text += f" (spark/reference {' -> '.join(str(t['ratio']) for t in trend)}: {direction})"
    return {"statement": text, "ratio_by_edges": trend}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.partition_scale", description=__doc__)
    p.add_argument("--sizes", default="10000,100000,1000000", help="target edge counts")
    p.add_argument("--shapes", default="giant,many", help=f"of {', '.join(SHAPES)}")
    p.add_argument("--seed", type=int, default=7, help="graph generator seed")
    p.add_argument(
        "--max-component-share",
        type=float,
        default=0.02,
        help="many: largest component size as a share of the edges",
    )
    add_run_args(p, shuffle_partitions=8, driver_memory="6g")
    p.add_argument("--sample-interval", type=float, default=0.25, help="RSS sampling (s)")
    # internal: the measured child processes
    p.add_argument("--child", choices=("reference", "spark"), help=argparse.SUPPRESS)
    p.add_argument("--child-graph", help=argparse.SUPPRESS)
    p.add_argument("--child-warmup", help=argparse.SUPPRESS)
    p.add_argument("--child-params", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.size_list = [int(x) for x in str(args.sizes).split(",") if x.strip()]
    args.shape_list = [x.strip() for x in str(args.shapes).split(",") if x.strip()]
    bad = [s for s in args.shape_list if s not in SHAPES]
    if bad:
        p.error(f"unknown shape(s) {bad}; allowed: {', '.join(SHAPES)}")
    if any(s < 1 for s in args.size_list):
        p.error("sizes must be >= 1")
    return args


def _child_args(args: argparse.Namespace) -> list[str]:
    return [
        "--master",
        args.master,
        "--shuffle-partitions",
        str(args.shuffle_partitions),
        "--driver-memory",
        args.driver_memory,
        "--sample-interval",
        str(args.sample_interval),
    ]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from graphgen_spark.stages.partition import params_for

    cfg = stage_config(args)
    params = params_for(cfg)
    params_json = json.dumps(dataclasses.asdict(params))
    t_all = time.monotonic()
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    with work_directory(args.keep, "graphgen_bench_partition_") as work:
        warm_dir = work / "warmup"
        write_parquet(generate("giant", WARMUP_EDGES, args.seed + 1, 1.0), warm_dir)
        for shape in args.shape_list:
            for size in args.size_list:
                key = f"{shape}-{size}"
                gdir = work / key
                t0 = time.monotonic()
                g = generate(shape, size, args.seed, args.max_component_share)
                figures = g["figures"]
                write_parquet(g, gdir)
                del g
                gen_s = time.monotonic() - t0
                log.info("%s: generated in %.1f s: %s", key, gen_s, figures)

                ref = _child(
                    "reference",
                    ["--child-graph", str(gdir), "--child-params", params_json],
                    work / f"{key}.reference.json",
                    work / f"{key}.reference.log",
                )
                log.info(
                    "%s: reference %.2f s, peak RSS %d MB",
                    key,
                    ref["reference_s"],
                    ref["child"]["maxrss_mb"],
                )
                spk = _child(
                    "spark",
                    [
                        "--child-graph",
                        str(gdir),
                        "--child-warmup",
                        str(warm_dir),
                        *_child_args(args),
                    ],
                    work / f"{key}.spark.json",
                    work / f"{key}.spark.log",
                )
                log.info(
                    "%s: spark %.2f s, peak RSS JVM+workers %d MB; phases %s",
                    key,
                    spk["spark_s"],
                    spk["rss"]["peak_jvm_plus_workers_rss_mb"],
                    spk["phases_s"],
                )
                eq = compare(
                    (work / f"{key}.reference.json").with_suffix(".batches.parquet"),
                    (work / f"{key}.spark.json").with_suffix(".batches.parquet"),
                )
                if not eq["batches_equal"]:
                    log.error("%s: BATCHES DIFFER between Spark and the reference: %s", key, eq)
                    failures.append(key)
                rows.append(
                    {
                        "shape": shape,
                        "target_edges": size,
                        **figures,
                        "spark_s": spk["spark_s"],
                        "reference_s": ref["reference_s"],
                        "ratio_spark_over_reference": round(
                            spk["spark_s"] / max(ref["reference_s"], 1e-9), 2
                        ),
                        "spark_peak_rss_mb": spk["rss"]["peak_jvm_plus_workers_rss_mb"],
                        "spark_peak_pss_mb": spk["rss"]["peak_jvm_rss_plus_workers_pss_mb"],
                        "spark_jvm_rss_at_stage_start_mb": spk["rss"]["rss_at_stage_start_mb"][
                            "spark_jvm"
                        ],
                        "reference_peak_rss_mb": ref["child"]["maxrss_mb"],
                        "batches": eq["spark_batches"],
                        "batches_equal": eq["batches_equal"],
                        "other_load_cores_during_spark": spk["cpu"]["other_processes_cores"],
                        "other_load_cores_during_reference": ref["child"]["other_processes_cores"],
                        "generate_s": round(gen_s, 1),
                        "spark": spk,
                        "reference": ref,
                        "equality": eq,
                    }
                )
    master = args.master
    result = {
        "benchmark": NAME,
        "headline": {
            "crossover": {s: crossover(rows, s, master) for s in args.shape_list},
            "all_batches_equal": not failures,
            "table": [
                {
                    k: r[k]
                    for k in (
                        "shape",
                        "edges",
                        "nodes",
                        "components",
                        "largest_component_edges",
                        "spark_s",
                        "reference_s",
                        "ratio_spark_over_reference",
                        "spark_peak_rss_mb",
                        "spark_peak_pss_mb",
                        "reference_peak_rss_mb",
                        "batches",
                        "batches_equal",
                    )
                }
                for r in rows
            ],
        },
        "graphs": rows,
        "failures": failures,
        "machine": {
            **machine_facts(),
            "java": next((r["spark"].get("java") for r in rows), None),
            "spark_master": master,
        },
        "config": {
            "cli": {k: v for k, v in vars(args).items() if not k.startswith("child")},
            "partition_params": dataclasses.asdict(params),
            "generator": {
                "m_choices": M_CHOICES,
                "m_weights": M_WEIGHTS,
                "many_size_law": "P(s) ~ s^-2 on [1, max_component_share * edges]",
                "isolated_share_many": ISOLATED_SHARE,
                "loss_missing": LOSS_MISSING,
                "rr_seed": RR_SEED,
                "warmup_edges": WARMUP_EDGES,
            },
        },
        "bench_total_s": round(time.monotonic() - t_all, 1),
    }
    return result


def summary_lines(res: dict[str, Any]) -> list[str]:
    h = res["headline"]
    lines = [
        "partition_scale (ece/edge_seed, "
        f"{res.get('machine', {}).get('spark_master', '?')} vs single-process reference):"
    ]
    for r in h["table"]:
        lines.append(
            f"  {r['shape']:>5} {r['edges']:>9,} edges {r['components']:>7,} comp: "
            f"spark {r['spark_s']:8.2f} s / ref {r['reference_s']:8.2f} s = "
            f"{r['ratio_spark_over_reference']:6.2f} x; peak RSS {r['spark_peak_rss_mb']:,} MB "
            f"(PSS {r.get('spark_peak_pss_mb', '?'):,} MB) vs {r['reference_peak_rss_mb']:,} MB; "
            f"{r['batches']:,} batches" + ("" if r["batches_equal"] else "  BATCHES DIFFER")
        )
    for shape, c in h["crossover"].items():
        lines.append(f"  crossover ({shape}): {c['statement']}")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        out = Path(args.child_out)
        if args.child == "reference":
            child_reference(Path(args.child_graph), out, args.child_params)
        else:
            local_only_env()
            child_spark(Path(args.child_graph), Path(args.child_warmup), out, args)
        return 0
    res = run_benchmark(NAME, args, run, summary_lines)
    if res["failures"]:
        print(f"FAILED: batches differ for {', '.join(res['failures'])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
