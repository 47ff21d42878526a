"""Near-duplicate clusters of texts with Spark ML MinHashLSH (method §8.4).

Shingles are word 5-grams (character 5-grams for ``zh``) of the casefolded text without
punctuation, so "Paris." and "paris" are the same word. MinHashLSH proposes candidate pairs;
each candidate's exact Jaccard similarity of the shingle *sets* is then checked, so neither
the hashing of shingles into vector indexes nor the MinHash estimate can accept a pair
below the threshold. Accepted pairs are edges; connected components are the clusters,
named by their smallest id. At most ``LOCAL_MAX_TEXTS`` texts are paired on the driver
through an inverted index of shingles instead (:func:`local_pairs`: the same pairs,
without MinHashLSH's fixed seconds). Components: union-find on the driver while there are at most
``LOCAL_MAX_EDGES`` pairs (near-duplicates are usually few), else DataFrame min-label
propagation on the executors (:mod:`graphgen_spark.graph.engines`). Independent of the ``qa`` table: the generate stage's
near-duplicate filter calls the same function.

Scale note: Spark's MinHashLSH only ORs its hash tables (no bands), so with 128 tables a
pair sharing even a few shingles is likely a candidate; the exact check keeps results
right, but a corpus full of boiler-plate openings pays for many candidate pairs.
"""

from __future__ import annotations

import contextlib
from collections import Counter, defaultdict
from collections.abc import Iterator

import pandas as pd
from pyspark.ml.feature import HashingTF, MinHashLSH
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from graphgen_spark.evaluate.lexical import content_tokens, word_tokens
from graphgen_spark.graph.engines import (
    LOCAL_MAX_EDGES,
    DataFrameGraph,
    Keep,
    local_components,
    local_keep,
)
from graphgen_spark.language import main_language

NUM_FEATURES = 1 << 22  # shingle hash space of the MinHash vectors (collisions are rare)
# approxSimilarityJoin keeps distance < threshold (strict) and measures it on hashed
# vectors: widen it a little, the exact check on the shingle sets decides.
_DIST_MARGIN = 0.01
LOCAL_MAX_TEXTS = 2_000  # at most this many texts: candidate pairs on the driver


def shingles(text: str | None, lang: str | None = None, size: int = 5) -> list[str]:
    """Sorted distinct shingles of ``text``: word ``size``-grams, or characters for ``zh``.

    A text with fewer units than ``size`` is one shingle (all of it); no unit, no shingle.
    """
    if not text:
        return []
    lang = lang or main_language(text)
    if lang == "zh":
        units, sep = [c for c in text.casefold() if c.isalnum()], ""
    else:
        units, sep = content_tokens(word_tokens(text, "en")), " "
    if not units:
        return []
    if len(units) < size:
        return [sep.join(units)]
    return sorted({sep.join(units[i : i + size]) for i in range(len(units) - size + 1)})


def jaccard_similarity(a: list[str], b: list[str]) -> float:
    """Exact Jaccard similarity of two shingle sets (0 when both are empty)."""
    sa, sb = set(a), set(b)
    union = len(sa | sb)
    return len(sa & sb) / union if union else 0.0


def _shingle_udf(size: int):
    @F.pandas_udf(T.ArrayType(T.StringType()))
    def shingle(text: pd.Series, lang: pd.Series) -> pd.Series:
        return pd.Series(
            [
                shingles(t, lg if isinstance(lg, str) and lg else None, size)
                for t, lg in zip(text, lang, strict=True)
            ]
        )

    return shingle


@contextlib.contextmanager
def _no_broadcast(spark: SparkSession) -> Iterator[None]:
    """Plan joins without broadcasting. The LSH self-join explodes each side into one row
    per hash table (128x), but Spark sizes it from the input: read back from a few
    compressed parquet bytes it is broadcast, and the exploded table overflows the
    driver (seen as an OOM in generate)."""
    key = "spark.sql.autoBroadcastJoinThreshold"
    before = spark.conf.get(key)
    spark.conf.set(key, "-1")
    try:
        yield
    finally:
        spark.conf.set(key, before)


def local_pairs(
    rows: list, jaccard: float, budget: int = 5_000_000
) -> list[tuple[str, str]] | None:
    """The pairs :func:`_candidate_edges` accepts, found on the driver for a few texts
    (rows of ``id``, ``grp``, ``sh``): every pair sharing a shingle is checked exactly,
    through an inverted index. MinHashLSH's fit and self-join cost seconds however few the
    texts; with 128 hash tables it misses a pair of Jaccard 0.8 with odds of 0.2^128, so
    both find the same pairs. None when shared shingles would make more than ``budget``
    pair checks (boiler-plate): then the LSH join decides."""
    postings: dict[tuple[str, str], list[str]] = defaultdict(list)
    size: dict[str, int] = {}
    for r in rows:
        shingled = set(r["sh"])
        size[r["id"]] = len(shingled)
        for sh in shingled:
            postings[(r["grp"], sh)].append(r["id"])
    if sum(len(ids) * (len(ids) - 1) // 2 for ids in postings.values()) > budget:
        return None
    shared: Counter[tuple[str, str]] = Counter()
    for ids in postings.values():
        ids.sort()
        for i, a in enumerate(ids):
            for b in ids[i + 1 :]:
                shared[(a, b)] += 1
    # the same test as the LSH path: inter >= jaccard * union, without dividing
    return sorted(
        (a, b)
        for (a, b), inter in shared.items()
        if inter >= jaccard * (size[a] + size[b] - inter) - 1e-9
    )


def _candidate_edges(records: DataFrame, permutations: int, jaccard: float, seed: int) -> DataFrame:
    """``(src, dst)`` pairs, src < dst in the same group, exact Jaccard >= ``jaccard``."""
    tf = HashingTF(inputCol="sh", outputCol="vec", numFeatures=NUM_FEATURES, binary=True)
    vectors = tf.transform(records.where(F.size("sh") > 0))
    lsh = MinHashLSH(inputCol="vec", outputCol="mh", numHashTables=permutations, seed=seed)
    model = lsh.fit(vectors)
    threshold = min(1.0, 1.0 - jaccard + _DIST_MARGIN)
    pairs = model.approxSimilarityJoin(vectors, vectors, threshold, distCol="dist")
    a, b = F.col("datasetA"), F.col("datasetB")
    inter = F.size(F.array_intersect(a["sh"], b["sh"]))
    union = F.size(F.array_union(a["sh"], b["sh"]))
    return pairs.where(
        (a["id"] < b["id"])
        & (a["grp"] == b["grp"])
        # inter / union >= jaccard, without dividing (4/5 against 0.8 must pass)
        & (inter >= F.lit(jaccard) * union - F.lit(1e-9))
    ).select(a["id"].alias("src"), b["id"].alias("dst"))


def near_duplicate_clusters(
    df: DataFrame,
    id_col: str,
    text_col: str,
    lang_col: str | None = None,
    shingle: int = 5,
    permutations: int = 128,
    jaccard: float = 0.8,
    *,
    group_col: str | None = None,
    seed: int = 42,
    keep: Keep | None = None,
) -> DataFrame:
    """``(id_col, cluster_id)`` for every row of ``df``: cluster_id is the smallest id
    (string order) of its near-duplicate cluster; a row without near-duplicates, or with
    no shingle (empty text), is its own cluster.

    ``lang_col`` (``en``/``zh``) picks word or character shingles; None: §2.3 on the text.
    ``group_col``: only rows with equal values can be near-duplicates (e.g. per mode).
    Ids must be unique and non-null; both output columns are strings. The MinHash
    functions are seeded by ``seed``, so reruns give the same clusters.
    ``keep`` materialises the intermediates (a stage passes its ``Scratch.materialise``:
    ``localCheckpoint`` blocks die with their executor).
    """
    lang = F.col(lang_col).cast("string") if lang_col else F.lit(None).cast("string")
    grp = F.col(group_col).cast("string") if group_col else F.lit("")
    records = (
        df.select(
            F.col(id_col).cast("string").alias("id"),
            F.col(text_col).cast("string").alias("text"),
            lang.alias("lang"),
            grp.alias("grp"),
        )
        .withColumn("sh", _shingle_udf(shingle)("text", "lang"))
        .select("id", "grp", "sh")
    )
    keep = keep or local_keep
    records = keep(records)  # shingled once, read by the LSH fit, the join and the result
    ids = records.select("id")
    singletons = ids.select(F.col("id").alias(id_col), F.col("id").alias("cluster_id"))
    texts = records.where(F.size("sh") > 0)
    small = texts.limit(LOCAL_MAX_TEXTS + 1).collect()
    if not small:  # MinHashLSH cannot fit on no vector
        return singletons
    few = local_pairs(small, jaccard) if len(small) <= LOCAL_MAX_TEXTS else None
    if few is None:
        with _no_broadcast(df.sparkSession):
            edges = keep(_candidate_edges(records, permutations, jaccard, seed))
        few = [(r["src"], r["dst"]) for r in edges.limit(LOCAL_MAX_EDGES + 1).collect()]
    else:
        edges = df.sparkSession.createDataFrame(few, "src string, dst string")
    if not few:
        return singletons
    if len(few) <= LOCAL_MAX_EDGES:
        comps = local_components(few)
        labels = df.sparkSession.createDataFrame(
            sorted(comps.items()), "id string, component string"
        )
    else:
        v = edges.select(F.col("src").alias("id")).union(edges.select("dst")).distinct()
        labels = DataFrameGraph(keep).components(v, edges)  # min-label propagation: smallest id
    return ids.join(labels, "id", "left").select(
        F.col("id").alias(id_col), F.coalesce("component", "id").alias("cluster_id")
    )
