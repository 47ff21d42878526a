"""The run report: numbers formatted for people, ``run.json`` with the same figures as the
page, and the page itself in a real browser (Debian's headless Chromium, driven by Selenium
through the system chromedriver, so nothing is downloaded).

The browser test fails, never skips, when Chromium is missing: ``.ci/run`` installs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from contexts import CORPUS, llm_conf
from rows import merge_rows, row

from graphgen_spark.config import build_config
from graphgen_spark.pipeline import run_pipeline
from graphgen_spark.report import format as fmt
from graphgen_spark.report.figures import run_figures
from graphgen_spark.report.index import render_page
from graphgen_spark.report.plots import PLOTS
from graphgen_spark.standin import StandinOptions, StandinServer
from graphgen_spark.tables import Tables

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# drawn for the demo corpus with the stand-in as synthesizer and trainee
DRAWN = ("timeline", "llm-usage", "graph", "losses", "reliability", "qa-counts", "answer-lengths")


# -- formatting ------------------------------------------------------------------------------
def test_seconds_read_as_people_say_them():
    assert fmt.seconds(21.0895) == "21.1 s"
    assert fmt.seconds(0.4234) == "0.42 s"
    assert fmt.seconds(59.97) == "1 min"
    assert fmt.seconds(125) == "2 min 5 s"
    assert fmt.seconds(3 * 3600 + 125) == "3 h 2 min"
    assert fmt.seconds(7200) == "2 h"
    assert fmt.seconds(None) == "–"


def test_money_keeps_two_significant_digits_below_a_dollar():
    assert fmt.money(0.0012) == "$0.0012"
    assert fmt.money(0.00123456) == "$0.0012"
    assert fmt.money(0.5) == "$0.50"
    assert fmt.money(0) == "$0.00"
    assert fmt.money(1234.5) == "$1,234.50"


def test_tokens_counts_and_numbers():
    assert fmt.tokens(950) == "950 tokens"
    assert fmt.tokens(123_456) == "123,456 tokens"
    assert fmt.tokens(1_234_567) == "1.2 M tokens"
    assert fmt.tokens(3_400_000_000) == "3.4 B tokens"
    assert fmt.count(12345) == "12,345"
    assert (fmt.number(0.123456), fmt.number(12.3456), fmt.number(0.0)) == ("0.123", "12.3", "0")
    assert (fmt.percent(0.125), fmt.percent(0.00936)) == ("12.5 %", "0.9 %")
    assert (fmt.short(950), fmt.short(12_000), fmt.short(1_500_000)) == ("950", "12 k", "1.5 M")


def test_every_plot_is_skipped_with_a_note_when_its_table_is_empty():
    empty = {
        "run": {"run_id": "r" * 40, "status": "ok", "seconds": None},
        "stages": [],
        "totals": dict.fromkeys(
            ("seconds", "llm_seconds", "prompt_tokens", "completion_tokens", "cost"), 0
        ),
        "llm_calls": [],
        "graph": None,
        "gap_scoring": "on",
        "sampling": "max_loss",
        "calibration": [],
        "loss_histograms": {},
        "batches": [],
        "qa": [],
        "qa_ok": 0,
        "answer_lengths": {},
        "quarantine": [],
        "qa_metrics": [],
    }
    page = render_page(empty)
    for key, _, _ in PLOTS:
        assert re.search(rf'<p class="skipped" id="plot-{key}">[^<]+\.</p>', page), key
    assert "<img" not in page


# -- a real run's report ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def report(spark, tmp_path_factory) -> dict:
    """Every stage on the demo corpus, the stand-in as synthesizer and trainee."""
    out = tmp_path_factory.mktemp("report") / "out"
    with StandinServer(StandinOptions(), announce=False) as server:
        conf = {"spark": {"shuffle_partitions": 4}, "llm": llm_conf(server.base_url)}
        run_id = run_pipeline(build_config(conf, env=False), str(CORPUS), out, spark=spark)
    folder = out / "report"
    return {
        "run_id": run_id,
        "tables": Tables(spark, out),
        "page": folder / "index.html",
        "figures": json.loads((folder / "run.json").read_text("utf-8")),
    }


def test_figures_of_unchanged_tables_come_from_the_last_run_json(spark, tables):
    cfg = build_config({}, env=False)
    record = {"run_id": "r1", "stage_stats": []}
    first = run_figures(cfg, tables, "r1", dict(record))
    kept = [{"stage": "ingest", "reason": "from the last report", "rows": 7}]
    last = {**first, "quarantine": kept}
    assert run_figures(cfg, tables, "r1", dict(record), last)["quarantine"] == kept
    merge_rows(tables, "quarantine", [row("quarantine", stage="chunk", reason="empty")])
    again = run_figures(cfg, tables, "r1", dict(record), last)  # a new quarantine version
    assert again["quarantine"] == [{"stage": "chunk", "reason": "empty", "rows": 1}]
    assert again["sources"]["versions"]["quarantine"] == tables.version("quarantine") >= 0


def test_run_json_holds_the_figures_the_page_shows(report):
    f, page = report["figures"], report["page"].read_text("utf-8")
    tables: Tables = report["tables"]
    run = tables.read("runs").filter(f"run_id = '{report['run_id']}'").first()
    assert f["run"]["run_id"] == report["run_id"] and f["run"]["status"] == "ok"
    assert [s["stage"] for s in f["stages"]] == [s["stage"] for s in run["stage_stats"]]
    assert f["totals"]["cost"] == pytest.approx(sum(s["cost"] or 0 for s in run["stage_stats"]))
    assert f["qa_ok"] == tables.read("qa").filter("status = 'ok'").count() > 0
    for s in f["stages"]:
        assert 0 <= s["llm_seconds"] <= s["seconds"]
    assert any(s["llm_seconds"] > 0 for s in f["stages"] if s["stage"] == "extract")
    assert sum(f["graph"]["degree_histogram"]["counts"]) == f["graph"]["vertices"]
    sizes = f["graph"]["component_sizes"]
    assert sum(sizes["counts"]) == f["graph"]["components"]
    assert (
        sum(v * n for v, n in zip(sizes["values"], sizes["counts"], strict=True))
        == (f["graph"]["vertices"])
    )
    summary = re.search(r'<ul class="summary" id="summary">(.*?)</ul>', page).group(1)
    assert f"QA kept<b>{fmt.count(f['qa_ok'])}</b>" in summary
    assert f"cost<b>{fmt.money(f['totals']['cost'])}</b>" in summary
    assert f"run time<b>{fmt.seconds(f['run']['seconds'])}</b>" in summary
    for s in f["stages"]:
        time = f'<td class="n">{fmt.seconds(s["seconds"])}</td>'
        assert f"<td>{s['stage']}</td><td>{s['status']}</td>{time}" in page


def test_the_page_is_self_contained(report):
    page = report["page"].read_text("utf-8")
    assert "<script" not in page and "<link" not in page and "url(" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == len(DRAWN) and all(
        s.startswith("data:image/png;base64,") for s in sources
    )
    assert (report["page"].parent / "reliability_standin.png").is_file()  # judge's own file


def _browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail(
            f"{CHROMIUM} or {CHROMEDRIVER} is missing: apt-get install -y chromium chromium-driver"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))


def _keep(shot: Path) -> Path:
    """The screenshot as a test artifact: also copied to ``$GRAPHGEN_TEST_ARTIFACTS``."""
    folder = os.environ.get("GRAPHGEN_TEST_ARTIFACTS")
    if not folder:
        return shot
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(shot, Path(folder) / shot.name))


def test_the_report_in_headless_chromium(report, tmp_path):
    driver = _browser(tmp_path / "chromium-profile")
    try:
        driver.get(report["page"].resolve().as_uri())
        images = driver.execute_script(
            "return [...document.images].map(i => [i.alt, i.complete, i.naturalWidth]);"
        )
        ids = driver.execute_script(
            "return [...document.querySelectorAll('[id^=plot-]')].map(e => e.id);"
        )
        fetched = driver.execute_script("return performance.getEntriesByType('resource').length;")
        height = driver.execute_script("return document.documentElement.scrollHeight;")
        driver.set_window_size(1280, min(height + 100, 16000))
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot))
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()
    print(f"report screenshot: {_keep(shot)}")
    assert len(images) == len(DRAWN) and all(ok and width > 0 for _, ok, width in images), images
    assert ids == [f"plot-{key}" for key, _, _ in PLOTS]
    assert fetched == 0  # nothing was loaded beside the page
    assert not errors, errors
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
