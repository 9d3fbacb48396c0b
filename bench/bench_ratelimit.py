"""Full-size rate-limit run (issue 19): a burst of 5,000 events drained through the
enrich flow on a local broker against the loopback provider limited to 600 requests per
minute, driftline configured at that limit, with 1 and then 2 flow processes (one
Bytewax cluster sharing the ledger).  Prints the drain time next to what the limit
implies, the 429s (target 0), the tiers (target: all primary) and the most requests the
provider saw in any minute (target <= 600).  About 8.5 minutes per run.

    .venv/bin/python bench/bench_ratelimit.py [--events 5000] [--rpm 600] [--processes 1 2]
"""

from __future__ import annotations

import argparse
import tempfile
import uuid
from pathlib import Path

from driftline.broker import LocalKafka
from driftline.testing.ratelimit_drain import drain_at_limit, free_ports


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=5000)
    ap.add_argument("--rpm", type=float, default=600.0)
    ap.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port, controller = free_ports(2)
        broker = LocalKafka(port=port, controller_port=controller, state_dir=Path(tmp) / "kafka")
        broker.start(timeout=120)
        try:
            for n in a.processes:
                work = Path(tmp) / f"run{n}"
                work.mkdir()
                f = drain_at_limit(broker.bootstrap, f"ratelimit-{uuid.uuid4().hex[:8]}", work, events=a.events, rpm=a.rpm, processes=n)
                print(f.line(a.rpm, n), flush=True)
                ok = f.rejected_429 == 0 and f.tiers == {"primary": a.events} and f.max_per_minute <= a.rpm and f.out_of_order == 0
                print(f"  targets (0 x 429, all primary, <= {a.rpm:g} in any minute, partition order kept): {'met' if ok else 'NOT MET'}", flush=True)
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
