"""Structured outputs: strict JSON schemas from pydantic models and a tolerant parser.

Every parsed response is requested as ``response_format=json_schema`` (strict). Endpoints
that ignore it still get a chance: the parser drops reasoning blocks and code fences, takes
the first balanced JSON span, repairs trailing commas and raw newlines in strings, and
accepts plain text for one-string-field models (method.md §1.1).
"""

from __future__ import annotations

import copy
import functools
import importlib
import json
import re
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ValidationError

from graphgen_spark.text import utf8_safe_tree

_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.S)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_CUE = re.compile(r"^\s*(question|answer|text|description|问题|答案|回答)\s*[:：]\s*", re.I)


class ParseError(ValueError):
    """The output could not be turned into the model; the message lists why."""


def model_path(model: type[BaseModel]) -> str:
    """Import path of a response model, stored with each request so executors can load it."""
    return f"{model.__module__}:{model.__qualname__}"


@functools.lru_cache(maxsize=256)
def load_model(path: str) -> type[BaseModel]:
    module, _, name = path.partition(":")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAI strict mode: every property required, no extra properties, no defaults."""
    if schema.get("type") == "object" or "properties" in schema:
        props = schema.get("properties", {})
        schema["required"] = list(props)
        schema["additionalProperties"] = False
        for sub in props.values():
            _strict(sub)
    for key in ("items", "anyOf", "oneOf", "allOf"):
        val = schema.get(key)
        if isinstance(val, dict):
            _strict(val)
        elif isinstance(val, list):
            for sub in val:
                _strict(sub)
    for sub in schema.get("$defs", {}).values():
        _strict(sub)
    schema.pop("default", None)
    schema.pop("title", None)
    return schema


@functools.lru_cache(maxsize=256)
def response_format(model: type[BaseModel]) -> dict[str, Any]:
    """The ``response_format`` argument for a pydantic model (strict json_schema).

    Cached: pydantic builds the schema anew on every call, and a conversation turn would
    pay for it each time (about a tenth of an executor's CPU). Callers must not mutate it.
    """
    schema = _strict(copy.deepcopy(model.model_json_schema()))
    name = re.sub(r"[^a-zA-Z0-9_-]", "_", model.__name__.lower())[:64]
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def _balanced_span(text: str) -> str | None:
    """The first balanced {...} or [...] span, respecting strings."""
    for i, ch in enumerate(text):
        if ch not in "{[":
            continue
        depth, in_str, esc = 0, False, False
        for j in range(i, len(text)):
            c = text[j]
            if in_str:
                if esc:
                    esc = False
                elif c == "\\":
                    esc = True
                elif c == '"':
                    in_str = False
            elif c == '"':
                in_str = True
            elif c in "{[":
                depth += 1
            elif c in "}]":
                depth -= 1
                if depth == 0:
                    return text[i : j + 1]
        return None
    return None


def _escape_raw_newlines(text: str) -> str:
    out, in_str, esc = [], False, False
    for c in text:
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
            elif c == "\n":
                out.append("\\n")
                continue
        elif c == '"':
            in_str = True
        out.append(c)
    return "".join(out)


def _candidates(text: str) -> Iterator[str]:
    """The text itself first, then the repairs, each once; lazy, because the first
    candidate is almost always valid JSON and the repairs scan the text character by
    character."""
    seen = {text}
    yield text
    stripped = _THINK.sub("", text).strip()
    bases = [f.strip() for f in _FENCE.findall(stripped)] + [stripped]
    for base in bases:
        for cand in (base, _balanced_span(base)):
            if not cand:
                continue
            for c in (cand, _escape_raw_newlines(_TRAILING_COMMA.sub(r"\1", cand))):
                if c not in seen:
                    seen.add(c)
                    yield c


def parse_output(content: str | None, model: type[BaseModel]) -> BaseModel:
    """Validate an endpoint's output into ``model`` or raise :class:`ParseError`."""
    if content is None or not content.strip():
        raise ParseError("empty output")
    errors: list[str] = []
    for cand in _candidates(content):
        try:
            data = utf8_safe_tree(json.loads(cand))
        except json.JSONDecodeError as exc:
            errors.append(f"not JSON: {exc.msg}")
            continue
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            errors.append(_summarise(exc))
    fields = model.model_fields
    if len(fields) == 1:
        ((name, field),) = fields.items()
        plain = _CUE.sub("", _THINK.sub("", content)).strip()
        # broken JSON is an invalid reply, not plain text
        if field.annotation is str and plain and plain[0] not in "{[":
            return model.model_validate({name: plain})
        if field.annotation is bool:
            word = plain.strip(" .!。！").casefold()
            if word in {"yes", "y", "true", "是", "是的", "对"}:
                return model.model_validate({name: True})
            if word in {"no", "n", "false", "否", "不", "不是"}:
                return model.model_validate({name: False})
    raise ParseError("; ".join(dict.fromkeys(errors))[:1000] or "no JSON found")


def _summarise(exc: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'root'}: {e['msg']}" for e in exc.errors()]
    return "invalid: " + "; ".join(parts[:5])
