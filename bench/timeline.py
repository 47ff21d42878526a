"""The timeline of one timed LLM stage, as the throughput benchmarks read it.

While the stage runs, :class:`TimedStage` keeps the ``graphgen_spark`` log lines
(:class:`LogCapture`), polls the stand-in's ``/stats`` at 20 Hz (:class:`Sampler`) and meters
CPU by process. Afterwards:

* :func:`executor_calls`: one entry per executor call of the stage, from the line the executor
  logs before its first wave ("[stage] N requests|conversations to run over ...",
  ``WaveRunner.run``), its cumulative "[stage] wave i done: N calls sent so far" lines
  (the requests of each wave) and its "[stage] N wave(s) merged into llm_calls in S s" line;
* :func:`llm_waves`: the waves, from the Spark jobs described "stage: wave i/N"
  (``runner._WaveLoop``), each assigned to the executor call logged last before it;
* :func:`phases`: consecutive phases covering the stage, cut at log lines or times;
* :func:`call_sites`: Spark job time per call site (LLM jobs, wave bookkeeping, the rest);
* :func:`headline`: the ratios to capacity every throughput benchmark reports.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from bench import CpuMeter, StandinProcess, callsite, union_seconds

Sample = tuple[float, int, int, int]  # (unix time, in_flight, queued, requests_total)
Mark = tuple[float | str | re.Pattern[str] | None, str]


def _r(x: float | None, d: int = 3) -> float | None:
    return round(x, d) if x is not None else None


# -- what is recorded while the stage runs ------------------------------------------------------
class LogCapture(logging.Handler):
    """Keeps (time, message) of every graphgen_spark record."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.created, record.getMessage()))

    def first(self, pattern: str | re.Pattern[str], since: float = 0.0) -> float | None:
        """Time of the first record at or after ``since`` that ``pattern`` matches."""
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
        return next((t for t, msg in self.records if t >= since and rx.search(msg)), None)


class Sampler(threading.Thread):
    """Polls the stand-in's /stats; samples are (unix time, in_flight, queued, requests)."""

    def __init__(self, endpoint: StandinProcess, period_s: float = 0.05) -> None:
        super().__init__(name="standin-sampler", daemon=True)
        self.endpoint = endpoint
        self.period_s = period_s
        self.samples: list[Sample] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                s = self.endpoint.stats()
                self.samples.append((time.time(), s["in_flight"], s["queued"], s["requests_total"]))
            except Exception:
                pass
            self._halt.wait(self.period_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


class TimedStage:
    """``with TimedStage(spark, endpoint) as timed: <run the stage>``: resets the stand-in's
    counters, then records log lines, /stats samples, CPU by process, the wall-clock span
    (``wall``) and the monotonic duration (``stage_s``) of the block."""

    def __init__(self, spark: Any, endpoint: StandinProcess) -> None:
        self.spark = spark
        self.endpoint = endpoint
        self.capture = LogCapture()
        self.sampler = Sampler(endpoint)
        self.meter = CpuMeter(extra={"standin": endpoint.proc.pid})
        self.wall: tuple[float, float] = (0.0, 0.0)
        self.stage_s = 0.0
        self.cpu: dict[str, Any] = {}
        self._log = logging.getLogger("graphgen_spark")
        self._t0 = 0.0

    @property
    def samples(self) -> list[Sample]:
        return self.sampler.samples

    def __enter__(self) -> TimedStage:
        self.endpoint.reset_stats()
        self._log.addHandler(self.capture)
        self.sampler.start()
        time.sleep(0.2)  # a few idle samples before the stage
        self.meter.start()
        self.wall = (time.time(), 0.0)
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stage_s = time.monotonic() - self._t0
        self.wall = (self.wall[0], time.time())
        self.cpu = self.meter.stop()
        time.sleep(0.2)
        self.sampler.stop()
        self._log.removeHandler(self.capture)
        self.spark.sparkContext.setJobGroup("bench-analysis", "bench: reading results back")


# -- the stand-in's samples ---------------------------------------------------------------------
def send_windows(samples: list[Sample], gap_s: float = 0.3) -> list[list[float]]:
    """Intervals during which the endpoint had requests in flight (gaps < gap_s merged)."""
    out: list[list[float]] = []
    for t, inflight, _, _ in samples:
        if inflight > 0:
            if out and t - out[-1][1] <= gap_s:
                out[-1][1] = t
            else:
                out.append([t, t])
    return out


def mean_inflight(samples: list[Sample], t0: float, t1: float) -> float | None:
    """Time-weighted mean of in_flight over [t0, t1] (sample-and-hold)."""
    pts = [(t, f) for t, f, _, _ in samples]
    if not pts:
        return None
    area, prev_t, prev_f = 0.0, t0, 0
    for t, f in pts:
        if t <= t0:
            prev_f = f
            continue
        if t >= t1:
            break
        area += prev_f * (t - prev_t)
        prev_t, prev_f = t, f
    area += prev_f * (t1 - prev_t)
    return area / (t1 - t0) if t1 > t0 else None


def busy_span(samples: list[Sample], t0: float, t1: float) -> tuple[float, float] | None:
    """First and last sample in [t0, t1] with at least one request in flight."""
    busy = [t for t, f, _, _ in samples if t0 <= t <= t1 and f > 0]
    return (busy[0], busy[-1]) if busy else None


def requests_between(samples: list[Sample], t0: float, t1: float) -> int | None:
    """Requests the stand-in counted between the first and the last sample in [t0, t1]."""
    got = [n for t, _, _, n in samples if t0 <= t <= t1]
    return got[-1] - got[0] if len(got) > 1 else None


# -- the executor's calls and waves -------------------------------------------------------------
def executor_calls(
    capture: LogCapture, stage: str, name: Callable[[int], str] = lambda k: f"call {k + 1}"
) -> list[dict[str, Any]]:
    """One entry per executor call of ``stage`` that sent anything, in order, named ``name(k)``.

    ``requests`` is what the executor counted as sent (its last cumulative wave line), or the
    rows to run when the rows are requests and no wave line was logged.
    """
    s = re.escape(stage)
    to_run = re.compile(rf"\[{s}\] (\d+) (requests|conversations) to run over")
    wave_done = re.compile(rf"\[{s}\] wave (\d+) done: (\d+) calls sent so far")
    merged = re.compile(rf"\[{s}\] (\d+) wave\(s\) merged into llm_calls in ([\d.]+) s")
    out: list[dict[str, Any]] = []
    for t, msg in capture.records:
        m = to_run.search(msg)
        if m:
            out.append(
                {
                    "round": name(len(out)),
                    "logged_at": t,
                    "rows": int(m.group(1)),
                    "unit": m.group(2),
                    "requests": int(m.group(1)) if m.group(2) == "requests" else None,
                    "log": msg,
                    "wave_requests": {},
                    "merged_at": None,
                    "merge_s": None,
                }
            )
            continue
        if not out:
            continue
        cur = out[-1]
        m = wave_done.search(msg)
        if m:
            cum = int(m.group(2))
            cur["wave_requests"][int(m.group(1))] = cum - sum(cur["wave_requests"].values())
            cur["requests"] = cum
            continue
        m = merged.search(msg)
        if m and cur["merged_at"] is None:  # a later call that sent nothing logs one too
            cur["merged_at"], cur["merge_s"] = t, float(m.group(2))
    return out


def call_rows(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The executor calls as JSON rows (without the times and per-wave counts)."""
    hidden = ("logged_at", "merged_at", "wave_requests")
    return [{k: v for k, v in c.items() if k not in hidden} for c in calls]


def llm_waves(
    jobs: list[dict[str, Any]],
    stage: str,
    executes_or_log: list[dict[str, Any]] | LogCapture,
    samples: list[Sample],
    capacity: float,
) -> list[dict[str, Any]]:
    """Waves from the Spark jobs described f"{stage}: wave i/N", each assigned to the
    executor call logged last before it; per wave its span (first job start to last job end),
    its LLM job (the longest of its jobs), requests (the executor's count), send time and
    mean in flight. ``executes_or_log`` is :func:`executor_calls`' list or the capture."""
    calls = (
        executor_calls(executes_or_log, stage)
        if isinstance(executes_or_log, LogCapture)
        else executes_or_log
    )
    described = re.compile(rf"^{re.escape(stage)}: wave (\d+)/")
    groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for j in jobs:
        m = described.match(j["description"] or "")
        if not m:
            continue
        k = sum(1 for c in calls if c["logged_at"] <= j["start"] + 0.05) - 1
        groups.setdefault((max(k, 0), int(m.group(1))), []).append(j)
    windows = send_windows(samples)
    waves = []
    for (k, i), js in sorted(groups.items(), key=lambda kv: min(j["start"] for j in kv[1])):
        start, end = min(j["start"] for j in js), max(j["end"] for j in js)
        llm = max(js, key=lambda j: j["end"] - j["start"])
        call = calls[k] if k < len(calls) else {}
        n = call.get("wave_requests", {}).get(i)
        send = sum(min(b, end) - max(a, start) for a, b in windows if b >= start and a <= end)
        waves.append(
            {
                "round": call.get("round", "?"),
                "wave": i,
                "requests": n,
                "start": start,
                "end": end,
                "seconds": end - start,
                "llm_job_s": llm["end"] - llm["start"],
                "llm_job": (llm["start"], llm["end"]),
                "spark_jobs": len(js),
                # overlapping waves share these; the executor's own count is `requests`
                "standin_requests_during_llm_job": requests_between(
                    samples, llm["start"], llm["end"]
                ),
                "mean_in_flight": mean_inflight(samples, start, end) if end > start else None,
                "ratio": n / (end - start) / capacity if n is not None and end > start else None,
                "send_s": send,
                "bookkeeping_s": (end - start) - send,
            }
        )
    return waves


def wave_rows(waves: list[dict[str, Any]], wall0: float) -> list[dict[str, Any]]:
    """The waves as JSON rows: rounded, times relative to the stage start."""
    return [
        {
            k: (round(v, 2) if isinstance(v, float) else v)
            for k, v in w.items()
            if k not in ("start", "end", "llm_job")
        }
        | {"starts_at_s": round(w["start"] - wall0, 2)}
        for w in waves
    ]


def wave_spans(waves: list[dict[str, Any]]) -> tuple[int | None, float, float]:
    """(requests the executor counted in the waves or None, union of the waves' spans,
    union of their LLM jobs)."""
    counts = [w["requests"] for w in waves]
    n = sum(counts) if counts and None not in counts else None
    spans = union_seconds([(w["start"], w["end"]) for w in waves])
    return n, spans, union_seconds([w["llm_job"] for w in waves])


# -- where the time went ------------------------------------------------------------------------
def phases(
    capture: LogCapture,
    marks: Sequence[Mark],
    wall: tuple[float, float],
    jobs: list[dict[str, Any]],
    samples: list[Sample],
    stage_s: float,
) -> list[dict[str, Any]]:
    """Consecutive phases covering the stage: each mark (a time, or a pattern for the first
    log line at or after the previous mark; None or a pattern that never matched: skipped)
    starts the phase it labels; the first phase starts at the stage start, the last ends at
    its end. Per phase: seconds, Spark job time, mean in flight, requests, top call sites."""
    cuts: list[tuple[float, str]] = []
    last = wall[0]
    for when, label in marks:
        t = when if isinstance(when, float | int) or when is None else capture.first(when, last)
        if t is None:
            continue
        cuts.append((float(t), label))
        last = max(last, float(t))
    out = []
    a = wall[0]
    for i, (_, label) in enumerate(cuts):
        b = cuts[i + 1][0] if i + 1 < len(cuts) else wall[1]
        b = min(max(b, a), wall[1])
        clipped = [(max(a, j["start"]), min(b, j["end"])) for j in jobs]
        clipped = [(x, y) for x, y in clipped if y > x]
        sites: Counter[str] = Counter()
        for j in jobs:
            x, y = max(a, j["start"]), min(b, j["end"])
            if y > x:
                sites[callsite(j)] += y - x
        out.append(
            {
                "phase": label,
                "seconds": _r(b - a, 2),
                "share_of_stage": _r((b - a) / stage_s) if stage_s else None,
                "spark_jobs_busy_s": _r(union_seconds(clipped), 2),
                "no_spark_job_s": _r((b - a) - union_seconds(clipped), 2),
                "mean_in_flight": _r(mean_inflight(samples, a, b), 1) if b > a else None,
                "standin_requests": requests_between(samples, a, b) or 0,
                "top_call_sites": [
                    {"site": k, "seconds": round(v, 2)} for k, v in sites.most_common(4)
                ],
            }
        )
        a = b
    return out


def call_sites(
    jobs: list[dict[str, Any]], waves: list[dict[str, Any]], most: int = 20
) -> list[dict[str, Any]]:
    """Spark job time per call site: the waves' LLM jobs, the other jobs inside a wave's span
    (wave bookkeeping) and the jobs outside every wave."""
    llm_jobs = {w["llm_job"] for w in waves}
    seconds: Counter[str] = Counter()
    count: Counter[str] = Counter()
    for j in jobs:
        if (j["start"], j["end"]) in llm_jobs:
            key = "LLM requests (mapInPandas -> staged parquet)"
        elif any(j["start"] >= w["start"] - 0.05 and j["end"] <= w["end"] + 0.05 for w in waves):
            key = "wave bookkeeping: " + callsite(j)
        else:
            key = "outside waves: " + callsite(j)
        seconds[key] += j["end"] - j["start"]
        count[key] += 1
    return [
        {"site": k, "jobs": count[k], "seconds": round(v, 1)} for k, v in seconds.most_common(most)
    ]


def stage_time(
    stage_s: float,
    windows: list[list[float]],
    jobs: list[dict[str, Any]],
    waves: list[dict[str, Any]],
) -> dict[str, Any]:
    """The stage's time against the endpoint's send windows and the Spark jobs."""
    send_s = sum(b - a for a, b in windows)
    busy = union_seconds([(j["start"], j["end"]) for j in jobs])
    return {
        "send_windows_s": _r(send_s, 1),
        "endpoint_idle_s": _r(stage_s - send_s, 1),
        "spark_jobs": len(jobs),
        "spark_jobs_busy_s": _r(busy, 1),
        "driver_gaps_s": _r(stage_s - busy, 1),
        "top_spark_call_sites": call_sites(jobs, waves),
    }


# -- the figures --------------------------------------------------------------------------------
def headline(
    timed: TimedStage,
    stats: dict[str, Any],
    capacity: float,
    slots: int,
    waves: tuple[int | None, float, float],
    target: float = 0.90,
) -> dict[str, Any]:
    """The ratios to capacity of one timed stage (see the benchmarks' docstrings); ``waves``
    is (requests sent in the waves, union of their spans, union of their LLM jobs)."""
    requests = int(stats["requests_total"])
    stage_s, samples, wall = timed.stage_s, timed.samples, timed.wall
    wave_requests, waves_s, llm_jobs_s = waves
    send_s = sum(b - a for a, b in send_windows(samples))
    span = busy_span(samples, *wall)
    span_s = span[1] - span[0] if span else 0.0
    ratio_stage = requests / stage_s / capacity if stage_s else 0.0
    per_cap = lambda n, s: _r(n / s / capacity) if n is not None and s else None  # noqa: E731
    return {
        "ratio_stage": _r(ratio_stage),
        "ratio_waves": per_cap(wave_requests, waves_s),
        "ratio_llm_jobs": per_cap(wave_requests, llm_jobs_s),
        "ratio_send": per_cap(requests, send_s),
        "ratio_busy_span": per_cap(requests, span_s),
        "busy_fraction_stage": _r((mean_inflight(samples, *wall) or 0.0) / slots),
        "meets_target_stage": ratio_stage >= target,
        # the endpoint is kept busy while the stage has requests for it (architecture §4.2)
        "meets_target_busy_span": bool(span_s) and requests / span_s / capacity >= target,
        "requests": requests,
        "stage_s": _r(stage_s, 1),
        "busy_span_s": _r(span_s, 1),
        "achieved_req_s": _r(requests / stage_s, 1) if stage_s else None,
        "llm_seconds_at_capacity": _r(requests / capacity, 1),
        "max_in_flight": stats["max_in_flight"],
    }


def standin_counts(stats: dict[str, Any]) -> dict[str, Any]:
    return {
        "standin_requests_total": stats["requests_total"],
        "standin_completions_ok": stats["completions_ok"],
        "standin_max_in_flight": stats["max_in_flight"],
        "standin_max_queued": stats["max_queued"],
        "standin_by_status": stats["by_status"],
        "standin_faults": stats.get("faults_by_kind"),
    }


def standin_config(args: Any) -> dict[str, Any]:
    return {
        "latency_ms": args.latency_ms,
        "max_concurrency": args.max_concurrency,
        "process": "separate (python -m graphgen_spark.standin)",
    }


def cpu_ms_per_request(cpu: dict[str, Any], requests: int) -> dict[str, float]:
    by_role = cpu["cpu_s_by_role"]
    return {
        role: round(1000 * by_role.get(role, 0.0) / max(1, requests), 2)
        for role in ("standin", "spark_python_workers", "spark_jvm", "driver_python")
    }


def ratio_line(res: dict[str, Any]) -> str:
    h = res["headline"]
    return (
        f"  ratio stage {h['ratio_stage']}  waves {h['ratio_waves']}  "
        f"send windows {h['ratio_send']}  busy span {h.get('ratio_busy_span')}  "
        f"busy fraction {h['busy_fraction_stage']}  "
        f"(target >= {res['target_ratio']}: over the busy span "
        f"{'MET' if h.get('meets_target_busy_span') else 'NOT met'}, over the stage "
        f"{'MET' if h['meets_target_stage'] else 'NOT met'})"
    )


def warn_if_short(res: dict[str, Any], args: Any, log: logging.Logger, knob: str) -> None:
    """Warn when the run held less LLM work than ``--min-llm-seconds``."""
    at_capacity = res["headline"]["llm_seconds_at_capacity"]
    if at_capacity < args.min_llm_seconds:
        log.warning(
            "only %.0f s of LLM work at capacity (< %.0f s): raise %s",
            at_capacity,
            args.min_llm_seconds,
            knob,
        )
