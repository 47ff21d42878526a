"""Running from a Databricks notebook or job: widgets in, keys from a secret scope, one call.

``notebooks/graphgen_spark.py`` declares the widgets and calls :func:`run_notebook` with the
notebook's own ``spark`` and ``dbutils``; a bundle job passes the same names as
parameters. The endpoint keys come from a secret scope (keys ``synthesizer`` and
``trainee``) straight into the config, never through a cell, a widget or the Spark conf.
Tables go to ``catalog.schema.<table>`` when both widgets are set, else under the output
folder (a Unity Catalog volume path such as ``/Volumes/main/graphgen/files/out``, which
also holds export, report and the LLM journals).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyspark.sql import SparkSession

from graphgen_spark.config import CONF_DIR, ConfigError, load_config
from graphgen_spark.pipeline import run_pipeline, select_stages
from graphgen_spark.readers import check_input
from graphgen_spark.secrets import config_secrets, remember

#: widget name -> (default, label), in the order the notebook shows them
WIDGETS: dict[str, tuple[str, str]] = {
    "input": ("", "Input: file, folder or table"),
    "output": ("", "Output folder (export, report, LLM journals)"),
    "catalog": ("", "Catalog (empty: tables under the output folder)"),
    "schema": ("", "Schema (with catalog)"),
    "stages": ("", "Stages, comma-separated (empty: all)"),
    "config": ("", "Config YAML (empty: conf/databricks.yaml)"),
    "secret_scope": ("llm", "Secret scope holding the endpoint keys"),
}
#: secret key in the scope -> the config key it fills
SECRET_KEYS = {"synthesizer": "llm.synthesizer.api_key", "trainee": "llm.trainee.api_key"}


@dataclass(frozen=True)
class NotebookArgs:
    input: str | None
    output: str
    catalog: str | None
    schema: str | None
    stages: str | None
    config: str
    secret_scope: str

    @classmethod
    def of(cls, dbutils: Any) -> NotebookArgs:
        got = {name: dbutils.widgets.get(name).strip() for name in WIDGETS}
        if not got["output"]:
            raise ConfigError("widget output: an output folder is required")
        if bool(got["catalog"]) != bool(got["schema"]):
            raise ConfigError("widgets catalog and schema: set both (table mode) or neither")
        return cls(
            input=got["input"] or None,
            output=got["output"],
            catalog=got["catalog"] or None,
            schema=got["schema"] or None,
            stages=got["stages"] or None,
            config=got["config"] or str(CONF_DIR / "databricks.yaml"),
            secret_scope=got["secret_scope"],
        )


def declare_widgets(dbutils: Any) -> None:
    for name, (default, label) in WIDGETS.items():
        dbutils.widgets.text(name, default, label)


def run_notebook(spark: SparkSession, dbutils: Any) -> str:
    """Run the pipeline the widgets describe on the notebook's session; returns the run id."""
    args = NotebookArgs.of(dbutils)
    overrides: dict[str, Any] = {"tables.catalog": args.catalog, "tables.schema": args.schema}
    overrides.update(_keys(dbutils, args.secret_scope))
    cfg = load_config(args.config, **overrides)
    remember(*config_secrets(cfg))
    stages = select_stages(args.stages)
    if "ingest" in stages:
        check_input(args.input, cfg.input.format)
    return run_pipeline(cfg, args.input, args.output, stages, spark=spark)


def _keys(dbutils: Any, scope: str) -> dict[str, str]:
    """The config keys the scope holds secrets for (an endpoint without a key is allowed:
    a local vLLM, the stand-in)."""
    try:
        present = {s.key for s in dbutils.secrets.list(scope)}
    except Exception as exc:  # the scope is missing or not readable by this user
        raise ConfigError(f"widget secret_scope: cannot list scope {scope!r}: {exc}") from None
    return {
        dotted: dbutils.secrets.get(scope=scope, key=key)
        for key, dotted in SECRET_KEYS.items()
        if key in present
    }
