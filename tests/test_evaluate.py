"""Evaluation (method §8): MTLD, distinct-n, tokens, near-duplicate clusters, the stage."""

from __future__ import annotations

import tempfile

import pytest
from contexts import stage_context
from rows import merge_rows, row

from graphgen_spark.evaluate import lexical as L
from graphgen_spark.evaluate import near_dup as N
from graphgen_spark.stages import evaluate as E
from graphgen_spark.tokenizer import count_tokens

# -- MTLD ------------------------------------------------------------------------------------


def test_mtld_partial_final_factor_and_reversed_pass():
    toks = ["rice", "rice", "wheat", "corn", "barley"]
    # forward: rice 1/1; rice 1/2 = 0.5 <= 0.72 -> factor 1, reset; wheat, corn, barley all
    # new: final segment ratio 3/3 = 1 adds (1 - 1) / 0.28 = 0 -> factors 1 -> 5 / 1 = 5
    assert L.mtld_value(toks, 0.72) == 5.0
    # reversed: barley, corn, wheat, rice 4/4; rice 4/5 = 0.8 > 0.72; final segment ratio 0.8
    # adds (1 - 0.8) / (1 - 0.72) = 5/7 -> factors 5/7 -> 5 / (5/7) = 7
    assert L.mtld_value(toks[::-1], 0.72) == pytest.approx(7.0, rel=1e-12)
    assert L.mtld(toks, 0.72) == pytest.approx((5.0 + 7.0) / 2, rel=1e-12)


def test_mtld_full_factors_and_no_factor():
    # x x x x: the ratio falls to 1/2 at every second token -> 2 factors, no remainder
    assert L.mtld(["x", "x", "x", "x"]) == 4 / 2
    # all distinct: one final segment with ratio 1 -> partial factor 0 -> value = |tokens|
    assert L.mtld(["rice", "wheat", "corn"]) == 3.0
    # a forward remainder with ratio 2/3: "rice rice" makes a factor, then "wheat corn
    # wheat" (2/3 = 0.667 <= 0.72) makes the second: 5 / 2 forward; reversed: "wheat corn
    # wheat" -> factor, "rice rice" -> factor -> 5 / 2
    assert L.mtld(["rice", "rice", "wheat", "corn", "wheat"]) == 2.5
    # a remainder of ratio 3/4 (> 0.72): a b c a -> (1 - 0.75) / 0.28 factors
    assert L.mtld_value(["a1", "b1", "c1", "a1"]) == pytest.approx(4 / (0.25 / 0.28), rel=1e-12)


def test_mtld_empty_stopwords_and_case():
    assert L.mtld([]) == 0.0
    assert L.text_mtld("") == 0.0
    assert L.text_mtld("   ") == 0.0
    assert L.mtld(["the", "of", ",", "."]) == 0.0  # only stop-words and punctuation
    # exact, case-sensitive stop-word match: "the" goes, "The" stays; "," and "." go
    assert L.mtld_tokens(["The", "the", "cat", ",", "."]) == ["The", "cat"]
    assert L.mtld(["The", "the", "cat", ",", "."]) == 2.0
    # casefold: tokens are casefolded first, so "The" is a stop-word too
    assert L.mtld_tokens(["The", "the", "Cat"], casefold=True) == ["cat"]
    assert L.mtld(["The", "the", "Cat"], casefold=True) == 1.0


def test_stopword_lists_are_nltk():
    en, zh = L.stopwords("en"), L.stopwords("zh")
    assert len(en) == 198 and {"the", "you've", "mightn't", "ourselves"} <= en
    assert "The" not in en and not any(w.startswith("#") for w in en)
    assert len(zh) == 841 and {"的", "是", "和"} <= zh


# -- tokens ------------------------------------------------------------------------------------


def test_english_tokens_need_no_nltk_data():
    toks = L.word_tokens("Rice needs water. It grows in paddies, doesn't it?")
    # sentence-final periods come off their words (the reference's sentence split)
    assert toks == [
        "Rice", "needs", "water", ".", "It", "grows", "in", "paddies", ",", "does", "n't", "it", "?",
    ]  # fmt: skip


def test_chinese_tokens_are_jieba_words():
    toks = L.word_tokens("水稻是世界上最重要的粮食作物之一。")
    assert toks == ["水稻", "是", "世界", "上", "最", "重要", "的", "粮食作物", "之一", "。"]
    assert L._jieba().tmp_dir.startswith(tempfile.gettempdir())
    # NLTK's Chinese stop-words (是 的 重要 之一) and punctuation go
    assert L.mtld_tokens(toks, "zh") == ["水稻", "世界", "上", "最", "粮食作物"]


def test_distinct_n():
    answers = ["The cat sat.", "the cat ran!"]
    # tokens: the cat sat | the cat ran (casefolded, stop-words kept, punctuation dropped)
    assert L.distinct_n(answers, 1) == 4 / 6
    # bigrams never span answers: (the cat) (cat sat) (the cat) (cat ran) -> 3 / 4
    assert L.distinct_n(answers, 2) == 3 / 4
    assert L.distinct_n(["", "!"], 1) == 0.0


# -- near-duplicates ---------------------------------------------------------------------------


def _words(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def _replace(words: list[str], i: int, new: str) -> str:
    return " ".join(words[:i] + [new] + words[i + 1 :])


A, B, C = _words("alpha", 25), _words("beta", 49), _words("gamma", 24)
NEAR_DUP_RECORDS = [
    # 21 shingles each, the last one differs: 20 / 22 = 0.91
    ("a1", " ".join(A)),
    ("a2", _replace(A, 24, "zzz")),
    # the middle word of 49 differs in 5 of 45 shingles: 40 / 50 = 0.8 exactly (accepted)
    ("b1", " ".join(B)),
    ("b2", _replace(B, 24, "zzz")),
    # the middle word of 24 differs in 5 of 20 shingles: 15 / 25 = 0.6 (rejected)
    ("c1", " ".join(C)),
    ("c2", _replace(C, 12, "zzz")),
    # empty texts: each its own cluster
    ("d1", ""),
    ("d2", ""),
    # fewer words than the shingle: one shingle, equal after casefold and punctuation
    ("e1", "Short text here"),
    ("e2", "short TEXT here!"),
]


def test_shingles_and_exact_jaccard():
    sh = {k: N.shingles(t) for k, t in NEAR_DUP_RECORDS}
    assert N.jaccard_similarity(sh["a1"], sh["a2"]) == 20 / 22
    assert N.jaccard_similarity(sh["b1"], sh["b2"]) == 0.8
    assert N.jaccard_similarity(sh["c1"], sh["c2"]) == 0.6
    assert sh["d1"] == [] and sh["e1"] == sh["e2"] == ["short text here"]
    zh = N.shingles("水稻是重要的粮食作物。")  # 10 characters without punctuation: 6 5-grams
    assert zh[:2] == ["是重要的粮", "水稻是重要"] and len(zh) == 6


def test_local_pairs_check_every_pair_sharing_a_shingle_exactly():
    rows = [
        {"id": k, "grp": "g", "sh": N.shingles(t)} for k, t in NEAR_DUP_RECORDS if N.shingles(t)
    ]
    assert N.local_pairs(rows, 0.8) == [("a1", "a2"), ("b1", "b2"), ("e1", "e2")]
    other = [{**r, "grp": "h"} if r["id"] == "a2" else r for r in rows]  # groups never pair
    assert N.local_pairs(other, 0.8) == [("b1", "b2"), ("e1", "e2")]
    assert N.local_pairs(rows, 0.8, budget=10) is None  # too many checks: the LSH join decides


def test_local_components_name_clusters_by_smallest_id():
    pairs = [("c", "d"), ("b", "c"), ("x", "y"), ("a", "d")]
    assert N.local_components(pairs) == {
        "a": "a", "b": "a", "c": "a", "d": "a", "x": "x", "y": "x",
    }  # fmt: skip


@pytest.mark.parametrize("pairs", ["lsh", "inverted_index"])
def test_near_duplicate_clusters(spark, monkeypatch, pairs):
    # components by DataFrame min-label propagation here; the stage test takes the local path
    monkeypatch.setattr(N, "LOCAL_MAX_EDGES", 0)
    if pairs == "lsh":  # MinHashLSH's self-join proposes the pairs, as for many texts
        monkeypatch.setattr(N, "LOCAL_MAX_TEXTS", 0)
    df = spark.createDataFrame(NEAR_DUP_RECORDS, "rid string, body string")
    got = N.near_duplicate_clusters(df, "rid", "body", None, 5, 128, 0.8)
    clusters = {r["rid"]: r["cluster_id"] for r in got.collect()}
    assert clusters == {
        "a1": "a1", "a2": "a1", "b1": "b1", "b2": "b1", "c1": "c1", "c2": "c2",
        "d1": "d1", "d2": "d2", "e1": "e1", "e2": "e1",
    }  # fmt: skip
    rate = 1 - len(set(clusters.values())) / len(clusters)
    assert rate == pytest.approx(0.3)


# -- the stage -----------------------------------------------------------------------------------


def _qa(qa_id: str, mode: str, question: str, answer: str, status: str = "ok") -> dict:
    return row("qa", qa_id=qa_id, mode=mode, question=question, answer=answer, status=status)


SENT = " ".join(_words("fact", 30))
QA_ROWS = [
    # atomic: q1/q2 near-duplicates (one word of 60 differs at the end), q3 different, q4 is
    # not ok (ignored); aggregated: one QA equals atomic q3 but modes never cluster together
    _qa("q1", "atomic", "What is rice?", SENT),
    _qa("q2", "atomic", "What is rice?", SENT + " extra"),
    _qa("q3", "atomic", "Where does wheat grow?", "Wheat grows in temperate regions."),
    _qa("q4", "atomic", "What is rice?", SENT, status="duplicate"),
    _qa("q5", "aggregated", "Where does wheat grow?", "Wheat grows in temperate regions."),
    _qa("q6", "aggregated", "Why do paddies flood?", "Flooding suppresses weeds in paddies."),
]


def test_evaluate_stage_end_to_end(spark, tables):
    ctx = stage_context(spark, tables, run_id="eval-run")
    # no qa table yet: nothing to do, no crash, nothing written
    assert E.STAGE.run(ctx).counts["qa_evaluated"] == 0
    assert not tables.exists("qa_metrics")

    merge_rows(tables, "qa", QA_ROWS)
    res = E.STAGE.run(ctx)
    assert res.counts["qa_evaluated"] == 5 and res.counts["modes"] == 2

    items = {r["qa_id"]: r for r in tables.read("qa_item_metrics").collect()}
    assert {k: r["near_dup_cluster"] for k, r in items.items()} == {
        "q1": "q1", "q2": "q1", "q3": "q3", "q5": "q5", "q6": "q6",
    }  # fmt: skip
    assert items["q1"]["length"] == count_tokens(SENT)
    assert items["q1"]["mtld"] == 30.0  # 30 distinct words: no factor, value = |tokens|

    rows = {r["mode"]: r for r in tables.read("qa_metrics").collect()}
    atomic, agg = rows["atomic"], rows["aggregated"]
    lengths = [count_tokens(q["answer"]) for q in QA_ROWS[:3]]
    assert atomic["run_id"] == "eval-run" and atomic["n"] == 3 and atomic["n_clusters"] == 2
    assert (atomic["length_min"], atomic["length_max"]) == (min(lengths), max(lengths))
    assert atomic["length_mean"] == pytest.approx(sum(lengths) / 3)
    assert atomic["near_dup_rate"] == pytest.approx(1 / 3)
    assert agg["n"] == 2 and agg["n_clusters"] == 2 and agg["near_dup_rate"] == 0.0
    # aggregated answers: wheat grows in temperate regions | flooding suppresses weeds in
    # paddies -> 10 unigrams, 9 distinct ("in" twice); 8 bigrams, all distinct
    assert agg["distinct_1"] == pytest.approx(9 / 10) and agg["distinct_2"] == 1.0

    table = E.format_metrics(rows.values())
    assert "atomic" in table and "33.3% (2 clusters)" in table

    # rerun on unchanged qa: both MERGEs change nothing, so no new Delta version
    versions = tables.version("qa_item_metrics"), tables.version("qa_metrics")
    again = E.STAGE.run(ctx)
    assert again.counts["item_metrics_written"] == 0 and again.counts["metrics_written"] == 0
    assert (tables.version("qa_item_metrics"), tables.version("qa_metrics")) == versions
