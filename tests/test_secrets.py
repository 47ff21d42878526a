"""Keys stay out of what is stored and printed: the scrubbing helpers, real logging, Spark's
own redaction (through the JVM), and a real pipeline run against a gateway that echoes
the Authorization header."""

from __future__ import annotations

import io
import json
import logging

import pytest

from graphgen_spark.config import build_config
from graphgen_spark.ids import h
from graphgen_spark.pipeline import run_pipeline
from graphgen_spark.secrets import ScrubFilter, redact_url, remember, scrub
from graphgen_spark.session import SPARK_DEFAULT_REDACTION, redaction_regex
from graphgen_spark.standin import StandinOptions, StandinServer
from graphgen_spark.tables import SCHEMAS, Tables

KEY = "sk-proj-8d41c0ffee5e7a2b"


def test_scrub_removes_key_values_and_credential_shapes() -> None:
    text = (
        f'401 {{"error": "bad key {KEY}", "headers": {{"Authorization": "Bearer tok-123abc"}}, '
        '"api-key": "azure-55aa", "url": "https://bob:pw-77@gw.example/v1"}'
    )
    clean = scrub(text, [KEY])
    assert clean is not None
    for secret in (KEY, "tok-123abc", "azure-55aa", "pw-77", "bob"):
        assert secret not in clean
    assert '"Bearer ***"' in clean and "https://***@gw.example/v1" in clean
    # ordinary words and counters survive; placeholder keys are not "secrets"
    plain = "run.max_tokens=50 reached: 12 prompt_tokens, key EMPTY, 3 of 3 failed"
    assert scrub(plain, ["EMPTY", "x"]) == plain


def test_remembered_keys_are_scrubbed_without_being_passed() -> None:
    remember("sk-remembered-0042aa")
    assert scrub("echo: sk-remembered-0042aa!") == "echo: ***!"


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("https://api.example.com/v1", "https://api.example.com/v1"),
        ("https://user:tok3n@gw.example:8443/v1", "https://***@gw.example:8443/v1"),
        (
            "https://x.openai.azure.com/openai?api-version=2024-06-01&api-key=abc123",
            "https://x.openai.azure.com/openai?api-version=2024-06-01&api-key=***",
        ),
        ("http://h/v1?key=k1&token=t2&model=m", "http://h/v1?key=***&token=***&model=m"),
    ],
)
def test_redact_url(url: str, safe: str) -> None:
    assert redact_url(url) == safe


def test_log_lines_are_scrubbed_by_the_filter() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ScrubFilter())
    logger = logging.getLogger("graphgen_spark.test_secrets")
    logger.addHandler(handler)
    remember(KEY)
    try:
        logger.warning("endpoint said %s", f"Authorization: Bearer {KEY}")
        try:
            raise RuntimeError(f"gateway echoed {KEY}")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert KEY not in out and "Bearer ***" in out and "gateway echoed ***" in out


def _spark_redact(spark, conf, pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Spark's own ``Utils.redact`` (what the UI's environment page and event logs use)."""
    jvm = spark.sparkContext._jvm
    scala = jvm.scala.jdk.javaapi.CollectionConverters
    items = jvm.java.util.ArrayList()
    for k, v in pairs:
        items.add(jvm.scala.Tuple2(k, v))
    redacted = jvm.org.apache.spark.util.Utils.redact(conf, scala.asScala(items).toSeq())
    return {t._1(): t._2() for t in scala.asJava(redacted)}


def test_spark_redaction_covers_the_project_key_names(spark) -> None:
    assert spark.conf.get("spark.redaction.regex") == redaction_regex()
    pairs = [
        ("spark.executorEnv.SYNTHESIZER_API_KEY", KEY),
        ("spark.yarn.appMasterEnv.TRAINEE_API-KEY", KEY),
        ("spark.kubernetes.driverEnv.GATEWAY_CREDENTIALS", KEY),
        ("spark.executorEnv.AWS_ACCESS_KEY_ID", KEY),
        ("spark.app.name", "graphgen"),
    ]
    ours = _spark_redact(spark, spark.sparkContext._jsc.sc().conf(), pairs)
    assert KEY not in ours.values() and ours["spark.app.name"] == "graphgen"
    # Spark's default regex alone leaves the API key on the environment page
    default = spark.sparkContext._jvm.org.apache.spark.SparkConf(False)
    default.set("spark.redaction.regex", SPARK_DEFAULT_REDACTION)
    assert _spark_redact(spark, default, pairs)["spark.executorEnv.SYNTHESIZER_API_KEY"] == KEY


def test_a_users_redaction_regex_is_kept() -> None:
    regex = redaction_regex("(?i)my[.]vault")
    assert "my[.]vault" in regex and "api[_.-]?key" in regex and "access[.]?key" in regex


def test_a_pipeline_against_an_echoing_gateway_stores_no_key(spark, tmp_path) -> None:
    """Every call gets a final 401 whose body echoes the key: nothing in any table, nor
    the run's error, carries it."""
    tables = Tables(spark, tmp_path / "out")
    text = "Ada Lovelace wrote the first program for the Analytical Engine."
    chunk = {
        "chunk_id": "c1",
        "doc_id": "d1",
        "index": 0,
        "start_token": 0,
        "end_token": 12,
        "n_tokens": 12,
        "text": text,
        "content_hash": h(text),
        "language": "en",
    }
    tables.merge("chunks", spark.createDataFrame([chunk], SCHEMAS["chunks"]))
    opts = StandinOptions(fail_first=50, faults=("401_echo",))
    with StandinServer(opts, announce=False) as server:
        cfg = build_config(
            {
                "llm": {
                    "max_retries": 0,
                    "backoff_min_s": 0.01,
                    "backoff_max_s": 0.05,
                    "synthesizer": {
                        "base_url": server.base_url,
                        "model": "standin",
                        "api_key": KEY,
                    },
                },
                "extract": {
                    "max_attempts": 1,
                    "max_failed_fraction": 0.0,
                    "max_gleaning_rounds": 0,
                },
            },
            env=False,
        )
        with pytest.raises(RuntimeError) as err:
            run_pipeline(cfg, None, tmp_path / "out", stages=["extract"], spark=spark)
        assert server.stats()["by_status"] == {"401": server.stats()["requests_total"]}
    calls = [r.asDict() for r in tables.read("llm_calls").collect()]
    assert calls and all(r["error_kind"] == "http_401" for r in calls)
    assert all("Bearer ***" in r["error"] for r in calls)
    for name in ("llm_calls", "extractions", "runs"):
        dump = json.dumps(
            [r.asDict(recursive=True) for r in tables.read(name).collect()], default=str
        )
        assert KEY not in dump, name
    assert KEY not in str(err.value)


def test_cli_errors_print_no_key(monkeypatch, capsys, tmp_path) -> None:
    """Whatever the CLI prints about a failure has the environment's key scrubbed."""
    from graphgen_spark.cli import main

    monkeypatch.setenv("SYNTHESIZER_API_KEY", "sk-env-held-77e1a9")
    missing = tmp_path / "sk-env-held-77e1a9.yaml"  # an error that quotes the key
    assert main(["run", "--config", str(missing), "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "config file not found" in err and "***.yaml" in err
    assert "sk-env-held-77e1a9" not in err
