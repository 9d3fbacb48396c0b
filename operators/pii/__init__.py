"""Privacy stage: PII detection, masking, data classification, DLP rules and audit.

Build one :class:`PiiMasker` at start-up and run :func:`mask_batch` on each micro-batch::

    key = load_pseudonym_key(cfg.privacy, cfg.mode)
    masker = PiiMasker.from_config(cfg.privacy, key)
    batch = mask_batch(batch, masker)
"""

from driftline.operators.pii.engine import BUILTIN_ENTITIES, FINDING_DTYPE, PiiMasker, ScanResult
from driftline.operators.pii.masking import DEVELOPMENT_KEY, STRATEGIES, MaskContext, load_pseudonym_key, strategy
from driftline.operators.pii.operator import STAGE, audit_frame, mask_dead_letter_payloads, audit_schema, classify, entity_column, mask_batch, mask_batch_audited, pii_output_schema
from driftline.operators.pii.recognizers import RECOGNIZERS, Recognizer, RecognizerOptions, register

__all__ = [
    "BUILTIN_ENTITIES",
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
    "classify",
    "entity_column",
    "mask_batch",
    "mask_batch_audited",
    "mask_dead_letter_payloads",
    "pii_output_schema",
    "ScanResult",
    "load_pseudonym_key",
    "register",
    "strategy",
]
