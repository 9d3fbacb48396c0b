"""A few hundred events through bench/bench_e2e.py's floor, loop and driftline legs (not a benchmark:
it checks the script runs, every leg reads every event and the per-step table is printed)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from driftline.heap import c_heap

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]


def run_bench(kafka_bootstrap: str, tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """bench/bench_e2e.py on 300 events of the session's broker with ``args``: the process and its ``--json`` document."""
    out = tmp_path / "result.json"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_e2e.py"), "--events", "300", *args, "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def test_bench_e2e_runs_its_legs_on_a_few_hundred_events(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Two rounds of the legs (``--rounds 2``: in turn, each leg's median round reported
    with both rounds' figures, the targets as the median of the rounds' ratios), another
    checkout's driftline right after this one's in each round (``--before-python``, here
    the same interpreter) and two variants, run once."""
    from driftline.testing.kafka import consume_all

    proc, doc = run_bench(
        kafka_bootstrap, tmp_path, "--legs", "floor,loop,driftline", "--rounds", "2", "--before-python", sys.executable, "--variants", "tracing-all,at-least-once", "--rss-every", "100"
    )
    results = doc["results"]
    assert {leg: r["events"] for leg, r in results.items()} == {"floor": 300, "loop": 300, "driftline": 300, "before": 300, "tracing-all": 300, "at-least-once": 300}
    assert {leg: len(r["rounds_eps"]) for leg, r in results.items() if "rounds_eps" in r} == {"floor": 2, "loop": 2, "driftline": 2, "before": 2}
    assert all(r["eps"] == min(r["rounds_eps"]) for r in results.values() if "rounds_eps" in r)  # of two rounds, the lower is the median
    order = [line.split(":")[0].strip() for line in proc.stdout.splitlines() if "(round " in line and "events/s" in line]
    assert order == ["floor (round 1)", "loop (round 1)", "driftline (round 1)", "before (round 1)", "floor (round 2)", "loop (round 2)", "driftline (round 2)", "before (round 2)"]
    # the pairs: each round's ratio, their median and the wins; the same datasets from both checkouts
    assert re.search(r"driftline vs --before-python, pair by pair: \d+\.\d\d / \d+\.\d\d, median \d+\.\d\dx, faster in [0-2] of 2", proc.stdout), proc.stdout
    assert "| before: --before-python's checkout, the same command |" in proc.stdout
    assert "datasets of this checkout vs --before-python (round 1): equal" in proc.stdout
    # each round writes output topics of its own: the median round's hold every output record, whichever round it was
    assert len(consume_all(kafka_bootstrap, f"{results['driftline']['outputs']}.enriched")) > 250
    assert "| rounds (events/s) |" in proc.stdout and "2 rounds (each leg's median round" in proc.stdout
    targets = next(line for line in proc.stdout.splitlines() if line.startswith("issue 11 targets: "))
    assert targets.count(", rounds ") == 2, targets  # the loop's and the floor's: each round's ratio beside the median
    steps = results["driftline"]["steps"]
    assert {"decode", "validate", "mask_pii", "features", "model_call", "guardrails", "enriched_parquet", "output_topic_out"} <= set(steps)
    assert results["tracing-all"]["spans"] > 300 * 5  # every record traced: its receive span and its step spans
    assert "driftline: guardrails stage" in proc.stdout
    assert all(s["seconds"] >= 0 and s["cpu_seconds"] >= 0 for s in steps.values())
    # the stateless stages ran on the worker's helper thread (operators/ahead.py), the rest on the worker
    assert {k for k, s in steps.items() if s["helper"]} == {"decode", "validate", "mask_pii", "features", "sanitize"}
    assert "On the workers' helper threads" in proc.stdout
    assert [mark[0] for mark in results["driftline"]["rss_marks"]] == [100, 200, 300]
    if c_heap() is not None:  # glibc: the C heap's figures ride along with each RSS mark
        assert all(rss > heap > 0 and free >= 0 for _, rss, heap, free, _peak in results["driftline"]["rss_marks"])
    # each mark's window peak is the highest sample since the previous mark: never below the mark's own sample
    assert all(peak >= rss > 0 for _, rss, _heap, _free, peak in results["driftline"]["rss_marks"])
    assert "highest RSS over the last 100 events vs the first 100:" in proc.stdout
    assert "| mask_pii |" in proc.stdout and "driftline vs it" in proc.stdout
    assert "exactly-once Kafka outputs (driftline) cost" in proc.stdout


def test_bench_e2e_scaling_table_has_the_machine_ceiling(kafka_bootstrap: str, tmp_path: Path) -> None:
    """``--processes 2 --ceiling``: the cluster and two independent one-process runs, each
    run reading the whole topic and writing the 1-process datasets."""
    from driftline.testing.kafka import consume_all

    proc, doc = run_bench(kafka_bootstrap, tmp_path, "--legs", "driftline", "--processes", "2", "--ceiling", "--rss-every", "0", "--scale-repeats", "2")
    scaling = doc["scaling"]
    assert {shape: [r["events"] for r in runs] for shape, runs in scaling.items()} == {"1 process": [300] * 2, "2 processes": [300] * 2, "2 independent processes (ceiling)": [600] * 2}
    ceiling = scaling["2 independent processes (ceiling)"][0]
    assert [p["events_in"] for p in ceiling["per_process"]] == [300, 300]
    assert ceiling["copies"] == 2 and ceiling["cpu_s"] > 0
    # every independent run of every round writes output topics of its own, all its records in them
    # (a round reusing a topic would find its records committed and skip them: a ceiling with less work)
    outputs = [o for r in scaling["2 independent processes (ceiling)"] for o in r["outputs"]]
    assert len(set(outputs)) == 4
    rows = len(consume_all(kafka_bootstrap, f"{doc['results']['driftline']['outputs']}.enriched"))
    assert rows > 250 and len(consume_all(kafka_bootstrap, f"{outputs[-1]}.enriched")) == rows
    assert "| 2 independent processes (ceiling) |" in proc.stdout
    assert "on 2 workers, input partitions 0-2: read by workers [0, 1, 0], keyed steps [" in proc.stdout  # where each partition's work runs
    assert proc.stdout.count("datasets of '2 independent processes (ceiling)' vs 1 process: equal") == 2, proc.stdout[-2000:]


def test_bench_e2e_helpers_examples() -> None:
    """bench_e2e's docstring examples (the bench is a script, outside the package's doctests)."""
    import doctest
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_e2e", REPO / "bench" / "bench_e2e.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 3 and result.failed == 0
