"""``driftline report``: the HTML of a real demo run (Kafka broker, enrich flow) renders in
headless Chromium with every plot drawn and no console error; filters and bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from driftline.cli import main
from driftline.testing.chromium import check_page, find_chromium

PLOTS = ["events", "pii", "latency", "tiers", "cost", "drift", "alerts"]


@pytest.fixture(scope="module")
def demo_root(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--events", "1500", "--bootstrap", kafka_bootstrap, "--out", str(out), "--json"]) == 0
    (root,) = list(out.glob("*/datasets"))
    assert (root.parent / "report.html").stat().st_size > 50_000  # the demo writes its report
    return root


@pytest.mark.kafka
def test_report_of_a_demo_run_draws_every_plot_in_chromium(demo_root: Path, tmp_path: Path, capsys) -> None:
    if find_chromium() is None:
        pytest.fail("chromium is not installed: run `make chromium` (the project's set-up installs Debian's package)")
    out = tmp_path / "report.html"
    capsys.readouterr()
    assert main(["report", "--root", str(demo_root), "-o", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    page = out.read_text()
    # self-contained: nothing is fetched at view time
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<script" not in page and "@import" not in page
    assert not re.search(r"url\((?!#)", page)  # only references inside the page (clip paths)
    shot = tmp_path / "report.png"
    result = check_page(out, shot)
    assert result["console_errors"] == [] and result["exceptions"] == []
    drawn = {p["name"]: p for p in result["plots"]}
    assert sorted(drawn) == sorted(PLOTS)
    for name in PLOTS:
        p = drawn[name]
        assert p["width"] > 300 and p["height"] > 100 and p["shapes"] > 20, p
    # the demo's data reach every plot except those that need what a short demo may lack
    assert not any(drawn[n]["empty"] for n in ("events", "pii", "latency", "tiers", "cost")), drawn
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000


@pytest.mark.kafka
def test_report_summary_matches_the_datasets_and_filters_by_time(demo_root: Path, tmp_path: Path, capsys) -> None:
    capsys.readouterr()
    assert main(["query", "--root", str(demo_root), "--format", "json", "SELECT count(*) AS n, min(event_time) AS lo FROM enriched"]) == 0
    row = json.loads(capsys.readouterr().out)
    out = tmp_path / "all.html"
    assert main(["report", "--root", str(demo_root), "-o", str(out)]) == 0
    assert f"<td>accepted (enriched)</td><td>{row['n']:,}</td>" in out.read_text()
    # a range after every event: the plots say so instead of disappearing
    late = tmp_path / "late.html"
    assert main(["report", "--root", str(demo_root), "--since", "2100-01-01T00:00:00Z", "-o", str(late)]) == 0
    text = late.read_text()
    assert "<td>accepted (enriched)</td><td>0</td>" in text
    assert text.count('data-empty="true"') == len(PLOTS)


def test_report_refuses_bad_ranges(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["report", "--root", str(tmp_path), "--since", "yesterday"])
    assert "not an ISO-8601 instant" in capsys.readouterr().err
    assert main(["report", "--root", str(tmp_path), "--since", "2026-03-02T00:00Z", "--until", "2026-03-01T00:00Z"]) == 2
    # no datasets at all: still one page, every plot says why it is empty
    out = tmp_path / "empty.html"
    assert main(["report", "--root", str(tmp_path), "-o", str(out)]) == 0
    assert out.read_text().count('data-empty="true"') == len(PLOTS)
