"""Cost of a call from its tokens and the configured price table.

Prices are US dollars per million tokens.  Cached input tokens are billed at the
cached-input price (the input price if none is set), the rest of the input at the
input price, and output tokens (reasoning tokens are part of them, as providers
report it) at the output price.  Models missing from the table cost zero.

>>> from driftline.config.models import PriceConfig
>>> table = {"m": PriceConfig(input_per_mtok=2.5, cached_input_per_mtok=1.25, output_per_mtok=10)}
>>> call_cost(table, "m", input_tokens=1000, output_tokens=200, cached_tokens=400)
0.004
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from driftline.config.models import PriceConfig


def call_cost(pricing: Mapping[str, PriceConfig], model: str, *, input_tokens: int, output_tokens: int, cached_tokens: int = 0) -> float:
    """Cost in USD, rounded to 1e-10 dollars (far below a cent, free of float noise)."""
    price = pricing.get(model)
    if price is None:
        return 0.0
    cached = min(cached_tokens, input_tokens)
    cached_price = price.cached_input_per_mtok if price.cached_input_per_mtok is not None else price.input_per_mtok
    usd = ((input_tokens - cached) * price.input_per_mtok + cached * cached_price + output_tokens * price.output_per_mtok) / 1_000_000
    return round(usd, 10)


def estimate_tokens(chars: int, chars_per_token: float) -> int:
    """Token estimate of a text of ``chars`` characters (at least 1)."""
    return max(1, math.ceil(chars / chars_per_token))


def is_priced(pricing: Mapping[str, PriceConfig], model: str) -> bool:
    p = pricing.get(model)
    return p is not None and (p.input_per_mtok > 0 or p.output_per_mtok > 0 or (p.cached_input_per_mtok or 0) > 0)
