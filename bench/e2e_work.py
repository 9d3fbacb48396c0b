"""The per-event work of the seed documents, shared by the per-event loop and the Quix
Streams legs of bench/bench_e2e.py (so both do exactly the same work per event).

What the seed documents' request handlers do to one record, written here from their
description (not their code): decode the JSON, check the required fields, mask five PII
types with one regular expression each (e-mail, phone, SSN, card, IPv4; each match
becomes ``<TYPE>``), compute ``text_length`` and ``word_count``, score the masked text
with VADER (compound), and add the record to per-minute window statistics (count, mean
sentiment, mean length, PII hits per source).  Rows go to Parquet in columnar chunks.

Only the standard library, orjson, vaderSentiment and pyarrow are used, so the module
also runs in the separate Quix Streams environment (see bench/bench_e2e.py).
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

# The five PII types of the seeds' privacy layer, one expression each.
PII_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("EMAIL", re.compile(r"\b[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b")),
    ("PHONE", re.compile(r"(?<!\d)(?:\+?1[\s.-]?)?\(?\d{3}\)?[\s.-]?\d{3}[\s.-]?\d{4}(?!\d)")),
    ("SSN", re.compile(r"(?<!\d)\d{3}-?\d{2}-?\d{4}(?!\d)")),
    ("CREDIT_CARD", re.compile(r"(?<!\d)\d{4}(?:[\s-]?\d{4}){3}(?!\d)")),
    ("IP_ADDRESS", re.compile(r"(?<![\d.])\d{1,3}(?:\.\d{1,3}){3}(?![\d.])")),
)
STRINGS = ("event_id", "source", "text")  # required, with event_time (ISO string or epoch ms)
# driftline's default validation.max_text_bytes: the loop refuses what driftline refuses
# (without it, VADER spends seconds on each 64 KB text of the producer's oversized defect).
MAX_TEXT_BYTES = 32_768
MAX_TEXT_CHARS = MAX_TEXT_BYTES // 4
COLUMNS = ("event_id", "event_time", "source", "tenant", "text", "pii_count", "text_length", "word_count", "sentiment")


class SeedWork:
    """Per-event processing with per-minute windows and a columnar Parquet writer."""

    def __init__(self, out_dir: Path, flush_rows: int = 50_000, *, windows: bool = True) -> None:
        self.out = out_dir
        self.out.mkdir(parents=True, exist_ok=True)
        self.flush_rows = flush_rows
        self.vader = SentimentIntensityAnalyzer()
        self.cols: dict[str, list[Any]] = {c: [] for c in COLUMNS}
        self.windows: dict[tuple[int, str], list[float]] = {}
        self.keep_windows = windows  # False: the caller's framework keeps the window statistics
        self.files = 0
        self.rows_written = 0
        self.rejected = 0

    def process(self, value: bytes | None) -> None:
        """One event, buffered for Parquet unless refused."""
        row = self.process_row(value)
        if row is not None:
            self.add(row)

    def process_row(self, value: bytes | None) -> dict[str, Any] | None:
        """One event: the enriched row, or None when refused (counted)."""
        try:
            obj = orjson.loads(value) if value else None
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict) or any(not isinstance(obj.get(k), str) for k in STRINGS) or not isinstance(obj.get("event_time"), (str, int)):
            self.rejected += 1
            return None
        try:
            ts = obj["event_time"]
            when = ts / 1000 if isinstance(ts, int) else datetime.fromisoformat(ts).timestamp()
        except (ValueError, TypeError):
            self.rejected += 1
            return None
        text = obj["text"]
        if len(text) > MAX_TEXT_CHARS and len(text.encode()) > MAX_TEXT_BYTES:
            self.rejected += 1
            return None
        hits = 0
        for name, pattern in PII_PATTERNS:
            text, n = pattern.subn(f"<{name}>", text)
            hits += n
        length = len(text)
        words = len(text.split())
        compound = self.vader.polarity_scores(text)["compound"]
        source = obj["source"]
        if self.keep_windows:
            w = self.windows.get((int(when) // 60, source))
            if w is None:
                self.windows[(int(when) // 60, source)] = [1, compound, length, hits]
            else:
                w[0] += 1
                w[1] += compound
                w[2] += length
                w[3] += hits
        return {"event_id": obj["event_id"], "event_time": int(when * 1000), "source": source, "tenant": obj.get("tenant") if isinstance(obj.get("tenant"), str) else None, "text": text,
                "pii_count": hits, "text_length": length, "word_count": words, "sentiment": compound}

    def add(self, row: dict[str, Any]) -> None:
        for c in COLUMNS:
            self.cols[c].append(row[c])
        if len(self.cols["event_id"]) >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        n = len(self.cols["event_id"])
        if not n:
            return
        table = pa.table({c: self.cols[c] for c in COLUMNS})
        pq.write_table(table, self.out / f"part-{self.files:05d}.parquet", compression="zstd")
        self.files += 1
        self.rows_written += n
        self.cols = {c: [] for c in COLUMNS}

    def close(self) -> None:
        self.flush()
        if self.keep_windows:
            self.write_windows()

    def write_windows(self) -> None:
        keys = sorted(self.windows)
        stats = pa.table(
            {
                "minute": [k[0] * 60 for k in keys],
                "source": [k[1] for k in keys],
                "events": [self.windows[k][0] for k in keys],
                "mean_sentiment": [self.windows[k][1] / self.windows[k][0] for k in keys],
                "mean_length": [self.windows[k][2] / self.windows[k][0] for k in keys],
                "pii_hits": [self.windows[k][3] for k in keys],
            }
        )
        pq.write_table(stats, self.out / "windows.parquet", compression="zstd")
