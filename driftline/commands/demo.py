"""``driftline demo``: a Kafka broker, synthetic events, the enrich flow until drained,
and a summary of what was written where.

Which broker (:func:`choose_kafka`): the address to look at is ``--bootstrap``, else
``127.0.0.1:--port``, else the configured ``kafka.bootstrap_servers`` (or
``$KAFKA_BOOTSTRAP_SERVERS``).  When a Kafka broker answers there, the demo uses it.
Otherwise it starts the bundled broker: on that port when nothing listens there, else
on a free port, and says which.  A broker the demo started is stopped when the demo
ends, also on Ctrl-C, SIGTERM or an error, unless ``--keep-broker`` (and if the demo is
killed outright, the broker gets SIGTERM from the kernel).  Every topic is named after
the run (``driftline-demo-<run id>``), so runs never clash with each other or with
existing topics.

What a run did is one :class:`DemoRun`; :func:`build_summary` turns it into the summary
(a JSON-able dict) and :func:`render_text` prints it.  Other outputs (reports) start from
the same summary.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import yaml

from driftline.broker import DEFAULT_PORT, BrokerError, LocalKafka, bundled_brokers, free_port_pair, probe_kafka, split_bootstrap
from driftline.config import load_config
from driftline.config.kafka import KafkaConfig, KafkaSecurityConfig
from driftline.logs import configure_logging

NAME = "demo"
HELP = "run the enrich flow on synthetic events against a Kafka broker (an existing one, or the bundled one) and print a summary"

PROBE_TIMEOUT_S = 5.0
QUERY = "SELECT source, count(*) FROM enriched GROUP BY 1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--invalid-rate", type=float, default=0.05)
    parser.add_argument("--pii-rate", type=float, default=0.2)
    parser.add_argument("--out", default="var/demo", help="parent folder for this run's output")
    parser.add_argument("--port", type=int, default=None, help=f"use the Kafka broker on 127.0.0.1:PORT, or start the bundled one there (default: the configured bootstrap address, 127.0.0.1:{DEFAULT_PORT})")
    parser.add_argument("--bootstrap", default=None, help="use the Kafka broker at this address; fail if none answers")
    parser.add_argument("--keep-broker", action="store_true", help="leave a bundled broker the demo started running afterwards")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument("--report", default=None, help="HTML report to write (default: <out>/<run id>/report.html)")


@dataclass
class DemoKafka:
    """The broker a demo run uses and where it came from."""

    bootstrap: str
    origin: Literal["existing", "bundled"]
    note: str  # one sentence for the user: what was found, what the demo did
    extra: dict[str, str] = field(default_factory=dict)  # librdkafka settings (the configuration's, for an existing broker)
    bundled: LocalKafka | None = None  # the bundled broker this run starts
    keep: bool = False  # leave ``bundled`` running at the end


def choose_kafka(args: argparse.Namespace, kafka: KafkaConfig) -> DemoKafka:
    """Decide which broker the demo uses (starts nothing; see :func:`broker_for_run`)."""
    target = args.bootstrap or (f"127.0.0.1:{args.port}" if args.port is not None else kafka.bootstrap_servers)
    client = kafka.client_config(bootstrap_servers=target)
    probe = probe_kafka(target, timeout=PROBE_TIMEOUT_S, extra=client)
    statuses = [b.status() for b in bundled_brokers()]
    if probe.kind == "kafka":
        mine = next((st for st in statuses if st.running and st.bootstrap == target), None)
        return DemoKafka(target, "existing", f"using the Kafka broker already running at {target}" + (f" (the bundled broker, pid {mine.pid})" if mine else ""), client)
    if args.bootstrap or probe.kind == "refused":
        raise BrokerError(f"the Kafka broker at {target} refused the configured credentials or TLS settings: {probe.detail}; fix kafka.security" if probe.kind == "refused" else f"no Kafka broker answers at {target}: {probe.detail}")
    found = f"nothing listens at {target}" if probe.kind == "nothing" else f"{target} is held by something that is not a usable Kafka broker ({probe.detail})"
    running = next((st for st in statuses if st.running), None)
    if running is not None and args.port is None:
        return DemoKafka(running.bootstrap, "existing", f"{found}, so the demo uses the bundled broker already running at {running.bootstrap} (pid {running.pid})")
    # the target's port first, then the ports of stopped bundled brokers (reusing their storage)
    port = free_port_pair(prefer=[split_bootstrap(target)[0][1], *(st.port for st in statuses)])
    broker = LocalKafka(port=port)
    where = "there" if broker.bootstrap == target else f"on a free port instead: {broker.bootstrap}"
    return DemoKafka(broker.bootstrap, "bundled", f"{found}, so the demo runs the bundled broker {where}", bundled=broker, keep=args.keep_broker)


@contextmanager
def broker_for_run(kafka: DemoKafka) -> Iterator[DemoKafka]:
    """Start ``kafka.bundled`` (if any) for the block; stop it afterwards, whatever
    happened, unless ``kafka.keep``.  A broker that was already starting is left alone."""
    broker = kafka.bundled
    if broker is None:
        yield kafka
        return
    owned = broker.status().pid is None
    try:
        broker.start(die_with_parent=not kafka.keep)
        yield kafka
    finally:
        if owned and not kafka.keep:
            print(f"driftline demo: stopping the bundled broker at {broker.bootstrap} (--keep-broker leaves it running)", file=sys.stderr)
            broker.stop()


@contextmanager
def signals_as_interrupt() -> Iterator[list[int]]:
    """SIGTERM (and SIGINT, unless ignored) raise KeyboardInterrupt once, so cleanup
    runs; later signals are recorded and ignored while cleaning up.  Yields the list of
    signals received."""
    received: list[int] = []

    def handler(signum: int, _frame: Any) -> None:
        received.append(signum)
        if len(received) == 1:
            raise KeyboardInterrupt(signal.Signals(signum).name)

    watched = [s for s in (signal.SIGTERM, signal.SIGINT) if signal.getsignal(s) is not signal.SIG_IGN]
    previous = {s: signal.signal(s, handler) for s in watched}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@dataclass
class DemoRun:
    """Everything one demo run did; the summary is built from it."""

    run_id: str
    out: Path
    config_file: Path
    kafka: DemoKafka
    topics: dict[str, str]
    events_produced: int
    malformed_produced: int
    produce_seconds: float
    flow_seconds: float
    datasets: dict[str, dict[str, Any]]  # name -> rows, files, path
    report: Path | None = None  # the run's HTML report

    @property
    def datasets_root(self) -> Path:
        return self.out / "datasets"


def demo_topics(run_id: str) -> dict[str, str]:
    """The run's topics, keyed by their ``kafka.*_topic`` setting: one prefix per run.

    >>> demo_topics("r1")["dead_letter_topic"]
    'driftline-demo-r1.dlq'
    """
    base = f"driftline-demo-{run_id}"
    return {"input_topic": base, "dead_letter_topic": f"{base}.dlq", "output_topic": f"{base}.enriched", "metrics_topic": f"{base}.metrics", "alerts_topic": f"{base}.alerts", "telemetry_topic": f"{base}.model-calls"}


def write_run_config(path: Path, base: str | None, overrides: dict[str, dict[str, Any]]) -> None:
    """The run's configuration as a file (the base file's settings plus the demo's), so
    the follow-up commands see the same topics, broker and dataset root."""
    data = (yaml.safe_load(Path(base).read_text("utf-8")) or {}) if base else {}
    for section, values in overrides.items():
        data[section] = {**(data.get(section) or {}), **values}
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def count_rows(root: Path, dataset: str) -> tuple[int, int]:
    """(rows, files) committed to ``dataset``, from its manifest."""
    from driftline.sinks.parquet import load_entries, open_store

    files = [f for entry in load_entries(open_store(str(root)), dataset) for f in entry.files]
    return sum(f.rows for f in files), len(files)


def cli_name() -> str:
    """How the user runs driftline: ``driftline`` when it is on PATH, else the path of
    the script they ran (``.venv/bin/driftline`` after ``make demo``)."""
    script = Path(sys.argv[0])
    if script.name != "driftline" or shutil.which("driftline"):
        return "driftline"
    try:
        return str(script.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(script.resolve())


def next_steps(run: DemoRun, cli: str) -> list[str]:
    """Follow-up commands, each with a comment; they all use the run's configuration."""
    steps = []
    broker = run.kafka.bundled
    if broker is not None and not run.kafka.keep:
        steps.append(f"{cli} kafka start --port {broker.port}    # start the broker again (the demo stopped it; its topics are kept)")
    env_bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")  # it would win over the file
    with_cfg = f"{cli} -c {run.config_file}"
    if env_bootstrap and env_bootstrap != run.kafka.bootstrap:
        with_cfg = f"KAFKA_BOOTSTRAP_SERVERS={run.kafka.bootstrap} {with_cfg}"
    steps += [
        f'{with_cfg} query "{QUERY}"',
        f"{with_cfg} produce --events 500    # more events into {run.topics['input_topic']}",
        f"{with_cfg} run enrich --drain --recovery-dir {run.out / 'recovery'}    # the flow resumes where the demo stopped",
    ]
    if broker is not None and run.kafka.keep:
        steps.append(f"{cli} kafka stop --port {broker.port}    # stop the broker the demo left running")
    return steps


def build_summary(run: DemoRun) -> dict[str, Any]:
    """The run's summary: a JSON-able dict (``driftline demo --json`` prints it)."""
    bundled = run.kafka.bundled
    cli = cli_name()
    return {
        "run_id": run.run_id,
        "events_produced": run.events_produced,
        "malformed_produced": run.malformed_produced,
        "rows_written": {k: v["rows"] for k, v in run.datasets.items()},
        "datasets": run.datasets,
        "rows_rejected": run.datasets.get("rejected", {}).get("rows", 0),
        "topics": {"input": run.topics["input_topic"], "dead_letter": run.topics["dead_letter_topic"], "output": run.topics["output_topic"]},
        "seconds": round(run.flow_seconds, 3),
        "produce_seconds": round(run.produce_seconds, 3),
        "events_per_second": round(run.events_produced / run.flow_seconds, 1) if run.flow_seconds > 0 else None,
        "output_folder": str(run.datasets_root),
        "config_file": str(run.config_file),
        "report": str(run.report) if run.report else None,
        "bootstrap": run.kafka.bootstrap,
        "broker": {
            "origin": run.kafka.origin,
            "note": run.kafka.note,
            "left_running": bundled is None or run.kafka.keep,
            "start_command": f"{cli} kafka start --port {bundled.port}" if bundled is not None else None,
        },
        "next_steps": next_steps(run, cli),
    }


def render_text(summary: dict[str, Any]) -> str:
    """The summary as the table the demo prints."""
    lines = [
        f"driftline demo: {summary['events_produced']} events ({summary['malformed_produced']} malformed) -> topic {summary['topics']['input']} on {summary['bootstrap']}",
        f"kafka: {summary['broker']['note']}" + ("" if summary["broker"]["left_running"] else " (stopped at the end)"),
        f"flow drained in {summary['seconds']} s ({summary['events_per_second']} events/s)",
        "",
        f"{'dataset':<12} {'rows':>8} {'files':>6}  path",
        *(f"{name:<12} {info['rows']:>8} {info['files']:>6}  {info['path']}" for name, info in summary["datasets"].items()),
        "",
        f"dead-letter topic: {summary['topics']['dead_letter']}   output topic: {summary['topics']['output']}",
        f"configuration of this run: {summary['config_file']}",
        f"HTML report of this run: {summary['report']}",
        "next:",
        *(f"  {step}" for step in summary["next_steps"]),
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    configure_logging("WARNING")
    with signals_as_interrupt() as received:
        try:
            summary = build_summary(run_demo(args))
        except BrokerError as exc:
            print(f"driftline demo: {exc}", file=sys.stderr)
            return 1
        except BaseException:
            if received:  # the interrupt may arrive wrapped by the dataflow runtime
                print(f"driftline demo: stopped by {signal.Signals(received[0]).name}", file=sys.stderr)
                return 128 + received[0]
            raise
    print(json.dumps(summary) if args.json else "\n" + render_text(summary))
    return 0


def run_demo(args: argparse.Namespace) -> DemoRun:
    """Choose (and maybe start) the broker, produce, drain the enrich flow, count rows."""
    from driftline.flows.enrich import build_enrich_flow
    from driftline.producer import produce
    from driftline.runner import run_flow

    run_id = f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
    out = Path(args.out).resolve() / run_id
    kafka = choose_kafka(args, load_config(args.config).kafka)
    print(f"driftline demo: {kafka.note}", file=sys.stderr)
    topics = demo_topics(run_id)
    kafka_settings: dict[str, Any] = {"bootstrap_servers": kafka.bootstrap, **topics}
    if not kafka.extra:  # the bundled broker: drop security settings meant for another broker
        kafka_settings.update(extra={}, security=KafkaSecurityConfig().model_dump())
    root = out / "datasets"
    # a one-shot run: the windows still open when the topic is drained are final
    overrides = {"kafka": kafka_settings, "sinks": {"root": str(root)}, "monitoring": {"end_of_input": "close"}}
    cfg = load_config(args.config, overrides=overrides)
    out.mkdir(parents=True, exist_ok=True)
    config_file = out / "config.yaml"
    write_run_config(config_file, args.config or os.environ.get("DRIFTLINE_CONFIG") or None, overrides)
    with broker_for_run(kafka):
        t0 = time.monotonic()
        sent = produce(kafka.bootstrap, topics["input_topic"], args.events, seed=args.seed, invalid_rate=args.invalid_rate, pii_rate=args.pii_rate, progress=sys.stderr.isatty() and not args.json, extra_config=kafka.extra)
        produce_s = time.monotonic() - t0
        flow_s = run_flow(build_enrich_flow(cfg, drain=True, state_dir=out / "recovery"), recovery_dir=out / "recovery", epoch_interval=5.0)
    datasets: dict[str, dict[str, Any]] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []:
        rows, files = count_rows(root, d.name)
        datasets[d.name] = {"rows": rows, "files": files, "path": str(d)}
    from driftline.commands.report import write_report

    report = write_report(str(root), args.report or out / "report.html")
    return DemoRun(run_id, out, config_file, kafka, topics, len(sent), sum(1 for e in sent if e.defect), produce_s, flow_s, datasets, report.resolve())
