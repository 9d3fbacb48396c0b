from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from driftline.commands.config import reference_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_reference_doc_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "configuration-reference.md").read_text()
    assert committed == reference_markdown(), "regenerate with: driftline config reference > docs/configuration-reference.md"


def test_every_key_has_a_description() -> None:
    rows = [r for r in reference_markdown().splitlines() if r.startswith("| `")]
    assert len(rows) > 100
    undocumented = [r.split("|")[1].strip() for r in rows if not r.rstrip(" |").split("|")[-1].strip()]
    assert undocumented == []


def _check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "driftline.cli", "config", "check", str(path)], capture_output=True, text=True, timeout=120)


def test_example_configuration_is_valid() -> None:
    res = _check(ROOT / "config" / "driftline.example.yaml")
    assert res.returncode == 0, res.stderr
    assert "configuration OK" in res.stdout


def test_check_finds_what_only_the_stages_know(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("privacy:\n  strategies:\n    API_KEY: redact\n")
    res = _check(bad)
    assert res.returncode == 2
    assert "API_KEY" in res.stderr
    bad.write_text("validation:\n  business_rules:\n    - {name: r, expr: 'attributes.a >> 2', severity: error}\n")
    res = _check(bad)
    assert res.returncode == 2
    assert "business_rules" in res.stderr
