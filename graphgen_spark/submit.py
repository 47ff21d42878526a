"""``graphgen-spark submit``: the ``spark-submit`` command for a cluster, built and run.

Workers need nothing preinstalled but a Python of the driver's version: the job's Python
packages travel as a packed virtualenv (Spark's Python package management: ``venv-pack``,
``--archives ENV#environment``, executors start ``./environment/bin/python``). The env
holds exactly the versions the driver runs (read from this environment's metadata), minus
``pyspark`` and ``py4j``, which Spark puts on every Python worker's path itself; it is
built once per set of versions and kept in the user's cache. The JVM side comes from the
jars ``make setup`` cached (``--jars``) or, where the cluster reaches Maven Central,
``--packages``. The driver runs here (client mode) with this interpreter.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pyspark
import venv_pack
from packaging.requirements import Requirement

from graphgen_spark.config import ROOT
from graphgen_spark.errors import MissingArtifact, UsageError
from graphgen_spark.jars import cached_jars, coordinates
from graphgen_spark.tables import local_path

log = logging.getLogger("graphgen_spark")

DIST = "graphgen-spark"
PROVIDED_BY_SPARK = {"pyspark", "py4j"}  # on every Python worker's path already
ENV_ALIAS = "environment"  # the folder the archive is unpacked to on each executor
ENTRY = ROOT / "jobs" / "run_pipeline.py"


@dataclass(frozen=True)
class SubmitOptions:
    """The ``run`` arguments plus where and how to submit them."""

    master: str
    config: str
    output: str
    input: str | None = None
    stages: str | None = None
    packages: bool = False  # --packages (the cluster reaches Maven) instead of --jars
    conf: tuple[str, ...] = ()  # extra NAME=VALUE Spark settings
    python_env: str | None = None  # a packed env to ship instead of building one
    python_prefix: str | None = None  # where the workers' Python lives, if not where ours does


def command(opts: SubmitOptions, env_archive: Path) -> list[str]:
    """The full ``spark-submit`` argument list."""
    cmd = [spark_submit(), "--master", opts.master, "--deploy-mode", "client", *_jvm_args(opts)]
    cmd += ["--archives", f"{env_archive}#{ENV_ALIAS}"]
    settings = {
        "spark.pyspark.python": f"./{ENV_ALIAS}/bin/python",
        "spark.pyspark.driver.python": sys.executable,
    }
    for item in opts.conf:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--conf {item!r}: expected NAME=VALUE")
        settings[key] = value
    for key, value in settings.items():
        cmd += ["--conf", f"{key}={value}"]
    cmd += [str(ENTRY), "--config", _absolute(opts.config), "--output", _absolute(opts.output)]
    cmd += ["--input", _absolute(opts.input)] if opts.input else []
    cmd += ["--stages", opts.stages] if opts.stages else []
    return cmd


def _absolute(path: str) -> str:
    """A local path made absolute (the command may be run from elsewhere); URIs as given."""
    local = local_path(path)
    return str(local.resolve()) if local is not None and not path.startswith("file:") else path


def spark_submit() -> str:
    """``$SPARK_HOME/bin/spark-submit``, else the one inside the pyspark package."""
    home = os.environ.get("SPARK_HOME") or str(Path(pyspark.__file__).parent)
    return str(Path(home) / "bin" / "spark-submit")


def _jvm_args(opts: SubmitOptions) -> list[str]:
    if opts.packages:
        return ["--packages", ",".join(coordinates().values())]
    jars = cached_jars()
    if not any("delta-spark" in Path(j).name for j in jars):
        raise MissingArtifact(
            f"the local jar cache has no {coordinates()['delta']}: run `make setup` first, "
            "or pass --packages if the cluster reaches Maven Central"
        )
    return ["--jars", ",".join(jars)]


# -- the packed Python environment --------------------------------------------------------
def runtime_requirements() -> list[str]:
    """``name==version`` of every installed distribution the package needs at run time
    (its dependencies and its ``[spark]`` extra, recursively), minus what Spark provides."""
    pinned: dict[str, str] = {}
    todo = [DIST]
    while todo:
        name = todo.pop()
        extra = "spark" if name == DIST else ""  # the package's [spark] extra: delta's Python side
        for spec in metadata.distribution(name).requires or []:
            req = Requirement(spec)
            if req.marker is not None and not req.marker.evaluate({"extra": extra}):
                continue
            dep = req.name.lower().replace("_", "-")
            if dep in pinned or dep in PROVIDED_BY_SPARK:
                continue
            pinned[dep] = metadata.version(dep)
            todo.append(dep)
    return sorted(f"{n}=={v}" for n, v in pinned.items())


def python_env(opts: SubmitOptions, cache: Path | None = None) -> Path:
    """The packed env to ship: the user's, or one built for these versions (cached).

    The third-party packages are installed once per set of versions into a kept virtualenv;
    a change to this package's code only reinstalls the package and packs again.
    """
    if opts.python_env:
        path = Path(opts.python_env)
        if not path.is_file():
            raise UsageError(f"--python-env {path}: no such file")
        return path
    reqs = runtime_requirements()
    deps = _digest(sys.version, *reqs)
    own = _digest(opts.python_prefix or "", _source_digest())
    home = (cache or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))) / DIST
    archive = home / f"python-env-{deps}-{own}.tar.gz"
    if archive.is_file():
        log.info("submit: shipping the cached Python env %s", archive)
        return archive
    t0 = time.monotonic()
    env = _deps_env(home / f"venv-{deps}", reqs)
    _pip(env, "--force-reinstall", str(ROOT), what=f"install {DIST} from {ROOT}")
    for old in home.glob(f"python-env-{deps}-*.tar.gz"):
        old.unlink()  # one archive per set of versions: each is some 200 MB
    partial = home / f"{archive.name}.partial"
    venv_pack.pack(
        prefix=str(env), output=str(partial), format="tar.gz", python_prefix=opts.python_prefix
    )
    partial.replace(archive)  # a killed build never leaves a half archive under the name
    size = archive.stat().st_size / 1e6
    log.info(
        "submit: packed the Python env %s (%.0f MB) in %.0f s", archive, size, time.monotonic() - t0
    )
    return archive


def _deps_env(env: Path, reqs: list[str]) -> Path:
    """A virtualenv with exactly ``reqs``; made once, marked complete only when it is."""
    done = env / ".complete"
    if done.is_file():
        return env
    shutil.rmtree(env, ignore_errors=True)
    _run([sys.executable, "-m", "venv", "--without-pip", str(env)], "create a virtualenv")
    _pip(env, *reqs, what="install the pinned requirements")
    done.touch()
    return env


def _pip(env: Path, *args: str, what: str) -> None:
    python = str(env / "bin" / "python")
    _run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", *args], what
    )


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _source_digest() -> str:
    """The package's own files: a changed module means a new archive."""
    h = hashlib.sha256()
    package = ROOT / "graphgen_spark"
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(package)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise MissingArtifact(f"submit: could not {what}: {proc.stderr.strip()[-800:]}")
