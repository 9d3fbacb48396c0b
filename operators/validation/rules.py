"""Safe compiler from business-rule expressions to vectorized Polars expressions.

A rule is a condition written in a small subset of Python.  It is parsed with
:mod:`ast`, checked node by node against a whitelist and translated into one Polars
expression evaluated over a whole micro-batch; nothing is ever ``eval``-ed.

Values:

- top-level fields ``event_id``, ``source``, ``tenant``, ``user_id``, ``text`` (strings);
- attributes ``attributes.price`` or ``attributes['price-eur']`` (strings that become
  numbers when compared with a number or used in arithmetic; a value that is not a
  number then counts as missing);
- constants: strings, numbers, ``True``/``False``, ``None`` (only in ``is None``).

A comparison with a missing value is null, and a rule whose result is null does not
match (SQL-style three-valued logic, then null → false).

>>> import polars as pl

>>> rule = compile_rule("attributes.price_level == 'cheap' and attributes.price > 20")
>>> sorted(rule.attributes)
['price', 'price_level']
>>> df = pl.DataFrame({attribute_column("price_level"): ["cheap", "cheap", None], attribute_column("price"): ["25", "x", "30"]})
>>> df.select(rule.expr.alias("hit"))["hit"].to_list()
[True, False, False]

Extending: a new function is one entry in :data:`FUNCTIONS`.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import polars as pl

from driftline.operators.batch import EVENT_FIELDS_SCHEMA
from driftline.operators.batch import attribute_value as event_attribute
__all__ = [
    "FUNCTIONS",
    "RULE_FIELDS",
    "CompiledRule",
    "FieldRef",
    "RuleError",
    "attribute_column",
    "attribute_value",
    "compile_rule",
    "parse_field_ref",
]

#: Top-level event fields a rule or a quality check may name (all strings).
RULE_FIELDS: tuple[str, ...] = tuple(name for name, dtype in EVENT_FIELDS_SCHEMA.items() if dtype == pl.Utf8)
ATTRIBUTE_PREFIX = "__attr__"

Kind = Literal["str", "attr", "num", "bool", "none"]


class RuleError(ValueError):
    """A rule expression or field name is invalid; the message says what and where."""


def attribute_column(key: str) -> str:
    """Name of the temporary column holding attribute ``key`` while a batch is validated."""
    return f"{ATTRIBUTE_PREFIX}{key}"


def attribute_value(key: str) -> pl.Expr:
    """Expression extracting the value of attribute ``key`` (null when absent) from ``attributes``."""
    return event_attribute(key).alias(attribute_column(key))


@dataclass(frozen=True, slots=True)
class FieldRef:
    """A field named in a rule or quality check: a top-level column or an attribute key."""

    name: str
    attribute: bool

    @property
    def column(self) -> str:
        return attribute_column(self.name) if self.attribute else self.name

    @property
    def label(self) -> str:
        return f"attributes.{self.name}" if self.attribute else self.name


def parse_field_ref(text: str) -> FieldRef:
    """Parse ``source`` or ``attributes.<key>`` (as used for quality-check keys).

    >>> parse_field_ref("attributes.rating")
    FieldRef(name='rating', attribute=True)
    """
    if text.startswith("attributes."):
        key = text[len("attributes.") :]
        if not key:
            raise RuleError(f"field {text!r}: the attribute key is empty")
        return FieldRef(key, True)
    if text in RULE_FIELDS:
        return FieldRef(text, False)
    raise RuleError(f"unknown field {text!r}; known: {', '.join(RULE_FIELDS)} or attributes.<key>")


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A compiled rule: ``expr`` is true where a row matches (never null)."""

    source: str
    expr: pl.Expr
    attributes: frozenset[str]


@dataclass(frozen=True, slots=True)
class _Val:
    expr: pl.Expr
    kind: Kind


def _as_num(v: _Val, node: ast.AST, what: str) -> pl.Expr:
    if v.kind == "num":
        return v.expr
    if v.kind == "attr":
        return v.expr.cast(pl.Float64, strict=False)
    raise RuleError(f"{what} needs a number or an attribute{_where(node)}, got a {_KIND_NAMES[v.kind]}")


def _as_str(v: _Val, node: ast.AST, what: str) -> pl.Expr:
    if v.kind in ("str", "attr"):
        return v.expr
    raise RuleError(f"{what} needs a string field or an attribute{_where(node)}, got a {_KIND_NAMES[v.kind]}")


_KIND_NAMES = {"str": "string", "attr": "attribute", "num": "number", "bool": "condition", "none": "None"}


def _where(node: ast.AST) -> str:
    col = getattr(node, "col_offset", None)
    return f" (at column {col + 1})" if col is not None else ""


@dataclass(frozen=True, slots=True)
class Function:
    """A function callable from rules: argument kinds and a builder over Polars expressions."""

    args: tuple[Literal["str", "num"], ...]
    result: Kind
    build: Callable[..., pl.Expr]


#: Functions rules may call; register a new one by adding an entry.
FUNCTIONS: dict[str, Function] = {
    "len": Function(("str",), "num", lambda s: s.str.len_chars().cast(pl.Float64)),
    "lower": Function(("str",), "str", lambda s: s.str.to_lowercase()),
    "upper": Function(("str",), "str", lambda s: s.str.to_uppercase()),
    "strip": Function(("str",), "str", lambda s: s.str.strip_chars()),
    "number": Function(("num",), "num", lambda n: n),
    "contains": Function(("str", "str"), "bool", lambda s, sub: s.str.contains(sub, literal=True)),
    "startswith": Function(("str", "str"), "bool", lambda s, p: s.str.starts_with(p)),
    "endswith": Function(("str", "str"), "bool", lambda s, p: s.str.ends_with(p)),
}

_CMP_OPS: dict[type[ast.cmpop], Callable[[pl.Expr, pl.Expr], pl.Expr]] = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
}
_ARITH_OPS: dict[type[ast.operator], Callable[[pl.Expr, pl.Expr], pl.Expr]] = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}


class _Compiler:
    def __init__(self, fields: Mapping[str, Kind] | None = None, namespace: str = "attributes") -> None:
        self.attributes: set[str] = set()
        self.fields: Mapping[str, Kind] = fields if fields is not None else dict.fromkeys(RULE_FIELDS, "str")
        self.namespace = namespace

    def _known(self) -> str:
        return f"{', '.join(self.fields)} or {self.namespace}.<key>"

    def value(self, node: ast.AST) -> _Val:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise RuleError(f"unsupported syntax {type(node).__name__}{_where(node)}")
        return method(node)

    def _Constant(self, node: ast.Constant) -> _Val:
        v = node.value
        if v is None:
            return _Val(pl.lit(None), "none")
        if isinstance(v, bool):
            return _Val(pl.lit(v), "bool")
        if isinstance(v, (int, float)):
            return _Val(pl.lit(float(v), pl.Float64), "num")
        if isinstance(v, str):
            return _Val(pl.lit(v, pl.Utf8), "str")
        raise RuleError(f"unsupported constant {v!r}{_where(node)}")

    def _attr(self, key: str) -> _Val:
        if not key:
            raise RuleError("the attribute key is empty")
        self.attributes.add(key)
        return _Val(pl.col(attribute_column(key)), "attr")

    def _Name(self, node: ast.Name) -> _Val:
        kind = self.fields.get(node.id)
        if kind is not None:
            return _Val(pl.col(node.id), kind)
        ns = self.namespace
        if node.id == ns:
            raise RuleError(f"use {ns}.<key> or {ns}['<key>']{_where(node)}")
        raise RuleError(f"unknown field {node.id!r}{_where(node)}; known: {self._known()}")

    def _Attribute(self, node: ast.Attribute) -> _Val:
        if isinstance(node.value, ast.Name) and node.value.id == self.namespace:
            return self._attr(node.attr)
        raise RuleError(f"only {self.namespace}.<key> may use a dot{_where(node)}")

    def _Subscript(self, node: ast.Subscript) -> _Val:
        ns = self.namespace
        if isinstance(node.value, ast.Name) and node.value.id == ns:
            if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                return self._attr(node.slice.value)
            raise RuleError(f"{ns}[...] needs a string key{_where(node)}")
        raise RuleError(f"only {ns}['<key>'] may be subscripted{_where(node)}")

    def _BoolOp(self, node: ast.BoolOp) -> _Val:
        parts = [self._condition(v, "and/or") for v in node.values]
        out = parts[0]
        for p in parts[1:]:
            out = (out & p) if isinstance(node.op, ast.And) else (out | p)
        return _Val(out, "bool")

    def _condition(self, node: ast.AST, what: str) -> pl.Expr:
        v = self.value(node)
        if v.kind != "bool":
            raise RuleError(f"{what} needs a condition{_where(node)}, got a {_KIND_NAMES[v.kind]}")
        return v.expr

    def _UnaryOp(self, node: ast.UnaryOp) -> _Val:
        if isinstance(node.op, ast.Not):
            return _Val(~self._condition(node.operand, "not"), "bool")
        if isinstance(node.op, ast.USub):
            return _Val(-_as_num(self.value(node.operand), node, "unary minus"), "num")
        raise RuleError(f"unsupported operator {type(node.op).__name__}{_where(node)}")

    def _BinOp(self, node: ast.BinOp) -> _Val:
        op = _ARITH_OPS.get(type(node.op))
        if op is None:
            raise RuleError(f"unsupported operator {type(node.op).__name__}{_where(node)}")
        left = _as_num(self.value(node.left), node.left, "arithmetic")
        right = _as_num(self.value(node.right), node.right, "arithmetic")
        return _Val(op(left, right), "num")

    def _Call(self, node: ast.Call) -> _Val:
        if not isinstance(node.func, ast.Name):
            raise RuleError(f"method calls are not supported{_where(node)}; call a function such as lower(x); known: {', '.join(FUNCTIONS)}")
        if node.func.id not in FUNCTIONS:
            raise RuleError(f"unknown function {node.func.id!r}{_where(node)}; known: {', '.join(FUNCTIONS)}")
        fn = FUNCTIONS[node.func.id]
        if node.keywords or len(node.args) != len(fn.args):
            raise RuleError(f"{node.func.id}() takes {len(fn.args)} positional argument(s){_where(node)}")
        args = []
        for arg_node, want in zip(node.args, fn.args):
            v = self.value(arg_node)
            args.append(_as_num(v, arg_node, f"{node.func.id}()") if want == "num" else _as_str(v, arg_node, f"{node.func.id}()"))
        return _Val(fn.build(*args), fn.result)

    def _Compare(self, node: ast.Compare) -> _Val:
        parts: list[pl.Expr] = []
        left_node = node.left
        left = self.value(left_node)
        for op, right_node in zip(node.ops, node.comparators):
            if isinstance(op, (ast.In, ast.NotIn)):
                parts.append(self._membership(left, left_node, op, right_node))
                right = None
            else:
                right = self.value(right_node)
                parts.append(self._compare_pair(left, left_node, op, right, right_node))
            if right is None:
                break  # `in` ends a chain (a list is not a value)
            left, left_node = right, right_node
        out = parts[0]
        for p in parts[1:]:
            out = out & p
        return _Val(out, "bool")

    def _compare_pair(self, left: _Val, ln: ast.AST, op: ast.cmpop, right: _Val, rn: ast.AST) -> pl.Expr:
        if isinstance(op, (ast.Is, ast.IsNot)):
            if right.kind != "none":
                raise RuleError(f"'is' / 'is not' only compare with None{_where(rn)}")
            if left.kind not in ("str", "attr", "num"):
                raise RuleError(f"'is None' needs a field or an attribute{_where(ln)}")
            return left.expr.is_null() if isinstance(op, ast.Is) else left.expr.is_not_null()
        fn = _CMP_OPS.get(type(op))
        if fn is None:
            raise RuleError(f"unsupported comparison {type(op).__name__}{_where(rn)}")
        if "none" in (left.kind, right.kind):
            raise RuleError(f"compare with None using 'is None' / 'is not None'{_where(rn)}")
        if "bool" in (left.kind, right.kind):
            if left.kind != right.kind or not isinstance(op, (ast.Eq, ast.NotEq)):
                raise RuleError(f"conditions can only be compared with == or != to another condition{_where(rn)}")
            return fn(left.expr, right.expr)
        ordering = not isinstance(op, (ast.Eq, ast.NotEq))
        numeric = "num" in (left.kind, right.kind) or (ordering and left.kind == right.kind == "attr")
        if numeric:
            return fn(_as_num(left, ln, "a numeric comparison"), _as_num(right, rn, "a numeric comparison"))
        if ordering:
            raise RuleError(f"ordering comparisons (<, <=, >, >=) need numbers{_where(rn)}")
        return fn(_as_str(left, ln, "a comparison"), _as_str(right, rn, "a comparison"))

    def _membership(self, left: _Val, ln: ast.AST, op: ast.cmpop, rn: ast.AST) -> pl.Expr:
        if not isinstance(rn, (ast.List, ast.Tuple, ast.Set)) or not rn.elts:
            raise RuleError(f"'in' needs a non-empty list of constants{_where(rn)}")
        values = []
        for elt in rn.elts:
            if not isinstance(elt, ast.Constant) or isinstance(elt.value, bool) or not isinstance(elt.value, (str, int, float)):
                raise RuleError(f"'in' lists may only hold string or number constants{_where(elt)}")
            values.append(elt.value)
        if all(isinstance(v, str) for v in values):
            expr = _as_str(left, ln, "'in' with strings").is_in(pl.lit(pl.Series(values, dtype=pl.Utf8)).implode())
        elif all(isinstance(v, (int, float)) for v in values):
            nums = pl.Series([float(v) for v in values], dtype=pl.Float64)
            expr = _as_num(left, ln, "'in' with numbers").is_in(pl.lit(nums).implode())
        else:
            raise RuleError(f"'in' lists must hold only strings or only numbers{_where(rn)}")
        # is_in returns false (not null) for a null left side; keep "missing → not matched" for both forms.
        base = left.expr if left.kind != "attr" or all(isinstance(v, str) for v in values) else _as_num(left, ln, "'in'")
        expr = pl.when(base.is_null()).then(pl.lit(None, pl.Boolean)).otherwise(expr)
        return ~expr if isinstance(op, ast.NotIn) else expr


def compile_rule(source: str, *, fields: Mapping[str, Kind] | None = None, namespace: str = "attributes") -> CompiledRule:
    """Compile a rule expression; raises :class:`RuleError` on any syntax or typing problem.

    ``fields`` (name -> ``"str"`` or ``"num"``) and ``namespace`` replace the event's
    fields and ``attributes`` for rules over other records (the output guardrails use
    ``label``, ``confidence``... and ``output.<key>``); the columns of ``namespace.<key>``
    are named by :func:`attribute_column`.

    >>> r = compile_rule("confidence < 0.5 and output.amount > 100", fields={"confidence": "num"}, namespace="output")
    >>> sorted(r.attributes)
    ['amount']
    """
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        raise RuleError(f"syntax error at column {exc.offset or 0}: {exc.msg}") from None
    compiler = _Compiler(fields, namespace)
    value = compiler.value(tree.body)
    if value.kind != "bool":
        raise RuleError(f"the expression must be a condition (true/false), got a {_KIND_NAMES[value.kind]}")
    return CompiledRule(source, value.expr.fill_null(False), frozenset(compiler.attributes))
