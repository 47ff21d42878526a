"""The report's plots, drawn from :func:`~graphgen_spark.report.figures.run_figures`.

Each plot function takes the figures and returns a matplotlib ``Figure``, or a one-line
reason when there is nothing to draw (its table is absent or empty); :func:`data_uri` turns a
Figure into a PNG ``data:`` URI so the page carries its images inside itself.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, MultipleLocator

from graphgen_spark.report import format as fmt
from graphgen_spark.report.reliability import reliability_figure

LLM, REST, OTHER = "#DD8452", "#4C72B0", "#55A868"
PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3")
DPI = 100
CLOCK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200)

Drawn = Figure | str  # a figure, or why there is none


def data_uri(fig: Figure) -> str:
    """The figure as a base64 PNG ``data:`` URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float, height: float, ncols: int = 1, nrows: int = 1) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False).ravel()


def _ticks(ax: Any, axis: str, label: Callable[[float], str]) -> None:
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_formatter(FuncFormatter(lambda v, _: label(v)))


def _clock_step(span: float) -> float:
    """A tick step a clock reads well (30 s, 2 min, 1 h) giving at most 7 ticks."""
    return next((s for s in CLOCK_STEPS if span / s <= 7), span / 6)


def timeline(f: dict[str, Any]) -> Drawn:
    """Stages one after another on the run's clock, each split into time with an LLM call
    in flight and the rest (Spark, Delta commits, Python workers)."""
    stages = [s for s in f["stages"] if s["status"] != "skipped"]
    if not stages or not sum(s["seconds"] for s in stages):
        return "no stage ran in this run"
    fig, (ax,) = _figure(9, 0.45 * len(stages) + 1.4)
    start = 0.0
    for y, s in enumerate(stages):
        llm = s["llm_seconds"]
        ax.barh(y, llm, left=start, color=LLM, label="LLM call in flight" if not y else None)
        rest = s["seconds"] - llm
        ax.barh(y, rest, left=start + llm, color=REST, label="the rest" if not y else None)
        ax.text(start + s["seconds"], y, " " + fmt.seconds(s["seconds"]), va="center", fontsize=8)
        start += s["seconds"]
    ax.set_yticks(range(len(stages)), [s["stage"] for s in stages])
    ax.invert_yaxis()
    ax.set_xlim(0, start * 1.15)
    ax.xaxis.set_major_locator(MultipleLocator(_clock_step(start)))
    _ticks(ax, "x", fmt.seconds)
    ax.set_xlabel(f"run clock (stages in order, {fmt.seconds(start)} in all)")
    ax.legend(loc="upper right", fontsize=8)
    return fig


def llm_usage(f: dict[str, Any]) -> Drawn:
    """Prompt and completion tokens, and cost, per stage that called an LLM."""
    used = [s for s in f["stages"] if s["prompt_tokens"] or s["completion_tokens"]]
    if not used:
        return "no LLM tokens were spent in this run"
    fig, (tok, cost) = _figure(9, 3.2, ncols=2)
    names = [s["stage"] for s in used]
    prompt = [s["prompt_tokens"] for s in used]
    tok.bar(names, prompt, color=REST, label="prompt")
    tok.bar(
        names, [s["completion_tokens"] for s in used], bottom=prompt, color=LLM, label="completion"
    )
    tok.set_title("tokens", fontsize=10)
    _ticks(tok, "y", fmt.short)
    tok.legend(fontsize=8)
    tok.tick_params(axis="x", labelrotation=30, labelsize=8)
    if not f["totals"]["cost"]:
        cost.text(0.5, 0.5, "no cost recorded\n(the endpoints' prices are 0)", ha="center")
        cost.set_axis_off()
        return fig
    cost.bar(names, [s["cost"] for s in used], color=OTHER)
    cost.set_title(f"cost ({fmt.money(f['totals']['cost'])} in all)", fontsize=10)
    _ticks(cost, "y", fmt.money)
    cost.tick_params(axis="x", labelrotation=30, labelsize=8)
    return fig


def _discrete_bars(ax: Any, hist: dict[str, list[int]], title: str, xlabel: str) -> None:
    ax.bar(hist["values"], hist["counts"], color=REST, width=0.8)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if max(hist["counts"]) > 50 * max(1, min(hist["counts"])):
        ax.set_yscale("log")


def graph(f: dict[str, Any]) -> Drawn:
    """Degree distribution and component sizes of the knowledge graph."""
    g = f["graph"]
    if not g or not g["degree_histogram"]["values"]:
        return "no knowledge graph yet (merge has not run)"
    fig, (deg, comp) = _figure(9, 3.2, ncols=2)
    title = f"degree ({fmt.count(g['vertices'])} entities, mean {fmt.number(g['mean_degree'])})"
    _discrete_bars(deg, g["degree_histogram"], title, "relations of an entity")
    deg.set_ylabel("entities")
    if g["component_sizes"]["values"]:
        title = f"component sizes ({fmt.count(g['components'])} components)"
        _discrete_bars(comp, g["component_sizes"], title, "entities in the component")
        comp.set_ylabel("components")
    else:
        comp.text(0.5, 0.5, "component sizes not recorded\n(rerun merge)", ha="center")
        comp.set_axis_off()
    return fig


def _histogram(ax: Any, hist: dict[str, list], color: str, whole: bool = False) -> None:
    ax.stairs(hist["counts"], hist["edges"], fill=True, color=color, alpha=0.8)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if whole:  # values are counts: no ticks between them
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def losses(f: dict[str, Any]) -> Drawn:
    """The trainee's loss per element kind: where its knowledge gaps are."""
    hists = f["loss_histograms"]
    if not hists:
        return _why_no_gaps(f)
    fig, axes = _figure(4.5 * len(hists), 3.2, ncols=len(hists))
    for i, (ax, (kind, hist)) in enumerate(zip(axes, hists.items(), strict=True)):
        _histogram(ax, hist, PALETTE[i % len(PALETTE)])
        ax.set_title(f"{kind} ({fmt.count(sum(hist['counts']))} scored)", fontsize=10)
        ax.set_xlabel("loss (−log p of the right verdict)")
    axes[0].set_ylabel("elements")
    return fig


def _why_no_gaps(f: dict[str, Any]) -> str:
    if f["gap_scoring"] == "off":
        return "gap scoring was off: no trainee was scored"
    return "no gap scores yet (quiz and judge have not run)"


def reliability(f: dict[str, Any]) -> Drawn:
    """Calibration of the trainee over every statement (scope ``all``)."""
    rows = [r for r in f["calibration"] if r["scope"] == "all" and r["n"] and r["bins"]]
    return reliability_figure(rows[0]) if rows else _why_no_gaps(f)


def qa_counts(f: dict[str, Any]) -> Drawn:
    """Kept QA per generation mode, stacked by language."""
    ok = [r for r in f["qa"] if r["status"] == "ok"]
    if not ok:
        return "no QA was generated"
    modes = sorted({r["mode"] for r in ok})
    langs = sorted({r["language"] or "?" for r in ok})
    fig, (ax,) = _figure(9, 3.4)
    bottom = [0] * len(modes)
    for i, lang in enumerate(langs):
        n = [
            sum(r["count"] for r in ok if r["mode"] == m and (r["language"] or "?") == lang)
            for m in modes
        ]
        ax.bar(modes, n, bottom=bottom, color=PALETTE[i % len(PALETTE)], label=lang)
        bottom = [b + x for b, x in zip(bottom, n, strict=True)]
    for x, total in enumerate(bottom):
        ax.text(x, total, fmt.count(total), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("QA kept")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    ax.legend(title="language", fontsize=8)
    return fig


def answer_lengths(f: dict[str, Any]) -> Drawn:
    """Answer length in tokens, one small histogram per mode, each on its own scale."""
    hists = f["answer_lengths"]
    if not hists:
        return "no answer lengths yet (evaluate has not run)"
    cols = min(3, len(hists))
    rows = -(-len(hists) // cols)
    fig, axes = _figure(3.2 * cols, 2.4 * rows, ncols=cols, nrows=rows)
    for i, (mode, hist) in enumerate(hists.items()):
        _histogram(axes[i], hist, PALETTE[i % len(PALETTE)], whole=True)
        axes[i].set_title(f"{mode} ({fmt.count(sum(hist['counts']))})", fontsize=9)
        axes[i].set_xlabel("answer tokens", fontsize=8)
    for ax in axes[len(hists) :]:
        ax.set_axis_off()
    return fig


def quarantine(f: dict[str, Any]) -> Drawn:
    """Every row a stage set aside, by stage and reason."""
    rows = f["quarantine"]
    if not rows:
        return "nothing was quarantined"
    fig, (ax,) = _figure(9, 0.35 * len(rows) + 1.2)
    labels = [f"{r['stage']}: {r['reason']}" for r in rows]
    ax.barh(labels, [r["rows"] for r in rows], color="#C44E52")
    ax.invert_yaxis()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("rows quarantined")
    ax.tick_params(axis="y", labelsize=8)
    return fig


# id, heading, drawer: the page's plot sections in order
PLOTS: tuple[tuple[str, str, Callable[[dict[str, Any]], Drawn]], ...] = (
    ("timeline", "Stage timeline: LLM time and the rest", timeline),
    ("llm-usage", "Tokens and cost per stage", llm_usage),
    ("graph", "Degree distribution and component sizes", graph),
    ("losses", "Trainee loss per element kind", losses),
    ("reliability", "Reliability diagram", reliability),
    ("qa-counts", "QA per mode and language", qa_counts),
    ("answer-lengths", "Answer lengths", answer_lengths),
    ("quarantine", "Quarantine reasons", quarantine),
)
