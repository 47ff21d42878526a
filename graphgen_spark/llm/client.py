"""One LLM request, end to end, inside an executor's event loop.

Transport faults (429 honouring Retry-After, 5xx, timeouts, dropped connections, bodies
that do not decode) retry with jittered backoff up to ``max_retries``; other 4xx fail at
once with the server's message. A reply that arrives but cannot be used (empty, a
structured output that does not parse, logprobs lost) is first resent as the very same
request, up to ``same_request_retries`` times per call: on a deterministic endpoint that
gives the answer a clean run gets. Only then does an invalid structured output get
``repair_attempts`` repair turns (carrying the reply and what was wrong with it); after
those the call is recorded ``invalid`` (never cached as a success, so the next run
retries it). Tokens of every attempt add up in the outcome; its error is scrubbed of the
key and of the URL's credentials.
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
from graphgen_spark.llm.limits import TaskLimiter, estimate_tokens
from graphgen_spark.llm.structured import ParseError, load_model, parse_output
from graphgen_spark.secrets import scrub
from graphgen_spark.text import utf8_safe, utf8_safe_tree


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    backoff_min_s: float = 4.0
    backoff_max_s: float = 10.0
    repair_attempts: int = 1
    # an empty, undecodable or unparsable reply, or one that lost its logprobs, is resent
    # unchanged this many times per call before a repair turn or a final failure
    same_request_retries: int = 2


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


@dataclass(frozen=True)
class _Exchange:
    """What every request of one call shares: the endpoint, its client and limits, the
    parameters, and the outcome being filled."""

    client: openai.AsyncOpenAI
    ep: Endpoint
    params: dict[str, Any]
    limiter: TaskLimiter
    policy: RetryPolicy
    out: CallOutcome


async def _send(x: _Exchange, messages: list[dict[str, Any]]) -> Any:
    """Send one completion with transport retries; returns the response or raises."""
    policy = x.policy
    est = estimate_tokens(messages, int(x.params.get("max_tokens", x.ep.max_tokens)))
    for retry in range(policy.max_retries + 1):
        x.out.attempts += 1
        async with x.limiter:
            await x.limiter.admit(est)
            try:
                # messages and parameters travel in extra_body: the SDK would otherwise
                # walk them through its TypedDict-union transform (~0.6 ms of CPU per
                # request, a sixth of an executor's budget); the JSON sent is the same
                return await x.client.chat.completions.create(
                    model=x.ep.model, messages=[], extra_body={**x.params, "messages": messages}
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


@dataclass(frozen=True)
class _Unusable:
    """A reply that arrived but cannot be used as it is."""

    kind: str  # validation | empty | no_logprobs
    status: str  # the outcome's status if this is final: invalid | failed
    message: str
    content: str | None
    repairable: bool  # whether a repair turn could fix it (only structured output can)


def _missing_logprobs(choice: Any, params: dict[str, Any], logprobs: str | None) -> bool:
    return logprobs is None or bool(
        params.get("top_logprobs") and not choice.logprobs.content[0].top_logprobs
    )


def _take(
    resp: Any, ep: Endpoint, params: dict[str, Any], model: Any, out: CallOutcome
) -> _Unusable | None:
    """Fill ``out`` from one reply; say why the reply cannot be used, if it cannot."""
    _usage(resp, out)
    if not resp.choices:
        return _Unusable("empty", "invalid", "the reply has no choices", None, False)
    choice = resp.choices[0]
    content = None if choice.message.content is None else utf8_safe(choice.message.content)
    out.response, out.parsed = content, None
    if params.get("logprobs"):
        out.logprobs = _logprobs_json(choice)
        if _missing_logprobs(choice, params, out.logprobs):
            message = (
                f"endpoint {ep.safe_url} (model {ep.model}) returned no logprobs "
                "with top_logprobs; the trainee needs chat logprobs/top_logprobs"
            )
            return _Unusable("no_logprobs", "failed", message, content, False)
    if model is None:
        if not params.get("logprobs") and not (content or "").strip():
            return _Unusable("empty", "invalid", "empty output", content, False)
        return None
    try:
        out.parsed = parse_output(content, model).model_dump_json()
    except ParseError as exc:
        return _Unusable("validation", "invalid", str(exc), content, True)
    return None


def _repair_turn(messages: list[dict[str, Any]], bad: _Unusable) -> list[dict[str, Any]]:
    """The conversation asking again: the reply being repaired, then what was wrong."""
    return [
        *messages,
        {"role": "assistant", "content": bad.content or ""},
        {
            "role": "user",
            "content": (
                f"Your previous reply could not be used: {bad.message}. Reply again with "
                "only the JSON object that matches the required schema."
            ),
        },
    ]


async def _converse(x: _Exchange, messages: list[dict[str, Any]], model: Any) -> None:
    """Send until a reply is usable. An unusable reply is first resent as the very same
    request (a transient fault must not change the answer on a deterministic endpoint):
    ``same_request_retries`` per call; only then comes a repair turn."""
    policy, out = x.policy, x.out
    conversation, resends, repairs = list(messages), policy.same_request_retries, 0
    while True:
        resp = await _send(x, conversation)
        bad = _take(resp, x.ep, x.params, model, out)
        if bad is None:
            out.status, out.error, out.error_kind = "ok", None, None
            return
        out.status, out.error_kind, out.error = bad.status, bad.kind, bad.message
        if resends > 0:
            resends -= 1
        elif bad.repairable and repairs < policy.repair_attempts:
            repairs += 1
            conversation = _repair_turn(messages, bad)
        else:
            return


def _record_failure(exc: Exception, out: CallOutcome) -> None:
    """The outcome of a call that ended in an exception (the message is scrubbed later)."""
    out.status = "failed"
    if isinstance(exc, _Retryable):
        out.error_kind, out.error = exc.kind, str(exc)
    elif isinstance(exc, openai.APIStatusError):
        out.error_kind, out.error = f"http_{exc.status_code}", str(exc)
    else:  # a bug or an unexpected client error: recorded, not raised
        out.error_kind, out.error = "error", f"{type(exc).__name__}: {exc}"


async def call(
    client: openai.AsyncOpenAI,
    ep: Endpoint,
    messages: list[dict[str, Any]],
    params: dict[str, Any],
    response_model: str | None,
    limiter: TaskLimiter,
    policy: RetryPolicy,
) -> CallOutcome:
    """Run one request to a final outcome; never raises. Its error never holds the key
    (a gateway may echo the Authorization header) nor the URL's credentials."""
    out = CallOutcome()
    t0 = time.monotonic()
    try:
        model = load_model(response_model) if response_model else None
        exchange = _Exchange(client, ep, params, limiter, policy, out)
        await _converse(exchange, messages, model)
    except Exception as exc:  # classified in _record_failure; nothing escapes unrecorded
        _record_failure(exc, out)
    finally:
        out.latency_ms = (time.monotonic() - t0) * 1000.0
    if out.error:
        out.error = _clean_error(out.error, ep)
    return out


def _clean_error(text: str, ep: Endpoint) -> str:
    """``text`` fit to store: the URL's credentials and the key out, then capped."""
    if ep.base_url:
        text = text.replace(ep.base_url, ep.safe_url)
    return (scrub(text, [ep.api_key]) or "")[:2000]
