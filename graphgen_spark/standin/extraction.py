"""Stand-in rules for knowledge-graph extraction and gleaning (schema names ``extraction``
and ``moreneeded``).

Not a model: candidate entities are picked from the fenced source text by surface rules
(capitalised word runs and years in English; book titles and leading Han runs of clauses in
Chinese), described by the sentence they occur in, and related to the next candidate in the
same sentence. The first answer holds about 60 % of them; gleaning returns the rest, and the
check says ``more`` while something is still missing — so gleaning paths really run.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from graphgen_spark.prompts import TEXT_BEGIN, TEXT_END
from graphgen_spark.standin.rules import ChatRequest, register_handler

_SENT = re.compile(r"(?<=[.!?。！？；;])\s*")
_EN_NAME = re.compile(
    r"\b(?:[A-Z][\w\-]*(?:\s+(?:von|van|de|of|the|and)?\s*[A-Z][\w\-]*)*|\d{4})\b"
)
_ZH_TITLE = re.compile(r"《([^》]{1,20})》")
_ZH_CLAUSE = re.compile(r"[\u4e00-\u9fff]{2,}")
_STOP = {
    "The",
    "A",
    "An",
    "In",
    "On",
    "At",
    "It",
    "This",
    "That",
    "These",
    "Those",
    "Here",
    "However",
    "Within",
    "Around",
    "Each",
    "Its",
    "When",
    "Young",
    "Beekeepers",
}
_FIRST_SHARE = 0.6


def _source_text(req: ChatRequest) -> str:
    for _, text in req.messages:
        if TEXT_BEGIN in text and TEXT_END in text:
            return text.split(TEXT_BEGIN, 1)[1].split(TEXT_END, 1)[0].strip()
    return req.prompt


def _types(req: ChatRequest) -> list[str]:
    for _, text in req.messages:
        m = re.search(r"\[([^\]]+)\]", text)
        if m:
            return [t.strip() for t in re.split(r"[,、]", m.group(1)) if t.strip()]
    return ["concept"]


def _pick(options: list[str], *key: str) -> str:
    digest = hashlib.sha256("\x1f".join(key).encode()).digest()
    return options[int.from_bytes(digest[:4], "big") % len(options)]


def _candidates(text: str) -> list[tuple[str, str]]:
    """(name, sentence) in order of first appearance, distinct by casefolded name."""
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for sentence in (s.strip() for s in _SENT.split(text)):
        if not sentence:
            continue
        names = [m.group(0).strip() for m in _EN_NAME.finditer(sentence)]
        names += _ZH_TITLE.findall(sentence)
        names += [m.group(0)[:4] for m in _ZH_CLAUSE.finditer(sentence)]
        for name in names:
            if name in _STOP or len(name) < 2 or name.casefold() in seen:
                continue
            seen.add(name.casefold())
            out.append((name, sentence))
    return out


def _full_answer(req: ChatRequest) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    text = _source_text(req)
    types = _types(req)
    cands = _candidates(text)
    entities = [
        {
            "name": name,
            "type": "date"
            if name.isdigit() and "date" in types
            else _pick([t for t in types if t != "date"] or types, name),
            "description": sentence[:300],
        }
        for name, sentence in cands
    ]
    relations = []
    for (a, sa), (b, sb) in zip(cands, cands[1:], strict=False):
        if sa == sb:
            relations.append({"source": a, "target": b, "description": sa[:300]})
    return entities, relations


def _already_given(req: ChatRequest) -> tuple[set[str], set[tuple[str, str]]]:
    ents: set[str] = set()
    rels: set[tuple[str, str]] = set()
    for role, text in req.messages:
        if role != "assistant":
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            continue
        ents |= {e.get("name", "") for e in data.get("entities", [])}
        rels |= {(r.get("source", ""), r.get("target", "")) for r in data.get("relations", [])}
    return ents, rels


@register_handler("extraction")
def extraction(schema: dict[str, Any], req: ChatRequest) -> Any:
    entities, relations = _full_answer(req)
    given_e, given_r = _already_given(req)
    if not any(role == "assistant" for role, _ in req.messages):
        keep = max(1, round(len(entities) * _FIRST_SHARE)) if entities else 0
        first = entities[:keep]
        names = {e["name"] for e in first}
        rels = [r for r in relations if r["source"] in names and r["target"] in names]
        return {"entities": first, "relations": rels}
    return {
        "entities": [e for e in entities if e["name"] not in given_e],
        "relations": [r for r in relations if (r["source"], r["target"]) not in given_r],
    }


@register_handler("moreneeded")
def more_needed(schema: dict[str, Any], req: ChatRequest) -> Any:
    entities, relations = _full_answer(req)
    given_e, given_r = _already_given(req)
    missing = [e for e in entities if e["name"] not in given_e]
    missing += [r for r in relations if (r["source"], r["target"]) not in given_r]
    return {"more": bool(missing)}
