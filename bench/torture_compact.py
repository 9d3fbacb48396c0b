"""Compaction torture run: the enrich flow tails a topic fed at a steady rate with a short
``flush_seconds`` (many small files) while ``driftline compact`` runs beside it and every
second compaction is killed inside its commit, at a commit point chosen at random;
``verify`` must accept the datasets after every kill.  At
the end: one more killed compaction, a re-run that finishes it, and the checks of the
issue: the file count of ``enriched`` cut by >= 10x, ``driftline query`` identical before
and after, ``verify`` clean.

    make torture-compact                       # 10 minutes at 50 events/s, flush_seconds 5
    python bench/torture_compact.py --minutes 0.5 --rate 200 --flush-seconds 0.5   # quick

The suite runs a reduced version (tests/sinks/parquet/test_parquet_compact_torture.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from driftline.sinks.parquet.faults import POINTS as FAULT_POINTS

QUERY = (
    "SELECT src_partition, count(*) AS rows, sum(src_offset) AS offsets, sum(hash(event_id)) AS ids, "
    "sum(hash(model_label)) AS labels, min(event_time) AS first, max(event_time) AS last FROM enriched GROUP BY ALL ORDER BY ALL"
)


@dataclass
class TortureResult:
    events: int = 0
    seconds: float = 0.0
    compactions_run: int = 0
    compactions_killed: int = 0
    verify_runs: int = 0
    verify_problems: list[str] = field(default_factory=list)
    files_before: int = 0  # files the flow's writers committed to enriched
    files_after: int = 0  # live files of enriched after the final compaction
    reduction: float = 0.0
    query_identical: bool = False
    final_kill_verified: bool = False
    final_verify_ok: bool = False

    @property
    def ok(self) -> bool:
        return self.reduction >= 10 and self.query_identical and self.final_kill_verified and self.final_verify_ok and not self.verify_problems


def _cli(config: Path, *argv: str) -> list[str]:
    return [sys.executable, "-m", "driftline.cli", "--config", str(config), *argv]


def _verify(root: str) -> list[str]:
    from driftline.sinks.parquet.store import open_store
    from driftline.sinks.parquet.verify import discover_datasets, verify_dataset

    store = open_store(root)
    return [f"{r.name}: {p.kind} {p.path} {p.detail}" for n in discover_datasets(store) for r in [verify_dataset(store, n)] for p in r.problems]


def _live_count(root: str, dataset: str) -> int:
    from driftline.sinks.parquet.manifest import live_files
    from driftline.sinks.parquet.store import open_store

    return len(live_files(open_store(root), dataset))


def _committed_offsets(root: str) -> int:
    from driftline.sinks.parquet.manifest import load_entries
    from driftline.sinks.parquet.store import open_store

    store = open_store(root)
    total = 0
    for ds in ("enriched", "rejected"):
        for e in load_entries(store, ds, live=False):
            for _tp, (lo, hi) in e.coverage.items():
                total += hi - lo + 1
    return total


def _query(config: Path) -> str:
    out = subprocess.run(_cli(config, "query", "--format", "csv", QUERY), capture_output=True, text=True, check=True, timeout=300)
    return out.stdout


#: The Parquet commit points a killed compaction stops at, one chosen at random each time.
KILL_POINTS = tuple(p for p in FAULT_POINTS if not p.startswith("kafka_"))


def _compact_and_maybe_kill(config: Path, rng: random.Random, res: TortureResult, *, kill: bool, retention: str) -> bool:
    """Run ``driftline compact``; with ``kill``, kill it inside its commit of ``enriched`` at a
    random commit point.  Returns True if killed.

    The kill is ``DRIFTLINE_FAULT``: the process leaves at once at that point with status 137,
    as after SIGKILL (nothing flushed, nothing cleaned up).  A SIGKILL sent from here at a
    random delay after the first staged file no longer lands: a small dataset's compaction
    commits within milliseconds of staging, and the executable leaves without interpreter
    teardown, so the kills of this harness all missed."""
    env = dict(os.environ)
    if kill:
        env["DRIFTLINE_FAULT"] = f"{rng.choice(KILL_POINTS)}@enriched:1"
    proc = subprocess.run(_cli(config, "compact", "--older-than", "0", "--retention", retention), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=600)
    res.compactions_run += 1
    killed = kill and proc.returncode == 137
    if killed:
        res.compactions_killed += 1
    elif proc.returncode != 0:
        raise RuntimeError(f"driftline compact failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return killed


def _files_written(root: str, dataset: str) -> int:
    """Files the flow's writers committed (compaction entries excluded)."""
    from driftline.sinks.parquet.manifest import COMPACT_WRITER, load_entries
    from driftline.sinks.parquet.store import open_store

    return sum(len(e.files) for e in load_entries(open_store(root), dataset, live=False) if e.writer != COMPACT_WRITER)


def torture(*, minutes: float, rate: float, flush_seconds: float, bootstrap: str | None = None, workdir: Path | None = None, seed: int = 7, compact_every: float = 10.0) -> TortureResult:
    from driftline.broker import LocalKafka

    work = Path(workdir or tempfile.mkdtemp(prefix="driftline-torture-"))
    broker = None
    if bootstrap is None:
        import socket

        ports = []
        for _ in range(2):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                ports.append(s.getsockname()[1])
        broker = LocalKafka(port=ports[0], controller_port=ports[1], state_dir=work / "kafka")
        bootstrap = broker.start(timeout=120)
    rng = random.Random(seed)
    res = TortureResult(events=int(minutes * 60 * rate))
    topic = f"torture-{uuid.uuid4().hex[:8]}"
    root = str(work / "datasets")
    config = work / "driftline.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap_servers": bootstrap, "input_topic": topic, "dead_letter_topic": f"{topic}.dlq", "output_topic": f"{topic}.out"},
                "sinks": {"root": root, "flush_seconds": flush_seconds},
            }
        )
    )
    env = {**os.environ, "DRIFTLINE_PROGRESS": "0"}
    started = time.monotonic()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        producer = subprocess.Popen(_cli(config, "produce", "--events", str(res.events), "--rate", str(rate), "--seed", str(seed), "--invalid-rate", "0.02"), env=env, stdout=subprocess.DEVNULL)
        procs.append(producer)
        time.sleep(1.0)  # the producer creates the topic
        flow_cmd = _cli(config, "run", "enrich", "--recovery-dir", str(work / "recovery"), "--epoch-interval", "2", "--log-level", "WARNING")
        flow = subprocess.Popen(flow_cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(work / "flow.log", "ab"))  # noqa: SIM115
        procs.append(flow)
        next_compact = time.monotonic() + compact_every
        kill = True
        while producer.poll() is None:
            time.sleep(0.5)
            if flow.poll() is not None:
                raise RuntimeError(f"the flow stopped ({flow.returncode}); see {work / 'flow.log'}")
            if time.monotonic() >= next_compact:
                # beside the running flow: every second compaction is killed inside its commit; a kill that
                # found nothing to commit yet (a slow flow had not written enough files) is tried again next time
                killed = _compact_and_maybe_kill(config, rng, res, kill=kill, retention="5s")
                kill = not kill or not killed
                problems = _verify(root)
                res.verify_runs += 1
                res.verify_problems += problems
                next_compact = time.monotonic() + compact_every
        deadline = time.monotonic() + 120
        while _committed_offsets(root) < res.events and time.monotonic() < deadline:
            time.sleep(0.5)
        flow.send_signal(signal.SIGKILL)  # a tailing flow never ends by itself; exactly-once covers the kill
        flow.wait()
        subprocess.run(_cli(config, "run", "enrich", "--drain", "--recovery-dir", str(work / "recovery"), "--log-level", "WARNING"), env=env, check=True, timeout=600, stdout=subprocess.DEVNULL)
        # the checks: after the run, a compaction SIGKILLed inside a commit, verify, re-run
        before = _query(config)
        res.files_before = _files_written(root, "enriched")
        for _attempt in range(10):
            if _compact_and_maybe_kill(config, rng, res, kill=True, retention="0"):
                break
        problems = _verify(root)
        res.verify_problems += problems
        res.final_kill_verified = res.compactions_killed > 0 and not problems and _query(config) == before
        subprocess.run(_cli(config, "compact", "--older-than", "0", "--retention", "0"), env=env, check=True, stdout=subprocess.DEVNULL)
        res.files_after = _live_count(root, "enriched")
        res.reduction = round(res.files_before / max(res.files_after, 1), 1)
        res.query_identical = _query(config) == before
        res.final_verify_ok = not _verify(root)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if broker is not None:
            broker.stop()
    res.seconds = round(time.monotonic() - started, 1)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=50.0, help="events per second")
    ap.add_argument("--flush-seconds", type=float, default=5.0)
    ap.add_argument("--bootstrap", default=None, help="use this broker instead of starting one")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--compact-every", type=float, default=30.0, help="seconds between compactions beside the running flow")
    args = ap.parse_args()
    res = torture(minutes=args.minutes, rate=args.rate, flush_seconds=args.flush_seconds, bootstrap=args.bootstrap, workdir=Path(args.workdir) if args.workdir else None, compact_every=args.compact_every)
    print(json.dumps({**asdict(res), "ok": res.ok}, indent=2))
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
