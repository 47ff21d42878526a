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
from collections.abc import Callable, Sequence
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


# a table's columns: header, key of the figures' row, how its value is printed
Column = tuple[str, str, Callable[[Any], str]]
TEXT = str
STAGES: tuple[Column, ...] = (
    ("stage", "stage", TEXT),
    ("status", "status", TEXT),
    ("time", "seconds", fmt.seconds),
    ("LLM in flight", "llm_seconds", fmt.seconds),
    ("prompt tokens", "prompt_tokens", fmt.count),
    ("completion tokens", "completion_tokens", fmt.count),
    ("cost", "cost", fmt.money),
)
LEDGER: tuple[Column, ...] = (
    ("stage", "stage", TEXT),
    ("status", "status", TEXT),
    ("calls", "calls", fmt.count),
    *STAGES[4:],
)
GRAPH: tuple[Column, ...] = (
    ("components by", "engine", TEXT),
    ("entities", "vertices", fmt.count),
    ("relations", "edges", fmt.count),
    ("placeholders", "placeholders", fmt.count),
    ("isolated", "isolated", fmt.count),
    ("components", "components", fmt.count),
    ("largest", "largest_component", fmt.count),
    ("max degree", "max_degree", fmt.count),
    ("mean degree", "mean_degree", fmt.number),
)
CALIBRATION: tuple[Column, ...] = (
    ("trainee", "trainee_model", TEXT),
    ("scope", "scope", TEXT),
    ("statements", "n", fmt.count),
    ("no verdict", "n_no_verdict", fmt.count),
    ("ECE", "ece", fmt.number),
    ("MCE", "mce", fmt.number),
    ("Brier", "brier", fmt.number),
)
BATCHES: tuple[Column, ...] = (
    ("method", "method", TEXT),
    ("engine", "engine", TEXT),
    ("graph queries", "graph_engine", TEXT),
    ("batches", "batches", fmt.count),
    ("mean relations", "relations", fmt.number),
    ("mean tokens", "tokens", fmt.count),
    ("mean loss", "loss", fmt.number),
)
QA: tuple[Column, ...] = (
    ("mode", "mode", TEXT),
    ("status", "status", TEXT),
    ("language", "language", TEXT),
    ("QA", "count", fmt.count),
)
QUARANTINE: tuple[Column, ...] = (
    ("stage", "stage", TEXT),
    ("reason", "reason", TEXT),
    ("rows", "rows", fmt.count),
)
METRICS: tuple[Column, ...] = (
    ("mode", "mode", TEXT),
    ("QA", "n", fmt.count),
    ("length mean", "length_mean", fmt.number),
    ("MTLD mean", "mtld_mean", fmt.number),
    ("distinct-1", "distinct_1", fmt.number),
    ("distinct-2", "distinct_2", fmt.number),
    ("near-dup rate", "near_dup_rate", fmt.percent),
)


def _columns(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """A table of figure rows, each value printed by its column's formatter."""
    cells = [[None if r[k] is None else show(r[k]) for _, k, show in columns] for r in rows]
    return _table([h for h, _, _ in columns], cells)


def _gaps(f: dict[str, Any], plots: dict[str, str]) -> str:
    if f["gap_scoring"] == "off":
        return (
            '<p class="note">Gap scoring was <b>off</b> (<code>gap_scoring: off</code>): no '
            "trainee was scored, so subgraphs were sampled in <b>random</b> (hash-rank) order, "
            "not around the trainee's knowledge gaps.</p>"
        )
    sampling = f"<p>Sampling order: <b>{html.escape(f['sampling'])}</b>.</p>"
    cal = _columns(f["calibration"], CALIBRATION)
    return sampling + plots["losses"] + plots["reliability"] + cal


def _or(note: str, rows: list[dict[str, Any]], columns: Sequence[Column]) -> str:
    """The table, or ``note`` when there is nothing to show yet."""
    return _columns(rows, columns) if rows else f"<p><em>{html.escape(note)}</em></p>"


def render_page(f: dict[str, Any]) -> str:
    """The whole page for the figures of one run."""
    plots = _plots(f)
    sections = [
        ("Stages", plots["timeline"] + _columns(f["stages"], STAGES)),
        ("LLM calls (the ledger)", plots["llm-usage"] + _columns(f["llm_calls"], LEDGER)),
        (
            "Knowledge graph",
            plots["graph"] + _or("no graph yet", [f["graph"]] if f["graph"] else [], GRAPH),
        ),
        ("Trainee knowledge gaps", _gaps(f, plots)),
        ("Sampled subgraphs", _columns(f["batches"], BATCHES)),
        ("Generated QA", plots["qa-counts"] + _columns(f["qa"], QA) + plots["answer-lengths"]),
        (
            "Quarantined (every drop, with its reason)",
            plots["quarantine"] + _columns(f["quarantine"], QUARANTINE),
        ),
        ("QA quality", _or("not evaluated yet", f["qa_metrics"], METRICS)),
    ]
    run_id = html.escape(f["run"]["run_id"][:12])
    body = f"<h1>graphgen-spark run {run_id}</h1>" + _summary(f)
    body += "".join(_section(title, part) for title, part in sections)
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<title>graphgen-spark report</title>"
        f"<style>{CSS}</style></head><body>{body}</body></html>"
    )


def write_report(
    cfg: Config, tables: Tables, run_id: str, run: dict[str, Any] | None = None
) -> Path:
    """Write ``DIR/report/index.html`` and ``run.json`` (local output folders); return the
    page's path. ``run``: the run's record, when the caller holds it."""
    out_dir = local_path(tables.layout.report)
    if out_dir is None:
        raise ValueError(f"{tables.layout.report} is not a local folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = run_figures(cfg, tables, run_id, run, _previous(out_dir / "run.json"))
    (out_dir / "run.json").write_text(json.dumps(figures, indent=1) + "\n", "utf-8")
    path = out_dir / "index.html"
    path.write_text(render_page(figures), "utf-8")
    return path


def _previous(path: Path) -> dict[str, Any] | None:
    """The last report's figures, if there is a readable one."""
    try:
        found = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None
