"""LLM requests as rows: what a stage builds, and the id that makes the cache work.

``request_id = h(role, model, messages, params, response_model)`` over canonical JSON, so
the same request is recognised in any later run and never paid for twice.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from pyspark.sql import types as T

from graphgen_spark.config import Config
from graphgen_spark.ids import h
from graphgen_spark.llm.structured import model_path, response_format

REQUEST_SCHEMA = T.StructType(
    [
        T.StructField(name, T.StringType(), True)
        for name in ("request_id", "stage", "role", "model", "messages", "params", "response_model")
    ]
)


def canonical(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def request_row(
    cfg: Config,
    stage: str,
    role: str,
    messages: list[dict[str, str]],
    response_model: type[BaseModel] | None = None,
    **params: Any,
) -> dict[str, str | None]:
    """One request as a row of REQUEST_SCHEMA.

    Sampling parameters default to the role's config and are part of the id, so changing
    e.g. the temperature makes new requests instead of reusing old answers.
    """
    ep = getattr(cfg.llm, role)
    full: dict[str, Any] = {
        "temperature": ep.temperature,
        "top_p": ep.top_p,
        "max_tokens": ep.max_tokens,
        **params,
    }
    model_ref = None
    if response_model is not None:
        full["response_format"] = response_format(response_model)
        model_ref = model_path(response_model)
    msgs = canonical(messages)
    prm = canonical(full)
    model = ep.model or ""
    return {
        "request_id": h(role, model, msgs, prm, model_ref),
        "stage": stage,
        "role": role,
        "model": model,
        "messages": msgs,
        "params": prm,
        "response_model": model_ref,
    }
