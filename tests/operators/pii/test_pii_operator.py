"""mask_batch over micro-batches: masking, stable schema, classification, DLP, refusals, audit."""

from __future__ import annotations

from datetime import datetime, timezone

import polars as pl
import pytest

from driftline.config import PipelineConfig
from driftline.config.privacy import PrivacyConfig
from driftline.operators.batch import EVENT_SCHEMA, REJECT_SCHEMA, MicroBatch
from driftline.operators.pii import PiiMasker, audit_frame, mask_batch, mask_batch_audited, pii_output_schema

KEY = b"test-key-0123456789abcdef"
RAW = {
    "email": "ann.lee@example.com",
    "phone": "+1 415-555-2671",
    "card": "4111 1111 1111 1111",
    "ssn": "884-08-1501",
    "key": "sk-Qw7Er2Ty9Ui4Op1As6Df3Gh8",
}


def events(texts: list[str | None], *, sources: list[str] | None = None, users: list[str | None] | None = None) -> pl.DataFrame:
    n = len(texts)
    data = {
        "event_id": [f"e{i}" for i in range(n)],
        "event_time": [datetime(2026, 1, 1, tzinfo=timezone.utc)] * n,
        "source": sources or ["tickets"] * n,
        "tenant": ["acme"] * n,
        "user_id": users or [f"user-{i}" for i in range(n)],
        "text": texts,
        "attributes": [[{"key": "contact", "value": RAW["email"]}, {"key": "lang", "value": "en"}]] * n,
        "src_topic": ["events"] * n,
        "src_partition": [0] * n,
        "src_offset": list(range(n)),
        "src_timestamp": [datetime(2026, 1, 1, tzinfo=timezone.utc)] * n,
        "raw": [b"{}"] * n,
        "payload_format": ["json"] * n,
        "field_errors": [[]] * n,
        "warnings": [[]] * n,
    }
    for name in EVENT_SCHEMA:  # columns other stages add to the contract stay null here
        data.setdefault(name, [None] * n)
    return pl.DataFrame(data, schema=EVENT_SCHEMA)


def masker(**cfg: object) -> PiiMasker:
    return PiiMasker.from_config(PrivacyConfig(**cfg), KEY)


def no_raw_values(frame: pl.DataFrame) -> None:
    dump = str(frame.drop([c for c in ("raw",) if c in frame.columns]).to_dicts())
    for value in RAW.values():
        assert value not in dump, value


def test_masks_text_user_id_attributes_and_adds_stable_columns() -> None:
    texts = [f"mail {RAW['email']} call {RAW['phone']}", "nothing personal", None, f"card {RAW['card']} ssn {RAW['ssn']}"]
    out = mask_batch(MicroBatch(valid=events(texts)), masker())
    v = out.valid
    no_raw_values(v)
    assert v["text"][1] == "nothing personal" and v["text"][2] is None
    assert v["pii_email"].to_list() == [1, 0, 0, 0]
    assert v["pii_phone"].to_list() == [1, 0, 0, 0]
    assert v["pii_total"].to_list() == [2, 0, 0, 2]
    assert v["user_id"][0].startswith("<USER_ID:") and v["user_id"][0] != v["user_id"][1]
    assert v["attributes"][0][0]["value"].startswith("<EMAIL:") and v["attributes"][0][1]["value"] == "en"
    assert v["classification"].to_list() == ["confidential", "internal", "internal", "restricted"]
    assert v["route_local"].to_list() == [False, False, False, True]
    first = v["pii_findings"][0].to_list()
    assert [(f["type"], f["recognizer"], f["start"]) for f in first] == [("EMAIL", "email", 5), ("PHONE", "phone", 30)]
    expected = {**EVENT_SCHEMA, **pii_output_schema(PrivacyConfig())}
    assert dict(v.schema) == expected


def test_schema_is_the_same_for_empty_and_pii_free_batches() -> None:
    m = masker()
    a = mask_batch(MicroBatch(valid=events([])), m).valid
    b = mask_batch(MicroBatch(valid=events(["hello"])), m).valid
    c = mask_batch(MicroBatch(valid=events([RAW["email"]])), m).valid
    assert a.schema == b.schema == c.schema
    assert pii_output_schema(PipelineConfig()) == pii_output_schema(PrivacyConfig())


def test_user_id_token_equals_across_batches_and_nulls_kept() -> None:
    m = masker()
    a = mask_batch(MicroBatch(valid=events(["x", "y"], users=["u-1", None])), m).valid
    b = mask_batch(MicroBatch(valid=events(["z"], users=["u-1"])), m).valid
    assert a["user_id"][0] == b["user_id"][0]
    assert a["user_id"][1] is None


def test_rejected_text_and_reasons_masked() -> None:
    rejected = pl.DataFrame(
        {"text": [f"bad {RAW['email']}", None], "stage": ["validation", "decode"], "reason_codes": [["x"], ["y"]], "reasons": [[f"text has {RAW['card']}"], []]},
    ).with_columns([pl.lit(None, t).alias(c) for c, t in REJECT_SCHEMA.items() if c not in ("text", "stage", "reason_codes", "reasons")]).select(list(REJECT_SCHEMA))
    out = mask_batch(MicroBatch(valid=events([]), rejected=rejected.cast(REJECT_SCHEMA)), masker())
    assert out.rejected["text"][0].startswith("bad <EMAIL:") and out.rejected["text"][1] is None
    assert RAW["card"] not in str(out.rejected["reasons"].to_list())
    assert out.rejected.schema == pl.Schema(REJECT_SCHEMA)


def test_drop_strategy_refuses_record_without_raw_values() -> None:
    out = mask_batch(MicroBatch(valid=events([f"ssn {RAW['ssn']}", "fine"])), masker(strategies={"US_SSN": "drop"}))
    assert out.valid["event_id"].to_list() == ["e1"]
    r = out.rejected
    assert r["stage"].to_list() == ["privacy"]
    assert r["reason_codes"][0].to_list() == ["pii_drop:US_SSN"]
    assert RAW["ssn"] not in str(r.to_dicts())
    assert r["text"][0] == "ssn <US_SSN>"


def test_dlp_rules_block_warn_route_local_and_mask() -> None:
    rules = [
        {"name": "no_ssn", "pattern": r"\b\d{3}-\d{2}-\d{4}\b", "action": "block", "severity": "critical"},
        {"name": "medical", "keywords": ["diagnosis", "medical record"], "action": "route_local", "severity": "high"},
        {"name": "secret_word", "keywords": ["project falcon"], "action": "warn", "severity": "low"},
        {"name": "ticket_ref", "pattern": r"\bTCK-\d{4}\b", "action": "mask", "severity": "low"},
    ]
    texts = [f"ssn {RAW['ssn']}", "my Diagnosis is fine", "about Project Falcon", "see TCK-1234", "diagnostics ok"]
    out = mask_batch(MicroBatch(valid=events(texts)), masker(dlp_rules=rules))
    v = out.valid.sort("event_id")
    assert out.rejected["reason_codes"][0].to_list() == ["dlp_block:no_ssn"]
    assert v["event_id"].to_list() == ["e1", "e2", "e3", "e4"]
    assert v["route_local"].to_list() == [True, False, False, False]
    assert v["classification"].to_list() == ["confidential", "internal", "internal", "internal"]
    assert v["dlp_rules"].to_list() == [["medical"], ["secret_word"], ["ticket_ref"], []]
    assert v["warnings"].to_list() == [[], ["dlp:secret_word"], [], []]
    assert v["text"][2] == "see <DLP:ticket_ref>"


def test_source_levels() -> None:
    out = mask_batch(MicroBatch(valid=events(["a", "b"], sources=["reviews", "tickets"])), masker(source_levels={"reviews": "public"}))
    assert out.valid["classification"].to_list() == ["public", "internal"]


def test_audit_has_every_event_and_no_values() -> None:
    texts = [f"mail {RAW['email']}", f"ssn {RAW['ssn']}", "plain"]
    out, audit = mask_batch_audited(MicroBatch(valid=events(texts)), masker(strategies={"US_SSN": "drop"}))
    assert audit.height == 3
    assert audit["outcome"].to_list() == ["passed", "refused", "passed"]
    assert audit["entity_types"].to_list() == [["EMAIL"], ["US_SSN"], []]
    assert audit["recognizers"].to_list() == [["email"], ["us_ssn"], []]
    assert audit["reason_codes"].to_list() == [[], ["pii_drop:US_SSN"], []]
    no_raw_values(audit)
    again = audit_frame(out, masker(strategies={"US_SSN": "drop"}))
    assert sorted(again["event_id"].to_list()) == ["e0", "e1", "e2"]
    assert again.filter(pl.col("outcome") == "refused")["entity_types"].to_list() == [["US_SSN"]]
    no_raw_values(again)


def test_mask_series_for_telemetry_prompts() -> None:
    m = masker()
    s = pl.Series("prompt", [f"Summarize: {RAW['email']} {RAW['key']}", None])
    out = m.mask_series(s)
    assert out.name == "prompt" and out[1] is None
    assert RAW["email"] not in out[0] and RAW["key"] not in out[0]


def test_dead_letter_payload_masking() -> None:
    m = masker()
    raw = pl.Series("raw", [f'{{"text": "{RAW["email"]}"}}'.encode(), b"\xff\xfe binary " + RAW["card"].encode(), None], dtype=pl.Binary)
    out = m.mask_payloads(raw).to_list()
    assert RAW["email"].encode() not in out[0] and out[0].startswith(b'{"text": "<EMAIL:')
    assert out[1].startswith(b"\xff\xfe binary <CREDIT_CARD:")
    assert out[2] is None


@pytest.mark.parametrize("size", [1, 257])
def test_row_order_kept(size: int) -> None:
    texts = [f"row {i} {RAW['email'] if i % 3 == 0 else 'x'}" for i in range(size)]
    out = mask_batch(MicroBatch(valid=events(texts)), masker()).valid
    assert out["event_id"].to_list() == [f"e{i}" for i in range(size)]
    assert [t.split(" ")[1] for t in out["text"].to_list()] == [str(i) for i in range(size)]


def test_sliced_list_columns_are_masked() -> None:
    """Row slices of a batch (offsets into a parent buffer, with nulls) mask like whole ones."""
    from driftline.operators.pii.operator import _mask_attributes, _mask_list_of_strings

    masker = PiiMasker.from_config(PrivacyConfig(), key=b"0123456789abcdef")
    attrs = pl.Series(
        "attributes",
        [[{"key": "a", "value": "x@example.com"}], None, [{"key": "b", "value": "ok"}], [], [{"key": "c", "value": "mail y@example.org"}]],
        dtype=pl.List(pl.Struct({"key": pl.Utf8, "value": pl.Utf8})),
    )
    got = _mask_attributes(masker, attrs.slice(1, 4)).to_list()
    assert got[0] is None and got[1] == [{"key": "b", "value": "ok"}] and got[2] == []
    assert got[3][0]["value"].startswith("mail <EMAIL:")
    reasons = pl.Series("reasons", [["a@b.co"], None, ["mail x@example.com"], []], dtype=pl.List(pl.Utf8))
    got_reasons = _mask_list_of_strings(masker, reasons.slice(1, 3)).to_list()
    assert got_reasons[0] is None and got_reasons[2] == [] and got_reasons[1][0].startswith("mail <EMAIL:")


def test_repeated_strings_scan_like_each_alone() -> None:
    """A scan reads each distinct string once; every row still gets its own string's result,
    nulls included, and DLP rules only on the first ``rule_rows`` rows even when a later row
    repeats one of them."""
    rules = [{"name": "medical", "keywords": ["diagnosis"], "action": "route_local", "severity": "high"}]
    m = masker(dlp_rules=rules)
    texts = [f"mail {RAW['email']}", None, "my diagnosis", f"card {RAW['card']} {RAW['phone']}", "ok", None, f"mail {RAW['email']}", "my diagnosis", "ok"]
    k = 5
    scan = m.scan(pl.Series(texts, dtype=pl.Utf8), rule_rows=k)
    for i, text in enumerate(texts):
        alone = m.scan(pl.Series([text], dtype=pl.Utf8), rule_rows=1 if i < k else 0)
        assert scan.masked[i] == alone.masked[0]
        assert scan.findings[i].to_list() == alone.findings[0].to_list()
        assert {e: int(c[i]) for e, c in scan.counts.items()} == {e: int(c[0]) for e, c in alone.counts.items()}
        assert scan.rules["medical"][i] == alone.rules["medical"][0]
    assert scan.rules["medical"].to_list() == [False, False, True, False, False, False, False, False, False]
    assert scan.masked[0] == scan.masked[6] != texts[0]
    assert scan.masked[1] is None and scan.findings[1].to_list() == []
