"""Which stages a run can skip: nothing they read or write changed since they last settled.

A stage *settles* when it ends with nothing left for a later run: no failed, invalid,
budget-skipped or program-error units. Its fingerprint then records the config that
shapes results, what it reads or writes outside the tables (``Stage.outside``: the input
listing, the export folder) and the Delta version of every table it touched. A later run
that finds the same fingerprint skips the stage: running it again would read the same
rows, find every LLM answer cached and write nothing, only slower.

Left out of the fingerprint: the shared sinks every stage appends to and none derives its
output from (``quarantine``, ``llm_calls``, ``runs``), and the config that only says how
to reach an endpoint or what to spend (URLs, keys, limits, prices, Spark plumbing).
Fingerprints live in the ``settled`` column of the ``runs`` table: per stage, the newest
run that ran it decides, and a run whose stage did not settle records an empty one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from graphgen_spark.config import Config
from graphgen_spark.tables import SCHEMAS, Tables

if TYPE_CHECKING:
    from graphgen_spark.stages.base import Stage, StageContext, StageResult

SINKS = frozenset({"quarantine", "llm_calls", "runs"})
#: counts that mean a later run still has work: what keeps a stage from settling
UNSETTLED = ("_failed", "_invalid", "_skipped", "_program_errors")
_TRANSPORT = ("base_url", "api_key", "timeout_s", "max_concurrency", "rpm", "tpm")
_PRICES = ("price_prompt_per_1m", "price_completion_per_1m")
_LLM_PLUMBING = (
    "concurrency_per_task",
    "max_retries",
    "backoff_min_s",
    "backoff_max_s",
    "wave_seconds",
    "wave_size",
    "progress_s",
)
_RUN_PLUMBING = ("max_tokens", "max_cost", "budget_scope", "lease_ttl_s", "skip_settled")


def results_hash(cfg: Config) -> str:
    """Hash of the config that shapes a stage's rows (not how endpoints are reached)."""
    data = cfg.model_dump(mode="json", exclude={"spark": True})
    for role in ("synthesizer", "trainee"):
        for key in _TRANSPORT + _PRICES:
            data["llm"][role].pop(key, None)
    for key in _LLM_PLUMBING:
        data["llm"].pop(key, None)
    for key in _RUN_PLUMBING:
        data["run"].pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def is_settled(result: StageResult) -> bool:
    return not any(v for k, v in result.counts.items() if k.endswith(UNSETTLED))


@dataclass
class Settled:
    """The fingerprints a run starts from (``previous``) and the ones it records."""

    tables: Tables
    cfg_hash: str
    skip: bool = True
    previous: dict[str, str] = field(default_factory=dict)
    recorded: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, tables: Tables, cfg: Config) -> Settled:
        """Per stage, the fingerprint of the newest run that ran it."""
        previous: dict[str, str] = {}
        if tables.exists("runs"):
            rows = (
                tables.read("runs")
                .where(F.size("settled") > 0)
                .orderBy(F.desc("started_at"))
                .select("settled")
                .collect()
            )
            for row in rows:
                for stage, mark in (row["settled"] or {}).items():
                    previous.setdefault(stage, mark)
        return cls(tables, results_hash(cfg), cfg.run.skip_settled, previous)

    def unchanged(self, stage: Stage, ctx: StageContext) -> bool:
        """Whether the stage's last fingerprint still holds; then it is carried forward."""
        mark = self.previous.get(stage.name)
        if not mark or not self.skip:
            return False
        then = json.loads(mark)
        now = self._fingerprint(stage, ctx, list(then["tables"]))
        if now != then:
            return False
        self.recorded[stage.name] = mark
        return True

    def record(self, stage: Stage, ctx: StageContext, result: StageResult) -> None:
        """After the stage ran: its fingerprint if it settled, else an empty one."""
        if not is_settled(result):
            self.recorded[stage.name] = ""
            return
        touched = sorted(ctx.tables.touched & SCHEMAS.keys() - SINKS)
        fingerprint = self._fingerprint(stage, ctx, touched)
        self.recorded[stage.name] = "" if fingerprint is None else json.dumps(fingerprint)

    def _fingerprint(self, stage: Stage, ctx: StageContext, names: list[str]) -> dict | None:
        outside = stage.outside(ctx)
        if outside is None:
            return None
        return {
            "config": self.cfg_hash,
            "outside": outside,
            "tables": {n: self.tables.version(n) for n in names},
        }
