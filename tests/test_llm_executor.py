"""The LLM execution layer against the stand-in over real HTTP, on real Spark and Delta."""

from __future__ import annotations

import json

import pytest
from contexts import stage_context
from pyspark.sql import functions as F

from graphgen_spark.config import ConfigError, build_config
from graphgen_spark.llm.executor import BudgetExceeded, LLMExecutor
from graphgen_spark.llm.requests import REQUEST_SCHEMA, request_row
from graphgen_spark.llm.schemas import TextAnswer
from graphgen_spark.standin import StandinOptions, StandinServer

FAST = {"backoff_min_s": 0.01, "backoff_max_s": 0.05, "concurrency_per_task": 8}


def make_cfg(url: str | None, **llm):
    data = {
        "llm": {
            **FAST,
            **llm,
            "synthesizer": {
                "base_url": url,
                "model": "standin",
                "timeout_s": 2.0,
                "price_prompt_per_1m": 1.0,
                "price_completion_per_1m": 2.0,
                **llm.pop("synthesizer", {}),
            },
            "trainee": {"base_url": url, "model": "standin-trainee"},
        }
    }
    data["llm"].update(llm)
    return build_config(data, env=False)


def requests_df(spark, cfg, n, stage="test", prefix="fact", **params):
    rows = [
        request_row(
            cfg,
            stage,
            "synthesizer",
            [{"role": "user", "content": f"Rewrite {prefix} number {i} about honeybees."}],
            response_model=TextAnswer,
            **params,
        )
        for i in range(n)
    ]
    return spark.createDataFrame(rows, REQUEST_SCHEMA)


def executor(spark, tables, cfg, run_id="run-1"):
    return LLMExecutor(stage_context(spark, tables, cfg, run_id=run_id))


def calls(tables):
    return {r["request_id"]: r.asDict() for r in tables.read("llm_calls").collect()}


def test_calls_are_cached_across_runs(spark, tables):
    with StandinServer(StandinOptions(), announce=False) as server:
        cfg = make_cfg(server.base_url)
        reqs = requests_df(spark, cfg, 30)
        first = executor(spark, tables, cfg).execute(reqs, "test")
        assert (first.requested, first.cached, first.sent, first.ok) == (30, 0, 30, 30)
        assert server.stats()["completions_ok"] == 30
        rows = calls(tables)
        assert len(rows) == 30
        for row in rows.values():
            assert row["status"] == "ok" and row["attempts"] == 1
            TextAnswer.model_validate_json(row["parsed"])
            assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
            expected = (row["prompt_tokens"] * 1.0 + row["completion_tokens"] * 2.0) / 1e6
            assert row["cost"] == pytest.approx(expected)
        assert first.prompt_tokens == sum(r["prompt_tokens"] for r in rows.values())

        # a rerun (new run id, same requests) sends nothing: zero requests at the stand-in
        before = server.stats()["requests_total"]
        second = executor(spark, tables, cfg, run_id="run-2").execute(reqs, "test")
        assert (second.cached, second.sent) == (30, 0)
        assert server.stats()["requests_total"] == before
        # answers join back to their requests
        joined = executor(spark, tables, cfg).results(reqs).filter(F.col("status") == "ok")
        assert joined.count() == 30


def test_retries_through_every_transport_fault(spark, tables):
    opts = StandinOptions(
        fail_first=4, faults=("429", "500", "hang", "drop"), retry_after_s=0.05, hang_s=5.0
    )
    with StandinServer(opts, announce=False) as server:
        cfg = make_cfg(server.base_url, max_retries=5, synthesizer={"timeout_s": 0.5})
        summary = executor(spark, tables, cfg).execute(requests_df(spark, cfg, 6), "test")
        assert (summary.sent, summary.ok, summary.failed) == (6, 6, 0)
        rows = calls(tables)
        assert len(rows) == 6
        assert all(r["status"] == "ok" and r["attempts"] == 5 for r in rows.values())
        faults = server.stats()["faults_by_kind"]
        assert {k: faults.get(k, 0) for k in ("429", "500", "hang", "drop")} == {
            "429": 6,
            "500": 6,
            "hang": 6,
            "drop": 6,
        }


def test_exhausted_retries_are_recorded_and_retried_by_the_next_run(spark, tables):
    opts = StandinOptions(fail_first=3, faults=("500",))
    with StandinServer(opts, announce=False) as server:
        cfg = make_cfg(server.base_url, max_retries=1)
        reqs = requests_df(spark, cfg, 4)
        first = executor(spark, tables, cfg).execute(reqs, "test")
        assert (first.failed, first.ok, first.errors) == (4, 0, {"server_error": 4})
        rows = calls(tables)
        assert all(r["status"] == "failed" and r["attempts"] == 2 for r in rows.values())
        assert all("500" in r["error"] or "Internal" in r["error"] for r in rows.values())

        second = executor(spark, tables, cfg, run_id="run-2").execute(reqs, "test")
        assert (second.cached, second.sent, second.ok) == (0, 4, 4)
        rows = calls(tables)
        assert all(r["status"] == "ok" and r["attempts"] == 4 for r in rows.values())


def test_invalid_structured_output_is_recorded_not_cached(spark, tables):
    opts = StandinOptions(fail_first=10, faults=("invalid_json",))
    with StandinServer(opts, announce=False) as server:
        cfg = make_cfg(server.base_url, repair_attempts=1)
        reqs = requests_df(spark, cfg, 3)
        summary = executor(spark, tables, cfg).execute(reqs, "test")
        assert (summary.invalid, summary.ok) == (3, 0)
        rows = calls(tables)
        assert all(
            r["status"] == "invalid" and r["error_kind"] == "validation" for r in rows.values()
        )
        assert all(r["error"] for r in rows.values())
        # the same request twice more, then one repair turn: four completions per request
        assert server.stats()["requests_total"] == 12
        again = executor(spark, tables, cfg, run_id="run-2").execute(reqs, "test")
        assert again.sent == 3 and server.stats()["requests_total"] == 24


def test_client_errors_fail_at_once_with_the_server_message(spark, tables, tmp_path):
    script = tmp_path / "rules.json"
    script.write_text(
        json.dumps(
            {
                "rules": [
                    {
                        "match": "number 1 ",
                        "status": 400,
                        "message": "context length exceeded (standin)",
                    },
                ]
            }
        )
    )
    with StandinServer(StandinOptions(script=str(script)), announce=False) as server:
        cfg = make_cfg(server.base_url)
        summary = executor(spark, tables, cfg).execute(requests_df(spark, cfg, 3), "test")
        assert (summary.ok, summary.failed) == (2, 1)
        bad = [r for r in calls(tables).values() if r["status"] == "failed"]
        assert bad[0]["attempts"] == 1 and bad[0]["error_kind"] == "http_400"
        assert "context length exceeded" in bad[0]["error"]


def test_logprobs_are_stored_and_their_absence_fails_the_call(spark, tables):
    with StandinServer(StandinOptions(), announce=False) as server:
        cfg = make_cfg(server.base_url)
        rows = [
            request_row(
                cfg,
                "judge",
                "trainee",
                [{"role": "user", "content": f"Statement {i}: bees dance. Yes or no?"}],
                max_tokens=1,
                logprobs=True,
                top_logprobs=5,
            )
            for i in range(3)
        ]
        summary = executor(spark, tables, cfg).execute(
            spark.createDataFrame(rows, REQUEST_SCHEMA), "judge"
        )
        assert summary.ok == 3
        for row in calls(tables).values():
            first = json.loads(row["logprobs"])[0]
            assert len(first["top_logprobs"]) == 5
            assert row["model"] == "standin-trainee"
    with StandinServer(StandinOptions(no_logprobs=True), announce=False) as server:
        cfg = make_cfg(server.base_url)
        rows = [
            request_row(
                cfg,
                "judge",
                "trainee",
                [{"role": "user", "content": "Sky is green?"}],
                max_tokens=1,
                logprobs=True,
                top_logprobs=5,
            )
        ]
        summary = executor(spark, tables, cfg).execute(
            spark.createDataFrame(rows, REQUEST_SCHEMA), "judge"
        )
        assert summary.errors == {"no_logprobs": 1}
        bad = [r for r in calls(tables).values() if r["status"] == "failed"]
        assert server.base_url in bad[0]["error"] and "logprobs" in bad[0]["error"]


def _with_run(cfg, **run):
    return cfg.model_copy(update={"run": cfg.run.model_copy(update=run)})


def test_budget_is_checked_before_sending_and_holds_across_reruns(spark, tables):
    """Each request's estimate (prompt chars / 3 + max_tokens) must fit in what its task's
    allowance has left: the ledger never records more than the limit, and a rerun (a new
    run id, as a scheduler retry gets) is held against what this output already spent."""
    with StandinServer(StandinOptions(), announce=False) as server:
        cfg = make_cfg(
            server.base_url,
            wave_size=5,
            synthesizer={"api_key": "sk-very-secret-key", "max_tokens": 32},
        )
        cfg = _with_run(cfg, max_tokens=500)
        reqs = requests_df(spark, cfg, 60)  # ~1,200 tokens in all
        with pytest.raises(BudgetExceeded, match=r"run.max_tokens=500.*not sent"):
            executor(spark, tables, cfg).execute(reqs, "test")
        sent = server.stats()["requests_total"]
        assert 0 < sent < 60
        rows = tables.read("llm_calls").collect()
        assert len(rows) == sent
        assert sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows) <= 500
        # scheduler retries: same output, new run ids, no fresh budget; each may use only
        # what the earlier ones left, until one can send nothing
        for attempt in range(2, 8):
            before = server.stats()["requests_total"]
            with pytest.raises(BudgetExceeded, match="run.max_tokens=500"):
                executor(spark, tables, cfg, run_id=f"run-{attempt}").execute(reqs, "test")
            spent = (
                tables.read("llm_calls")
                .agg(F.sum(F.col("prompt_tokens") + F.col("completion_tokens")))
                .first()[0]
            )
            assert spent <= 500
            if server.stats()["requests_total"] == before:
                break
        else:
            pytest.fail("reruns kept sending requests past the budget")
        sent = server.stats()["requests_total"]
        assert sent < 60
        # per invocation, when configured: the rerun gets its own 500 tokens
        again = _with_run(cfg, budget_scope="invocation")
        with pytest.raises(BudgetExceeded):
            executor(spark, tables, again, run_id="run-9").execute(reqs, "test")
        more = server.stats()["requests_total"] - sent
        assert more > 0
        run3 = tables.read("llm_calls").filter(F.col("run_id") == "run-9").collect()
        assert sum(r["prompt_tokens"] + r["completion_tokens"] for r in run3) <= 500
        dump = " ".join(
            json.dumps(r.asDict(), default=str) for r in tables.read("llm_calls").collect()
        )
        assert "sk-very-secret-key" not in dump
        assert not any("sk-very-secret-key" in v for _, v in spark.sparkContext.getConf().getAll())


def test_max_cost_without_prices_is_a_config_error():
    with pytest.raises(ConfigError, match=r"run.max_cost.*price_prompt_per_1m"):
        build_config({"run": {"max_cost": 1.0}}, env=False)


def test_missing_endpoint_is_a_config_error_naming_the_key(spark, tables):
    cfg = make_cfg(None)
    with pytest.raises(ConfigError, match=r"llm\.synthesizer\.base_url.*SYNTHESIZER_BASE_URL"):
        executor(spark, tables, cfg).execute(requests_df(spark, cfg, 1), "test")


@pytest.mark.parametrize("cap", [1, 3])
def test_max_concurrency_holds_at_the_endpoint_whatever_the_slots(spark, tables, cap):
    """2 task slots and two waves in flight: the endpoint never sees more than the cap,
    including a cap below the slots (then fewer tasks run, one wave at a time)."""
    with StandinServer(StandinOptions(latency_ms=40), announce=False) as server:
        cfg = make_cfg(server.base_url, wave_seconds=1.0, synthesizer={"max_concurrency": cap})
        summary = executor(spark, tables, cfg).execute(requests_df(spark, cfg, 120), "test")
        assert summary.ok == 120
        stats = server.stats()
    assert stats["requests_total"] == 120
    assert 1 <= stats["max_in_flight"] <= cap


def test_rpm_holds_at_the_endpoint_in_every_window(spark, tables):
    """Requests in any window stay within rpm's share of it plus one per task: buckets
    start empty and hold one request, also across the tasks of later waves."""
    rpm = 120
    with StandinServer(StandinOptions(), announce=False) as server:
        cfg = make_cfg(server.base_url, wave_seconds=2.0, synthesizer={"rpm": rpm})
        summary = executor(spark, tables, cfg).execute(requests_df(spark, cfg, 40), "test")
        stats = server.stats()
    assert summary.ok == 40
    slots = spark.sparkContext.defaultParallelism
    assert stats["busiest_10s"] <= rpm * 10 / 60 + slots


def test_a_request_that_never_succeeds_is_given_up_after_its_attempts(spark, tables):
    """Attempts add up over runs; at llm.give_up_after the request is given up with its
    last error and no later run pays for it, unless given-up requests are retried."""
    with StandinServer(StandinOptions(fail_first=1000, faults=("500",)), announce=False) as server:
        cfg = make_cfg(server.base_url, max_retries=1, give_up_after=4)
        reqs = requests_df(spark, cfg, 2)
        executor(spark, tables, cfg, run_id="run-1").execute(reqs, "test")
        assert {r["status"] for r in calls(tables).values()} == {"failed"}
        executor(spark, tables, cfg, run_id="run-2").execute(reqs, "test")
        rows = calls(tables).values()
        assert {(r["status"], r["attempts"]) for r in rows} == {("gave_up", 4)}
        assert all("500" in r["error"] or "Internal" in r["error"] for r in rows)
        sent = server.stats()["requests_total"]
        assert executor(spark, tables, cfg, run_id="run-3").execute(reqs, "test").sent == 0
        assert server.stats()["requests_total"] == sent == 8
        retry = make_cfg(server.base_url, max_retries=1, give_up_after=4, retry_given_up=True)
        again = executor(spark, tables, retry, run_id="run-4").execute(reqs, "test")
        assert again.sent == 2 and server.stats()["requests_total"] == 12
        assert {(r["status"], r["attempts"]) for r in calls(tables).values()} == {("gave_up", 6)}
