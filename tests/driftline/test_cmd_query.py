"""``driftline query``: DuckDB views named after the datasets, with partition pruning."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pyarrow as pa

from driftline.cli import main
from driftline.clock import FakeClock
from driftline.commands.query import connect
from driftline.config.sinks import SinksConfig
from driftline.sinks.parquet import KAFKA_KEY, DatasetSpec, DatasetWriter, RunInfo, open_store

T0 = datetime(2026, 3, 1, 22, 0, tzinfo=timezone.utc)
SCHEMA = pa.schema(
    [
        pa.field("src_topic", pa.string(), nullable=False),
        pa.field("src_partition", pa.int32(), nullable=False),
        pa.field("src_offset", pa.int64(), nullable=False),
        pa.field("event_time", pa.timestamp("ms", "UTC")),
        pa.field("tenant", pa.string()),
    ]
)


def populate(root: Path) -> None:
    for name in ("enriched", "rejected"):
        spec = DatasetSpec(name, SCHEMA, KAFKA_KEY, "event_time")
        cfg = SinksConfig(root=str(root))
        w = DatasetWriter(spec, cfg, store=open_store(cfg.root), run_info=RunInfo("0.1.0", "h"), clock=FakeClock(T0))
        n = 240 if name == "enriched" else 6
        w.write(
            pl.DataFrame(
                {
                    "src_topic": ["t"] * n,
                    "src_partition": [0] * n,
                    "src_offset": list(range(n)),
                    "event_time": pl.Series([T0 + timedelta(minutes=i) for i in range(n)], dtype=pl.Datetime("ms", "UTC")),
                    "tenant": ["acme" if i % 2 else "globex" for i in range(n)],
                }
            )
        )
        w.flush_all()
    # the staged temp and the manifest of an unfinished commit must stay invisible
    (root / "enriched" / "_staging" / "p9-000000000000-0.parquet.tmp").write_bytes(b"half a file")


def test_views_per_dataset_and_hive_columns(tmp_path, capsys) -> None:
    populate(tmp_path)
    code = main(["query", "--root", str(tmp_path), "--format", "json", "SELECT date, hour, count(*) AS n FROM enriched GROUP BY ALL ORDER BY date, hour"])
    assert code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == {"date": "2026-03-01", "hour": 22, "n": 60}
    assert sum(r["n"] for r in rows) == 240 and len(rows) == 4
    assert main(["query", "--root", str(tmp_path), "--format", "csv", "SELECT count(*) AS n FROM rejected"]) == 0
    assert capsys.readouterr().out.splitlines() == ["n", "6"]


def test_partition_filter_prunes_files(tmp_path) -> None:
    populate(tmp_path)
    con, views = connect(str(tmp_path))
    assert views == ["enriched", "rejected"]
    plan = "\n".join(r[1] for r in con.execute("EXPLAIN ANALYZE SELECT count(*) FROM enriched WHERE date = DATE '2026-03-02' AND hour = 0").fetchall())
    assert con.execute("SELECT count(*) FROM enriched WHERE date = DATE '2026-03-02' AND hour = 0").fetchone() == (60,)
    assert "Total Files Read: 1" in plan, plan


def test_bad_sql_names_the_views(tmp_path, capsys) -> None:
    populate(tmp_path)
    assert main(["query", "--root", str(tmp_path), "SELECT * FROM nope"]) == 2
    assert "views: enriched, rejected" in capsys.readouterr().err
