"""Partition + generate on a small bilingual graph against the stand-in over real HTTP:
every mode yields parsed QA with lineage back to chunks and documents; reruns are free."""

from __future__ import annotations

import json

import pytest
from contexts import stage_context, with_scratch
from pyspark.sql import functions as F
from rows import frame, merge_rows, row

from graphgen_spark.config import MODES, build_config
from graphgen_spark.dryrun import render
from graphgen_spark.ids import h
from graphgen_spark.language import han_share
from graphgen_spark.pipeline import dry_run, run_pipeline
from graphgen_spark.prompts.generate import PROMPT_VERSION
from graphgen_spark.stages.generate import normalise_question, write_qa
from graphgen_spark.standin import StandinOptions, StandinServer
from graphgen_spark.tables import Tables

ENTITIES = [  # id, name, description(s), chunk
    (
        "curie",
        "Marie Curie",
        ["Physicist who studied radioactivity.", "Won two Nobel Prizes."],
        "c1",
    ),
    ("radium", "Radium", ["A radioactive element discovered in 1898."], "c1"),
    ("sorbonne", "Sorbonne", ["A university in Paris."], "c1"),
    ("pierre", "Pierre Curie", ["Physicist and co-discoverer of radium."], "c1"),
    ("tu", "屠呦呦", ["中国药学家，发现了青蒿素。"], "c2"),
    ("qhs", "青蒿素", ["一种治疗疟疾的药物。"], "c2"),
    ("academy", "中国中医科学院", ["位于北京的中医药研究机构。"], "c2"),
]
RELATIONS = [  # src, dst, description, loss
    ("curie", "radium", "Marie Curie discovered radium together with Pierre Curie.", 1.2),
    ("curie", "sorbonne", "Marie Curie taught at the Sorbonne.", 0.6),
    ("curie", "pierre", "Marie Curie married Pierre Curie in 1895.", 0.9),
    ("qhs", "tu", "屠呦呦从青蒿中提取出了青蒿素。", 1.5),
    ("academy", "tu", "屠呦呦长期在中国中医科学院工作。", 0.4),
]


def write_graph(spark, tables: Tables) -> None:
    docs = [
        row("documents", doc_id=d, text=t) for d, t in [("d1", "about curie"), ("d2", "关于屠呦呦")]
    ]
    chunks = [
        row("chunks", chunk_id=c, doc_id=d, text=t, language=lang)
        for c, d, t, lang in [("c1", "d1", "about curie", "en"), ("c2", "d2", "关于屠呦呦", "zh")]
    ]
    doc_of = {"c1": "d1", "c2": "d2"}
    ents = [
        row(
            "entities",
            entity_id=i,
            key=i,
            name=name,
            type="concept",
            description="\n".join(descs),
            descriptions=descs,
            summarised=False,
            n_tokens=10,
            is_placeholder=False,
            chunk_ids=[c],
            doc_ids=[doc_of[c]],
        )
        for i, name, descs, c in ENTITIES
    ]
    names = {i: n for i, n, _, _ in ENTITIES}
    chunk = {i: c for i, _, _, c in ENTITIES}
    rels = [
        row(
            "relations",
            edge_id=f"{a}-{b}",
            src_id=a,
            dst_id=b,
            src_name=names[a],
            dst_name=names[b],
            description=d,
            descriptions=[d],
            summarised=False,
            n_tokens=12,
            chunk_ids=[chunk[a]],
            doc_ids=[doc_of[chunk[a]]],
        )
        for a, b, d, _ in RELATIONS
    ]
    scores = [
        row(
            "gap_scores",
            element_id=f"{a}-{b}",
            element_kind="relation",
            trainee_model="trainee-a",
            loss=loss,
            status="ok",
        )
        for a, b, _, loss in RELATIONS
    ]
    for name, rows in [
        ("documents", docs),
        ("chunks", chunks),
        ("entities", ents),
        ("relations", rels),
        ("gap_scores", scores),
    ]:
        merge_rows(tables, name, rows)


def make_cfg(url: str, **generate):
    return build_config(
        {
            "llm": {
                "synthesizer": {"base_url": url, "model": "standin"},
                "trainee": {"model": "trainee-a"},
                "concurrency_per_task": 4,
                "backoff_min_s": 0.01,
                "backoff_max_s": 0.05,
            },
            "generate": {"modes": MODES, "num_questions": 2, **generate},
            "export": {"formats": ["alpaca", "sharegpt", "chatml"], "include_metadata": True},
            "partition": {"unit": {"min_units": 2, "max_units": 4}, "community": {"max_size": 4}},
        },
        env=False,
    )


@pytest.fixture(scope="module")
def generated(spark, tmp_path_factory):
    out = tmp_path_factory.mktemp("generate_out")
    tables = Tables(spark, out)
    write_graph(spark, tables)
    res: dict = {"tables": tables}
    with StandinServer(StandinOptions(), announce=False) as server:
        cfg = make_cfg(server.base_url)
        res["cfg"] = cfg
        stages = ["partition", "generate", "export", "evaluate"]
        run_pipeline(cfg, None, out, stages, spark=spark)
        res["first_calls"] = server.stats()["requests_total"]
        res["qa_version"] = tables.version("qa")
        res["files"] = {p.name: p.read_bytes() for p in (out / "export").glob("*.jsonl")}
        run_pipeline(cfg, None, out, stages, spark=spark)
        res["rerun_calls"] = server.stats()["requests_total"] - res["first_calls"]
    res["qa"] = [r.asDict() for r in tables.read("qa").collect()]
    res["files_after_rerun"] = {p.name: p.read_bytes() for p in (out / "export").glob("*.jsonl")}
    return res


def test_every_mode_yields_parsed_qa(generated):
    by_mode: dict[str, list[dict]] = {}
    for r in generated["qa"]:
        by_mode.setdefault(r["mode"], []).append(r)
    assert set(by_mode) == set(MODES)
    for mode, rows in by_mode.items():
        ok = [r for r in rows if r["status"] == "ok"]
        assert ok, mode
        for r in ok:
            assert r["question"] and r["answer"], (mode, r)
    for r in by_mode["multiple_choice"]:
        assert set(r["options"]) == {"A", "B", "C", "D"} and r["answer"] in r["options"]
    for r in by_mode["fill_in_blank"]:
        assert r["question"].count("____") == len(r["answers"])
    assert all(r["reasoning_path"] for r in by_mode["cot"])
    assert {r["answer"] for r in by_mode["true_false"]} == {"true", "false"}


def test_lineage_joins_back_to_chunks_and_documents(spark, generated):
    tables = generated["tables"]
    qa = tables.read("qa")
    exploded = qa.select("qa_id", F.explode("chunk_ids").alias("chunk_id"))
    joined = exploded.join(tables.read("chunks"), "chunk_id").join(
        tables.read("documents").select("doc_id"), "doc_id"
    )
    assert joined.select("qa_id").distinct().count() == qa.count()
    for r in generated["qa"]:
        assert r["batch_id"] and r["request_id"] and r["node_ids"] is not None
        assert set(r["doc_ids"]) <= {"d1", "d2"} and r["doc_ids"]
        assert r["qa_id"] == h(r["batch_id"], r["mode"], r["item_index"], PROMPT_VERSION, "standin")
    calls = tables.read("llm_calls").select("request_id")
    assert qa.join(calls, "request_id", "left_anti").count() == 0


def test_output_language_follows_the_source(generated):
    for r in generated["qa"]:
        if r["mode"] == "aggregated":
            continue
        text = r["question"] + r["answer"]
        assert (han_share(text) >= 0.3) == (r["language"] == "zh"), r
    assert {r["language"] for r in generated["qa"]} == {"en", "zh"}


def test_atomic_splits_merged_descriptions_and_flags_exact_duplicates(generated):
    atomic = [r for r in generated["qa"] if r["mode"] == "atomic"]
    curie = [r for r in atomic if r["node_ids"] == ["curie"]]
    assert sorted(r["item_index"] for r in curie) == [0, 1]
    groups: dict[str, list[dict]] = {}
    for r in atomic:
        groups.setdefault(normalise_question(r["question"]), []).append(r)
    assert any(len(g) > 1 for g in groups.values())
    for g in groups.values():
        originals = [r for r in g if r["status"] == "ok"]
        assert len(originals) == 1
        assert all(r["duplicate_of"] == originals[0]["qa_id"] for r in g if r is not originals[0])


def _qa(qa_id: str, batch: str, question: str, status: str = "ok") -> dict:
    return row(
        "qa",
        qa_id=qa_id,
        mode="atomic",
        item_index=0,
        question=question,
        language="en",
        answer=f"answer of {qa_id}: " + " ".join(qa_id * 3 for _ in range(8)),
        batch_id=batch,
        status=status,
        flags=[],
    )


@pytest.mark.parametrize("duplicates", ["flag", "drop"])
def test_new_qa_flags_duplicates_across_runs_in_the_same_write(spark, tmp_path, duplicates):
    """A stored row that a new, better-ranked row repeats is flagged (or dropped) by the
    write that inserts the new rows, which arrive already flagged: one commit in flag mode."""
    tables = Tables(spark, tmp_path / "out")
    ranks = [
        row("subgraphs", batch_id=b, seed_rank=r) for b, r in [("b1", 1), ("b2", 2), ("b3", 3)]
    ]
    merge_rows(tables, "subgraphs", ranks)
    merge_rows(tables, "qa", [_qa("old", "b2", "What is radium?")])
    before = tables.version("qa")
    cfg = {"generate": {"modes": ["atomic"], "duplicates": duplicates}}
    with with_scratch(stage_context(spark, tables, cfg)) as ctx:
        new = [
            _qa("best", "b1", "what is Radium"),
            _qa("worse", "b3", "WHAT IS RADIUM??"),
            _qa("unsupported", "b3", "What is radium?", status="unsupported"),
            _qa("other", "b3", "Where did Marie Curie teach?"),
        ]
        inserted, marked = write_qa(ctx, frame(spark, "qa", new))
        got = {r["qa_id"]: r for r in tables.read("qa").collect()}
        assert marked == 2
        if duplicates == "flag":
            assert (inserted, tables.version("qa")) == (4, before + 1)
            for dup in ("old", "worse"):
                assert (got[dup]["status"], got[dup]["duplicate_of"]) == ("duplicate", "best")
                assert got[dup]["flags"] == ["duplicate"]
            assert {k: got[k]["status"] for k in ("best", "unsupported", "other")} == {
                "best": "ok",
                "unsupported": "unsupported",
                "other": "ok",
            }
        else:
            assert (inserted, sorted(got)) == (3, ["best", "other", "unsupported"])
        # the same rows again: nothing is written (drop mode drops its duplicate once more)
        version = tables.version("qa")
        again = write_qa(ctx, frame(spark, "qa", new))
        assert (again, tables.version("qa")) == ((0, int(duplicates == "drop")), version)


def test_rerun_makes_no_calls_and_writes_nothing(generated):
    assert generated["first_calls"] > 0
    assert generated["rerun_calls"] == 0
    assert generated["tables"].version("qa") == generated["qa_version"]


def test_caps_and_invalid_answers(spark, tmp_path):
    out = tmp_path / "out"
    tables = Tables(spark, out)
    write_graph(spark, tables)
    bad = {"match": "屠呦呦", "content": json.dumps({"items": []})}
    script = tmp_path / "rules.json"
    script.write_text(json.dumps({"rules": [bad]}), "utf-8")
    with StandinServer(StandinOptions(script=str(script)), announce=False) as server:
        cfg = make_cfg(server.base_url, modes=["multiple_choice", "aggregated"], max_batches=1)
        run_pipeline(cfg, None, out, ["partition", "generate"], spark=spark)
    qa = tables.read("qa")
    per_batch = qa.groupBy("mode").agg(F.countDistinct("batch_id").alias("n")).collect()
    assert all(r["n"] <= 1 for r in per_batch)
    q = tables.read("quarantine").filter("stage = 'generate'").collect()
    # the zh batch's choice answer has no items: quarantined with its reason, never dropped
    assert all(r["reason"] in ("no_items", "language_mismatch") for r in q)
    n_batches = tables.read("subgraphs").filter("method = 'ece/unit'").count()
    mc_batches = qa.filter("mode = 'multiple_choice'").select("batch_id").distinct().count()
    assert mc_batches + len(q) >= min(1, n_batches)


def test_dry_run_counts_without_calling(spark, tmp_path):
    out = tmp_path / "dry"
    tables = Tables(spark, out)
    write_graph(spark, tables)
    cfg = make_cfg("http://127.0.0.1:9/v1")  # nothing listens there: any call would fail
    est = {e.stage: e for e in dry_run(cfg, None, out, ["partition", "generate"], spark=spark)}
    batches = {
        r["method"]: r["count"]
        for r in tables.read("subgraphs").groupBy("method").count().collect()
    }
    assert est["generate:atomic"].units == batches["unit"] + 1  # Marie Curie: 2 descriptions
    assert est["generate:multiple_choice"].units == batches["ece/unit"]
    agg = est["generate:aggregated"]
    assert (agg.units, agg.min_requests, agg.max_requests) == (
        batches["ece/edge_seed"],
        2 * batches["ece/edge_seed"],
        4 * batches["ece/edge_seed"],
    )
    assert agg.prompt_tokens > 0
    assert tables.read("llm_calls").count() == 0 and not tables.exists("qa")
    assert "nothing was sent" in render(cfg, list(est.values()))


def test_qa_check_marks_unsupported_answers(spark, tmp_path):
    out = tmp_path / "out"
    tables = Tables(spark, out)
    write_graph(spark, tables)
    veto = {
        "match": "Question: What is known about Radium?",
        "content": json.dumps({"supported": False, "reason": "adds a fact"}),
    }
    script = tmp_path / "rules.json"
    script.write_text(json.dumps({"rules": [veto]}), "utf-8")
    with StandinServer(StandinOptions(script=str(script)), announce=False) as server:
        cfg = make_cfg(server.base_url, modes=["atomic"], qa_check=True)
        run_pipeline(cfg, None, out, ["partition", "generate"], spark=spark)
    rows = [r.asDict() for r in tables.read("qa").collect()]
    radium = [r for r in rows if r["node_ids"] == ["radium"]]
    assert [(r["status"], r["flags"]) for r in radium] == [("unsupported", ["unsupported"])]
    others = [r for r in rows if r["node_ids"] != ["radium"] and r["status"] != "duplicate"]
    assert others and all(r["status"] == "ok" and r["flags"] == [] for r in others)
    checks = tables.read("llm_calls").filter(F.col("response_model").contains("QACheck")).count()
    assert checks == len(rows)  # one check per item, through the request table


def test_every_mode_exported_in_three_formats_with_lineage(generated):
    tables, files = generated["tables"], generated["files"]
    ok = {r["qa_id"]: r for r in generated["qa"] if r["status"] == "ok"}
    chunk_doc = {r["chunk_id"]: r["doc_id"] for r in tables.read("chunks").collect()}
    for mode in MODES:
        for fmt in ("alpaca", "sharegpt", "chatml"):
            lines = files[f"{mode}.{fmt}.jsonl"].decode("utf-8").splitlines()
            objs = [json.loads(line) for line in lines]
            ids = [o["meta"]["qa_id"] for o in objs]
            assert sorted(ids) == sorted(q for q, r in ok.items() if r["mode"] == mode)
            for o in objs:
                row = ok[o["meta"]["qa_id"]]
                assert set(row["doc_ids"]) == {chunk_doc[c] for c in row["chunk_ids"]}
                assert o["meta"]["doc_ids"] == row["doc_ids"]
    assert generated["files_after_rerun"] == files  # byte-identical on rerun
    metrics = {r["mode"]: r for r in tables.read("qa_metrics").collect()}
    assert set(metrics) == set(MODES)
    assert all(m["n"] > 0 and m["length_mean"] > 0 for m in metrics.values())
