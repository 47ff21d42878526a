"""Checks every generated item must pass (§7.2 "Validation"); failures are quarantined.

Each mode's parsed answer becomes a list of uniform items ``{question, answer, options,
answers, reasoning_path}``; anything that breaks a rule raises :class:`InvalidQA` with the
reason stored in `quarantine`.
"""

from __future__ import annotations

import re
from typing import Any

from graphgen_spark.language import han_share

LETTERS = ("A", "B", "C", "D")
BLANK = re.compile(r"_{2,}")
ZH_SHARE = 0.3


class InvalidQA(ValueError):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def item(question: str, answer: str = "", **extra: Any) -> dict[str, Any]:
    return {
        "question": question,
        "answer": answer,
        "options": extra.get("options"),
        "answers": extra.get("answers"),
        "reasoning_path": extra.get("reasoning_path"),
    }


def need(value: str | None, what: str) -> str:
    if not value or not value.strip():
        raise InvalidQA("empty_field", what)
    return value.strip()


def language_ok(text: str, language: str) -> bool:
    share = han_share(text)
    return share >= ZH_SHARE if language == "zh" else share < ZH_SHARE


def multi_hop(question: str, answer: str, used: list[int], n_relations: int) -> dict:
    q, a = need(question, "question"), need(answer, "answer")
    cited = {i for i in used if 1 <= i <= n_relations}
    if n_relations >= 2 and len(cited) < 2:
        raise InvalidQA("too_few_hops", f"cites {sorted(cited)} of {n_relations} relations")
    return item(q, a)


def _options(options: dict[str, str]) -> dict[str, str]:
    opts = {k: need(options.get(k), f"option {k}") for k in LETTERS}
    if len({v.casefold() for v in opts.values()}) < 4:
        raise InvalidQA("duplicate_options")
    return opts


def multiple_choice(question: str, options: dict[str, str], answer: str) -> dict:
    opts = _options(options)
    letter = (answer or "").strip().upper().rstrip(".")
    if letter not in LETTERS:
        raise InvalidQA("answer_not_an_option", repr(answer))
    return item(need(question, "question"), letter, options=opts)


def multi_answer(question: str, options: dict[str, str], answers: list[str]) -> dict:
    opts = _options(options)
    letters = sorted({(a or "").strip().upper().rstrip(".") for a in answers})
    if not letters or not set(letters) < set(LETTERS):
        raise InvalidQA("answers_not_a_proper_subset", repr(answers))
    return item(need(question, "question"), ", ".join(letters), options=opts, answers=letters)


def fill_in_blank(question: str, answers: list[str]) -> dict:
    q = need(question, "question")
    filled = [need(a, "blank answer") for a in answers]
    blanks = len(BLANK.findall(q))
    if not blanks or blanks != len(filled):
        raise InvalidQA("blanks_do_not_match_answers", f"{blanks} blanks, {len(filled)} answers")
    return item(q, "; ".join(filled), answers=filled)


def true_false(statement: str, answer: bool) -> dict:
    return item(need(statement, "statement"), "true" if answer else "false")
