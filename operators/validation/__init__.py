"""Validation stage: schema, data-quality and business-rule layers over micro-batches.

Refused rows leave in ``MicroBatch.rejected``; ``driftline.sinks.kafka.dead_letter_records``
turns them into dead-letter messages (original bytes, reason headers, ``VALIDATOR_VERSION``).

>>> from driftline.operators.validation import Validator, validate_batch, VALIDATOR_VERSION
"""

from driftline.operators.validation.rules import RuleError, compile_rule
from driftline.operators.validation.validator import (
    VALIDATOR_VERSION,
    ValidationSetupError,
    Validator,
    validate_batch,
    validate_records_one_by_one,
)

__all__ = [
    "VALIDATOR_VERSION",
    "RuleError",
    "ValidationSetupError",
    "Validator",
    "compile_rule",
    "validate_batch",
    "validate_records_one_by_one",
]
