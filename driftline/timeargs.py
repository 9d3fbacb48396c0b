"""Durations and instants on the command line (``--older-than 1h``, ``--since 2026-03-01T10:00Z``).

A duration is a number with a unit (``ms``, ``s``, ``m``, ``h``, ``d``, ``w``), or ``0``.
An instant is ISO-8601 with a UTC offset (``Z`` allowed), or a duration meaning that
long before now (``--since 2h``).  Bad text raises :class:`argparse.ArgumentTypeError`,
so argparse names the flag.

>>> parse_duration("90m")
datetime.timedelta(seconds=5400)
>>> parse_instant("2026-03-01T10:00Z").isoformat()
'2026-03-01T10:00:00+00:00'
>>> from datetime import datetime, timezone
>>> parse_instant("1h", now=datetime(2026, 3, 1, 12, tzinfo=timezone.utc)).isoformat()
'2026-03-01T11:00:00+00:00'
"""

from __future__ import annotations

import argparse
import re
from datetime import datetime, timedelta, timezone

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$")


def parse_duration(text: str) -> timedelta:
    """``30s``, ``15m``, ``1h``, ``7d`` or ``0`` as a timedelta."""
    t = text.strip().lower()
    if t == "0":
        return timedelta(0)
    m = _DURATION.match(t)
    if m is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (expected e.g. 30s, 15m, 1h, 7d or 0)")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


def parse_instant(text: str, *, now: datetime | None = None) -> datetime:
    """An ISO-8601 instant with a UTC offset, or a duration before ``now``, in UTC."""
    t = text.strip()
    if _DURATION.match(t.lower()):
        return (now or datetime.now(timezone.utc)) - parse_duration(t)
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-8601 instant (e.g. 2026-03-01T10:00:00Z) or a duration ago (e.g. 2h)") from None
    if dt.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a UTC offset (e.g. 2026-03-01T10:00:00Z)")
    return dt.astimezone(timezone.utc)
