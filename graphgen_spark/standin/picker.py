"""Deterministic choices keyed by a prompt.

Every "random-looking" decision of the stand-in (which word, which number, yes
or no) is a SHA-256 of (prompt, path), so the same request always gets the same
answer and different prompts get different answers — what tests need to tell a
cache hit from a fresh call without a model.
"""

from __future__ import annotations

import hashlib
import re

_WORD_RE = re.compile(r"\w+")
_FALLBACK_WORDS = ("standin",)


class Picker:
    """Hash-derived choices for one prompt; each ``path`` names an independent draw."""

    __slots__ = ("_key", "words")

    def __init__(self, text: str) -> None:
        self._key = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
        # Distinct words in order of appearance keep values varied but prompt-specific.
        self.words: tuple[str, ...] = (
            tuple(dict.fromkeys(_WORD_RE.findall(text))) or _FALLBACK_WORDS
        )

    def int(self, path: str) -> int:
        """A 64-bit integer that depends only on (prompt, path)."""
        digest = hashlib.sha256(self._key + path.encode("utf-8", "surrogatepass")).digest()
        return int.from_bytes(digest[:8], "big")

    def unit(self, path: str) -> float:
        """A float in [0, 1) that depends only on (prompt, path)."""
        return self.int(path) / 2.0**64

    def word(self, path: str) -> str:
        return self.words[self.int(path) % len(self.words)]

    def phrase(self, path: str, count: int) -> str:
        """``count`` prompt words joined by spaces (each an independent draw)."""
        return " ".join(self.word(f"{path}#{i}") for i in range(count))
