"""The command line a user meets first: `submit`, the exit codes and their last lines.

Each case runs the real command in a subprocess. The standalone-cluster run of `submit`,
with bare workers, is in test_cluster.py.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from graphgen_spark.errors import EXIT_CODES, NEXT_STEP, ExitCode, exit_code_for
from graphgen_spark.jars import coordinates
from graphgen_spark.submit import ENTRY, spark_submit

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "graphgen_spark.cli"]


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


JVM_LOG = re.compile(
    r"^(\d\d/\d\d/\d\d \d\d:\d\d:\d\d (INFO|WARN|ERROR) |Setting Spark log level|"
    r"Using Spark's default log4j profile|WARNING: Using incubator modules)"
)


def _stopped_cleanly(proc: subprocess.CompletedProcess, code: ExitCode) -> list[str]:
    """The command ended with ``code``, no traceback, and a last line saying what next.
    Under spark-submit the JVM's own log lines reach the same stream through another
    thread, so they are left out of the order."""
    text = proc.stderr or proc.stdout  # spark-submit sends the driver's stderr to stdout
    lines = [ln for ln in text.strip().splitlines() if not JVM_LOG.match(ln)]
    assert proc.returncode == code, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert lines[-1] == f"next: {NEXT_STEP[code]} (exit code {int(code)})"
    return lines


def test_every_exit_code_but_ok_says_what_to_do_next():
    assert set(NEXT_STEP) == set(ExitCode) - {ExitCode.OK}
    assert len({int(c) for c in ExitCode}) == len(ExitCode)
    for kind, code in EXIT_CODES.items():
        assert exit_code_for(kind("x")) == code
    assert exit_code_for(KeyError("x")) == ExitCode.FAILED


@pytest.mark.parametrize("command", ["run", "submit"])
def test_a_missing_input_stops_before_spark_starts(tmp_path, command):
    missing = tmp_path / "no-such-corpus"
    master = ["--master", "spark://127.0.0.1:1"] if command == "submit" else []
    proc = _cli(command, *master, "--input", str(missing), "--output", str(tmp_path / "out"))
    lines = _stopped_cleanly(proc, ExitCode.CONFIG)
    assert lines[-2] == f"UsageError: --input {missing}: no such file or folder"
    assert "Spark" not in proc.stderr and "log4j" not in proc.stderr  # no JVM was started
    assert not (tmp_path / "out").exists()


def test_spark_submit_without_the_jars_names_the_artifact_and_the_fix(tmp_path):
    """The README's old way, `spark-submit jobs/run_pipeline.py` with no jars: the job stops
    at session start with the Delta coordinate and how to pass it, not a Py4J error."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"spark": {"jars": "present"}}))
    cmd = [spark_submit(), "--master", "local[1]", "--conf", "spark.ui.enabled=false"]
    cmd += ["--conf", f"spark.pyspark.driver.python={sys.executable}", str(ENTRY)]
    cmd += ["--config", str(cfg), "--input", str(ROOT / "examples" / "corpus")]
    proc = subprocess.run(
        [*cmd, "--output", str(tmp_path / "out"), "--stages", "ingest"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    lines = _stopped_cleanly(proc, ExitCode.CONFIG)
    assert lines[-2].startswith("MissingArtifact: Delta Lake is not on the Spark classpath")
    assert coordinates()["delta"] in lines[-2] and "graphgen-spark submit" in lines[-2]


def test_submit_print_shows_a_command_that_ships_jars_and_python(tmp_path):
    env = tmp_path / "env.tar.gz"
    env.write_bytes(b"packed env")
    corpus = ROOT / "examples" / "corpus"
    args = ["submit", "--master", "spark://head:7077", "--input", str(corpus), "--print"]
    args += ["--output", "out", "--python-env", str(env), "--conf", "spark.executor.memory=2g"]
    proc = _cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cmd = shlex.split(proc.stdout.strip())
    assert cmd[:5] == [spark_submit(), "--master", "spark://head:7077", "--deploy-mode", "client"]
    jars = cmd[cmd.index("--jars") + 1].split(",")
    assert any("delta-spark" in Path(j).name for j in jars) and all(Path(j).is_file() for j in jars)
    assert cmd[cmd.index("--archives") + 1] == f"{env}#environment"
    confs = {cmd[i + 1] for i, a in enumerate(cmd) if a == "--conf"}
    assert "spark.pyspark.python=./environment/bin/python" in confs
    assert f"spark.pyspark.driver.python={sys.executable}" in confs
    assert "spark.executor.memory=2g" in confs
    tail = cmd[cmd.index(str(ENTRY)) + 1 :]
    assert tail[tail.index("--output") + 1] == str(tmp_path / "out")  # made absolute
    assert tail[tail.index("--input") + 1] == str(corpus)

    packages = _cli(*args, "--packages", cwd=tmp_path)
    cmd = shlex.split(packages.stdout.strip())
    assert cmd[cmd.index("--packages") + 1] == ",".join(coordinates().values())
    assert "--jars" not in cmd


def test_submit_refuses_a_malformed_conf(tmp_path):
    env = tmp_path / "env.tar.gz"
    env.write_bytes(b"packed env")
    proc = _cli(
        "submit", "--master", "spark://head:7077", "--output", "out", "--stages", "chunk",
        "--python-env", str(env), "--conf", "spark.executor.memory", "--print",
    )  # fmt: skip
    lines = _stopped_cleanly(proc, ExitCode.CONFIG)
    assert lines[-2] == "UsageError: --conf 'spark.executor.memory': expected NAME=VALUE"
