"""A driver of its own for ``test_progress.py``: a non-LLM stage, then an LLM stage.

``python tests/progress_child.py URL OUTPUT EVENTS``: its stderr is whatever the test
attached (a pty or a file), Spark's event log goes to EVENTS, and the last stdout line is
the ledger's spend (tokens and cost), to compare with the last progress line.
"""

from __future__ import annotations

import sys

from contexts import stage_context
from test_llm_executor import make_cfg, requests_df

from graphgen_spark.cli import _setup_logging
from graphgen_spark.llm.executor import LLMExecutor
from graphgen_spark.session import build_session
from graphgen_spark.stages.base import Stage, StageContext, StageResult

REQUESTS = 48


def _count(ctx: StageContext) -> StageResult:
    return StageResult({"rows": ctx.spark.range(10).count()})


def _rewrite(ctx: StageContext) -> StageResult:
    reqs = requests_df(ctx.spark, ctx.cfg, REQUESTS, stage="rewrite")
    return StageResult.of_llm(LLMExecutor(ctx).execute(reqs, "rewrite"))


COUNT = Stage("count", _count, reads=(), writes=())
REWRITE = Stage("rewrite", _rewrite, reads=(), writes=("llm_calls",))


def main(url: str, output: str, events: str) -> None:
    _setup_logging()
    cfg = make_cfg(url, concurrency_per_task=2, progress_s=1.0, wave_seconds=2.0)
    conf = {"spark.ui.enabled": "false", "spark.eventLog.enabled": "true"}
    conf |= {"spark.eventLog.compress": "false", "spark.eventLog.rolling.enabled": "false"}
    spark = build_session(cfg, "local[2]", {**conf, "spark.eventLog.dir": events})
    ctx = stage_context(spark, output, cfg)
    COUNT.run(ctx)
    REWRITE.run(ctx)
    tokens, cost = LLMExecutor(ctx).ledger.spent("output")
    spark.stop()
    print(f"ledger: {tokens} tokens, ${cost:.4f}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
