"""``llm.client.call`` against the stand-in over real HTTP: a reply that arrives unusable is
resent unchanged before any repair turn, so a transient fault never changes the answer;
the key never reaches an outcome, whatever the gateway echoes."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import openai
import pytest

from graphgen_spark.llm.client import CallOutcome, RetryPolicy, call
from graphgen_spark.llm.endpoints import Endpoint
from graphgen_spark.llm.limits import TaskLimiter, TaskLimits
from graphgen_spark.llm.schemas import TextAnswer
from graphgen_spark.llm.structured import model_path, response_format
from graphgen_spark.standin import StandinOptions, StandinServer
from graphgen_spark.standin.faults import INVALID_JSON_CONTENT

POLICY = RetryPolicy(max_retries=3, backoff_min_s=0.01, backoff_max_s=0.02)
KEY = "sk-live-4f9c2e7a1b3d5f60"
ASK = [{"role": "user", "content": "Rewrite: honeybees dance to point at flowers."}]
STRUCTURED = {"max_tokens": 200, "response_format": response_format(TextAnswer)}
JUDGE = {"max_tokens": 1, "logprobs": True, "top_logprobs": 5}


def endpoint(url: str, key: str = KEY) -> Endpoint:
    return Endpoint("synthesizer", url, "standin", key, 0.0, 1.0, 200, 2.0, 0.0, 0.0)


def run_call(
    server: StandinServer,
    params: dict[str, Any],
    model: str | None = model_path(TextAnswer),
    policy: RetryPolicy = POLICY,
    base_url: str | None = None,
) -> CallOutcome:
    """One ``call`` with a real AsyncOpenAI client, as an executor task makes it."""
    ep = endpoint(base_url or server.base_url)

    async def go() -> CallOutcome:
        client = openai.AsyncOpenAI(base_url=ep.base_url, api_key=ep.api_key, max_retries=0)
        try:
            limiter = TaskLimiter(TaskLimits(concurrency=2))
            return await call(client, ep, ASK, params, model, limiter, policy)
        finally:
            await client.close()

    return asyncio.run(go())


def clean_outcome(params: dict[str, Any], model: str | None = model_path(TextAnswer)):
    with StandinServer(StandinOptions(), announce=False) as server:
        return run_call(server, params, model)


@pytest.mark.parametrize("fault", ["invalid_json", "empty", "truncated"])
def test_an_unusable_reply_is_resent_unchanged_and_gives_the_clean_answer(fault: str) -> None:
    clean = clean_outcome(STRUCTURED)
    assert clean.status == "ok" and clean.attempts == 1
    opts = StandinOptions(fail_first=1, faults=(fault,))
    with StandinServer(opts, announce=False) as server:
        out = run_call(server, STRUCTURED)
        stats, sent = server.stats(), server.requests()
    assert (out.status, out.error, out.attempts) == ("ok", None, 2)
    assert out.parsed == clean.parsed and out.response == clean.response
    # the same body twice, no repair turn: one distinct body, no assistant message in it
    assert stats["requests_total"] == 2 and stats["distinct_bodies"] == 1
    assert stats["faults_by_kind"] == {fault: 1}
    assert all(b["messages"] == ASK for b in sent)
    # tokens of both attempts add up (a truncated body's usage never arrived)
    paid = 1 if fault == "truncated" else 2
    assert out.prompt_tokens == paid * clean.prompt_tokens


def test_a_repair_turn_comes_only_after_the_resends_and_carries_the_reply() -> None:
    opts = StandinOptions(fail_first=10, faults=("invalid_json",))
    policy = RetryPolicy(backoff_min_s=0.01, backoff_max_s=0.02, repair_attempts=1)
    with StandinServer(opts, announce=False) as server:
        out = run_call(server, STRUCTURED, policy=policy)
        stats, sent = server.stats(), server.requests()
    assert (out.status, out.error_kind) == ("invalid", "validation")
    assert out.attempts == 1 + policy.same_request_retries + 1 == stats["requests_total"]
    *resends, repair = sent
    assert all(b["messages"] == ASK for b in resends)
    bad_reply, question = repair["messages"][-2:]
    assert repair["messages"][:-2] == ASK
    assert bad_reply == {"role": "assistant", "content": INVALID_JSON_CONTENT}
    assert question["role"] == "user" and out.error and out.error in question["content"]
    assert {k: v for k, v in repair.items() if k != "messages"} == {
        k: v for k, v in resends[0].items() if k != "messages"
    }


def test_lost_logprobs_are_resent_before_the_call_fails() -> None:
    clean = clean_outcome(JUDGE, model=None)
    assert clean.status == "ok" and clean.logprobs
    with StandinServer(StandinOptions(fail_first=1, faults=("no_logprobs",)), announce=False) as s:
        out = run_call(s, JUDGE, model=None)
        assert s.stats()["requests_total"] == 2
    assert (out.status, out.attempts) == ("ok", 2)
    assert out.logprobs == clean.logprobs and out.response == clean.response
    with StandinServer(StandinOptions(fail_first=9, faults=("no_logprobs",)), announce=False) as s:
        out = run_call(s, JUDGE, model=None)
        stats = s.stats()
    assert (out.status, out.error_kind) == ("failed", "no_logprobs")
    assert out.attempts == stats["requests_total"] == 1 + POLICY.same_request_retries
    assert stats["distinct_bodies"] == 1  # never a repair turn for logprobs


def test_a_gateway_echoing_the_key_leaves_no_trace_in_the_outcome() -> None:
    with StandinServer(StandinOptions(fail_first=1, faults=("401_echo",)), announce=False) as s:
        # the gateway really does echo it: the raw client error carries the key
        raw = openai.OpenAI(base_url=s.base_url, api_key=KEY, max_retries=0)
        with pytest.raises(openai.AuthenticationError, match=KEY):
            raw.chat.completions.create(model="standin", messages=ASK)
        out = run_call(s, {"max_tokens": 20}, model=None)
    assert (out.status, out.error_kind, out.attempts) == ("failed", "http_401", 1)
    assert out.error and "invalid credentials" in out.error and "Bearer ***" in out.error
    assert KEY not in json.dumps(out.__dict__)


@pytest.mark.parametrize("fault", ["401_echo", "no_logprobs"])
def test_credentials_in_the_base_url_are_not_quoted_in_errors(fault: str) -> None:
    """``user:token@`` comes back base64'd in an echoed Basic header, or quoted by the
    client's own message about the endpoint."""
    with StandinServer(StandinOptions(fail_first=9, faults=(fault,)), announce=False) as s:
        url = s.base_url.replace("http://", "http://alice:url-token-93ac51@")
        out = run_call(s, JUDGE, model=None, base_url=url)
        assert s.stats()["faults_by_kind"][fault] >= 1
    assert out.status == "failed" and out.error
    basic = base64.b64encode(b"alice:url-token-93ac51").decode()
    for secret in ("url-token-93ac51", basic, KEY):
        assert secret not in out.error
    if fault == "no_logprobs":
        assert s.base_url.replace("http://", "http://***@") in out.error
