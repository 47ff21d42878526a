"""The dry run counts what a run then sends: per LLM stage, on a fresh run and on the rerun
after injected failures (issue 14). Both counts come from the stages' declarations
(``Stage.pending`` + ``Stage.llm``); what was sent is the stand-in's own request counter.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from contexts import stage_context

from graphgen_spark.config import build_config
from graphgen_spark.dryrun import estimate
from graphgen_spark.errors import StageIncomplete
from graphgen_spark.pipeline import NAMES, STAGES
from graphgen_spark.stages.base import Stage, StageContext
from graphgen_spark.standin import StandinOptions, StandinServer


def _docs(path: Path, numbers: range) -> None:
    with path.open("w") as f:
        for i in numbers:
            text = (
                f"Ada Lindqvist{i} founded the Harbour{i} Observatory in Tallmoor{i}. "
                f"The Harbour{i} Observatory trained Felix Orm{i}, who later charted the "
                f"Greywater{i} Shoals for the Observatory."
            )
            f.write(json.dumps({"id": f"doc-{i}", "content": text}) + "\n")


def _cfg(url: str):
    """Every request is sent once: no transport retries, one attempt per stage, no gleaning."""
    endpoint = {"base_url": url, "model": "standin", "timeout_s": 10}
    return build_config(
        {
            "spark": {"master": "local[2]", "shuffle_partitions": 4},
            "llm": {
                "max_retries": 0,
                "backoff_min_s": 0.01,
                "backoff_max_s": 0.05,
                "synthesizer": endpoint,
                "trainee": {**endpoint, "model": "trainee-a"},
            },
            "extract": {"max_gleaning_rounds": 0, "max_attempts": 1, "max_failed_fraction": 1},
            "quiz": {"max_attempts": 1},
            "judge": {"max_unjudged_fraction": 1},
            "generate": {"modes": ["aggregated"], "num_questions": 2},
        },
        env=False,
    )


def _count(ctx: StageContext, stage: Stage) -> tuple[int, int, int]:
    """The dry run's units and fewest..most requests for the stage (modes summed)."""
    rows = estimate(ctx, [stage])
    assert rows and all(r.stage.split(":")[0] == stage.name for r in rows)
    return tuple(
        sum(getattr(r, k) for r in rows) for k in ("units", "min_requests", "max_requests")
    )


def _sent(ctx: StageContext, stage: Stage, server: StandinServer) -> int:
    """Requests the stage sent (a stage may stop with work left: StageIncomplete)."""
    before = server.stats()["requests_total"]
    with contextlib.suppress(StageIncomplete):
        stage.run(ctx)
    return server.stats()["requests_total"] - before


def _pass(spark, out: Path, corpus: Path, servers, faulty: bool) -> list[str]:
    """ingest .. generate over ``corpus``. Fresh: each LLM stage sends what the dry run
    counted. Faulty: each LLM stage runs on the faulty endpoint first, then the rerun on the
    clean one sends what the dry run counted after the faults."""
    bad, good = servers
    urls = (bad.base_url, good.base_url)
    ctx = {
        u: stage_context(spark, out, _cfg(u), run_id="dry-test", input_path=corpus) for u in urls
    }
    clean = ctx[good.base_url]
    lines = []
    for stage in STAGES[: NAMES.index("generate") + 1]:
        if stage.llm is None or stage.pending is None:  # free stages; merge's count is unknown
            stage.run(clean)
            continue
        faults = _sent(ctx[bad.base_url], stage, bad) if faulty else 0
        counted = _count(clean, stage)
        sent = _sent(clean, stage, good)
        assert sent == counted[1] <= counted[2], (stage.name, counted, sent)
        lines.append(
            f"{stage.name}: {faults} sent to the faulty endpoint, then {sent} counted and sent"
        )
    return lines


@pytest.fixture(scope="module")
def servers():
    faulty = StandinOptions(fault_rate=0.4, faults=("500",), seed=11)
    with (
        StandinServer(faulty, announce=False) as bad,
        StandinServer(StandinOptions(), announce=False) as good,
    ):
        yield bad, good


def test_dry_run_counts_what_a_fresh_run_and_a_rerun_send(spark, tmp_path, servers):
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    corpus.mkdir()
    _docs(corpus / "a.jsonl", range(3))
    fresh = _pass(spark, out, corpus, servers, faulty=False)
    _docs(corpus / "b.jsonl", range(3, 6))
    rerun = _pass(spark, out, corpus, servers, faulty=True)
    print("\n".join(["fresh:", *fresh, "after faults:", *rerun]))
    # the faults left work for the reruns (which stages depends on the seeded draws); then
    # nothing is left
    assert not all(line.endswith(" 0 counted and sent") for line in rerun)
    ctx = stage_context(spark, out, _cfg(servers[1].base_url), run_id="dry-test")
    left = [(e.stage, e.units, e.max_requests) for e in estimate(ctx, list(STAGES))]
    assert len(left) == 5 and all(e[1:] == (0, 0) for e in left), left
