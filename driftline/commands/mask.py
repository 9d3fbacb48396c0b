"""``driftline mask``: mask PII in JSON Lines, for data teams masking files by hand.

Reads one JSON object per line (standard input or ``--input``), masks its ``text`` field
(``--field`` to choose another) with the pipeline's masker and configuration, adds a
``pii`` list of findings ``{"type", "start", "end", "recognizer"}`` whose offsets are
code-point positions in the ORIGINAL text, and writes the object on standard output (or
``--output``).  Every other field is written as it came, and the order of lines is kept.

A line that is not a JSON object, or whose field is not a string (or null), is reported
on standard error with its line number and replaced in the output by
``{"error": {"line": N, "message": "..."}}`` so the output stays line-aligned with the
input; the rest is processed and the exit status is then 1.  Blank lines are skipped.

    printf '{"id": 1, "text": "mail ann@example.com"}\\n' | driftline mask
    {"id":1,"text":"mail <EMAIL:...>","pii":[{"type":"EMAIL","recognizer":"email","start":5,"end":20}]}
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import IO, Any

import orjson
import polars as pl

NAME = "mask"
HELP = "Mask PII in JSON Lines (stdin -> stdout): the text field is masked and a pii list of findings added."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", "-i", default="-", help="JSON Lines file to read (default: standard input)")
    parser.add_argument("--output", "-o", default="-", help="file to write (default: standard output)")
    parser.add_argument("--field", default="text", help="name of the field to mask (default: text)")
    parser.add_argument("--batch-size", type=int, default=1000, help="lines masked together (default: 1000)")


def _loads(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        # orjson refuses some valid JSON (integers beyond 64 bits); the standard library does not
        return json.loads(line.decode("utf-8"))


def _dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _chunks(stream: IO[bytes], size: int) -> Iterator[list[tuple[int, bytes]]]:
    chunk: list[tuple[int, bytes]] = []
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        chunk.append((number, line))
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def mask_lines(stream: IO[bytes], out: IO[bytes], err: IO[str], masker: Any, field: str = "text", batch_size: int = 1000) -> int:
    """Mask a JSON Lines stream; returns the number of lines reported as errors."""
    errors = 0
    for chunk in _chunks(stream, batch_size):
        parsed: list[tuple[int, dict[str, Any] | None, str]] = []
        for number, line in chunk:
            try:
                obj = _loads(line)
            except (ValueError, UnicodeDecodeError) as exc:
                parsed.append((number, None, f"not valid JSON: {str(exc).splitlines()[0]}"))
                continue
            if not isinstance(obj, dict):
                parsed.append((number, None, f"expected a JSON object, got {type(obj).__name__}"))
            elif field not in obj:
                parsed.append((number, None, f"no field {field!r}"))
            elif obj[field] is not None and not isinstance(obj[field], str):
                parsed.append((number, None, f"field {field!r} must be a string or null, got {type(obj[field]).__name__}"))
            else:
                parsed.append((number, obj, ""))
        texts = [obj[field] if obj is not None else None for _, obj, _ in parsed]
        scan = masker.scan(pl.Series(texts, dtype=pl.Utf8))
        masked = scan.masked.to_list()
        findings = scan.findings.to_list()
        for i, (number, obj, message) in enumerate(parsed):
            if obj is None:
                errors += 1
                print(f"driftline mask: line {number}: {message}", file=err)
                out.write(_dumps({"error": {"line": number, "message": message}}) + b"\n")
                continue
            obj[field] = masked[i]
            obj["pii"] = findings[i] or []
            out.write(_dumps(obj) + b"\n")
    return errors


def run(args: argparse.Namespace) -> int:
    from driftline.config import load_config
    from driftline.operators.pii import PiiMasker, load_pseudonym_key

    cfg = load_config(args.config)
    masker = PiiMasker.from_config(cfg.privacy, load_pseudonym_key(cfg.privacy, cfg.mode))
    if args.batch_size < 1:
        print("driftline mask: --batch-size must be at least 1", file=sys.stderr)
        return 2
    src = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")  # noqa: SIM115
    dst = sys.stdout.buffer if args.output == "-" else open(args.output, "wb")  # noqa: SIM115
    try:
        errors = mask_lines(src, dst, sys.stderr, masker, args.field, args.batch_size)
        dst.flush()
    finally:
        if src is not sys.stdin.buffer:
            src.close()
        if dst is not sys.stdout.buffer:
            dst.close()
    if errors:
        print(f"driftline mask: {errors} line(s) could not be masked (see the error objects in the output)", file=sys.stderr)
        return 1
    return 0
