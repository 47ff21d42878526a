"""Benchmarks of graphgen-spark (``make bench`` = ``python -m bench``).

Each benchmark measures ratios within one run (achieved / capacity, rows per second of the
same run) and records them as JSON under ``bench/results/`` together with the machine facts
(cores, load, Python/Spark/Delta/Java versions, date, git revision) and the configuration
used. This module holds what the benchmarks share: machine facts, result files, a per-process
CPU meter, the local Spark settings, benchmark child processes (with a progress heartbeat and
an optional timeout) and the stand-in endpoint as a child process.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
ROOT = BENCH_DIR.parent

# Local Spark that listens on the loopback interface only and has no web UI.
LOCAL_SPARK_CONF = {
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.sql.sources.parallelPartitionDiscovery.parallelism": "2",
}


def local_only_env() -> None:
    """Make the local JVM bind to the loopback interface (read when the JVM starts)."""
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"


def setup_logging(verbose: bool = True) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("py4j", "httpx", "openai", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("graphgen_spark").setLevel(logging.INFO)


def install_sigterm_exit() -> None:
    """SIGTERM raises SystemExit so ``finally`` blocks (stopping the stand-in) still run."""

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


# -- machine facts --------------------------------------------------------------------------
def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip()
    except Exception:
        return None


def _mem_total_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine_facts(spark: Any = None) -> dict[str, Any]:
    import pyspark

    facts: dict[str, Any] = {
        "date_utc": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "hostname_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "mem_total_gb": _mem_total_gb(),
        "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "os": platform.platform(),
        "python": platform.python_version(),
        "pyspark": pyspark.__version__,
    }
    try:
        from importlib.metadata import version

        facts["delta_spark"] = version("delta-spark")
        facts["openai"] = version("openai")
    except Exception:
        pass
    if spark is not None:
        try:
            jvm = spark.sparkContext._jvm
            facts["java"] = jvm.java.lang.System.getProperty("java.version")
            facts["spark_master"] = spark.sparkContext.master
            facts["spark_default_parallelism"] = spark.sparkContext.defaultParallelism
        except Exception:
            pass
    head = _git("rev-parse", "--short", "HEAD")
    if head:
        status = _git("status", "--porcelain", "--untracked-files=no") or ""
        facts["git_head"] = head + ("-dirty" if status else "")
    return facts


def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    os.replace(tmp, path)
    return path


def add_run_args(p: argparse.ArgumentParser, shuffle_partitions: int, driver_memory: str) -> None:
    """The options every benchmark takes: its Spark, its work directory, where results go."""
    p.add_argument("--master", default="local[2]")
    p.add_argument("--shuffle-partitions", type=int, default=shuffle_partitions)
    p.add_argument("--driver-memory", default=driver_memory)
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--no-write", action="store_true", help="do not write bench/results")
    p.add_argument("--json", default=None, help="also write the result to this path")


def add_child_args(p: argparse.ArgumentParser) -> None:
    """The options of a benchmark that runs its measurements in child processes."""
    p.add_argument("--sample-interval", type=float, default=0.25, help="RSS sampling (s)")
    p.add_argument(
        "--progress-interval", type=float, default=60.0, help="log a running child every N s"
    )


def run_args(args: argparse.Namespace) -> list[str]:
    """The :func:`add_run_args` Spark options again, for a child process of the benchmark."""
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


def finish(
    name: str,
    res: dict[str, Any],
    args: argparse.Namespace,
    summary_lines: Callable[[dict[str, Any]], list[str]],
) -> None:
    """Record a benchmark's result (``bench/results/<name>.json`` unless ``--no-write``, and
    ``--json PATH``) and print its summary lines."""
    if not args.no_write:
        logging.getLogger(f"bench.{name}").info("wrote %s", write_result(name, res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str) + "\n")
    print("\n".join(summary_lines(res)))


def run_benchmark(
    name: str,
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace], dict[str, Any]],
    summary_lines: Callable[[dict[str, Any]], list[str]],
) -> dict[str, Any]:
    """A benchmark's ``main``: logging, SIGTERM as SystemExit, a loopback-only JVM, then
    ``run(args)``, its result recorded and summarised (:func:`finish`)."""
    setup_logging()
    install_sigterm_exit()
    local_only_env()
    res = run(args)
    finish(name, res, args, summary_lines)
    return res


def read_result(name: str) -> dict[str, Any] | None:
    path = RESULTS_DIR / f"{name}.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


# -- Spark job timeline ----------------------------------------------------------------------
def spark_jobs(
    spark, group: str | None, since: float | None = None, until: float | None = None
) -> list[dict[str, Any]]:
    """Finished Spark jobs of a job group from the driver's status store (no UI needed).

    ``group=None`` takes the jobs of every group (jobs submitted from other driver threads
    carry no group); ``since`` / ``until`` (unix seconds) keep jobs submitted in that window.
    The store keeps at most ``spark.ui.retainedJobs`` jobs (default 1000).
    """
    store = spark.sparkContext._jsc.sc().statusStore()
    it = store.jobsList(None).iterator()
    out = []
    while it.hasNext():
        j = it.next()
        g = j.jobGroup()
        if group is not None and not (g.isDefined() and g.get() == group):
            continue
        sub, comp = j.submissionTime(), j.completionTime()
        if not (sub.isDefined() and comp.isDefined()):
            continue
        submitted = sub.get().getTime() / 1000.0
        if (since is not None and submitted < since) or (until is not None and submitted > until):
            continue
        desc = j.description()
        out.append(
            {
                "job": int(j.jobId()),
                "name": str(j.name()),
                "description": str(desc.get()) if desc.isDefined() else None,
                "group": str(g.get()) if g.isDefined() else None,
                "start": submitted,
                "end": comp.get().getTime() / 1000.0,
                "tasks": int(j.numTasks()),
            }
        )
    return sorted(out, key=lambda r: r["start"])


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    total, cur = 0.0, None
    for a, b in sorted(intervals):
        if cur is None or a > cur[1]:
            if cur:
                total += cur[1] - cur[0]
            cur = [a, b]
        else:
            cur[1] = max(cur[1], b)
    if cur:
        total += cur[1] - cur[0]
    return total


def callsite(job: dict[str, Any]) -> str:
    name = job["name"]
    m = re.search(r"at (.+?):(\d+)$", name)
    site = f"{m.group(1).rsplit('/', 1)[-1]}:{m.group(2)}" if m else name
    op = name.split(" at ", 1)[0]
    return f"{op} @ {site}"


# -- CPU accounting -------------------------------------------------------------------------
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stat(pid: int) -> tuple[str, int, float] | None:
    """(comm, ppid, cpu seconds user+system) of a live process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    rest = raw[raw.rindex(")") + 2 :].split()
    ppid = int(rest[1])
    utime, stime = int(rest[11]), int(rest[12])
    return comm, ppid, (utime + stime) / _TICK


def _machine_cpu() -> tuple[float, float]:
    """(busy seconds, total seconds) summed over all CPUs since boot."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    vals = [int(x) for x in fields[:8]]
    idle = vals[3] + vals[4]
    total = sum(vals)
    return (total - idle) / _TICK, total / _TICK


class CpuMeter:
    """CPU seconds of this process tree (driver, JVM, Python workers) and extra processes.

    ``start()`` / ``stop()`` snapshot /proc; processes that exit in between lose their share,
    so the per-role figures are lower bounds; the machine-wide busy fraction is exact.
    """

    def __init__(self, extra: dict[str, int] | None = None) -> None:
        self.extra = extra or {}
        self._start: dict[int, tuple[str, float]] = {}
        self._m0 = (0.0, 0.0)
        self._t0 = 0.0
        self.result: dict[str, Any] = {}

    def _roles(self) -> dict[int, tuple[str, float]]:
        me = os.getpid()
        table: dict[int, tuple[str, int, float]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                st = _proc_stat(int(entry))
                if st:
                    table[int(entry)] = st
        children: dict[int, list[int]] = {}
        for pid, (_, ppid, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        roles: dict[int, tuple[str, float]] = {}
        extra_pids = {pid: role for role, pid in self.extra.items()}

        def walk(pid: int, inherited: str | None) -> None:
            comm, _, cpu = table[pid]
            if pid in extra_pids:
                role = extra_pids[pid]
            elif pid == me:
                role = "driver_python"
            elif comm == "java":
                role = "spark_jvm"
            elif inherited in ("spark_jvm", "spark_python_workers"):
                role = "spark_python_workers"
            else:
                role = inherited or "other_children"
            roles[pid] = (role, cpu)
            for c in children.get(pid, []):
                walk(c, role)

        if me in table:
            walk(me, None)
        for pid in self.extra.values():
            if pid in table and pid not in roles:
                walk(pid, None)
        return roles

    def start(self) -> None:
        self._start = self._roles()
        self._m0 = _machine_cpu()
        self._t0 = time.monotonic()

    def stop(self) -> dict[str, Any]:
        wall = time.monotonic() - self._t0
        m1 = _machine_cpu()
        end = self._roles()
        per_role: dict[str, float] = {}
        for pid, (role, cpu) in end.items():
            before = self._start.get(pid, (role, 0.0))[1]
            per_role[role] = per_role.get(role, 0.0) + max(0.0, cpu - before)
        busy = m1[0] - self._m0[0]
        total = m1[1] - self._m0[1]
        cores = os.cpu_count() or 1
        ours = sum(per_role.values())
        self.result = {
            "wall_s": round(wall, 2),
            "machine_busy_fraction": round(busy / total, 3) if total else None,
            "machine_busy_core_s": round(busy, 1),
            "cpu_s_by_role": {k: round(v, 1) for k, v in sorted(per_role.items())},
            "cores_used_by_role": {
                k: round(v / wall, 2) for k, v in sorted(per_role.items()) if wall
            },
            "other_processes_core_s": round(max(0.0, busy - ours), 1),
            "other_processes_cores": round(max(0.0, busy - ours) / wall, 2) if wall else None,
            "load_avg_1_5_15_at_end": [round(x, 2) for x in os.getloadavg()],
            "cores": cores,
        }
        return self.result


# -- the stand-in endpoint as a separate process --------------------------------------------
def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class StandinProcess:
    """``python -m graphgen_spark.standin`` on 127.0.0.1 with a free port; SIGTERM to stop."""

    def __init__(self, latency_ms: float, max_concurrency: int, log_path: Path) -> None:
        self.latency_ms = latency_ms
        self.max_concurrency = max_concurrency
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.port: int | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> str:
        port_file = self.log_path.with_suffix(".port")
        port_file.unlink(missing_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "graphgen_spark.standin",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--latency-ms",
            str(self.latency_ms),
            "--max-concurrency",
            str(self.max_concurrency),
        ]
        log_file = open(self.log_path, "w")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            cmd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )
        log_file.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if port_file.exists():
                self.port = int(port_file.read_text().strip())
                return self.base_url
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"stand-in did not start; see {self.log_path}")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        rc = self.proc.returncode
        self.proc = None
        return rc

    # -- counters ----------------------------------------------------------------------------
    def _http(self, method: str, path: str) -> dict[str, Any]:
        import urllib.request

        req = urllib.request.Request(self.root_url + path, method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def stats(self) -> dict[str, Any]:
        return self._http("GET", "/stats")

    def reset_stats(self) -> dict[str, Any]:
        return self._http("POST", "/stats/reset")


# -- benchmark child processes ----------------------------------------------------------------
def last_line(path: Path, limit: int = 200) -> str:
    """The last non-blank line of a (log) file, at most ``limit`` characters."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            lines = [x for x in f.read().decode("utf-8", "replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return lines[-1][:limit] if lines else ""


@dataclasses.dataclass(frozen=True)
class ChildRun:
    """How a child process ended: exit code, wall seconds, its rusage (CPU, ``ru_maxrss``; a
    child's own children count only once reaped), machine-wide busy CPU seconds meanwhile,
    and whether it was stopped for running past its timeout."""

    returncode: int
    wall_s: float
    rusage: Any
    machine_busy_s: float
    timed_out: bool = False


def run_child(
    cmd: list[str],
    log_path: Path,
    label: str = "",
    progress_s: float = 0.0,
    timeout_s: float | None = None,
    log: logging.Logger | None = None,
) -> ChildRun:
    """Run ``cmd`` (stdout and stderr to ``log_path``) and wait for it; every ``progress_s``
    seconds log that it is still running, with its last log line. After ``timeout_s`` it gets
    SIGTERM, 30 s later SIGKILL (a PySpark JVM exits when its driver's pipe closes)."""
    log = log or logging.getLogger("bench")
    m0 = _machine_cpu()
    t0 = time.monotonic()
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(progress_s):
            log.info(
                "%s still running, %.0f s; last: %s",
                label,
                time.monotonic() - t0,
                last_line(log_path) or "-",
            )

    beat = threading.Thread(target=heartbeat, daemon=True)
    timed_out = False
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            cmd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
        )
        if progress_s > 0:
            beat.start()
        try:
            if timeout_s is None:
                _, status, ru = os.wait4(proc.pid, 0)
            else:
                deadline, kill_at = t0 + timeout_s, None
                while True:
                    pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
                    if pid:
                        break
                    now = time.monotonic()
                    if kill_at is None and now > deadline:
                        timed_out = True
                        log.warning("%s: past its %.0f s timeout, stopping it", label, timeout_s)
                        proc.send_signal(signal.SIGTERM)
                        kill_at = now + 30
                    elif kill_at is not None and now > kill_at:
                        proc.kill()
                        kill_at = float("inf")
                    time.sleep(0.2)
        except BaseException:
            proc.kill()
            raise
        finally:
            done.set()
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    m1 = _machine_cpu()
    return ChildRun(proc.returncode, wall, ru, m1[0] - m0[0], timed_out)


@contextlib.contextmanager
def standin(latency_ms: float, max_concurrency: int, work_dir: Path) -> Iterator[StandinProcess]:
    proc = StandinProcess(latency_ms, max_concurrency, work_dir / "standin.log")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@contextlib.contextmanager
def work_directory(keep: bool, prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        if keep:
            print(f"kept work directory {path}", file=sys.stderr)
        else:
            import shutil

            shutil.rmtree(path, ignore_errors=True)
