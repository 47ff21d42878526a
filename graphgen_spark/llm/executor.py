"""The LLM layer's entry point for stages: every LLM call is a row (architecture §4.1–4.2).

Two entry points share one mechanism:

* ``execute(requests)`` sends a DataFrame of requests (REQUEST_SCHEMA) that are not yet
  answered ok in ``llm_calls`` (the cache shared by all runs);
* ``converse(rows, work)`` runs a *program* per row inside the executor task, e.g. a whole
  extraction conversation, whose every turn is a request answered from the row's cached
  calls or sent. Running the conversation where the answers arrive keeps the endpoint
  busy: the driver does not synchronise between turns.

The runner (``llm/runner.py``) sends the rows in waves; the ledger (``llm/ledger.py``)
journals and merges every call. Nothing here depends on a stage: the context is anything
with ``spark``, ``cfg``, ``tables``, ``run_id`` and ``log``.
"""

from __future__ import annotations

import logging
from typing import Protocol

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from graphgen_spark.config import Config
from graphgen_spark.errors import BudgetExceeded
from graphgen_spark.llm.ledger import Ledger
from graphgen_spark.llm.requests import REQUEST_SCHEMA
from graphgen_spark.llm.runner import WaveRunner
from graphgen_spark.llm.work import (
    Answer,
    Ask,
    ExecutionSummary,
    LLMWork,
    Probe,
    Program,
)
from graphgen_spark.tables import Tables

__all__ = [
    "Answer",
    "Ask",
    "BudgetExceeded",
    "ExecutionSummary",
    "LLMExecutor",
    "LLMWork",
    "Probe",
    "Program",
]


class LLMContext(Protocol):
    spark: SparkSession
    cfg: Config
    tables: Tables
    run_id: str
    log: logging.Logger


async def _send_request(row: dict, ask: Ask) -> dict:
    """The program of ``execute``: the row is the request."""
    await ask(row)
    return {"request_id": row["request_id"]}


_REQUEST_OUT = T.StructType([T.StructField("request_id", T.StringType())])


class LLMExecutor:
    """Runs request DataFrames and per-row programs through the ledger and the endpoints."""

    def __init__(self, ctx: LLMContext) -> None:
        self.ctx = ctx
        llm = ctx.cfg.llm
        self.ledger = Ledger(
            ctx.spark, ctx.tables, ctx.run_id, ctx.log, llm.give_up_after, llm.retry_given_up
        )
        self.runner = WaveRunner(ctx.spark, ctx.cfg, self.ledger, ctx.log)

    def execute(
        self, requests: DataFrame, stage: str, probe: Probe | None = None
    ) -> ExecutionSummary:
        """Send every request of ``requests`` not yet answered ok; record all outcomes.

        With ``probe``, one of the requests is sent alone first and ``probe`` sees its call
        row: it raises to stop before anything else is paid for. The probe is a real
        request of the set, so it costs nothing extra and the stage does not wait for a
        separate round.
        """
        self.ledger.recover()
        requests = requests.select(*REQUEST_SCHEMA.fieldNames()).dropDuplicates(["request_id"])
        pending = self.runner.stage(
            requests.join(self.ledger.answered().select("request_id"), "request_id", "left_anti"),
            stage,
        )
        # request rows name their role; read from the staged rows, not recomputed
        roles = tuple(sorted(r["role"] for r in pending.rows.select("role").distinct().collect()))
        work = LLMWork(stage, _send_request, "request_id", _REQUEST_OUT, roles, probe=probe)
        summary, _ = self.runner.run(work, pending)
        summary.requested = requests.count()
        summary.cached = summary.requested - summary.sent - summary.skipped
        if not summary.sent:
            self.ctx.log.info(
                "[%s] %d requests, all answered before: 0 sent", stage, summary.requested
            )
        return summary

    def converse(self, rows: DataFrame, work: LLMWork) -> tuple[ExecutionSummary, DataFrame]:
        """Run ``work.program(row, ask)`` for every row of ``rows`` on the executors.

        ``work.key`` identifies a row's conversation: its calls are stored with it in
        ``llm_calls.conversation`` and handed back to the program as its cache on a later
        run, so a replayed conversation pays only for turns never answered ok. Returns the
        summary and the programs' outputs, kept in ``work.outputs_path``.
        """
        if work.outputs_path is None:
            raise ValueError(f"[{work.stage}] converse needs LLMWork.outputs_path")
        self.ledger.recover()
        pending = self.runner.stage(
            self.ledger.cached_turns(rows, work.key, work.stage), work.stage
        )
        summary, outputs = self.runner.run(work, pending)
        assert outputs is not None
        return summary, outputs

    def results(self, requests: DataFrame) -> DataFrame:
        """``requests`` joined with their outcomes (status, parsed, response, logprobs, error)."""
        return self.ledger.results(requests)
