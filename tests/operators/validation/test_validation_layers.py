from __future__ import annotations

from datetime import timedelta

import polars as pl
import pytest
from prometheus_client import REGISTRY

from driftline.config.validation import ValidationConfig
from driftline.operators.batch import REJECT_SCHEMA, MicroBatch
from driftline.operators.validation import Validator, validate_batch, validate_records_one_by_one

ENGINES = ["polars", "pandera"]


def _validator(engine: str = "polars", **cfg: object) -> Validator:
    return Validator.from_config(ValidationConfig.model_validate(cfg), engine=engine)  # type: ignore[arg-type]


def _refusals(batch: MicroBatch) -> dict[str, tuple[str, list[str]]]:
    return {r["event_id"] or f"@{r['src_offset']}": (r["stage"], r["reason_codes"]) for r in batch.rejected.iter_rows(named=True)}


# ---------------------------------------------------------------- schema layer


@pytest.mark.parametrize("engine", ENGINES)
def test_schema_layer_refuses_each_kind(engine, make_batch, event, now):
    items = [
        event(0),
        event(1, text=...),  # missing required field
        event(2, event_time="yesterday-ish"),  # unparseable time
        event(3, source=42),  # wrong type
        event(4, event_id="   "),  # empty id
        event(5, text=" \n\t "),  # whitespace-only text
        event(6, text="é" * 20_000),  # 40,000 bytes > 32 KiB
        event(7, event_time=int((now + timedelta(seconds=301)).timestamp() * 1000)),  # too far ahead
        event(8, event_time=int((now + timedelta(seconds=299)).timestamp() * 1000)),  # within skew
        event(9, attributes=["not", "a", "map"]),
        event(10, event_time="2026-01-01T11:00:00Z"),  # ISO time is fine
    ]
    out = validate_batch(make_batch(items), _validator(engine), now)
    assert sorted(out.valid["event_id"].to_list()) == ["e0", "e10", "e8"]
    got = _refusals(out)
    assert got["e1"] == ("schema", ["schema.missing_field.text"])
    assert got["e2"] == ("schema", ["schema.wrong_type.event_time"])
    assert got["e3"] == ("schema", ["schema.wrong_type.source"])
    assert got["   "] == ("schema", ["schema.event_id_nonempty"])
    assert got["e5"] == ("schema", ["schema.text_nonempty"])
    assert got["e6"] == ("schema", ["schema.text_too_large"])
    assert got["e7"] == ("schema", ["schema.event_time_future"])
    assert got["e9"] == ("schema", ["schema.wrong_type.attributes"])
    reasons = dict(zip(out.rejected["event_id"].to_list(), out.rejected["reasons"].to_list()))
    assert reasons["e1"] == ["required field text is missing"]
    assert reasons["e7"] == ["event_time is more than 300 s after the processing time"]
    assert out.rejected.schema == pl.Schema(REJECT_SCHEMA)


@pytest.mark.parametrize("engine", ENGINES)
def test_schema_reports_every_failed_check_of_a_record(engine, make_batch, event, now):
    out = validate_batch(make_batch([event(0, event_id="", text="", source=...)]), _validator(engine), now)
    assert out.rejected["reason_codes"].to_list() == [["schema.missing_field.source", "schema.event_id_nonempty", "schema.text_nonempty"]]


@pytest.mark.parametrize("engine", ENGINES)
def test_duplicate_event_id_refuses_later_copies(engine, make_batch, event, now):
    items = [event(0), event(1, event_id="e0"), event(2, event_id="e0", text=""), event(3)]
    out = validate_batch(make_batch(items), _validator(engine), now)
    assert out.valid["src_offset"].to_list() == [0, 3]
    rej = {r["src_offset"]: r["reason_codes"] for r in out.rejected.iter_rows(named=True)}
    assert rej == {1: ["schema.event_id_unique"], 2: ["schema.text_nonempty"]}


def test_first_valid_copy_wins_when_the_first_is_refused(make_batch, event, now):
    out = validate_batch(make_batch([event(0, text=""), event(0)]), _validator(), now)
    assert out.valid["src_offset"].to_list() == [1]
    assert out.rejected["reason_codes"].to_list() == [["schema.text_nonempty"]]


def test_text_limit_and_skew_are_configurable(make_batch, event, now):
    v = _validator(max_text_bytes=10, max_future_skew_seconds=0)
    items = [event(0, text="0123456789"), event(1, text="0123456789x"), event(2, text="short", event_time=int(now.timestamp() * 1000) + 1)]
    out = validate_batch(make_batch(items), v, now)
    assert out.valid["event_id"].to_list() == ["e0"]
    assert _refusals(out) == {"e1": ("schema", ["schema.text_too_large"]), "e2": ("schema", ["schema.event_time_future"])}


def test_decode_refusals_pass_through_untouched(make_batch, event, now):
    batch = make_batch([b"not json", event(1)])
    out = validate_batch(batch, _validator(), now)
    assert out.rejected.select("stage", "reason_codes").rows() == [("decode", ["bad_json"])]
    assert out.valid["event_id"].to_list() == ["e1"]


def test_structure_mismatch_names_the_step(make_batch, event, now):
    batch = make_batch([event(0)])
    broken = MicroBatch(valid=batch.valid.with_columns(pl.col("src_offset").cast(pl.Utf8)), now=now)
    with pytest.raises(TypeError, match=r"step 'validate_events'.*src_offset"):
        validate_batch(broken, _validator(), now, step_id="validate_events")
    with pytest.raises(TypeError, match="expected a MicroBatch, received list"):
        validate_batch([], _validator(), now)  # type: ignore[arg-type]


# ---------------------------------------------------------------- quality layer


def test_quality_checks_refuse_or_warn(make_batch, event, now):
    v = _validator(
        quality={
            "source": {"allowed_values": ["reviews", "support-desk"]},
            "attributes.rating": {"min": 1, "max": 5},
            "tenant": {"regex": "^[a-z]+$", "severity": "warn"},
            "user_id": {"max_length": 4},
        }
    )
    items = [
        event(0),
        event(1, source="chat"),
        event(2, attributes={"rating": "7"}),
        event(3, attributes={"rating": "great"}),
        event(4, attributes={"rating": 4}),
        event(5, tenant="Acme Corp"),
        event(6, user_id="u-123456"),
        event(7, tenant=...),  # null is not judged by per-record checks
    ]
    out = validate_batch(make_batch(items), v, now)
    assert out.valid["event_id"].to_list() == ["e0", "e4", "e5", "e7"]
    assert dict(zip(out.valid["event_id"], out.valid["warnings"].to_list()))["e5"] == ["quality.tenant.regex"]
    assert _refusals(out) == {
        "e1": ("quality", ["quality.source.allowed_values"]),
        "e2": ("quality", ["quality.attributes.rating.range"]),
        "e3": ("quality", ["quality.attributes.rating.range"]),
        "e6": ("quality", ["quality.user_id.max_length"]),
    }
    msgs = dict(zip(out.rejected["event_id"], out.rejected["reasons"].to_list()))
    assert msgs["e2"] == ["attributes.rating is not a number in [1, 5]"]
    assert msgs["e1"] == ["source is not one of the allowed values (reviews, support-desk)"]
    # The temporary attribute columns never leak out.
    assert not [c for c in out.valid.columns if c.startswith("__attr__")]


def test_schema_failure_stops_a_record_before_quality(make_batch, event, now):
    v = _validator(quality={"source": {"allowed_values": ["reviews"]}})
    out = validate_batch(make_batch([event(0, source="chat", text="")]), v, now)
    assert out.rejected.select("stage", "reason_codes").rows() == [("schema", ["schema.text_nonempty"])]


def test_batch_null_share_breach_raises_metric_and_still_judges_records(make_batch, event, now, caplog):
    v = _validator(dataset="nulls_test", min_rows_for_null_share=5, quality={"tenant": {"max_null_share": 0.3}, "source": {"max_null_share": 0.3}})
    items = [event(i, tenant=... if i < 4 else "acme", source=... if i == 0 else "reviews") for i in range(10)]  # 40% tenant null
    before = REGISTRY.get_sample_value("driftline_validation_batch_breaches_total", {"dataset": "nulls_test", "rule": "quality.tenant.max_null_share"}) or 0.0
    with caplog.at_level("WARNING", logger="driftline.validation"):
        out = validate_batch(make_batch(items), v, now)
    after = REGISTRY.get_sample_value("driftline_validation_batch_breaches_total", {"dataset": "nulls_test", "rule": "quality.tenant.max_null_share"})
    assert after == before + 1
    assert REGISTRY.get_sample_value("driftline_validation_batch_breaches_total", {"dataset": "nulls_test", "rule": "quality.source.max_null_share"}) is None
    assert out.valid.height == 9  # only the record without source is refused, by the schema layer
    assert any(getattr(r, "fields", {}).get("rule") == "quality.tenant.max_null_share" for r in caplog.records)


def test_small_batches_are_not_judged_on_null_share(make_batch, event, now):
    v = _validator(dataset="small_batch", quality={"tenant": {"max_null_share": 0.1}}, min_rows_for_null_share=5)
    validate_batch(make_batch([event(0, tenant=...)]), v, now)
    assert REGISTRY.get_sample_value("driftline_validation_batch_breaches_total", {"dataset": "small_batch", "rule": "quality.tenant.max_null_share"}) is None


# ---------------------------------------------------------------- business layer

RULES = [
    {"name": "rating_mismatch", "expr": "attributes.rating == 5 and attributes.service_rating < 3", "severity": "warn", "message": "rating 5 but service rating under 3"},
    {"name": "cheap_but_expensive", "expr": "attributes.price_level == 'cheap' and attributes.price > 20", "severity": "error"},
]


def test_business_rules_refuse_and_warn(make_batch, event, now):
    v = _validator(business_rules=RULES)
    items = [
        event(0, attributes={"rating": "5", "service_rating": "2"}),  # warn
        event(1, attributes={"price_level": "cheap", "price": "25.5"}),  # refuse
        event(2, attributes={"price_level": "cheap", "price": "12"}),
        event(3, attributes={"price_level": "cheap"}),  # missing price: not matched
        event(4, attributes={"price_level": "cheap", "price": "n/a", "rating": 5, "service_rating": 1}),  # warn only
        event(5),
    ]
    out = validate_batch(make_batch(items), v, now)
    assert _refusals(out) == {"e1": ("business", ["business.cheap_but_expensive"])}
    assert out.rejected["reasons"].to_list() == [["business rule cheap_but_expensive matched: attributes.price_level == 'cheap' and attributes.price > 20"]]
    warnings = dict(zip(out.valid["event_id"], out.valid["warnings"].to_list()))
    assert warnings == {"e0": ["business.rating_mismatch"], "e2": [], "e3": [], "e4": ["business.rating_mismatch"], "e5": []}


def test_warnings_accumulate_across_layers(make_batch, event, now):
    v = _validator(quality={"tenant": {"regex": "^x", "severity": "warn"}}, business_rules=[RULES[0]])
    out = validate_batch(make_batch([event(0, attributes={"rating": 5, "service_rating": 2})]), v, now)
    assert out.valid["warnings"].to_list() == [["quality.tenant.regex", "business.rating_mismatch"]]


def test_quality_failure_stops_a_record_before_business(make_batch, event, now):
    v = _validator(quality={"attributes.price": {"max": 100}}, business_rules=[RULES[1]])
    out = validate_batch(make_batch([event(0, attributes={"price_level": "cheap", "price": "500"})]), v, now)
    assert out.rejected.select("stage", "reason_codes").rows() == [("quality", ["quality.attributes.price.range"])]


def test_refusal_metrics_use_rule_labels(make_batch, event, now):
    v = _validator(dataset="metrics_test", business_rules=[RULES[1]])
    validate_batch(make_batch([event(0, text=""), event(1, attributes={"price_level": "cheap", "price": "30"}), event(2)]), v, now)
    get = REGISTRY.get_sample_value
    assert get("driftline_validation_refusals_total", {"dataset": "metrics_test", "stage": "schema", "rule": "schema.text_nonempty"}) == 1
    assert get("driftline_validation_refusals_total", {"dataset": "metrics_test", "stage": "business", "rule": "business.cheap_but_expensive"}) == 1
    assert get("driftline_validation_records_total", {"dataset": "metrics_test", "outcome": "valid"}) == 1
    assert get("driftline_validation_records_total", {"dataset": "metrics_test", "outcome": "refused"}) == 2


# ---------------------------------------------------------------- invariants


def test_every_row_is_accounted_for_and_engines_agree(make_batch, event, now):
    items = []
    for i in range(300):
        kind = i % 6
        if kind == 0:
            items.append(event(i, text=""))
        elif kind == 1:
            items.append(event(i, attributes={"price_level": "cheap", "price": str(i)}))
        elif kind == 2:
            items.append(b"\xff\xfe garbage")
        elif kind == 3:
            items.append(event(i, source="unknown-source"))
        else:
            items.append(event(i, attributes={"rating": "5", "service_rating": str(i % 5)}))
    cfg = {"business_rules": RULES, "quality": {"source": {"allowed_values": ["reviews"]}}}
    batch = make_batch(items)
    a = validate_batch(batch, _validator("polars", **cfg), now)
    b = validate_batch(batch, _validator("pandera", **cfg), now)
    assert a.valid.height + a.rejected.height == 300
    assert a.valid.equals(b.valid) and a.rejected.equals(b.rejected)
    one = validate_records_one_by_one(batch, _validator("polars", **cfg), now)
    assert one.valid.equals(a.valid)
    assert one.rejected.sort("src_offset").equals(a.rejected.sort("src_offset"))
    # Input order of valid rows is kept.
    assert a.valid["src_offset"].is_sorted()


def test_empty_batch_is_returned_unchanged(now):
    empty = MicroBatch(now=now)
    assert validate_batch(empty, _validator(), now) is empty
