"""Knowledge-graph extraction and gleaning prompts (method.md §3.1–3.3)."""

from __future__ import annotations

from graphgen_spark.prompts import fenced

PROMPT_VERSION = "extract-v1"

_SYSTEM = {
    "en": (
        "You build knowledge graphs from documents. You report only what the given text "
        "states, never outside knowledge."
    ),
    "zh": "你负责从文档中构建知识图谱。只报告给定文本中明确陈述的内容，不引入任何外部知识。",
}

_EXTRACT = {
    "en": (
        "Read the text below and list its entities and the relations between them.\n"
        "Entities: for each, give its name exactly as written in the text, a type chosen from "
        "[{types}], and a description that summarises, in full sentences, what the text says "
        "about its attributes and activities. The description must stand on its own: name "
        "things instead of using pronouns that point outside it, and add nothing the text "
        "does not say.\n"
        "Relations: for each pair of entities from your list that the text clearly relates, "
        "give source and target (names exactly as in your entity list) and a description of "
        "how and why they are related, as the text states it.\n"
        "Write names and descriptions in English, the language of the text.\n\n{text}"
    ),
    "zh": (
        "阅读下面的文本，列出其中的实体以及实体之间的关系。\n"
        "实体：给出文本中原样书写的名称，从 [{types}] 中选择一个类型，并用完整的句子描述文本中"
        "关于该实体属性和活动的内容。描述必须独立成立：直接写出所指对象，不要使用指向描述之外的"
        "代词，也不要添加文本中没有的信息。\n"
        "关系：对文本明确关联的每一对实体（必须来自你的实体列表），给出 source 和 target（名称"
        "与实体列表一致），并按照文本的说法描述它们如何以及为何相关。\n"
        "名称和描述请使用中文，即文本的语言。\n\n{text}"
    ),
}

_GLEAN_CHECK = {
    "en": (
        "Look at the text again. Are there entities or relations that your answers so far "
        "have missed? Set more to true if so, false if everything is covered."
    ),
    "zh": "请再次检查文本。到目前为止的回答是否遗漏了实体或关系？如有遗漏，将 more 设为 true，否则设为 false。",
}

_GLEAN = {
    "en": (
        "List only the entities and relations from the same text that your earlier answers "
        "missed, in the same format and following the same rules. Do not repeat anything "
        "already listed."
    ),
    "zh": "请只列出同一文本中之前回答遗漏的实体和关系，格式和规则与之前相同，不要重复已经列出的内容。",
}


def extract_messages(text: str, language: str, types: list[str]) -> list[dict[str, str]]:
    lang = "zh" if language == "zh" else "en"
    sep = "、" if lang == "zh" else ", "
    user = _EXTRACT[lang].format(types=sep.join(types), text=fenced(text))
    return [{"role": "system", "content": _SYSTEM[lang]}, {"role": "user", "content": user}]


def glean_check_message(language: str) -> dict[str, str]:
    return {"role": "user", "content": _GLEAN_CHECK["zh" if language == "zh" else "en"]}


def glean_message(language: str) -> dict[str, str]:
    return {"role": "user", "content": _GLEAN["zh" if language == "zh" else "en"]}
