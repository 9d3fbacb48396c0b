"""Prompt templates per task and validation of the JSON a model answers with.

Every task asks for one JSON object; :func:`parse_output` checks it and returns the
label, the confidence and the normalized JSON, or raises :class:`OutputError` whose
message is sent back to the model on the single corrective retry.

>>> spec = TaskSpec("sentiment", TaskConfig(kind="sentiment"))
>>> parse_output(spec, '{"label": "Positive", "confidence": 0.9}')
('positive', 0.9, '{"label":"positive","confidence":0.9}')
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fastjsonschema
import orjson

from driftline.config.models import TaskConfig

SENTIMENT_LABELS = ("positive", "neutral", "negative")

_SYSTEM: dict[str, str] = {
    "sentiment": (
        "You label the sentiment of a short text written by a customer. "
        'Answer with one JSON object only: {{"label": "positive" | "neutral" | "negative", "confidence": number between 0 and 1}}.'
    ),
    "classification": (
        "You classify a short text into exactly one of these categories: {categories}. "
        'Answer with one JSON object only: {{"label": one of the categories, "confidence": number between 0 and 1}}.'
    ),
    "summarization": (
        "You summarize a short text in one sentence of at most 30 words. "
        'Answer with one JSON object only: {{"summary": string, "confidence": number between 0 and 1}}.'
    ),
    "extraction": (
        "You extract structured data from a short text. "
        "Answer with one JSON object only, valid against this JSON schema: {schema}"
    ),
}

_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


class OutputError(ValueError):
    """The model's answer is not the JSON the task asks for."""


@dataclass(slots=True)
class TaskSpec:
    """A named task with its compiled validator."""

    name: str
    config: TaskConfig
    _validate: Callable[[Any], Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.config.json_schema is not None:
            self._validate = fastjsonschema.compile(self.config.json_schema)

    @property
    def kind(self) -> str:
        return self.config.kind

    def system_prompt(self) -> str:
        template = self.config.system_prompt or _SYSTEM[self.kind]
        return template.format(
            categories=", ".join(self.config.categories),
            schema=json.dumps(self.config.json_schema, sort_keys=True) if self.config.json_schema else "",
        )

    def messages(self, text: str) -> list[dict[str, str]]:
        """Chat messages for one input (the text is substituted, never re-parsed as a template)."""
        return [
            {"role": "system", "content": self.system_prompt()},
            {"role": "user", "content": self.config.user_prompt.replace("{text}", text)},
        ]


def _confidence(obj: dict[str, Any], required: bool) -> float | None:
    c = obj.get("confidence")
    if c is None:
        if required:
            raise OutputError('"confidence" is missing')
        return None
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0.0 <= float(c) <= 1.0:
        raise OutputError(f'"confidence" must be a number between 0 and 1, got {c!r}')
    return float(c)


def parse_output(spec: TaskSpec, content: str | None) -> tuple[str | None, float | None, str]:
    """Check a model's answer for ``spec``: returns ``(label, confidence, output_json)``."""
    if content is None or not content.strip():
        raise OutputError("the answer is empty")
    m = _FENCE.match(content)
    if m:
        content = m.group(1)
    try:
        obj = orjson.loads(content)
    except orjson.JSONDecodeError as exc:
        raise OutputError(f"the answer is not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise OutputError(f"the answer must be a JSON object, got {type(obj).__name__}")
    kind = spec.kind
    if kind in ("sentiment", "classification"):
        label = obj.get("label")
        allowed = SENTIMENT_LABELS if kind == "sentiment" else tuple(spec.config.categories)
        if not isinstance(label, str):
            raise OutputError(f'"label" must be a string, one of {list(allowed)}')
        norm = {a.lower(): a for a in allowed}
        if label.strip().lower() not in norm:
            raise OutputError(f'"label" {label!r} is not one of {list(allowed)}')
        label = norm[label.strip().lower()]
        conf = _confidence(obj, required=True)
        return label, conf, orjson.dumps({"label": label, "confidence": conf}).decode()
    if kind == "summarization":
        summary = obj.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            raise OutputError('"summary" must be a non-empty string')
        conf = _confidence(obj, required=False)
        return None, conf, orjson.dumps({"summary": summary.strip(), "confidence": conf}).decode()
    # extraction
    assert spec._validate is not None
    try:
        spec._validate(obj)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise OutputError(f"the answer does not match the schema: {exc.message}") from None
    conf = obj.get("confidence")
    conf_f = float(conf) if isinstance(conf, (int, float)) and not isinstance(conf, bool) and 0 <= conf <= 1 else None
    return None, conf_f, orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()
