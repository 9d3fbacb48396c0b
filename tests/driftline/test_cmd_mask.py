"""``driftline mask``: JSON Lines in, masked JSON Lines out, order and other fields kept."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from driftline.commands.mask import mask_lines
from driftline.config.privacy import PrivacyConfig
from driftline.operators.pii import PiiMasker

KEY = b"test-key-0123456789abcdef"


def run_lines(lines: list[str], **kw: object) -> tuple[list[dict], str, int]:
    out, err = io.BytesIO(), io.StringIO()
    errors = mask_lines(io.BytesIO("\n".join(lines).encode() + b"\n"), out, err, PiiMasker.from_config(PrivacyConfig(), KEY), **kw)
    return [json.loads(x) for x in out.getvalue().splitlines()], err.getvalue(), errors


def test_masks_text_adds_pii_and_keeps_other_fields() -> None:
    text = "mail ann@example.com, card 4111 1111 1111 1111"
    rows, err, errors = run_lines([json.dumps({"id": 7, "text": text, "meta": {"a": [1, 2]}, "z": None})])
    assert errors == 0 and err == ""
    (row,) = rows
    assert list(row) == ["id", "text", "meta", "z", "pii"]
    assert row["id"] == 7 and row["meta"] == {"a": [1, 2]} and row["z"] is None
    assert "ann@example.com" not in row["text"] and "4111" not in row["text"]
    assert [(p["type"], p["start"], p["end"], p["recognizer"]) for p in row["pii"]] == [
        ("EMAIL", 5, 20, "email"),
        ("CREDIT_CARD", 27, 46, "credit_card"),
    ]
    assert text[5:20] == "ann@example.com"


def test_bad_lines_reported_with_number_and_rest_kept_in_order() -> None:
    lines = [
        json.dumps({"n": 1, "text": "call +1 415-555-2671"}),
        "{not json",
        json.dumps([1, 2]),
        json.dumps({"n": 4, "text": 12}),
        json.dumps({"n": 5}),
        "",
        json.dumps({"n": 7, "text": None}),
        json.dumps({"n": 8, "text": "fine"}),
    ]
    rows, err, errors = run_lines(lines, batch_size=3)
    assert errors == 4
    assert [r.get("n", r.get("error", {}).get("line")) for r in rows] == [1, 2, 3, 4, 5, 7, 8]
    assert rows[1]["error"]["line"] == 2 and "not valid JSON" in rows[1]["error"]["message"]
    assert "line 2:" in err and "line 3:" in err and "line 4:" in err and "line 5:" in err
    assert rows[5] == {"n": 7, "text": None, "pii": []}
    assert rows[6] == {"n": 8, "text": "fine", "pii": []}


def test_other_field_can_be_masked() -> None:
    rows, _, _ = run_lines([json.dumps({"body": "ann@example.com", "text": "ann@example.com"})], field="body")
    assert rows[0]["body"].startswith("<EMAIL:") and rows[0]["text"] == "ann@example.com"


def test_cli_end_to_end_with_config(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("privacy:\n  strategies:\n    EMAIL: redact\n")
    src = "\n".join(json.dumps({"i": i, "text": f"user{i}@example.com"}) for i in range(5)) + "\n"
    env = {**os.environ, "DRIFTLINE_PII_KEY": "cli-key-0123456789abcdef"}
    proc = subprocess.run([sys.executable, "-m", "driftline.cli", "--config", str(cfg), "mask"], input=src.encode(), env=env, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [r["i"] for r in rows] == list(range(5))
    assert all(r["text"] == "<EMAIL>" for r in rows)
    bad = subprocess.run([sys.executable, "-m", "driftline.cli", "mask"], input=b"oops\n", env=env, capture_output=True, timeout=120)
    assert bad.returncode == 1 and b"line 1" in bad.stderr
