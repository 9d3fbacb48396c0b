"""Validation stage: schema, data-quality and business-rule layers with a dead-letter path.

>>> from driftline.operators.validation import Validator, validate_batch, VALIDATOR_VERSION
"""

from driftline.operators.validation.dead_letter import DeadLetterMessage, dead_letter_messages, parse_dead_letter_headers
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
    "DeadLetterMessage",
    "RuleError",
    "ValidationSetupError",
    "Validator",
    "compile_rule",
    "dead_letter_messages",
    "parse_dead_letter_headers",
    "validate_batch",
    "validate_records_one_by_one",
]
