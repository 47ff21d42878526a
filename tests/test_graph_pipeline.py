"""The pipeline gives the same tables whoever answers its graph queries: GraphFrames on the
classpath, or a session without the GraphFrames jar (DataFrame joins).

Two graphs: the bundled demo corpus through every stage, and a generated graph with a giant
component, isolated entities and many small components through partition (every engine and
the label-propagation cut of `community`), generate and export."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from contexts import CORPUS, llm_conf
from graphs import write_generated_graph

from graphgen_spark.config import build_config
from graphgen_spark.jars import cached_jars, coordinates, read_manifest
from graphgen_spark.pipeline import NAMES, run_pipeline
from graphgen_spark.session import has_graphframes
from graphgen_spark.standin import StandinOptions, StandinServer
from graphgen_spark.tables import Tables

ROOT = Path(__file__).resolve().parents[1]
KEYS = {
    "entities": "entity_id",
    "relations": "edge_id",
    "subgraphs": "batch_id",
    "qa": "qa_id",
    "chunks": "chunk_id",
    "gap_scores": "element_id",
}
UPSTREAM = ["ingest", "chunk", "extract"]  # no graph query before merge
# columns that say who computed a row or when, not what it holds
PROVENANCE = {"run_id", "engine", "graph_engine", "computed_at"}


@pytest.fixture(autouse=True)
def _needs_graphframes(spark):
    if not has_graphframes(spark):
        pytest.skip(f"GraphFrames jar {coordinates()['graphframes']} is not on the classpath")


def content(tables: Tables, name: str, drop: set[str] = PROVENANCE) -> list[dict]:
    df = tables.read(name)
    cols = [c for c in df.columns if c not in drop]
    return [r.asDict(recursive=True) for r in df.select(*cols).orderBy(KEYS[name]).collect()]


def run_without_graphframes(
    tmp_path: Path, conf: dict, stages: str | None, inp: Path | None, out: Path
) -> None:
    """The CLI in a fresh process whose jar cache holds Delta only: GraphFrames is absent."""
    cache = tmp_path / "jars_without_graphframes"
    cache.mkdir()
    delta = read_manifest(ROOT / ".jars")["delta"]
    (cache / "manifest.json").write_text(json.dumps({"delta": delta}), encoding="utf-8")
    conf = {**conf, "spark": {**conf.get("spark", {}), "jar_cache": str(cache)}}
    path = tmp_path / "no_graphframes.yaml"
    path.write_text(yaml.safe_dump(conf), encoding="utf-8")
    cmd = [sys.executable, "-m", "graphgen_spark.cli", "run", "--config", str(path)]
    cmd += ["--output", str(out)] + (["--stages", stages] if stages else [])
    cmd += ["--input", str(inp)] if inp else []
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not any("graphframes" in j for j in read_manifest(cache)["delta"]["jars"])


def assert_same_outputs(a: Tables, b: Tables, names: list[str]) -> None:
    for name in names:
        assert content(a, name) == content(b, name), name
    exports_a = {p.name: p.read_bytes() for p in (Path(a.output_dir) / "export").glob("*.jsonl")}
    exports_b = {p.name: p.read_bytes() for p in (Path(b.output_dir) / "export").glob("*.jsonl")}
    assert exports_a and exports_a == exports_b


def graph_engines(tables: Tables) -> set[str]:
    return {r[0] for r in tables.read("subgraphs").select("graph_engine").distinct().collect()}


def test_demo_corpus_with_and_without_graphframes(spark, tmp_path):
    """The stages before merge ask no graph query: they run once and both sides start
    from a copy of their tables."""
    with StandinServer(StandinOptions(), announce=False) as server:
        conf = {
            "spark": {"master": "local[2]", "shuffle_partitions": 4},
            "llm": llm_conf(server.base_url),
            "graph": {"engine": "graphframes"},
        }
        upstream = tmp_path / "upstream"
        run_pipeline(build_config(conf, env=False), str(CORPUS), upstream, UPSTREAM, spark=spark)
        for side in ("with", "without"):
            shutil.copytree(upstream / "tables", tmp_path / side / "tables")
        rest = [s for s in NAMES if s not in UPSTREAM]
        with_gf = Tables(spark, tmp_path / "with")
        run_pipeline(build_config(conf, env=False), None, tmp_path / "with", rest, spark=spark)
        without = Tables(spark, tmp_path / "without")
        conf["graph"] = {"engine": "dataframe"}  # auto would take the driver's union-find
        run_without_graphframes(tmp_path, conf, ",".join(rest), None, tmp_path / "without")
    assert_same_outputs(with_gf, without, ["chunks", "entities", "relations", "subgraphs", "qa"])
    assert content(with_gf, "gap_scores") == content(without, "gap_scores")
    stats = {t: t.read("graph_stats").first().asDict() for t in (with_gf, without)}
    assert stats[with_gf]["engine"] == "graphframes" and stats[without]["engine"] == "dataframe"
    for s in stats.values():
        s.pop("engine"), s.pop("run_id"), s.pop("computed_at")
    assert stats[with_gf] == stats[without]
    assert graph_engines(with_gf) == {"components=graphframes"}
    assert graph_engines(without) == {"components=dataframe"}


def test_generated_graph_with_and_without_graphframes(spark, tmp_path):
    stages = "partition,generate,export"
    partition = {
        "engine": "rounds",  # exact rounds on the giant component: its balls are k-hop queries
        "max_depth": 2,
        "max_extra_edges": 3,
        "max_rounds": 2,
        "collect_threshold": 0,
        "community": {"max_size": 6, "max_component_nodes": 40},  # cut by label propagation
    }
    with StandinServer(StandinOptions(), announce=False) as server:
        conf = {
            "spark": {"master": "local[2]", "shuffle_partitions": 4},
            "llm": llm_conf(server.base_url),
            "gap_scoring": "off",
            "graph": {"engine": "graphframes"},
            "partition": partition,
            "generate": {
                "modes": ["aggregated", "multi_hop", "cot"],
                "methods": {"multi_hop": "triple"},  # the motif query
                "max_batches": 4,
            },
        }
        out = {"with": tmp_path / "with", "without": tmp_path / "without"}
        tables = {k: Tables(spark, p) for k, p in out.items()}
        for t in tables.values():
            write_generated_graph(spark, t)
        run_pipeline(
            build_config(conf, env=False), None, out["with"], stages.split(","), spark=spark
        )
        conf["graph"] = {"engine": "auto"}
        run_without_graphframes(tmp_path, conf, stages, None, out["without"])
    assert_same_outputs(tables["with"], tables["without"], ["subgraphs", "qa"])
    used = graph_engines(tables["with"])
    assert "components=graphframes,label_propagation=graphframes" in used  # the cut giant
    assert "components=graphframes,neighbourhood=graphframes" in used
    assert "components=graphframes,triplets=graphframes" in used
    assert all("graphframes" not in u for u in graph_engines(tables["without"]))
    assert all("dataframe" not in u for u in used)
    assert cached_jars()  # the in-process session had GraphFrames from the cache
