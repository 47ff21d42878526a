"""Chunk: the exact window loop of method.md §2.2, pre-chunked parts, languages, reruns."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from contexts import stage_context

from graphgen_spark.ids import h
from graphgen_spark.language import main_language
from graphgen_spark.stages import chunk, ingest
from graphgen_spark.tables import Tables
from graphgen_spark.tokenizer import count_tokens, get_encoding

DATA = Path(__file__).parent / "data" / "chunk"
ZH = (DATA / "dujiangyan.txt").read_text(encoding="utf-8")


def _words(n: int) -> str:
    text = " ".join(["cat"] * n)
    assert count_tokens(text) == n  # "cat" then n-1 times " cat": one token each
    return text


def _starts_ends(windows):
    return [(i, s, e) for i, s, e, _ in windows]


# -- the pure loop -------------------------------------------------------------------------------
def test_windows_size_10_overlap_3():
    assert _starts_ends(chunk.token_windows(_words(24), 10, 3)) == [
        (0, 0, 10),
        (1, 7, 17),
        (2, 14, 24),  # reaches the end: stop
    ]
    windows = chunk.token_windows(_words(25), 10, 3)
    assert _starts_ends(windows) == [(0, 0, 10), (1, 7, 17), (2, 14, 24), (3, 21, 25)]
    assert windows[0][3] == " ".join(["cat"] * 10)  # stripped exact span
    assert windows[3][3] == "cat cat cat cat"


def test_document_of_exactly_size_tokens_is_one_chunk():
    assert _starts_ends(chunk.token_windows(_words(10), 10, 3)) == [(0, 0, 10)]
    assert _starts_ends(chunk.token_windows(_words(4), 10, 3)) == [(0, 0, 4)]
    assert chunk.token_windows("", 10, 3) == []
    assert chunk.token_windows(" \n\t ", 10, 3) == []
    with pytest.raises(ValueError):
        chunk.token_windows("x", 10, 10)


def test_blank_windows_are_skipped_and_indexes_stay_consecutive():
    text = "Alpha" + " \n" * 40 + "Omega"
    windows = chunk.token_windows(text, 4, 0)
    assert [w[0] for w in windows] == list(range(len(windows))) == [0, 1]
    assert (windows[0][3], windows[1][3]) == ("Alpha", "Omega")
    assert windows[1][2] == count_tokens(text)


def test_chinese_windows_are_exact_substrings_without_replacement_characters():
    enc = get_encoding()
    ids = enc.encode_ordinary(ZH)
    windows = chunk.token_windows(ZH, 7, 2)
    assert len(windows) > 30
    for *_, text in windows:
        assert "\ufffd" not in text and text in ZH
    # the reference's token-slice decoding does produce U+FFFD on this text
    assert any("\ufffd" in enc.decode(ids[s:e]) for _, s, e, _ in windows)
    starts = [s for _, s, _, _ in windows]
    assert starts == list(range(0, 5 * len(windows), 5))


def test_prechunked_parts_and_rows():
    parts = ["  Part one.", "   ", "第二部分。"]
    n0, n1, n2 = (count_tokens(p) for p in parts)
    assert chunk.part_windows(parts) == [
        (0, 0, n0, "  Part one."),
        (1, n0 + n1, n0 + n1 + n2, "第二部分。"),
    ]
    rows = chunk.chunk_rows("d1", "\n".join(parts), True, parts, 10, 3)
    assert [r[:6] for r in rows] == [
        (h("d1", 0), "d1", 0, 0, n0, n0),
        (h("d1", 1), "d1", 1, n0 + n1, n0 + n1 + n2, n2),
    ]
    assert [(r[7], r[8]) for r in rows] == [(h("  Part one."), "en"), (h("第二部分。"), "zh")]


# -- Spark ----------------------------------------------------------------------------------
def _run_both(spark, root: Path, src: Path, size: int, overlap: int):
    cfg = {"chunk": {"size": size, "overlap": overlap}}
    ctx = stage_context(spark, root / "out", cfg, run_id="run-1", input_path=src)
    ingest.STAGE.run(ctx)
    return ctx, ctx.tables, chunk.STAGE.run(ctx)


def _assert_chunks_match_documents(tables: Tables, size: int, overlap: int):
    docs = {r["doc_id"]: r for r in tables.read("documents").collect()}
    got: dict[str, list] = {}
    for r in tables.read("chunks").collect():
        got.setdefault(r["doc_id"], []).append(r)
    assert set(got) == set(docs)
    for doc_id, rows in got.items():
        d = docs[doc_id]
        rows.sort(key=lambda r: r["index"])
        if d["prechunked"]:
            want = chunk.part_windows(d["parts"])
        else:
            want = chunk.token_windows(d["text"], size, overlap)
        assert [(r["index"], r["start_token"], r["end_token"], r["text"]) for r in rows] == want
        for r in rows:
            assert r["chunk_id"] == h(doc_id, r["index"])
            assert r["content_hash"] == h(r["text"])
            assert r["n_tokens"] == r["end_token"] - r["start_token"]
            assert r["language"] == main_language(r["text"])
            assert "\ufffd" not in r["text"]
            if not d["prechunked"]:
                assert r["text"] in d["text"]
    return docs, got


def test_chunk_stage_end_to_end_and_rerun(spark, tmp_path):
    src = tmp_path / "in"
    shutil.copytree(DATA, src)
    ctx, tables, res = _run_both(spark, tmp_path, src, 32, 4)
    docs, got = _assert_chunks_match_documents(tables, 32, 4)
    assert res.counts["documents_chunked"] == len(docs) == 3
    assert (
        res.counts["chunks_written"] == res.counts["chunks_produced"] == sum(map(len, got.values()))
    )

    by_name = {Path(d["source"]).name: d for d in docs.values()}
    pre = got[by_name["prechunked.json"]["doc_id"]]
    assert [r["text"] for r in pre] == [  # as given (not stripped), the blank part skipped
        "  Part one keeps its leading spaces.",
        "第二部分：稻田养鱼是一种传统农业模式。",
    ]
    assert [r["language"] for r in pre] == ["en", "zh"]
    assert {r["language"] for r in got[by_name["dujiangyan.txt"]["doc_id"]]} == {"zh"}
    assert {r["language"] for r in got[by_name["andes.md"]["doc_id"]]} == {"en"}
    assert len(got[by_name["andes.md"]["doc_id"]]) == 5  # 121 tokens, stride 28

    version = tables.version("chunks")
    again = chunk.STAGE.run(ctx)
    assert again.counts == {"documents_chunked": 0, "chunks_produced": 0, "chunks_written": 0}
    assert tables.version("chunks") == version


def test_chunk_shared_samples(spark, tmp_path, shared_data):
    src = tmp_path / "shared"
    src.mkdir()
    for name in ("raw_demo.jsonl", "chunked_demo.json", "txt_demo.txt"):
        shutil.copy(shared_data / name, src / name)
    _, tables, res = _run_both(spark, tmp_path, src, 128, 16)
    docs, got = _assert_chunks_match_documents(tables, 128, 16)
    assert res.counts["documents_chunked"] == 5
    # the pre-chunked documents are one chunk each, never re-cut
    for doc_id, d in docs.items():
        if d["prechunked"]:
            assert [r["text"] for r in got[doc_id]] == list(d["parts"])
    langs = {r["language"] for rows in got.values() for r in rows}
    assert langs == {"en", "zh"}
