"""One `qa` row → the Q and A strings and the alpaca / sharegpt / chatml objects (§7.5).

Pure functions over a plain dict (a `qa` row as ``Row.asDict(recursive=True)``), so the
same code runs in executor UDFs and in tests. A row that cannot be rendered faithfully (a
choice question without options, a true/false answer that is neither) raises instead of
exporting something a model would learn wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

FORMATS = ("alpaca", "sharegpt", "chatml")
CHOICE_MODES = ("multiple_choice", "multi_answer")
META_FIELDS = ("qa_id", "mode", "language", "loss", "difficulty", "doc_ids")
TRUE_FALSE = {"en": ("True", "False"), "zh": ("正确", "错误")}

Row = Mapping[str, Any]


def question_text(row: Row) -> str:
    """Q: the question; choice modes append ``\\nOptions:\\n`` and ``A. text`` lines."""
    question = row.get("question") or ""
    if row.get("mode") not in CHOICE_MODES:
        return question
    options = row.get("options")
    if not options:
        raise ValueError(f"qa {row.get('qa_id')}: {row.get('mode')} row without options")
    lines = "\n".join(f"{letter}. {text}" for letter, text in sorted(options.items()))
    return f"{question}\nOptions:\n{lines}"


def _true_false(row: Row) -> str:
    value = (row.get("answer") or "").strip().casefold()
    if value not in ("true", "false"):
        raise ValueError(f"qa {row.get('qa_id')}: true_false answer {row.get('answer')!r}")
    yes, no = TRUE_FALSE["zh" if row.get("language") == "zh" else "en"]
    return yes if value == "true" else no


def answer_text(row: Row) -> str:
    """A: the letter(s), the blanks, the localised verdict, the reasoning, or the answer."""
    mode, answer = row.get("mode"), row.get("answer") or ""
    answers = row.get("answers")
    if mode == "multi_answer":
        letters = answers or [a.strip() for a in answer.split(",") if a.strip()]
        return ", ".join(sorted(letters))
    if mode == "fill_in_blank":
        return "; ".join(answers) if answers else answer
    if mode == "true_false":
        return _true_false(row)
    # multiple_choice stores the letter, cot the reasoning text (its plan is reasoning_path)
    return answer


def meta_of(row: Row) -> dict[str, Any]:
    """The lineage a consumer needs to trace or filter a training example."""
    meta = {k: row.get(k) for k in META_FIELDS}
    if isinstance(meta["loss"], float) and math.isnan(meta["loss"]):
        meta["loss"] = None  # NaN is not JSON
    return meta


def record(
    fmt: str,
    question: str,
    answer: str,
    system_prompt: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The object of one format; the system prompt and meta only when given."""
    if fmt == "alpaca":
        # LLaMA-Factory's alpaca layout has an optional `system` column: keep the prompt
        obj: dict[str, Any] = {"instruction": question, "input": "", "output": answer}
        if system_prompt:
            obj["system"] = system_prompt
    elif fmt == "sharegpt":
        turns = [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
        obj = {"conversations": turns}
        if system_prompt:
            obj["system"] = system_prompt
    elif fmt == "chatml":
        messages = [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        obj = {"messages": messages}
    else:
        raise ValueError(f"unknown export format {fmt!r}; allowed: {', '.join(FORMATS)}")
    if meta is not None:
        obj["meta"] = dict(meta)
    return obj


def export_record(
    row: Row, fmt: str, system_prompt: str | None = None, include_metadata: bool = False
) -> dict[str, Any]:
    """A `qa` row as one object of ``fmt``."""
    meta = meta_of(row) if include_metadata else None
    return record(fmt, question_text(row), answer_text(row), system_prompt, meta)


def to_line(obj: Mapping[str, Any]) -> str:
    """One JSONL line (no newline): non-ASCII unescaped, key order as built."""
    return json.dumps(obj, ensure_ascii=False)
