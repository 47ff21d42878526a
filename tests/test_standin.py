"""The offline stand-in endpoint, exercised with the real ``openai`` client over real HTTP."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from enum import StrEnum
from pathlib import Path
from typing import Any

import openai
import pytest
from pydantic import BaseModel, Field

from graphgen_spark.standin import HANDLERS, StandinOptions, StandinServer, main, register_handler
from graphgen_spark.standin.faults import canonical_body, choose_fault
from graphgen_spark.standin.picker import Picker
from graphgen_spark.standin.schema_fill import fill_schema

ROOT = Path(__file__).resolve().parents[1]
MODEL = "standin"


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}]


def client(srv: StandinServer, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=srv.base_url, api_key="x", max_retries=kw.pop("max_retries", 0), **kw
    )


def http_json(url: str, method: str = "GET") -> dict[str, Any]:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def srv():
    with StandinServer(StandinOptions(), announce=False) as server:
        yield server


@pytest.fixture(scope="module")
def oa(srv: StandinServer) -> openai.OpenAI:
    return client(srv)


# -- content rules ------------------------------------------------------------------------------


def test_banner_and_fingerprint(capfd: pytest.CaptureFixture[str]) -> None:
    with StandinServer() as server:
        resp = client(server).chat.completions.create(model="m", messages=ask("hi there"))
    err = capfd.readouterr().err
    assert "STAND-IN endpoint" in err and "NOT a language model" in err
    assert resp.system_fingerprint == "graphgen-spark-standin"
    assert resp.object == "chat.completion" and resp.model == "m" and resp.id
    choice = resp.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant"
    assert choice.finish_reason == "stop" and choice.logprobs is None


def test_plain_text_is_deterministic_and_prompt_dependent(oa: openai.OpenAI) -> None:
    a1 = oa.chat.completions.create(model=MODEL, messages=ask("Alpha beta gamma delta epsilon"))
    a2 = oa.chat.completions.create(model=MODEL, messages=ask("Alpha beta gamma delta epsilon"))
    b = oa.chat.completions.create(model=MODEL, messages=ask("Zeta eta theta iota kappa lambda"))
    assert a1.choices[0].message.content == a2.choices[0].message.content
    assert a1.choices[0].message.content != b.choices[0].message.content
    words = set(a1.choices[0].message.content.rstrip(".").lower().split())
    assert words <= {"alpha", "beta", "gamma", "delta", "epsilon"}


def test_usage_counts(oa: openai.OpenAI) -> None:
    messages = ask("Count these characters please, all of them.")
    resp = oa.chat.completions.create(model=MODEL, messages=messages)
    chars = sum(len(m["content"]) for m in messages)
    content = resp.choices[0].message.content
    assert resp.usage.prompt_tokens == math.ceil(chars / 4)
    assert resp.usage.completion_tokens == math.ceil(len(content) / 4)
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_max_tokens_truncates(oa: openai.OpenAI) -> None:
    resp = oa.chat.completions.create(model=MODEL, messages=ask("one two three four"), max_tokens=3)
    assert resp.choices[0].finish_reason == "length"
    assert len(resp.choices[0].message.content.split()) == 3


class Kind(StrEnum):
    person = "person"
    place = "place"
    thing = "thing"


class Entity(BaseModel):
    name: str = Field(min_length=3)
    kind: Kind
    weight: float = Field(ge=0, le=1)


class Extraction(BaseModel):
    title: str
    year: int = Field(ge=1900, le=2100)
    entities: list[Entity] = Field(min_length=1, max_length=4)
    note: str | None = None
    tags: list[str] = Field(default_factory=list, max_length=2)


def test_json_schema_validates_against_pydantic_schema(oa: openai.OpenAI) -> None:
    def extract(text: str) -> Extraction:
        resp = oa.chat.completions.create(
            model=MODEL,
            messages=ask(text),
            response_format={
                "type": "json_schema",
                "json_schema": {
                    "name": "extraction_test",
                    "schema": Extraction.model_json_schema(),
                    "strict": True,
                },
            },
        )
        return Extraction.model_validate_json(resp.choices[0].message.content)

    a = extract("Marie Curie discovered polonium in Paris")
    assert a == extract("Marie Curie discovered polonium in Paris")
    b = extract("Ada Lovelace wrote notes on the Analytical Engine")
    assert a != b
    assert 1 <= len(a.entities) <= 4 and isinstance(a.entities[0].kind, Kind)
    assert set(a.title.split()) <= {"Marie", "Curie", "discovered", "polonium", "in", "Paris"}


def test_json_schema_via_openai_parse_helper(oa: openai.OpenAI) -> None:
    resp = oa.chat.completions.parse(
        model=MODEL, messages=ask("Extract from: Turing met Church"), response_format=Extraction
    )
    parsed = resp.choices[0].message.parsed
    assert isinstance(parsed, Extraction) and parsed.entities


def test_json_object_mode(oa: openai.OpenAI) -> None:
    resp = oa.chat.completions.create(
        model=MODEL, messages=ask("give json"), response_format={"type": "json_object"}
    )
    data = json.loads(resp.choices[0].message.content)
    assert set(data) == {"text"} and data["text"]


def test_named_schema_handler_overrides_filler(oa: openai.OpenAI) -> None:
    @register_handler("standin_test_echo")
    def echo(schema: dict[str, Any], req: Any) -> dict[str, Any]:
        return {"echo": req.prompt.upper()}

    try:
        resp = oa.chat.completions.create(
            model=MODEL,
            messages=ask("shout this"),
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "standin_test_echo", "schema": {"type": "object"}},
            },
        )
    finally:
        HANDLERS.pop("standin_test_echo")
    assert json.loads(resp.choices[0].message.content) == {"echo": "SHOUT THIS"}


def test_schema_filler_keywords() -> None:
    schema = {
        "type": "object",
        "additionalProperties": False,
        "required": ["a", "b", "c", "d", "e", "f", "g"],
        "properties": {
            "a": {"const": "fixed"},
            "b": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/Leaf"}]},
            "c": {"type": "array", "items": {"type": "integer", "minimum": 5, "maximum": 6}},
            "d": {"type": "array", "minItems": 3, "maxItems": 3, "items": {"type": "boolean"}},
            "e": {"type": ["string", "null"], "minLength": 12},
            "f": {"oneOf": [{"type": "number", "exclusiveMinimum": 2, "exclusiveMaximum": 3}]},
            "g": {"type": "null"},
        },
        "$defs": {
            "Leaf": {
                "type": "object",
                "properties": {"x": {"type": "string", "enum": ["p", "q"]}},
                "required": ["x"],
                "additionalProperties": False,
            }
        },
    }
    value = fill_schema(schema, Picker("some prompt words here"))
    assert set(value) == set(schema["properties"])
    assert value["a"] == "fixed" and value["b"]["x"] in ("p", "q")
    assert len(value["c"]) == 2 and all(5 <= v <= 6 for v in value["c"])
    assert len(value["d"]) == 3 and all(isinstance(v, bool) for v in value["d"])
    assert isinstance(value["e"], str) and len(value["e"]) >= 12
    assert 2 < value["f"] < 3 and value["g"] is None


def test_schema_filler_terminates_on_recursive_schema() -> None:
    class Node(BaseModel):
        label: str
        children: list[Node] = []

    node = Node.model_validate(fill_schema(Node.model_json_schema(), Picker("tree of words")))
    assert node.label and node.children


# -- logprobs -----------------------------------------------------------------------------------


def test_logprobs_yes_no_distribution(oa: openai.OpenAI) -> None:
    answers = set()
    for i in range(8):
        resp = oa.chat.completions.create(
            model=MODEL,
            messages=ask(f"Statement {i}: the sky is green. Answer yes or no."),
            logprobs=True,
            top_logprobs=5,
            max_tokens=1,
        )
        choice = resp.choices[0]
        answers.add(choice.message.content)
        first = choice.logprobs.content[0]
        assert first.token == choice.message.content
        assert first.bytes == list(first.token.encode())
        top = first.top_logprobs
        assert len(top) == 5 and top[0].token == first.token
        assert top[0].logprob == first.logprob
        assert [t.logprob for t in top] == sorted((t.logprob for t in top), reverse=True)
        assert len({t.token for t in top}) == 5
        assert sum(math.exp(t.logprob) for t in top) <= 1.0
    assert answers == {"yes", "no"}


def test_no_logprobs_option() -> None:
    with StandinServer(StandinOptions(no_logprobs=True), announce=False) as server:
        resp = client(server).chat.completions.create(
            model=MODEL, messages=ask("yes or no?"), logprobs=True, top_logprobs=3
        )
    assert resp.choices[0].message.content in ("yes", "no")
    assert resp.choices[0].logprobs is None


# -- script rules -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory):
    script = tmp_path_factory.mktemp("script") / "rules.json"
    rules = [
        {"match": "capital of France", "content": "Paris"},
        {"match": "capital of France", "content": "never reached"},
        {"match": "special model", "model": "gpt-x", "content": "for gpt-x only"},
        {"match": "judge me", "top_logprobs": [["no", -0.2], ["yes", -1.8], ["maybe", -4.0]]},
        {"match": "refuse", "status": 400, "message": "scripted refusal"},
        {"match": "quiet", "no_logprobs": True},
    ]
    script.write_text(json.dumps({"rules": rules}))
    with StandinServer(StandinOptions(script=script), announce=False) as server:
        yield client(server)


def test_script_rules_override(scripted: openai.OpenAI) -> None:
    resp = scripted.chat.completions.create(
        model=MODEL, messages=ask("What is the capital of France?")
    )
    assert resp.choices[0].message.content == "Paris"

    other = scripted.chat.completions.create(model=MODEL, messages=ask("special model please"))
    assert other.choices[0].message.content != "for gpt-x only"  # model mismatch falls through
    gx = scripted.chat.completions.create(model="gpt-x", messages=ask("special model please"))
    assert gx.choices[0].message.content == "for gpt-x only"

    judged = scripted.chat.completions.create(
        model=MODEL, messages=ask("judge me"), logprobs=True, top_logprobs=3
    )
    first = judged.choices[0].logprobs.content[0]
    assert judged.choices[0].message.content == "no" and first.logprob == -0.2
    assert [(t.token, t.logprob) for t in first.top_logprobs] == [
        ("no", -0.2),
        ("yes", -1.8),
        ("maybe", -4.0),
    ]

    quiet = scripted.chat.completions.create(model=MODEL, messages=ask("quiet"), logprobs=True)
    assert quiet.choices[0].logprobs is None

    with pytest.raises(openai.BadRequestError, match="scripted refusal") as info:
        scripted.chat.completions.create(model=MODEL, messages=ask("please refuse"))
    assert info.value.status_code == 400


# -- faults -------------------------------------------------------------------------------------


def fault_server(kind: str, **kw: Any) -> StandinServer:
    return StandinServer(StandinOptions(fail_first=1, faults=(kind,), **kw), announce=False)


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("429", openai.RateLimitError),
        ("500", openai.InternalServerError),
        ("503", openai.InternalServerError),
        ("drop", openai.APIConnectionError),
        ("hang", openai.APITimeoutError),
    ],
)
def test_fault_kinds_map_to_client_errors(kind: str, error: type[Exception]) -> None:
    with fault_server(kind, retry_after_s=7, hang_s=30) as server:
        oa = client(server, timeout=0.5)
        with pytest.raises(error) as info:
            oa.chat.completions.create(model=MODEL, messages=ask("fault me"))
        if kind == "429":
            assert info.value.response.headers["retry-after"] == "7"
        # The fault is only on the first attempt of this body: the retry succeeds.
        assert oa.chat.completions.create(model=MODEL, messages=ask("fault me")).choices
        stats = server.stats()
    assert stats["faults_by_kind"] == {kind: 1}
    assert stats["requests_total"] == 2 and stats["completions_ok"] == 1


def test_truncated_body_fails_to_decode() -> None:
    with fault_server("truncated") as server, pytest.raises(ValueError):
        client(server).chat.completions.create(model=MODEL, messages=ask("cut me"))


def test_invalid_json_fault_breaks_structured_output() -> None:
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "x", "schema": Extraction.model_json_schema(), "strict": True},
    }
    with fault_server("invalid_json") as server:
        oa = client(server)
        bad = oa.chat.completions.create(model=MODEL, messages=ask("j"), response_format=fmt)
        with pytest.raises(ValueError):
            json.loads(bad.choices[0].message.content)
        good = oa.chat.completions.create(model=MODEL, messages=ask("j"), response_format=fmt)
        Extraction.model_validate_json(good.choices[0].message.content)


def test_content_faults_keep_the_200_but_spoil_the_reply() -> None:
    with fault_server("empty") as server:
        oa = client(server)
        bad = oa.chat.completions.create(model=MODEL, messages=ask("e"))
        good = oa.chat.completions.create(model=MODEL, messages=ask("e"))
        stats = server.stats()
    assert bad.choices[0].message.content == "" and good.choices[0].message.content
    assert stats["by_status"] == {"200": 2} and stats["faults_by_kind"] == {"empty": 1}
    with fault_server("no_logprobs") as server:
        oa = client(server)
        kw: dict[str, Any] = {"logprobs": True, "top_logprobs": 3}
        bad = oa.chat.completions.create(model=MODEL, messages=ask("yes or no?"), **kw)
        good = oa.chat.completions.create(model=MODEL, messages=ask("yes or no?"), **kw)
    assert bad.choices[0].logprobs is None
    assert bad.choices[0].message.content == good.choices[0].message.content
    assert len(good.choices[0].logprobs.content[0].top_logprobs) == 3


def test_401_echo_returns_the_authorization_header_in_its_body() -> None:
    with fault_server("401_echo") as server:
        oa = openai.OpenAI(base_url=server.base_url, api_key="sk-echo-me-1234", max_retries=0)
        with pytest.raises(openai.AuthenticationError, match="Bearer sk-echo-me-1234") as info:
            oa.chat.completions.create(model=MODEL, messages=ask("who am i"))
        assert info.value.status_code == 401
        assert oa.chat.completions.create(model=MODEL, messages=ask("who am i")).choices


def test_recent_request_bodies_are_kept_for_inspection() -> None:
    with StandinServer(StandinOptions(), announce=False) as server:
        oa = client(server)
        oa.chat.completions.create(model=MODEL, messages=ask("first"), max_tokens=7)
        oa.chat.completions.create(model=MODEL, messages=ask("second"))
        base = server.base_url.removesuffix("/v1")
        sent = http_json(f"{base}/stats/requests")["requests"]
        assert sent == server.requests()
        http_json(f"{base}/stats/reset", method="POST")
        assert server.requests() == []
    assert [b["messages"] for b in sent] == [ask("first"), ask("second")]
    assert sent[0]["max_tokens"] == 7


def test_fail_first_counts_attempts_per_body() -> None:
    opts = StandinOptions(fail_first=2, faults=("500", "429"), retry_after_s=0.01)
    with StandinServer(opts, announce=False) as server:
        oa = client(server)
        with pytest.raises(openai.InternalServerError):
            oa.chat.completions.create(model=MODEL, messages=ask("retry me"))
        with pytest.raises(openai.RateLimitError):
            oa.chat.completions.create(model=MODEL, messages=ask("retry me"))
        assert oa.chat.completions.create(model=MODEL, messages=ask("retry me")).choices
        # The client's own retries: a fresh body fails twice, then succeeds on retry 2.
        retrying = client(server, max_retries=2)
        retrying.chat.completions.create(model=MODEL, messages=ask("retry you"))
        stats = server.stats()
    assert stats["requests_total"] == 6 and stats["completions_ok"] == 2
    assert stats["faults_by_kind"] == {"500": 2, "429": 2}
    assert stats["distinct_bodies"] == 2


def test_fault_rate_is_deterministic_and_near_rate() -> None:
    opts = StandinOptions(fault_rate=0.3, seed=7)
    bodies = [canonical_body({"model": "m", "messages": ask(f"q{i}")}) for i in range(2000)]
    picks = [choose_fault(opts, b, 0) for b in bodies]
    assert picks == [choose_fault(opts, b, 0) for b in bodies]
    assert 0.25 < sum(p is not None for p in picks) / len(picks) < 0.35
    assert {p for p in picks if p} == set(opts.faults)
    other_seed = [choose_fault(StandinOptions(fault_rate=0.3, seed=8), b, 0) for b in bodies]
    assert other_seed != picks


# -- concurrency, stats, models ------------------------------------------------------------------


def test_max_concurrency_queues_requests() -> None:
    async def run(base_url: str) -> float:
        aoa = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)
        start = time.perf_counter()
        results = await asyncio.gather(
            *(
                aoa.chat.completions.create(model=MODEL, messages=ask(f"parallel {i}"))
                for i in range(8)
            )
        )
        elapsed = time.perf_counter() - start
        await aoa.close()
        assert len(results) == 8
        return elapsed

    with StandinServer(StandinOptions(latency_ms=100, max_concurrency=2), announce=False) as server:
        elapsed = asyncio.run(run(server.base_url))
        stats = server.stats()
    assert elapsed >= 0.35
    assert stats["max_in_flight"] == 2 and stats["max_queued"] >= 1
    assert stats["completions_ok"] == 8 and stats["in_flight"] == 0


def test_stats_endpoint_and_reset() -> None:
    with StandinServer(StandinOptions(fail_first=1, faults=("500",)), announce=False) as server:
        oa = client(server)
        with pytest.raises(openai.InternalServerError):
            oa.chat.completions.create(model="model-a", messages=ask("s1"))
        oa.chat.completions.create(model="model-a", messages=ask("s1"))
        with pytest.raises(openai.InternalServerError):
            oa.chat.completions.create(model="model-b", messages=ask("s2"))
        base = server.base_url.removesuffix("/v1")
        stats = http_json(f"{base}/stats")
        assert stats["requests_total"] == 3 and stats["completions_ok"] == 1
        assert stats["faults_by_kind"] == {"500": 2} and stats["distinct_bodies"] == 2
        assert stats["by_model"] == {"model-a": 2, "model-b": 1}
        assert stats["max_in_flight"] == 1 and stats["in_flight"] == 0
        assert stats == server.stats()

        models = [m.id for m in oa.models.list()]
        assert models[0] == "standin" and "model-a" in models

        reset = http_json(f"{base}/stats/reset", method="POST")
        assert reset["requests_total"] == 0 and reset["faults_by_kind"] == {}
        assert reset["distinct_bodies"] == 0
        # Attempt history was reset too: the same body faults again on its "first" attempt.
        with pytest.raises(openai.InternalServerError):
            oa.chat.completions.create(model="model-a", messages=ask("s1"))


def test_malformed_request_is_400(oa: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="messages"):
        oa.chat.completions.create(model=MODEL, messages=[])


def test_async_client_matches_sync(srv: StandinServer, oa: openai.OpenAI) -> None:
    async def run() -> str:
        async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="x", max_retries=0) as aoa:
            resp = await aoa.chat.completions.create(model=MODEL, messages=ask("async words"))
            return resp.choices[0].message.content

    sync = oa.chat.completions.create(model=MODEL, messages=ask("async words"))
    assert asyncio.run(run()) == sync.choices[0].message.content


# -- command line -------------------------------------------------------------------------------


def test_cli_rejects_invalid_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--faults", "429,explode"]) == 2
    err = capsys.readouterr().err
    assert "--faults" in err and "explode" in err and "truncated" in err
    assert main(["--fault-rate", "2"]) == 2
    assert "--fault-rate" in capsys.readouterr().err


def test_cli_subprocess_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "graphgen_spark.standin",
            "--port",
            "0",
            "--port-file",
            str(port_file),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 15
        while not port_file.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "stand-in did not write its port file"
            time.sleep(0.05)
        port = int(port_file.read_text())
        oa = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        resp = oa.chat.completions.create(model=MODEL, messages=ask("from a subprocess"))
        assert resp.system_fingerprint == "graphgen-spark-standin"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "NOT a language model" in out and f"http://127.0.0.1:{port}/v1" in out
