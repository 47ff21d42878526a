"""Word tokens, MTLD and distinct-n (method §8.2–8.3), with nothing downloaded at run time.

Tokens follow the reference: jieba for Chinese, NLTK for English, the language by the §2.3
rule. The reference calls ``nltk.word_tokenize``, which needs the downloaded ``punkt_tab``
model to split sentences first; here an *untrained* Punkt splitter (no data) feeds the same
``NLTKWordTokenizer``, so sentence-final periods still come off their words. The one
difference: untrained Punkt does not know abbreviations, so ``Dr.`` becomes ``Dr`` + ``.``
(kept as a word) where the reference keeps ``Dr.`` (dropped as non-alphanumeric).

Stop-words are NLTK's lists, shipped in ``data/`` (see the header of each file).
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from graphgen_spark.language import main_language

DATA_DIR = Path(__file__).parent / "data"
_STOPWORD_FILES = {"en": "nltk_stopwords_english.txt", "zh": "nltk_stopwords_chinese.txt"}
GRAM_SEP = "\x1f"  # joins the words of an n-gram key; never inside a word token


@functools.cache
def stopwords(lang: str) -> frozenset[str]:
    """NLTK's stop-word list for ``en`` or ``zh`` (exact strings, case-sensitive)."""
    path = DATA_DIR / _STOPWORD_FILES["zh" if lang == "zh" else "en"]
    lines = path.read_text(encoding="utf-8").splitlines()
    return frozenset(w for w in lines if w and not w.startswith("#"))


def jieba_cache_dir() -> str:
    """jieba caches its prefix dictionary (~9 MB); keep it under the system temp dir."""
    path = os.path.join(tempfile.gettempdir(), "graphgen_spark_jieba")
    os.makedirs(path, exist_ok=True)
    return path


@functools.cache
def _jieba():
    """One jieba tokenizer per Python worker, with its cache in :func:`jieba_cache_dir`.

    A private instance (not ``jieba.dt``) so the global one other code may use is untouched;
    the default dictionary ships inside the jieba package, nothing is fetched.
    """
    import jieba

    jieba.setLogLevel(logging.WARNING)
    tok = jieba.Tokenizer()
    tok.tmp_dir = jieba_cache_dir()
    return tok


@functools.cache
def _english():
    from nltk.tokenize.destructive import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    return PunktSentenceTokenizer(), NLTKWordTokenizer()


def word_tokens(text: str | None, lang: str | None = None) -> list[str]:
    """Word tokens of ``text``: jieba (``zh``) or NLTK (``en``); language by §2.3 if not given."""
    if not text:
        return []
    lang = lang or main_language(text)
    if lang == "zh":
        return _jieba().lcut(text)
    sentences, words = _english()
    return [t for s in sentences.tokenize(text) for t in words.tokenize(s)]


# -- MTLD (§8.2) -------------------------------------------------------------------------


def mtld_tokens(tokens: Iterable[str], lang: str = "en", casefold: bool = False) -> list[str]:
    """The tokens MTLD counts: stop-words dropped (exact match), then non-alphanumerics.

    With ``casefold`` tokens are casefolded first, so ``The`` also counts as a stop-word;
    without it (the default, as the reference) ``The`` is a word and ``the`` a stop-word.
    """
    if casefold:
        tokens = (t.casefold() for t in tokens)
    stop = stopwords(lang)
    return [t for t in tokens if t not in stop and t.isalnum()]


def mtld_value(tokens: Sequence[str], threshold: float = 0.72) -> float:
    """One MTLD pass: |tokens| / factors, or |tokens| when there are no factors.

    A factor is counted each time the running type-token ratio of the current segment
    falls to ``threshold`` or below (the segment then restarts); a non-empty final segment
    with ratio r adds the partial factor (1 - r) / (1 - threshold).
    """
    factors = 0.0
    types: set[str] = set()
    count = 0
    for tok in tokens:
        types.add(tok)
        count += 1
        if len(types) / count <= threshold:
            factors += 1
            types, count = set(), 0
    if count:
        factors += (1 - len(types) / count) / (1 - threshold)
    return len(tokens) / factors if factors > 0 else float(len(tokens))


def mtld(
    tokens: Sequence[str], threshold: float = 0.72, *, lang: str = "en", casefold: bool = False
) -> float:
    """MTLD of word tokens: mean of the forward and reversed passes over the kept tokens.

    ``tokens`` are raw word tokens (:func:`word_tokens`); filtering is :func:`mtld_tokens`.
    No kept token gives 0.
    """
    kept = mtld_tokens(tokens, lang, casefold)
    if not kept:
        return 0.0
    return (mtld_value(kept, threshold) + mtld_value(kept[::-1], threshold)) / 2


def text_mtld(text: str | None, threshold: float = 0.72, casefold: bool = False) -> float:
    """MTLD of a text, its language by §2.3."""
    if not text or not text.strip():
        return 0.0
    lang = main_language(text)
    return mtld(word_tokens(text, lang), threshold, lang=lang, casefold=casefold)


# -- distinct-n (§8.3) ---------------------------------------------------------------------


def content_tokens(tokens: Iterable[str]) -> list[str]:
    """Casefolded alphanumeric tokens, stop-words kept: distinct-n and near-dup shingles."""
    return [c for c in (t.casefold() for t in tokens) if c.isalnum()]


def distinct_tokens(text: str | None) -> list[str]:
    return content_tokens(word_tokens(text))


def ngram_keys(tokens: Sequence[str], n: int) -> list[str]:
    """The n-grams of one token list as string keys (n-grams never span two answers)."""
    return [GRAM_SEP.join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(answers: Iterable[str | None], n: int) -> float:
    """Distinct n-grams / total n-grams over all ``answers``; 0 when there is no n-gram."""
    seen: set[str] = set()
    total = 0
    for text in answers:
        keys = ngram_keys(distinct_tokens(text), n)
        total += len(keys)
        seen.update(keys)
    return len(seen) / total if total else 0.0
