"""JSON-lines logging.  Log records carry counts, ids of steps and datasets, and
reason codes; never user text or any other raw PII.

>>> import logging, io
>>> buf = io.StringIO()
>>> configure_logging("INFO", stream=buf)
>>> logging.getLogger("driftline.test").info("flow started", extra={"fields": {"flow": "enrich"}})
>>> '"msg": "flow started"' in buf.getvalue() and '"flow": "enrich"' in buf.getvalue()
True
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
            # The traceback names code locations only; exception messages could quote data.
            entry["exc"] = self.formatException(record.exc_info).splitlines()[-1][:200]
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO", *, file: str | Path | None = None, stream: IO[str] | None = None) -> None:
    """Send driftline's logs as JSON lines to ``stream`` (default stderr) and ``file``."""
    root = logging.getLogger("driftline")
    root.setLevel(level.upper())
    root.propagate = False
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stderr)]
    if file is not None:
        Path(file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(file, encoding="utf-8"))
    for h in handlers:
        h.setFormatter(JsonFormatter())
        root.addHandler(h)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name if name.startswith("driftline") else f"driftline.{name}")
