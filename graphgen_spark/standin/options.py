"""Knobs of the stand-in endpoint.

The stand-in exists so tests and benchmarks can exercise the real client stack
(HTTP, retries, timeouts, validation) without a language model. Every knob here
is about reproducing a *behaviour* of a real serving stack — latency, a fixed
number of decoding slots, and the ways requests fail — deterministically.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: Fault kinds drawn from by default (the content faults and ``401_echo`` are opt-in: they
#: are not transport failures).
DEFAULT_FAULTS: tuple[str, ...] = ("429", "500", "hang", "drop", "truncated")

#: Every fault kind the stand-in can inject.
ALLOWED_FAULTS: tuple[str, ...] = (
    "429",
    "500",
    "502",
    "503",
    "hang",
    "drop",
    "truncated",
    "invalid_json",  # a 200 whose content is broken JSON
    "empty",  # a 200 whose content is empty
    "no_logprobs",  # a 200 whose logprobs were dropped
    "401_echo",  # a 401 whose body echoes the request's Authorization header (a leaky gateway)
)


class OptionError(ValueError):
    """An invalid option value; ``field`` names the offending ``StandinOptions`` field."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


@dataclass(frozen=True)
class StandinOptions:
    """Configuration of one stand-in server.

    ``max_concurrency`` models a server with C decoding slots: requests beyond the
    cap wait in a FIFO queue rather than being rejected, so throughput is bounded by
    ``C / latency`` exactly like a saturated real endpoint.

    Faults are a pure function of (seed, request body, attempt number), so a test
    that retries a request sees the same sequence of failures on every run.
    """

    host: str = "127.0.0.1"
    port: int = 0  # 0 = let the OS pick a free port
    latency_ms: float = 0
    max_concurrency: int = 0  # 0 = unlimited
    fault_rate: float = 0.0
    faults: tuple[str, ...] = DEFAULT_FAULTS
    fail_first: int = 0
    retry_after_s: float = 1.0
    hang_s: float = 300.0
    seed: int = 0
    script: str | Path | None = None
    no_logprobs: bool = False

    def __post_init__(self) -> None:
        # Accept any iterable (e.g. a list from a caller) but store a hashable tuple.
        object.__setattr__(self, "faults", tuple(str(f) for f in self.faults))

    def validate(self) -> None:
        """Raise :class:`OptionError` naming the offending option and what is allowed."""
        if not 0 <= self.port <= 65535:
            raise OptionError(
                "port", f"must be in 0..65535 (0 = pick a free port), got {self.port}"
            )
        if self.latency_ms < 0:
            raise OptionError("latency_ms", f"must be >= 0, got {self.latency_ms}")
        if self.max_concurrency < 0:
            raise OptionError(
                "max_concurrency", f"must be >= 0 (0 = unlimited), got {self.max_concurrency}"
            )
        if not 0.0 <= self.fault_rate <= 1.0:
            raise OptionError("fault_rate", f"must be in [0, 1], got {self.fault_rate}")
        bad = [f for f in self.faults if f not in ALLOWED_FAULTS]
        if bad:
            raise OptionError(
                "faults", f"unknown kind(s) {', '.join(bad)}; allowed: {', '.join(ALLOWED_FAULTS)}"
            )
        if (self.fault_rate > 0 or self.fail_first > 0) and not self.faults:
            raise OptionError(
                "faults", "must name at least one kind when fault_rate or fail_first is set"
            )
        if self.fail_first < 0:
            raise OptionError("fail_first", f"must be >= 0, got {self.fail_first}")
        if self.retry_after_s < 0:
            raise OptionError("retry_after_s", f"must be >= 0, got {self.retry_after_s}")
        if self.hang_s < 0:
            raise OptionError("hang_s", f"must be >= 0, got {self.hang_s}")
        if self.script is not None and not Path(self.script).is_file():
            raise OptionError("script", f"file not found: {self.script}")
