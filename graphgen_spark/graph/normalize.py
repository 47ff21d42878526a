"""Entity names and descriptions as the merge sees them (method.md §3.4).

The **display** form is cleaned text (HTML entities decoded, control, zero-width and bidi
characters removed, matching surrounding quotes stripped, whitespace collapsed); the **key** is
``casefold(NFKC(display))`` and ``entity_id = h(key)``. Unlike the reference, quotes and
letter case never split one entity into two nodes.
"""

from __future__ import annotations

import html
import re
import unicodedata

from graphgen_spark.text import strip_invisible

_CONTROL = re.compile(r"[\u0000-\u001f\u007f-\u009f]")
_SPACE_CONTROL = re.compile(r"[\t\n\r\v\f]")
_SPACE = re.compile(r"\s+")
_QUOTES = [
    ('"', '"'),
    ("'", "'"),
    ("`", "`"),
    ("“", "”"),
    ("‘", "’"),
    ("「", "」"),
    ("『", "』"),
    ("＂", "＂"),
    ("＇", "＇"),  # full-width forms: NFKC would turn them into ASCII quotes in keys
]


def clean_text(text: str | None) -> str:
    """Descriptions: unescape, drop control and invisible characters, collapse whitespace."""
    if not text:
        return ""
    text = strip_invisible(html.unescape(text))
    text = _CONTROL.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


def display_name(name: str | None) -> str:
    """The cleaned name as shown to people and to the LLM."""
    if not name:
        return ""
    # line breaks and tabs inside a name separate words; other control characters are deleted
    text = strip_invisible(html.unescape(name))
    text = _CONTROL.sub("", _SPACE_CONTROL.sub(" ", text)).strip()
    changed = True
    while changed and len(text) >= 2:
        changed = False
        for left, right in _QUOTES:
            if text.startswith(left) and text.endswith(right) and len(text) >= 2:
                text = text[len(left) : len(text) - len(right)].strip()
                changed = True
                break
    return _SPACE.sub(" ", text).strip()


def name_key(display: str) -> str:
    """The merge key of a display name: NFKC, then casefold (invisible characters dropped)."""
    return unicodedata.normalize("NFKC", strip_invisible(display)).casefold()


def normalise_type(raw: str | None, allowed: tuple[str, ...], strict: bool) -> str:
    """Trimmed lower-case type; unlisted types become ``other`` when strict."""
    t = clean_text(raw).lower()
    if (strict and t not in allowed) or t == "unknown":  # UNKNOWN is reserved for placeholders
        return "other"
    return t or "other"
