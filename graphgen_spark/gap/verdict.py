"""From the trainee's top-k log-probabilities to a verdict and a loss (method.md §5.3).

Every candidate token at the first generated position counts: it is normalised (NFKC,
SentencePiece/BPE word markers, whitespace and surrounding punctuation stripped, casefold)
and looked up in English and Chinese synonym lists, so "Yes", " yes", "YES." and "是" all
count as yes. p_yes = Y / (Y + N) over the yes and no masses only; the loss of a statement
is −ln max(P(label), ε). No verdict mass at all is ``no_verdict``, never a default loss.
A reply whose logprobs are not log-probabilities (NaN, +inf, a value above 0, a missing
or non-numeric field, no first position) raises :class:`BadLogprobs`: the judge records it
as ``no_verdict`` with the reason, never an overflow or a NaN loss.
"""

from __future__ import annotations

import json
import math
import unicodedata
from dataclasses import dataclass

YES_WORDS = frozenset(
    [
        "yes",
        "y",
        "yeah",
        "yep",
        "yup",
        "true",
        "correct",
        "right",
        "sure",
        "indeed",
        "certainly",
        "是",
        "是的",
        "对",
        "对的",
        "正确",
        "没错",
        "真",
    ]
)
NO_WORDS = frozenset(
    [
        "no",
        "n",
        "nope",
        "nah",
        "false",
        "incorrect",
        "wrong",
        "not",
        "否",
        "不",
        "不是",
        "不对",
        "错",
        "错误",
        "假",
    ]
)
_MARKERS = ("▁", "Ġ", "Ċ")
_PUNCT = " \t\r\n.,!?;:'\"`()[]{}<>。，！？；：、“”‘’（）【】《》「」『』…-—*_~"


def normalise_token(token: str) -> str:
    t = unicodedata.normalize("NFKC", token or "")
    t = t.strip()
    while t.startswith(_MARKERS):
        t = t[1:]
    return t.strip(_PUNCT).casefold()


@dataclass(frozen=True)
class Verdict:
    yes_mass: float
    no_mass: float

    @property
    def verdict_mass(self) -> float:
        return self.yes_mass + self.no_mass

    @property
    def ok(self) -> bool:
        return self.verdict_mass > 0

    @property
    def p_yes(self) -> float | None:
        return self.yes_mass / self.verdict_mass if self.ok else None


# servers round: a logprob a hair above 0 is P = 1; anything more is not a probability
LOGPROB_TOLERANCE = 1e-4


class BadLogprobs(ValueError):
    """The reply's logprobs cannot be read as log-probabilities."""


def checked_logprob(value: object) -> float:
    """``value`` as a logprob ≤ 0 (``-inf`` is P = 0), or :class:`BadLogprobs` saying why."""
    try:
        lp = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise BadLogprobs(f"logprob is not a number: {str(value)[:40]!r}") from None
    if math.isnan(lp) or lp > LOGPROB_TOLERANCE:
        raise BadLogprobs(f"logprob {lp!r} is not a log-probability (NaN or above 0)")
    return min(lp, 0.0)


def first_top_logprobs(logprobs_json: str) -> list[dict]:
    """The top-k candidates of the first generated position of a stored logprobs reply."""
    try:
        top = json.loads(logprobs_json)[0]["top_logprobs"]
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise BadLogprobs(f"malformed logprobs: {type(exc).__name__}") from None
    if not isinstance(top, list) or not all(isinstance(c, dict) for c in top):
        raise BadLogprobs("malformed logprobs: top_logprobs is not a list of candidates")
    return top


def read_verdict(
    top_logprobs: list[dict],
    yes_words: frozenset[str] = YES_WORDS,
    no_words: frozenset[str] = NO_WORDS,
) -> Verdict:
    """Yes and no probability masses over all top-k candidates of one position; one
    candidate that is not a log-probability makes the whole position unreadable."""
    yes = no = 0.0
    for cand in top_logprobs:
        word = normalise_token(str(cand.get("token", "")))
        p = math.exp(checked_logprob(cand.get("logprob")))
        if word in yes_words:
            yes += p
        elif word in no_words:
            no += p
    return Verdict(yes, no)


def statement_loss(p_yes: float, label_yes: bool, floor: float = 1e-6) -> float:
    """−ln P(correct label), with the probability floored at ``floor``."""
    p = p_yes if label_yes else 1.0 - p_yes
    return -math.log(max(p, floor))
