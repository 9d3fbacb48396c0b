"""``driftline config show|check|reference``: the effective configuration, a check of a
file, and the Markdown reference of every key with its default and meaning."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, SecretStr

from driftline.config import ConfigError, PipelineConfig, load_config

NAME = "config"
HELP = "show the effective configuration, check a file, or print the reference of every key"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("show", "check", "reference"))
    parser.add_argument("file", nargs="?", default=None, help="configuration file (check; default: --config)")


def _type_name(annotation: Any) -> str:
    if annotation is SecretStr:
        return "secret"
    origin = get_origin(annotation)
    if origin is None:
        return getattr(annotation, "__name__", str(annotation)).replace("NoneType", "null")
    args = ", ".join(_type_name(a) for a in get_args(annotation))
    name = getattr(origin, "__name__", str(origin)).replace("UnionType", "union")
    if name in ("Union", "union"):
        return " | ".join(_type_name(a) for a in get_args(annotation))
    if name == "Literal":
        return " | ".join(repr(a) for a in get_args(annotation))
    return f"{name}[{args}]"


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(section)"
    try:
        text = json.dumps(value if not isinstance(value, BaseModel) else value.model_dump(mode="json"), default=str)
    except TypeError:
        text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def reference(model: type[BaseModel] = PipelineConfig, prefix: str = "") -> list[str]:
    """Markdown table rows (``| key | type | default | meaning |``) for every key."""
    rows: list[str] = []
    sections: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            sections.append((key, ann))
            continue
        desc = (field.description or "").replace("|", "\\|")
        type_text = _type_name(ann).replace("|", "\\|")
        default_text = _default(field).replace("|", "\\|")
        rows.append(f"| `{key}` | `{type_text}` | `{default_text}` | {desc} |")
    for key, sub in sections:
        rows.extend(reference(sub, f"{key}."))
    return rows


def reference_markdown() -> str:
    head = [
        "# Configuration reference",
        "",
        "Generated from the typed configuration by `driftline config reference`; do not edit by hand.",
        "Lists of objects (rules, patterns, recognizers, backends) are documented in each stage's page.",
        "",
        "| key | type | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    return "\n".join(head + reference()) + "\n"


def run(args: argparse.Namespace) -> int:
    if args.action == "reference":
        sys.stdout.write(reference_markdown())
        return 0
    path = args.file or args.config
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print(f"driftline config {args.action}: {exc}", file=sys.stderr)
        return 2
    if args.action == "check":
        # Build both flows: every stage compiles its rules, patterns and models at start-up,
        # so this finds what pydantic alone cannot (unknown entity types, bad expressions).
        import tempfile

        from driftline.flows.enrich import build_enrich_flow
        from driftline.flows.monitor import build_monitor_flow

        with tempfile.TemporaryDirectory() as state:
            try:
                build_enrich_flow(cfg, drain=True, state_dir=state)
                build_monitor_flow(cfg, drain=True)
            except (ConfigError, ValueError) as exc:
                print(f"driftline config check: {exc}", file=sys.stderr)
                return 2
        print(f"configuration OK ({path or 'defaults'}; hash {cfg.config_hash()})")
        return 0
    sys.stdout.write(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True))
    return 0
