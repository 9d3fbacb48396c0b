from __future__ import annotations

import polars as pl
import pytest

from driftline.config import ConfigError, load_config
from driftline.config.validation import ValidationConfig
from driftline.operators.validation import RuleError, ValidationSetupError, Validator, compile_rule
from driftline.operators.validation.rules import attribute_column


def _eval(expr: str, rows: dict[str, list[object]]) -> list[bool]:
    rule = compile_rule(expr)
    frame = pl.DataFrame({(attribute_column(k[11:]) if k.startswith("attributes.") else k): v for k, v in rows.items()}, schema_overrides={})
    return frame.select(rule.expr.alias("hit"))["hit"].to_list()


@pytest.mark.parametrize(
    ("expr", "rows", "expected"),
    [
        ("attributes.price > 20", {"attributes.price": ["25", "20", "abc", None, "1e2"]}, [True, False, False, False, True]),
        ("attributes['price-eur'] <= 3", {"attributes.price-eur": ["3", "4"]}, [True, False]),
        ("attributes.level == 'cheap'", {"attributes.level": ["cheap", "Cheap", None]}, [True, False, False]),
        ("attributes.level != 'cheap'", {"attributes.level": ["cheap", "dear", None]}, [False, True, False]),
        ("lower(attributes.level) == 'cheap'", {"attributes.level": ["CHEAP", None]}, [True, False]),
        ("attributes.rating == 5", {"attributes.rating": ["5", "5.0", "05", "five"]}, [True, True, True, False]),
        ("1 <= attributes.rating < 3", {"attributes.rating": ["0", "1", "2.5", "3"]}, [False, True, True, False]),
        ("attributes.a > attributes.b", {"attributes.a": ["10", "2", None], "attributes.b": ["9", "3", "1"]}, [True, False, False]),
        ("attributes.a == attributes.b", {"attributes.a": ["x", "y"], "attributes.b": ["x", "z"]}, [True, False]),
        ("source in ['chat', 'reviews']", {"source": ["chat", "web", None]}, [True, False, False]),
        ("source not in ('chat',)", {"source": ["chat", "web", None]}, [False, True, False]),
        ("attributes.stars in [1, 2]", {"attributes.stars": ["1", "3", "x", None]}, [True, False, False, False]),
        ("attributes.stars not in [1, 2]", {"attributes.stars": ["1", "3", "x", None]}, [False, True, False, False]),
        ("tenant is None", {"tenant": ["a", None]}, [False, True]),
        ("attributes.x is not None", {"attributes.x": ["a", None]}, [True, False]),
        ("not attributes.price > 20", {"attributes.price": ["25", "5", None]}, [False, True, False]),
        ("attributes.price > 20 or source == 'chat'", {"attributes.price": [None, "1"], "source": ["chat", "web"]}, [True, False]),
        ("len(text) > 3 and contains(text, 'refund')", {"text": ["refund now", "ref", "no"]}, [True, False, False]),
        ("startswith(source, 'sup') and not endswith(source, 'x')", {"source": ["support", "supx", "chat"]}, [True, False, False]),
        ("attributes.price * 2 - 1 > 9 / 3", {"attributes.price": ["2", "2.5", "1"]}, [False, True, False]),
        ("-attributes.delta > 0", {"attributes.delta": ["-1", "1"]}, [True, False]),
        ("number(attributes.n) >= 0", {"attributes.n": ["0", "-1"]}, [True, False]),
        ("(source == 'a') == (tenant == 'b')", {"source": ["a", "a"], "tenant": ["b", "c"]}, [True, False]),
    ],
)
def test_rule_semantics(expr, rows, expected):
    assert _eval(expr, rows) == expected


def test_rule_lists_the_attributes_it_reads():
    assert compile_rule("attributes.a > 1 or attributes['b c'] == 'x'").attributes == frozenset({"a", "b c"})


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("attributes.price >", "syntax error"),
        ("rating > 3", "unknown field 'rating'"),
        ("attributes.price", "must be a condition"),
        ("__import__('os').system('x')", "method calls are not supported"),
        ("__import__('os') == 1", "unknown function '__import__'"),
        ("text.upper() == 'X'", "method calls are not supported"),
        ("text.size > 1", "only attributes.<key> may use a dot"),
        ("open('f')", "unknown function 'open'"),
        ("len(text, text) > 1", "takes 1 positional argument"),
        ("source > 'a'", "ordering comparisons"),
        ("source > 3", "needs a number or an attribute"),
        ("source == None", "is None"),
        ("attributes.a is 3", "only compare with None"),
        ("source in ['a', 1]", "only strings or only numbers"),
        ("source in other", "non-empty list of constants"),
        ("source in []", "non-empty list of constants"),
        ("[x for x in text]", "unsupported syntax ListComp"),
        ("lambda: True", "unsupported syntax Lambda"),
        ("attributes[0] == 'a'", "needs a string key"),
        ("attributes == 'a'", "use attributes.<key>"),
        ("source ** 2 > 1", "unsupported operator Pow"),
        ("True and 'x'", "and/or needs a condition"),
        ("event_time > 0", "unknown field 'event_time'"),
    ],
)
def test_bad_rules_fail_with_a_clear_message(expr, message):
    with pytest.raises(RuleError, match=message):
        compile_rule(expr)


def test_bad_rule_fails_at_config_load_naming_the_key():
    with pytest.raises(ConfigError) as info:
        load_config(None, env={}, overrides={"validation": {"business_rules": [
            {"name": "ok_rule", "expr": "attributes.a > 1"},
            {"name": "bad_rule", "expr": "attributes.a >> 1"},
        ]}})
    text = str(info.value)
    assert "validation.business_rules[1].expr" in text
    assert "unsupported operator RShift" in text


@pytest.mark.parametrize(
    ("section", "fragment"),
    [
        ({"business_rules": [{"name": "Bad Name", "expr": "source == 'a'"}]}, "business_rules[0].name"),
        ({"business_rules": [{"name": "a", "expr": "source == 'a'", "severity": "fatal"}]}, "business_rules[0].severity"),
        ({"business_rules": [{"name": "a", "expr": "source == 'a'"}, {"name": "a", "expr": "source == 'b'"}]}, "used twice"),
        ({"quality": {"rating": {"min": 1}}}, "unknown field 'rating'"),
        ({"quality": {"source": {"regex": "(unclosed"}}}, "validation.quality.source.regex"),
        ({"quality": {"attributes.r": {"min": 5, "max": 1}}}, "min (5.0) is greater than max (1.0)"),
        ({"quality": {"source": {"max_null_share": 1.5}}}, "validation.quality.source.max_null_share"),
        ({"max_text_bytes": 0}, "validation.max_text_bytes"),
        ({"no_such_key": 1}, "validation.no_such_key"),
    ],
)
def test_config_errors_name_the_bad_key(section, fragment):
    with pytest.raises(ConfigError, match=None) as info:
        load_config(None, env={}, overrides={"validation": section})
    assert fragment in str(info.value)


def test_env_override_and_yaml_rules(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        "validation:\n"
        "  business_rules:\n"
        "    - name: cheap_but_expensive\n"
        "      expr: \"attributes.price_level == 'cheap' and attributes.price > 20\"\n"
        "      severity: error\n"
    )
    cfg = load_config(path, env={"DRIFTLINE__VALIDATION__MAX_TEXT_BYTES": "1024"})
    assert cfg.validation.max_text_bytes == 1024
    v = Validator.from_config(cfg.validation)
    assert v.attributes == ("price", "price_level")
    assert [r.code for r in v.business] == ["business.cheap_but_expensive"]


def test_validator_rejects_a_config_built_without_validation():
    cfg = ValidationConfig.model_construct(business_rules=[], quality={"nope": ValidationConfig().quality["source"]}, dataset="d")
    with pytest.raises(ValidationSetupError, match=r"validation.quality.nope: unknown field 'nope'"):
        Validator.from_config(cfg)
