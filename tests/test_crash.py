"""A run killed mid-extract, another run refused while it ran, and the rerun after the kill.

The job runs as its own process (``graphgen-spark run``) against the stand-in over HTTP; it
is killed with SIGKILL to its whole process group (driver, JVM, Python workers) while the
extract waves are in flight. The rerun must end with the tables of an uninterrupted run,
and the endpoint must have seen, beyond the uninterrupted run's requests, at most those in
flight at the kill.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from graphgen_spark.config import load_config
from graphgen_spark.lease import OutputInUse
from graphgen_spark.llm.ledger import Ledger
from graphgen_spark.pipeline import run_pipeline
from graphgen_spark.standin import StandinOptions, StandinServer
from graphgen_spark.tables import Tables

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["ingest", "chunk", "extract"]
# what differs between two runs that did the same work
VOLATILE = {"run_id", "updated_at", "created_at", "attempts", "latency_ms", "ingested_at"}
COMPARED = ("documents", "chunks", "extractions", "entity_mentions", "relation_mentions")


def _corpus(path: Path, n: int) -> Path:
    path.mkdir()
    with (path / "docs.jsonl").open("w") as f:
        for i in range(n):
            text = (
                f"Marta Quill{i} founded the Lantern{i} Guild in Varnholt{i}. "
                f"The Lantern{i} Guild trained Oskar Brenn{i}, who later mapped the "
                f"Saltmarsh{i} Coast for the Guild."
            )
            f.write(json.dumps({"id": f"doc-{i}", "content": text}) + "\n")
    return path


def _config(path: Path, url: str) -> Path:
    data = {
        "spark": {"master": "local[2]", "shuffle_partitions": 4},
        "llm": {
            "backoff_min_s": 0.01,
            "backoff_max_s": 0.05,
            "concurrency_per_task": 8,
            "wave_seconds": 4,
            "synthesizer": {"base_url": url, "model": "standin", "timeout_s": 10},
            "trainee": {"base_url": url, "model": "standin"},
        },
        "run": {"lease_ttl_s": 600},
    }
    path.write_text(yaml.safe_dump(data))
    return path


def _content(tables: Tables, name: str) -> list[str]:
    if not tables.exists(name):
        return []
    out = []
    for row in tables.read(name).collect():
        d = {k: v for k, v in row.asDict(recursive=True).items() if k not in VOLATILE}
        out.append(json.dumps(d, sort_keys=True, default=str))
    return sorted(out)


def _answers(tables: Tables) -> list[tuple]:
    calls = tables.read("llm_calls").select("request_id", "status", "parsed").collect()
    return sorted(tuple(r) for r in calls)


def _wait_for(server: StandinServer, proc: subprocess.Popen, ok: int, log: Path) -> None:
    deadline = time.monotonic() + 240
    while server.stats()["completions_ok"] < ok:
        if proc.poll() is not None:
            pytest.fail(f"the run ended before the kill:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"the run did not reach {ok} answers:\n{log.read_text()[-3000:]}")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def reference(spark, tmp_path_factory):
    """An uninterrupted run on a clean endpoint: its tables and what it paid for."""
    tmp = tmp_path_factory.mktemp("reference")
    corpus = _corpus(tmp / "corpus", 200)
    with StandinServer(StandinOptions(latency_ms=100), announce=False) as server:
        cfg = load_config(_config(tmp / "cfg.yaml", server.base_url))
        run_pipeline(cfg, str(corpus), tmp / "out", STAGES, spark=spark)
        paid = server.stats()["requests_total"]
    assert paid >= 200
    return corpus, Tables(spark, tmp / "out"), paid


def _same_tables(tables: Tables, ref: Tables) -> None:
    for name in COMPARED:
        assert _content(tables, name) == _content(ref, name), name
    assert _answers(tables) == _answers(ref)


def _rows_lost(tables: Tables, ref: Tables) -> int:
    """Rows of the reference's tables that the run's tables do not have."""
    return sum(len(set(_content(ref, n)) - set(_content(tables, n))) for n in COMPARED)


def matrix_line(scenario: str, in_flight: int | str, paid_twice: int, lost: int) -> str:
    """One row of the fault matrix the crash tests print (``pytest -s``)."""
    return (
        f"fault matrix | {scenario:<34} | in flight at the fault {in_flight!s:>4} | "
        f"paid twice {paid_twice:>4} | rows lost {lost}"
    )


def test_a_killed_run_reruns_to_the_same_tables_paying_only_for_what_was_in_flight(
    spark, tmp_path, reference
):
    corpus, ref_tables, paid_once = reference
    with StandinServer(StandinOptions(latency_ms=100), announce=False) as server:
        cfg_path = _config(tmp_path / "cfg.yaml", server.base_url)
        cfg = load_config(cfg_path)

        out = tmp_path / "out"
        log = tmp_path / "killed.log"
        cmd = [sys.executable, "-m", "graphgen_spark.cli", "run", "--config", str(cfg_path)]
        cmd += ["--input", str(corpus), "--output", str(out), "--stages", ",".join(STAGES)]
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            # a second run on the same output while the first extracts: refused at once
            _wait_for(server, proc, 60, log)
            t0 = time.monotonic()
            with pytest.raises(OutputInUse, match=rf"in use by run .*pid {proc.pid}\b"):
                run_pipeline(cfg, str(corpus), out, STAGES, spark=spark)
            assert time.monotonic() - t0 < 10

            _wait_for(server, proc, 150, log)
            # answers are held back a moment before the kill, so that every answer sent was
            # also received: the endpoint's in-flight gauge is then exactly what the job
            # was still waiting for (answers on the wire at a real kill are in flight too)
            server.hold()
            time.sleep(1.0)
            in_flight = server.stats()["in_flight"]
            os.killpg(proc.pid, signal.SIGKILL)
            server.release()
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        # the same command again: the dead holder's lease is freed (its process is gone)
        run_pipeline(cfg, str(corpus), out, STAGES, spark=spark)
        paid_twice = server.stats()["requests_total"] - paid_once
    lost = _rows_lost(Tables(spark, out), ref_tables)
    print(matrix_line("SIGKILL driver group mid-extract", in_flight, paid_twice, lost))
    assert in_flight > 0 and 0 <= paid_twice <= in_flight
    _same_tables(Tables(spark, out), ref_tables)
    assert not (out / "_lease.json").exists()


FAULTS = ("429", "500", "502", "503", "hang", "drop", "truncated", "invalid_json", "empty")


def test_transient_faults_do_not_change_the_tables(spark, tmp_path, reference):
    """20 % of requests fail in every way the stand-in knows; the run, rerun once if it
    left requests not done, ends with the clean run's tables and answers."""
    corpus, ref_tables, paid_once = reference
    opts = StandinOptions(
        latency_ms=20, fault_rate=0.2, faults=FAULTS, retry_after_s=0.05, hang_s=3.0, seed=7
    )
    with StandinServer(opts, announce=False) as server:
        cfg = load_config(_config(tmp_path / "cfg.yaml", server.base_url))
        cfg = cfg.model_copy(
            update={
                "llm": cfg.llm.model_copy(
                    update={
                        "synthesizer": cfg.llm.synthesizer.model_copy(update={"timeout_s": 1.0})
                    }
                )
            }
        )
        out = tmp_path / "out"
        tables = Tables(spark, out)
        run_id = run_pipeline(cfg, str(corpus), out, STAGES, spark=spark)
        left = Ledger(spark, tables, run_id, logging.getLogger("test")).left_by_stage(run_id)
        if left:
            run_id = run_pipeline(cfg, str(corpus), out, STAGES, spark=spark)
            assert not Ledger(spark, tables, run_id, logging.getLogger("test")).left_by_stage(
                run_id
            )
        stats = server.stats()
    print(f"faults: {stats['faults_by_kind']}, requests not done after run 1: {left}")
    # a fault is a request sent again by design; an answer delivered twice would be paid
    # twice (a hang the client gave up on may still be answered, and billed, by the server)
    paid_twice = stats["completions_ok"] - paid_once
    print(
        matrix_line("20 % mixed transient faults", "-", paid_twice, _rows_lost(tables, ref_tables))
    )
    assert stats["faults_total"] >= 0.1 * stats["requests_total"]
    assert 0 <= paid_twice <= stats["faults_by_kind"].get("hang", 0)
    _same_tables(tables, ref_tables)


def test_a_run_with_requests_left_says_so_in_its_last_line_and_exit_code(spark, tmp_path, capsys):
    """Every extraction request fails (HTTP 500, no retries) but the stage may leave them
    all (max_failed_fraction 1): the run finishes, and its last line and exit code say
    how many requests are not done, per stage."""
    from graphgen_spark.cli import main
    from graphgen_spark.errors import ExitCode

    corpus = _corpus(tmp_path / "corpus", 3)
    opts = StandinOptions(fail_first=1000, faults=("500",))
    with StandinServer(opts, announce=False) as server:
        cfg = yaml.safe_load(_config(tmp_path / "cfg.yaml", server.base_url).read_text())
        cfg["llm"]["max_retries"] = 0
        cfg["extract"] = {"max_failed_fraction": 1.0}
        (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
        args = ["run", "--config", str(tmp_path / "cfg.yaml"), "--input", str(corpus)]
        code = main([*args, "--output", str(tmp_path / "out"), "--stages", ",".join(STAGES)])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert code == ExitCode.REQUESTS_LEFT
    assert "request(s) not done (extract " in last and "rerun the same command" in last


def test_a_budget_stop_exits_with_its_own_code_and_says_how_to_go_on(spark, tmp_path, capsys):
    """run.max_tokens below one extraction's estimate: nothing is sent, the run stops with
    the budget's exit code, and its last line says to raise the budget and rerun."""
    from graphgen_spark.cli import main
    from graphgen_spark.errors import ExitCode

    corpus = _corpus(tmp_path / "corpus", 2)
    with StandinServer(StandinOptions(), announce=False) as server:
        cfg = yaml.safe_load(_config(tmp_path / "cfg.yaml", server.base_url).read_text())
        cfg["run"]["max_tokens"] = 50
        (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
        args = ["run", "--config", str(tmp_path / "cfg.yaml"), "--input", str(corpus)]
        code = main([*args, "--output", str(tmp_path / "out"), "--stages", ",".join(STAGES)])
        sent = server.stats()["requests_total"]
    err = capsys.readouterr().err.strip().splitlines()
    assert code == ExitCode.BUDGET == 5 and sent == 0
    assert (
        err[-1].startswith("next: raise run.max_cost / run.max_tokens")
        and "(exit code 5)" in err[-1]
    )
    assert not any("Traceback" in line for line in err)
