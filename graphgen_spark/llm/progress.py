"""Live progress of one LLM runner call: done / total, rate, ETA, tokens and cost so far.

A terminal gets one ``tqdm`` line redrawn in place (log records print above it); anything
else (a log file, a notebook, a job's driver log) gets the same fields as plain log lines
every ``every_s`` seconds and once at the end, since a redrawn line there is only noise.

The runner feeds it (``llm/runner.py``): the landed waves' counts (accumulators) plus what
the running tasks last wrote to their progress files (``llm/journal.py``). Tokens and cost
are the call rows' own figures, the ones the ledger merges into ``llm_calls``; nothing here
prices a call.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from dataclasses import dataclass
from typing import IO, Any

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

_FIELDS = "{n_fmt}/{total_fmt}{unit} [{elapsed}<{remaining}, {rate_noinv_fmt}{postfix}]"
LOG_FORMAT = "{desc}: " + _FIELDS
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| " + _FIELDS
REDRAW_S = 1.0  # how often a terminal line is refreshed


@dataclass(frozen=True)
class Tally:
    """The figures a progress line shows."""

    done: int = 0  # rows whose program finished
    tokens: int = 0
    cost: float = 0.0

    @classmethod
    def of(cls, *stats: dict[str, float]) -> Tally:
        """Sum task counts (the runner's accumulator keys)."""

        def total(key: str) -> float:
            return sum(s.get(key, 0) for s in stats)

        tokens = total("prompt_tokens") + total("completion_tokens")
        return cls(int(total("rows")), int(tokens), float(total("cost")))

    @property
    def postfix(self) -> str:
        return f"{self.tokens:,} tokens, ${self.cost:.4f}"


def is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Progress:
    """One line per runner call; a context manager that closes it however the call ends."""

    def __init__(
        self,
        desc: str,
        total: int,
        unit: str,
        log: logging.Logger,
        every_s: float,
        stream: IO[str] | None = None,
    ) -> None:
        self.desc, self.total, self.unit, self.log = desc, total, f" {unit}", log
        stream = stream or sys.stderr
        self.live = is_terminal(stream)
        self.every_s = REDRAW_S if self.live else every_s
        self.t0 = self.last_line = time.monotonic()
        self.tally = Tally()
        self._stack = contextlib.ExitStack()
        self.bar: tqdm | None = None
        if self.live:
            self.bar = tqdm(
                total=total,
                desc=desc,
                unit=self.unit,
                file=stream,
                bar_format=BAR_FORMAT,
                dynamic_ncols=True,
                mininterval=REDRAW_S / 2,
                postfix=self.tally.postfix,
            )

    def __enter__(self) -> Progress:
        if self.live:  # log records print above the line instead of through it
            self._stack.enter_context(logging_redirect_tqdm())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.bar is not None:
                self.bar.close()
            else:
                self.log.info("%s", self.line())
        finally:
            self._stack.close()

    def show(self, tally: Tally) -> None:
        """Redraw the terminal line, or log a line if ``every_s`` has passed since the last."""
        self.tally = tally
        if self.bar is not None:
            self.bar.set_postfix_str(tally.postfix, refresh=False)
            self.bar.update(tally.done - self.bar.n)  # by steps: tqdm's rate smooths them
            self.bar.refresh()
        elif time.monotonic() - self.last_line >= self.every_s:
            self.last_line = time.monotonic()
            self.log.info("%s", self.line())

    def line(self) -> str:
        """The plain line: the terminal's fields at the average rate so far."""
        return tqdm.format_meter(
            self.tally.done,
            self.total,
            time.monotonic() - self.t0,
            prefix=self.desc,
            unit=self.unit,
            postfix=self.tally.postfix,
            bar_format=LOG_FORMAT,
        )
