"""The figures of one run, read back from the tables: what ``report/run.json`` holds and what
the HTML page and its plots are drawn from (so page and file cannot disagree).

Raw numbers only (seconds, tokens, dollars); the page formats them. Keys of ``run.json``:

- ``version``: 1, raised when a key changes meaning.
- ``run``: ``run_id``, ``status``, ``started_at`` / ``finished_at`` (ISO, UTC), ``seconds``,
  ``input``, ``output``, ``error``.
- ``stages``: one object per stage of the run, in order: ``stage``, ``status``, ``seconds``
  (wall clock), ``llm_seconds`` (wall clock with at least one of the run's LLM calls of that
  stage in flight), ``prompt_tokens``, ``completion_tokens``, ``cost`` (USD), ``counts``.
- ``totals``: the same sums over the stages.
- ``llm_calls``: the whole ledger by ``stage`` and ``status``: ``calls``, tokens, ``cost``.
- ``graph``: the latest ``graph_stats`` row with ``degree_histogram`` and
  ``component_sizes`` as ``{"values": [...], "counts": [...]}``; null before merge.
- ``gap_scoring``, ``sampling``, ``trainee_model``; ``calibration``: rows of that trainee
  with their ``bins``; ``loss_histograms``: per element kind, ``{"edges", "counts"}`` over
  the trainee's ``ok`` gap scores, on bins shared by the kinds.
- ``batches``: per partition method: ``batches``, mean ``relations``, ``tokens``, ``loss``.
- ``qa``: rows of ``mode``, ``status``, ``language``, ``count``; ``qa_ok``: kept QA in all.
- ``answer_lengths``: per mode, ``{"edges", "counts"}`` of answer tokens, each mode on its
  own bins (after evaluate).
- ``quarantine``: rows of ``stage``, ``reason``, ``rows``; ``qa_metrics``: per mode, of the
  latest run that evaluated.
- ``sources``: ``trainee`` and the Delta ``versions`` of the tables the figures above were
  read from; the next report reuses a figure whose tables kept their version.

A table that does not exist yet gives an empty list (or null), never an error.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from graphgen_spark.concurrency import side_by_side
from graphgen_spark.config import Config
from graphgen_spark.tables import Tables

VERSION = 1
BINS = 20


def run_figures(
    cfg: Config,
    tables: Tables,
    run_id: str,
    run: dict[str, Any] | None = None,
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the report shows about run ``run_id``, as plain JSON-ready values.

    ``run`` is the run's record when the caller holds it (else it is read from ``runs``);
    ``previous`` is the last ``run.json``: its figures of tables that have no new Delta
    version since are taken as they are (a rerun that changed nothing reads no table)."""
    run = _run(tables, run_id) if run is None else _given(run)
    stages = _stages(tables, run, run_id)
    trainee = cfg.trainee_model() if cfg.gap_scoring == "on" else None
    found, sources = _table_figures(tables, trainee, previous)
    qa = found["qa"]
    return {
        "version": VERSION,
        "run": run,
        "stages": stages,
        "totals": _totals(stages),
        "llm_calls": found["llm_calls"],
        "graph": found["graph"],
        "gap_scoring": cfg.gap_scoring,
        "sampling": cfg.sampling(),
        "trainee_model": trainee,
        "calibration": found["calibration"],
        "loss_histograms": found["loss_histograms"],
        "batches": found["batches"],
        "qa": qa,
        "qa_ok": sum(r["count"] for r in qa if r["status"] == "ok"),
        "answer_lengths": found["answer_lengths"],
        "quarantine": found["quarantine"],
        "qa_metrics": found["qa_metrics"],
        "sources": sources,
    }


def _table_figures(
    tables: Tables, trainee: str | None, previous: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The figures read from tables, each recomputed only when one of its tables has a new
    version since ``previous`` (or the trainee changed); and the versions they are of."""
    versions = {t: tables.version(t) for _, needs in TABLE_FIGURES.values() for t in needs}
    sources = {"trainee": trainee, "versions": versions}
    then = (previous or {}).get("sources") or {}
    reusable = previous is not None and previous.get("version") == VERSION
    reusable = reusable and then.get("trainee") == trainee
    old = then.get("versions") or {}
    found, todo = {}, {}
    for key, (figure, needs) in TABLE_FIGURES.items():
        if reusable and key in previous and all(old.get(t) == versions[t] for t in needs):
            found[key] = previous[key]  # type: ignore[index]
        else:
            todo[key] = functools.partial(figure, tables, trainee)
    found.update(zip(todo, side_by_side(tables.spark, list(todo.values())), strict=True))
    return found, sources


def _plain(v: Any) -> Any:
    """A Spark value as JSON: timestamps as ISO strings, rows and maps as dicts."""
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if hasattr(v, "asDict"):
        return _plain(v.asDict(recursive=True))
    return v


def _rows(df: DataFrame) -> list[dict[str, Any]]:
    return [_plain(r.asDict(recursive=True)) for r in df.collect()]


def _run(tables: Tables, run_id: str) -> dict[str, Any]:
    found = _rows(tables.read("runs").filter(F.col("run_id") == run_id))
    return _given(found[0] if found else {"run_id": run_id, "stage_stats": []})


def _given(record: dict[str, Any]) -> dict[str, Any]:
    """A ``runs`` record as the report's ``run`` (with ``seconds``; stage statistics are
    kept for :func:`_stages`, which takes them out)."""
    run = {k: _plain(v) for k, v in record.items() if k not in ("stages", "settled")}
    start, end = run.get("started_at"), run.get("finished_at")
    took = datetime.fromisoformat(end) - datetime.fromisoformat(start) if start and end else None
    run["seconds"] = None if took is None else took.total_seconds()
    return run


def _stages(tables: Tables, run: dict[str, Any], run_id: str) -> list[dict[str, Any]]:
    stats = run.pop("stage_stats", None) or []
    sent = any(v for s in stats for k, v in (s.get("counts") or {}).items() if k.endswith("_sent"))
    busy = _llm_seconds(tables, run_id) if sent else {}
    keys = ("stage", "status", "seconds", "prompt_tokens", "completion_tokens", "cost", "counts")
    out = []
    for s in stats:
        row = {k: s.get(k) for k in keys}
        for k in ("seconds", "cost", "prompt_tokens", "completion_tokens"):
            row[k] = row[k] or 0
        row["llm_seconds"] = min(busy.get(row["stage"], 0.0), row["seconds"])
        out.append(row)
    return out


def _llm_seconds(tables: Tables, run_id: str) -> dict[str, float]:
    """Per stage, how long at least one of the run's calls was in flight: the union of the
    calls' intervals (a call ends at ``updated_at`` and lasted ``latency_ms``)."""
    end = F.unix_micros("updated_at") / 1e6
    calls = (
        tables.read("llm_calls")
        .filter(F.col("run_id") == run_id)
        .select("stage", (end - F.col("latency_ms") / 1e3).alias("start"), end.alias("end"))
    )
    before = Window.partitionBy("stage").orderBy("start", "end")
    reach = F.max("end").over(before.rowsBetween(Window.unboundedPreceding, -1))
    opens = F.coalesce((F.col("start") > reach).cast("int"), F.lit(1))
    spans = (
        calls.withColumn("opens", opens)
        .withColumn("span", F.sum("opens").over(before))
        .groupBy("stage", "span")
        .agg((F.max("end") - F.min("start")).alias("s"))
        .groupBy("stage")
        .agg(F.sum("s").alias("s"))
    )
    return {r["stage"]: float(r["s"]) for r in spans.collect()}


def _totals(stages: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("seconds", "llm_seconds", "prompt_tokens", "completion_tokens", "cost")
    return {k: sum(s[k] for s in stages) for k in keys}


def _ledger(tables: Tables) -> list[dict[str, Any]]:
    sums = (F.sum(c).alias(c) for c in ("prompt_tokens", "completion_tokens", "cost"))
    grouped = tables.read("llm_calls").groupBy("stage", "status")
    return _rows(grouped.agg(F.count("*").alias("calls"), *sums).orderBy("stage", "status"))


def _graph(tables: Tables) -> dict[str, Any] | None:
    found = tables.read("graph_stats").orderBy(F.desc("computed_at")).limit(1).collect()
    if not found:
        return None
    g = found[0].asDict(recursive=True)
    g["degree_histogram"] = _discrete(g.get("degree_histogram"))
    g["component_sizes"] = _discrete(g.get("component_sizes"))
    return _plain(g)


def _discrete(hist: dict[int, int] | None) -> dict[str, list[int]]:
    pairs = sorted((hist or {}).items())
    return {"values": [int(k) for k, _ in pairs], "counts": [int(v) for _, v in pairs]}


def _calibration(tables: Tables, trainee: str | None) -> list[dict[str, Any]]:
    cal = tables.read("calibration").filter(F.col("trainee_model") == F.lit(trainee))
    return _rows(cal.orderBy("scope"))


def _losses(tables: Tables, trainee: str | None) -> dict[str, dict[str, list]]:
    scores = tables.read("gap_scores").filter(
        (F.col("trainee_model") == F.lit(trainee)) & (F.col("status") == "ok")
    )
    return _histograms(scores, "element_kind", "loss")


def _histograms(
    df: DataFrame, by: str, value: str, shared: bool = True
) -> dict[str, dict[str, list]]:
    """Per group of ``by``, ``BINS`` equal bins of ``value`` from 0 to the largest value:
    the same bins for every group when ``shared`` (so their histograms compare), else each
    group's own, at least 1 wide (for counts such as tokens) and cut after the last
    non-empty bin. Computed in Spark; only the counts come back."""
    df = df.filter(F.col(value).isNotNull() & F.col(by).isNotNull())
    tops = {r[0]: float(r[1]) for r in df.groupBy(by).agg(F.max(value)).collect()}
    if not tops:
        return {}
    if shared:
        tops = dict.fromkeys(tops, max(tops.values()))
    widths = {k: max(top / BINS, 0.0 if shared else 1.0) or 1.0 for k, top in tops.items()}
    width = F.create_map(*(F.lit(x) for pair in widths.items() for x in pair))[F.col(by)]
    idx = F.least(F.floor(F.col(value) / width), F.lit(BINS - 1)).cast("int").alias("bin")
    counts = {k: [0] * BINS for k in widths}
    for r in df.groupBy(by, idx).count().collect():
        counts[r[by]][r["bin"]] = r["count"]
    out = {}
    for k in sorted(widths):
        n = BINS if shared else max(i for i, c in enumerate(counts[k]) if c) + 1
        out[k] = {"edges": [i * widths[k] for i in range(n + 1)], "counts": counts[k][:n]}
    return out


def _batches(tables: Tables) -> list[dict[str, Any]]:
    agg = (
        tables.read("subgraphs")
        .groupBy("method", "engine", "graph_engine")
        .agg(
            F.count("*").alias("batches"),
            F.avg(F.size("edge_ids")).alias("relations"),
            F.avg("tokens").alias("tokens"),
            F.avg("loss").alias("loss"),
        )
    )
    return _rows(agg.orderBy("method"))


def _quarantine(tables: Tables) -> list[dict[str, Any]]:
    q = tables.read("quarantine").groupBy("stage", "reason").agg(F.count("*").alias("rows"))
    return _rows(q.orderBy(F.desc("rows"), "stage", "reason"))


def _latest_metrics(tables: Tables) -> list[dict[str, Any]]:
    metrics = tables.read("qa_metrics")
    started = tables.read("runs").select("run_id", "started_at")
    latest = metrics.join(started, "run_id").agg(F.max_by("run_id", "started_at")).first()[0]
    return _rows(metrics.filter(F.col("run_id") == F.lit(latest)).orderBy("mode"))


def _qa(tables: Tables) -> list[dict[str, Any]]:
    qa = _rows(tables.read("qa").groupBy("mode", "status", "language").count())
    return sorted(qa, key=lambda r: (r["mode"], r["status"] or "", r["language"] or ""))


def _answer_lengths(tables: Tables) -> dict[str, dict[str, list]]:
    return _histograms(tables.read("qa_item_metrics"), "mode", "length", False)


Figure = Callable[[Tables, str | None], Any]
#: the figures read from tables: ``run.json`` key -> (how, the tables it reads)
TABLE_FIGURES: dict[str, tuple[Figure, tuple[str, ...]]] = {
    "llm_calls": (lambda t, _: _ledger(t), ("llm_calls",)),
    "graph": (lambda t, _: _graph(t), ("graph_stats",)),
    "calibration": (_calibration, ("calibration",)),
    "loss_histograms": (_losses, ("gap_scores",)),
    "batches": (lambda t, _: _batches(t), ("subgraphs",)),
    "qa": (lambda t, _: _qa(t), ("qa",)),
    "answer_lengths": (lambda t, _: _answer_lengths(t), ("qa_item_metrics",)),
    "quarantine": (lambda t, _: _quarantine(t), ("quarantine",)),
    # the latest evaluating run is one of those in qa_metrics, so its version decides
    "qa_metrics": (lambda t, _: _latest_metrics(t), ("qa_metrics",)),
}
