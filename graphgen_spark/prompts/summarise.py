"""Description summarisation prompt (method.md §4.4): only for texts over the threshold."""

from __future__ import annotations

from graphgen_spark.prompts import fenced

_PROMPT = {
    "en": (
        "Below are descriptions of the {what} {names}{type_part}, collected from different "
        "passages. Write one coherent third-person description that names it, keeps every "
        "fact that does not contradict another, states contradictions as alternatives, and "
        "adds nothing that the descriptions do not say. Aim for about {target} tokens. "
        "Write in English.\n\n{text}"
    ),
    "zh": (
        "以下是从不同段落收集的关于{what}{names}{type_part}的描述。请写一段连贯的第三人称描述：写明其名称，"
        "保留所有互不矛盾的事实，把相互矛盾的说法作为不同说法并列写出，不添加描述中没有的内容。"
        "篇幅约 {target} 个词元。请使用中文。\n\n{text}"
    ),
}
_WHAT = {
    "en": {"entity": "entity", "relation": "relation between"},
    "zh": {"entity": "实体", "relation": "以下两者之间的关系："},
}


def summarise_messages(
    kind: str,
    names: list[str],
    etype: str | None,
    descriptions: list[str],
    language: str,
    target: int,
) -> list[dict[str, str]]:
    lang = "zh" if language == "zh" else "en"
    joined_names = (" 与 " if lang == "zh" else " and ").join(
        f"“{n}”" if lang == "zh" else f'"{n}"' for n in names
    )
    type_part = ""
    if etype and kind == "entity":
        type_part = f"（类型：{etype}）" if lang == "zh" else f" (type: {etype})"
    body = "\n".join(f"- {d}" for d in descriptions)
    prompt = _PROMPT[lang].format(
        what=_WHAT[lang][kind],
        names=joined_names,
        type_part=type_part,
        target=target,
        text=fenced(body),
    )
    return [{"role": "user", "content": prompt}]
