"""``DIR/report/index.html``: one static page a user opens after a run.

Everything on it is read back from the tables (never from in-memory state), so the page
describes what is stored: the run and its stages, the LLM ledger per stage, the graph,
the trainee's gaps and calibration (or that gap scoring was off and sampling was random),
the batches per method, QA per mode with what was dropped and why, and quality metrics.
"""

from __future__ import annotations

import html
from pathlib import Path

from pyspark.sql import functions as F

from graphgen_spark.config import Config
from graphgen_spark.tables import Tables, local_path

CSS = (
    "body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem}"
    "table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid #ccc;"
    "padding:.25rem .6rem;text-align:right}th{background:#f3f3f3}td:first-child,"
    "th:first-child{text-align:left}.note{background:#fff6d5;padding:.6rem;border-left:4px "
    "solid #e0b000}"
)


def _table(headers: list[str], rows: list[list[object]]) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "" if v is None else str(v)


def _section(title: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>{body}"


def _ledger(tables: Tables) -> str:
    rows = (
        tables.read("llm_calls")
        .groupBy("stage", "status")
        .agg(
            F.count("*").alias("n"),
            F.sum("prompt_tokens").alias("pt"),
            F.sum("completion_tokens").alias("ct"),
            F.sum("cost").alias("cost"),
        )
        .orderBy("stage", "status")
        .collect()
    )
    return _table(
        ["stage", "status", "calls", "prompt tokens", "completion tokens", "cost"],
        [[r["stage"], r["status"], r["n"], r["pt"], r["ct"], float(r["cost"] or 0)] for r in rows],
    )


def _gaps(cfg: Config, tables: Tables, out_dir: Path) -> str:
    if cfg.gap_scoring == "off":
        return (
            '<p class="note">Gap scoring was <b>off</b> (<code>gap_scoring: off</code>): no '
            "trainee was scored, so subgraphs were sampled in <b>random</b> (hash-rank) order, "
            "not around the trainee's knowledge gaps.</p>"
        )
    cal = tables.read("calibration").orderBy("trainee_model", "scope").collect()
    body = _table(
        ["trainee", "scope", "statements", "no verdict", "ECE", "MCE", "Brier"],
        [
            [
                r["trainee_model"],
                r["scope"],
                r["n"],
                r["n_no_verdict"],
                r["ece"],
                r["mce"],
                r["brier"],
            ]
            for r in cal
        ],
    )
    for png in sorted(out_dir.glob("reliability_*.png")):
        body += f'<p><img src="{html.escape(png.name)}" alt="reliability diagram" width="480"></p>'
    return f"<p>Sampling order: <b>{cfg.sampling()}</b>.</p>" + body


def _graph(tables: Tables) -> str:
    g = tables.read("graph_stats").orderBy(F.desc("computed_at")).limit(1).collect()
    if not g:
        return "<p><em>no graph yet</em></p>"
    r = g[0]
    return _table(
        [
            "components by",
            "entities",
            "relations",
            "placeholders",
            "isolated",
            "components",
            "largest",
        ],
        [
            [
                r["engine"],
                r["vertices"],
                r["edges"],
                r["placeholders"],
                r["isolated"],
                r["components"],
                r["largest_component"],
            ]
        ],
    )


def _batches(tables: Tables) -> str:
    rows = (
        tables.read("subgraphs")
        .groupBy("method", "engine", "graph_engine")
        .agg(
            F.count("*").alias("n"),
            F.avg(F.size("edge_ids")).alias("edges"),
            F.avg("tokens").alias("tokens"),
            F.avg("loss").alias("loss"),
        )
        .orderBy("method")
        .collect()
    )
    return _table(
        [
            "method",
            "engine",
            "graph queries",
            "batches",
            "mean relations",
            "mean tokens",
            "mean loss",
        ],
        [
            [
                r["method"],
                r["engine"],
                r["graph_engine"],
                r["n"],
                r["edges"],
                r["tokens"],
                r["loss"],
            ]
            for r in rows
        ],
    )


def _qa(tables: Tables) -> str:
    rows = (
        tables.read("qa")
        .groupBy("mode", "status", "language")
        .count()
        .orderBy("mode", "status", "language")
        .collect()
    )
    body = _table(
        ["mode", "status", "language", "QA"],
        [[r["mode"], r["status"], r["language"], r["count"]] for r in rows],
    )
    q = tables.read("quarantine").groupBy("stage", "reason").count().orderBy("stage", "reason")
    body += "<h3>Quarantined (every drop, with its reason)</h3>" + _table(
        ["stage", "reason", "rows"], [[r["stage"], r["reason"], r["count"]] for r in q.collect()]
    )
    return body


def _metrics(tables: Tables) -> str:
    if not tables.exists("qa_metrics"):
        return "<p><em>not evaluated yet</em></p>"
    rows = tables.read("qa_metrics").orderBy("run_id", "mode").collect()
    return _table(
        ["mode", "QA", "length mean", "MTLD mean", "distinct-1", "distinct-2", "near-dup rate"],
        [
            [
                r["mode"],
                r["n"],
                r["length_mean"],
                r["mtld_mean"],
                r["distinct_1"],
                r["distinct_2"],
                r["near_dup_rate"],
            ]
            for r in rows
        ],
    )


def write_report(cfg: Config, tables: Tables, run_id: str) -> Path:
    """Write ``DIR/report/index.html`` (local output folders) and return its path."""
    out_dir = local_path(tables.layout.report)
    if out_dir is None:
        raise ValueError(f"{tables.layout.report} is not a local folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    run = tables.read("runs").filter(F.col("run_id") == run_id).collect()
    stages = []
    if run:
        for s in run[0]["stage_stats"] or []:
            stages.append([s["stage"], s["status"], s["seconds"], s["prompt_tokens"], s["cost"]])
    parts = [
        f"<h1>graphgen-spark run {html.escape(run_id[:12])}</h1>",
        _section("Stages", _table(["stage", "status", "seconds", "prompt tokens", "cost"], stages)),
        _section("LLM calls (the ledger)", _ledger(tables)),
        _section("Knowledge graph", _graph(tables)),
        _section("Trainee knowledge gaps", _gaps(cfg, tables, out_dir)),
        _section("Sampled subgraphs", _batches(tables)),
        _section("Generated QA", _qa(tables)),
        _section("QA quality", _metrics(tables)),
    ]
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>graphgen-spark report</title>"
        f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
    )
    path = out_dir / "index.html"
    path.write_text(page, "utf-8")
    return path
