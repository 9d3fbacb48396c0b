"""Torture run: the enrich flow on the real broker, killed again and again, resuming from
one recovery folder; every output is then compared with an uninterrupted run.

    make torture                                               # 100,000 events, 25 kills, both settings
    .venv/bin/python bench/torture.py --events 20000 --kills 8 --epoch-interval 1 --flush-seconds 1

N events (3 partitions, 3% malformed, 20% with PII, fixed seed) are produced in K+1
chunks.  Before kill i, chunk i is produced and ``driftline run enrich`` started (tailing
the topic) as a process group, then killed one of three ways:

- ``startup``: SIGKILL of the whole group at a random moment before the flow has started;
- ``commit``: the process dies at a commit point (``DRIFTLINE_FAULT``, test-only: the
  Parquet sink's ``mid_write``, ``before_manifest``, ``after_manifest``, ``after_publish``
  or the Kafka sink's ``kafka_before_commit``, ``kafka_after_commit``), falling back to a
  SIGKILL when the point is not reached in time;
- ``random``: SIGKILL of the whole group at a random moment while it works.

A last run drains the topic and closes the windows.  The same topic drained once without
a kill (its own outputs) is the reference.  Compared: every Parquet dataset row by row
(natural keys unique; columns that measure the run rather than the data left out, see
``RUN_COLUMNS``), the output, dead-letter, metrics and alerts topics read with
read_committed (each record exactly once, the same records as the reference), windows
(events + late events = enriched rows) and alerts (each with its window's metrics row;
one extra rule makes alerts fire and resolve every few windows, see ``ALERTING``);
``driftline verify`` on the killed run's datasets.  ``--remote-events`` adds the
remote-tier kill test (the loopback provider, with and without idempotency keys; see
driftline.testing.kills) and prints requests answered twice against those in flight.

The suite runs a reduced version (tests/flows/test_torture.py).
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
from collections import Counter
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from driftline.testing.datasets import close_values

PARQUET_POINTS = ("mid_write", "before_manifest", "after_manifest", "after_publish")
KAFKA_POINTS = ("kafka_before_commit", "kafka_after_commit")
# Datasets a Parquet fault point is aimed at, by how often they commit.
FAULT_DATASETS = ("enriched", "enriched", "rejected", "audit", "metrics")
NATURAL_KEYS = {
    "enriched": ["src_topic", "src_partition", "src_offset"],
    "rejected": ["src_topic", "src_partition", "src_offset"],
    "audit": ["src_topic", "src_partition", "src_offset"],
    "metrics": ["window_start", "key"],
    "metrics_late": ["window_start", "key", "first_id"],
    "alerts": ["rule", "key", "window_start", "state"],
}
# Columns that measure the run, not the data: the local model's wall-clock latency (and the
# window latency statistics made of it), whether an answer came from the ledger after a
# restart, when the privacy stage ran, when an alert was raised.
LATENCY = ("latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_mean_ms")
RUN_COLUMNS = {"enriched": ("model_latency_ms", "model_replayed"), "audit": ("processed_at",), "metrics": LATENCY, "alerts": ("fired_at",), "output": ("model_latency_ms", "model_replayed")}
TOPICS = ("output", "dead_letter", "metrics", "alerts")


def _alerting() -> dict[str, str]:
    """The default rules plus one that fires and resolves every few windows on the
    synthetic stream (windows of fewer than 160 events), a 2-minute cool-down and a
    3-window drift warm-up, so alert state and drift references cross every restart."""
    from driftline.config.monitoring import AlertsConfig

    rules = [r.model_dump() for r in AlertsConfig().rules]
    rules.append({"name": "torture_quiet_window", "metric": "events", "comparison": "<", "threshold": 160, "severity": "warning", "description": "fewer than 160 events"})
    return {
        "DRIFTLINE__MONITORING__ALERTS__RULES": json.dumps(rules),
        "DRIFTLINE__MONITORING__ALERTS__COOLDOWN_SECONDS": "120",
        "DRIFTLINE__MONITORING__DRIFT__WARMUP_WINDOWS": "3",
    }


ALERTING = _alerting()


@dataclass
class Outputs:
    """Where one variant (killed or uninterrupted) writes."""

    name: str
    root: Path
    recovery: Path
    topics: dict[str, str]


@dataclass
class Run:
    kind: str  # startup, commit, random, final
    plan: str | None
    code: int
    seconds: float
    started: bool  # the flow had logged "flow starting" when it died


@dataclass
class Comparison:
    output: str
    reference: int
    got: int
    duplicates: int = 0
    missing: int = 0
    extra: int = 0
    differing: list[str] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return self.got == self.reference and not (self.duplicates or self.missing or self.extra or self.differing)


@dataclass
class TortureResult:
    events: int
    kills: int
    settings: dict[str, Any]
    runs: list[Run] = field(default_factory=list)
    comparisons: list[Comparison] = field(default_factory=list)
    invariants: dict[str, bool] = field(default_factory=dict)
    verify_ok: bool = False
    replayed_records: int = 0  # records the Kafka sinks skipped as already committed
    commits_after_snapshot: int = 0  # transactions found in Kafka beyond the snapshot resumed from
    aborted_records: int = 0  # records of aborted transactions (seen by read_uncommitted only)
    seconds: float = 0.0
    remote: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.equal for c in self.comparisons) and all(self.invariants.values()) and self.verify_ok and all(r["ok"] for r in self.remote)

    def killed(self) -> Counter[str]:
        return Counter(r.kind for r in self.runs if r.kind != "final" and r.code != 0)


# -- running the flow ----------------------------------------------------------------------


def flow_env(bootstrap: str, topic: str, out: Outputs, settings: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE")}
    env.update(
        {
            "DRIFTLINE__KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "DRIFTLINE__KAFKA__INPUT_TOPIC": topic,
            "DRIFTLINE__KAFKA__OUTPUT_TOPIC": out.topics["output"],
            "DRIFTLINE__KAFKA__DEAD_LETTER_TOPIC": out.topics["dead_letter"],
            "DRIFTLINE__KAFKA__METRICS_TOPIC": out.topics["metrics"],
            "DRIFTLINE__KAFKA__ALERTS_TOPIC": out.topics["alerts"],
            "DRIFTLINE__SINKS__ROOT": str(out.root),
            "DRIFTLINE_HOME": str(out.recovery.parent / "home"),
            **settings,
        }
    )
    return env


def start_flow(env: dict[str, str], out: Outputs, epoch_interval: float, log: Path, *, drain: bool, final: bool = False, fault: str | None = None) -> subprocess.Popen[bytes]:
    from driftline.testing.kills import start_flow_process

    with open(log, "wb") as fh:
        return start_flow_process("enrich", env, out.recovery, epoch_interval=epoch_interval, drain=drain, final=final, fault=fault, stderr=fh, new_session=True)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=60)


def started(log: Path) -> bool:
    return log.exists() and b'"msg": "flow starting"' in log.read_bytes()


def log_records(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_bytes().splitlines():
        if line.startswith(b"{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def committed_offsets(root: Path) -> int:
    """Offsets committed to ``enriched`` or ``rejected`` (every offset lands in one)."""
    from driftline.sinks.parquet import load_entries, open_store
    from driftline.sinks.parquet.manifest import kafka_watermarks

    if not root.exists():
        return 0
    store = open_store(str(root))
    wm: dict[tuple[str, int], int] = {}
    for ds in ("enriched", "rejected"):
        for tp, hi in kafka_watermarks(load_entries(store, ds)).items():
            wm[tp] = max(wm.get(tp, -1), hi)
    return sum(hi + 1 for hi in wm.values())


# -- comparing -----------------------------------------------------------------------------


def dataset(root: Path, name: str) -> pl.DataFrame:
    from driftline.sinks.parquet import load_entries, open_store

    store = open_store(str(root))
    files = [str(root / name / f.path) for e in load_entries(store, name) for f in e.files] if (root / name).is_dir() else []
    return pl.read_parquet(files) if files else pl.DataFrame()


def _same(a: pl.Series, b: pl.Series) -> bool:
    """Equal; floats up to summation-order rounding (windows merge partial sums in arrival order)."""
    if a.dtype.is_float() and b.dtype.is_float():
        close = ((a - b).abs() <= 1e-9 * (a.abs() + b.abs()).clip(lower_bound=1.0)).fill_null(False)
        return bool((close | (a.is_null() & b.is_null()) | (a.is_nan() & b.is_nan()).fill_null(False)).all())
    return a.equals(b)


def compare_dataset(name: str, got: pl.DataFrame, want: pl.DataFrame) -> Comparison:
    keys = NATURAL_KEYS[name]
    c = Comparison(f"{name} (Parquet)", want.height, got.height)
    if not got.height or not want.height:
        c.missing = want.height - got.height if want.height > got.height else 0
        c.extra = got.height - want.height if got.height > want.height else 0
        return c
    c.duplicates = int(got.select(keys).is_duplicated().sum())
    c.missing = want.join(got, on=keys, how="anti").height
    c.extra = got.join(want, on=keys, how="anti").height
    if c.duplicates or c.missing or c.extra:
        return c
    cols = [x for x in want.columns if x not in RUN_COLUMNS.get(name, ())]
    got, want = got.select(cols).sort(keys), want.select(cols).sort(keys)
    c.differing = [x for x in cols if not _same(got[x], want[x])]
    return c


def topic_records(bootstrap: str, topic: str, kind: str, isolation: str = "read_committed") -> list[tuple[tuple[Any, ...], Any]]:
    """``(identity, content)`` of every record: source coordinates for output and
    dead-letter records, the natural key for window rows; content without run fields."""
    from driftline.testing.kafka import consume_all

    out = []
    for m in consume_all(bootstrap, topic, isolation=isolation):
        if kind == "dead_letter":
            h = m.headers
            ident = (h["driftline.src.topic"], h["driftline.src.partition"], h["driftline.src.offset"])
            out.append((ident, (m.key, m.value, h.get("driftline.reason_codes"))))
            continue
        value = orjson.loads(m.value)
        for col in RUN_COLUMNS.get(kind, ()):
            value.pop(col, None)
        if kind == "output":
            ident = (value["src_topic"], value["src_partition"], value["src_offset"])
        else:
            ident = tuple(value[k] for k in NATURAL_KEYS[kind])
        out.append((ident, value))
    return out


def compare_topic(kind: str, got: list[tuple[tuple[Any, ...], Any]], want: list[tuple[tuple[Any, ...], Any]]) -> Comparison:
    c = Comparison(f"{kind} topic (read_committed)", len(want), len(got))
    counts = Counter(i for i, _ in got)
    c.duplicates = sum(n - 1 for n in counts.values() if n > 1)
    ref = dict(want)
    mine = dict(got)
    c.missing = len(ref.keys() - mine.keys())
    c.extra = len(mine.keys() - ref.keys())
    if len(ref) != len(want):
        c.differing.append("duplicates in the reference")
    bad = sum(1 for k in ref.keys() & mine.keys() if not close_values(ref[k], mine[k], nan_equal=True))
    if bad:
        c.differing.append(f"{bad} records differ")
    return c


def verify(root: Path) -> bool:
    proc = subprocess.run([sys.executable, "-m", "driftline.cli", "verify", "--root", str(root)], capture_output=True, text=True)
    return proc.returncode == 0


# -- the run -------------------------------------------------------------------------------


def torture(
    *,
    events: int,
    kills: int,
    bootstrap: str,
    workdir: Path,
    flush_seconds: float | None = None,
    epoch_interval: float = 10.0,
    seed: int = 14,
    partitions: int = 3,
    say: Any = print,
) -> TortureResult:
    """One torture run (see the module docstring); ``flush_seconds`` None keeps the default."""
    from driftline.producer import SyntheticProducer, produce

    t0 = time.monotonic()
    rng = random.Random(seed)
    topic = f"torture-{uuid.uuid4().hex[:8]}"
    settings = {**ALERTING, **({} if flush_seconds is None else {"DRIFTLINE__SINKS__FLUSH_SECONDS": str(flush_seconds)})}
    res = TortureResult(events, kills, {"flush_seconds": flush_seconds or "default (10)", "epoch_interval": epoch_interval, "seed": seed})
    variants = {
        name: Outputs(name, workdir / name / "out", workdir / name / "recovery", {t: f"{topic}.{t}.{name}" for t in TOPICS}) for name in ("killed", "reference")
    }
    for v in variants.values():
        v.recovery.parent.mkdir(parents=True, exist_ok=True)
    stream = SyntheticProducer(seed, pii_rate=0.2, invalid_rate=0.03).events(events)

    class Chunk:
        def events(self, n: int) -> Any:
            return (next(stream) for _ in range(n))

    sizes = [events // (kills + 1)] * (kills + 1)
    sizes[-1] += events - sum(sizes)
    produced = 0
    killed = variants["killed"]
    env = flow_env(bootstrap, topic, killed, settings)
    startup_s, rate = 3.0, 2000.0  # first guesses, learned from the runs
    for i in range(kills):
        produce(bootstrap, topic, sizes[i], partitions=partitions, progress=False, generator=Chunk())  # type: ignore[arg-type]
        produced += sizes[i]
        kind = rng.choices(("startup", "commit", "random"), weights=(0.2, 0.4, 0.4))[0]
        plan = None
        if kind == "commit":
            if rng.random() < 0.4:
                plan = f"{rng.choice(KAFKA_POINTS)}:{rng.randint(1, 3)}"
            else:
                plan = f"{rng.choice(PARQUET_POINTS)}@{rng.choice(FAULT_DATASETS)}:{rng.randint(1, 2)}"
        pending = produced - committed_offsets(killed.root)
        busy = max(pending / rate, epoch_interval)
        deadline = {"startup": rng.uniform(0.2, 0.9 * startup_s), "random": startup_s + rng.uniform(0, 1.3 * busy), "commit": startup_s + 2 * busy + 3}[kind]
        log = workdir / f"run{i:02d}.log"
        began = time.monotonic()
        proc = start_flow(env, killed, epoch_interval, log, drain=False, fault=plan)
        seen_start = None
        while proc.poll() is None and time.monotonic() - began < deadline:
            if seen_start is None and started(log):
                seen_start = time.monotonic() - began
            time.sleep(0.02)
        if proc.poll() is None:
            if kind == "startup" and started(log):
                kind = "random"  # it had started after all
            kill_group(proc)
            if kind == "commit":
                kind, plan = "random", f"{plan} (not reached: SIGKILL)"
        else:
            proc.wait()
        took = time.monotonic() - began
        if seen_start is not None:
            startup_s = 0.5 * startup_s + 0.5 * seen_start
        after = committed_offsets(killed.root)
        if took > startup_s + 1 and after > produced - pending:
            rate = max(200.0, 0.5 * rate + 0.5 * (after - (produced - pending)) / max(took - startup_s, 0.5))
        if proc.returncode not in (0, 137, -signal.SIGKILL):
            raise RuntimeError(f"run {i} ({kind}, {plan}) failed with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        res.runs.append(Run(kind, plan, proc.returncode, round(took, 2), started(log)))
        say(f"  run {i:2d}: {kind:8s} {plan or '':45s} exit {proc.returncode:4d} after {took:5.1f} s; {after:,} of {produced:,} offsets committed")
    produce(bootstrap, topic, sizes[-1], partitions=partitions, progress=False, generator=Chunk())  # type: ignore[arg-type]
    for name, v in (("killed", killed), ("reference", variants["reference"])):
        log = workdir / f"{name}-final.log"
        began = time.monotonic()
        proc = start_flow(flow_env(bootstrap, topic, v, settings), v, epoch_interval, log, drain=True, final=True)
        try:
            code = proc.wait(timeout=max(600, 3 * events / 500))
        except subprocess.TimeoutExpired:
            kill_group(proc)
            raise
        if code != 0:
            raise RuntimeError(f"the final {name} run failed ({code}):\n{log.read_text(errors='replace')[-3000:]}")
        say(f"  {name}: final drain in {time.monotonic() - began:.1f} s")
        if name == "killed":
            res.runs.append(Run("final", None, code, round(time.monotonic() - began, 2), True))
    for log in sorted(workdir.glob("run*.log")) + [workdir / "killed-final.log"]:
        for rec in log_records(log):
            if rec.get("msg") == "kafka_sink_replayed":
                res.replayed_records += int(rec.get("records", 0))
            elif rec.get("msg") == "kafka_sink_resumed":
                res.commits_after_snapshot += max(0, int(rec.get("after_snapshot", 0)))

    ref, got = variants["reference"], killed
    frames = {name: (dataset(got.root, name), dataset(ref.root, name)) for name in NATURAL_KEYS}
    res.comparisons = [compare_dataset(name, *frames[name]) for name in NATURAL_KEYS]
    for kind in TOPICS:
        res.comparisons.append(compare_topic(kind, topic_records(bootstrap, got.topics[kind], kind), topic_records(bootstrap, ref.topics[kind], kind)))
        res.aborted_records += len(topic_records(bootstrap, got.topics[kind], kind, "read_uncommitted")) - res.comparisons[-1].got
    enriched, metrics, late, alerts = (frames[n][0] for n in ("enriched", "metrics", "metrics_late", "alerts"))
    late_events = int(late["late_events"].sum()) if late.height else 0
    res.invariants["events + late events = enriched rows"] = metrics.height > 0 and int(metrics["events"].sum()) + late_events == enriched.height
    res.invariants["every alert has its window's metrics row"] = alerts.height == 0 or alerts.join(metrics, on=["window_start", "key"], how="anti").height == 0
    res.invariants["every offset once in enriched or rejected"] = enriched.height + frames["rejected"][0].height == events
    res.verify_ok = verify(got.root)
    res.seconds = round(time.monotonic() - t0, 1)
    return res


def remote(bootstrap: str, workdir: Path, *, events: int, kills: int, say: Any = print) -> list[dict[str, Any]]:
    """The remote-tier kill test (driftline.testing.kills) with a plain provider and one
    that honours idempotency keys; the output topic must hold each event once."""
    from driftline.producer import produce
    from driftline.testing.kafka import consume_all
    from driftline.testing.kills import remote_kill_run

    out = []
    for idempotent in (False, True):
        topic = f"torture-remote-{uuid.uuid4().hex[:8]}"
        produce(bootstrap, topic, events, seed=41, invalid_rate=0.0, pii_rate=0.0, progress=False)
        wd = workdir / f"remote-{'idempotent' if idempotent else 'plain'}"
        wd.mkdir(parents=True)
        kafka = {"metrics_topic": f"{topic}.metrics", "alerts_topic": f"{topic}.alerts"}
        r = remote_kill_run(bootstrap, topic, wd, events=events, kills=kills, idempotent=idempotent, settings={"kafka": kafka})
        enriched = dataset(r.root, "enriched")
        keys = Counter(m.key for m in consume_all(bootstrap, f"{topic}.out"))
        row = {
            "provider": "honours idempotency keys" if idempotent else "plain",
            "events": events,
            "kills": r.kills,
            "in_flight": r.in_flight,
            "answered_twice": len(r.answered_twice),
            "replayed_by_provider": r.replays,
            "requests": r.requests,
            "enriched_rows": enriched.height,
            "output_topic_records": sum(keys.values()),
            "output_topic_duplicates": sum(n - 1 for n in keys.values() if n > 1),
        }
        row["ok"] = (
            len(r.answered_twice) <= sum(r.in_flight)
            and (not idempotent or not r.answered_twice)
            and enriched.height == events
            and enriched["event_id"].n_unique() == events
            and row["output_topic_records"] == events
            and row["output_topic_duplicates"] == 0
        )
        say(f"  remote ({row['provider']}): {r.summary()}")
        out.append(row)
    return out


def report(res: TortureResult) -> str:
    kinds = res.killed()
    lines = [
        f"## torture: {res.events:,} events, {sum(kinds.values())} kills ({', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}), "
        f"flush_seconds {res.settings['flush_seconds']}, epoch interval {res.settings['epoch_interval']} s, {res.seconds:.0f} s, load average {os.getloadavg()[0]:.1f}",
        "",
        "| output | uninterrupted | after the kills | duplicates | missing | extra | differing | equal |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for c in res.comparisons:
        lines.append(f"| {c.output} | {c.reference:,} | {c.got:,} | {c.duplicates} | {c.missing} | {c.extra} | {', '.join(c.differing) or '-'} | {'yes' if c.equal else 'NO'} |")
    lines.append("")
    for what, ok in res.invariants.items():
        lines.append(f"- {what}: {'yes' if ok else 'NO'}")
    lines.append(f"- driftline verify: {'passed' if res.verify_ok else 'FAILED'}")
    lines.append(
        f"- Kafka sinks: {res.replayed_records:,} replayed records skipped as already committed; {res.commits_after_snapshot} transactions found committed beyond the snapshot resumed from; "
        f"{res.aborted_records:,} records of aborted transactions (read_uncommitted sees them, read_committed never)"
    )
    for r in res.remote:
        lines.append(
            f"- remote tier, provider {r['provider']}: {r['events']:,} events, {r['kills']} kills; requests in flight at the kills {r['in_flight']} (sum {sum(r['in_flight'])}); "
            f"events answered twice {r['answered_twice']}; answered from the provider's store {r['replayed_by_provider']}; output topic {r['output_topic_records']:,} records, "
            f"{r['output_topic_duplicates']} duplicates: {'ok' if r['ok'] else 'NOT OK'}"
        )
    lines.append(f"\nresult: {'PASS' if res.ok else 'FAIL'}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--kills", type=int, default=25)
    ap.add_argument("--flush-seconds", type=float, action="append", default=None, help="sinks.flush_seconds (repeat for several runs; 0: the default)")
    ap.add_argument("--epoch-interval", type=float, default=10.0, help="driftline run --epoch-interval (default 10, the CLI's)")
    ap.add_argument("--remote-events", type=int, default=0, help="also run the remote-tier kill test with this many events (0: skip)")
    ap.add_argument("--remote-kills", type=int, default=8)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--workdir", default=None, help="keep the runs' files here (default: a temporary folder)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    flushes = [None if not f else f for f in (args.flush_seconds or [0.0])]
    results = []
    with ExitStack() as stack:
        work = Path(args.workdir) if args.workdir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="torture-")))
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            from driftline.broker import LocalKafka, free_port_pair

            port = free_port_pair()
            broker = LocalKafka(port=port, state_dir=work / "kafka", heap="1g")
            broker.start(timeout=180, die_with_parent=True)
            stack.callback(broker.stop)
            bootstrap = broker.bootstrap
        for n, flush in enumerate(flushes):
            print(f"torture {n + 1}/{len(flushes)}: flush_seconds {flush or 'default'}", flush=True)
            wd = work / f"torture-{n}"
            wd.mkdir(parents=True, exist_ok=True)
            res = torture(events=args.events, kills=args.kills, bootstrap=bootstrap, workdir=wd, flush_seconds=flush, epoch_interval=args.epoch_interval, seed=args.seed + n)
            if args.remote_events and n == len(flushes) - 1:
                res.remote = remote(bootstrap, wd, events=args.remote_events, kills=args.remote_kills)
            print(report(res), flush=True)
            results.append(res)
        if args.json:
            Path(args.json).write_text(json.dumps([asdict(r) | {"ok": r.ok} for r in results], indent=1, default=str))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
