"""Ingest: every format, every quarantine reason with its locator, collapse, idempotent MERGEs.

The Spark part runs ingest once over one directory that holds every format and every kind
of bad record (module fixture ``mixed``), then asserts on the tables; the rerun and the
new-source union run last. The parsers are also tested as plain functions.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from contexts import stage_context

from graphgen_spark import readers as R
from graphgen_spark.config import ConfigError, build_config
from graphgen_spark.ids import h
from graphgen_spark.stages import ingest
from graphgen_spark.stages.base import StageContext
from graphgen_spark.tables import Tables

DATA = Path(__file__).parent / "data" / "ingest"
SHARED = "Shared paragraph: the Silk Road linked Chang'an with the Mediterranean world.\n"


def _cfg(**input_cfg):
    return build_config({"input": input_cfg}, env=False)


def _ctx(spark, tables, path, run_id="run-1", **input_cfg) -> StageContext:
    """Ingest of ``path`` with these ``input`` settings."""
    return stage_context(spark, tables, {"input": input_cfg}, run_id=run_id, input_path=path)


# -- pure parsers ------------------------------------------------------------------------------
def _parse(fmt: str, data: bytes, text_field=None, id_field=None) -> list[dict]:
    return list(R.parse_file("src", data, fmt, text_field, id_field))


def test_jsonl_lines_and_locators():
    data = (
        b'\xef\xbb\xbf{"content": "a", "id": 7, "x": true, "y": null, "z": [1]}\r\n'
        b"\n"
        b"not json\n"
        b'"a string"\n'
        b'{"text": "from text", "content": null}\n'
        b'{"content": "\\ud800 lone surrogate"}\n'
        b'{"other": "x"}'
    )
    rows = _parse("jsonl", data, id_field="id")
    got = [(r["locator"], r["reason"]) for r in rows]
    assert got == [
        ("line:1", None),
        ("line:3", "malformed_json"),
        ("line:4", "not_an_object"),
        ("line:5", None),
        ("line:6", "decode_error"),
        ("line:7", "missing_text"),
    ]
    first = rows[0]
    assert (first["text"], first["source_id"], first["metadata"]) == ("a", "7", {"x": "true"})
    assert rows[1]["excerpt"] == "not json" and "Expecting value" in rows[1]["detail"]
    assert rows[3]["text"] == "from text"  # content present but null -> next default field
    # nesting beyond Python's recursion limit is malformed, not a crashed task
    (deep,) = _parse("jsonl", b"[" * 100_000)
    assert (deep["locator"], deep["reason"]) == ("line:1", "malformed_json")
    # a configured text field is the only one used
    assert _parse("jsonl", b'{"content": "a"}', text_field="body")[0]["reason"] == "missing_text"


def test_json_objects_and_prechunked_lists():
    doc = [
        {"content": "one", "k": 1.5},
        [{"content": "p0", "id": "x"}, {"content": "p1", "k": "v"}, 3],
        [],
        None,
    ]
    rows = _parse("json", json.dumps(doc).encode(), id_field="id")
    got = [(r["locator"], r["reason"]) for r in rows]
    assert got == [
        ("item:0", None),
        ("item:1/2", "not_an_object"),
        ("item:1", None),
        ("item:2", None),  # empty text: rejected later, by the common check (empty_document)
        ("item:3", "not_an_object"),
    ]
    assert rows[0]["metadata"] == {"k": "1.5"}
    pre = rows[2]
    assert pre["prechunked"] and pre["parts"] == ["p0", "p1"] and pre["text"] == "p0\np1"
    assert (pre["source_id"], pre["metadata"]) == ("x", {"k": "v"})
    assert rows[3]["text"] == "" and rows[3]["parts"] == []
    # whole-file failures and a top-level object
    assert _parse("json", b"[1,")[0]["reason"] == "malformed_json"
    assert _parse("json", b"42")[0]["reason"] == "not_an_object"
    assert _parse("json", b"\xff[]")[0]["reason"] == "decode_error"
    top = _parse("json", b'{"text": "solo"}')[0]
    assert (top["locator"], top["text"]) == ("file", "solo")


def test_text_files_bom_and_decode_errors():
    (row,) = _parse("md", "\ufeff# Title\r\n正文".encode())
    assert (row["locator"], row["text"], row["format"]) == ("file", "# Title\r\n正文", "md")
    (bad,) = _parse("txt", b"caf\xe9")
    assert (bad["locator"], bad["reason"]) == ("file", "decode_error")
    assert "utf-8" in bad["detail"] and bad["excerpt"] == "caf\ufffd"
    (unsup,) = _parse("pdf", b"%PDF")
    assert unsup["reason"] == "unsupported_format"


def test_extensions_and_excerpts():
    assert [R.extension(p) for p in ("/a/b.JSONL", "/a/.hidden", "/a.b/c", "x.tar.gz")] == [
        "jsonl",
        "",
        "",
        "gz",
    ]
    assert R.case_insensitive_glob(["md"]) == "*.{[mM][dD]}"
    long = {"content": "x" * 10_000, "k": 1}
    assert R.raw_excerpt(long) == json.dumps(long)[:200]


# -- Spark: one directory with every format and every bad record ------------------------------
def _mixed_input(root: Path) -> Path:
    src = root / "in"
    shutil.copytree(DATA, src)
    (src / "nested" / "bad.jsonl").write_bytes(
        b'{"content": "ok line"}\n{"content": "\xff\xfe bad bytes"}\n'
    )
    (src / "nested" / "deeper" / "latin1.txt").write_bytes(b"caf\xe9 au lait")
    (src / "bom.md").write_bytes("\ufeff# Markdown\n\nBody with a BOM.".encode())
    pd.DataFrame(
        {
            "id": ["p1", "p2", "p3"],
            "content": ["Parquet row one.", None, "第三行。"],
            "pages": [1, 2, 3],
        }
    ).to_parquet(src / "nested" / "rows 1+1.parquet")
    # file names that Spark's path globbing and URIs would otherwise mangle
    (src / "table.csv").rename(src / "table [v1].csv")
    return src


def _ingested(spark, tmp_path_factory, name: str, make_input):
    """``make_input(root)``'s folder ingested (max_doc_chars 1000, ids from ``id``)."""
    root = tmp_path_factory.mktemp(name).resolve()
    src = make_input(root)
    tables = Tables(spark, root / "out")
    result = ingest.STAGE.run(_ctx(spark, tables, src, max_doc_chars=1000, id_field="id"))
    return root, src, tables, result


@pytest.fixture(scope="module")
def mixed(spark, tmp_path_factory):
    root, src, tables, result = _ingested(spark, tmp_path_factory, "mixed", _mixed_input)
    docs = {r["doc_id"]: r.asDict(recursive=True) for r in tables.read("documents").collect()}
    quar = [r.asDict() for r in tables.read("quarantine").collect()]
    return {
        "root": root,
        "src": src,
        "tables": tables,
        "result": result,
        "docs": docs,
        "quar": quar,
    }


WHOLE_FILE_REASONS = ("empty_file", "corrupt_file", "unfollowed_symlink")
EXPECTED_QUARANTINE = {
    ("docs.jsonl", "line:4"): "malformed_json",
    ("docs.jsonl", "line:5"): "not_an_object",
    ("docs.jsonl", "line:6"): "missing_text",
    ("docs.jsonl", "line:7"): "missing_text",
    ("docs.jsonl", "line:8"): "empty_document",
    ("docs.jsonl", "line:9"): "oversized_document",
    ("broken.json", "file"): "malformed_json",
    ("nested/deeper/items.json", "item:1/3"): "not_an_object",
    ("nested/deeper/items.json", "item:2"): "not_an_object",
    ("nested/deeper/items.json", "item:3"): "empty_document",
    ("nested/deeper/items.json", "item:4/0"): "missing_text",
    ("nested/figure.xml", "file"): "unsupported_format",
    ("nested/bad.jsonl", "line:2"): "decode_error",
    ("nested/deeper/latin1.txt", "file"): "decode_error",
    ("table [v1].csv", "row:c2"): "missing_text",
    ("nested/rows 1+1.parquet", "row:p2"): "missing_text",
}


def test_every_quarantine_reason_with_its_locator(mixed):
    src = mixed["src"]
    got = {(os.path.relpath(q["source"], src), q["locator"]): q["reason"] for q in mixed["quar"]}
    assert got == EXPECTED_QUARANTINE
    # whole-file reasons: test_hostile_files_are_quarantined_with_their_reason
    assert set(got.values()) == set(R.REASONS) - set(WHOLE_FILE_REASONS)
    by_loc = {(os.path.relpath(q["source"], src), q["locator"]): q for q in mixed["quar"]}
    malformed = by_loc[("docs.jsonl", "line:4")]
    assert malformed["excerpt"] == '{"content": "broken line'
    assert "Unterminated string" in malformed["detail"]
    assert by_loc[("docs.jsonl", "line:9")]["detail"].startswith("1320 characters")
    assert len(by_loc[("docs.jsonl", "line:9")]["excerpt"]) == 200
    assert "0xff" in by_loc[("nested/bad.jsonl", "line:2")]["detail"]
    assert all(q["stage"] == "ingest" and q["run_id"] == "run-1" for q in mixed["quar"])
    assert all(q["detail"] for q in mixed["quar"])


def test_documents_of_every_format(mixed):
    src, docs = mixed["src"], mixed["docs"]
    by_loc = {(os.path.relpath(d["source"], src), d["locator"]): d for d in docs.values()}
    assert set(by_loc) == {
        ("docs.jsonl", "line:1"),
        ("docs.jsonl", "line:10"),  # also nested/notes.txt: collapsed, see below
        ("docs.jsonl", "line:2"),
        ("nested/deeper/items.json", "item:0"),
        ("nested/deeper/items.json", "item:1"),
        ("nested/bad.jsonl", "line:1"),
        ("bom.md", "file"),
        ("table [v1].csv", "row:c1"),
        ("table [v1].csv", "row:c3"),
        ("nested/rows 1+1.parquet", "row:p1"),
        ("nested/rows 1+1.parquet", "row:p3"),
    }
    assert {d["format"] for d in docs.values()} == {"jsonl", "json", "md", "csv", "parquet"}
    for d in docs.values():
        assert d["doc_id"] == h(d["text"]) and d["n_chars"] == len(d["text"])
        assert d["sources"][0] == {k: d[k] for k in ("source", "locator", "source_id")}
        assert d["sources"] == sorted(d["sources"], key=lambda s: tuple(s.values()))

    en = by_loc[("docs.jsonl", "line:1")]
    assert en["source_id"] == "en-1"
    assert en["metadata"] == {"lang": "en", "year": "2020", "score": "1.5", "ok": "true"}
    assert by_loc[("docs.jsonl", "line:2")]["text"].startswith("云南省")
    pre = by_loc[("nested/deeper/items.json", "item:1")]
    assert pre["prechunked"] is True
    assert pre["parts"] == [
        "第一部分：水稻是重要的粮食作物。",
        "Part two: rice grows in paddies.",
        "",
    ]
    assert pre["text"] == "\n".join(pre["parts"])
    assert by_loc[("bom.md", "file")]["text"] == "# Markdown\n\nBody with a BOM."
    csv1 = by_loc[("table [v1].csv", "row:c1")]
    assert csv1["text"] == "A multi-line row:\nline two, with a comma."
    assert (csv1["source_id"], csv1["metadata"]) == ("c1", {"category": "history"})
    pq = by_loc[("nested/rows 1+1.parquet", "row:p3")]
    assert (pq["text"], pq["metadata"]) == ("第三行。", {"pages": "3"})
    assert [k for k, d in by_loc.items() if d["prechunked"]] == [
        ("nested/deeper/items.json", "item:1")
    ]


def test_identical_documents_collapse_keeping_all_sources(mixed):
    src = mixed["src"]
    doc = mixed["docs"][h(SHARED)]
    refs = [(os.path.relpath(s["source"], src), s["locator"]) for s in doc["sources"]]
    assert refs == [("docs.jsonl", "line:10"), ("nested/notes.txt", "file")]
    assert (doc["format"], doc["locator"]) == ("jsonl", "line:10")


def test_counts(mixed):
    counts = mixed["result"].counts
    assert counts["documents_read"] == 12
    assert counts["documents_written"] == 11 == len(mixed["docs"])
    assert counts["quarantined"] == counts["quarantine_written"] == 16
    assert counts["quarantined_missing_text"] == 5
    assert sum(counts[f"quarantined_{r}"] for r in R.REASONS) == 16


def test_rerun_changes_nothing_then_new_source_is_unioned(spark, mixed):
    tables: Tables = mixed["tables"]
    versions = (tables.version("documents"), tables.version("quarantine"))
    again = ingest.STAGE.run(
        _ctx(spark, tables, mixed["src"], "run-2", max_doc_chars=1000, id_field="id")
    )
    assert (tables.version("documents"), tables.version("quarantine")) == versions
    assert again.counts["documents_read"] == 12 and again.counts["quarantined"] == 16
    zero = {"documents_written": 0, "documents_updated": 0, "quarantine_written": 0}
    assert {k: again.counts[k] for k in zero} == zero

    # the same text from a new file: one update, sources unioned, first source moves
    extra = mixed["root"] / "extra"
    extra.mkdir()
    (extra / "copy.txt").write_text(SHARED, encoding="utf-8")
    res = ingest.STAGE.run(_ctx(spark, tables, extra / "copy.txt", "run-3"))
    assert res.counts["documents_written"] == 0 and res.counts["documents_updated"] == 1
    row = tables.read("documents").filter(f"doc_id = '{h(SHARED)}'").first().asDict(recursive=True)
    assert [s["source"] for s in row["sources"]] == [
        str(extra / "copy.txt"),
        str(mixed["src"] / "docs.jsonl"),
        str(mixed["src"] / "nested" / "notes.txt"),
    ]
    assert (row["source"], row["locator"], row["format"]) == (
        str(extra / "copy.txt"),
        "file",
        "txt",
    )
    assert tables.read("documents").count() == 11


# -- Spark: tables, forced formats, shared samples ---------------------------------------------
def test_delta_path_and_table_name_inputs(spark, tmp_path):
    rows = [("t1", "Delta row one.", 1), ("t2", None, 2), ("t3", "增量表第三行。", 3)]
    df = spark.createDataFrame(rows, "key string, body string, n int")
    delta_path = str(tmp_path / "delta_in")
    df.write.format("delta").save(delta_path)
    df.withColumnRenamed("n", "n.`x`").createOrReplaceTempView("gg_ingest_view")

    tables = Tables(spark, tmp_path / "out")
    res = ingest.STAGE.run(
        _ctx(spark, tables, delta_path, format="table", text_field="body", id_field="key")
    )
    assert res.counts["documents_read"] == 2 and res.counts["quarantined_missing_text"] == 1
    docs = {r["source_id"]: r for r in tables.read("documents").collect()}
    assert set(docs) == {"t1", "t3"}
    assert (docs["t1"]["source"], docs["t1"]["locator"], docs["t1"]["format"]) == (
        delta_path,
        "row:t1",
        "table",
    )
    assert docs["t3"]["metadata"] == {"n": "3"}
    (q,) = tables.read("quarantine").collect()
    assert (q["locator"], q["reason"]) == ("row:t2", "missing_text")

    # a table name (here a temp view) without an id field: row:<hash of the row>; a wrong
    # text field quarantines every row; `auto` recognises a Delta path
    icfg = _cfg(format="table", text_field="body").input
    by_name = ingest.read_input(spark, "gg_ingest_view", icfg).collect()
    assert {r["source"] for r in by_name} == {"gg_ingest_view"}
    assert all(r["locator"].startswith("row:") and len(r["locator"]) == 68 for r in by_name)
    assert {r["metadata"]["n.`x`"] for r in by_name} == {"1", "2", "3"}
    wrong = ingest.read_input(spark, "gg_ingest_view", _cfg(format="table").input).collect()
    assert {r["reason"] for r in wrong} == {"missing_text"}
    assert "no text column" in wrong[0]["detail"]
    auto = ingest.read_input(spark, delta_path, _cfg(text_field="body").input)
    assert {r["format"] for r in auto.collect()} == {"table"}


def test_forced_format_single_file(spark, tmp_path):
    log = tmp_path / "notes.log"
    log.write_text('{"content": "forced jsonl"}\n', encoding="utf-8")
    as_jsonl = ingest.read_input(spark, str(log), _cfg(format="jsonl").input).collect()
    assert [(r["text"], r["format"], r["locator"]) for r in as_jsonl] == [
        ("forced jsonl", "jsonl", "line:1")
    ]
    auto = ingest.read_input(spark, str(log), _cfg().input).collect()
    assert [(r["reason"], r["locator"], r["source"]) for r in auto] == [
        ("unsupported_format", "file", str(log))
    ]


def test_shared_samples(spark, tmp_path, shared_data):
    src = tmp_path / "shared"
    src.mkdir()
    for name in ("raw_demo.jsonl", "chunked_demo.json", "txt_demo.txt"):
        shutil.copy(shared_data / name, src / name)
    tables = Tables(spark, tmp_path / "out")
    res = ingest.STAGE.run(_ctx(spark, tables, src))
    # 4 lines + 4 pre-chunked lists + 1 file; each jsonl line equals one single-part list
    assert res.counts["documents_read"] == 9 and res.counts["quarantined"] == 0
    docs = tables.read("documents").collect()
    assert res.counts["documents_written"] == len(docs) == 5
    for d in docs:
        names = sorted(Path(s["source"]).name for s in d["sources"])
        if d["format"] == "txt":
            assert names == ["txt_demo.txt"] and not d["prechunked"]
        else:  # chunked_demo.json sorts first, so the pre-chunked form represents the pair
            assert names == ["chunked_demo.json", "raw_demo.jsonl"]
            assert d["prechunked"] and d["parts"] == [d["text"]]


# -- hostile input ---------------------------------------------------------------------------
def test_wide_unicode_with_a_bom_is_decoded():
    text = "Grüße, 世界 😀\nline two"
    for codec in ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"):
        bom = "\ufeff".encode(codec)
        (row,) = _parse("txt", bom + text.encode(codec))
        assert (row["text"], row["reason"]) == (text, None), codec
        lines = _parse("jsonl", bom + '{"content": "a"}\r\n{"content": "ü"}\n'.encode(codec))
        assert [(r["locator"], r["text"]) for r in lines] == [("line:1", "a"), ("line:2", "ü")]
        (item,) = _parse("json", bom + '[{"text": "😀"}]'.encode(codec))
        assert item["text"] == "😀"
    # a lone surrogate cannot be decoded: the whole file is a decode_error
    (bad,) = _parse("md", b"\xff\xfe" + b"a\x00\x00\xd8")
    assert (bad["locator"], bad["reason"]) == ("file", "decode_error")
    assert "utf-16" in bad["detail"]


def test_a_file_without_records_leaves_a_trace():
    for fmt in R.TEXT_FORMATS:
        (row,) = _parse(fmt, b"")
        assert (row["locator"], row["reason"], row["detail"]) == (
            "file",
            "empty_file",
            "empty file (0 bytes)",
        )
    for fmt, data in (("jsonl", b"\n \r\n"), ("json", b" [ ] ")):
        (row,) = _parse(fmt, data)
        assert (row["reason"], row["detail"]) == (
            "empty_file",
            f"no records in its {len(data)} bytes (blank lines or an empty array)",
        )
    # whitespace in a whole-file format is a document, rejected later as empty_document
    assert _parse("txt", b" \n")[0]["reason"] is None


def test_csv_header_names_follow_spark():
    assert R.csv_header('\ufeffid,"a, b",,ID,x') == ["id0", "a, b", "_c2", "ID3", "x"]
    assert R.csv_header("a,a,a0") == ["a0_0", "a1", "a0_2"]  # still repeated: made unique
    assert R.positional_names(["id", "_c2"], 4) == ["id", "_c2", "__c2", "_c3"]
    _src, names, tcol, icol, _why = R.csv_file_row("f", "ID,Body", "body", "id")
    assert (names, tcol, icol) == (["ID", "Body"], "Body", "ID")


def test_follow_symlinks_must_be_a_boolean():
    with pytest.raises(ConfigError) as err:
        _cfg(follow_symlinks="sometimes")
    assert "input.follow_symlinks" in str(err.value) and "true, false" in str(err.value)
    assert _cfg(follow_symlinks=True).input.follow_symlinks is True


def _parquet(path: Path, rows: list[dict]) -> Path:
    schema = pa.schema([("id", pa.string()), ("content", pa.string())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def _hostile_input(root: Path) -> Path:
    src, outside = root / "in", root / "outside"
    src.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("Secret outside the input folder.", encoding="utf-8")
    (src / "good.txt").write_text("A good text document.", encoding="utf-8")
    (src / "good.jsonl").write_text('{"content": "line one"}\n{"content": "line two"}\n')
    (src / "rows.csv").write_text("id,content\nc1,CSV one\nc2,CSV two\n", encoding="utf-8")
    (src / "swapped.csv").write_text("content,lang,id\nCSV three,en,c3\n", encoding="utf-8")
    _parquet(src / "rows.parquet", [{"id": "p1", "content": "Parquet one"}])
    for fmt in R.FILE_FORMATS:
        (src / f"empty.{fmt}").write_bytes(b"")
    (src / "blank.jsonl").write_bytes(b"\n\n")
    (src / "array.json").write_bytes(b"[]")
    (src / "header.csv").write_bytes(b"id,content\n")
    _parquet(src / "no_rows.parquet", [])
    whole = _parquet(src / "half.parquet", [{"id": "h1", "content": "Lost half."}]).read_bytes()
    (src / "half.parquet").write_bytes(whole[: len(whole) // 2])
    (src / "utf16le.txt").write_bytes("\ufeffUTF-16 little-endian: héllo".encode("utf-16-le"))
    (src / "utf16be.md").write_bytes("\ufeffUTF-16 big-endian: wörld".encode("utf-16-be"))
    (src / "utf16.jsonl").write_bytes(
        '\ufeff{"content": "UTF-16 jsonl: 日本"}\n'.encode("utf-16-le")
    )
    (src / "big.txt").write_bytes(b"x" * 10_000)  # > 4 bytes x max_doc_chars: never read
    (src / "mid.txt").write_text("中" * 1200, encoding="utf-8")  # 3,600 bytes, 1,200 chars
    lines = [json.dumps({"content": f"Small record {i:04d}."}) for i in range(200)]
    (src / "many.jsonl").write_text("\n".join(lines), encoding="utf-8")  # big file, small docs
    (src / "alias.txt").symlink_to(src / "good.txt")  # inside: followed
    (src / "leak.txt").symlink_to(outside / "secret.txt")
    (src / "leakdir").symlink_to(outside, target_is_directory=True)
    (src / "dangling.txt").symlink_to(root / "nowhere.txt")
    return src


@pytest.fixture(scope="module")
def hostile(spark, tmp_path_factory):
    root, src, tables, result = _ingested(spark, tmp_path_factory, "hostile", _hostile_input)
    quar = {
        (os.path.relpath(q["source"], src), q["locator"]): q.asDict()
        for q in tables.read("quarantine").collect()
    }
    docs = [r.asDict(recursive=True) for r in tables.read("documents").collect()]
    return {"root": root, "src": src, "result": result, "quar": quar, "docs": docs}


HOSTILE_QUARANTINE = {
    **{f"empty.{fmt}": ("empty_file", "empty file (0 bytes)") for fmt in R.FILE_FORMATS},
    "blank.jsonl": ("empty_file", "no records in its 2 bytes"),
    "array.json": ("empty_file", "no records in its 2 bytes"),
    "header.csv": ("empty_file", "a header and no rows"),
    "no_rows.parquet": ("empty_file", "a parquet file with no rows"),
    "half.parquet": ("corrupt_file", "not a readable parquet file ("),
    "big.txt": ("oversized_document", "file of 10000 bytes, more than input.max_doc_chars"),
    "mid.txt": ("oversized_document", "1200 characters, more than input.max_doc_chars"),
    "leak.txt": ("unfollowed_symlink", "symbolic link to {outside}/secret.txt, outside"),
    "leakdir": ("unfollowed_symlink", "symbolic link to {outside}, outside the input folder"),
    "dangling.txt": ("unfollowed_symlink", "symbolic link to {root}/nowhere.txt, which does"),
}


def test_hostile_files_are_quarantined_with_their_reason(hostile):
    root = hostile["root"]
    got = {src: (q["reason"], q["detail"]) for (src, loc), q in hostile["quar"].items()}
    assert {loc for _src, loc in hostile["quar"]} == {"file"}
    assert {r for r, _detail in got.values()} >= set(WHOLE_FILE_REASONS)
    assert set(got) == set(HOSTILE_QUARANTINE)
    for name, (reason, start) in HOSTILE_QUARANTINE.items():
        start = start.format(outside=root / "outside", root=root)
        assert got[name][0] == reason and got[name][1].startswith(start), (name, got[name])
    assert "magic number" in got["half.parquet"][1]  # the parquet reader's own words
    assert got["big.txt"][1].endswith("not read")
    assert "input.follow_symlinks: true" in got["leak.txt"][1]


def test_hostile_input_keeps_every_good_document(hostile):
    src = hostile["src"]
    by_text = {d["text"]: d for d in hostile["docs"]}
    expected = {
        "A good text document.",
        "line one",
        "line two",
        "CSV one",
        "CSV two",
        "CSV three",
        "Parquet one",
        "UTF-16 little-endian: héllo",
        "UTF-16 big-endian: wörld",
        "UTF-16 jsonl: 日本",
        *(f"Small record {i:04d}." for i in range(200)),
    }
    assert set(by_text) == expected
    good = by_text["A good text document."]
    assert [os.path.relpath(s["source"], src) for s in good["sources"]] == [
        "alias.txt",
        "good.txt",
    ]
    three = by_text["CSV three"]  # its own header: columns in another order, one more
    assert (three["source_id"], three["locator"], three["metadata"]) == (
        "c3",
        "row:c3",
        {"lang": "en"},
    )
    counts = hostile["result"].counts
    assert counts["documents_read"] == len(expected) + 1  # alias.txt
    assert counts["quarantined"] == len(HOSTILE_QUARANTINE)
    assert counts["quarantined_empty_file"] == 10 and counts["quarantined_corrupt_file"] == 1


def test_symlinks_are_followed_when_configured(spark, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (tmp_path / "secret.txt").write_text("Outside, but wanted.", encoding="utf-8")
    (src / "own.txt").write_text("Inside.", encoding="utf-8")
    (src / "leak.txt").symlink_to(tmp_path / "secret.txt")
    (src / "dangling.txt").symlink_to(tmp_path / "nowhere.txt")

    def read(**input_cfg) -> dict[str, tuple]:
        rows = ingest.read_input(spark, str(src), _cfg(**input_cfg).input).collect()
        return {Path(r["source"]).name: (r["text"], r["reason"]) for r in rows}

    assert read(follow_symlinks=True) == {
        "own.txt": ("Inside.", None),
        "leak.txt": ("Outside, but wanted.", None),
        "dangling.txt": (None, "unfollowed_symlink"),  # leads nowhere: never followed
    }
    assert read()["leak.txt"] == (None, "unfollowed_symlink")


def test_only_unreadable_parquet_files(spark, tmp_path):
    """No footer to infer a schema from: the read itself would fail the job."""
    (tmp_path / "zero.parquet").write_bytes(b"")
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 not really")
    rows = ingest.read_input(spark, str(tmp_path), _cfg().input).collect()
    got = {Path(r["source"]).name: (r["locator"], r["reason"]) for r in rows}
    assert got == {"zero.parquet": ("file", "empty_file"), "junk.parquet": ("file", "corrupt_file")}


SMALL_FORMATS = ("txt", "md", "jsonl", "json", "csv")


def _small_file(path: Path, fmt: str, text: str) -> None:
    if fmt in R.WHOLE_FILE_FORMATS:
        path.write_text(text, encoding="utf-8")
    elif fmt == "jsonl":
        path.write_text(json.dumps({"content": text}) + "\n", encoding="utf-8")
    elif fmt == "json":
        path.write_text(json.dumps([{"content": text}]), encoding="utf-8")
    else:
        path.write_text(f"content\n{text}\n", encoding="utf-8")


def test_twenty_thousand_small_files(spark, tmp_path):
    """One read per format group, packed into a few tasks: every document arrives in
    bounded time (per-file reads took minutes)."""
    src, n = tmp_path / "many", 20_000
    for i in range(n):
        folder = src / f"d{i % 40}"
        folder.mkdir(parents=True, exist_ok=True)
        fmt = SMALL_FORMATS[i % len(SMALL_FORMATS)]
        _small_file(folder / f"f{i}.{fmt}", fmt, f"Small document number {i}.")
    tables = Tables(spark, tmp_path / "out")
    started = time.monotonic()
    res = ingest.STAGE.run(_ctx(spark, tables, src))
    elapsed = time.monotonic() - started
    print(f"ingest of {n} small files: {elapsed:.1f} s")
    assert (res.counts["documents_read"], res.counts["quarantined"]) == (n, 0)
    assert res.counts["documents_written"] == tables.read("documents").count() == n
    assert elapsed < 240  # per-file reads: 343 s for 20,000 text files, Python workers alone
