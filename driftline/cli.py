"""The ``driftline`` command line.

Each subcommand is one module in :mod:`driftline.commands` exposing ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``; adding a command is adding a module
and naming it in :data:`COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS = ("kafka", "produce", "run", "demo", "mask", "verify", "query", "compact", "report", "dead_letters", "profile", "config")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="driftline", description="Put AI models on live event streams safely.")
    parser.add_argument("--config", "-c", default=None, help="pipeline configuration YAML (default: $DRIFTLINE_CONFIG or built-in defaults)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"driftline.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"driftline.commands.{name}":
                continue  # command not built yet
            raise
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from driftline.config import ConfigError

    try:
        return int(args._run(args) or 0)
    except ConfigError as exc:
        print(f"driftline: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
