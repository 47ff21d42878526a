"""Anticipated failures: each message says what happened and what to do, so the command
line prints it without a traceback (``cli.main``). Importing this module is cheap."""

from __future__ import annotations


class BudgetExceeded(RuntimeError):
    """run.max_tokens / run.max_cost reached: no new calls; rerun later to resume."""


class StageIncomplete(RuntimeError):
    """A stage left more of its work undone than its config allows; everything done is
    kept and a rerun of the same command retries only the rest."""


class OutputInUse(RuntimeError):
    """Another live run holds the output's lease (``lease.py``)."""


class WriteConflict(RuntimeError):
    """A Delta write kept conflicting with another writer's commits (``tables.py``)."""


ANTICIPATED = (BudgetExceeded, StageIncomplete, OutputInUse, WriteConflict)
# the run ended with work a rerun retries: exit code 3, like a run with requests left
WORK_LEFT = (BudgetExceeded, StageIncomplete)
