"""N-gram decontamination of exported QA against an evaluation set (§7.5).

A QA is contaminated when any n-gram of its exported question (with options) or answer
also occurs in some text of the evaluation file. Texts are NFKC-normalised, casefolded and
stripped of punctuation; English-rule texts (§2.3) give word n-grams, Chinese ones
character n-grams, both with the same n (``export.decontaminate_ngram``, default 13). A text
shorter than n words / characters yields no n-gram, so it can neither match nor be matched.

Everything runs in Spark: n-grams are exploded on the executors and joined with the
evaluation n-grams; only the (small) list of contaminated ids is ever reported.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from graphgen_spark import fsutil
from graphgen_spark.config import ConfigError
from graphgen_spark.language import main_language
from graphgen_spark.readers import literal_path

KEY = "export.decontaminate_against"
_WORD = re.compile(r"[^\W_]+")  # letters and digits; `_` (fill-in blanks) is punctuation here
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_COMPRESSED = (".gz", ".bz2", ".deflate", ".zst", ".lz4", ".snappy")


# -- pure text side ---------------------------------------------------------------------------
def tokens(text: str) -> tuple[list[str], str]:
    """Normalised tokens of a text and the joiner of its n-grams (words: space, chars: none)."""
    norm = unicodedata.normalize("NFKC", text).casefold()
    if main_language(text) == "zh":
        return [c for c in norm if c.isalnum()], ""
    return _WORD.findall(norm), " "


def ngrams(text: str | None, n: int) -> list[str]:
    """Distinct n-grams of a text in first-occurrence order (none when shorter than n)."""
    if not text:
        return []
    toks, joiner = tokens(text)
    seen: dict[str, None] = {}
    for i in range(len(toks) - n + 1):
        seen.setdefault(joiner.join(toks[i : i + n]), None)
    return list(seen)


def strings_in(value: Any) -> list[str]:
    """Every string value inside a parsed JSON value (keys excluded), depth first."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    return []


def _parse_json_strings(text: str) -> list[str] | None:
    try:
        return strings_in(json.loads(text))
    except ValueError:
        return None


def eval_format(path: str) -> str:
    """``jsonl``, ``json`` or ``txt`` from the file name (a compression suffix is skipped)."""
    name = path.rstrip("/").rsplit("/", 1)[-1].lower()
    for suffix in _COMPRESSED:
        name = name.removesuffix(suffix)
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    return "json" if name.endswith(".json") else "txt"


def resolve(path: str) -> str:
    """A scheme-less path made absolute (Spark would resolve it against its own cwd)."""
    if _SCHEME.match(path):
        return path
    return str(Path(path).expanduser().resolve())


# -- Spark side -------------------------------------------------------------------------------
def eval_texts(spark: SparkSession, path: str) -> DataFrame:
    """The evaluation file as one row per text (``text``); a clear error names the key when
    the file is missing, unreadable or not the JSON its name promises."""
    path = resolve(path)
    try:
        found = fsutil.exists(spark, path)
    except Exception as exc:  # bad scheme, no credentials, ...
        raise ConfigError(f"{KEY}: cannot access evaluation file {path}: {exc}") from exc
    if not found:
        raise ConfigError(f"{KEY}: evaluation file not found: {path}")
    fmt = eval_format(path)
    try:
        if fmt == "txt":
            raw = spark.read.text(literal_path(path))
            return raw.select(F.col("value").alias("text")).filter(F.trim("text") != "")
        parse = F.udf(_parse_json_strings, T.ArrayType(T.StringType()))
        raw = spark.read.text(literal_path(path), wholetext=fmt == "json")
        parsed = raw.filter(F.trim("value") != "").withColumn("strings", parse("value"))
        bad = parsed.filter(F.col("strings").isNull()).select("value").limit(1).collect()
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{KEY}: cannot read evaluation file {path}: {exc}") from exc
    if bad:
        excerpt = bad[0]["value"][:120]
        raise ConfigError(f"{KEY}: {path} is not valid {fmt.upper()} (near {excerpt!r})")
    return parsed.select(F.explode("strings").alias("text"))


def eval_ngrams(spark: SparkSession, path: str, n: int) -> DataFrame:
    """Distinct n-grams (``ngram``) of every text of the evaluation file."""
    grams = F.udf(lambda t: ngrams(t, n), T.ArrayType(T.StringType()))
    return eval_texts(spark, path).select(F.explode(grams("text")).alias("ngram")).distinct()


def contaminated(qa: DataFrame, eval_grams: DataFrame, n: int) -> DataFrame:
    """Contaminated rows of ``qa`` (``question`` and ``answer``: the exported Q and A; every
    other column, e.g. qa_id and mode, is carried through as a key).

    Adds ``field, ngram, n_matched``: the first matching (field, n-gram) in code-point
    order, for a deterministic report, and how many distinct n-grams matched.
    """
    keys = [c for c in qa.columns if c not in ("question", "answer")]
    grams = F.udf(lambda t: ngrams(t, n), T.ArrayType(T.StringType()))
    parts = F.array(
        *[F.struct(F.lit(c).alias("field"), F.col(c).alias("text")) for c in ("question", "answer")]
    )
    exploded = qa.select(*keys, F.explode(parts).alias("part")).select(
        *keys, "part.field", F.explode(grams("part.text")).alias("ngram")
    )
    return (
        exploded.join(eval_grams, "ngram")
        .groupBy(*keys)
        .agg(
            F.min(F.struct("field", "ngram")).alias("first"),
            F.countDistinct("ngram").alias("n_matched"),
        )
        .select(*keys, "first.field", "first.ngram", "n_matched")
    )
