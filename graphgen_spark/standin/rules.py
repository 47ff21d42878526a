"""How the stand-in derives an answer from a chat-completions request.

Precedence (first that applies wins):

1. script rules from a JSON file — exact, test-authored answers, errors, logprobs;
2. ``response_format`` json_schema / json_object — schema-valid JSON, via a
   task-specific handler in :data:`HANDLERS` or the generic schema filler;
3. ``logprobs: true`` — a one-word "yes"/"no" verdict with proper logprobs;
4. plain text built from the prompt's words, cut at ``max_tokens``.

Everything is a pure function of the request, so identical requests always get
identical content (what caching and retry tests rely on).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import logprobs as lp
from .picker import Picker
from .schema_fill import fill_schema

SYSTEM_FINGERPRINT = "graphgen-spark-standin"


class RequestError(ValueError):
    """The request body is not a usable chat-completions request (-> HTTP 400)."""


@dataclass(frozen=True)
class ChatRequest:
    """The parts of a chat-completions body the rules look at."""

    model: str
    prompt: str  # text of the last user message
    prompt_chars: int  # total characters of all message contents (for usage)
    response_format: dict[str, Any] | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    max_tokens: int | None = None
    n: int = 1
    # the whole conversation as (role, text) pairs, for multi-turn task handlers
    messages: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_body(cls, body: Any) -> ChatRequest:
        if not isinstance(body, dict):
            raise RequestError("request body must be a JSON object")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError("'messages' must be a non-empty array")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise RequestError("'model' must be a non-empty string")
        if body.get("stream"):
            raise RequestError("the stand-in endpoint does not support stream=true")
        texts: list[str] = []
        turns: list[tuple[str, str]] = []
        prompt = ""
        for msg in messages:
            if not isinstance(msg, dict):
                raise RequestError("each message must be an object")
            text = _message_text(msg.get("content"))
            texts.append(text)
            turns.append((str(msg.get("role", "")), text))
            if msg.get("role") == "user":
                prompt = text
        response_format = body.get("response_format")
        if response_format is not None and not isinstance(response_format, dict):
            raise RequestError("'response_format' must be an object")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        n = body.get("n") or 1
        if not isinstance(n, int) or not 1 <= n <= 128:
            raise RequestError("'n' must be an integer in 1..128")
        return cls(
            model=model,
            prompt=prompt,
            prompt_chars=sum(len(t) for t in texts),
            response_format=response_format,
            logprobs=bool(body.get("logprobs")),
            top_logprobs=int(body.get("top_logprobs") or 0),
            max_tokens=int(max_tokens) if isinstance(max_tokens, int | float) else None,
            n=n,
            messages=tuple(turns),
        )


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multi-part content: keep the text parts
        return "\n".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
        )
    return ""


# -- task-specific JSON handlers --------------------------------------------------------------

#: Handler = (json schema, request) -> JSON value. Keyed by ``json_schema.name`` so a
#: task (e.g. "extraction") can return realistic structure instead of filler words.
JsonHandler = Callable[[dict[str, Any], ChatRequest], Any]
HANDLERS: dict[str, JsonHandler] = {}


def register_handler(name: str) -> Callable[[JsonHandler], JsonHandler]:
    """Decorator: answer json_schema requests named ``name`` with the decorated function."""

    def deco(fn: JsonHandler) -> JsonHandler:
        HANDLERS[name] = fn
        return fn

    return deco


# -- script rules -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ScriptRule:
    """One entry of a script file; see the module docstring of ``standin`` for the format."""

    match: str
    model: str | None = None
    content: str | None = None
    top_logprobs: tuple[tuple[str, float], ...] | None = None
    status: int | None = None
    message: str | None = None
    no_logprobs: bool | None = None

    def matches(self, req: ChatRequest) -> bool:
        return self.match in req.prompt and (self.model is None or self.model == req.model)


_RULE_KEYS = {"match", "model", "content", "top_logprobs", "status", "message", "no_logprobs"}


def load_script(path: str | Path) -> list[ScriptRule]:
    """Parse a script file, raising ``ValueError`` that names the bad rule and field."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"script {path}: cannot read JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise ValueError(f'script {path}: expected an object {{"rules": [...]}}')
    rules: list[ScriptRule] = []
    for i, raw in enumerate(data["rules"]):
        where = f"script {path}: rules[{i}]"
        if not isinstance(raw, dict):
            raise ValueError(f"{where} must be an object")
        unknown = set(raw) - _RULE_KEYS
        if unknown:
            raise ValueError(
                f"{where}: unknown field(s) {sorted(unknown)}; allowed {sorted(_RULE_KEYS)}"
            )
        if not isinstance(raw.get("match"), str):
            raise ValueError(f"{where}: 'match' must be a string")
        top = raw.get("top_logprobs")
        if top is not None:
            try:
                top = tuple((str(t), float(v)) for t, v in top)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"{where}: 'top_logprobs' must be [[token, logprob], ...]"
                ) from exc
        status = raw.get("status")
        if status is not None and (not isinstance(status, int) or not 100 <= status <= 599):
            raise ValueError(f"{where}: 'status' must be an HTTP status code")
        rules.append(
            ScriptRule(
                match=raw["match"],
                model=raw.get("model"),
                content=raw.get("content"),
                top_logprobs=top,
                status=status,
                message=raw.get("message"),
                no_logprobs=raw.get("no_logprobs"),
            )
        )
    return rules


# -- answering --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorReply:
    """A scripted HTTP error with an OpenAI-style body."""

    status: int
    message: str


@dataclass
class Choice:
    content: str
    finish_reason: str = "stop"
    logprobs: dict[str, Any] | None = None


@dataclass
class RuleEngine:
    """Turns a :class:`ChatRequest` into choices (or a scripted error)."""

    rules: list[ScriptRule] = field(default_factory=list)
    no_logprobs: bool = False

    def answer(self, req: ChatRequest) -> list[Choice] | ErrorReply:
        rule = next((r for r in self.rules if r.matches(req)), None)
        if rule is not None and rule.status is not None and rule.status >= 400:
            return ErrorReply(rule.status, rule.message or f"scripted error for {rule.match!r}")
        no_logprobs = (
            self.no_logprobs if rule is None or rule.no_logprobs is None else rule.no_logprobs
        )
        return [self._choice(req, i, rule, no_logprobs) for i in range(req.n)]

    def _choice(self, req: ChatRequest, index: int, rule: ScriptRule | None, no_lp: bool) -> Choice:
        # Choice 0 is keyed by the prompt alone; extra choices (n > 1) get their own key.
        picker = Picker(req.prompt if index == 0 else f"{req.prompt}\x1fchoice{index}")
        scripted_top = rule.top_logprobs if rule is not None else None
        finish = "stop"
        if rule is not None and rule.content is not None:
            content = rule.content
        elif scripted_top:
            content = scripted_top[0][0]
        else:
            content, finish = default_content(req, picker)
        logprobs = None
        if req.logprobs and not no_lp:
            logprobs = lp.content_logprobs(content, req.top_logprobs, picker, scripted_top)
        return Choice(content, finish, logprobs)


def default_content(req: ChatRequest, picker: Picker) -> tuple[str, str]:
    """(content, finish_reason) from the built-in rules 2-4."""
    fmt = req.response_format or {}
    kind = fmt.get("type")
    if kind == "json_schema":
        spec = fmt.get("json_schema") or {}
        schema = spec.get("schema") or {}
        handler = HANDLERS.get(spec.get("name", ""))
        value = handler(schema, req) if handler else fill_schema(schema, picker)
        return json.dumps(value, ensure_ascii=False), "stop"
    if kind == "json_object":
        text = fill_schema({"type": "string", "minLength": 1}, picker)
        return json.dumps({"text": text}, ensure_ascii=False), "stop"
    if req.logprobs:
        return ("yes" if picker.int("verdict") % 2 == 0 else "no"), "stop"
    return plain_text(picker, req.max_tokens)


def plain_text(picker: Picker, max_tokens: int | None) -> tuple[str, str]:
    """8-24 prompt words; ~1 token per word, so ``max_tokens`` cuts the word list."""
    count = 8 + picker.int("length") % 17
    words = [picker.word(f"w{i}") for i in range(count)]
    if max_tokens is not None and max_tokens < count:
        words = words[: max(max_tokens, 1)]
        return " ".join(words), "length"
    text = " ".join(words)
    return text[:1].upper() + text[1:] + ".", "stop"


def usage(req: ChatRequest, choices: list[Choice]) -> dict[str, int]:
    """~4 characters per token, never zero."""
    prompt_tokens = max(1, math.ceil(req.prompt_chars / 4))
    completion_tokens = sum(max(1, math.ceil(len(c.content) / 4)) for c in choices)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion(
    req: ChatRequest, choices: list[Choice], completion_id: str, created: int
) -> dict[str, Any]:
    """A complete OpenAI ``chat.completion`` object."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": req.model,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": c.content, "refusal": None},
                "finish_reason": c.finish_reason,
                "logprobs": c.logprobs,
            }
            for i, c in enumerate(choices)
        ],
        "usage": usage(req, choices),
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def error_body(message: str, err_type: str, code: str | None = None) -> dict[str, Any]:
    """OpenAI-style error envelope (``openai`` surfaces ``message`` in the exception)."""
    return {"error": {"message": message, "type": err_type, "param": None, "code": code}}
