"""Strings every layer can store: Arrow and Delta take only valid UTF-8.

A lone UTF-16 surrogate (``"\\ud83d"``) is valid in a JSON escape, so an input file or an
endpoint's reply can carry one into a Python string; Arrow then refuses the whole column, which
would fail a whole batch of rows (and, on the LLM path, re-bill it on every rerun). Such code
points become U+FFFD, the replacement character, wherever text enters the program.
"""

from __future__ import annotations

import re
from typing import Any

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def utf8_safe(s: str) -> str:
    """``s`` with every lone surrogate replaced (Python joins valid pairs when decoding)."""
    return _LONE_SURROGATE.sub(REPLACEMENT, s)


def utf8_safe_tree(value: Any) -> Any:
    """The same for every string (and dict key) inside decoded JSON."""
    if isinstance(value, str):
        return utf8_safe(value)
    if isinstance(value, list):
        return [utf8_safe_tree(v) for v in value]
    if isinstance(value, dict):
        return {utf8_safe_tree(k): utf8_safe_tree(v) for k, v in value.items()}
    return value
