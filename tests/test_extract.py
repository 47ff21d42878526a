"""The extract stage (method.md §3) on real Spark + Delta against the stand-in over HTTP.

Stage runs are slow (each round is several Spark jobs and a Delta MERGE), so the pipeline
runs happen once per module-scoped fixture and the tests assert on what they left behind.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from rows import chunk_row, merge_rows

from graphgen_spark.config import DEFAULT_ENTITY_TYPES, build_config
from graphgen_spark.ids import h
from graphgen_spark.pipeline import run_pipeline
from graphgen_spark.stages.extract import (
    EMPTY,
    Caps,
    ExtractedEntity,
    ExtractedRelation,
    Extraction,
    normalise,
    union_new,
)
from graphgen_spark.stages.extract import (
    STAGE as EXTRACT,
)
from graphgen_spark.standin import StandinOptions, StandinServer
from graphgen_spark.tables import SCHEMAS, Tables

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TYPES = {*DEFAULT_ENTITY_TYPES, "other"}
OUTPUT_TABLES = EXTRACT.writes


def make_cfg(url: str, llm: dict | None = None, **extract):
    return build_config(
        {
            "llm": {
                "backoff_min_s": 0.01,
                "backoff_max_s": 0.05,
                **(llm or {}),
                "synthesizer": {"base_url": url, "model": "standin", "timeout_s": 2},
            },
            "spark": {"shuffle_partitions": 4},
            "extract": extract,
        },
        env=False,
    )


def rows(tables: Tables, name: str) -> list[dict]:
    return [r.asDict(recursive=True) for r in tables.read(name).collect()]


def has_han(s: str) -> bool:
    return any("\u4e00" <= c <= "\u9fff" for c in s)


def snapshot(tables: Tables) -> dict[str, tuple[int, int]]:
    return {n: (tables.version(n), tables.read(n).count()) for n in OUTPUT_TABLES}


# =============================================================================================
# 1. The shared samples: ingest -> chunk -> extract, then a rerun of extract
# =============================================================================================
@pytest.fixture(scope="module")
def shared_run(spark, tmp_path_factory):
    if not SHARED_DATA.exists():
        pytest.skip(f"shared sample data not found at {SHARED_DATA}")
    src = tmp_path_factory.mktemp("shared_src")
    for name in ("raw_demo.jsonl", "chunked_demo.json", "txt_demo.txt"):
        shutil.copy(SHARED_DATA / name, src / name)
    # raw_demo.jsonl and chunked_demo.json hold the same texts, which ingest collapses into one
    # document each; a further pre-chunked document whose parts are two of those texts gives
    # chunk texts shared by different documents (one content_hash, several chunk_ids).
    lines = [
        json.loads(line)["content"]
        for line in (SHARED_DATA / "raw_demo.jsonl").read_text("utf-8").splitlines()
        if line.strip()
    ]
    parts = [{"content": lines[0]}, {"content": lines[-1]}]
    (src / "combined.json").write_text(json.dumps([parts], ensure_ascii=False), "utf-8")
    out = tmp_path_factory.mktemp("shared_out")
    tables = Tables(spark, out)
    with StandinServer(StandinOptions(), announce=False) as server:
        cfg = make_cfg(server.base_url)
        first_run = run_pipeline(
            cfg, str(src), out, stages=["ingest", "chunk", "extract"], spark=spark
        )
        first_stats = server.stats()
        before = snapshot(tables)
        # the stage itself on nothing new (a settled stage would be skipped altogether)
        again = cfg.model_copy(update={"run": cfg.run.model_copy(update={"skip_settled": False})})
        rerun = run_pipeline(again, str(src), out, stages=["extract"], spark=spark)
        second_stats = server.stats()
        after = snapshot(tables)
        # a copy whose outcomes were lost after their calls were paid (a crash between the
        # two): the rerun replays every conversation, several turns each, from llm_calls alone
        extracted = sorted(rows(tables, "extractions"), key=lambda r: r["content_hash"])
        lost = tmp_path_factory.mktemp("shared_lost") / "out"
        shutil.copytree(out, lost)
        lost_tables = Tables(spark, lost)
        for name in ("extractions", "entity_mentions", "relation_mentions", "mentioned_chunks"):
            spark.sql(f"DELETE FROM delta.`{lost_tables.location(name)}`")
        run_pipeline(cfg, str(src), lost, stages=["extract"], spark=spark)
        replay_stats = server.stats()
        replayed = sorted(rows(lost_tables, "extractions"), key=lambda r: r["content_hash"])
        replayed_mentions = lost_tables.read("entity_mentions").count()
    return {
        "extracted": extracted,
        "replayed": replayed,
        "replay_stats": replay_stats,
        "replayed_mentions": replayed_mentions,
        "tables": tables,
        "first_run": first_run,
        "rerun": rerun,
        "first_stats": first_stats,
        "second_stats": second_stats,
        "before": before,
        "after": after,
    }


def test_every_chunk_text_is_extracted_ok(shared_run):
    tables = shared_run["tables"]
    hashes = {r["content_hash"] for r in rows(tables, "chunks")}
    ext = {r["content_hash"]: r for r in rows(tables, "extractions")}
    assert len(hashes) >= 5
    assert set(ext) == hashes  # one conversation per distinct text, none left out
    for r in ext.values():
        assert r["status"] == "ok" and r["reason"] is None
        assert r["attempts"] == 1 and r["run_id"] == shared_run["first_run"]
        records = json.loads(r["records"])
        assert r["n_entities"] == len(records["entities"]) > 0
        assert r["n_relations"] == len(records["relations"])
    assert shared_run["first_stats"]["faults_total"] == 0


def test_mentions_in_both_languages(shared_run):
    tables = shared_run["tables"]
    keys = {r["key"] for r in rows(tables, "entity_mentions")}
    assert any(has_han(k) for k in keys)
    assert any(k.isascii() and any(c.isalpha() for c in k) for k in keys)
    chunk_lang = {r["chunk_id"]: r["language"] for r in rows(tables, "chunks")}
    assert set(chunk_lang.values()) == {"en", "zh"}
    for m in rows(tables, "entity_mentions"):
        # keys are the normalised displays (§3.4); types are from the configured list
        assert m["key"] and m["key"] == m["key"].casefold() and m["display"]
        assert m["type"] in TYPES
    # the mention table's key is (chunk_id, key)
    pairs = tables.read("entity_mentions").select("chunk_id", "key")
    assert pairs.count() == pairs.distinct().count()


def test_mentions_match_stored_records(shared_run):
    tables = shared_run["tables"]
    ext = {r["content_hash"]: json.loads(r["records"]) for r in rows(tables, "extractions")}
    ents: dict[str, set] = {}
    rels: dict[str, set] = {}
    for m in rows(tables, "entity_mentions"):
        ents.setdefault(m["chunk_id"], set()).add((m["content_hash"], m["key"], m["display"]))
    for m in rows(tables, "relation_mentions"):
        rels.setdefault(m["chunk_id"], set()).add((m["content_hash"], m["src_key"], m["dst_key"]))
        assert m["src_key"] < m["dst_key"]
    for c in rows(tables, "chunks"):
        rec = ext[c["content_hash"]]
        h_ = c["content_hash"]
        assert ents.get(c["chunk_id"], set()) == {
            (h_, e["key"], e["display"]) for e in rec["entities"]
        }
        assert rels.get(c["chunk_id"], set()) == {
            (h_, r["src_key"], r["dst_key"]) for r in rec["relations"]
        }
    # dangling: an endpoint that is not among the chunk's own entity keys
    keys_by_chunk = {cid: {k for _, k, _ in v} for cid, v in ents.items()}
    for m in rows(tables, "relation_mentions"):
        own = keys_by_chunk.get(m["chunk_id"], set())
        assert m["dangling"] == (m["src_key"] not in own or m["dst_key"] not in own)


def test_shared_text_is_credited_to_everychunk_row(shared_run):
    tables = shared_run["tables"]
    chunks = rows(tables, "chunks")
    by_hash: dict[str, list[str]] = {}
    for c in chunks:
        by_hash.setdefault(c["content_hash"], []).append(c["chunk_id"])
    shared = {k: v for k, v in by_hash.items() if len(v) >= 2}
    assert shared, "expected chunk texts shared by several documents"
    mentions = rows(tables, "entity_mentions")
    rel_mentions = rows(tables, "relation_mentions")
    ext = {r["content_hash"]: r for r in rows(tables, "extractions")}
    for content_hash, chunk_ids in shared.items():
        per_chunk = [
            sorted((m["key"], m["description"]) for m in mentions if m["chunk_id"] == cid)
            for cid in chunk_ids
        ]
        assert per_chunk[0], f"no mentions for chunk {chunk_ids[0]}"
        assert all(p == per_chunk[0] for p in per_chunk)  # identical credit
        assert len(per_chunk[0]) == ext[content_hash]["n_entities"]
        per_chunk_r = [
            sorted((m["src_key"], m["dst_key"]) for m in rel_mentions if m["chunk_id"] == cid)
            for cid in chunk_ids
        ]
        assert all(p == per_chunk_r[0] for p in per_chunk_r)
        assert all(
            m["content_hash"] == content_hash for m in mentions if m["chunk_id"] in chunk_ids
        )
    # extracted once: one conversation per distinct text, not per chunk
    calls = rows(tables, "llm_calls")
    first_extract_calls = [
        c for c in calls if c["stage"] == "extract" and len(json.loads(c["messages"])) == 2
    ]
    assert len(first_extract_calls) == len(by_hash) < len(chunks)


def test_gleaning_ran(shared_run):
    tables = shared_run["tables"]
    ext = rows(tables, "extractions")
    gleaned = [r for r in ext if r["rounds"] >= 1 and len(r["request_ids"]) > 1]
    assert gleaned
    for r in ext:
        # extract, then (check, glean) per round, plus possibly a final check that said no
        assert 1 + 2 * r["rounds"] <= len(r["request_ids"]) <= 2 + 2 * r["rounds"]
        assert r["rounds"] <= 3
        assert len(set(r["request_ids"])) == len(r["request_ids"])


def test_every_call_is_a_row_of_llm_calls(shared_run):
    tables = shared_run["tables"]
    ext = rows(tables, "extractions")
    calls = {c["request_id"]: c for c in rows(tables, "llm_calls") if c["stage"] == "extract"}
    ids = [i for r in ext for i in r["request_ids"]]
    assert len(calls) == len(ids) == len(set(ids))
    assert set(calls) == set(ids)
    assert all(c["status"] == "ok" for c in calls.values())
    # the stand-in saw exactly these requests (no faults, so one per call)
    assert shared_run["first_stats"]["completions_ok"] == len(ids)
    kinds = {c["response_model"].rsplit(":", 1)[-1] for c in calls.values()}
    assert kinds == {"Extraction", "MoreNeeded"}


def test_rerun_sends_nothing_and_inserts_nothing(shared_run):
    assert (
        shared_run["second_stats"]["requests_total"] == shared_run["first_stats"]["requests_total"]
    )
    before, after = shared_run["before"], shared_run["after"]
    for name in OUTPUT_TABLES:
        assert after[name][1] == before[name][1], name  # no rows inserted
    assert after["extractions"][0] == before["extractions"][0]  # no outcome rewritten
    tables = shared_run["tables"]
    run = tables.read("runs").filter(F.col("run_id") == shared_run["rerun"]).first()
    assert run["status"] == "ok"
    (stage,) = run["stage_stats"]
    counts = stage["counts"]
    assert counts["texts_to_extract"] == 0
    assert counts["entity_mentions_written"] == counts["relation_mentions_written"] == 0
    assert counts.get("llm_sent", 0) == 0


def test_a_conversation_replays_from_its_cached_turns_without_paying(shared_run):
    assert any(len(r["request_ids"]) >= 3 for r in shared_run["extracted"])
    assert (
        shared_run["replay_stats"]["requests_total"] == shared_run["first_stats"]["requests_total"]
    )
    keep = ("content_hash", "status", "rounds", "request_ids", "records")
    got = [{k: r[k] for k in keep} for r in shared_run["replayed"]]
    assert got == [{k: r[k] for k in keep} for r in shared_run["extracted"]]
    assert shared_run["replayed_mentions"] == shared_run["before"]["entity_mentions"][1]


# =============================================================================================
# 2 + 4. Failed chunks are recorded and retried; a scripted self-loop is quarantined
# =============================================================================================
EN_TEXT = "Marie Curie worked in Paris with Pierre Curie. In 1903 she shared the Nobel Prize."
ZH_TEXT = "《本草纲目》由李时珍编写。书中记载了许多药用植物和药方。"
LOOP_TEXT = "Kublai Khan built Xanadu as his summer capital near the Luan River."
LOOP_ANSWER = {
    "entities": [
        {"name": "Xanadu", "type": "Location", "description": "The  summer capital."},
        # a lone surrogate is valid JSON but not UTF-8: Arrow would refuse the whole wave
        {"name": "Kublai Khan", "type": "person", "description": "Built Xanadu \ud83d."},
        {"name": "「 」", "type": "concept", "description": "an empty name"},
    ],
    "relations": [
        {"source": "Xanadu", "target": '"xanadu"', "description": "a loop onto itself"},
        {"source": "Xanadu", "target": "Kublai Khan", "description": "built by him"},
        {"source": "Kublai Khan", "target": "Shangdu", "description": "an unlisted endpoint"},
    ],
}


@pytest.fixture(scope="module")
def recovery(spark, tmp_path_factory):
    """Run A: every call fails, max_failed_fraction 0 -> RuntimeError. Run B: fails again,
    fraction 1.0, two attempts -> recorded. Run C: a healthy stand-in -> all ok."""
    out = tmp_path_factory.mktemp("recovery_out")
    tables = Tables(spark, out)
    chunks = [
        chunk_row("c-en-1", "d1", EN_TEXT, "en"),
        chunk_row("c-en-2", "d2", EN_TEXT, "en"),  # same text in a second document
        chunk_row("c-zh", "d3", ZH_TEXT, "zh"),
        chunk_row("c-loop", "d4", LOOP_TEXT, "en"),
    ]
    merge_rows(tables, "chunks", chunks)
    script = tmp_path_factory.mktemp("script") / "rules.json"
    # the surrogate travels as a character of the reply, not as an escape inside its JSON
    content = json.dumps(LOOP_ANSWER, ensure_ascii=False)
    rule = {"match": "summer capital near the Luan", "content": content}
    script.write_text(json.dumps({"rules": [rule]}), "utf-8")
    res: dict = {"tables": tables, "n_texts": 3}
    common = {"max_gleaning_rounds": 0}
    failing = StandinOptions(fail_first=50, faults=("500",))
    with StandinServer(failing, announce=False) as server:
        cfg = make_cfg(
            server.base_url,
            {"max_retries": 0},
            max_attempts=1,
            max_failed_fraction=0.0,
            **common,
        )
        with pytest.raises(RuntimeError) as err:
            run_pipeline(cfg, None, out, stages=["extract"], spark=spark)
        res["a_error"] = str(err.value)
        res["a_stats"] = server.stats()
        res["a_ext"] = {r["content_hash"]: r for r in rows(tables, "extractions")}
        res["a_mentions"] = tables.read("entity_mentions").count()
        res["a_runs"] = rows(tables, "runs")

        cfg = make_cfg(
            server.base_url,
            {"max_retries": 0},
            max_attempts=2,
            max_failed_fraction=1.0,
            **common,
        )
        res["b_run"] = run_pipeline(cfg, None, out, stages=["extract"], spark=spark)
        res["b_stats"] = server.stats()
        res["b_ext"] = {r["content_hash"]: r for r in rows(tables, "extractions")}
        res["b_mentions"] = (
            tables.read("entity_mentions").count(),
            tables.read("relation_mentions").count(),
        )
    with StandinServer(StandinOptions(script=str(script)), announce=False) as server:
        cfg = make_cfg(server.base_url, {"max_retries": 0}, max_attempts=1, **common)
        res["c_run"] = run_pipeline(cfg, None, out, stages=["extract"], spark=spark)
        res["c_stats"] = server.stats()
    res["c_ext"] = {r["content_hash"]: r for r in rows(tables, "extractions")}
    return res


def test_too_many_failures_fail_the_stage_after_recording(recovery):
    msg = recovery["a_error"]
    assert "max_failed_fraction=0.0" in msg and "3 of 3" in msg
    assert "HTTP 500" in msg  # the top reasons are named
    # the stage failed, but the outcomes are stored
    ext = recovery["a_ext"]
    assert set(ext) == {h(EN_TEXT), h(ZH_TEXT), h(LOOP_TEXT)}
    for r in ext.values():
        assert r["status"] == "failed" and r["attempts"] == 1
        assert r["reason"].startswith("extract: server_error") and "500" in r["reason"]
        assert r["n_entities"] == 0 and r["n_relations"] == 0
        assert len(r["request_ids"]) == 1
    assert recovery["a_mentions"] == 0
    # max_attempts=1, max_retries=0: one HTTP request per distinct text
    assert recovery["a_stats"]["requests_total"] == recovery["n_texts"]
    assert recovery["a_stats"]["faults_by_kind"] == {"500": recovery["n_texts"]}
    (run,) = recovery["a_runs"]
    assert run["status"] == "failed" and "max_failed_fraction" in run["error"]


def test_failed_chunks_recorded_without_mentions(recovery):
    ext = recovery["b_ext"]
    assert len(ext) == recovery["n_texts"]
    for r in ext.values():
        assert r["status"] == "failed"
        assert r["reason"].startswith("extract: server_error") and "500" in r["reason"]
        assert r["attempts"] == 3  # every execution counts: one in run A, two in run B
        assert r["run_id"] == recovery["b_run"]
    assert recovery["b_mentions"] == (0, 0)
    # max_attempts=2: each text's conversation executed twice in run B
    sent_b = recovery["b_stats"]["requests_total"] - recovery["a_stats"]["requests_total"]
    assert sent_b == 2 * recovery["n_texts"]
    tables = recovery["tables"]
    run = tables.read("runs").filter(F.col("run_id") == recovery["b_run"]).first()
    assert run["status"] == "ok"
    assert run["stage_stats"][0]["counts"]["texts_failed"] == recovery["n_texts"]


def test_failed_chunks_are_retried_by_the_next_run(recovery):
    tables = recovery["tables"]
    ext = recovery["c_ext"]
    assert len(ext) == recovery["n_texts"]
    for r in ext.values():
        assert r["status"] == "ok" and r["reason"] is None
        assert r["attempts"] == 4
        assert r["run_id"] == recovery["c_run"]
        assert r["n_entities"] > 0
    assert recovery["c_stats"]["requests_total"] == recovery["n_texts"]
    assert recovery["c_stats"]["faults_total"] == 0
    by_chunk: dict[str, set] = {}
    for m in rows(tables, "entity_mentions"):
        by_chunk.setdefault(m["chunk_id"], set()).add(m["key"])
    assert set(by_chunk) == {"c-en-1", "c-en-2", "c-zh", "c-loop"}
    assert by_chunk["c-en-1"] == by_chunk["c-en-2"]
    assert "marie curie" in by_chunk["c-en-1"]
    assert any(has_han(k) for k in by_chunk["c-zh"])
    # the failed calls were replaced by ok answers, not added next to them
    calls = rows(tables, "llm_calls")
    assert len(calls) == recovery["n_texts"]
    assert all(c["status"] == "ok" for c in calls)


def test_scripted_answer_is_normalised_and_quarantined(recovery):
    tables = recovery["tables"]
    ents = {m["key"]: m for m in rows(tables, "entity_mentions") if m["chunk_id"] == "c-loop"}
    assert set(ents) == {"xanadu", "kublai khan"}
    assert ents["xanadu"]["type"] == "location"
    assert ents["xanadu"]["description"] == "The summer capital."
    assert ents["kublai khan"]["description"] == "Built Xanadu \ufffd."
    reply = next(c for c in rows(tables, "llm_calls") if "Kublai" in (c["response"] or ""))
    assert "\ufffd" in reply["response"] and "\ufffd" in reply["parsed"]
    rels = {
        (m["src_key"], m["dst_key"]): m
        for m in rows(tables, "relation_mentions")
        if m["chunk_id"] == "c-loop"
    }
    assert set(rels) == {("kublai khan", "xanadu"), ("kublai khan", "shangdu")}
    built = rels[("kublai khan", "xanadu")]
    # given Xanadu -> Kublai Khan; stored in key order with displays swapped to match
    assert (built["src_display"], built["dst_display"]) == ("Kublai Khan", "Xanadu")
    assert built["dangling"] is False
    assert rels[("kublai khan", "shangdu")]["dangling"] is True
    q = rows(tables, "quarantine")
    assert {r["source"] for r in q} == {f"content:{h(LOOP_TEXT)}"}
    assert all(r["stage"] == "extract" for r in q)
    reasons = sorted(r["reason"] for r in q)
    assert reasons == ["empty_name", "self_loop"]
    loop = next(r for r in q if r["reason"] == "self_loop")
    assert "Xanadu" in loop["locator"] and loop["excerpt"] == "a loop onto itself"
    assert loop["run_id"] == recovery["c_run"]


# =============================================================================================
# 3. normalise / union_new on hand-made answers
# =============================================================================================
CFG = build_config({}, env=False)


def _ext(entities=(), relations=()) -> Extraction:
    return Extraction(
        entities=[ExtractedEntity(name=n, type=t, description=d) for n, t, d in entities],
        relations=[ExtractedRelation(source=s, target=t, description=d) for s, t, d in relations],
    )


def test_normalise_cleans_and_keys_entities():
    out = normalise(
        _ext(
            [
                ('"Roman Empire"', " Location ", "An  empire &amp; a state."),
                ("Julius Caesar", "Spaceship", "A general.\n"),
            ]
        ),
        CFG,
        "h1",
    )
    assert out["quarantined"] == []
    assert out["entities"] == [
        {
            "key": "roman empire",
            "display": "Roman Empire",
            "type": "location",
            "description": "An empire & a state.",
        },
        {
            "key": "julius caesar",
            "display": "Julius Caesar",
            "type": "other",  # strict_types: unlisted -> other
            "description": "A general.",
        },
    ]


def test_normalise_lenient_types_keep_unlisted():
    cfg = build_config({"extract": {"strict_types": False}}, env=False)
    out = normalise(_ext([("Apollo", "Spaceship", "x")]), cfg, "h")
    assert out["entities"][0]["type"] == "spaceship"


def test_normalise_quarantines_empty_names_and_self_loops():
    out = normalise(
        _ext(
            [("Rome", "location", "a city"), ('""', "concept", "nothing"), ("  ", "concept", "")],
            [
                ("Rome", "“ROME”", "loops"),
                ("Rome", "「」", "empty target"),
                ("", "Rome", "empty source"),
                ("Rome", "Carthage", "war"),
            ],
        ),
        CFG,
        "h2",
    )
    assert [e["key"] for e in out["entities"]] == ["rome"]
    assert [(r["src_key"], r["dst_key"]) for r in out["relations"]] == [("carthage", "rome")]
    reasons = [q["reason"] for q in out["quarantined"]]
    assert sorted(reasons) == ["empty_name"] * 4 + ["self_loop"]
    loop = next(q for q in out["quarantined"] if q["reason"] == "self_loop")
    assert loop["locator"].startswith("relation:") and loop["excerpt"] == "loops"
    assert all(set(q) == {"reason", "locator", "excerpt"} for q in out["quarantined"])


def test_normalise_sorts_relation_endpoints_by_key():
    out = normalise(
        _ext(
            [("Zeus", "person", "z"), ("apollo", "person", "a")],
            [("Zeus", "apollo", "father of"), ("Athens", "Zeus", "worships")],
        ),
        CFG,
        "h3",
    )
    rels = {(r["src_key"], r["dst_key"]): r for r in out["relations"]}
    assert set(rels) == {("apollo", "zeus"), ("athens", "zeus")}
    assert (rels[("apollo", "zeus")]["src_display"], rels[("apollo", "zeus")]["dst_display"]) == (
        "apollo",
        "Zeus",
    )
    assert rels[("apollo", "zeus")]["description"] == "father of"
    assert (rels[("athens", "zeus")]["src_display"], rels[("athens", "zeus")]["dst_display"]) == (
        "Athens",
        "Zeus",
    )
    # the key order is by normalised key, not by display (uppercase would sort first)
    out = normalise(_ext(relations=[("apple", "Banana", "d")]), CFG, "h")
    (r,) = out["relations"]
    assert (r["src_key"], r["dst_key"], r["src_display"], r["dst_display"]) == (
        "apple",
        "banana",
        "apple",
        "Banana",
    )


def test_normalise_merges_duplicates_within_one_answer():
    out = normalise(
        _ext(
            [
                ("Rome", "location", "Capital of Italy."),
                ('"ROME"', "person", "Founded by Romulus."),
                ("ｒｏｍｅ", "location", "capital of italy."),  # same text, other case: once
            ],
            [
                ("Rome", "Romulus", "founded by"),
                ("Romulus", '"rome"', "Founded it."),
                ("ROMULUS", "Rome", "founded by"),
            ],
        ),
        CFG,
        "h4",
    )
    (e,) = out["entities"]
    assert e["key"] == "rome" and e["display"] == "Rome" and e["type"] == "location"
    assert e["description"].split("\n") == ["Capital of Italy.", "Founded by Romulus."]
    (r,) = out["relations"]
    assert (r["src_key"], r["dst_key"]) == ("rome", "romulus")
    assert r["description"].split("\n") == ["founded by", "Founded it."]


def test_union_new_adds_only_new_keys():
    first = normalise(
        _ext(
            [("Rome", "location", "a"), ("Carthage", "location", "b")],
            [("Rome", "Carthage", "war")],
        ),
        CFG,
        "h",
    )
    glean = normalise(
        _ext(
            [("ROME", "location", "other text"), ("Hannibal", "person", "c")],
            [("Carthage", "Rome", "again"), ("Hannibal", "Carthage", "general of"), ("X", "x", "")],
        ),
        CFG,
        "h",
    )
    merged, grew = union_new(first, glean)
    assert grew
    assert [e["key"] for e in merged["entities"]] == ["rome", "carthage", "hannibal"]
    # a known key keeps its first record
    assert merged["entities"][0]["description"] == "a"
    assert [(r["src_key"], r["dst_key"]) for r in merged["relations"]] == [
        ("carthage", "rome"),
        ("carthage", "hannibal"),
    ]
    assert [q["reason"] for q in merged["quarantined"]] == ["self_loop"]
    # nothing new: the union is unchanged and reported as such
    again, grew = union_new(merged, glean)
    assert not grew
    assert again["entities"] == merged["entities"] and again["relations"] == merged["relations"]
    # a glean with only a new relation is new
    only_rel = normalise(_ext(relations=[("Rome", "Hannibal", "enemy")]), CFG, "h")
    _, grew = union_new(merged, only_rel)
    assert grew
    # starting from nothing
    union, grew = union_new(dict(EMPTY), first)
    assert grew and union["entities"] == first["entities"]
    _, grew = union_new(first, dict(EMPTY))
    assert not grew


# =============================================================================================
# 5. Atomic mentions: a failure between the two mention MERGEs, then a rerun
# =============================================================================================
# a hostile reply: more entities and relations than the caps, over-long names and
# descriptions, and names that differ only by zero-width and bidi control characters
HOSTILE_TEXT = "The Hostile Archive lists many things about many other things."
HOSTILE_ANSWER = {
    "entities": [
        {"name": "Xanadu", "type": "location", "description": "A summer capital."},
        {"name": "Xana\u200bdu\u2066", "type": "location", "description": "Zero\u200dwidth."},
        {"name": "\u202eKublai\u202c Khan", "type": "person", "description": "B" * 50},
        {"name": "K" * 40, "type": "person", "description": "a long name"},
        {"name": "Fourth", "type": "concept", "description": "over the entity cap"},
        {"name": "Fifth", "type": "concept", "description": "over the entity cap"},
    ],
    "relations": [
        {"source": "Xanadu", "target": "Kublai Khan", "description": "built by"},
        {"source": "Xanadu", "target": "Fourth", "description": "second"},
        {"source": "Fifth", "target": "Kublai Khan", "description": "over the relation cap"},
    ],
}
CAPS = {
    "max_entities_per_chunk": 3,
    "max_relations_per_chunk": 2,
    "max_name_chars": 20,
    "max_description_chars": 30,
}
COMPARED = {
    "extractions": ("content_hash", "status", "rounds", "n_entities", "n_relations", "records"),
    "entity_mentions": tuple(SCHEMAS["entity_mentions"].fieldNames()),
    "relation_mentions": tuple(SCHEMAS["relation_mentions"].fieldNames()),
    "mentioned_chunks": ("chunk_id", "content_hash", "n_entities", "n_relations"),
    "quarantine": ("source", "locator", "stage", "reason", "detail", "excerpt"),
}


def table_state(tables: Tables) -> dict[str, list[tuple]]:
    """Every compared table as sorted tuples (run ids differ between runs, so left out)."""
    return {
        n: sorted(tuple(r) for r in tables.read(n).select(*cols).collect())
        for n, cols in COMPARED.items()
    }


def _hostile_chunks(spark, tables: Tables) -> None:
    chunks = [
        chunk_row("c-en-1", "d1", EN_TEXT, "en"),
        chunk_row("c-en-2", "d2", EN_TEXT, "en"),
        chunk_row("c-zh", "d3", ZH_TEXT, "zh"),
        chunk_row("c-hostile", "d4", HOSTILE_TEXT, "en"),
    ]
    merge_rows(tables, "chunks", chunks)


@pytest.fixture(scope="module")
def interrupted(spark, tmp_path_factory):
    """An uninterrupted run, and a run whose relation_mentions write fails for a real reason
    (a plain file sits where Delta must create the table's folder) followed by a rerun once
    the file is gone."""
    script = tmp_path_factory.mktemp("hostile") / "rules.json"
    rule = {"match": "Hostile Archive", "content": json.dumps(HOSTILE_ANSWER, ensure_ascii=False)}
    script.write_text(json.dumps({"rules": [rule]}), "utf-8")
    ref_tables = Tables(spark, tmp_path_factory.mktemp("atomic_ref"))
    cut_tables = Tables(spark, tmp_path_factory.mktemp("atomic_cut"))
    res: dict = {"ref": ref_tables, "cut": cut_tables}
    with StandinServer(StandinOptions(script=str(script)), announce=False) as server:
        cfg = make_cfg(server.base_url, max_gleaning_rounds=0, **CAPS)
        _hostile_chunks(spark, ref_tables)
        res["ref_run"] = run_pipeline(cfg, None, ref_tables.output_dir, ["extract"], spark=spark)
        res["ref_stats"] = server.stats()
        _hostile_chunks(spark, cut_tables)
        blocker = Path(cut_tables.location("relation_mentions"))
        blocker.parent.mkdir(parents=True, exist_ok=True)
        blocker.write_text("not a Delta table")
        with pytest.raises(Exception) as err:
            run_pipeline(cfg, None, cut_tables.output_dir, ["extract"], spark=spark)
        res["cut_error"] = str(err.value)
        res["after_cut"] = {
            "entity_mentions": cut_tables.read("entity_mentions").count(),
            "relation_mentions": cut_tables.exists("relation_mentions"),
            "mentioned_chunks": cut_tables.read("mentioned_chunks").count(),
        }
        blocker.unlink()
        sent = server.stats()["requests_total"]
        res["rerun"] = run_pipeline(cfg, None, cut_tables.output_dir, ["extract"], spark=spark)
        res["rerun_sent"] = server.stats()["requests_total"] - sent
    return res


def test_a_failure_between_the_mention_writes_leaves_no_chunk_marked_done(interrupted):
    after = interrupted["after_cut"]
    assert "relation_mentions" in interrupted["cut_error"]
    # the entity mentions went in, the relation table never did, and no chunk is marked done
    assert after == {
        "entity_mentions": after["entity_mentions"],
        "relation_mentions": False,
        "mentioned_chunks": 0,
    }
    assert after["entity_mentions"] > 0


def test_the_rerun_after_the_failure_equals_an_uninterrupted_run(interrupted):
    ref, cut = table_state(interrupted["ref"]), table_state(interrupted["cut"])
    assert ref["relation_mentions"], "the reference run wrote relation mentions"
    assert {c for c, *_ in ref["mentioned_chunks"]} == {"c-en-1", "c-en-2", "c-zh", "c-hostile"}
    for name in COMPARED:
        assert cut[name] == ref[name], name
    assert interrupted["rerun_sent"] == 0  # the outcomes were stored: nothing paid twice
    tables = interrupted["cut"]
    run = tables.read("runs").filter(F.col("run_id") == interrupted["rerun"]).first()
    counts = run["stage_stats"][0]["counts"]
    assert counts["texts_to_extract"] == 0 and counts["entity_mentions_written"] == 0
    assert counts["relation_mentions_written"] == len(ref["relation_mentions"])
    assert counts["chunks_mentioned"] == 4


# =============================================================================================
# 6. Hostile model output: caps, invisible characters, counted and reported
# =============================================================================================
def test_hostile_reply_is_capped_cleaned_and_counted(interrupted):
    tables = interrupted["ref"]
    ents = {m["key"]: m for m in rows(tables, "entity_mentions") if m["chunk_id"] == "c-hostile"}
    # Xana<ZWSP>du<LRI> is Xanadu; <RLO>Kublai<PDF> Khan is Kublai Khan; 3 kept of 5 distinct
    assert set(ents) == {"xanadu", "kublai khan", "k" * 20}
    assert ents["xanadu"]["description"] == "A summer capital.\nZerowidth."
    assert ents["kublai khan"]["display"] == "Kublai Khan"
    assert ents["kublai khan"]["description"] == "B" * 30
    invisible = "\u200b\u200c\u200d\u200e\u200f\u2060\ufeff\u061c\u202a\u202e\u2066\u2069"
    for m in ents.values():
        assert not set(m["display"] + m["key"] + m["description"]) & set(invisible)
    rels = [m for m in rows(tables, "relation_mentions") if m["chunk_id"] == "c-hostile"]
    assert sorted((m["src_key"], m["dst_key"]) for m in rels) == [
        ("fourth", "xanadu"),
        ("kublai khan", "xanadu"),
    ]
    # what the caps cut is a quarantine row per text and kind, with its count
    cut = [r for r in rows(tables, "quarantine") if r["locator"].startswith("cap:")]
    q = {r["reason"]: r for r in cut if r["source"] == f"content:{h(HOSTILE_TEXT)}"}
    assert set(q) == {"capped_entities", "capped_relations", "capped_names", "capped_descriptions"}
    assert q["capped_entities"]["detail"].startswith("2 entities dropped")
    assert "extract.max_entities_per_chunk" in q["capped_entities"]["detail"]
    assert q["capped_relations"]["detail"].startswith("1 relations dropped")
    assert q["capped_names"]["detail"].startswith("1 names cut")
    assert q["capped_descriptions"]["detail"].startswith("1 descriptions cut")
    # and the run's stage counts add up every text's rows (the stand-in's own sentences are
    # longer than 30 characters too)
    run = tables.read("runs").filter(F.col("run_id") == interrupted["ref_run"]).first()
    counts = run["stage_stats"][0]["counts"]
    per_reason: dict[str, int] = {}
    for r in cut:
        per_reason[r["reason"]] = per_reason.get(r["reason"], 0) + int(r["detail"].split()[0])
    assert {k: v for k, v in counts.items() if k.startswith("capped_")} == per_reason
    assert (counts["capped_entities"], counts["capped_relations"]) == (2, 1)
    assert counts["capped_descriptions"] > 1


CAPS_CFG = build_config({"extract": CAPS}, env=False)


def test_normalise_caps_records_and_counts_what_it_cut():
    out = normalise(Extraction.model_validate(HOSTILE_ANSWER), CAPS_CFG, "h")
    assert [e["key"] for e in out["entities"]] == ["xanadu", "kublai khan", "k" * 20]
    assert len(out["relations"]) == 2
    assert out["capped"] == {
        "entities": 2,
        "relations": 1,
        "names": 1,
        "descriptions": 1,
        "rejects": 0,
    }
    assert max(len(e["description"]) for e in out["entities"]) == 30
    # the defaults keep all of it
    assert normalise(Extraction.model_validate(HOSTILE_ANSWER), CFG, "h")["capped"] == {
        "entities": 0,
        "relations": 0,
        "names": 0,
        "descriptions": 0,
        "rejects": 0,
    }


def test_a_flood_of_records_is_bounded_in_one_answer_and_across_gleaning_rounds():
    flood = _ext(
        [(f"Thing {i}", "concept", "d" * 5000) for i in range(1000)],
        [(f"Thing {i}", f"Thing {i + 1}", "r") for i in range(1000)] + [("", "x", "")] * 2000,
    )
    out = normalise(flood, CFG, "h")  # the defaults: 200 entities, 400 relations
    assert len(out["entities"]) == 200 and len(out["relations"]) == 400
    assert out["capped"]["entities"] == 800 and out["capped"]["relations"] == 600
    assert out["capped"]["descriptions"] == 200  # only the kept ones were cut
    assert all(len(e["description"]) == 4000 for e in out["entities"])
    assert len(out["quarantined"]) == 600 and out["capped"]["rejects"] == 1400
    more = normalise(_ext([(f"Other {i}", "concept", "") for i in range(50)]), CFG, "h")
    few = normalise(_ext([(f"Thing {i}", "concept", "") for i in range(190)]), CFG, "h")
    merged, grew = union_new(few, more, Caps.of(CFG))
    assert grew and len(merged["entities"]) == 200
    assert merged["capped"]["entities"] == 40  # 50 new, room for 10
    full, grew = union_new(out, more, Caps.of(CFG))
    assert not grew and full["capped"]["entities"] == 850
