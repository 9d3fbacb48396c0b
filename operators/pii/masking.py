"""Masking strategies and the pseudonymization key.

Strategies are registered functions ``(entity, value, normalized, ctx) -> replacement``:

- ``redact``: ``<EMAIL>``;
- ``pseudonymize``: ``<EMAIL:3f9a1c2b7d10>``, the first ``token_hex_chars`` hex digits of
  HMAC-SHA256(key, ``entity`` + US + normalized value): equal for equal values across
  events, processes and restarts with the same key, so masked data still joins and counts;
- ``partial``: letters and digits starred except the last ``partial_keep`` (``**** **** **** 1111``);
  e-mails keep the first letter and the domain (``j***@example.com``);
- ``drop``: the record is refused; its text is still redacted.

>>> ctx = MaskContext(key=b"k" * 32)
>>> STRATEGIES["pseudonymize"]("EMAIL", "A@b.io", "a@b.io", ctx) == STRATEGIES["pseudonymize"]("EMAIL", "a@b.io", "a@b.io", ctx)
True
>>> STRATEGIES["partial"]("CREDIT_CARD", "4111 1111 1111 1111", "4111111111111111", ctx)
'**** **** **** 1111'
"""

from __future__ import annotations

import hmac
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from driftline.config import ConfigError
from driftline.config.privacy import PrivacyConfig

#: Fallback key for development mode only.  It is public (it is in the source), so tokens
#: made with it are NOT pseudonymous; production mode refuses to start without a real key.
DEVELOPMENT_KEY = b"driftline-DEVELOPMENT-ONLY-pseudonym-key-not-secret"
MIN_KEY_BYTES = 16

_log = logging.getLogger("driftline.privacy")


@dataclass(frozen=True, slots=True)
class MaskContext:
    """What strategies need: the HMAC key and the token and partial settings."""

    key: bytes
    token_hex_chars: int = 12
    partial_keep: int = 4

    def token(self, entity: str, normalized: str) -> str:
        """Hex HMAC-SHA256 of ``entity`` and the normalized value, cut to ``token_hex_chars``."""
        mac = hmac.digest(self.key, entity.encode() + b"\x1f" + normalized.encode("utf-8", "surrogatepass"), "sha256")
        return mac.hex()[: self.token_hex_chars]


StrategyFn = Callable[[str, str, str, MaskContext], str]
STRATEGIES: dict[str, StrategyFn] = {}


def strategy(name: str) -> Callable[[StrategyFn], StrategyFn]:
    """Decorator registering a masking strategy under ``name``."""

    def deco(fn: StrategyFn) -> StrategyFn:
        STRATEGIES[name] = fn
        return fn

    return deco


@strategy("redact")
def redact(entity: str, value: str, normalized: str, ctx: MaskContext) -> str:
    return f"<{entity}>"


@strategy("drop")
def drop(entity: str, value: str, normalized: str, ctx: MaskContext) -> str:
    return f"<{entity}>"


@strategy("pseudonymize")
def pseudonymize(entity: str, value: str, normalized: str, ctx: MaskContext) -> str:
    return f"<{entity}:{ctx.token(entity, normalized)}>"


@strategy("partial")
def partial(entity: str, value: str, normalized: str, ctx: MaskContext) -> str:
    if entity == "EMAIL" and "@" in value:
        local, _, domain = value.rpartition("@")
        return f"{local[:1]}***@{domain}"
    alnum = sum(1 for c in value if c.isalnum())
    keep = ctx.partial_keep if alnum > 2 * ctx.partial_keep else 0
    out, seen = [], 0
    for c in value:
        if c.isalnum():
            seen += 1
            out.append(c if seen > alnum - keep else "*")
        else:
            out.append(c)
    return "".join(out)


def load_pseudonym_key(cfg: PrivacyConfig, mode: str, env: Mapping[str, str] | None = None) -> bytes:
    """The HMAC key: ``cfg.key`` (a secret the configuration read from the environment,
    a file or the secrets directory), else ``$<cfg.key_env>`` in ``env`` (UTF-8 bytes).

    In ``production`` mode a missing or short key raises :class:`ConfigError`; in
    ``development`` mode a missing key falls back to :data:`DEVELOPMENT_KEY` with a warning.

    >>> load_pseudonym_key(PrivacyConfig(), "development", {"DRIFTLINE_PII_KEY": "0123456789abcdef"})
    b'0123456789abcdef'
    """
    env = os.environ if env is None else env
    key: bytes | None = None
    origin = ""
    raw = cfg.key.get_secret_value() if cfg.key is not None else env.get(cfg.key_env)
    if raw:
        key, origin = raw.encode("utf-8"), f"privacy.key (${cfg.key_env})"
    if key is not None:
        if len(key) < MIN_KEY_BYTES:
            raise ConfigError(f"privacy: the pseudonymization key from {origin} has {len(key)} bytes; at least {MIN_KEY_BYTES} are needed")
        return key
    if mode == "production":
        raise ConfigError(f"privacy: no pseudonymization key in production mode: set ${cfg.key_env}, $DRIFTLINE__PRIVACY__KEY_FILE or privacy.key_file")
    # One record through logging: JSON lines once configure_logging ran, Python's
    # last-resort stderr handler otherwise (printing it as well doubled the line).
    _log.warning(f"no pseudonymization key (${cfg.key_env} / privacy.key_file): using the PUBLIC development key; tokens are not pseudonymous")
    return DEVELOPMENT_KEY


__all__ = ["DEVELOPMENT_KEY", "STRATEGIES", "MaskContext", "load_pseudonym_key", "strategy"]
