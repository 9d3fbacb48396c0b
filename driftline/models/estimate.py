"""The output-token estimate budgets reserve against, learned from the answers.

Before a request goes to a priced tier, its cost is reserved against budgets: the
prompt's estimated tokens (characters / ``chars_per_token``) plus an output estimate.
Sizing the output on ``max_output_tokens`` refuses tenants long before their budget is
spent when answers are short (a sentiment label is ~10 tokens, the cap 256), so the
estimate follows what the tier really bills per request for the task: a high
percentile (``budgets.output_estimate_percentile``, default 95) of the output tokens of
its most recent answers (``output_estimate_window``), capped by ``max_output_tokens``.
Until ``output_estimate_min_samples`` answers are seen the cap itself is used.

>>> e = OutputTokenEstimator(percentile=95, window=100, min_samples=3)
>>> e.estimate("sentiment", "primary", cap=256)
256
>>> for n in [10, 12, 9, 11]: e.observe("sentiment", "primary", n)
>>> e.estimate("sentiment", "primary", cap=256), e.estimate("sentiment", "primary", cap=8)
(12, 8)
"""

from __future__ import annotations

import math
import threading
from collections import deque


class OutputTokenEstimator:
    """Per ``(task, tier)``: the ``percentile`` of the last ``window`` output-token counts (thread-safe)."""

    def __init__(self, percentile: float = 95.0, window: int = 256, min_samples: int = 3) -> None:
        self.percentile = percentile
        self.window = window
        self.min_samples = min_samples
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], deque[int]] = {}
        self._value: dict[tuple[str, str], int] = {}  # the percentile, recomputed only after new observations

    def observe(self, task: str, tier: str, output_tokens: int) -> None:
        """One billed request's output tokens (all its attempts, reasoning tokens included)."""
        with self._lock:
            seen = self._seen.get((task, tier))
            if seen is None:
                seen = self._seen[(task, tier)] = deque(maxlen=self.window)
            seen.append(output_tokens)
            self._value.pop((task, tier), None)

    def estimate(self, task: str, tier: str, cap: int) -> int:
        """Output tokens to reserve for one request (at most ``cap``)."""
        with self._lock:
            value = self._value.get((task, tier))
            if value is None:
                seen = self._seen.get((task, tier))
                if seen is None or len(seen) < self.min_samples:
                    return cap
                ordered = sorted(seen)  # nearest-rank percentile
                value = self._value[(task, tier)] = ordered[max(0, math.ceil(self.percentile / 100.0 * len(ordered)) - 1)]
        return max(1, min(cap, value))
