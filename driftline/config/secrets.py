"""Secret settings: typed, read from the environment or files, never printed or hashed.

A secret is a configuration field typed :class:`pydantic.SecretStr` (its ``repr``,
``str`` and JSON dump are ``'**********'``; only ``get_secret_value()`` reveals it).
Its value comes from, highest precedence first:

1. the environment: ``DRIFTLINE__<SECTION>__<KEY>`` (the value itself) or
   ``DRIFTLINE__<SECTION>__<KEY>_FILE`` (a file holding it, e.g. a Docker or
   Kubernetes secret mount);
2. a secrets directory, ``$DRIFTLINE_SECRETS_DIR``, holding one file per secret named
   like its environment variable without the prefix (``kafka__security__password``);
3. a ``<key>_file`` entry in the YAML file naming a file that holds it;
4. for secrets that name one, a conventional environment variable
   (``privacy.key_env`` = ``DRIFTLINE_PII_KEY``, a backend's ``api_key_env``,
   ``monitoring.alerts.webhook_secret_env``).

A literal secret in the YAML file is refused: the file can then be committed, shown
and diffed.  :func:`secret_exclude` lists the secret fields that are set, so
``config_hash()`` leaves them out and rotating a secret keeps the hash.

>>> from pydantic import BaseModel
>>> class Section(BaseModel):
...     user: str = "alice"
...     password: SecretStr | None = None
>>> s = Section(password="hunter2")
>>> s.model_dump(mode="json")
{'user': 'alice', 'password': '**********'}
>>> secret_exclude(s)
{'password': True}
"""

from __future__ import annotations

import os
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr, ValidationInfo

FILE_SUFFIX = "_file"
"""``<secret>_file`` names a file holding ``<secret>``."""


class SecretSourceError(ValueError):
    """A secret could not be read from where the configuration says it is."""


def _unwrap(annotation: Any) -> tuple[str, Any]:
    """``("model", cls)``, ``("dict", cls)``, ``("list", cls)``, ``("secret", None)``,
    ``("secret_dict", None)`` or ``("other", None)`` for a field annotation."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        kinds = [_unwrap(a) for a in get_args(annotation) if a is not type(None)]
        return kinds[0] if len(kinds) == 1 else ("other", None)
    if annotation is SecretStr:
        return ("secret", None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return ("model", annotation)
    if origin in (dict, list):
        inner = get_args(annotation)[-1]
        if inner is SecretStr and origin is dict:
            return ("secret_dict", None)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return (origin.__name__, inner)
    return ("other", None)


def _secret_fields(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], bool]]:
    """``(path, is a dict of secrets)`` of every secret field of ``model``; ``*`` stands for
    any key of a dict of sections or any element of a list of them (``models.backends.*.api_key``)."""
    for name, field in model.model_fields.items():
        kind, sub = _unwrap(field.annotation)
        if kind in ("secret", "secret_dict"):
            yield (*prefix, name), kind == "secret_dict"
        elif kind == "model":
            yield from _secret_fields(sub, (*prefix, name))
        elif kind in ("dict", "list"):
            yield from _secret_fields(sub, (*prefix, name, "*"))


def secret_exclude(model: BaseModel) -> dict[Any, Any]:
    """A ``model_dump(exclude=...)`` tree naming every secret field of ``model``."""
    out: dict[Any, Any] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        kind, _ = _unwrap(field.annotation)
        if kind in ("secret", "secret_dict"):
            out[name] = True
        elif kind == "model" and isinstance(value, BaseModel):
            sub = secret_exclude(value)
            if sub:
                out[name] = sub
        elif kind in ("dict", "list") and value:
            items = value.items() if isinstance(value, dict) else enumerate(value)
            subs = {k: s for k, v in items if (s := secret_exclude(v))}
            if subs:
                out[name] = subs
    return out


def read_secret_file(path: str | os.PathLike[str], where: str) -> str:
    """The content of a secret file without its trailing newline; the error names ``where``
    (the setting) and the file, never the content."""
    p = Path(path)
    try:
        return p.read_text("utf-8").rstrip("\r\n")
    except FileNotFoundError:
        raise SecretSourceError(f"{where}: secret file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretSourceError(f"{where}: cannot read secret file {p}: {type(exc).__name__}") from None


def is_secret_path(model: type[BaseModel], path: list[str] | tuple[str, ...]) -> bool:
    """Whether the setting at ``path`` (lower-case keys) is a secret or a secret's
    ``_file`` reference: its environment value is then kept as text, never parsed.

    >>> from driftline.config import PipelineConfig
    >>> is_secret_path(PipelineConfig, ["models", "backends", "openai", "api_key"]), is_secret_path(PipelineConfig, ["kafka", "input_topic"])
    (True, False)
    """
    for pattern, is_dict in _secret_fields(model):
        n = len(pattern)
        head, last = list(path[: n - 1]), path[n - 1] if len(path) >= n else None
        if last is None or any(p != "*" and p != h for p, h in zip(pattern, head)):
            continue
        if last in (pattern[-1], pattern[-1] + FILE_SUFFIX) and (len(path) == n or (is_dict and len(path) == n + 1)):
            return True
    return False


def _walk(tree: Any, path: tuple[str, ...], at: tuple[str, ...] = ()) -> Iterator[tuple[dict[str, Any], str, tuple[str, ...]]]:
    """``(parent mapping, last key, concrete path)`` for each place in ``tree`` that
    ``path`` (with ``*`` wildcards) could address."""
    if not isinstance(tree, dict) and not isinstance(tree, list):
        return
    head, rest = path[0], path[1:]
    if not rest:
        if isinstance(tree, dict):
            yield tree, head, (*at, head)
        return
    if head == "*":
        items = tree.items() if isinstance(tree, dict) else enumerate(tree)
        for k, v in items:
            yield from _walk(v, rest, (*at, str(k)))
    elif isinstance(tree, dict):
        for key in [k for k in tree if str(k).lower() == head]:
            yield from _walk(tree[key], rest, (*at, head))


def _file_key(mapping: dict[str, Any], key: str) -> str | None:
    return next((k for k in mapping if str(k).lower() == key + FILE_SUFFIX), None)


def resolve_secret_files(tree: dict[str, Any], model: type[BaseModel], *, origin: str, literal_allowed: bool) -> None:
    """Replace each ``<secret>_file: PATH`` in ``tree`` by the secret read from PATH (in
    place); in a dict of secrets (``sinks.storage_secrets``) each ``<name>_file`` entry.

    ``literal_allowed=False`` (the YAML file): a secret written out literally is refused,
    the message says where to put it instead.
    """
    for path, is_dict in _secret_fields(model):
        for parent, key, concrete in _walk(tree, path):
            where = ".".join(concrete)
            literal = next((k for k in parent if str(k).lower() == key), None)
            value = parent.get(literal) if literal is not None else None
            if is_dict and isinstance(value, dict):
                literals = [k for k in value if not str(k).lower().endswith(FILE_SUFFIX)]
                for k in [k for k in value if k not in literals]:
                    value[str(k)[: -len(FILE_SUFFIX)]] = read_secret_file(str(value.pop(k)), f"{where}.{k}")
                value = {k: value[k] for k in literals}
            if value not in (None, "", {}) and not literal_allowed:
                env = "DRIFTLINE__" + "__".join(concrete).upper()
                hint = f"${env}__<NAME> or ${env}__<NAME>_FILE" if is_dict else f"${env}, ${env}_FILE or {key}{FILE_SUFFIX}: PATH"
                raise SecretSourceError(f"{where}: secrets are not read from the configuration file ({origin}); set {hint}")
            file_key = None if is_dict else _file_key(parent, key)
            file_path = parent.pop(file_key) if file_key is not None else None
            if file_path not in (None, ""):
                parent[key] = read_secret_file(str(file_path), f"{where}{FILE_SUFFIX}")


def env_secret(info: ValidationInfo | None, name: str | None) -> SecretStr | None:
    """The secret in environment variable ``name`` (from the ``env`` mapping that
    :func:`~driftline.config.load_config` passes as validation context, else the process
    environment); None when unset or empty."""
    if not name:
        return None
    context = info.context if info is not None else None
    env: Mapping[str, str] = context["env"] if isinstance(context, dict) and "env" in context else os.environ
    value = env.get(name)
    return SecretStr(value) if value else None


__all__ = ["FILE_SUFFIX", "SecretSourceError", "env_secret", "is_secret_path", "read_secret_file", "resolve_secret_files", "secret_exclude"]
