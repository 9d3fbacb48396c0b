"""End-to-end throughput on the real broker: driftline's enrich flow side by side with
the alternatives it replaces, in one run, on the same topic.

    .venv/bin/python bench/bench_e2e.py                     # 200,000 events, every leg
    .venv/bin/python bench/bench_e2e.py --events 1000000 --legs driftline   # RSS at each 250k
    make bench-e2e

Starts a local KRaft broker (driftline.broker.LocalKafka on free ports, never 9092)
unless ``KAFKA_BOOTSTRAP_SERVERS`` is set, produces N synthetic events with the
project's producer (3 partitions, 2% malformed, 20% with PII, fixed seed), then runs
each leg as its own process over the whole topic:

- ``floor``: the I/O floor, Kafka -> Parquet with no stages (orjson, pyarrow zstd);
- ``loop``: a plain per-event consumer loop doing the seed documents' work
  (bench/e2e_work.py: five PII regexes, text_length/word_count, VADER, per-minute
  window stats, Parquet);
- ``quix``: a Quix Streams 3.x application doing the same per-event work (in the
  interpreter given by ``--quix-python``, default ``.venv-quix/bin/python``, which
  ``make bench-e2e`` builds: quixstreams needs an older confluent-kafka than driftline);
- ``driftline``: ``driftline run enrich --drain`` with the default configuration
  (exactly-once Kafka outputs).

``--variants`` runs the driftline leg again with other settings, side by side on the same
topic (:data:`VARIANTS`): the output guardrails off, tracing on (every record traced, or
1 %), exporting over OTLP/HTTP to a loopback receiver that decodes every request;
at-least-once Kafka outputs (``kafka.delivery: at_least_once``, flushed per batch instead
of transactions committed with each epoch: the cost of exactly-once outputs, issue 14,
aim <= 10%).  Each run writes its own output topics (a transactional sink skips what the
same outputs already committed).

Throughput is events / (end - first record seen): the start-up of each process is not
counted.  driftline's figures come from its step timers (``$DRIFTLINE_STEP_TIMERS``,
see driftline/metrics.py): the same code path with each step's function wrapped in a
timer, giving the per-step table in microseconds per input event.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LEGS = ("floor", "loop", "quix", "driftline")
LABELS = {
    "floor": "Kafka -> Parquet, no stages (orjson decode, pyarrow zstd)",
    "loop": "per-event consumer loop, seed documents' work",
    "quix": "Quix Streams 3.x application, same per-event work",
    "driftline": "driftline run enrich --drain, default configuration",
    "before": "--before-python's checkout, the same command",
}


#: Extra driftline legs: name -> (description, environment overrides); "{otlp}" is the receiver's endpoint.
VARIANTS: dict[str, tuple[str, dict[str, str]]] = {
    "again": ("driftline, default configuration, run again (the first leg of a run is often slower)", {}),
    "at-least-once": ("driftline, kafka.delivery at_least_once (no transactions)", {"DRIFTLINE__KAFKA__DELIVERY": "at_least_once"}),
    "poll-10k": ("driftline, kafka.poll_batch_size 10,000 (default 8,000)", {"DRIFTLINE__KAFKA__POLL_BATCH_SIZE": "10000"}),
    "poll-20k": ("driftline, kafka.poll_batch_size 20,000 (default 8,000)", {"DRIFTLINE__KAFKA__POLL_BATCH_SIZE": "20000"}),
    "no-heap-trim": ("driftline, --heap-trim-interval 0 (the C heap never trimmed)", {"DRIFTLINE_HEAP_TRIM_INTERVAL": "0"}),
    "flush-10s": ("driftline, sinks.flush_seconds 10 (default 5)", {"DRIFTLINE__SINKS__FLUSH_SECONDS": "10"}),
    "guardrails-off": ("driftline, output guardrails off", {"DRIFTLINE__GUARDRAILS__ENABLED": "false"}),
    "tracing-all": ("driftline, tracing on, every record traced", {"DRIFTLINE__TRACING__ENABLED": "true", "DRIFTLINE__TRACING__ENDPOINT": "{otlp}", "DRIFTLINE__TRACING__SAMPLE_RATIO": "1.0"}),
    "tracing-1pct": ("driftline, tracing on, 1% of records traced (default ratio)", {"DRIFTLINE__TRACING__ENABLED": "true", "DRIFTLINE__TRACING__ENDPOINT": "{otlp}", "DRIFTLINE__TRACING__SAMPLE_RATIO": "0.01"}),
    "tracing-all-no-record-steps": (
        "driftline, tracing on, every record traced, record_steps off",
        {"DRIFTLINE__TRACING__ENABLED": "true", "DRIFTLINE__TRACING__ENDPOINT": "{otlp}", "DRIFTLINE__TRACING__SAMPLE_RATIO": "1.0", "DRIFTLINE__TRACING__RECORD_STEPS": "false"},
    ),
}


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _children_cpu() -> float:
    """User + system CPU seconds of the finished child processes (each leg is one)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


#: The broker's process id when this bench started it (its CPU is measured per scaling leg), else None.
BROKER_PID: int | None = None


def _broker_cpu() -> float | None:
    """User + system CPU seconds the local broker has used so far (None: not ours, or gone)."""
    if BROKER_PID is None:
        return None
    try:
        fields = Path(f"/proc/{BROKER_PID}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> float | None:
    """CPU seconds every core of the machine has spent busy since boot (``/proc/stat``:
    all but idle, iowait and the hypervisor's steal), None where there is no such file."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(x) for x in fields[:8]]
    return (sum(ticks) - ticks[3] - ticks[4] - ticks[7]) / os.sysconf("SC_CLK_TCK")


def _busy_cores(samples: list[tuple[float, float]], start: float, end: float) -> float | None:
    """Cores the machine kept busy between ``start`` and ``end`` (epoch seconds), from
    ``(time, busy CPU seconds)`` samples taken every 0.2 s: the samples nearest each end."""
    if len(samples) < 2 or end <= start:
        return None
    a = min(samples, key=lambda s: abs(s[0] - start))
    b = min(samples, key=lambda s: abs(s[0] - end))
    return (b[1] - a[1]) / (b[0] - a[0]) if b[0] > a[0] else None


def _mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def run_leg(leg: str, python: str, bootstrap: str, topic: str, work: Path) -> dict[str, Any]:
    result = work / f"{leg}.json"
    out = work / leg
    cmd = [python, str(HERE / "e2e_legs.py"), leg, "--bootstrap", bootstrap, "--topic", topic, "--out", str(out), "--result", str(result)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"leg {leg} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(result.read_text())


def run_driftline(
    bootstrap: str,
    topic: str,
    work: Path,
    rss_every: int,
    python: str,
    events: int,
    profile: str | None = None,
    env: dict[str, str] | None = None,
    scaling: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One ``driftline run enrich --drain`` (``scaling``: e.g. ``--processes 2``); with
    several processes their step timers files are added up (first event of any, last
    write of any)."""
    work.mkdir(parents=True, exist_ok=True)
    timers = work / "driftline-timers.json"
    out = f"{topic}.{work.name}"  # each run its own output topics
    extra = env
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE")}
    env.update(
        {
            "DRIFTLINE__KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "DRIFTLINE__KAFKA__INPUT_TOPIC": topic,
            "DRIFTLINE__KAFKA__DEAD_LETTER_TOPIC": f"{out}.dlq",
            "DRIFTLINE__KAFKA__OUTPUT_TOPIC": f"{out}.enriched",
            "DRIFTLINE__KAFKA__METRICS_TOPIC": f"{out}.metrics",
            "DRIFTLINE__KAFKA__ALERTS_TOPIC": f"{out}.alerts",
            "DRIFTLINE__SINKS__ROOT": str(work / "driftline-out"),
            "DRIFTLINE_HOME": str(work / "driftline-home"),
            "DRIFTLINE_STEP_TIMERS": str(timers),
            **(extra or {}),
        }
    )
    cmd = [python, "-m", "driftline.cli", "run", "enrich", "--drain", "--log-level", "WARNING", *scaling]
    if profile:  # a py-spy sampling profile of the whole run, as collapsed stacks
        cmd = [str(Path(python).with_name("py-spy")), "record", "--subprocesses", "--rate", "250", "--format", "raw", *shlex.split(os.environ.get("BENCH_PYSPY_ARGS", "")), "--output", profile, "--", *cmd]
    log = work / "driftline.log"
    started = time.time()
    # (events, RSS, C heap in use, C heap free, highest RSS sampled since the previous mark)
    rss_marks: list[tuple[int, int, int | None, int | None, int]] = []
    window_peak = 0  # RSS rises and falls by a few hundred MiB every few seconds: one sample can be a trough or a crest

    def mark(doc: dict[str, Any]) -> None:  # RSS each time another rss_every events were read
        nonlocal window_peak
        window_peak = max(window_peak, doc["rss_bytes"])
        while rss_every and doc["events_in"] >= (len(rss_marks) + 1) * rss_every:
            rss_marks.append(((len(rss_marks) + 1) * rss_every, doc["rss_bytes"], doc.get("c_heap_bytes"), doc.get("c_heap_free_bytes"), window_peak))
            window_peak = doc["rss_bytes"]

    busy: list[tuple[float, float]] = []  # the machine's busy CPU seconds over time, for its load while the flow drained
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=work)
        while proc.poll() is None:
            time.sleep(0.2)
            now_busy = _machine_busy()
            if now_busy is not None:
                busy.append((time.time(), now_busy))
            try:
                mark(_timers(timers))
            except (OSError, ValueError):
                continue
    if proc.returncode != 0:
        raise SystemExit(f"driftline failed ({proc.returncode}):\n{log.read_text()[-3000:]}")
    ended = time.time()
    try:
        doc = _timers(timers)
    except OSError:  # a driftline without step timers (--driftline-python of an older checkout): wall time
        return {"events": events, "t_first": started, "t_end": ended, "wall_s": ended - started, "rss_marks": [], "steps": {}, "peak_rss_bytes": 0}
    mark(doc)  # the last mark when the run ended right on it
    doc.update({"events": doc["events_in"], "t_first": doc["first_event_at"], "t_end": doc["written_at"], "wall_s": ended - started, "rss_marks": rss_marks, "outputs": out})
    doc["machine_cores"] = _busy_cores(busy, doc["t_first"], doc["t_end"]) if doc["t_first"] is not None else None
    if profile:  # py-spy does not reap the flow as a child of ours: its CPU is not in RUSAGE_CHILDREN, only in its own timers
        doc["own_cpu_s"] = doc["cpu_s"]
    return doc


def _driftline_env(args: argparse.Namespace, **extra: str) -> dict[str, str]:
    """The environment every driftline run of this bench adds: ``--sink-partitions`` (the
    datasets' writers and the Kafka outputs' transactional producers), ``extra``."""
    sinks = {"DRIFTLINE__SINKS__PARTITIONS": str(args.sink_partitions), "DRIFTLINE__KAFKA__TRANSACTIONS__PARTITIONS": str(args.sink_partitions)}
    return {**(sinks if args.sink_partitions else {}), **extra}


def _timers(path: Path) -> dict[str, Any]:
    """The step timers of one process (``path``) or of several (``path.<process id>``), added up."""
    docs = [json.loads(p.read_text()) for p in sorted(path.parent.glob(f"{path.name}.*")) if p.suffix[1:].isdigit()]
    if not docs:
        doc = json.loads(path.read_text())
        doc["per_process"] = [_process_figures(doc)]
        return doc
    steps: dict[str, dict[str, float]] = {}
    for d in docs:
        for name, s in d["steps"].items():
            acc = steps.setdefault(name, {"seconds": 0.0, "cpu_seconds": 0.0, "calls": 0, "helper": False})
            acc["seconds"] += s["seconds"]
            acc["cpu_seconds"] += s.get("cpu_seconds", 0.0)
            acc["calls"] += s["calls"]
            acc["helper"] = acc["helper"] or bool(s.get("helper"))
    firsts = [d["first_event_at"] for d in docs if d["first_event_at"] is not None]
    return {
        "processes": len(docs),
        "first_event_at": min(firsts) if firsts else None,
        "written_at": max(d["written_at"] for d in docs),
        "events_in": sum(d["events_in"] for d in docs),
        "cpu_s": sum(d["cpu_s"] for d in docs),
        "rss_bytes": sum(d["rss_bytes"] for d in docs),
        "peak_rss_bytes": sum(d["peak_rss_bytes"] for d in docs),
        "steps": steps,
        "per_process": [_process_figures(d) for d in docs],
    }


def _process_figures(doc: dict[str, Any]) -> dict[str, Any]:
    """One process's share: the rows it decoded (the spread stages count them where they
    run), its CPU seconds from its first event to its last write (None from a
    driftline whose timers do not record CPU) and its seconds in each step (in --json)."""
    cpu = doc.get("cpu_s")
    first = doc.get("first_event_cpu_s")
    steps = {name: round(s["seconds"], 3) for name, s in doc.get("steps", {}).items()}
    return {"events_in": doc["events_in"], "work_cpu_s": None if cpu is None or first is None else cpu - first, "step_s": steps}


def produce_events(bootstrap: str, topic: str, args: argparse.Namespace, chunk: int = 100_000) -> tuple[int, int]:
    """Produce ``args.events`` events of one seeded stream, ``chunk`` at a time (the
    producer returns what it sent: a million events at once would hold gigabytes).
    Returns (malformed, with PII)."""
    from driftline.producer import SyntheticProducer, produce

    stream = SyntheticProducer(args.seed, pii_rate=args.pii_rate, invalid_rate=args.invalid_rate).events(args.events)

    class Slice:
        def events(self, n: int) -> Any:
            return itertools.islice(stream, n)

    malformed = with_pii = 0
    for start in range(0, args.events, chunk):
        sent = produce(bootstrap, topic, min(chunk, args.events - start), partitions=args.partitions, progress=False, generator=Slice())  # type: ignore[arg-type]
        malformed += sum(1 for e in sent if e.defect)
        with_pii += sum(1 for e in sent if e.pii)
    return malformed, with_pii


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--invalid-rate", type=float, default=0.02)
    ap.add_argument("--pii-rate", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--legs", default=",".join(LEGS), help=f"comma-separated subset of {','.join(LEGS)}")
    ap.add_argument("--quix-python", default=str(REPO / ".venv-quix" / "bin" / "python"), help="interpreter with quixstreams installed")
    ap.add_argument("--rss-every", type=int, default=250_000, help="print driftline's RSS each time this many events were read (0: off)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--profile", default=None, help="record a py-spy profile of the driftline leg here (collapsed stacks, every process; the first round of each scaled shape to PROFILE.<shape>; needs py-spy beside --driftline-python; BENCH_PYSPY_ARGS adds py-spy options, e.g. --gil or --idle)")
    ap.add_argument("--driftline-python", default=sys.executable, help="interpreter whose driftline runs")
    ap.add_argument("--processes", type=int, default=0, help="also run the driftline leg as this many processes (driftline run --processes N) and compare with 1")
    ap.add_argument("--workers", type=int, default=0, help="also run the driftline leg with this many workers in one process (-w N) and compare with 1")
    ap.add_argument(
        "--ceiling",
        action="store_true",
        help="with --processes N, also start N independent 1-process runs at once, each draining the whole topic into its own root (no cluster, nothing exchanged):"
        " N times the events over their common span is what N processes can reach on this machine at best",
    )
    ap.add_argument(
        "--sink-partitions",
        type=int,
        default=0,
        help="sinks.partitions and kafka.transactions.partitions of every driftline run (default: the configuration's, 1): a scaled run writes its datasets and Kafka outputs from as many workers as this",
    )
    ap.add_argument("--scale-repeats", type=int, default=1, help="run the 1-process leg and the scaled legs this many times, alternating (medians reported)")
    ap.add_argument(
        "--topic",
        default=None,
        help="the input topic's name (default: a new random one). Bytewax places each input partition's keyed steps by a hash"
        " of names built from it, so with several workers the name decides how evenly the keyed work lands; it must not exist yet",
    )
    ap.add_argument("--before-python", default=None, help="also run the driftline of another checkout (its .venv/bin/python) on the same topic, right after this checkout's in every round (alternating pairs: the table's 'before' row, and each pair's ratio); with --processes, also its scaled shape in the scaling table")
    ap.add_argument("--rounds", type=int, default=1, help="run the legs this many times in turn on the same topic (floor, loop, quix, driftline, floor, ...): each leg's median round is reported, and the ratios are the medians of each round's ratios")
    ap.add_argument("--variants", default="", help=f"comma-separated extra driftline legs: {', '.join(VARIANTS)}")
    args = ap.parse_args()
    legs = [leg.strip() for leg in args.legs.split(",") if leg.strip()]
    unknown = set(legs) - set(LEGS)
    if unknown:
        ap.error(f"unknown legs {sorted(unknown)}")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if args.ceiling and not args.processes:
        ap.error("--ceiling compares N independent runs with --processes N: give --processes too")
    if "quix" in legs and not Path(args.quix_python).exists():
        ap.error(f"--quix-python {args.quix_python} does not exist: run `make bench-e2e` (it builds .venv-quix) or drop the quix leg")

    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-e2e-")))
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            from driftline.broker import LocalKafka

            port, controller = _free_ports(2)
            broker = LocalKafka(port=port, controller_port=controller, state_dir=work / "kafka", heap="1g")
            broker.start(timeout=120, die_with_parent=True)  # never left behind when the bench is killed
            stack.callback(broker.stop)
            global BROKER_PID
            BROKER_PID = broker._pid()
            bootstrap = broker.bootstrap
        topic = args.topic or f"bench-e2e-{uuid.uuid4().hex[:8]}"
        t0 = time.monotonic()
        malformed, with_pii = produce_events(bootstrap, topic, args)
        print(f"produced {args.events:,} events to {topic} ({args.partitions} partitions, {malformed:,} malformed, {with_pii:,} with PII, seed {args.seed}) in {time.monotonic() - t0:.0f} s")
        load_before = os.getloadavg()
        # --before-python's driftline right after this checkout's in every round: alternating pairs on one topic
        round_legs = [*legs, "before"] if args.before_python and "driftline" in legs else legs
        # both checkouts of a pair in the same environment (no .pyc written into either tree)
        pair_env = {"PYTHONDONTWRITEBYTECODE": "1"} if "before" in round_legs else {}
        rounds: dict[str, list[dict[str, Any]]] = {leg: [] for leg in round_legs}
        for rnd in range(args.rounds):  # the legs in turn, round after round: each round's legs ran under the same load
            leg_work = work if rnd == 0 else work / f"round-{rnd + 1}"  # each round its own output topics and folders
            for leg in round_legs:
                cpu_before, broker_before = _children_cpu(), _broker_cpu()
                if leg == "driftline":
                    r = run_driftline(bootstrap, topic, leg_work, args.rss_every, args.driftline_python, args.events, args.profile if rnd == 0 else None, env=_driftline_env(args, **pair_env))
                    r["root"] = str(leg_work / "driftline-out")
                elif leg == "before":
                    r = run_driftline(bootstrap, topic, leg_work / "before", 0, args.before_python, args.events, env=_driftline_env(args, **pair_env))
                    r["root"] = str(leg_work / "before" / "driftline-out")
                else:
                    leg_work.mkdir(parents=True, exist_ok=True)
                    r = run_leg(leg, args.quix_python if leg == "quix" else sys.executable, bootstrap, topic, leg_work)
                r["cpu_s"] = r.pop("own_cpu_s", None) or _children_cpu() - cpu_before
                broker_after = _broker_cpu()
                if broker_before is not None and broker_after is not None:
                    r["broker_cpu_s"] = broker_after - broker_before
                r["eps"] = r["events"] / max(r["t_end"] - r["t_first"], 1e-9)
                r["round"] = rnd + 1
                rounds[leg].append(r)
                print(f"  {leg}{f' (round {rnd + 1})' if args.rounds > 1 else ''}: {r['events']:,} events in {r['t_end'] - r['t_first']:.1f} s -> {r['eps']:,.0f} events/s", flush=True)
        results: dict[str, dict[str, Any]] = {leg: median_round(rs) for leg, rs in rounds.items()}
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        if variants:
            from driftline.testing.otlp_receiver import OtlpReceiver

            rx = stack.enter_context(OtlpReceiver(keep=False))
            for name in variants:
                if name not in VARIANTS:
                    raise SystemExit(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
                env = {k: v.replace("{otlp}", rx.endpoint) for k, v in VARIANTS[name][1].items()}
                before_spans = rx.received
                cpu_before = _children_cpu()
                r = run_driftline(bootstrap, topic, work / name, 0, args.driftline_python, args.events, env=_driftline_env(args, **env))
                r["cpu_s"] = _children_cpu() - cpu_before
                r["eps"] = r["events"] / max(r["t_end"] - r["t_first"], 1e-9)
                r["spans"] = rx.received - before_spans
                results[name] = r
                print(f"  {name}: {r['events']:,} events in {r['t_end'] - r['t_first']:.1f} s -> {r['eps']:,.0f} events/s" + (f", {r['spans']:,} spans received" if r["spans"] else ""), flush=True)
        scaled = scale_legs(args, bootstrap, topic, work, results)
        if "before" in results:  # the same events through both checkouts: the same datasets
            from driftline.testing.datasets import dataset_differences

            print(pairs_line(rounds["driftline"], rounds["before"]))
            diff = dataset_differences(rounds["driftline"][0]["root"], rounds["before"][0]["root"])
            print(f"  datasets of this checkout vs --before-python (round 1): {'equal (rows by key; floats up to summation order; processing-time columns left out)' if not diff else diff}")
        load_after = os.getloadavg()
        report(results, args, load_before, load_after)
        report_scaling(scaled, work)
        if scaled:
            for workers in sorted({n for n in (args.processes, args.workers) if n > 1}):
                print(placement_line(topic, args.partitions, workers, args.sink_partitions or 1))
        if args.json:
            doc = {"args": vars(args), "load": [load_before, load_after], "results": results, "scaling": scaled}
            Path(args.json).write_text(json.dumps(doc, indent=1, default=str))
    return 0


def pairs_line(after: list[dict[str, Any]], before: list[dict[str, Any]]) -> str:
    """This checkout's driftline against ``--before-python``'s, round by round (each pair
    ran one after the other on the same topic): the ratio of each pair, their median, and
    how many pairs this checkout won.

    >>> print(pairs_line([{"eps": 110.0}, {"eps": 90.0}, {"eps": 105.0}], [{"eps": 100.0}] * 3))
      driftline vs --before-python, pair by pair: 1.10 / 0.90 / 1.05, median 1.05x, faster in 2 of 3
    """
    from statistics import median

    ratios = [a["eps"] / max(b["eps"], 1e-9) for a, b in zip(after, before)]
    each = " / ".join(f"{x:.2f}" for x in ratios)
    return f"  driftline vs --before-python, pair by pair: {each}, median {median(ratios):.2f}x, faster in {sum(x > 1 for x in ratios)} of {len(ratios)}"


def scale_legs(args: argparse.Namespace, bootstrap: str, topic: str, work: Path, results: dict[str, dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The driftline leg with 1 process, N workers in one process and N processes (and N
    processes of ``--before-python``'s checkout, and with ``--ceiling`` N independent
    1-process runs at once: :func:`_independent_runs`), one after the other
    (``--scale-repeats`` rounds), each on the whole topic into its own root; returns each
    shape's runs."""
    python = args.driftline_python
    # (name, driftline run's scaling options, interpreter, independent runs started at once)
    shapes: list[tuple[str, tuple[str, ...], str, int]] = [("1 process", (), python, 1)]
    if args.workers:
        shapes.append((f"{args.workers} workers, 1 process", ("--workers-per-process", str(args.workers)), python, 1))
    if args.processes:
        shapes.append((f"{args.processes} processes", ("--processes", str(args.processes)), python, 1))
        if args.before_python:  # the other checkout, scaled the same way, on the same topic
            shapes.append((f"{args.processes} processes, before", ("--processes", str(args.processes)), args.before_python, 1))
        if args.ceiling:
            shapes.append((f"{args.processes} independent processes (ceiling)", (), python, args.processes))
    if len(shapes) == 1:
        return {}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in shapes}
    for rnd in range(args.scale_repeats):
        for i, (name, scaling, python, copies) in enumerate(shapes):
            if rnd == 0 and i == 0 and "driftline" in results:
                r = dict(results["driftline"])  # the driftline leg is the first 1-process run
            else:
                leg_work = work / f"scale-{rnd}-{i}"
                cpu_before, broker_before = _children_cpu(), _broker_cpu()
                load = os.getloadavg()[0]
                profile = f"{args.profile}.{name.replace(' ', '-').replace(',', '')}" if args.profile and rnd == 0 else None  # the scaled shapes' first round too
                if copies > 1:
                    r = _independent_runs(copies, bootstrap, topic, leg_work, python, args.events, _driftline_env(args))
                else:
                    r = run_driftline(bootstrap, topic, leg_work, 0, python, args.events, profile, env=_driftline_env(args), scaling=scaling)
                broker_after = _broker_cpu()
                r.update(cpu_s=r.pop("own_cpu_s", None) or _children_cpu() - cpu_before, load=load, root=r.get("root", str(leg_work / "driftline-out")))
                if broker_before is not None and broker_after is not None:
                    r["broker_cpu_s"] = broker_after - broker_before
                r["eps"] = r["events"] / max(r["t_end"] - r["t_first"], 1e-9)
            runs[name].append(r)
            print(f"  driftline, {name} (round {rnd + 1}): {r['events']:,} events in {r['t_end'] - r['t_first']:.1f} s -> {r['eps']:,.0f} events/s", flush=True)
    return runs


def _independent_runs(n: int, bootstrap: str, topic: str, work: Path, python: str, events: int, env: dict[str, str]) -> dict[str, Any]:
    """``n`` one-process runs started at once, each draining the whole topic into its own
    root and output topics: nothing is shared or exchanged between them, so their joint
    rate (``n`` times the events over the span from the first event of any to the end of
    the last) is the most ``n`` processes can drain on this machine.  The first run's root
    stands for the shape in the datasets check (every run writes the 1-process datasets).
    Each run's folder, and so its output topics, is named after ``work`` too: a later
    round writing the same topics would find its records committed and skip them all."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(n) as pool:
        docs = list(pool.map(lambda i: run_driftline(bootstrap, topic, work / f"{work.name}-run-{i}", 0, python, events, env=env), range(n)))
    cores = [d["machine_cores"] for d in docs if d.get("machine_cores") is not None]
    return {
        "events": sum(d["events"] for d in docs),
        "t_first": min(d["t_first"] for d in docs),
        "t_end": max(d["t_end"] for d in docs),
        "wall_s": max(d["wall_s"] for d in docs),
        "machine_cores": sum(cores) / len(cores) if cores else None,
        "per_process": [p for d in docs for p in d.get("per_process", [])],
        "root": str(work / f"{work.name}-run-0" / "driftline-out"),
        "copies": n,
        "outputs": [d.get("outputs") for d in docs],
    }


def report_scaling(runs: dict[str, list[dict[str, Any]]], work: Path) -> None:
    """The scaling table (median of the rounds) and whether every shape wrote the same datasets."""
    if not runs:
        return
    from statistics import median

    from driftline.testing.datasets import dataset_differences

    base = median(r["eps"] for r in runs["1 process"])
    base_cpu = median(_busiest_cpu(r) or 0.0 for r in runs["1 process"])
    print("\n## driftline scaling (same topic, same run; median of the rounds)\n")
    print("| shape | events/s | vs 1 process | CPU µs/event (all processes) | busiest process CPU s | CPU-bound speed-up | broker cores | machine busy cores | rows decoded per process | runs (events/s) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for name, rs in runs.items():
        eps = median(r["eps"] for r in rs)
        cpu = median(1e6 * r["cpu_s"] / max(r["events"], 1) for r in rs)
        busiest = median(_busiest_cpu(r) or 0.0 for r in rs)
        speedup = f"{rs[0].get('copies', 1) * base_cpu / busiest:.2f}x" if busiest and base_cpu else "n/a"  # independent runs each drain the whole topic
        split = " / ".join(f"{p['events_in']:,}" for p in rs[0].get("per_process", []))
        brokers = [r["broker_cpu_s"] / max(r["wall_s"], 1e-9) for r in rs if "broker_cpu_s" in r]
        broker = f"{median(brokers):.2f}" if brokers else "n/a"
        machines = [r["machine_cores"] for r in rs if r.get("machine_cores") is not None]
        machine = f"{median(machines):.2f}" if machines else "n/a"
        print(f"| {name} | {eps:,.0f} | {eps / base:.2f}x | {cpu:,.1f} | {busiest:,.1f} | {speedup} | {broker} | {machine} | {split} | {', '.join(format(r['eps'], ',.0f') for r in rs)} |")
    print(
        "\nCPU-bound speed-up: the 1-process run's CPU seconds over the busiest process's (first event to"
        " end): the wall-clock speed-up when every process has a core of its own, whatever the machine's load."
        " Broker cores: the local broker's CPU seconds over the leg's wall time (start-up included), the share"
        f" of the machine's {os.cpu_count()} cores the broker took while the flow drained (n/a: an external broker)."
        f" Machine busy cores: the cores of the whole machine (every process, the broker's and this bench's included) kept busy"
        f" from the first event to the end, out of {os.cpu_count()}: at the machine's core count, a shape can only go faster"
        " by using less CPU per event."
        " Independent processes (--ceiling): N one-process runs at once, each on the whole topic, nothing exchanged: N times the events over their common span, the"
        " most N processes can drain on this machine."
    )
    first = runs["1 process"][0]["root"]
    for name, rs in runs.items():
        for r in rs:
            if r["root"] == first:
                continue
            diff = dataset_differences(first, r["root"])
            print(f"datasets of '{name}' vs 1 process: {'equal (rows by key; floats up to summation order; processing-time columns left out)' if not diff else diff}")


def placement_line(topic: str, partitions: int, workers: int, sink_parts: int) -> str:
    """Where Bytewax puts each input partition's work on ``workers`` workers (predicted by
    ``operators/placement.py``, from the topic's name): who reads it, runs its keyed steps
    (reorder, model calls, guardrails, output records), its event-time clock and its
    writers (``sink_parts`` dataset and Kafka output partitions), and the share of the
    stateless rows each worker is planned to run.

    >>> placement_line("bench-e2e-9b10c88f", 3, 2, 2)
    'placement of bench-e2e-9b10c88f on 2 workers, input partitions 0-2: read by workers [0, 1, 0], keyed steps [1, 1, 1], event-time clocks [0, 0, 0], writers [1, 1, 1]; stateless rows planned 100% / 0%'
    """
    from driftline.operators.placement import cover_part, free_shares, reorder_key, sink_worker, source_part, source_worker, state_worker

    names = [f"{topic}+{p}" for p in range(partitions)]
    sources = [source_part(topic, p) for p in range(partitions)]
    read = [source_worker(s, sources, workers) for s in sources]
    keyed = [state_worker(reorder_key(n), workers) for n in names]
    clocks = [state_worker(n, workers) for n in names]
    writers = [sink_worker(cover_part(n, sink_parts), sink_parts, workers) for n in names]
    shares = free_shares(names, workers, parquet_parts=sink_parts, kafka_parts=sink_parts)
    return (
        f"placement of {topic} on {workers} workers, input partitions 0-{partitions - 1}: read by workers {read}, keyed steps {keyed},"
        f" event-time clocks {clocks}, writers {writers}; stateless rows planned {' / '.join(f'{s:.0%}' for s in shares)}"
    )


def _busiest_cpu(run: dict[str, Any]) -> float | None:
    """CPU seconds of the run's busiest process, from its first event to its end."""
    cpus = [p["work_cpu_s"] for p in run.get("per_process", []) if p["work_cpu_s"] is not None]
    return max(cpus) if cpus else None


def median_round(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median events/s among a leg's rounds (the lower of the middle two for an
    even count), with every round's events/s in ``rounds_eps``, in round order.

    >>> r = median_round([{"eps": 5.0}, {"eps": 9.0}, {"eps": 7.0}])
    >>> r["eps"], r["rounds_eps"]
    (7.0, [5.0, 9.0, 7.0])
    """
    chosen = sorted(runs, key=lambda r: r["eps"])[(len(runs) - 1) // 2]
    return dict(chosen, rounds_eps=[r["eps"] for r in runs])


def round_ratios(mine: dict[str, Any], other: dict[str, Any]) -> list[float]:
    """``mine``'s events/s over ``other``'s, round by round (runs without rounds: one ratio).

    >>> round_ratios({"eps": 6.0, "rounds_eps": [6.0, 9.0]}, {"eps": 3.0, "rounds_eps": [3.0, 2.0]})
    [2.0, 4.5]
    """
    a, b = mine.get("rounds_eps") or [mine["eps"]], other.get("rounds_eps") or [other["eps"]]
    if len(a) != len(b):  # a variant (one run) against a leg of several rounds: the medians
        return [mine["eps"] / other["eps"]]
    return [x / y for x, y in zip(a, b)]


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace, load_before: tuple[float, ...], load_after: tuple[float, ...]) -> None:
    from statistics import median

    print()
    several = args.rounds > 1
    print(f"## {args.events:,} events, {os.cpu_count()} cpus, load average before {load_before[0]:.2f} / after {load_after[0]:.2f}" + (f", {args.rounds} rounds (each leg's median round; ratios: the median of the rounds' ratios)" if several else ""))
    print()
    d = results.get("driftline")
    print("| pipeline | events/s | driftline vs it | CPU µs/event (process, incl. start-up) | peak RSS |" + (" rounds (events/s) |" if several else ""))
    print("| --- | ---: | ---: | ---: | ---: |" + (" --- |" if several else ""))
    for leg, r in results.items():
        ratio = f"{median(round_ratios(d, r)):.2f}x" if d else "-"
        label = LABELS.get(leg) or VARIANTS[leg][0]
        runs = f" {', '.join(format(e, ',.0f') for e in r.get('rounds_eps', [r['eps']]))} |" if several else ""
        print(f"| {leg}: {label} | {r['eps']:,.0f} | {ratio} | {1e6 * r['cpu_s'] / max(r['events'], 1):,.1f} | {_mb(r.get('peak_rss_bytes', 0))} |{runs}")
    if d is None:
        return
    if "floor" in results:
        print(f"\ndriftline = {100 * median(round_ratios(d, results['floor'])):.1f}% of the I/O floor")
    targets = [("loop", 1.0, "x the per-event loop"), ("quix", 3.0, "x Quix Streams"), ("floor", 0.12, " of the I/O floor")]
    checks = []
    for leg, want, what in targets:
        if leg in results:
            ratios = round_ratios(d, results[leg])
            got = median(ratios)
            each = f", rounds {' / '.join(format(x, '.2f') for x in ratios)}" if len(ratios) > 1 else ""
            checks.append(f"{got:.2f}{what} (target {want:g}: {'met' if got >= want else 'NOT met'}{each})")
    if checks:
        print("issue 11 targets: " + "; ".join(checks))
    print(f"driftline: peak RSS {_mb(d['peak_rss_bytes'])}, wall time with start-up {d['wall_s']:.1f} s")
    if d["rss_marks"]:
        print("\n| events read | driftline RSS | highest RSS since the previous mark | C heap in use | C heap free |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        for n, rss, heap, free, peak in d["rss_marks"]:
            print(f"| {n:,} | {_mb(rss)} | {_mb(peak)} | {_mb(heap) if heap is not None else 'n/a'} | {_mb(free) if free is not None else 'n/a'} |")
        print("\nC heap: glibc's malloc (driftline/heap.py c_heap); 'free' counts its free lists, pages already handed back by the trimming included.")
        print("Highest RSS since the previous mark: the largest of the flow's samples (about one a second) over those events.")
        if len(d["rss_marks"]) > 1:
            (every, first, *_, first_peak), (_, last, *_, last_peak) = d["rss_marks"][0], d["rss_marks"][-1]
            print(f"\nRSS at the last mark vs the first: {100 * (last - first) / first:+.1f}% (single samples); highest RSS over the last {every:,} events vs the first {every:,}: {100 * (last_peak - first_peak) / first_peak:+.1f}%")
    if not d["steps"]:
        return
    span = d["t_end"] - d["t_first"]
    n = max(d["events"], 1)
    ordered = sorted(d["steps"].items(), key=lambda kv: -kv[1]["seconds"])
    steps = [(k, s) for k, s in ordered if not s.get("helper")]
    helper = [(k, s) for k, s in ordered if s.get("helper")]
    timed_total = sum(s["seconds"] for _, s in steps)
    cpu = lambda s: f"{1e6 * s['cpu_seconds'] / n:,.1f}" if "cpu_seconds" in s else "n/a"  # noqa: E731
    print(f"\n## driftline per-step cost ({n:,} input events, {span:.1f} s from first poll to exit)\n")

    def step_rows(rows: list[tuple[str, dict[str, Any]]]) -> None:  # the header and a row per step
        print("| step | µs/event | share | CPU µs/event | calls |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name, s in rows:
            print(f"| {name} | {1e6 * s['seconds'] / n:,.1f} | {100 * s['seconds'] / span:.1f}% | {cpu(s)} | {s['calls']:,} |")

    print("Wall time per step (waits for the interpreter lock while the helper threads hold it included) and its thread's CPU time.\n")
    step_rows(steps)
    other = span - timed_total
    print(f"| other (Bytewax, windows, routing, idle) | {1e6 * other / n:,.1f} | {100 * other / span:.1f}% | | |")
    print(f"| total | {1e6 * span / n:,.1f} | 100% | | |")
    if helper:  # the stateless stages on the workers' helper threads (operators/ahead.py): beside the rows above, not in them
        print("\nOn the workers' helper threads, overlapping the steps above:\n")
        step_rows(helper)
        helper_total = sum(s["seconds"] for _, s in helper)
        print(f"| total | {1e6 * helper_total / n:,.1f} | {100 * helper_total / span:.1f}% | | |")
    for name, r in [("driftline", d), *[(k, v) for k, v in results.items() if k in VARIANTS]]:
        g = r.get("steps", {}).get("guardrails")
        if g:
            # its thread's CPU time: the worker's wall time in the step also holds its waits for the
            # interpreter lock while the stages' helper thread has it, which are not the stage's cost
            spent = g.get("cpu_seconds", g["seconds"])
            share = spent / (r["t_end"] - r["t_first"])
            print(f"\n{name}: guardrails stage {1e6 * spent / max(r['events'], 1):,.1f} CPU µs/event ({1e6 * g['seconds'] / max(r['events'], 1):,.1f} wall), {100 * share:.1f}% of the flow's time (issue 18 target: at most 10%: {'met' if share <= 0.10 else 'NOT met'})")
    for name in VARIANTS:
        if name in results:
            r = results[name]
            print(f"{name}: {r['eps'] / d['eps']:.3f}x the default run's events/s, {r['cpu_s'] / max(d['cpu_s'], 1e-9):.3f}x its CPU" + (f", {r['spans'] / max(r['events'], 1):.1f} spans per event" if r.get("spans") else ""))
    if "at-least-once" in results:
        a = results["at-least-once"]
        ref = "again" if "again" in results else "driftline"  # 'again' does not read a cold topic
        e = results[ref]
        cost = 1 - e["eps"] / a["eps"]
        print(f"exactly-once Kafka outputs ({ref}) cost {100 * cost:.1f}% of the at-least-once throughput ({a['eps']:,.0f} -> {e['eps']:,.0f} events/s), CPU {100 * (e['cpu_s'] / max(a['cpu_s'], 1e-9) - 1):+.1f}% (issue 14 aim: at most 10%: {'met' if cost <= 0.10 else 'NOT met'})")


if __name__ == "__main__":
    sys.exit(main())
