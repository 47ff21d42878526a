"""What a stage hands the LLM layer and what it gets back (no Spark jobs here).

A stage's LLM work is one :class:`LLMWork`: the rows to run, the program each row runs
(one request, or a whole conversation), the key naming a row's calls, the roles it calls
and where its outputs go. The runner (``llm/runner.py``) sends it in waves; the ledger
(``llm/ledger.py``) records every call; :class:`ExecutionSummary` is the tally.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from pyspark.sql import types as T


@dataclass(frozen=True)
class Answer:
    """What a program sees of one request: the cached or fresh outcome."""

    request_id: str
    status: str  # ok | failed | invalid | skipped (not sent: the budget is spent)
    parsed: str | None = None
    response: str | None = None
    logprobs: str | None = None
    error: str | None = None
    error_kind: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


Ask = Callable[[dict[str, Any]], Awaitable[Answer]]
Program = Callable[[dict[str, Any], Ask], Awaitable[dict[str, Any]]]
# Looks at the call rows of a one-request first wave; raising stops the call before the
# other requests are sent (e.g. a trainee that returns no logprobs).
Probe = Callable[[list[dict[str, Any]]], None]


@dataclass(frozen=True)
class LLMWork:
    """One stage's LLM work, declared once instead of threaded through positional flags."""

    stage: str
    program: Program
    key: str  # the column naming a row; its calls carry it in llm_calls.conversation
    out_schema: T.StructType  # what the program returns per row
    roles: tuple[str, ...]  # the endpoints the program calls
    calls_per_row: int = 1  # the most requests one row can take (wave sizing)
    unit: str = "requests"  # what a row is, for progress lines
    outputs_path: str | None = None  # where the programs' outputs are kept; None: dropped
    probe: Probe | None = None


@dataclass
class ExecutionSummary:
    requested: int = 0
    cached: int = 0
    sent: int = 0
    ok: int = 0
    failed: int = 0
    invalid: int = 0
    skipped: int = 0  # not sent because the budget would not cover them
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    seconds: float = 0.0
    rows: int = 0  # rows whose program finished (requests or conversations)
    program_errors: int = 0  # rows whose program raised: kept pending for the next run
    errors: dict[str, int] = field(default_factory=dict)

    def counts(self, prefix: str = "llm") -> dict[str, int]:
        """The tally as ``runs.stage_stats`` counts."""
        counts = {f"{prefix}_{k}": int(v) for k, v in asdict(self).items() if k in _COUNTED}
        counts.update({f"{prefix}_error_{k}": v for k, v in self.errors.items()})
        return counts

    def add_stats(self, stats: dict[str, float]) -> None:
        for k, v in stats.items():
            if k.startswith("error:"):
                self.errors[k[6:]] = self.errors.get(k[6:], 0) + int(v)
            elif k == "cost":
                self.cost += v
            else:
                setattr(self, k, getattr(self, k) + int(v))


_COUNTED = ("requested", "cached", "sent", "ok", "failed", "invalid", "skipped", "program_errors")
