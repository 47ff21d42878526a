"""Anticipated failures and the exit codes they end in.

Each message says what happened; :data:`NEXT_STEP` says what to do about it. The command
line prints both without a traceback (``cli.main``). Importing this module is cheap: it
runs before Spark starts.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The documented exit codes of ``graphgen-spark run`` / ``submit`` (README: Exit codes)."""

    OK = 0
    FAILED = 1  # an error the job did not anticipate (a bug, or the environment broke)
    CONFIG = 2  # configuration, arguments, input path or classpath
    REQUESTS_LEFT = 3  # finished, but some requests are not done
    OUTPUT_IN_USE = 4  # another run holds the output, or kept conflicting with this one
    BUDGET = 5  # run.max_tokens / run.max_cost reached
    STAGE_INCOMPLETE = 6  # a stage left more undone than its config allows


class UsageError(ValueError):
    """A wrong argument or input path, found before Spark starts."""


class MissingArtifact(RuntimeError):
    """A JVM class the job needs is not on the Spark classpath."""


class BudgetExceeded(RuntimeError):
    """run.max_tokens / run.max_cost reached: no new calls; rerun later to resume."""


class StageIncomplete(RuntimeError):
    """A stage left more of its work undone than its config allows; everything done is
    kept and a rerun of the same command retries only the rest."""


class OutputInUse(RuntimeError):
    """Another live run holds the output's lease (``lease.py``)."""


class WriteConflict(RuntimeError):
    """A Delta write kept conflicting with another writer's commits (``tables.py``)."""


EXIT_CODES: dict[type[Exception], ExitCode] = {
    UsageError: ExitCode.CONFIG,
    MissingArtifact: ExitCode.CONFIG,
    BudgetExceeded: ExitCode.BUDGET,
    StageIncomplete: ExitCode.STAGE_INCOMPLETE,
    OutputInUse: ExitCode.OUTPUT_IN_USE,
    WriteConflict: ExitCode.OUTPUT_IN_USE,
}
ANTICIPATED = tuple(EXIT_CODES)

NEXT_STEP: dict[ExitCode, str] = {
    ExitCode.FAILED: "rerun the same command to resume (nothing done is lost); if the same "
    "error comes back, report it with the lines above",
    ExitCode.CONFIG: "fix what the message names and run again; nothing was sent",
    ExitCode.REQUESTS_LEFT: "rerun the same command to retry only the requests not done",
    ExitCode.OUTPUT_IN_USE: "wait for the other run to finish (or give this run its own "
    "--output), then rerun",
    ExitCode.BUDGET: "raise run.max_cost / run.max_tokens in the config and rerun the same "
    "command: it resumes where the budget stopped it",
    ExitCode.STAGE_INCOMPLETE: "read why in the llm_calls errors and the quarantine table "
    "(`graphgen-spark status --output DIR`), fix the endpoint or raise the stage's "
    "max_failed_fraction, then rerun the same command",
}


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit code an anticipated error ends the command with (FAILED otherwise)."""
    for kind, code in EXIT_CODES.items():
        if isinstance(exc, kind):
            return code
    return ExitCode.FAILED
