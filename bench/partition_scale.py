"""``ece/edge_seed`` partitioning: the Spark stage, per engine, against the single-process
reference.

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
  :class:`graphgen_spark.partition.graph.Graph` (a ``networkx.Graph``) and runs
  :func:`graphgen_spark.partition.reference.ece_edge_seed`, the sequential algorithm of
  method §6.2, with the stage's parameters. Timed from reading its input to the last batch
  (interpreter start and imports excluded); peak memory = the child's ``ru_maxrss``
  (``os.wait4``). Once per shape and size; every engine run below is set beside it.
* **spark**, once per engine of the shape (``--engines-giant``, default ``component,claim``,
  ``rounds`` on request;
  ``--engines-many``, default ``auto``): a child process with a fresh ``local[2]`` JVM writes
  the Delta tables, warms up on a 300-edge graph (not timed; claim runs warm up with two
  claim rounds) and runs ``graphgen_spark.stages.partition.run(StageContext(...))`` with
  ``generate.modes: [aggregated]`` (only ``ece/edge_seed``) and ``partition.engine`` set to
  the engine. Peak memory = the highest sum of RSS over the driver JVM and its Python
  workers, sampled from /proc every ``--sample-interval`` seconds during the stage. The
  engine actually used is read back from the ``subgraphs.engine`` column and the stage
  counts (claim rounds, relations finished on the driver, per-round seconds).

  - ``component``: the sequential algorithm per connected component in one task each
    (exact); on ``giant`` the whole graph is one task.
  - ``claim``: "rounds, by claim" (method §6.9) on every component: meets the contract, not
    sequential equality.
  - ``rounds``: "rounds, exact" (method §6.9) on every component: each round expands the
    relations that rank best within twice the expansion depth; equal to the reference.
  - ``auto``: the product default, component up to ``partition.local_max_edges`` relations
    per component and claim above (``--local-max-edges`` overrides it for the bench, e.g.
    to make ``auto`` route a small giant component to the claim engine).

* **check** (not part of any measured figure), a child that reads both sets of batches:

  - batches built by an exact engine (``component``, ``rounds``) must equal the reference's
    batch for the same seed (seed_id → edge_ids, in order), or the benchmark fails;
  - batches built by the claim engine are checked against the §6.9 contract
    (:func:`graphgen_spark.partition.contract.check_contract`, properties 1–5) on graphs of
    at most ``--contract-max-edges`` relations (default 1,000,000; larger ones are recorded
    as skipped with the reason); a violation fails the benchmark. Property 6
    (determinism) would need a second run and is not checked here;
  - for every run, :func:`graphgen_spark.partition.compare.compare` gives the batch
    statistics of both and their difference (batches, mean/max relations per batch, mean
    loss, same seeds, identical batches, relations whose batch has another seed).

Claim-engine settings (bench defaults; the product's are unchanged): ``partition.max_rounds``
= ``--max-rounds`` (default: the product's, 50); ``partition.collect_threshold`` =
``--collect-threshold``, default ``min(product default 100,000, 10 % of the graph's
relations)``, so that rounds do run at 10k and 100k (with the product's 100,000 a graph of
at most 100,000 relations would go straight to the driver's sequential finish, i.e. the
reference) while the 1M run uses exactly the product's defaults.

``crossover``, per shape and engine: the smallest size at which the stage is faster than the
reference, else a plain "none up to N edges" with the spark/reference time ratio per size,
its trend, and a log-log extrapolation from the two largest sizes (an estimate, not a
measurement).

``python -m bench.partition_scale [--sizes 10000,100000,1000000] [--shapes giant,many]
[--engines-giant component,claim,rounds] [--engines-many auto] [--seed N] [--no-write] [--keep]``;
writes ``bench/results/partition_scale.json``. Progress (which shape, size and engine is
running, and every ``--progress-interval`` seconds the child's last log line, e.g. its
claim round) goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import math
import os
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import (
    LOCAL_SPARK_CONF,
    CpuMeter,
    add_child_args,
    add_run_args,
    callsite,
    local_only_env,
    machine_facts,
    run_args,
    run_benchmark,
    run_child,
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


ENGINES = ("auto", "component", "claim", "rounds")
EXACT = "component"
CLAIM = "claim"
ROUNDS = "rounds"  # exact too: checked by equality like the per-component engine
ROUND_ENGINES = (CLAIM, ROUNDS)
CLAIM_COLLECT_SHARE = 0.10  # bench default collect threshold: 10 % of the relations ...


def product_partition_defaults() -> dict[str, int]:
    """The product's claim-engine defaults (graphgen_spark.config.PartitionConfig)."""
    from graphgen_spark.config import PartitionConfig

    fields = PartitionConfig.model_fields
    return {k: fields[k].default for k in ("local_max_edges", "max_rounds", "collect_threshold")}


def partition_settings(args: argparse.Namespace, engine: str, edges: int) -> dict[str, Any]:
    """``partition.*`` overrides of one Spark run (engine settings only: they do not change
    ``config_hash``)."""
    if engine == EXACT:
        return {"engine": engine}
    dflt = product_partition_defaults()
    local_max = args.local_max_edges or dflt["local_max_edges"]
    collect = args.collect_threshold
    if collect is None:  # ... at most the product's default
        collect = min(dflt["collect_threshold"], int(CLAIM_COLLECT_SHARE * edges))
    out: dict[str, Any] = {
        "engine": engine,
        "max_rounds": dflt["max_rounds"] if args.max_rounds is None else args.max_rounds,
        # engine=auto requires collect_threshold <= local_max_edges
        "collect_threshold": min(collect, local_max) if engine == "auto" else collect,
    }
    if args.local_max_edges:
        out["local_max_edges"] = args.local_max_edges
    return out


def stage_config(args: argparse.Namespace, partition: dict[str, Any] | None = None):
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
            "partition": dict(partition or {}),
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


# -- batches on disk ----------------------------------------------------------------------------
BATCH_COLUMNS = ("method", "seed_id", "node_ids", "edge_ids", "n_units", "tokens", "loss", "flags")


@dataclasses.dataclass(frozen=True, slots=True)
class BatchRow:
    """A batch read back from parquet (``contract.BatchLike``; ``engine`` None for the
    reference)."""

    method: str
    seed_id: str
    node_ids: tuple[str, ...]
    edge_ids: tuple[str, ...]
    n_units: int
    tokens: int
    loss: float | None
    flags: tuple[str, ...]
    engine: str | None = None


def read_batches(path: Path) -> list[BatchRow]:
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    cols = {c: t.column(c).to_pylist() for c in t.column_names}
    engine = cols.get("engine") or [None] * t.num_rows
    return [
        BatchRow(m, s, tuple(n), tuple(e), int(u), int(k), x, tuple(f or ()), g)
        for m, s, n, e, u, k, x, f, g in zip(*(cols[c] for c in BATCH_COLUMNS), engine, strict=True)
    ]


def _params(params_json: str):
    from graphgen_spark.partition.reference import Params

    raw = json.loads(params_json)
    raw["anchor_ids"] = tuple(raw["anchor_ids"])
    return Params(**raw)


def load_graph(graph_dir: Path) -> tuple[Any, float, float]:
    """The reference's :class:`Graph` from the parquet rows; (graph, load s, build s)."""
    import pyarrow.parquet as pq

    from graphgen_spark.ids import rr
    from graphgen_spark.partition.graph import Edge, Graph, Node

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
    return graph, t1 - t0, time.monotonic() - t1


# -- child: the single-process reference ------------------------------------------------------
def child_reference(graph_dir: Path, out: Path, params_json: str) -> None:
    import pyarrow.dataset  # noqa: F401  (read_table imports it, and pandas, on first use)

    from graphgen_spark.partition.reference import ece_edge_seed

    params = _params(params_json)
    rss_imports = _vm("VmRSS")

    t0 = time.monotonic()
    graph, load_s, build_s = load_graph(graph_dir)
    t2 = time.monotonic()
    part = ece_edge_seed(graph, params)
    t3 = time.monotonic()

    # not timed: the batches for the checks
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table(
            {
                "method": [b.method for b in part.batches],
                "seed_id": [b.seed_id for b in part.batches],
                "node_ids": [list(b.node_ids) for b in part.batches],
                "edge_ids": [list(b.edge_ids) for b in part.batches],
                "n_units": pa.array([b.n_units for b in part.batches], pa.int32()),
                "tokens": pa.array([b.tokens for b in part.batches], pa.int64()),
                "loss": pa.array([b.loss for b in part.batches], pa.float64()),
                "flags": pa.array([list(b.flags) for b in part.batches], pa.list_(pa.string())),
            }
        ),
        out.with_suffix(".batches.parquet"),
    )
    res = {
        "load_s": round(load_s, 3),
        "build_graph_s": round(build_s, 3),
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
    """Wall time of the stage's main calls (components, each materialise, the claim engine,
    the MERGE). Calls made inside a ``scope`` call (the claim engine's per-round
    materialisations, its driver finish) go to ``detail``, not ``spans``, so ``spans`` add
    up without double counting."""

    NAMES = (
        "materialise nodes (entities + components + losses + rr)",
        "materialise edges",
        "materialise ranks (range-sorted units; offsets are a broadcast join)",
        "materialise batches (applyInPandas per component and/or claim rows)",
        "materialise subgraphs rows",
    )

    def __init__(self) -> None:
        self.spans: list[tuple[str, float]] = []
        self.detail: list[tuple[str, float]] = []
        self._step = 0
        self._scope: str | None = None
        self.started: dict[str, float] = {}  # label -> wall clock of its first call

    def wrap(self, fn, label: str | None = None, scope: str | None = None):
        def timed(*a, **kw):
            outer = self._scope
            name = label
            if name is None and outer is not None:
                name = f"{outer}: materialise (per round)"
            elif name is None:
                name = self.NAMES[self._step] if self._step < len(self.NAMES) else "materialise"
                self._step += 1
            if scope is not None:
                self._scope = scope
            self.started.setdefault(name, time.time())
            t0 = time.monotonic()
            try:
                return fn(*a, **kw)
            finally:
                self._scope = outer
                (self.spans if outer is None else self.detail).append((name, time.monotonic() - t0))

        return timed


ENGINE_LABEL = "round engine (rounds + driver finish)"
FINISH_LABEL = "round engine: driver finish (collect + sequential)"


class _RoundLines(logging.Handler):
    """Collects the round engines' ``partition <engine> round %d: %d placed, %d remain``
    lines with their times, for the seconds and relations of every round."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.rounds: list[tuple[float, tuple]] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = tuple(record.args or ())
        if str(record.msg).startswith("partition %s round %d") and len(args) == 4:
            self.rounds.append((record.created, args))


def child_spark(graph_dir: Path, warm_dir: Path, out: Path, args: argparse.Namespace) -> None:
    from pyspark.sql import functions as F

    import graphgen_spark.partition.distributed as rounds_mod
    import graphgen_spark.stages.partition as stage
    from graphgen_spark.partition.claim import Claim
    from graphgen_spark.partition.rounds import ExactRounds
    from graphgen_spark.session import build_session
    from graphgen_spark.stages.base import StageContext
    from graphgen_spark.tables import Tables

    partition = json.loads(args.child_partition)
    cfg = stage_config(args, partition)
    # the warm-up graph is below any collect threshold: let a round engine run 2 rounds on it
    warm_cfg = cfg
    if partition.get("engine") != EXACT:
        warm_cfg = stage_config(args, {**partition, "collect_threshold": 0, "max_rounds": 2})
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
        stage.STAGE.run(StageContext(spark, warm_cfg, warm, "bench-warmup"))
        warmup_s = time.monotonic() - t0

        phases = _Phases()
        orig = (stage.unit_frames, stage.Scratch.materialise)
        orig_finish = rounds_mod.finish_on_driver
        stage.unit_frames = phases.wrap(orig[0], "unit frames (components)")
        stage.Scratch.materialise = phases.wrap(orig[1])  # type: ignore[method-assign]
        round_engines = (Claim, ExactRounds)  # each gets a timed copy of RoundEngine.run
        for engine in round_engines:
            engine.run = phases.wrap(engine.run, ENGINE_LABEL, engine.name)  # type: ignore[method-assign]
        rounds_mod.finish_on_driver = phases.wrap(orig_finish, FINISH_LABEL)
        tables.merge = phases.wrap(tables.merge, "MERGE into subgraphs")  # type: ignore[method-assign]
        ctx = StageContext(spark, cfg, tables, "bench-partition")
        rounds_log = _RoundLines()
        ctx.log.addHandler(rounds_log)
        sampler = RssSampler(args.sample_interval)
        meter = CpuMeter()
        sampler.start()
        meter.start()
        wall0 = time.time()
        t0 = time.monotonic()
        spark.sparkContext.setJobGroup(JOB_GROUP, "graphgen-spark stage partition")
        try:
            result = stage.STAGE.run(ctx)
        finally:
            stage_s = time.monotonic() - t0
            wall1 = time.time()
            cpu = meter.stop()
            rss = sampler.stop(stage_s)
            ctx.log.removeHandler(rounds_log)
            stage.unit_frames, stage.Scratch.materialise = orig
            for engine in round_engines:
                del engine.run  # back to the inherited RoundEngine.run
            rounds_mod.finish_on_driver = orig_finish
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
        detail: Counter[str] = Counter()
        for name, s in phases.detail:
            detail[name] += s
        subgraphs = tables.read("subgraphs").filter(F.col("method") == METHOD)
        engines = {
            r["engine"]: int(r["count"]) for r in subgraphs.groupBy("engine").count().collect()
        }
        (
            subgraphs.select(*BATCH_COLUMNS, "engine")
            .coalesce(1)
            .write.mode("overwrite")
            .parquet(str(out.with_suffix(".batches.parquet")))
        )
        key = METHOD.replace("/", "_")
        counts = dict(result.counts)
        engine_s = spans.get(ENGINE_LABEL)
        marks = [phases.started.get(ENGINE_LABEL, wall0)] + [t for t, _ in rounds_log.rounds]
        rounds_info = None
        ran = [e for e in ROUND_ENGINES if counts.get(f"{key}_engine_{e}_components")]
        if ran:
            rounds_info = {
                "engine": ran[0],
                "rounds": counts.get(f"{key}_{ran[0]}_rounds", 0),
                "relations_placed_by_rounds": sum(a[2] for _, a in rounds_log.rounds),
                "relations_finished_on_driver": counts.get(f"{key}_{ran[0]}_collected", 0),
                "engine_s": round(engine_s, 2) if engine_s is not None else None,
                "driver_finish_s": round(detail.get(FINISH_LABEL, 0.0), 2),
                # seconds of each round, between its log line and the previous one (the
                # first from the start of the engine call: it includes the initial live set)
                "round_s": [round(b - a, 2) for a, b in itertools.pairwise(marks)],
                "round_placed": [a[2] for _, a in rounds_log.rounds],
                "round_remaining": [a[3] for _, a in rounds_log.rounds],
            }
        facts = machine_facts(spark)
        res = {
            "spark_s": round(stage_s, 3),
            "partition_settings": partition,
            "counts": counts,
            "batches_by_engine": engines,
            "round_engine": rounds_info,
            "session_start_s": round(session_s, 1),
            "write_delta_s": round(write_s, 1),
            "warmup_s": round(warmup_s, 1),
            "phases_s": {k: round(v, 2) for k, v in spans.items()}
            | {"other (counts, difficulty cuts, stats)": round(stage_s - sum(spans.values()), 2)},
            "inside_round_engine_s": {k: round(v, 2) for k, v in detail.items()},
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


# -- child: the checks (not measured) -------------------------------------------------------------
def equality(ref: list[BatchRow], got: list[BatchRow]) -> dict[str, Any]:
    """seed_id → edge_ids of the two, whole and for the exact engine's batches only."""
    r = {b.seed_id: b.edge_ids for b in ref}
    g = {b.seed_id: b.edge_ids for b in got}
    only_ref = r.keys() - g.keys()
    only_spark = g.keys() - r.keys()
    differ = sorted(s for s in r.keys() & g.keys() if r[s] != g[s])
    exact = [b for b in got if b.engine in (EXACT, ROUNDS)]
    exact_differ = [b.seed_id for b in exact if r.get(b.seed_id) != b.edge_ids]
    return {
        "batches_equal": not (only_ref or only_spark or differ),
        "reference_batches": len(r),
        "spark_batches": len(g),
        "seeds_only_in_reference": len(only_ref),
        "seeds_only_in_spark": len(only_spark),
        "batches_with_other_edges": len(differ),
        "exact_engine_batches": len(exact),
        "exact_engine_batches_differing": len(exact_differ),
        "examples": [{"seed": s, "reference": r[s], "spark": g[s]} for s in differ[:3]],
    }


def child_check(
    graph_dir: Path, ref_path: Path, spark_path: Path, out: Path, params_json: str, contract: str
) -> None:
    """Equality, batch-statistics difference and (``contract`` = "check") the §6.9 contract of
    the claim engine's batches. ``contract`` otherwise is the reason it is skipped."""
    from graphgen_spark.partition.compare import compare
    from graphgen_spark.partition.contract import check_contract

    t0 = time.monotonic()
    ref, got = read_batches(ref_path), read_batches(spark_path)
    res: dict[str, Any] = {"equality": equality(ref, got)}
    diff = compare(got, ref).as_dict()
    for side in ("candidate", "reference"):  # JSON keys; the histogram is long at 1M
        diff[side]["edges_per_batch"] = {
            str(k): v for k, v in diff[side]["edges_per_batch"].items()
        }
    res["stats_vs_reference"] = diff
    res["compare_s"] = round(time.monotonic() - t0, 2)
    if contract == "check":
        t0 = time.monotonic()
        graph, _, _ = load_graph(graph_dir)
        claim = [b for b in got if b.engine == CLAIM]
        # the claim batches are checked alone: with engine=auto the component batches of
        # the other components (exact, compared above) are not their business
        if len(claim) < len(got):
            keep = {e for b in claim for e in b.edge_ids} | {v for b in claim for v in b.node_ids}
            graph = _subgraph(graph, keep)
        t1 = time.monotonic()
        problems = check_contract(graph, claim, METHOD, _params(params_json))
        res["contract"] = {
            "checked": True,
            "batches_checked": len(claim),
            "violations": len(problems),
            "violations_by_property": dict(Counter(p.split(":", 1)[0] for p in problems)),
            "examples": problems[:5],
            "load_graph_s": round(t1 - t0, 2),
            "check_s": round(time.monotonic() - t1, 2),
            "determinism": "not checked (property 6 needs a second run)",
        }
    else:
        res["contract"] = {"checked": False, "reason": contract}
    res["self_vmhwm_mb"] = _vm("VmHWM")
    out.write_text(json.dumps(res, default=str) + "\n")


def _subgraph(graph, keep: set[str]):
    """The graph restricted to the given relations and entities plus all relations between
    those entities' components (whole components, so coverage and ranks stay meaningful)."""
    import networkx as nx

    from graphgen_spark.partition.graph import Graph

    comps = [c for c in nx.connected_components(graph.nx) if c & keep]
    nodes = set().union(*comps) if comps else set()
    return Graph(
        [n for v, n in graph.nodes.items() if v in nodes],
        [e for e in graph.edges.values() if e.src_id in nodes],
    )


# -- parent -----------------------------------------------------------------------------------
def _child(
    kind: str,
    extra: list[str],
    out: Path,
    log_path: Path,
    label: str = "",
    progress_s: float = 0.0,
) -> dict[str, Any]:
    """Run ``--child KIND`` and return its JSON plus its rusage (wall, maxrss, CPU); every
    ``progress_s`` seconds log that it is still running, with its last log line."""
    cmd = [sys.executable, "-m", "bench.partition_scale", "--child", kind, *extra]
    cmd += ["--child-out", str(out)]
    run = run_child(cmd, log_path, f"{label}: {kind}", progress_s, log=log)
    if run.returncode != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-40:])
        raise RuntimeError(f"{kind} child failed (exit {run.returncode}):\n{tail}")
    res = json.loads(out.read_text())
    ru, wall = run.rusage, run.wall_s
    cpu = ru.ru_utime + ru.ru_stime
    res["child"] = {"wall_s": round(wall, 2), "maxrss_mb": round(ru.ru_maxrss / 1024)}
    if kind in ("reference", "check"):
        # the Spark child's JVM and workers are not its reaped children: its rusage misses
        # them (the Spark figures come from /proc instead)
        res["child"]["cpu_s"] = round(cpu, 2)
        res["child"]["other_processes_cores"] = round(max(0.0, run.machine_busy_s - cpu) / wall, 2)
    return res


def _ratio(a: float, b: float) -> float:
    return round(a / max(b, 1e-9), 2)


def crossover(rows: list[dict[str, Any]], shape: str, engine: str, master: str) -> dict[str, Any]:
    """Smallest size at which the stage with ``engine`` beat the reference on ``shape``."""
    mine = sorted(
        (r for r in rows if r["shape"] == shape and r["engine"] == engine), key=lambda r: r["edges"]
    )
    trend = [
        {
            "edges": r["edges"],
            "engine_used": r["engine_used"],
            "spark_s": r["spark_s"],
            "reference_s": r["reference_s"],
            "ratio": r["ratio_spark_over_reference"],
            "memory_ratio": r["memory_ratio_spark_over_reference"],
        }
        for r in mine
    ]
    out: dict[str, Any] = {"ratio_by_edges": trend, "crossover_edges": None}
    faster = [r for r in mine if r["spark_s"] < r["reference_s"]]
    used = sorted({r["engine_used"] for r in mine})
    tag = f"{shape}, engine={engine}" + (f" (used: {'/'.join(used)})" if used != [engine] else "")
    if faster:
        first = faster[0]
        below = [r for r in mine if r["edges"] < first["edges"]]
        out["crossover_edges"] = first["edges"]
        out["statement"] = (
            f"{tag}: Spark first faster at {first['edges']:,} edges "
            f"(spark/reference {first['ratio_spark_over_reference']})"
            + (
                f"; slower at {below[-1]['edges']:,} ({below[-1]['ratio_spark_over_reference']})"
                if below
                else "; the smallest size measured"
            )
        )
        return out
    top = mine[-1]["edges"] if mine else 0
    text = f"{tag}: no crossover found up to {top:,} edges on {master}"
    if len(mine) > 1:
        ratios = [t["ratio"] for t in trend]
        direction = "falling" if ratios[-1] < ratios[0] else "not falling"
        text += f"; spark/reference {' -> '.join(str(x) for x in ratios)} ({direction})"
        (e0, r0), (e1, r1) = [(t["edges"], t["ratio"]) for t in trend[-2:]]
        if 0 < r1 < r0 and e1 > e0:
            # ratio ∝ edges^k through the two largest sizes, solved for ratio = 1
            k = math.log(r1 / r0) / math.log(e1 / e0)
            est = e1 * (1.0 / r1) ** (1.0 / k)
            est = round(est, 1 - int(math.floor(math.log10(est))))  # 2 significant digits
            out["extrapolated_crossover_edges"] = est
            out["extrapolation"] = (
                f"ratio ~ edges^{k:.2f} through {e0:,} and {e1:,} edges reaches 1 near "
                f"{est:.2g} edges (an extrapolation, not a measurement)"
            )
            text += f"; log-log extrapolation: ~{est:.2g} edges"
        else:
            out["extrapolation"] = "the ratio does not fall between the two largest sizes"
    out["statement"] = text
    if any(r["engine_used"] == EXACT and r["components_with_edges"] == 1 for r in mine):
        out["note"] = (
            "where the graph is one component, the exact engine runs the sequential algorithm "
            "on the whole graph in one Python task (graph build + ece_edge_seed, the bulk of "
            "the reference's time) on top of Spark's own work (components, ranks, MERGE): a "
            "crossover is not expected for it, whatever the extrapolation says"
        )
        out["statement"] += "; one component = one sequential task: no crossover expected"
    return out


def _engine_list(value: str, what: str, p: argparse.ArgumentParser) -> list[str]:
    out = [x.strip() for x in value.split(",") if x.strip()]
    bad = [x for x in out if x not in ENGINES]
    if bad or not out or len(set(out)) != len(out):
        p.error(f"{what}: a list of distinct engines of {', '.join(ENGINES)}, got {value!r}")
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.partition_scale", description=__doc__)
    p.add_argument("--sizes", default="10000,100000,1000000", help="target edge counts")
    p.add_argument("--shapes", default="giant,many", help=f"of {', '.join(SHAPES)}")
    p.add_argument(
        "--engines-giant", default="component,claim", help="partition.engine runs (rounds: opt-in)"
    )
    p.add_argument("--engines-many", default="auto", help="partition.engine runs")
    p.add_argument(
        "--local-max-edges",
        type=int,
        default=None,
        help="override partition.local_max_edges (engine=auto; default: the product's)",
    )
    p.add_argument(
        "--max-rounds",
        type=int,
        default=None,
        help="claim/rounds engines: partition.max_rounds (default: the product's)",
    )
    p.add_argument(
        "--collect-threshold",
        type=int,
        default=None,
        help="claim/rounds engines: partition.collect_threshold (default: min(the product's, "
        "10%% of the relations))",
    )
    p.add_argument(
        "--contract-max-edges",
        type=int,
        default=1_000_000,
        help="check the claim engine's batches against the §6.9 contract up to this size",
    )
    p.add_argument("--seed", type=int, default=7, help="graph generator seed")
    p.add_argument(
        "--max-component-share",
        type=float,
        default=0.02,
        help="many: largest component size as a share of the edges",
    )
    add_run_args(p, shuffle_partitions=8, driver_memory="6g")
    add_child_args(p)
    # internal: the child processes
    p.add_argument("--child", choices=("reference", "spark", "check"), help=argparse.SUPPRESS)
    p.add_argument("--child-graph", help=argparse.SUPPRESS)
    p.add_argument("--child-warmup", help=argparse.SUPPRESS)
    p.add_argument("--child-params", help=argparse.SUPPRESS)
    p.add_argument("--child-partition", default="{}", help=argparse.SUPPRESS)
    p.add_argument("--child-batches", nargs=2, help=argparse.SUPPRESS)
    p.add_argument("--child-contract", default="check", help=argparse.SUPPRESS)
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.size_list = [int(x) for x in str(args.sizes).split(",") if x.strip()]
    args.shape_list = [x.strip() for x in str(args.shapes).split(",") if x.strip()]
    args.engines = {
        "giant": _engine_list(args.engines_giant, "--engines-giant", p),
        "many": _engine_list(args.engines_many, "--engines-many", p),
    }
    bad = [s for s in args.shape_list if s not in SHAPES]
    if bad:
        p.error(f"unknown shape(s) {bad}; allowed: {', '.join(SHAPES)}")
    if any(s < 1 for s in args.size_list):
        p.error("sizes must be >= 1")
    for name in ("local_max_edges", "max_rounds", "collect_threshold"):
        if getattr(args, name) is not None and getattr(args, name) < (name == "local_max_edges"):
            p.error(f"--{name.replace('_', '-')} is too small")
    return args


def engine_used(spk: dict[str, Any]) -> str:
    """``component``, ``claim`` or ``claim+component``, from the ``subgraphs.engine`` column."""
    used = sorted(e for e, n in spk["batches_by_engine"].items() if n and e)
    return "+".join(used) if used else "none"


def _contract_plan(args: argparse.Namespace, used: str, edges: int) -> str:
    if CLAIM not in used:
        return "exact engine: checked by equality with the reference instead"
    if edges > args.contract_max_edges:
        return (
            f"skipped: {edges:,} relations > --contract-max-edges {args.contract_max_edges:,} "
            "(the Python checker would take too long)"
        )
    return "check"


def run(args: argparse.Namespace) -> dict[str, Any]:
    from graphgen_spark.partition.plan import params_for

    cfg = stage_config(args)
    params = params_for(cfg)
    local_max = args.local_max_edges or product_partition_defaults()["local_max_edges"]
    params_json = json.dumps(dataclasses.asdict(params))
    t_all = time.monotonic()
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    plan = [(sh, sz) for sh in args.shape_list for sz in args.size_list]
    n_steps = sum(1 + len(args.engines[sh]) for sh, _ in plan)
    step = 0
    prog = args.progress_interval

    def announce(what: str) -> None:
        nonlocal step
        step += 1
        log.info("[%d/%d, %.0f s] %s", step, n_steps, time.monotonic() - t_all, what)

    with work_directory(args.keep, "graphgen_bench_partition_") as work:
        warm_dir = work / "warmup"
        write_parquet(generate("giant", WARMUP_EDGES, args.seed + 1, 1.0), warm_dir)
        for shape, size in plan:
            key = f"{shape}-{size}"
            gdir = work / key
            t0 = time.monotonic()
            g = generate(shape, size, args.seed, args.max_component_share)
            figures = g["figures"]
            write_parquet(g, gdir)
            del g
            gen_s = time.monotonic() - t0
            log.info("%s: generated in %.1f s: %s", key, gen_s, figures)

            announce(f"{key}: reference (networkx, one process)")
            ref_out = work / f"{key}.reference.json"
            ref = _child(
                "reference",
                ["--child-graph", str(gdir), "--child-params", params_json],
                ref_out,
                work / f"{key}.reference.log",
                key,
                prog,
            )
            log.info(
                "%s: reference %.2f s, peak RSS %d MB",
                key,
                ref["reference_s"],
                ref["child"]["maxrss_mb"],
            )
            for engine in args.engines[shape]:
                run_key = f"{key}.{engine}"
                settings = partition_settings(args, engine, figures["edges"])
                announce(f"{key}: spark, partition {settings}")
                spk_out = work / f"{run_key}.spark.json"
                spk = _child(
                    "spark",
                    [
                        "--child-graph",
                        str(gdir),
                        "--child-warmup",
                        str(warm_dir),
                        "--child-partition",
                        json.dumps(settings),
                        *run_args(args),
                    ],
                    spk_out,
                    work / f"{run_key}.spark.log",
                    run_key,
                    prog,
                )
                used = engine_used(spk)
                log.info(
                    "%s: spark (engine used: %s%s) %.2f s, peak RSS JVM+workers %d MB; phases %s",
                    run_key,
                    used,
                    ""
                    if not spk["round_engine"]
                    else f", {spk['round_engine']['engine']} engine: "
                    f"{spk['round_engine']['rounds']} rounds, "
                    f"{spk['round_engine']['relations_finished_on_driver']:,} relations on the driver",
                    spk["spark_s"],
                    spk["rss"]["peak_jvm_plus_workers_rss_mb"],
                    spk["phases_s"],
                )
                contract = _contract_plan(args, used, figures["edges"])
                log.info(
                    "%s: checking (equality, batch statistics, contract: %s)", run_key, contract
                )
                chk = _child(
                    "check",
                    [
                        "--child-graph",
                        str(gdir),
                        "--child-params",
                        params_json,
                        "--child-batches",
                        str(ref_out.with_suffix(".batches.parquet")),
                        str(spk_out.with_suffix(".batches.parquet")),
                        "--child-contract",
                        contract,
                    ],
                    work / f"{run_key}.check.json",
                    work / f"{run_key}.check.log",
                    run_key,
                    prog,
                )
                eq, ct = chk["equality"], chk["contract"]
                exact = CLAIM not in used
                if exact and not eq["batches_equal"]:
                    log.error("%s: BATCHES DIFFER between Spark and the reference: %s", run_key, eq)
                    failures.append(f"{run_key}: batches differ from the reference")
                elif eq["exact_engine_batches_differing"]:
                    log.error("%s: exact-engine batches differ from the reference: %s", run_key, eq)
                    failures.append(f"{run_key}: exact-engine batches differ")
                if ct.get("checked") and ct["violations"]:
                    log.error("%s: CONTRACT VIOLATED: %s", run_key, ct)
                    failures.append(f"{run_key}: {ct['violations']} contract violations")
                diff = chk["stats_vs_reference"]
                spark_mb = spk["rss"]["peak_jvm_plus_workers_rss_mb"]
                rows.append(
                    {
                        "shape": shape,
                        "target_edges": size,
                        **figures,
                        "engine": engine,
                        "engine_used": used,
                        # what the product's default (engine=auto) runs on this graph
                        "auto_uses": CLAIM
                        if figures["largest_component_edges"] > local_max
                        else EXACT,
                        "partition_settings": settings,
                        "rounds": (spk["round_engine"] or {}).get("rounds"),
                        "relations_on_driver": (spk["round_engine"] or {}).get(
                            "relations_finished_on_driver"
                        ),
                        "spark_s": spk["spark_s"],
                        "reference_s": ref["reference_s"],
                        "ratio_spark_over_reference": _ratio(spk["spark_s"], ref["reference_s"]),
                        "spark_peak_rss_mb": spark_mb,
                        "spark_peak_pss_mb": spk["rss"]["peak_jvm_rss_plus_workers_pss_mb"],
                        "spark_jvm_rss_at_stage_start_mb": spk["rss"]["rss_at_stage_start_mb"][
                            "spark_jvm"
                        ],
                        "reference_peak_rss_mb": ref["child"]["maxrss_mb"],
                        "memory_ratio_spark_over_reference": _ratio(
                            spark_mb, ref["child"]["maxrss_mb"]
                        ),
                        "batches": eq["spark_batches"],
                        "reference_batches": eq["reference_batches"],
                        "batches_equal": eq["batches_equal"],
                        "contract": "violated"
                        if ct.get("checked") and ct["violations"]
                        else "ok"
                        if ct.get("checked")
                        else ct["reason"],
                        "vs_reference": {
                            "batches": diff["delta"].get("batches"),
                            "mean_edges_per_batch": [
                                diff["candidate"]["mean_edges"],
                                diff["reference"]["mean_edges"],
                            ],
                            "max_edges_per_batch": [
                                diff["candidate"]["max_edges"],
                                diff["reference"]["max_edges"],
                            ],
                            "mean_loss": [
                                diff["candidate"]["mean_loss"],
                                diff["reference"]["mean_loss"],
                            ],
                            "same_seeds": diff["same_seeds"],
                            "identical_batches": diff["same_batches"],
                            "relations_in_other_batch": diff["relations_moved"],
                        },
                        "other_load_cores_during_spark": spk["cpu"]["other_processes_cores"],
                        "other_load_cores_during_reference": ref["child"]["other_processes_cores"],
                        "generate_s": round(gen_s, 1),
                        "spark": spk,
                        "reference": ref,
                        "check": chk,
                    }
                )
    master = args.master
    pairs = [(sh, en) for sh in args.shape_list for en in args.engines[sh]]
    result = {
        "benchmark": NAME,
        "headline": {
            "crossover": {f"{sh}/{en}": crossover(rows, sh, en, master) for sh, en in pairs},
            "all_exact_batches_equal": not any("differ" in f for f in failures),
            "claim_contract": sorted({r["contract"] for r in rows if CLAIM in r["engine_used"]}),
            "table": [
                {
                    k: r[k]
                    for k in (
                        "shape",
                        "edges",
                        "nodes",
                        "components",
                        "largest_component_edges",
                        "engine",
                        "engine_used",
                        "auto_uses",
                        "rounds",
                        "relations_on_driver",
                        "spark_s",
                        "reference_s",
                        "ratio_spark_over_reference",
                        "spark_peak_rss_mb",
                        "spark_peak_pss_mb",
                        "reference_peak_rss_mb",
                        "memory_ratio_spark_over_reference",
                        "batches",
                        "reference_batches",
                        "batches_equal",
                        "contract",
                        "vs_reference",
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
            "product_engine_defaults": product_partition_defaults(),
            "claim_collect_threshold_default": (
                f"min(product collect_threshold, {CLAIM_COLLECT_SHARE:.0%} of the relations)"
            ),
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


def _pct(x: float, of: float) -> str:
    return f"{100.0 * x / of:.1f} %" if of else "-"


def summary_lines(res: dict[str, Any]) -> list[str]:
    h = res["headline"]
    lines = [
        "partition_scale (ece/edge_seed, "
        f"{res.get('machine', {}).get('spark_master', '?')} vs single-process reference):"
    ]
    for r in h["table"]:
        used = r["engine_used"]
        if r.get("rounds") is not None:
            used += f" {r['rounds']}r/{r['relations_on_driver']:,}drv"
        if r["engine"] != "auto" and r["engine_used"] == r.get("auto_uses"):
            used += " (=auto)"
        line = (
            f"  {r['shape']:>5} {r['edges']:>9,} edges {r['components']:>7,} comp "
            f"{r['engine']:>9}={used:<27}: spark {r['spark_s']:8.2f} s / ref "
            f"{r['reference_s']:8.2f} s = {r['ratio_spark_over_reference']:6.2f} x; peak RSS "
            f"{r['spark_peak_rss_mb']:,} MB (PSS {r.get('spark_peak_pss_mb', '?'):,} MB) vs "
            f"{r['reference_peak_rss_mb']:,} MB; {r['batches']:,} batches"
        )
        v = r["vs_reference"]
        if CLAIM in r["engine_used"]:
            me, re_ = v["mean_edges_per_batch"]
            ml, rl = v["mean_loss"]
            line += (
                f" (ref {r['reference_batches']:,}); contract {r['contract']}; identical "
                f"{_pct(v['identical_batches'], r['reference_batches'])}, relations moved "
                f"{_pct(v['relations_in_other_batch'], r['edges'])}, mean edges "
                f"{me:.3f} vs {re_:.3f}, max {v['max_edges_per_batch'][0]} vs "
                f"{v['max_edges_per_batch'][1]}, mean loss {ml:.4f} vs {rl:.4f}"
            )
        else:
            line += "; equal to reference" if r["batches_equal"] else "  BATCHES DIFFER"
        lines.append(line)
    for c in h["crossover"].values():
        lines.append(f"  crossover: {c['statement']}")
    for f in res.get("failures", []):
        lines.append(f"  FAILED: {f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        out = Path(args.child_out)
        if args.child == "reference":
            child_reference(Path(args.child_graph), out, args.child_params)
        elif args.child == "check":
            ref_path, spark_path = (Path(x) for x in args.child_batches)
            child_check(
                Path(args.child_graph),
                ref_path,
                spark_path,
                out,
                args.child_params,
                args.child_contract,
            )
        else:
            local_only_env()
            # the stage's own INFO lines (claim rounds) go to the child's log: progress
            logging.getLogger("graphgen_spark").setLevel(logging.INFO)
            child_spark(Path(args.child_graph), Path(args.child_warmup), out, args)
        return 0
    res = run_benchmark(NAME, args, run, summary_lines)
    if res["failures"]:
        print(f"FAILED: {'; '.join(res['failures'])}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
