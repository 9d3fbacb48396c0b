"""Progress bars for long commands: counts, rates and an ETA on a terminal, silent otherwise.

Every long command (drain, backfill, verify, profile, compact, report) reports progress
through :func:`bar`.  It writes to standard error only when that is a terminal, so logs,
pipes, CI and tests see nothing; ``DRIFTLINE_PROGRESS=1`` forces it on, ``0`` off.

>>> import os
>>> os.environ["DRIFTLINE_PROGRESS"] = "0"   # as when stderr is not a terminal
>>> with bar(total=3, desc="files", unit="file") as b:
...     b.update(3)
>>> b.disable
True
>>> del os.environ["DRIFTLINE_PROGRESS"]
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm import tqdm


def enabled() -> bool:
    """True when progress should be drawn (stderr is a terminal, unless overridden)."""
    forced = os.environ.get("DRIFTLINE_PROGRESS", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return sys.stderr.isatty()


def bar(*, total: float | None = None, desc: str = "", unit: str = "it", unit_scale: bool = False, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr (counts, rate, ETA when ``total`` is known), disabled off a terminal."""
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, disable=not enabled(), file=sys.stderr, dynamic_ncols=True, leave=False, **kwargs)
