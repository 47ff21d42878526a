"""Verdict reading, losses and calibration on hand-computed values (method.md §5.3, §5.5)."""

from __future__ import annotations

import math

import pytest

from graphgen_spark.gap.calibration import bin_index, calibrate
from graphgen_spark.gap.verdict import (
    BadLogprobs,
    checked_logprob,
    first_top_logprobs,
    normalise_token,
    read_verdict,
    statement_loss,
)
from graphgen_spark.stages.judge import judge_reply


@pytest.mark.parametrize(
    ("token", "word"),
    [
        ("Yes", "yes"),
        (" yes", "yes"),
        ("▁Yes", "yes"),
        ("ĠNo", "no"),
        ("YES.", "yes"),
        ("是", "是"),
        ("“否”", "否"),
        ("Ｙｅｓ", "yes"),
        ("no!", "no"),
    ],
)
def test_tokens_normalise(token, word):
    assert normalise_token(token) == word


def test_masses_over_all_candidates_with_synonyms():
    top = [
        {"token": "Yes", "logprob": math.log(0.5)},
        {"token": " yes", "logprob": math.log(0.2)},
        {"token": "是", "logprob": math.log(0.05)},
        {"token": "No", "logprob": math.log(0.15)},
        {"token": "Maybe", "logprob": math.log(0.1)},
    ]
    v = read_verdict(top)
    assert v.yes_mass == pytest.approx(0.75) and v.no_mass == pytest.approx(0.15)
    assert v.verdict_mass == pytest.approx(0.9)
    assert v.p_yes == pytest.approx(0.75 / 0.9)
    assert statement_loss(v.p_yes, True) == pytest.approx(-math.log(0.75 / 0.9))
    assert statement_loss(v.p_yes, False) == pytest.approx(-math.log(0.15 / 0.9))


def test_no_verdict_and_floor():
    v = read_verdict([{"token": "Maybe", "logprob": -0.1}, {"token": "I", "logprob": -3}])
    assert not v.ok and v.p_yes is None
    # a wrong, fully confident answer is floored, not infinite
    assert statement_loss(1.0, False) == pytest.approx(-math.log(1e-6))


def test_bin_boundaries_stay_in_the_lower_bin():
    assert bin_index(0.5, 10) == 5
    assert bin_index(0.7, 10) == 7  # 0.7 * 10 is 7.000000000000001 in floating point
    assert bin_index(0.71, 10) == 8
    assert bin_index(1.0, 10) == 10


def test_ece_mce_brier_by_hand():
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.8 (right)
    items = [(0.9, True), (0.1, True), (0.4, False), (0.8, True)]
    cal = calibrate(items, bins=10)
    # bin 9: acc 0.5, conf 0.9 -> gap 0.4 (2 items); bin 6: acc 1, conf 0.6 -> 0.4; bin 8: acc 1, conf 0.8 -> 0.2
    assert cal.n == 4
    assert cal.ece == pytest.approx(2 / 4 * 0.4 + 1 / 4 * 0.4 + 1 / 4 * 0.2)
    assert cal.mce == pytest.approx(0.4)
    assert cal.brier == pytest.approx(
        ((0.9 - 1) ** 2 + (0.1 - 1) ** 2 + 0.4**2 + (0.8 - 1) ** 2) / 4
    )
    counts = {b.k: b.count for b in cal.bins if b.count}
    assert counts == {6: 1, 8: 1, 9: 2}


# -- logprobs that are not log-probabilities ---------------------------------------------------
@pytest.mark.parametrize(
    "bad", [math.inf, math.nan, 800.0, 709.8, 1e308, 0.01, "NaN?", None, [1], {"x": 1}]
)
def test_a_candidate_that_is_not_a_logprob_makes_the_position_unreadable(bad):
    top = [{"token": "Yes", "logprob": math.log(0.9)}, {"token": "No", "logprob": bad}]
    with pytest.raises(BadLogprobs, match="logprob"):
        read_verdict(top)


def test_minus_infinity_and_rounding_above_zero_are_probabilities():
    v = read_verdict([{"token": "Yes", "logprob": 5e-5}, {"token": "No", "logprob": -math.inf}])
    assert (v.yes_mass, v.no_mass, v.p_yes) == (1.0, 0.0, 1.0)
    assert read_verdict([{"token": "No", "logprob": -1e308}]).verdict_mass == 0.0
    assert checked_logprob("-0.5") == -0.5  # a numeric string is still a number


@pytest.mark.parametrize(
    "stored",
    ["", "not json", "[]", "{}", '[{"token": "Yes"}]', '[{"top_logprobs": 3}]', "[5]", "null"],
)
def test_malformed_stored_logprobs_are_named(stored):
    with pytest.raises(BadLogprobs, match="malformed logprobs"):
        first_top_logprobs(stored)


def test_judge_reply_records_a_no_verdict_never_a_nan_loss():
    yes, no = frozenset({"yes"}), frozenset({"no"})
    reply = {"status": "ok", "label": "yes"}
    for lp in ("Infinity", "NaN", "800"):
        got = judge_reply(
            {**reply, "logprobs": f'[{{"top_logprobs": [{{"token": "Yes", "logprob": {lp}}}]}}]'},
            yes,
            no,
            1e-6,
        )
        assert got["status"] == "no_verdict" and got["reason"].startswith("bad_logprobs:")
        assert "loss" not in got
    fine = '[{"top_logprobs": [{"token": "No", "logprob": -0.105}]}]'
    got = judge_reply({**reply, "logprobs": fine}, yes, no, 1e-6)
    assert got["status"] == "ok" and got["loss"] == pytest.approx(-math.log(1e-6))
    assert judge_reply({**reply, "logprobs": "[]"}, yes, no, 1e-6)["status"] == "no_verdict"
    assert judge_reply({**reply, "status": "failed", "logprobs": None}, yes, no, 1e-6) == {
        "status": "failed"
    }
