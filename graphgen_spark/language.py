"""The one language rule used everywhere (method.md §2.3)."""

from __future__ import annotations


def _is_han(cp: int) -> bool:
    return 0x3400 <= cp <= 0x4DBF or 0x4E00 <= cp <= 0x9FFF or 0xF900 <= cp <= 0xFAFF


def han_share(text: str) -> float:
    """Han characters / (Han + ASCII letters), whitespace ignored; 0.0 when neither occurs."""
    han = latin = 0
    for ch in text:
        cp = ord(ch)
        if _is_han(cp):
            han += 1
        elif ch.isascii() and ch.isalpha():
            latin += 1
    total = han + latin
    return han / total if total else 0.0


def main_language(text: str | None) -> str:
    """``zh`` when Han characters are at least half of Han + ASCII letters, else ``en``.

    Unlike the reference (any CJK character flips to Chinese), one quoted Chinese word does
    not change an English chunk's language.
    """
    return "zh" if text and han_share(text) >= 0.5 else "en"
