"""One program per generation unit, run inside executor tasks (``LLMExecutor.converse``).

A unit is a batch (or, for atomic with ``split_descriptions``, one description of an
element). Two-step modes (aggregated, cot) chain their calls where the answers arrive; a
language mismatch gets one retry in the same conversation, then the unit is invalid.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from graphgen_spark.config import Config
from graphgen_spark.generate import schemas as S
from graphgen_spark.generate import validate as V
from graphgen_spark.llm.executor import Ask, Program
from graphgen_spark.llm.requests import request_row
from graphgen_spark.prompts.generate import (
    generate_messages,
    language_retry_message,
    qa_check_messages,
)

NAME = "generate"


class _StepFailed(Exception):
    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason, self.detail = reason, detail


def _texts(model: BaseModel) -> list[str]:
    """The free-text fields of an answer, for the language check."""
    data = model.model_dump()
    out: list[str] = []

    def walk(x: Any) -> None:
        if isinstance(x, str) and len(x) > 1:
            out.append(x)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(data)
    return out


def make_program(cfg: Config, mode: str) -> Program:
    enforce = cfg.language.enforce
    gen = cfg.generate

    def request(messages: list[dict], model: type[BaseModel]) -> dict:
        return request_row(
            cfg,
            NAME,
            "synthesizer",
            messages,
            model,
            temperature=gen.temperature,
            max_tokens=gen.max_tokens,
        )

    async def step(ask: Ask, ids: list[str], messages: list[dict], model: type[BaseModel], lang):
        for attempt in range(2):
            answer = await ask(request(messages, model))
            ids.append(answer.request_id)
            if not answer.ok:
                raise _StepFailed(f"call_{answer.error_kind or 'failed'}", answer.error or "")
            try:
                parsed = model.model_validate_json(answer.parsed)
            except Exception as exc:  # schema-valid JSON that pydantic still rejects
                raise _StepFailed("bad_answer", str(exc)[:300]) from exc
            if not enforce or V.language_ok(" ".join(_texts(parsed)), lang):
                return parsed
            if attempt == 0:
                reply = {"role": "assistant", "content": answer.response or answer.parsed}
                messages = [*messages, reply, language_retry_message(lang)]
        raise _StepFailed("language_mismatch", f"target {lang}")

    async def run(row: dict, ask: Ask) -> dict:
        lang, facts, ids = row["language"], row["facts"], []
        common = {
            "question_style": row["question_style"],
            "difficulty": row["difficulty_word"] or "",
            "answer_style": cfg.style.answer_style,
            "n": int(row["n_items"]),
        }

        def msgs(task: str, **kw: Any) -> list[dict]:
            return generate_messages(task, facts, lang, **{**common, **kw})

        try:
            items = await _generate(mode, row, ask, ids, msgs, step, lang)
            if gen.qa_check:
                for it in items:
                    await _check(it, row, ask, request)
            status, reason, detail = "ok", None, None
        except _StepFailed as failed:
            items, status, reason, detail = [], "invalid", failed.reason, failed.detail
        except V.InvalidQA as bad:
            items, status, reason, detail = [], "invalid", bad.reason, bad.detail
        return {
            "unit_id": row["unit_id"],
            "status": status,
            "reason": reason,
            "detail": (detail or "")[:500] or None,
            "items": json.dumps(items, ensure_ascii=False),
            "request_id": ids[-1] if ids else None,
        }

    return run


async def _check(it: dict, row: dict, ask: Ask, request) -> None:
    """Mark an item supported or not by the facts; a failed check leaves it unchecked."""
    msgs = qa_check_messages(row["facts"], it["question"], it["answer"], row["language"])
    answer = await ask(request(msgs, S.QACheck))
    it["check_request_id"] = answer.request_id
    try:
        verdict = S.QACheck.model_validate_json(answer.parsed) if answer.ok else None
    except Exception:  # an unreadable verdict is no verdict
        verdict = None
    it["supported"] = None if verdict is None else verdict.supported
    it["check_reason"] = None if verdict is None else verdict.reason


async def _generate(mode, row, ask, ids, msgs, step, lang) -> list[dict]:
    n_rel = int(row["n_relations"])
    if mode == "atomic":
        qa = await step(ask, ids, msgs("atomic"), S.AtomicQA, lang)
        return [V.item(V.need(qa.question, "question"), V.need(qa.answer, "answer"))]
    if mode == "aggregated":
        text = await step(ask, ids, msgs("aggregated_text"), S.AggregatedText, lang)
        body = V.need(text.text, "text")
        q = await step(ask, ids, msgs("aggregated_question", text=body), S.AggregatedQuestion, lang)
        return [V.item(V.need(q.question, "question"), body)]
    if mode == "multi_hop":
        qa = await step(ask, ids, msgs("multi_hop"), S.MultiHopQA, lang)
        return [V.multi_hop(qa.question, qa.answer, qa.relations_used, n_rel)]
    if mode == "cot":
        plan = await step(ask, ids, msgs("cot_plan"), S.CotPlan, lang)
        q, path = V.need(plan.question, "question"), V.need(plan.reasoning_path, "plan")
        ans = await step(ask, ids, msgs("cot_answer", question=q, plan=path), S.CotAnswer, lang)
        return [V.item(q, V.need(ans.answer, "answer"), reasoning_path=path)]
    if mode == "multiple_choice":
        out = await step(ask, ids, msgs("multiple_choice"), S.ChoiceItems, lang)
        items = [V.multiple_choice(i.question, i.options.model_dump(), i.answer) for i in out.items]
    elif mode == "multi_answer":
        out = await step(ask, ids, msgs("multi_answer"), S.MultiAnswerItems, lang)
        items = [V.multi_answer(i.question, i.options.model_dump(), i.answers) for i in out.items]
    elif mode == "fill_in_blank":
        out = await step(ask, ids, msgs("fill_in_blank"), S.BlankItems, lang)
        items = [V.fill_in_blank(i.question, i.answers) for i in out.items]
    elif mode == "true_false":
        out = await step(ask, ids, msgs("true_false"), S.TrueFalseItems, lang)
        items = [V.true_false(i.statement, i.answer) for i in out.items]
    else:
        raise ValueError(f"unknown mode {mode!r}")
    if not items:
        raise V.InvalidQA("no_items")
    return items[: int(row["n_items"])]


TWO_STEP = ("aggregated", "cot")  # modes whose QA takes two chained calls


def calls_per_unit(mode: str, checks: int = 0) -> tuple[int, int]:
    """The fewest and most calls one unit takes: one per step (two in ``TWO_STEP``
    modes), each step at most twice (one language retry), plus one answer check per item
    when ``generate.qa_check`` is on."""
    steps = 2 if mode in TWO_STEP else 1
    return steps + checks, 2 * steps + checks
