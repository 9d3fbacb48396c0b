"""JSON-lines logging.  Log records carry counts, ids of steps and datasets, and
reason codes; never user text or any other raw PII.  An exception is logged as its type
and where it was raised (``exc``: ``ValueError at operators/decode.py:85 in decode_payload``),
never its message or its arguments, which can quote record content.

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
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__
            entry["exc"] = describe_exception(record.exc_info[1])
        return json.dumps(entry, default=str)


def describe_exception(exc: BaseException | None) -> str:
    """``Type at path/file.py:line in function`` of the innermost frame that raised ``exc``
    (the message is left out: it can quote the data being processed).

    >>> try:
    ...     int("4111 1111 1111 1111")
    ... except ValueError as e:
    ...     describe_exception(e).startswith("ValueError at ") and "4111" not in describe_exception(e)
    True
    """
    if exc is None:
        return ""
    tb = exc.__traceback__
    where = "unknown location"
    if tb is not None:
        while tb.tb_next is not None:
            tb = tb.tb_next
        code = tb.tb_frame.f_code
        parts = Path(code.co_filename).parts
        short = "/".join(parts[-2:]) if len(parts) >= 2 else code.co_filename
        where = f"{short}:{tb.tb_lineno} in {code.co_name}"
    return f"{type(exc).__name__} at {where}"


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
