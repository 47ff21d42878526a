"""Export stage (§7.5): exact alpaca / sharegpt / chatml objects for every mode, status
filter, deterministic train/validation split, byte-identical reruns (local stream and
Spark-writer paths), n-gram decontamination against an evaluation file (words and Han
characters)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from contexts import stage_context
from rows import merge_rows, row

from graphgen_spark.config import ConfigError
from graphgen_spark.export.decontaminate import eval_texts, ngrams
from graphgen_spark.export.formats import export_record
from graphgen_spark.ids import h
from graphgen_spark.stages import export as export_stage
from graphgen_spark.stages.base import StageContext
from graphgen_spark.tables import Tables

SYSTEM = "You are a careful tutor. 请用输入的语言回答。"
OPTIONS_MC = {"A": "Iron", "B": "Radium", "C": "Neon", "D": "Argon"}
OPTIONS_MA = {
    "D": "Turing Award",
    "A": "Nobel Prize in Physics",
    "C": "Nobel Prize in Chemistry",
    "B": "Fields Medal",
}
CURIE_1898 = (
    "Marie Curie and Pierre Curie discovered the chemical elements polonium and radium "
    "in Paris during the year 1898."
)
CURIE_RAYS = (
    "Marie Curie studied radioactivity, a term she coined herself, and her careful "
    "measurements of uranium rays showed that radiation came from the atom itself."
)
QHS = "屠呦呦从黄花蒿（青蒿）中提取出了青蒿素，这是一种治疗疟疾的有效药物。"


def qa_row(key: str, mode: str, question: str, answer: str | None = None, **extra) -> dict:
    return row(
        "qa",
        **{
            "qa_id": h("batch", mode, key),
            "mode": mode,
            "item_index": 0,
            "question": question,
            "answer": answer,
            "language": "en",
            "status": "ok",
            "loss": 0.75,
            "difficulty": 1,
            "doc_ids": ["d1"],
            **extra,
        },
    )


# (row, exported Q, exported A), written out by hand
CASES = [
    (
        qa_row("en", "atomic", "What did the Curies discover in 1898?", CURIE_1898),
        "What did the Curies discover in 1898?",
        CURIE_1898,
    ),
    (
        qa_row("zh", "atomic", "屠呦呦从哪种植物中提取出了青蒿素？", QHS, language="zh", loss=None),
        "屠呦呦从哪种植物中提取出了青蒿素？",
        QHS,
    ),
    (
        qa_row("0", "aggregated", "How did Marie Curie's research shape physics?", CURIE_RAYS),
        "How did Marie Curie's research shape physics?",
        CURIE_RAYS,
    ),
    (
        qa_row("0", "multi_hop", "Where taught the discoverer of radium?", "At the Sorbonne."),
        "Where taught the discoverer of radium?",
        "At the Sorbonne.",
    ),
    (
        qa_row(
            "0",
            "cot",
            "Why did Curie receive two Nobel Prizes?",
            "She shared the physics prize for radiation work and later won chemistry for radium.",
            reasoning_path="Find each prize; relate each to a discovery.",
        ),
        "Why did Curie receive two Nobel Prizes?",
        "She shared the physics prize for radiation work and later won chemistry for radium.",
    ),
    (
        qa_row(
            "0", "multiple_choice", "Which element did Curie discover?", "B", options=OPTIONS_MC
        ),
        "Which element did Curie discover?\nOptions:\nA. Iron\nB. Radium\nC. Neon\nD. Argon",
        "B",
    ),
    (
        qa_row(
            "0",
            "multi_answer",
            "Which did Curie win?",
            "A, C",
            options=OPTIONS_MA,
            answers=["C", "A"],
        ),
        "Which did Curie win?\nOptions:\nA. Nobel Prize in Physics\nB. Fields Medal\n"
        "C. Nobel Prize in Chemistry\nD. Turing Award",
        "A, C",
    ),
    (
        qa_row(
            "0",
            "fill_in_blank",
            "Curie was born in ____ in ____.",
            "Warsaw; 1867",
            answers=["Warsaw", "1867"],
        ),
        "Curie was born in ____ in ____.",
        "Warsaw; 1867",
    ),
    (
        qa_row("en", "true_false", "Marie Curie won two Nobel Prizes.", "true"),
        "Marie Curie won two Nobel Prizes.",
        "True",
    ),
    (
        qa_row("zh", "true_false", "屠呦呦在美国的一所大学发现了青蒿素。", "false", language="zh"),
        "屠呦呦在美国的一所大学发现了青蒿素。",
        "错误",
    ),
]
FLAGGED = [
    qa_row("dup", "atomic", "What did the Curies find in 1898?", "Radium.", status="duplicate"),
    qa_row("bad", "multi_hop", "Who?", "Nobody.", status="unsupported"),
]
MODES = sorted({row["mode"] for row, _, _ in CASES})


def make_ctx(spark, tables: Tables, **export) -> StageContext:
    cfg = {"generate": {"modes": ["atomic"]}, "export": export}
    return stage_context(spark, tables, cfg, run_id="run-export")


def export_folder(tables: Tables) -> Path:
    return Path(tables.output_dir) / "export"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.jsonl"))}


def expected(fmt: str, q: str, a: str, meta: dict | None, system: str | None) -> dict:
    if fmt == "alpaca":
        obj = {"instruction": q, "input": "", "output": a}
        if system:
            obj["system"] = system
    elif fmt == "sharegpt":
        obj = {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
        if system:
            obj["system"] = system
    else:
        msgs = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        obj = {"messages": ([{"role": "system", "content": system}] if system else []) + msgs}
    if meta is not None:
        obj["meta"] = meta
    return obj


def meta_of(row: dict) -> dict:
    keys = ("qa_id", "mode", "language", "loss", "difficulty", "doc_ids")
    return {k: row[k] for k in keys}


# -- pure formatting ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("row", "q", "a"), CASES, ids=[f"{r['mode']}-{r['language']}" for r, _, _ in CASES]
)
def test_default_objects_per_mode(row, q, a):
    assert export_record(row, "alpaca") == {"instruction": q, "input": "", "output": a}
    assert export_record(row, "sharegpt") == {
        "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
    }
    assert export_record(row, "chatml") == {
        "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    }


def test_malformed_rows_raise():
    with pytest.raises(ValueError, match="true_false"):
        export_record(qa_row("x", "true_false", "S.", "maybe"), "chatml")
    with pytest.raises(ValueError, match="without options"):
        export_record(qa_row("x", "multiple_choice", "Q?", "A"), "chatml")


def test_ngrams_words_and_han_characters():
    assert ngrams("The cat, THE cat!", 2) == ["the cat", "cat the"]
    assert ngrams("one two", 3) == []
    assert ngrams("青蒿素，治疗疟疾。", 3) == ["青蒿素", "蒿素治", "素治疗", "治疗疟", "疗疟疾"]


# -- the stage ----------------------------------------------------------------------------
def test_all_formats_with_system_prompt_and_metadata(spark, tables):
    merge_rows(tables, "qa", [r for r, _, _ in CASES] + FLAGGED)
    ctx = make_ctx(
        spark,
        tables,
        formats=["alpaca", "sharegpt", "chatml"],
        system_prompt=SYSTEM,
        include_metadata=True,
    )
    result = export_stage.STAGE.run(ctx)

    folder = export_folder(tables)
    names = {f"{m}.{f}.jsonl" for m in MODES for f in ("alpaca", "sharegpt", "chatml")}
    assert set(snapshot(folder)) == names
    for mode in MODES:
        cases = sorted((c for c in CASES if c[0]["mode"] == mode), key=lambda c: c[0]["qa_id"])
        for fmt in ("alpaca", "sharegpt", "chatml"):
            got = read_jsonl(folder / f"{mode}.{fmt}.jsonl")
            assert got == [expected(fmt, q, a, meta_of(r), SYSTEM) for r, q, a in cases]

    raw = (folder / "true_false.chatml.jsonl").read_bytes()
    assert "错误".encode() in raw and "请用输入的语言回答".encode() in raw
    assert b"\\u" not in raw  # non-ASCII unescaped
    assert raw.endswith(b"\n") and raw.count(b"\n") == 2
    # flagged rows stay out, and are counted
    exported_ids = {
        o["meta"]["qa_id"] for m in MODES for o in read_jsonl(folder / f"{m}.chatml.jsonl")
    }
    assert exported_ids == {r["qa_id"] for r, _, _ in CASES}
    assert result.counts["atomic_skipped_duplicate"] == 1
    assert result.counts["multi_hop_skipped_unsupported"] == 1
    assert result.counts["atomic_exported"] == 2
    assert result.counts["exported"] == len(CASES)
    assert result.counts["files_written"] == len(names)

    # include_flagged: the duplicate and unsupported rows join their files (rewritten in place)
    result = export_stage.STAGE.run(make_ctx(spark, tables, include_flagged=True))
    for mode in ("atomic", "multi_hop"):
        rows = sorted(
            [r for r, _, _ in CASES if r["mode"] == mode]
            + [r for r in FLAGGED if r["mode"] == mode],
            key=lambda r: r["qa_id"],
        )
        got = read_jsonl(folder / f"{mode}.chatml.jsonl")
        assert [o["messages"][0]["content"] for o in got] == [r["question"] for r in rows]
    assert result.counts["exported"] == len(CASES) + len(FLAGGED)
    assert "atomic_skipped_duplicate" not in result.counts


def test_split_is_deterministic_disjoint_and_rerun_identical(spark, tables, tmp_path, monkeypatch):
    rows = [qa_row(str(i), "atomic", f"Question {i}?", f"Answer {i}.") for i in range(40)]
    rows += [qa_row(str(i), "true_false", f"Statement {i}.", "true") for i in range(20)]
    merge_rows(tables, "qa", rows)
    ctx = make_ctx(
        spark, tables, formats=["alpaca"], include_metadata=True, validation_fraction=0.3
    )
    result = export_stage.STAGE.run(ctx)
    folder = export_folder(tables)
    first = snapshot(folder)
    assert set(first) == {
        f"{m}.alpaca.{s}.jsonl" for m in ("atomic", "true_false") for s in ("train", "validation")
    }

    for mode, n in (("atomic", 40), ("true_false", 20)):
        train = [o["meta"]["qa_id"] for o in read_jsonl(folder / f"{mode}.alpaca.train.jsonl")]
        val = [o["meta"]["qa_id"] for o in read_jsonl(folder / f"{mode}.alpaca.validation.jsonl")]
        ids = {r["qa_id"] for r in rows if r["mode"] == mode}
        want_val = {i for i in ids if export_stage.split_value(42, i) < 0.3}
        assert set(val) == want_val and set(train) == ids - want_val
        assert 0 < len(val) < n and train == sorted(train) and val == sorted(val)
        assert result.counts[f"{mode}_validation"] == len(val)
        assert result.counts[f"{mode}_train"] == len(train)

    export_stage.STAGE.run(ctx)  # rerun: byte-identical files
    assert snapshot(folder) == first

    # the object-store path (Spark text write + Hadoop move) writes the same bytes
    remote = f"file://{tmp_path}/remote/export"
    monkeypatch.setattr(export_stage, "export_dir", lambda ctx: remote)
    monkeypatch.setattr(export_stage, "local_path", lambda path: None)
    export_stage.STAGE.run(ctx)
    assert snapshot(tmp_path / "remote" / "export") == first
    assert not list((tmp_path / "remote" / "export").glob("_tmp-*"))


def test_decontamination_drops_shared_13_grams(spark, tables, tmp_path):
    merge_rows(tables, "qa", [r for r, _, _ in CASES])
    evaluation = tmp_path / "eval.jsonl"
    items = [
        # 14 words of the English atomic answer, other case and punctuation: 2 shared 13-grams
        {
            "question": "Who?",
            "answer": "MARIE CURIE and Pierre Curie discovered the chemical "
            "elements polonium, and radium in Paris!",
            "id": 7,
        },
        # 12 words of the aggregated answer, then a different word: no 13-gram in common
        {
            "instruction": "Marie Curie studied radioactivity, a term she coined herself, and "
            "her careful experiments",
            "input": "",
            "output": "x",
        },
        # 13 Han characters of the Chinese atomic answer, punctuation aside
        {"text": "据报道，这是一种治疗疟疾的有效药物。", "meta": {"source": ["nested"]}},
        # 12 characters of the Chinese true/false statement only
        {"text": "屠呦呦在美国的一所大学发明了新药"},
    ]
    evaluation.write_text("\n".join(json.dumps(i, ensure_ascii=False) for i in items) + "\n\n")
    ctx = make_ctx(spark, tables, decontaminate_against=str(evaluation))
    result = export_stage.STAGE.run(ctx)

    folder = export_folder(tables)
    en, zh = CASES[0][0], CASES[1][0]
    report = read_jsonl(folder / "decontamination.jsonl")
    assert report == sorted(
        [
            {
                "qa_id": en["qa_id"],
                "mode": "atomic",
                "field": "answer",
                "ngram": "curie and pierre curie discovered the chemical elements polonium "
                "and radium in paris",
                "n_matched": 2,
            },
            {
                "qa_id": zh["qa_id"],
                "mode": "atomic",
                "field": "answer",
                "ngram": "这是一种治疗疟疾的有效药物",
                "n_matched": 1,
            },
        ],
        key=lambda r: r["qa_id"],
    )
    assert not (folder / "atomic.chatml.jsonl").read_text(encoding="utf-8")  # both dropped
    kept = {m: len(read_jsonl(folder / f"{m}.chatml.jsonl")) for m in MODES}
    assert kept == {m: sum(r["mode"] == m for r, _, _ in CASES[2:]) for m in MODES}
    assert result.counts["atomic_contaminated"] == 2
    assert result.counts["contaminated"] == 2
    assert result.counts["exported"] == len(CASES) - 2


def test_eval_file_formats(spark, tmp_path):
    listed = tmp_path / "eval.json"
    listed.write_text(json.dumps([{"q": "a", "a": ["b", {"c": "d"}]}, "e", 3]))
    plain = tmp_path / "eval.txt"
    plain.write_text("first line\n\n  \nsecond line\n")
    broken = tmp_path / "bad.jsonl"
    broken.write_text('{"q": "ok"}\nnot json\n')

    def texts(path: Path) -> list[str]:
        return sorted(r["text"] for r in eval_texts(spark, str(path)).collect())

    assert texts(listed) == ["a", "b", "d", "e"]
    assert texts(plain) == ["first line", "second line"]
    with pytest.raises(ConfigError, match="export.decontaminate_against.*not valid JSONL"):
        texts(broken)


def test_missing_eval_file_names_the_key(spark, tables, tmp_path):
    ctx = make_ctx(spark, tables, decontaminate_against=str(tmp_path / "nope.jsonl"))
    with pytest.raises(ConfigError, match="export.decontaminate_against.*not found"):
        export_stage.STAGE.run(ctx)
    assert not (export_folder(tables) / "atomic.chatml.jsonl").exists()
