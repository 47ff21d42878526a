"""Token counting and exact character spans for token windows (method.md §2.2).

Ranks come from the package's data folder (see :mod:`graphgen_spark.assets`); nothing is
downloaded at run time. One encoding is cached per Python worker.
"""

from __future__ import annotations

import base64
import functools
from bisect import bisect_right
from itertools import accumulate

import tiktoken

from graphgen_spark.assets import cl100k_path

SUPPORTED = ("cl100k_base",)
# Pre-tokenisation pattern and special tokens of cl100k_base, as tiktoken_ext defines them.
_CL100K_PAT = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_CL100K_SPECIAL = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}


@functools.lru_cache(maxsize=4)
def get_encoding(name: str = "cl100k_base") -> tiktoken.Encoding:
    if name not in SUPPORTED:
        raise ValueError(f"tokenizer {name!r} is not available; allowed: {', '.join(SUPPORTED)}")
    ranks: dict[bytes, int] = {}
    with open(cl100k_path(), "rb") as fh:
        for line in fh:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    return tiktoken.Encoding(
        name=name, pat_str=_CL100K_PAT, mergeable_ranks=ranks, special_tokens=_CL100K_SPECIAL
    )


def count_tokens(text: str, name: str = "cl100k_base") -> int:
    return len(get_encoding(name).encode_ordinary(text or ""))


class TokenSpans:
    """Maps token index ranges of one text to exact character spans.

    A token may end inside a multi-byte character; spans are widened to whole characters
    so no chunk holds a replacement character (the reference decodes token slices and
    produces U+FFFD at Chinese chunk edges).
    """

    def __init__(self, text: str, name: str = "cl100k_base") -> None:
        enc = get_encoding(name)
        self.text = text
        self.ids = enc.encode_ordinary(text)
        token_bytes = [len(enc.decode_single_token_bytes(t)) for t in self.ids]
        self._tok_byte_start = [0, *accumulate(token_bytes)]
        # byte offset at which each character starts, plus the end
        self._char_byte_start = [0, *accumulate(len(c.encode("utf-8")) for c in text)]

    def __len__(self) -> int:
        return len(self.ids)

    def char_span(self, start: int, end: int) -> tuple[int, int]:
        """Character range covering tokens [start, end), widened to whole characters."""
        b0 = self._tok_byte_start[start]
        b1 = self._tok_byte_start[end]
        c0 = bisect_right(self._char_byte_start, b0) - 1
        c1 = bisect_right(self._char_byte_start, b1 - 1) if b1 > b0 else c0
        return c0, min(c1, len(self.text))

    def slice(self, start: int, end: int) -> str:
        c0, c1 = self.char_span(start, end)
        return self.text[c0:c1]
