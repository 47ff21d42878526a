"""The call journal on a real filesystem: what a retried task reads back."""

from __future__ import annotations

import pandas as pd
import pytest

from graphgen_spark.llm.journal import (
    JournalWriter,
    earlier_answers,
    read_progress,
    write_progress,
)


def _row(rid: str, status: str) -> dict:
    return {
        "request_id": rid,
        "status": status,
        "parsed": f"answer {rid}",
        "updated_at": pd.Timestamp.now(),
    }


def test_a_retried_attempt_reads_its_partitions_ok_answers_and_skips_a_torn_line(tmp_path):
    uri = f"file:{tmp_path}/wave.journal"
    first = JournalWriter(uri, partition=3, attempt=0)
    first.append(_row("a", "ok"))
    first.append(_row("b", "failed"))
    first.close()
    other = JournalWriter(uri, partition=4, attempt=0)
    other.append(_row("c", "ok"))
    other.close()
    # a writer killed mid-line leaves half a record at the end of its file
    with open(f"{tmp_path}/wave.journal/p00003-a000-000000.jsonl", "a") as f:
        f.write('{"request_id": "d", "status": "o')

    assert earlier_answers(uri, partition=3, attempt=0) == {}  # a first attempt has none
    got = earlier_answers(uri, partition=3, attempt=1)
    assert set(got) == {"a"} and got["a"]["parsed"] == "answer a"
    assert isinstance(got["a"]["updated_at"], int)  # epoch micros, as Spark reads it back


def test_an_answer_is_on_disk_before_append_returns(tmp_path):
    """Local disks: nothing waits in memory, so a kill right after loses nothing."""
    uri = str(tmp_path / "j")
    writer = JournalWriter(uri, partition=0, attempt=0)
    writer.append(_row("x", "ok"))
    files = list((tmp_path / "j").iterdir())
    assert len(files) == 1 and '"request_id": "x"' in files[0].read_text()
    writer.close()


def test_a_wave_s_progress_sums_the_latest_attempt_of_each_task(tmp_path):
    uri = f"file:{tmp_path}/wave.journal"
    assert read_progress(uri) == {}  # no task has written yet
    write_progress(uri, 0, 0, {"rows": 5, "cost": 0.5})
    write_progress(uri, 0, 0, {"rows": 7, "cost": 0.7})  # replaced, not added
    write_progress(uri, 1, 0, {"rows": 9, "cost": 0.9})
    write_progress(uri, 1, 1, {"rows": 2, "cost": 0.2})  # the retry replaces the failed try
    assert read_progress(uri) == {"rows": 9, "cost": pytest.approx(0.9)}
    # never mistaken for a journal of calls
    assert earlier_answers(uri, partition=1, attempt=2) == {}
