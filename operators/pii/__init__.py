"""Privacy stage: PII detection, masking, data classification, DLP rules and audit.

Build one :class:`PiiMasker` at start-up and run :func:`mask_batch` on each micro-batch::

    key = load_pseudonym_key(cfg.privacy, cfg.mode)
    masker = PiiMasker.from_config(cfg.privacy, key)
    batch = mask_batch(batch, masker)
"""

from driftline.operators.pii.engine import FINDING_DTYPE, PiiMasker, ScanResult
from driftline.operators.pii.masking import DEVELOPMENT_KEY, STRATEGIES, MaskContext, load_pseudonym_key, strategy
from driftline.operators.pii.operator import STAGE, audit_frame, audit_schema, classify, entity_column, mask_batch, mask_batch_audited, mask_dead_letter_payloads, mask_dead_letters, pii_output_schema
from driftline.operators.pii.recognizers import RECOGNIZERS, Recognizer, RecognizerOptions, entity_defaults, register

__all__ = [
    "DEVELOPMENT_KEY",
    "FINDING_DTYPE",
    "RECOGNIZERS",
    "STRATEGIES",
    "MaskContext",
    "PiiMasker",
    "Recognizer",
    "RecognizerOptions",
    "STAGE",
    "audit_frame",
    "audit_schema",
    "entity_defaults",
    "classify",
    "entity_column",
    "mask_batch",
    "mask_batch_audited",
    "mask_dead_letter_payloads",
    "mask_dead_letters",
    "pii_output_schema",
    "ScanResult",
    "load_pseudonym_key",
    "register",
    "strategy",
]
