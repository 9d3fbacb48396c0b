"""``driftline verify`` on datasets written by the real sink, intact and tampered with."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from driftline.cli import main
from driftline.clock import FakeClock
from driftline.config.sinks import SinksConfig
from driftline.sinks.parquet import KAFKA_KEY, DatasetSpec, DatasetWriter, RunInfo, open_store

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=timezone.utc)
SCHEMA = pa.schema(
    [
        pa.field("src_topic", pa.string(), nullable=False),
        pa.field("src_partition", pa.int32(), nullable=False),
        pa.field("src_offset", pa.int64(), nullable=False),
        pa.field("event_time", pa.timestamp("ms", "UTC")),
    ]
)
SPEC = DatasetSpec("enriched", SCHEMA, KAFKA_KEY, "event_time")


def write(root: Path, offsets: list[int], writer_id: str = "p0", flush_rows: int = 5) -> None:
    cfg = SinksConfig(root=str(root), flush_rows=flush_rows)
    w = DatasetWriter(SPEC, cfg, store=open_store(cfg.root), run_info=RunInfo("0.1.0", "h"), clock=FakeClock(T0), writer_id=writer_id)
    w.write(
        pl.DataFrame(
            {
                "src_topic": ["t"] * len(offsets),
                "src_partition": [0] * len(offsets),
                "src_offset": offsets,
                "event_time": pl.Series([T0 + timedelta(minutes=o) for o in offsets], dtype=pl.Datetime("ms", "UTC")),
            }
        )
    )
    w.flush_due()
    w.flush_all()


def verify(root: Path, *extra: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = main(["verify", "--root", str(root), "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


def kinds(report: dict) -> list[str]:
    return sorted(f["kind"] for d in report["datasets"] for f in d["problems"])


def test_intact_dataset_passes(tmp_path, capsys) -> None:
    write(tmp_path, list(range(12)))
    code, report = verify(tmp_path, capsys=capsys)
    assert code == 0 and report["ok"]
    (ds,) = report["datasets"]
    assert (ds["name"], ds["rows"], ds["files"], ds["commits"]) == ("enriched", 12, 3, 3)
    assert main(["verify", "--root", str(tmp_path)]) == 0
    assert "enriched: OK" in capsys.readouterr().out


def test_changed_bytes_are_reported(tmp_path, capsys) -> None:
    write(tmp_path, list(range(5)))
    (f,) = list(tmp_path.rglob("*.parquet"))
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    code, report = verify(tmp_path, capsys=capsys)
    assert code == 1 and kinds(report) == ["checksum_mismatch"]


def test_unknown_and_missing_files_are_reported(tmp_path, capsys) -> None:
    write(tmp_path, list(range(10)))
    first, second = sorted(tmp_path.rglob("*.parquet"))
    shutil.copy(first, first.parent / "stray.parquet")
    second.unlink()
    code, report = verify(tmp_path, capsys=capsys)
    assert code == 1 and kinds(report) == ["missing_file", "unknown_file"]
    paths = {f["kind"]: f["path"] for f in report["datasets"][0]["problems"]}
    assert paths["unknown_file"].endswith("stray.parquet")


def test_duplicate_keys_across_files_are_reported(tmp_path, capsys) -> None:
    write(tmp_path / "a", list(range(10)))
    write(tmp_path / "b", list(range(7, 17)), writer_id="p1")  # a second writer that never saw the first
    shutil.copytree(tmp_path / "b" / "enriched", tmp_path / "a" / "enriched", dirs_exist_ok=True)
    code, report = verify(tmp_path / "a", capsys=capsys)
    assert code == 1 and kinds(report) == ["duplicate_keys"]
    detail = report["datasets"][0]["problems"][0]["detail"]
    assert detail.startswith("3 key(s) held more than once (3 extra row(s))")
    assert "src_offset=7" in detail


def test_interrupted_commit_is_a_warning_and_repair_finishes_it(tmp_path, capsys, monkeypatch) -> None:
    from driftline.sinks.parquet import LocalStore

    def crash(*_a, **_k):
        raise RuntimeError("crash")

    monkeypatch.setattr(LocalStore, "publish", crash)
    with pytest.raises(RuntimeError):
        write(tmp_path, list(range(3)))
    monkeypatch.undo()
    code, report = verify(tmp_path, capsys=capsys)
    assert code == 0 and [w["kind"] for w in report["datasets"][0]["warnings"]] == ["pending_publish"]
    code, report = verify(tmp_path, "--repair", capsys=capsys)
    assert code == 0 and [w["kind"] for w in report["datasets"][0]["warnings"]] == ["repaired_publish"]
    code, report = verify(tmp_path, capsys=capsys)
    assert code == 0 and report["datasets"][0]["warnings"] == [] and report["datasets"][0]["rows"] == 3
