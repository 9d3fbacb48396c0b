"""The ``driftline`` command line.

Each subcommand is one module in :mod:`driftline.commands` exposing ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``; adding a command is adding a module
and naming it in :data:`COMMANDS`.

Global options (``--config``, ``--log-level``, ``--log-file``) go before or after the
subcommand: ``driftline -c x.yaml run enrich`` and ``driftline run enrich -c x.yaml``
mean the same.  Every error message says what to do next.

>>> args = build_parser().parse_args(["config", "show", "--config", "x.yaml", "--log-level", "debug"])
>>> args.config, args.log_level
('x.yaml', 'DEBUG')
>>> build_parser().parse_args(["--config", "y.yaml", "config", "show"]).config
'y.yaml'
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

COMMANDS = ("kafka", "produce", "run", "demo", "mask", "verify", "query", "compact", "report", "dead_letters", "profile", "config")


class _Parser(argparse.ArgumentParser):
    """argparse with errors that point to the help of the command that failed."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n(see `{self.prog} --help` for the options)\n")


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The options every command takes; ``suppress``: a subcommand's copy keeps a value
    given before the subcommand unless given again after it."""

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--config", "-c", default=default(None), help="pipeline configuration YAML (default: $DRIFTLINE_CONFIG or built-in defaults)")
    parser.add_argument("--log-level", default=default("INFO"), type=str.upper, choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="log level (default INFO)")
    parser.add_argument("--log-file", default=default(None), help="also write the JSON-lines logs to this file")


def build_parser() -> argparse.ArgumentParser:
    from driftline import __version__

    parser = _Parser(prog="driftline", description="Put AI models on live event streams safely.")
    parser.add_argument("--version", action="version", version=f"driftline {__version__}")
    _global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    parser.set_defaults(_commands=sub.choices)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"driftline.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"driftline.commands.{name}":
                continue  # command not built yet
            raise
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP, parents=[common])
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported by the subcommand, so the message points to its --help
        args._commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    from driftline.broker import BrokerError
    from driftline.config import ConfigError
    from driftline.logs import configure_logging

    configure_logging(args.log_level, file=args.log_file)
    try:
        return int(args._run(args) or 0)
    except ConfigError as exc:
        print(f"driftline {args.command}: {exc}", file=sys.stderr)
        return 2
    except BrokerError as exc:
        print(f"driftline {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def console_main() -> NoReturn:
    """The ``driftline`` executable: :func:`main`, then leave without native teardown.

    pyarrow and DuckDB keep C++ thread pools whose static destructors can race a worker
    thread at interpreter finalization and abort a process that already finished its work
    ("terminate called without an active exception", exit -6; apache/arrow#34314).  So the
    executable runs the atexit handlers (log flush, metric timers, trace export) itself,
    flushes stdout and stderr, and ends with ``os._exit``.  Calling :func:`main` from Python
    (tests, embedders) keeps the ordinary exit.
    """
    import atexit
    import os

    code = 1
    try:
        code = main()
    except SystemExit as exc:  # argparse's --help/--version and usage errors
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    finally:
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    os._exit(code)


if __name__ == "__main__":
    console_main()
