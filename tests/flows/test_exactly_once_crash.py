"""Exactly-once Parquet output across SIGKILLs on the real broker (issue 3, done-when).

50,000 events (5% malformed) are run through ``driftline run enrich --drain`` as a
subprocess that is killed again and again, at the commit points that matter
(``DRIFTLINE_FAULT``, test-only: the process ``os._exit(137)``s exactly there) and by a
real ``SIGKILL`` at an arbitrary moment, each time restarting from the same recovery
folder.  The datasets must then hold every valid event exactly once in ``enriched``,
every refused one exactly once in ``rejected``, and ``driftline verify`` must pass.
Then further runs (a plain restart, and a full replay from offset 0 with a fresh
recovery folder) must leave every committed file byte-for-byte unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import polars as pl
import pytest

from driftline.cli import main as cli_main
from driftline.producer import produce
from driftline.sinks.parquet import load_entries, open_store
from driftline.testing.kills import finish_flow_process, start_flow_process

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

#: Enough input that every run reaches its fault point before the topic ends (each run
#: consumes its commits' rows; the later faults once found the input already drained).
EVENTS = 60_000

# Columns that measure the run rather than the data: the local model's wall-clock latency
# and when an alert was raised.  Everything else must equal a never-killed run.
PROCESSING_TIME_COLUMNS = frozenset({"fired_at", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_mean_ms"})
NATURAL_KEYS = {"metrics": ["window_start", "key"], "metrics_late": ["window_start", "key", "first_id"], "alerts": ["rule", "key", "window_start", "state"]}

# (fault plan, what it simulates); every run restarts from the same recovery folder.
FAULTS = [
    ("mid_write@enriched:2", "killed in the middle of writing a Parquet file"),
    ("after_publish@enriched:2", "killed between a file's commit and the next snapshot"),
    ("after_manifest@rejected:2", "killed after the manifest entry, before the file is visible"),
    (None, "SIGKILL from outside at an arbitrary moment"),
    ("before_manifest@enriched:2", "killed with staged files but no manifest entry"),
    ("after_publish@rejected:2,after_publish@enriched:5", "killed after commits of both datasets"),
]


def _same(a: pl.Series, b: pl.Series) -> bool:
    """Equal; floats up to summation-order rounding (windows merge partial sums in arrival order)."""
    if a.dtype.is_float() and b.dtype.is_float():
        both_null = a.is_null() & b.is_null()
        close = ((a - b).abs() <= 1e-9 * (a.abs() + b.abs()).clip(lower_bound=1.0)).fill_null(False)
        return bool((both_null | close).all())
    return a.equals(b)


def _env(bootstrap: str, topic: str, root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE")}
    env.update(
        {
            "DRIFTLINE__KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "DRIFTLINE__KAFKA__INPUT_TOPIC": topic,
            "DRIFTLINE__KAFKA__DEAD_LETTER_TOPIC": f"{topic}.dlq",
            "DRIFTLINE__KAFKA__OUTPUT_TOPIC": f"{topic}.out",
            "DRIFTLINE__SINKS__ROOT": str(root),
            "DRIFTLINE__SINKS__FLUSH_ROWS": "2500",
            "DRIFTLINE__SINKS__FLUSH_SECONDS": "1",
        }
    )
    return env


def _run(
    env: dict[str, str], recovery: Path, fault: str | None, *, kill_after_commits: int | None = None, timeout: float = 240, final: bool = False
) -> tuple[int, list[dict]]:
    """Run the flow once; returns its exit status and the sink's JSON log records.

    A ``final`` run ends the input: windows still open are emitted rather than kept in
    the recovery folder for a next run."""
    proc = start_flow_process("enrich", env, recovery, final=final, fault=fault)
    if kill_after_commits is not None:
        root = Path(env["DRIFTLINE__SINKS__ROOT"])
        start = _commits(root)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and _commits(root) < start + kill_after_commits and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
    err = finish_flow_process(proc, timeout)
    logs = []
    for line in err.splitlines():
        if line.startswith("{") and '"msg": "sink_' in line:
            logs.append(json.loads(line))
    return proc.returncode, logs


def _commits(root: Path) -> int:
    return sum(len(list((root / ds / "_manifest").glob("*.json"))) for ds in ("enriched", "rejected") if (root / ds / "_manifest").is_dir())


def _checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.parquet"))}


def _dataset(root: Path, name: str) -> pl.DataFrame:
    store = open_store(str(root))
    files = [str(root / name / f.path) for e in load_entries(store, name) for f in e.files]
    return pl.read_parquet(files) if files else pl.DataFrame()


def test_sigkill_at_commit_points_then_restart_is_exactly_once(kafka_bootstrap: str, unique_topic, tmp_path: Path, capsys) -> None:
    topic = unique_topic("crash")
    sent = produce(kafka_bootstrap, topic, EVENTS, seed=7, invalid_rate=0.05, pii_rate=0.0, progress=False)
    valid_ids = {e.record["event_id"] for e in sent if not e.defect}
    refused = sum(1 for e in sent if e.defect)
    root, recovery = tmp_path / "out", tmp_path / "recovery"
    env = _env(kafka_bootstrap, topic, root)

    codes, logs = [], []
    for fault, _why in FAULTS:
        code, run_logs = _run(env, recovery, fault, kill_after_commits=None if fault else 3)
        codes.append(code)
        logs += run_logs
    assert codes.count(137) + codes.count(-signal.SIGKILL) >= 5, codes  # the kills really happened mid-run
    code, run_logs = _run(env, recovery, None, final=True)  # the final run drains the topic
    assert code == 0
    logs += run_logs
    # the restarts really exercised recovery: temps removed, commits rolled forward, replays skipped
    assert sum(r.get("removed_temps", 0) for r in logs if r["msg"] == "sink_recovered") >= 1
    assert sum(r.get("rolled_forward", 0) for r in logs if r["msg"] == "sink_recovered") >= 1
    assert sum(r.get("skipped_committed_rows", 0) for r in logs if r["msg"] == "sink_resumed") >= 1

    enriched, rejected = _dataset(root, "enriched"), _dataset(root, "rejected")
    ids = enriched["event_id"]
    assert ids.is_duplicated().sum() == 0, "an event was written twice"
    assert set(ids.to_list()) == valid_ids, "an event is missing"
    assert rejected.select("src_topic", "src_partition", "src_offset").is_duplicated().sum() == 0
    assert rejected.height == refused
    both = pl.concat([enriched.select("src_partition", "src_offset"), rejected.select("src_partition", "src_offset")])
    assert both.height == EVENTS and both.is_duplicated().sum() == 0

    assert cli_main(["verify", "--root", str(root)]) == 0, capsys.readouterr().out

    # Window-keyed datasets equal a never-killed run's, and every enriched event is counted
    # once: in its window or as late.
    store = open_store(str(root))
    windowed = sorted(
        d.name
        for d in root.iterdir()
        if d.is_dir() and (entries := load_entries(store, d.name)) and not any(e.coverage for e in entries)  # window-keyed: no offset coverage
    )
    assert "metrics" in windowed, windowed
    late = _dataset(root, "metrics_late")
    late_events = int(late["late_events"].sum()) if late.height else 0
    assert int(_dataset(root, "metrics")["events"].sum()) + late_events == enriched.height
    clean_root = tmp_path / "clean"
    assert _run(_env(kafka_bootstrap, topic, clean_root), tmp_path / "clean-recovery", None, final=True)[0] == 0
    for name in windowed:
        got, want = _dataset(root, name), _dataset(clean_root, name)
        cols = [c for c in got.columns if c not in PROCESSING_TIME_COLUMNS]
        order = NATURAL_KEYS[name] + [c for c in cols if c not in NATURAL_KEYS[name] and c != "drift"]
        got, want = got.select(cols).sort(order), want.select(cols).sort(order)
        assert got.height == want.height, f"{name}: {got.height} rows, an uninterrupted run wrote {want.height}"
        diff = [c for c in cols if not _same(got[c], want[c])]
        assert diff == [], f"{name} differs from an uninterrupted run in {diff}"

    # Immutability: further runs, restarts and full replays never change a committed file.
    before = _checksums(root)
    assert _run(env, recovery, None, final=True)[0] == 0  # restart after a finished run
    code, replay_logs = _run(env, tmp_path / "fresh-recovery", None, final=True)  # replays all 50,000 events from offset 0
    assert code == 0
    closed = {r["dataset"]: r for r in replay_logs if r["msg"] == "sink_closed"}
    assert closed["enriched"]["rows_written"] == 0 and closed["enriched"]["rows_replayed"] == len(valid_ids)
    assert closed["rejected"]["rows_written"] == 0 and closed["rejected"]["rows_replayed"] == refused
    assert _checksums(root) == before
    assert cli_main(["verify", "--root", str(root)]) == 0
