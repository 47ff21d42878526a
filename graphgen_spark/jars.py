"""The pinned JVM artifacts (conf/jvm.yaml) and their local cache.

``make setup`` resolves each coordinate from Maven Central with Spark's own ``--packages``
machinery (Ivy) into ``.jars/``, one subprocess per coordinate so a failure names exactly
the artifact that could not be had. Local sessions then start offline from the cache.
Jars a user places in ``.jars/extra/`` are added as they are (for a machine that cannot
reach Maven Central).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from graphgen_spark.config import CONF_DIR, ROOT

JVM_FILE = CONF_DIR / "jvm.yaml"
MANIFEST = "manifest.json"
REQUIRED = ("delta",)  # GraphFrames is needed by the graph stages only; see resolve_all


@dataclass(frozen=True)
class Resolution:
    name: str
    coordinate: str
    jars: list[str]
    error: str | None = None


def coordinates() -> dict[str, str]:
    """name -> Maven coordinate, from the one pinned file."""
    data = yaml.safe_load(JVM_FILE.read_text(encoding="utf-8"))
    return dict(data["packages"])


def cache_dir(path: str | Path = ".jars") -> Path:
    p = Path(path)
    return p if p.is_absolute() else ROOT / p


def _probe_script(coord: str, ivy: Path) -> str:
    return (
        "from pyspark.sql import SparkSession\n"
        f"s = (SparkSession.builder.master('local[1]').config('spark.jars.packages', {coord!r})"
        f".config('spark.jars.ivy', {str(ivy)!r}).config('spark.ui.enabled', 'false')"
        ".getOrCreate())\n"
        "print('JARS=' + s.sparkContext.getConf().get('spark.jars', ''))\n"
        "s.stop()\n"
    )


def resolve_one(name: str, coord: str, cache: Path) -> Resolution:
    ivy = cache / "ivy"
    proc = subprocess.run(
        [sys.executable, "-c", _probe_script(coord, ivy)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("JARS=") and proc.returncode == 0:
            jars = [j.removeprefix("file://") for j in line[5:].split(",") if j]
            return Resolution(name, coord, jars)
    tail = " ".join(
        ln.strip() for ln in proc.stderr.splitlines() if "not found" in ln or "ERROR" in ln
    )
    return Resolution(name, coord, [], tail[-600:] or proc.stderr[-600:])


def resolve_all(cache_path: str | Path = ".jars", force: bool = False) -> list[Resolution]:
    """Resolve every pinned coordinate into the cache and write the manifest."""
    cache = cache_dir(cache_path)
    cache.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(cache)
    results = []
    for name, coord in coordinates().items():
        known = manifest.get(name)
        if (
            not force
            and known
            and known["coordinate"] == coord
            and all(Path(j).exists() for j in known["jars"])
        ):
            results.append(Resolution(name, coord, known["jars"]))
            continue
        results.append(resolve_one(name, coord, cache))
    ok = {r.name: {"coordinate": r.coordinate, "jars": r.jars} for r in results if not r.error}
    (cache / MANIFEST).write_text(json.dumps(ok, indent=2), encoding="utf-8")
    return results


def read_manifest(cache: Path) -> dict[str, dict]:
    path = cache / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def cached_jars(cache_path: str | Path = ".jars") -> list[str]:
    """All jars a local session should load: resolved ones plus ``extra/*.jar``."""
    cache = cache_dir(cache_path)
    jars = [j for entry in read_manifest(cache).values() for j in entry["jars"]]
    jars += sorted(str(p) for p in (cache / "extra").glob("*.jar"))
    return list(dict.fromkeys(jars))


def main() -> int:
    """`make setup` step: resolve the jars, explain any failure by coordinate."""
    failed_required = False
    for r in resolve_all():
        if r.error is None:
            print(f"jars: {r.coordinate} -> {len(r.jars)} jar(s) cached")
            continue
        required = r.name in REQUIRED
        failed_required |= required
        print(
            f"{'ERROR' if required else 'WARNING'}: could not resolve {r.coordinate} from Maven "
            f"Central ({r.error or 'no detail'}).\n"
            + (
                "  Delta tables cannot work without it."
                if required
                else "  Connected components and motif queries fall back to DataFrame joins "
                "(engine 'dataframe' in graph_stats) until the jar is available: run on a "
                "machine that reaches Maven Central, or copy "
                f"{r.coordinate.split(':')[1]}-{r.coordinate.split(':')[2]}.jar into "
                f"{cache_dir() / 'extra'}/."
            ),
            file=sys.stderr,
        )
    return 1 if failed_required else 0


if __name__ == "__main__":
    raise SystemExit(main())
