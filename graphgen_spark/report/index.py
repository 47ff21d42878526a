"""``DIR/report/index.html`` and ``DIR/report/run.json``: what a user opens after a run.

Everything is read back from the tables (never from in-memory state), so the report
describes what is stored: the run and its stages, the LLM ledger, the graph, the trainee's
gaps and calibration (or that gap scoring was off and sampling was random), the batches per
method, QA per mode with what was dropped and why, and quality metrics.

The page is one self-contained file (plots inlined as PNG ``data:`` URIs, no external CSS,
scripts or fonts) so it can be mailed or attached as it is; ``run.json`` holds the same
figures as raw numbers for machines (keys in :mod:`graphgen_spark.report.figures`).
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from graphgen_spark.config import Config
from graphgen_spark.report import format as fmt
from graphgen_spark.report.figures import run_figures
from graphgen_spark.report.plots import PLOTS, data_uri
from graphgen_spark.tables import Tables, local_path

CSS = (
    "body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;"
    "color:#222}table{border-collapse:collapse;margin:.5rem 0 1.5rem}td,th{border:1px solid "
    "#ccc;padding:.25rem .6rem;text-align:left}th{background:#f3f3f3}td.n{text-align:right;"
    "font-variant-numeric:tabular-nums}.note{background:#fff6d5;padding:.6rem;border-left:4px "
    "solid #e0b000}.skipped{color:#666;font-style:italic}figure{margin:1rem 0}"
    "figure img{max-width:100%;height:auto}figcaption{color:#555;font-size:.9rem}"
    ".summary{display:flex;flex-wrap:wrap;gap:.6rem;padding:0;list-style:none}"
    ".summary li{background:#f3f6fb;border-radius:.4rem;padding:.5rem .8rem}"
    ".summary b{display:block;font-size:1.3rem}"
)

Cell = str | int | float | None
NUMERIC = re.compile(r"^[-$–]?\d|^–$")


def _table(headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_td(_cell(c)) for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _td(text: str) -> str:
    """A cell; numbers (and durations, dollars) right-aligned so their digits line up."""
    numeric = ' class="n"' if NUMERIC.match(text) else ""
    return f"<td{numeric}>{html.escape(text)}</td>"


def _cell(v: Cell) -> str:
    """Cells are formatted by their column; a bare number left over is still made readable."""
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v)
    if isinstance(v, int):
        return fmt.count(v)
    if isinstance(v, float):
        return fmt.number(v)
    return v


def _section(title: str, *parts: str) -> str:
    return f"<h2>{html.escape(title)}</h2>{''.join(parts)}"


def _plots(figures: dict[str, Any]) -> dict[str, str]:
    """Every plot's HTML by id: an inlined image, or a one-line note saying why not."""
    out = {}
    for key, heading, draw in PLOTS:
        drawn = draw(figures)
        title = html.escape(heading)
        if isinstance(drawn, str):
            out[key] = f'<p class="skipped" id="plot-{key}">{title}: {html.escape(drawn)}.</p>'
            continue
        caption = html.escape(" ".join((draw.__doc__ or "").split()))  # the drawer's docstring
        out[key] = (
            f'<figure class="plot" id="plot-{key}"><img src="{data_uri(drawn)}" alt="{title}">'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    return out


def _summary(f: dict[str, Any]) -> str:
    t, run = f["totals"], f["run"]
    share = t["llm_seconds"] / t["seconds"] if t["seconds"] else None
    items = [
        ("status", run.get("status") or "–"),
        ("run time", fmt.seconds(run.get("seconds"))),
        ("LLM in flight", f"{fmt.seconds(t['llm_seconds'])} ({fmt.percent(share)})"),
        ("tokens", fmt.tokens(t["prompt_tokens"] + t["completion_tokens"])),
        ("cost", fmt.money(t["cost"])),
        ("QA kept", fmt.count(f["qa_ok"])),
    ]
    cards = "".join(f"<li>{html.escape(k)}<b>{html.escape(v)}</b></li>" for k, v in items)
    return f'<ul class="summary" id="summary">{cards}</ul>'


def _stages(f: dict[str, Any]) -> str:
    return _table(
        ["stage", "status", "time", "LLM in flight", "prompt tokens", "completion tokens", "cost"],
        [
            [
                s["stage"],
                s["status"],
                fmt.seconds(s["seconds"]),
                fmt.seconds(s["llm_seconds"]),
                fmt.count(s["prompt_tokens"]),
                fmt.count(s["completion_tokens"]),
                fmt.money(s["cost"]),
            ]
            for s in f["stages"]
        ],
    )


def _ledger(f: dict[str, Any]) -> str:
    return _table(
        ["stage", "status", "calls", "prompt tokens", "completion tokens", "cost"],
        [
            [
                r["stage"],
                r["status"],
                fmt.count(r["calls"]),
                fmt.count(r["prompt_tokens"]),
                fmt.count(r["completion_tokens"]),
                fmt.money(r["cost"]),
            ]
            for r in f["llm_calls"]
        ],
    )


def _graph(f: dict[str, Any]) -> str:
    g = f["graph"]
    if not g:
        return "<p><em>no graph yet</em></p>"
    keys = ("vertices", "edges", "placeholders", "isolated", "components", "largest_component")
    return _table(
        [
            "components by",
            "entities",
            "relations",
            "placeholders",
            "isolated",
            "components",
            "largest",
            "max degree",
            "mean degree",
        ],
        [
            [
                g["engine"],
                *(fmt.count(g[k]) for k in keys),
                fmt.count(g["max_degree"]),
                fmt.number(g["mean_degree"]),
            ]
        ],
    )


def _gaps(f: dict[str, Any], plots: dict[str, str]) -> str:
    if f["gap_scoring"] == "off":
        return (
            '<p class="note">Gap scoring was <b>off</b> (<code>gap_scoring: off</code>): no '
            "trainee was scored, so subgraphs were sampled in <b>random</b> (hash-rank) order, "
            "not around the trainee's knowledge gaps.</p>"
        )
    cal = _table(
        ["trainee", "scope", "statements", "no verdict", "ECE", "MCE", "Brier"],
        [
            [
                r["trainee_model"],
                r["scope"],
                fmt.count(r["n"]),
                fmt.count(r["n_no_verdict"]),
                fmt.number(r["ece"]),
                fmt.number(r["mce"]),
                fmt.number(r["brier"]),
            ]
            for r in f["calibration"]
        ],
    )
    sampling = f"<p>Sampling order: <b>{html.escape(f['sampling'])}</b>.</p>"
    return sampling + plots["losses"] + plots["reliability"] + cal


def _batches(f: dict[str, Any]) -> str:
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
                fmt.count(r["batches"]),
                fmt.number(r["relations"]),
                fmt.count(r["tokens"]),
                fmt.number(r["loss"]),
            ]
            for r in f["batches"]
        ],
    )


def _qa(f: dict[str, Any]) -> str:
    return _table(
        ["mode", "status", "language", "QA"],
        [[r["mode"], r["status"], r["language"], fmt.count(r["count"])] for r in f["qa"]],
    )


def _quarantine(f: dict[str, Any]) -> str:
    return _table(
        ["stage", "reason", "rows"],
        [[r["stage"], r["reason"], fmt.count(r["rows"])] for r in f["quarantine"]],
    )


def _metrics(f: dict[str, Any]) -> str:
    if not f["qa_metrics"]:
        return "<p><em>not evaluated yet</em></p>"
    return _table(
        ["mode", "QA", "length mean", "MTLD mean", "distinct-1", "distinct-2", "near-dup rate"],
        [
            [
                r["mode"],
                fmt.count(r["n"]),
                fmt.number(r["length_mean"]),
                fmt.number(r["mtld_mean"]),
                fmt.number(r["distinct_1"]),
                fmt.number(r["distinct_2"]),
                fmt.percent(r["near_dup_rate"]),
            ]
            for r in f["qa_metrics"]
        ],
    )


def render_page(f: dict[str, Any]) -> str:
    """The whole page for the figures of one run."""
    plots = _plots(f)
    sections = [
        ("Stages", plots["timeline"] + _stages(f)),
        ("LLM calls (the ledger)", plots["llm-usage"] + _ledger(f)),
        ("Knowledge graph", plots["graph"] + _graph(f)),
        ("Trainee knowledge gaps", _gaps(f, plots)),
        ("Sampled subgraphs", _batches(f)),
        ("Generated QA", plots["qa-counts"] + _qa(f) + plots["answer-lengths"]),
        ("Quarantined (every drop, with its reason)", plots["quarantine"] + _quarantine(f)),
        ("QA quality", _metrics(f)),
    ]
    run_id = html.escape(f["run"]["run_id"][:12])
    body = f"<h1>graphgen-spark run {run_id}</h1>" + _summary(f)
    body += "".join(_section(title, part) for title, part in sections)
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<title>graphgen-spark report</title>"
        f"<style>{CSS}</style></head><body>{body}</body></html>"
    )


def write_report(cfg: Config, tables: Tables, run_id: str) -> Path:
    """Write ``DIR/report/index.html`` and ``run.json`` (local output folders); return the
    page's path."""
    out_dir = local_path(tables.layout.report)
    if out_dir is None:
        raise ValueError(f"{tables.layout.report} is not a local folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = run_figures(cfg, tables, run_id)
    (out_dir / "run.json").write_text(json.dumps(figures, indent=1) + "\n", "utf-8")
    path = out_dir / "index.html"
    path.write_text(render_page(figures), "utf-8")
    return path
