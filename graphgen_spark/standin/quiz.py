"""Stand-in rules for quiz statements (schema name ``quizanswer``): not a model.

Paraphrases and negations are built from the fenced statement by fixed rewrites, so they
are distinct, in the statement's language, and deterministic.
"""

from __future__ import annotations

import re
from typing import Any

from graphgen_spark.language import main_language
from graphgen_spark.prompts import TEXT_BEGIN, TEXT_END
from graphgen_spark.standin.rules import ChatRequest, register_handler

_EN_PARA = ["In other words, {s}", "Put differently, {s}", "That is to say, {s}", "Restated, {s}"]
_EN_NEG = [
    "It is not the case that {s}",
    "It is false that {s}",
    "Contrary to fact, {s}",
    "Untrue: {s}",
]
_ZH_PARA = ["换句话说，{s}", "也就是说，{s}", "换言之，{s}", "即：{s}"]
_ZH_NEG = ["并非{s}", "事实并不是：{s}", "错误的说法是：{s}", "不对的是：{s}"]


def _statement(req: ChatRequest) -> str:
    text = req.prompt
    if TEXT_BEGIN in text and TEXT_END in text:
        text = text.split(TEXT_BEGIN, 1)[1].split(TEXT_END, 1)[0]
    return text.strip()


@register_handler("quizanswer")
def quiz_answer(schema: dict[str, Any], req: ChatRequest) -> Any:
    s = _statement(req)
    m = re.search(r"(\d+) (?:paraphrase|条改写)", req.prompt)
    n_para = int(m.group(1)) if m else 1
    m = re.search(r"(\d+) (?:negation|条否定)", req.prompt)
    n_neg = int(m.group(1)) if m else 2
    zh = main_language(s) == "zh"
    para, neg = (_ZH_PARA, _ZH_NEG) if zh else (_EN_PARA, _EN_NEG)
    lower = s if zh else s[:1].lower() + s[1:]
    return {
        "paraphrases": [
            para[i % len(para)].format(s=lower) + ("" if i < len(para) else f" ({i})")
            for i in range(n_para)
        ],
        "negations": [
            neg[i % len(neg)].format(s=lower) + ("" if i < len(neg) else f" ({i})")
            for i in range(n_neg)
        ],
    }
