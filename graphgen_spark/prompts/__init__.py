"""Prompt templates, our own wording, one module per task, English and Chinese.

Source material is always fenced between ``TEXT_BEGIN`` and ``TEXT_END`` lines so that
instructions and data never mix (and the stand-in can find the data). A template is part
of the request messages, so rewording it makes new request ids, never a stale cached answer.
"""

TEXT_BEGIN = "-----BEGIN TEXT-----"
TEXT_END = "-----END TEXT-----"


def fenced(text: str) -> str:
    return f"{TEXT_BEGIN}\n{text}\n{TEXT_END}"
