"""Quiz prompts (method.md §5.1): paraphrases (true) and minimal negations (false)."""

from __future__ import annotations

from graphgen_spark.prompts import fenced

_QUIZ = {
    "en": (
        "Below is a statement of fact. Write {n_para} paraphrase(s) and {n_neg} negation(s) of it.\n"
        "A paraphrase rewords the statement, keeping its meaning, every fact, its language and "
        "roughly its structure.\n"
        "A negation changes one key detail (an entity, a number, a date, a relation or the "
        "polarity) with a minimal edit, so that it reads fluently and plausibly but is false "
        "given the statement.\n"
        "All statements must differ from each other and from the original. Write in English.\n\n{text}"
    ),
    "zh": (
        "下面是一条事实陈述。请写出 {n_para} 条改写和 {n_neg} 条否定。\n"
        "改写：换一种说法，保持原意、全部事实、语言和大致结构不变。\n"
        "否定：以最小的改动改变一个关键信息（实体、数字、日期、关系或肯定/否定），使其读起来通顺可信，"
        "但根据原陈述是错误的。\n"
        "所有陈述之间以及与原陈述都必须不同。请使用中文。\n\n{text}"
    ),
}

_JUDGE = {
    "en": "Is the following statement correct? Answer with a single word, yes or no.\n\nStatement: {text}",
    "zh": "下面的陈述正确吗？只用一个词回答：是 或 否。\n\n陈述：{text}",
}


def quiz_messages(description: str, n: int, language: str) -> list[dict[str, str]]:
    lang = "zh" if language == "zh" else "en"
    prompt = _QUIZ[lang].format(n_para=n - 1, n_neg=n, text=fenced(description))
    return [{"role": "user", "content": prompt}]


def judge_messages(statement: str, language: str) -> list[dict[str, str]]:
    """Closed book: one statement, no source, no other statements."""
    lang = "zh" if language == "zh" else "en"
    return [{"role": "user", "content": _JUDGE[lang].format(text=statement)}]
