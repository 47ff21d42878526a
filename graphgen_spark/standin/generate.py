"""Stand-in rules for QA generation (method §7): not a model.

Answers are assembled from the fenced, numbered facts of the prompt by fixed templates, in
the facts' language, so every mode's validation can pass and tests are deterministic. The
handler for the second step of a two-step mode reads the first step's output from the
prompt. Nothing here "understands" anything.
"""

from __future__ import annotations

import re
from typing import Any

from graphgen_spark.language import main_language
from graphgen_spark.prompts import TEXT_BEGIN, TEXT_END
from graphgen_spark.standin.rules import ChatRequest, register_handler

_ENTITY = re.compile(r"^\d+\. (?P<name>[^\n]+?)(?:: (?P<desc>.*))?$")
_RELATION = re.compile(r"^\d+\. (?P<src>.+?) -- (?P<dst>.+?)(?:: (?P<desc>.*))?$")


def _fenced(req: ChatRequest) -> str:
    # the first user message holds the facts; a language retry appends a plain user turn
    users = [t for role, t in req.messages if role == "user" and TEXT_BEGIN in t]
    text = users[-1] if users else req.prompt
    if TEXT_BEGIN in text and TEXT_END in text:
        return text.split(TEXT_BEGIN, 1)[1].split(TEXT_END, 1)[0].strip()
    return text.strip()


def _facts(req: ChatRequest) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]], bool]:
    ents: list[tuple[str, str]] = []
    rels: list[tuple[str, str, str]] = []
    section = ""
    text = _fenced(req)
    for line in text.splitlines():
        line = line.strip()
        if line in ("Entities:", "Relations:"):
            section = line
            continue
        if section == "Relations:" and (m := _RELATION.match(line)):
            rels.append((m["src"], m["dst"], m["desc"] or ""))
        elif section == "Entities:" and (m := _ENTITY.match(line)):
            ents.append((m["name"], m["desc"] or ""))
    return ents, rels, main_language(text) == "zh"


def _n(req: ChatRequest) -> int:
    m = re.search(r"Write (\d+) ", req.prompt)
    return int(m.group(1)) if m else 1


def _sentences(ents, rels, zh: bool) -> list[str]:
    out = [f"{n}：{d}" if zh else f"{n}: {d}" for n, d in ents if d]
    out += [d or (f"{a}与{b}相关" if zh else f"{a} is related to {b}") for a, b, d in rels]
    return out or [n for n, _ in ents]


def _topic(ents, rels) -> str:
    return ents[0][0] if ents else (rels[0][0] if rels else "this subject")


@register_handler("atomicqa")
def atomic(schema: dict[str, Any], req: ChatRequest) -> Any:
    ents, rels, zh = _facts(req)
    t = _topic(ents, rels)
    q = f"关于{t}，已知的事实是什么？" if zh else f"What is known about {t}?"
    return {"question": q, "answer": " ".join(_sentences(ents, rels, zh))}


@register_handler("aggregatedtext")
def aggregated_text(schema: dict[str, Any], req: ChatRequest) -> Any:
    ents, rels, zh = _facts(req)
    return {"text": ("" if zh else " ").join(_sentences(ents, rels, zh))}


@register_handler("aggregatedquestion")
def aggregated_question(schema: dict[str, Any], req: ChatRequest) -> Any:
    text = _fenced(req)
    zh = main_language(text) == "zh"
    words = re.findall(r"[A-Z][\w-]+(?: [A-Z][\w-]+)*", text) or [text[:12]]
    t = words[0]
    return {
        "question": f"关于{t}及其关联，有哪些事实？" if zh else f"What connects {t} and the rest?"
    }


@register_handler("multihopqa")
def multi_hop(schema: dict[str, Any], req: ChatRequest) -> Any:
    ents, rels, zh = _facts(req)
    if len(rels) >= 2:
        (a, _, d1), (_, e, d2) = rels[0], rels[1]
        q = f"{a}是如何与{e}联系起来的？" if zh else f"How is {a} linked to {e}?"
        return {"question": q, "answer": f"{d1} {d2}".strip(), "relations_used": [1, 2]}
    t = _topic(ents, rels)
    q = f"关于{t}能推出什么？" if zh else f"What follows about {t}?"
    return {"question": q, "answer": " ".join(_sentences(ents, rels, zh)), "relations_used": [1]}


@register_handler("cotplan")
def cot_plan(schema: dict[str, Any], req: ChatRequest) -> Any:
    ents, rels, zh = _facts(req)
    t = _topic(ents, rels)
    if zh:
        return {
            "question": f"{t}在这些事实中起什么作用？",
            "reasoning_path": "先找出相关实体，再串联它们的关系，最后归纳作用。",
        }
    return {
        "question": f"What role does {t} play among these facts?",
        "reasoning_path": "Find the entities tied to it, follow their relations, then sum up.",
    }


@register_handler("cotanswer")
def cot_answer(schema: dict[str, Any], req: ChatRequest) -> Any:
    ents, rels, zh = _facts(req)
    body = ("" if zh else " ").join(_sentences(ents, rels, zh))
    return {
        "answer": f"首先，{body} 因此可以得出结论。" if zh else f"First, {body} Hence the answer."
    }


def _options(ents, rels, zh: bool, i: int) -> tuple[str, dict[str, str], str]:
    facts = _sentences(ents, rels, zh)
    true = facts[i % len(facts)]
    wrong = [f"并非如此：{true}（{k}）" if zh else f"Not so: {true} ({k})" for k in (1, 2, 3)]
    letters = "ABCD"
    right = letters[i % 4]
    opts, w = {}, iter(wrong)
    for letter in letters:
        opts[letter] = true if letter == right else next(w)
    t = _topic(ents, rels)
    q = (
        f"关于{t}，哪一项是正确的？（{i + 1}）"
        if zh
        else f"Which statement about {t} is correct? ({i + 1})"
    )
    return q, opts, right


@register_handler("choiceitems")
def choice(schema: dict[str, Any], req: ChatRequest) -> Any:
    ents, rels, zh = _facts(req)
    items = []
    for i in range(_n(req)):
        q, opts, right = _options(ents, rels, zh, i)
        items.append({"question": q, "options": opts, "answer": right})
    return {"items": items}


@register_handler("multiansweritems")
def multi_answer(schema: dict[str, Any], req: ChatRequest) -> Any:
    ents, rels, zh = _facts(req)
    items = []
    for i in range(_n(req)):
        q, opts, right = _options(ents, rels, zh, i)
        items.append({"question": q, "options": opts, "answers": [right]})
    return {"items": items}


@register_handler("blankitems")
def blanks(schema: dict[str, Any], req: ChatRequest) -> Any:
    ents, rels, zh = _facts(req)
    names = [n for n, _ in ents] + [a for a, _, _ in rels]
    facts = _sentences(ents, rels, zh)
    items = []
    for i in range(_n(req)):
        name = names[i % len(names)] if names else "X"
        fact = facts[i % len(facts)]
        if name in fact:
            q = fact.replace(name, "____", 1)
        else:
            q = f"____：{fact}" if zh else f"____: {fact}"
        items.append({"question": f"{q} ({i + 1})", "answers": [name]})
    return {"items": items}


@register_handler("truefalseitems")
def true_false(schema: dict[str, Any], req: ChatRequest) -> Any:
    ents, rels, zh = _facts(req)
    facts = _sentences(ents, rels, zh)
    items = []
    for i in range(_n(req)):
        fact = facts[(i // 2) % len(facts)]
        if i % 2 == 0:
            items.append({"statement": fact, "answer": True})
        else:
            items.append(
                {
                    "statement": (f"并非：{fact}" if zh else f"It is false that {fact}"),
                    "answer": False,
                }
            )
    return {"items": items}


@register_handler("qacheck")
def qa_check(schema: dict[str, Any], req: ChatRequest) -> Any:
    """Supported when most of the answer's words (Han characters for Chinese) are in the facts."""
    m = re.search(r"Answer: (.*)", req.prompt)
    answer = m.group(1) if m else ""
    facts = _fenced(req).casefold()
    words = (
        re.findall(r"\w", answer) if main_language(answer) == "zh" else re.findall(r"\w+", answer)
    )
    found = sum(1 for w in words if w.casefold() in facts)
    ok = bool(words) and found / len(words) >= 0.6
    return {"supported": ok, "reason": "stated in the facts" if ok else "not in the facts"}
