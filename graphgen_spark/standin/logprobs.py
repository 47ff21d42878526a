"""Token log-probabilities in the OpenAI ``choices[].logprobs`` shape.

Callers that score answers from logprobs (e.g. a yes/no judge reading P("yes"))
need *proper* distributions: the chosen token first, k alternates in descending
order, and total probability mass <= 1. The confidence varies per prompt (hash)
so calibration code sees a spread of values, but it is always deterministic.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from .picker import Picker

# BPE-ish split that round-trips: words carry at most one leading space.
_TOKEN_RE = re.compile(r"\s?\w+|[^\w\s]|\s+")

_YES_NO_ALTERNATES: dict[str, tuple[str, ...]] = {
    "yes": ("no", "Yes", " yes", "No", "是", "否", "YES", " no", "yeah", "nope", "Y", "N"),
    "no": ("yes", "No", " no", "Yes", "否", "是", "NO", " yes", "nope", "yeah", "N", "Y"),
}
_FILLER_ALTERNATES = (".", ",", " the", " a", " and", " of", "\n", " is", " to", " in", " it")
_MAX_TOP_LOGPROBS = 20


def tokenize(text: str) -> list[str]:
    """Split ``text`` into pseudo-tokens whose concatenation is ``text``."""
    return _TOKEN_RE.findall(text) or [text]


def _alternates(token: str) -> list[str]:
    key = token.strip().lower()
    if key in _YES_NO_ALTERNATES:
        base: Sequence[str] = _YES_NO_ALTERNATES[key]
    else:
        stripped = token.strip()
        base = (stripped.capitalize(), " " + stripped, stripped.upper(), stripped.lower())
    seen = {token}
    out: list[str] = []
    for alt in (*base, *_FILLER_ALTERNATES):
        if alt and alt not in seen:
            seen.add(alt)
            out.append(alt)
    i = 0
    while len(out) < _MAX_TOP_LOGPROBS:  # only reached for exotic tokens
        out.append(f"<alt{i}>")
        i += 1
    return out


def _entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def position(
    token: str, k: int, picker: Picker, path: str, scripted: Sequence[Sequence[Any]] | None = None
) -> dict[str, Any]:
    """One ``logprobs.content`` entry for ``token`` with ``k`` top alternatives.

    ``scripted`` (from a script rule) is returned verbatim as the top list; the
    chosen token's logprob is taken from it when present.
    """
    if scripted is not None:
        top = [_entry(str(t), float(lp)) for t, lp in scripted]
        chosen = next((e["logprob"] for e in top if e["token"] == token), None)
        if chosen is None:
            chosen = top[0]["logprob"] if top else 0.0
        return {**_entry(token, chosen), "top_logprobs": top}
    # P(chosen) in [0.55, 0.95); the rest decays geometrically and keeps 5% unassigned.
    p_top = 0.55 + 0.4 * picker.unit(path)
    top = [_entry(token, math.log(p_top))]
    if k > 1:
        rest = (1.0 - p_top) * 0.95
        weights = [0.5**i for i in range(1, k)]
        total = sum(weights)
        alts = _alternates(token)
        top.extend(
            _entry(alt, math.log(rest * w / total)) for alt, w in zip(alts, weights, strict=False)
        )
    return {**_entry(token, top[0]["logprob"]), "top_logprobs": top[:k]}


def content_logprobs(
    content: str,
    k: int,
    picker: Picker,
    scripted_first: Sequence[Sequence[Any]] | None = None,
) -> dict[str, Any]:
    """The full ``choice.logprobs`` object for ``content``."""
    k = max(0, min(int(k), _MAX_TOP_LOGPROBS))
    entries = [
        position(tok, k, picker, f"lp{i}", scripted_first if i == 0 else None)
        for i, tok in enumerate(tokenize(content))
    ]
    return {"content": entries, "refusal": None}
