"""Strict schemas and the tolerant parser (method.md §1.1)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from graphgen_spark.llm.schemas import MoreNeeded, TextAnswer
from graphgen_spark.llm.structured import (
    ParseError,
    load_model,
    model_path,
    parse_output,
    response_format,
)


class Item(BaseModel):
    name: str
    score: int


class Items(BaseModel):
    items: list[Item]


def test_strict_schema_requires_everything_and_forbids_extras():
    fmt = response_format(Items)
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema["required"] == ["items"] and schema["additionalProperties"] is False
    item = schema["$defs"]["Item"]
    assert item["required"] == ["name", "score"] and item["additionalProperties"] is False


@pytest.mark.parametrize(
    "text",
    [
        '{"items": [{"name": "bee", "score": 1}]}',
        '<think>let me think {"a": 1}</think>```json\n{"items": [{"name": "bee", "score": 1}]}\n```',
        'Sure! Here it is: {"items": [{"name": "bee", "score": 1},]} Hope that helps.',
        '{"items": [{"name": "bee", "score": 1}]}\n\nExtra words',
    ],
)
def test_tolerant_parser_recovers_json(text):
    assert parse_output(text, Items) == Items(items=[Item(name="bee", score=1)])


def test_raw_newlines_inside_strings_are_repaired():
    assert parse_output('{"text": "line one\nline two"}', TextAnswer).text == "line one\nline two"


def test_plain_text_for_single_field_models():
    assert parse_output("Answer: The queen lays eggs.", TextAnswer).text == "The queen lays eggs."
    assert parse_output("Yes.", MoreNeeded).more is True
    assert parse_output("否", MoreNeeded).more is False


@pytest.mark.parametrize(
    "text", ["", "   ", '{"items": [{"name": "bee"}]}', '{"text": "cut', "maybe"]
)
def test_invalid_outputs_raise_with_reasons(text):
    model = TextAnswer if "text" in text else (MoreNeeded if text == "maybe" else Items)
    with pytest.raises(ParseError):
        parse_output(text, model)


def test_model_paths_round_trip():
    assert load_model(model_path(TextAnswer)) is TextAnswer


def test_lone_surrogates_in_a_reply_become_replacement_characters():
    class Named(BaseModel):
        name: str

    for reply in ('{"name": "a \\ud83d b"}', '{"name": "a \ud83d b"}'):
        got = parse_output(reply, Named)
        assert got.name == "a \ufffd b"
        got.model_dump_json().encode("utf-8")  # stores as UTF-8
