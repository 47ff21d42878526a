"""Structured outputs of every generation step (§7.2 "returns" column).

The class names are the json_schema names the endpoint sees (and the stand-in's handlers
key on), so rename with care.
"""

from __future__ import annotations

from pydantic import BaseModel


class AtomicQA(BaseModel):
    question: str
    answer: str


class AggregatedText(BaseModel):
    text: str


class AggregatedQuestion(BaseModel):
    question: str


class MultiHopQA(BaseModel):
    question: str
    answer: str
    relations_used: list[int]


class CotPlan(BaseModel):
    question: str
    reasoning_path: str


class CotAnswer(BaseModel):
    answer: str


class Options(BaseModel):
    A: str
    B: str
    C: str
    D: str


class ChoiceItem(BaseModel):
    question: str
    options: Options
    answer: str


class ChoiceItems(BaseModel):
    items: list[ChoiceItem]


class MultiAnswerItem(BaseModel):
    question: str
    options: Options
    answers: list[str]


class MultiAnswerItems(BaseModel):
    items: list[MultiAnswerItem]


class BlankItem(BaseModel):
    question: str
    answers: list[str]


class BlankItems(BaseModel):
    items: list[BlankItem]


class TrueFalseItem(BaseModel):
    statement: str
    answer: bool


class TrueFalseItems(BaseModel):
    items: list[TrueFalseItem]


class QACheck(BaseModel):
    supported: bool
    reason: str
