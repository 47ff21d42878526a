"""Quiz and judge stages against the stand-in with scripted log-probabilities (method.md §5)."""

from __future__ import annotations

import json
import math
import shutil

import pytest
from contexts import stage_context
from rows import merge_rows, row
from test_partition import locally_checkpointed

from graphgen_spark.config import ConfigError
from graphgen_spark.gap.calibration import calibrate
from graphgen_spark.ids import h
from graphgen_spark.llm.client import RetryPolicy
from graphgen_spark.pipeline import run_pipeline
from graphgen_spark.stages.judge import STAGE as JUDGE
from graphgen_spark.stages.quiz import STAGE as QUIZ
from graphgen_spark.standin import StandinOptions, StandinServer
from graphgen_spark.tables import Tables

ln = math.log
ELEMENTS = {
    # element id: (kind, description)
    h("e-bees"): ("relation", "Bees pollinate flowers."),
    h("e-varroa"): ("relation", "Varroa mites parasitise bees."),
    h("n-queen"): ("entity", "Queens lay eggs."),
}
# first matching rule wins; the judge prompt ends with "Statement: <text>"
SCRIPT_A = [
    ("Statement: It is not the case that", [["No", ln(0.7)], ["no", ln(0.1)], ["Yes", ln(0.2)]]),
    ("Statement: It is false that", [["是", ln(0.5)], ["否", ln(0.3)], ["Maybe", ln(0.2)]]),
    ("Statement: In other words", [["Yes", ln(0.9)], ["No", ln(0.05)]]),
    ("Statement: Bees pollinate", [["No", ln(0.99)]]),  # confidently wrong: floored loss
    ("Statement: Varroa", [[" yes", ln(0.4)], ["YES", ln(0.4)], ["nope", ln(0.2)]]),
    ("Statement: Queens", [["Perhaps", ln(0.9)]]),  # no yes/no candidate: no verdict
]
# expected p_yes per (kind prefix); label from the statement kind
P_YES_A = {"negation0": 0.2, "negation1": 0.5 / 0.8, "paraphrase0": 0.9 / 0.95}
ORIGINAL_A = {h("e-bees"): 0.0, h("e-varroa"): 0.8, h("n-queen"): None}
SCRIPT_B = [("Statement:", [["Yes", ln(0.6)], ["No", ln(0.4)]])]


def write_script(path, rules, model=None):
    path.write_text(
        json.dumps(
            {
                "rules": [
                    {"match": m, "top_logprobs": top, **({"model": model} if model else {})}
                    for m, top in rules
                ]
            }
        )
    )
    return str(path)


def graph(tables):
    ents = [
        row(
            "entities",
            entity_id=h("n-queen"),
            key="queen",
            name="Queen",
            type="person",
            description=ELEMENTS[h("n-queen")][1],
            n_tokens=4,
            n_mentions=1,
            descriptions=[],
            summarised=False,
            summary_levels=0,
            chunk_ids=["c"],
            doc_ids=["d"],
            is_placeholder=False,
            row_hash="x",
        ),
        row(
            "entities",
            entity_id=h("n-ghost"),
            key="ghost",
            name="Ghost",
            type="UNKNOWN",
            description="",
            n_tokens=0,
            n_mentions=0,
            descriptions=[],
            summarised=False,
            summary_levels=0,
            chunk_ids=["c"],
            doc_ids=["d"],
            is_placeholder=True,
            row_hash="y",
        ),
    ]
    rels = [
        row(
            "relations",
            edge_id=eid,
            src_id="a",
            dst_id="b",
            src_name="A",
            dst_name="B",
            description=desc,
            n_tokens=4,
            n_mentions=1,
            descriptions=[],
            summarised=False,
            summary_levels=0,
            chunk_ids=["c"],
            doc_ids=["d"],
            row_hash="z",
        )
        for eid, (kind, desc) in ELEMENTS.items()
        if kind == "relation"
    ]
    merge_rows(tables, "entities", ents)
    merge_rows(tables, "relations", rels)


def ctx(spark, tables, url, trainee="trainee-a", **extra):
    cfg = {
        "llm": {
            "backoff_min_s": 0.01,
            "backoff_max_s": 0.05,
            "synthesizer": {"base_url": url, "model": "standin"},
            "trainee": {"base_url": url, "model": trainee},
        },
        **extra,
    }
    return stage_context(spark, tables, cfg, run_id="gap-test")


@pytest.fixture(scope="module")
def scored(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gap")
    tables = Tables(spark, tmp / "out")
    graph(tables)
    script = tmp / "rules.json"
    write_script(script, SCRIPT_A, "trainee-a")
    rules = json.loads(script.read_text())["rules"]
    rules += [{"match": m, "top_logprobs": top, "model": "trainee-b"} for m, top in SCRIPT_B]
    script.write_text(json.dumps({"rules": rules}))
    with StandinServer(StandinOptions(script=str(script)), announce=False) as server:
        before = locally_checkpointed(spark)
        quiz = QUIZ.run(ctx(spark, tables, server.base_url))
        shutil.copytree(tmp / "out", tmp / "quizzed")  # for the hostile trainee below
        judge_a = JUDGE.run(
            ctx(spark, tables, server.base_url, judge={"max_unjudged_fraction": 0.5})
        )
        calls = server.stats()["requests_total"]
        again = (
            QUIZ.run(ctx(spark, tables, server.base_url)),
            JUDGE.run(ctx(spark, tables, server.base_url, judge={"max_unjudged_fraction": 0.5})),
        )
        calls_again = server.stats()["requests_total"]
        judge_b = JUDGE.run(ctx(spark, tables, server.base_url, trainee="trainee-b"))
        checkpointed = locally_checkpointed(spark) - before
    return {
        "quizzed": tmp / "quizzed",
        "checkpointed": checkpointed,
        "tables": tables,
        "quiz": quiz,
        "judge_a": judge_a,
        "judge_b": judge_b,
        "again": again,
        "calls": (calls, calls_again),
    }


def test_quiz_writes_balanced_statements_for_non_placeholders(scored):
    rows = scored["tables"].read("statements").collect()
    assert {r["element_id"] for r in rows} == set(ELEMENTS)  # the placeholder is never quizzed
    for eid, (kind, desc) in ELEMENTS.items():
        mine = sorted((r["kind"], r["idx"], r["label"]) for r in rows if r["element_id"] == eid)
        assert mine == [
            ("negation", 0, "no"),
            ("negation", 1, "no"),
            ("original", 0, "yes"),
            ("paraphrase", 0, "yes"),
        ]
        original = next(r for r in rows if r["element_id"] == eid and r["kind"] == "original")
        assert original["text"] == desc and original["element_kind"] == kind
        assert original["statement_id"] == h(eid, h(desc), "original", 0)
    assert scored["quiz"].counts["statements_written"] == 12


def expected_a():
    """(element, p_yes or None, label) per statement of trainee A, from the script."""
    out = []
    for eid in ELEMENTS:
        out.append((eid, ORIGINAL_A[eid], "yes"))
        out.append((eid, P_YES_A["paraphrase0"], "yes"))
        out.append((eid, P_YES_A["negation0"], "no"))
        out.append((eid, P_YES_A["negation1"], "no"))
    return out


def test_losses_and_gap_scores_are_exact(scored):
    tables = scored["tables"]
    judged = [r for r in tables.read("judgements").collect() if r["trainee_model"] == "trainee-a"]
    assert len(judged) == 12
    assert sum(r["status"] == "no_verdict" for r in judged) == 1
    scores = {
        r["element_id"]: r
        for r in tables.read("gap_scores").collect()
        if r["trainee_model"] == "trainee-a"
    }
    for eid in ELEMENTS:
        items = [(p, lab) for e, p, lab in expected_a() if e == eid and p is not None]
        losses = [-ln(max(p if lab == "yes" else 1 - p, 1e-6)) for p, lab in items]
        s = scores[eid]
        assert s["loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-9)
        assert s["n_ok"] == len(items) and s["n_total"] == 4 and s["status"] == "ok"
        acc = sum((p >= 0.5) == (lab == "yes") for p, lab in items) / len(items)
        assert s["accuracy"] == pytest.approx(acc)
    # the confidently wrong original is floored at 1e-6, not infinite
    bees = [r for r in judged if r["p_yes"] == 0.0]
    assert len(bees) == 1 and bees[0]["loss"] == pytest.approx(-ln(1e-6))


def test_ece_is_exact_per_scope(scored):
    cal = {
        (r["trainee_model"], r["scope"]): r for r in scored["tables"].read("calibration").collect()
    }
    items = [(p, lab == "yes") for _, p, lab in expected_a() if p is not None]
    want = calibrate(items, bins=10)
    got = cal[("trainee-a", "all")]
    assert got["n"] == 11 and got["n_no_verdict"] == 1
    assert got["ece"] == pytest.approx(want.ece) and got["mce"] == pytest.approx(want.mce)
    assert got["brier"] == pytest.approx(want.brier)
    assert [b["count"] for b in got["bins"]] == [b.count for b in want.bins]
    rel = [
        (p, lab == "yes")
        for e, p, lab in expected_a()
        if p is not None and ELEMENTS[e][0] == "relation"
    ]
    assert cal[("trainee-a", "relation")]["ece"] == pytest.approx(calibrate(rel).ece)


def test_reruns_make_no_calls_and_two_trainees_sit_side_by_side(scored):
    calls, calls_again = scored["calls"]
    assert calls_again == calls
    quiz_again, judge_again = scored["again"]
    assert (
        quiz_again.counts["elements_to_quiz"] == 0
        and judge_again.counts["statements_to_judge"] == 0
    )
    tables = scored["tables"]
    by_model = {}
    for r in tables.read("gap_scores").collect():
        by_model.setdefault(r["trainee_model"], {})[r["element_id"]] = r["loss"]
    assert set(by_model) == {"trainee-a", "trainee-b"}
    # trainee B says yes with 0.6 to everything
    for loss_b in by_model["trainee-b"].values():
        assert loss_b == pytest.approx((2 * -ln(0.6) + 2 * -ln(0.4)) / 4)
    assert {r["trainee_model"] for r in tables.read("calibration").collect()} == {
        "trainee-a",
        "trainee-b",
    }


def test_trainee_without_logprobs_is_a_configuration_error(spark, tables):
    graph(tables)
    with StandinServer(StandinOptions(no_logprobs=True), announce=False) as server:
        QUIZ.run(ctx(spark, tables, server.base_url))
        quiz_calls = server.stats()["requests_total"]
        with pytest.raises(
            ConfigError, match=r"returned no chat logprobs.*gap_scoring: off"
        ) as err:
            JUDGE.run(ctx(spark, tables, server.base_url))
        assert server.base_url in str(err.value) and "trainee-a" in str(err.value)
        assert tables.read("judgements").count() == 0
        # the first statement went alone (resent as the same request before it counts as
        # no_logprobs) and nothing else was sent; its call is recorded
        sent = tables.read("llm_calls").filter("stage = 'judge'").collect()
        assert [(c["status"], c["error_kind"]) for c in sent] == [("failed", "no_logprobs")]
        resends = RetryPolicy().same_request_retries
        assert server.stats()["requests_total"] - quiz_calls == 1 + resends
        before = server.stats()["requests_total"]
        off = ctx(spark, tables, server.base_url, gap_scoring="off")
        run_id = run_pipeline(off.cfg, None, tables.output_dir, ["judge"], spark=spark)
        (stats,) = tables.read("runs").filter(f"run_id = '{run_id}'").first()["stage_stats"]
        assert stats["status"] == "skipped" and server.stats()["requests_total"] == before


def test_reliability_diagram_and_before_after_comparison(scored):
    from pathlib import Path

    from graphgen_spark.report.compare import compare_trainees, format_comparison

    tables = scored["tables"]
    png = Path(tables.output_dir) / "report" / "reliability_trainee-a.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    rows = {r["kind"]: r for r in compare_trainees(tables, "trainee-a", "trainee-b")}
    assert set(rows) == {"all", "entity", "relation"}
    scores = {
        (r["trainee_model"], r["element_id"]): r["loss"]
        for r in tables.read("gap_scores").collect()
    }
    rel_a = [scores[("trainee-a", e)] for e, (k, _) in ELEMENTS.items() if k == "relation"]
    assert rows["relation"]["loss_before"] == pytest.approx(sum(rel_a) / len(rel_a))
    assert rows["all"]["loss_after"] == pytest.approx((2 * -ln(0.6) + 2 * -ln(0.4)) / 4)
    cal = {(r["trainee_model"], r["scope"]): r["ece"] for r in tables.read("calibration").collect()}
    assert rows["entity"]["ece_after"] == pytest.approx(cal[("trainee-b", "entity")])
    text = format_comparison(list(rows.values()), "trainee-a", "trainee-b")
    assert "trainee-a  ->  trainee-b" in text and "relation" in text


def test_quiz_and_judge_keep_nothing_as_local_checkpoints(scored):
    # localCheckpoint blocks die with their executor; the stages write to their scratch
    assert scored["checkpointed"] == set()


# the trainee's logprobs are not log-probabilities: +inf, NaN, 800 (exp overflows), a string
SCRIPT_C = [
    ("Statement: It is not the case that", [["No", math.inf], ["Yes", ln(0.2)]]),
    ("Statement: It is false that", [["No", math.nan]]),
    ("Statement: In other words", [["Yes", 800.0], ["No", ln(0.1)]]),
    ("Statement:", [["Yes", ln(0.6)], ["No", -math.inf]]),  # -inf is P = 0: a fine verdict
]


@pytest.fixture(scope="module")
def hostile(spark, scored, tmp_path_factory):
    tables = Tables(spark, scored["quizzed"])
    script = write_script(tmp_path_factory.mktemp("hostile") / "rules.json", SCRIPT_C)
    with StandinServer(StandinOptions(script=script), announce=False) as server:
        result = JUDGE.run(ctx(spark, tables, server.base_url, trainee="trainee-c"))
    return tables, result


def test_non_finite_and_huge_logprobs_give_a_recorded_no_verdict(hostile):
    tables, result = hostile
    judged = [r for r in tables.read("judgements").collect() if r["trainee_model"] == "trainee-c"]
    assert len(judged) == 12 and result.counts["judgements_written"] == 12
    bad = [r for r in judged if r["status"] != "ok"]
    assert len(bad) == 9 and {r["status"] for r in bad} == {"no_verdict"}
    for r in bad:
        assert (
            r["reason"].startswith("bad_logprobs: logprob")
            and "not a log-probability" in r["reason"]
        )
        assert r["loss"] is None and r["p_yes"] is None and r["yes_mass"] is None
    reasons = " ".join(r["reason"] for r in bad)
    assert "inf" in reasons and "nan" in reasons and "800.0" in reasons
    ok = [r for r in judged if r["status"] == "ok"]
    assert {r["p_yes"] for r in ok} == {1.0} and all(r["reason"] is None for r in ok)
    # the gap scores stay finite: one usable statement per element
    scores = [r for r in tables.read("gap_scores").collect() if r["trainee_model"] == "trainee-c"]
    assert len(scores) == 3
    for r in scores:
        assert math.isfinite(r["loss"]) and r["loss"] == pytest.approx(0.0, abs=1e-12)
        assert (r["n_ok"], r["n_total"], r["status"]) == (1, 4, "ok")
    cal = next(
        r
        for r in tables.read("calibration").collect()
        if (r["trainee_model"], r["scope"]) == ("trainee-c", "all")
    )
    assert (cal["n"], cal["n_no_verdict"]) == (3, 9) and math.isfinite(cal["ece"])
