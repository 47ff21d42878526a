"""Config loading: YAML files, env overrides, and errors that name the key and allowed values."""

from __future__ import annotations

import pytest

from graphgen_spark.config import CONF_DIR, ConfigError, build_config, load_config


@pytest.mark.parametrize("name", ["local.yaml", "cluster.yaml", "databricks.yaml"])
def test_shipped_configs_are_valid(name):
    cfg = load_config(CONF_DIR / name, env=False)
    assert cfg.chunk.size == 1024 and cfg.chunk.overlap == 100


def test_env_overrides_yaml_and_keys_stay_secret(monkeypatch):
    monkeypatch.setenv("SYNTHESIZER_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("SYNTHESIZER_API_KEY", "sk-top-secret")
    monkeypatch.setenv("TRAINEE_MODEL", "my-trainee")
    cfg = load_config(CONF_DIR / "local.yaml")
    assert cfg.llm.synthesizer.base_url == "http://127.0.0.1:9/v1"
    assert cfg.llm.trainee.model == "my-trainee"
    assert cfg.llm.synthesizer.api_key.get_secret_value() == "sk-top-secret"
    assert "sk-top-secret" not in repr(cfg) and "sk-top-secret" not in cfg.model_dump_json()
    # the key is not part of the config hash (rotating a key does not invalidate results)
    monkeypatch.setenv("SYNTHESIZER_API_KEY", "sk-other")
    assert load_config(CONF_DIR / "local.yaml").config_hash() == cfg.config_hash()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"chunk": {"sise": 3}},
            r"chunk\.sise: unknown key; allowed keys here: overlap, size, tokenizer",
        ),
        (
            {"spark": {"jars": "maybe"}},
            r"spark\.jars: 'maybe' is not allowed; allowed values: 'cached', 'packages' or 'present'",
        ),
        ({"chunk": {"overlap": 1024}}, r"chunk\.overlap \(1024\) must be < chunk\.size \(1024\)"),
        ({"chunk": {"size": 0}}, r"chunk\.size: Input should be greater than or equal to 1"),
        (
            {"language": {"force": "fr"}},
            r"language\.force: 'fr' is not allowed; allowed values: 'en' or 'zh'",
        ),
        ({"llm": {"synthesizer": {"temprature": 0}}}, r"llm\.synthesizer\.temprature: unknown key"),
        ({"nonsense": {}}, r"nonsense: unknown key; allowed keys here: chunk, .*llm, merge"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(data, expected):
    with pytest.raises(ConfigError, match=expected):
        build_config(data, env=False)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("chunk: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
