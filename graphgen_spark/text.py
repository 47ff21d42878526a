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


# Zero-width (U+200B-U+200D, U+2060, U+FEFF) and bidirectional controls (U+200E/F, U+061C,
# U+202A-U+202E, U+2066-U+2069): invisible, so a model's reply can split one name into two
# keys ("Marie\u200bCurie") or reorder what a reader sees; names and descriptions drop them.
_INVISIBLE = re.compile("[\u200b-\u200f\u2060\ufeff\u061c\u202a-\u202e\u2066-\u2069]")


def strip_invisible(s: str) -> str:
    """``s`` without zero-width and bidi control characters."""
    return _INVISIBLE.sub("", s)
