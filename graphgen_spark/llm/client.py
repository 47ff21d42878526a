"""One LLM request, end to end, inside an executor's event loop.

Transport faults (429 honouring Retry-After, 5xx, timeouts, dropped connections, bodies
that do not decode) retry with jittered backoff up to ``max_retries``; other 4xx fail at
once with the server's message. Structured outputs are validated; an invalid one gets
``repair_attempts`` repair requests, then the call is recorded ``invalid`` (never cached as
a success, so the next run retries it).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import openai

from graphgen_spark.llm.endpoints import Endpoint
from graphgen_spark.llm.limits import TaskLimiter
from graphgen_spark.llm.structured import ParseError, load_model, parse_output
from graphgen_spark.text import utf8_safe, utf8_safe_tree


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    backoff_min_s: float = 4.0
    backoff_max_s: float = 10.0
    repair_attempts: int = 1


@dataclass
class CallOutcome:
    status: str = "failed"  # ok | failed | invalid
    response: str | None = None
    parsed: str | None = None
    logprobs: str | None = None
    error: str | None = None
    error_kind: str | None = None
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


class _Retryable(Exception):
    def __init__(self, kind: str, message: str, wait_s: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.wait_s = wait_s


def _retry_after(exc: openai.APIStatusError) -> float | None:
    try:
        value = exc.response.headers.get("retry-after")
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _classify(exc: BaseException) -> _Retryable | None:
    """Map a client exception to a retryable fault, or None when it must fail at once."""
    if isinstance(exc, openai.RateLimitError):
        return _Retryable("rate_limited", str(exc), _retry_after(exc))
    if isinstance(exc, openai.APITimeoutError):
        return _Retryable("timeout", str(exc))
    if isinstance(exc, openai.APIConnectionError):
        return _Retryable("connection", str(exc))
    if isinstance(exc, openai.APIStatusError):
        return _Retryable("server_error", str(exc)) if exc.status_code >= 500 else None
    if isinstance(exc, (json.JSONDecodeError, openai.APIResponseValidationError, ValueError)):
        return _Retryable("bad_response", f"{type(exc).__name__}: {exc}")
    return None


def _estimate_tokens(messages: list[dict[str, Any]], max_tokens: int) -> int:
    chars = sum(len(str(m.get("content") or "")) for m in messages)
    return chars // 3 + max_tokens


def _logprobs_json(choice: Any) -> str | None:
    lp = getattr(choice, "logprobs", None)
    content = getattr(lp, "content", None) if lp is not None else None
    if not content:
        return None
    # a byte-level token can be half a character: utf8_safe_tree replaces it
    tokens = utf8_safe_tree(
        [
            {
                "token": c.token,
                "logprob": c.logprob,
                "top_logprobs": [
                    {"token": t.token, "logprob": t.logprob} for t in (c.top_logprobs or [])
                ],
            }
            for c in content
        ]
    )
    return json.dumps(tokens, ensure_ascii=False)


async def _send(
    client: openai.AsyncOpenAI,
    ep: Endpoint,
    messages: list[dict[str, Any]],
    params: dict[str, Any],
    limiter: TaskLimiter,
    policy: RetryPolicy,
    out: CallOutcome,
) -> Any:
    """Send one completion with transport retries; returns the response or raises."""
    est = _estimate_tokens(messages, int(params.get("max_tokens", ep.max_tokens)))
    for retry in range(policy.max_retries + 1):
        out.attempts += 1
        async with limiter:
            await limiter.admit(est)
            try:
                # messages and parameters travel in extra_body: the SDK would otherwise
                # walk them through its TypedDict-union transform (~0.6 ms of CPU per
                # request, a sixth of an executor's budget); the JSON sent is the same
                return await client.chat.completions.create(
                    model=ep.model, messages=[], extra_body={**params, "messages": messages}
                )
            except Exception as exc:  # classified below; nothing escapes unrecorded
                fault = _classify(exc)
                if fault is None:
                    raise
                last = fault
        if retry == policy.max_retries:
            break
        if last.wait_s is not None:  # the server said when: honour it, jittered up to 10 %
            wait = last.wait_s * random.uniform(1.0, 1.1)
        else:
            wait = random.uniform(policy.backoff_min_s, policy.backoff_max_s)
        await asyncio.sleep(wait)
    raise last


def _usage(resp: Any, out: CallOutcome) -> None:
    usage = getattr(resp, "usage", None)
    if usage is not None:
        out.prompt_tokens += int(usage.prompt_tokens or 0)
        out.completion_tokens += int(usage.completion_tokens or 0)


async def call(
    client: openai.AsyncOpenAI,
    ep: Endpoint,
    messages: list[dict[str, Any]],
    params: dict[str, Any],
    response_model: str | None,
    limiter: TaskLimiter,
    policy: RetryPolicy,
) -> CallOutcome:
    """Run one request to a final outcome; never raises."""
    out = CallOutcome()
    t0 = time.monotonic()
    try:
        model = load_model(response_model) if response_model else None
        conversation = list(messages)
        for repair in range(policy.repair_attempts + 1):
            resp = await _send(client, ep, conversation, params, limiter, policy, out)
            _usage(resp, out)
            choice = resp.choices[0]
            content = None if choice.message.content is None else utf8_safe(choice.message.content)
            out.response = content
            if params.get("logprobs"):
                out.logprobs = _logprobs_json(choice)
                if out.logprobs is None or (
                    params.get("top_logprobs") and not choice.logprobs.content[0].top_logprobs
                ):
                    out.status, out.error_kind = "failed", "no_logprobs"
                    out.error = (
                        f"endpoint {ep.base_url} (model {ep.model}) returned no logprobs "
                        "with top_logprobs; the trainee needs chat logprobs/top_logprobs"
                    )
                    return out
            if model is None:
                out.status = "ok"
                return out
            try:
                parsed = parse_output(content, model)
            except ParseError as exc:
                out.status, out.error_kind, out.error = "invalid", "validation", str(exc)
                if repair < policy.repair_attempts:
                    conversation = [
                        *messages,
                        {"role": "assistant", "content": content or ""},
                        {
                            "role": "user",
                            "content": (
                                "Your previous reply could not be used: "
                                f"{exc}. Reply again with only the JSON object that "
                                "matches the required schema."
                            ),
                        },
                    ]
                continue
            out.parsed = parsed.model_dump_json()
            out.status, out.error, out.error_kind = "ok", None, None
            return out
        return out
    except _Retryable as exc:
        out.status, out.error_kind, out.error = "failed", exc.kind, str(exc)[:2000]
        return out
    except openai.APIStatusError as exc:
        out.status, out.error_kind = "failed", f"http_{exc.status_code}"
        out.error = str(exc)[:2000]
        return out
    except Exception as exc:  # a bug or an unexpected client error: recorded, not raised
        out.status, out.error_kind, out.error = (
            "failed",
            "error",
            f"{type(exc).__name__}: {exc}"[:2000],
        )
        return out
    finally:
        out.latency_ms = (time.monotonic() - t0) * 1000.0
