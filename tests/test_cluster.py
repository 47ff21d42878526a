"""The pipeline through spark-submit on a real standalone cluster on 127.0.0.1.

A master and two one-core workers are started with the ``spark-class`` launcher shipped in
the pyspark package; the job must run tasks on both workers' executors (read from the
Spark event log) and produce the same tables as a local run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyspark
import pytest
import yaml
from eventlog import spark_events
from graphs import write_generated_graph
from test_crash import matrix_line

from graphgen_spark.config import build_config
from graphgen_spark.jars import coordinates
from graphgen_spark.pipeline import run_pipeline
from graphgen_spark.session import has_graphframes
from graphgen_spark.standin import StandinOptions, StandinServer
from graphgen_spark.tables import Tables

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[1]
SPARK_HOME = Path(pyspark.__file__).parent
CORPUS = ROOT / "examples" / "corpus"
CLUSTER_YAML = ROOT / "conf" / "cluster.yaml"
STAGES = "ingest,chunk"
SNAPSHOT_KEY = "spark.databricks.delta.snapshotPartitions"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [str(SPARK_HOME / "bin" / "spark-class"), *args],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # its own process group: executors die with it
    )


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _bare_python() -> str:
    """The interpreter this project's virtualenv was made from: none of its packages."""
    bare = str(Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}")
    probe = subprocess.run(
        [bare, "-c", "import pandas, pyarrow, graphgen_spark"], capture_output=True
    )
    assert probe.returncode != 0, f"{bare} is not bare: it imports the project's packages"
    return bare


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    bare = _bare_python()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYSPARK_PYTHON")}
    env.update(
        SPARK_HOME=str(SPARK_HOME),
        SPARK_LOCAL_IP="127.0.0.1",
        PYSPARK_PYTHON=bare,  # what a worker would start, were the env not shipped
        SPARK_WORKER_DIR=str(tmp / "work"),
    )
    port, ui = _free_port(), _free_port()
    url = f"spark://127.0.0.1:{port}"
    procs = [
        _spawn(
            [
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--webui-port",
                str(ui),
            ],
            tmp / "master.log",
            env,
        )
    ]
    try:
        for i in range(2):
            procs.append(
                _spawn(
                    [
                        "org.apache.spark.deploy.worker.Worker",
                        "--host",
                        "127.0.0.1",
                        "--cores",
                        "1",
                        "--memory",
                        "1g",
                        "--webui-port",
                        str(_free_port()),
                        "--work-dir",
                        str(tmp / f"work{i}"),
                        url,
                    ],
                    tmp / f"worker{i}.log",
                    env,
                )
            )
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=2) as r:
                    state = json.load(r)
                if sum(w["state"] == "ALIVE" for w in state["workers"]) == 2:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"standalone cluster did not come up; logs in {tmp}")
            time.sleep(1)
        yield {"url": url, "env": env, "tmp": tmp, "workers": state["workers"], "procs": procs}
    finally:
        for p in reversed(procs):
            _stop(p)


def _executor_tasks(event_dir: Path) -> tuple[dict[str, str], dict[str, int]]:
    """executor id -> worker (from its log URL), executor id -> finished task count."""
    workers: dict[str, str] = {}
    tasks: dict[str, int] = {}
    for ev in spark_events(event_dir):
        if ev["Event"] == "SparkListenerExecutorAdded":
            stdout_url = ev["Executor Info"].get("Log Urls", {}).get("stdout", "")
            workers[ev["Executor ID"]] = stdout_url.split("/logPage")[0]
        elif ev["Event"] == "SparkListenerTaskEnd":
            eid = ev["Task Info"]["Executor ID"]
            tasks[eid] = tasks.get(eid, 0) + 1
    return workers, tasks


def _stage_tasks(event_dir: Path) -> dict[str, int]:
    """Each completed stage's task count, by ``<stage id>: <stage name>``."""
    return {
        f"{i['Stage ID']}: {i['Stage Name']}": i["Number of Tasks"]
        for ev in spark_events(event_dir)
        if ev["Event"] == "SparkListenerStageCompleted"
        for i in [ev["Stage Info"]]
    }


def _rows(tables: Tables, name: str, order: str) -> list[dict]:
    return [r.asDict(recursive=True) for r in tables.read(name).orderBy(order).collect()]


def _submit(
    cluster: dict, tmp_path: Path, conf: dict, stages: str, out: Path, inp: Path | None = None
) -> Path:
    """``graphgen-spark submit`` on the cluster, as a user runs it: the cached jars and the
    packed Python env shipped to bare workers; returns the event-log folder."""
    cmd, events = _submit_command(cluster, tmp_path, conf, stages, out, inp)
    proc = subprocess.run(cmd, env=cluster["env"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    _assert_executors_used_the_shipped_env(cluster)
    return events


def _submit_command(
    cluster: dict, tmp_path: Path, conf: dict, stages: str, out: Path, inp: Path | None = None
) -> tuple[list[str], Path]:
    events = tmp_path / "events"
    events.mkdir()
    path = tmp_path / "cluster.yaml"
    shipped = yaml.safe_load(CLUSTER_YAML.read_text())  # its Spark settings, as users get them
    path.write_text(yaml.safe_dump({**conf, "spark": shipped["spark"]}))
    settings = {
        "spark.eventLog.enabled": "true",
        "spark.eventLog.compress": "false",
        "spark.eventLog.dir": str(events),
        "spark.executor.cores": "1",
        "spark.cores.max": "2",
        "spark.executor.memory": "1g",
    }
    cmd = [sys.executable, "-m", "graphgen_spark.cli", "submit", "--master", cluster["url"]]
    cmd += ["--config", str(path), "--output", str(out), "--stages", stages]
    cmd += ["--input", str(inp)] if inp else []
    for key, value in settings.items():
        cmd += ["--conf", f"{key}={value}"]
    return cmd, events


def _assert_executors_used_the_shipped_env(cluster: dict) -> None:
    """The executors' Python is the archive unpacked in their work folder: the workers'
    own Python has none of the project's packages."""
    unpacked = list(cluster["tmp"].glob("work*/app-*/*/environment/bin/python"))
    assert unpacked, f"no executor unpacked the Python env under {cluster['tmp']}"


def _assert_both_workers_ran_tasks(events: Path) -> None:
    workers, tasks = _executor_tasks(events)
    busy = {workers[e] for e, n in tasks.items() if e != "driver" and n > 0}
    assert len(busy) == 2, f"tasks ran on {busy} (executors {workers}, tasks {tasks})"


def _assert_adaptive_sizes(events: Path) -> None:
    """With conf/cluster.yaml's settings a tiny corpus makes small stages: adaptive execution
    coalesces the 200 shuffle partitions, and Delta rebuilds a snapshot in its 8 tasks (a
    fixed count, or Delta's default of 50, fails this)."""
    stages = _stage_tasks(events)
    snapshot = int(yaml.safe_load(CLUSTER_YAML.read_text())["spark"]["conf"][SNAPSHOT_KEY])
    big = {name: n for name, n in stages.items() if n > snapshot}
    print(f"cluster.yaml: {sum(stages.values())} tasks in {len(stages)} stages")
    assert not big, f"stages of more than {snapshot} tasks: {big}"


def test_spark_submit_on_a_standalone_cluster_matches_a_local_run(cluster, spark, tmp_path):
    """ingest and chunk on the bundled corpus; where the GraphFrames jar is present also the
    partition stage on a generated graph with every graph query on GraphFrames (components
    and the label-propagation cut of `community`), which must checkpoint under the output's
    scratch folder and clean it. Tasks run on both workers; the tables equal a local run's."""
    gf = has_graphframes(spark)
    conf = {
        "gap_scoring": "off",
        "graph": {"engine": "graphframes"},
        "generate": {"modes": ["aggregated", "cot"]},
        "partition": {"community": {"max_size": 6, "max_component_nodes": 40}},
    }
    stages = STAGES + (",partition" if gf else "")
    out_cluster, out_local = tmp_path / "cluster_out", tmp_path / "local_out"
    if gf:
        write_generated_graph(spark, Tables(spark, out_cluster))
        write_generated_graph(spark, Tables(spark, out_local))
    events = _submit(cluster, tmp_path, conf, stages, out_cluster, CORPUS)
    _assert_both_workers_ran_tasks(events)
    _assert_adaptive_sizes(events)
    assert not list((out_cluster / "_staging").glob("*")), "scratch and checkpoints are removed"

    # the same pipeline on a local session gives the same tables
    cfg = build_config({**conf, "spark": {"shuffle_partitions": 4}}, env=False)
    run_pipeline(cfg, str(CORPUS), out_local, stages.split(","), spark=spark)
    local, remote = Tables(spark, out_local), Tables(spark, out_cluster)
    docs_local = _rows(local, "documents", "doc_id")
    assert docs_local == _rows(remote, "documents", "doc_id") and len(docs_local) >= 5
    assert _rows(local, "chunks", "chunk_id") == _rows(remote, "chunks", "chunk_id")
    runs = remote.read("runs").collect()
    assert len(runs) == 1 and runs[0]["status"] == "ok"
    if not gf:
        pytest.skip(
            f"ingest and chunk matched; the GraphFrames part needs {coordinates()['graphframes']}"
        )
    got, want = (
        [{k: v for k, v in r.items() if k != "run_id"} for r in _rows(t, "subgraphs", "batch_id")]
        for t in (remote, local)
    )
    assert got == want and len(got) > 20
    engines = {r["graph_engine"] for r in got}
    assert "components=graphframes,label_propagation=graphframes" in engines


def test_a_worker_killed_mid_extract_costs_only_what_it_had_in_flight(cluster, spark, tmp_path):
    """Runs last: it kills a worker of the module's cluster. One worker (its JVM, executor
    and Python workers) dies by SIGKILL while extract's waves run on both; the failed
    tasks are retried on the other worker and reuse what the dead attempts journaled. The
    stage completes, the tables equal a local run's, and the endpoint saw, beyond a local
    run's requests, at most those in flight at the kill."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lines = [
        json.dumps(
            {
                "id": f"d{i}",
                "content": f"Ilse Maren{i} built the Harrow{i} Mill on "
                f"the Tiller{i} River. The Harrow{i} Mill ground wheat for Dunmore{i}.",
            }
        )
        for i in range(100)
    ]
    (corpus / "docs.jsonl").write_text("\n".join(lines) + "\n")
    with StandinServer(StandinOptions(latency_ms=150), announce=False) as server:
        llm = {
            "backoff_min_s": 0.01,
            "backoff_max_s": 0.05,
            "concurrency_per_task": 4,
            "wave_seconds": 30,
            "synthesizer": {"base_url": server.base_url, "model": "standin", "timeout_s": 10},
        }
        cfg = build_config({"llm": llm, "spark": {"shuffle_partitions": 4}}, env=False)
        run_pipeline(
            cfg, str(corpus), tmp_path / "local", ["ingest", "chunk", "extract"], spark=spark
        )
        paid_once = server.stats()["requests_total"]
        server.reset_stats()

        out = tmp_path / "cluster_out"
        cmd, _ = _submit_command(
            cluster, tmp_path, {"llm": llm}, "ingest,chunk,extract", out, corpus
        )
        log = tmp_path / "submit.log"
        job = subprocess.Popen(
            cmd,
            env=cluster["env"],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # spark-submit and its driver die with it
        )
        try:
            deadline = time.monotonic() + 600
            while server.stats()["completions_ok"] < 60:
                assert job.poll() is None, log.read_text()[-4000:]
                assert time.monotonic() < deadline, log.read_text()[-4000:]
                time.sleep(0.05)
            server.hold()  # every answer sent is received before the kill (see test_crash)
            time.sleep(1.0)
            in_flight = server.stats()["in_flight"]
            worker = cluster["procs"][1]
            os.killpg(worker.pid, signal.SIGKILL)
            server.release()
            assert job.wait(timeout=900) == 0, log.read_text()[-4000:]
        finally:
            if job.poll() is None:
                os.killpg(job.pid, signal.SIGKILL)
        paid_twice = server.stats()["requests_total"] - paid_once
    local, remote = Tables(spark, tmp_path / "local"), Tables(spark, out)
    names = ("extractions", "entity_mentions", "relation_mentions")
    lost = sum(len(set(_content(local, n)) - set(_content(remote, n))) for n in names)
    print(matrix_line("SIGKILL a worker mid-extract", in_flight, paid_twice, lost))
    assert in_flight > 0 and 0 <= paid_twice <= in_flight
    for name in names:
        assert _content(remote, name) == _content(local, name), name


def _content(tables: Tables, name: str) -> list[str]:
    """The table's rows without what differs between two runs doing the same work."""
    volatile = {"run_id", "attempts", "updated_at", "created_at"}
    return sorted(
        json.dumps(
            {k: v for k, v in r.asDict(recursive=True).items() if k not in volatile},
            sort_keys=True,
            default=str,
        )
        for r in tables.read(name).collect()
    )
