"""Databricks: the notebook run unchanged as a plain script on local Spark, the catalog table
mode end to end against the session catalog with Delta, and the bundle definition checked
with Databricks' own typed job model (``databricks-bundles``).

The only stand-in is ``Dbutils`` below (widgets and a secret scope); Spark, Delta, the
endpoint over HTTP and the pipeline are real.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from contexts import llm_conf
from databricks.bundles.jobs import Job

from graphgen_spark.config import ConfigError
from graphgen_spark.databricks import SECRET_KEYS, WIDGETS, _keys
from graphgen_spark.jars import coordinates
from graphgen_spark.pipeline import run_pipeline
from graphgen_spark.standin import StandinOptions, StandinServer
from graphgen_spark.tables import SCHEMAS, Tables

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "graphgen_spark.py"
VOLATILE = {"run_id", "updated_at", "created_at", "computed_at", "ingested_at", "latency_ms"}
VOLATILE |= {"attempts", "base_url", "started_at", "finished_at", "input", "output"}


class Dbutils:
    """The two parts of Databricks' ``dbutils`` the notebook uses."""

    def __init__(self, widgets: dict[str, str], secrets: dict[str, dict[str, str]]) -> None:
        self._values, self._secrets = dict(widgets), secrets
        self.widgets = SimpleNamespace(text=self._text, get=self._values.__getitem__)
        self.secrets = SimpleNamespace(list=self._list, get=self._get)

    def _text(self, name: str, default: str, label: str) -> None:
        self._values.setdefault(name, default)

    def _list(self, scope: str) -> list[SimpleNamespace]:
        if scope not in self._secrets:
            raise RuntimeError(f"Secret scope {scope} does not exist")
        return [SimpleNamespace(key=k) for k in self._secrets[scope]]

    def _get(self, scope: str, key: str) -> str:
        return self._secrets[scope][key]


def _rows(tables: Tables, name: str) -> list[str]:
    df = tables.read(name)
    kept = [c for c in df.columns if c not in VOLATILE]
    return sorted(
        json.dumps(r.asDict(recursive=True), default=str) for r in df.select(kept).collect()
    )


def _corpus(path: Path) -> Path:
    path.mkdir()
    docs = [
        "Ada Lovelace wrote the first program for Charles Babbage's Analytical Engine. "
        "Babbage designed the Analytical Engine in London.",
        "The Analytical Engine used punched cards, an idea taken from the Jacquard loom.",
    ]
    (path / "docs.jsonl").write_text("".join(json.dumps({"content": d}) + "\n" for d in docs))
    return path


def test_the_notebook_runs_as_a_script_and_catalog_tables_hold_the_folder_rows(spark, tmp_path):
    corpus = _corpus(tmp_path / "corpus")
    with StandinServer(StandinOptions(), announce=False) as server:
        conf = {
            "llm": llm_conf(server.base_url),
            "spark": {"jars": "present", "shuffle_partitions": 4},
            "generate": {"modes": ["atomic", "multi_hop"]},
        }
        cfg_path = tmp_path / "databricks.yaml"
        cfg_path.write_text(yaml.safe_dump(conf))
        spark.sql(f"CREATE SCHEMA IF NOT EXISTS gg_nb LOCATION '{tmp_path / 'warehouse'}'")
        widgets = {
            "input": str(corpus),
            "output": str(tmp_path / "nb_out"),
            "catalog": "spark_catalog",
            "schema": "gg_nb",
            "config": str(cfg_path),
        }
        dbutils = Dbutils(widgets, {"llm": {"synthesizer": "sk-from-the-scope"}})
        scope = runpy.run_path(str(NOTEBOOK), {"spark": spark, "dbutils": dbutils})

        from graphgen_spark.config import load_config

        folder = tmp_path / "folder_out"
        run_pipeline(load_config(cfg_path, env=False), str(corpus), folder, spark=spark)
    catalog, files = (
        Tables(spark, tmp_path / "nb_out", "spark_catalog", "gg_nb"),
        Tables(spark, folder),
    )
    assert scope["run_id"] and spark.catalog.tableExists("gg_nb.qa")
    written = [n for n in SCHEMAS if files.exists(n)]
    assert {"documents", "entities", "relations", "subgraphs", "qa", "llm_calls"} <= set(written)
    for name in written:
        if name != "runs":
            assert _rows(catalog, name) == _rows(files, name), name
    assert not (tmp_path / "nb_out" / "tables").exists()  # the tables live in the catalog
    assert _rows(catalog, "qa")


def test_keys_come_from_the_scope_and_a_missing_scope_names_the_widget():
    dbutils = Dbutils({}, {"llm": {"synthesizer": "sk-1", "unrelated": "x"}})
    assert _keys(dbutils, "llm") == {SECRET_KEYS["synthesizer"]: "sk-1"}
    with pytest.raises(ConfigError, match="widget secret_scope: cannot list scope 'nope'"):
        _keys(dbutils, "nope")


def test_the_bundle_defines_a_valid_job_running_the_notebook_with_every_widget():
    bundle = yaml.safe_load((ROOT / "databricks.yml").read_text())
    assert set(bundle) <= {"bundle", "variables", "artifacts", "resources", "targets", "include"}
    assert bundle["bundle"]["name"] == "graphgen-spark"
    (name, spec), *more = bundle["resources"]["jobs"].items()
    assert not more
    job = Job.from_dict(spec)  # raises on an unknown field or a wrong type
    assert {p.name for p in job.parameters} == set(WIDGETS)
    (task,) = job.tasks
    notebook = (ROOT / task.notebook_task.notebook_path).resolve()
    assert notebook == NOTEBOOK and notebook.read_text().startswith("# Databricks notebook source")
    libraries = {lib.whl or lib.maven.coordinates for lib in task.libraries}
    assert coordinates()["graphframes"] in libraries  # the same pin as conf/jvm.yaml
    (artifact,) = bundle["artifacts"].values()
    assert artifact["type"] == "whl" and "--no-deps" in artifact["build"]
    assert "./dist/*.whl" in libraries and "--wheel-dir dist" in artifact["build"]
    cluster = job.job_clusters[0].new_cluster
    assert (
        cluster.spark_version.endswith("scala2.13")
        and cluster.spark_conf["spark.speculation"] == "false"
    )
    for p in spec["parameters"]:  # every ${var.x} a parameter names is declared
        if p["default"].startswith("${var."):
            assert p["default"][6:-1] in bundle["variables"], p["name"]


def test_a_missing_catalog_schema_is_a_configuration_error_naming_the_keys(spark, tmp_path):
    tables = Tables(spark, tmp_path / "out", "spark_catalog", "no_such_schema")
    with pytest.raises(ConfigError, match=r"tables.catalog / tables.schema.*no_such_schema"):
        tables.check_schema()
