"""The ``geneverse`` command: geneverse from the shell, on ``.h5ad`` files.

``geneverse demo`` runs on a small real dataset that ships with scanpy,
``geneverse coexpression IN.h5ad -o OUT.h5ad`` on yours, ``geneverse cache info|clear``
shows or empties the result cache, ``geneverse info`` prints versions and backends.
Errors are one line on stderr and a non-zero exit status: 2 for a wrong command line,
1 for a failure (unreadable file, missing layer, ...). Each command lives in its own
module (``add_commands`` adds it to the parser).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import _cache, _coexpression, _network
from ._common import Failure, Parser, UsageError

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``geneverse`` command with ``argv`` (default: ``sys.argv[1:]``); the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        args.run(args)
    except UsageError as error:
        return _error(str(error), 2)
    except (Failure, ValueError, TypeError, KeyError, OSError) as error:
        return _error(str(error), 1)
    except MemoryError as error:
        return _error(
            str(error) or "not enough memory; select fewer genes (--genes) or use --top-k.", 1
        )
    except KeyboardInterrupt:
        return _error("interrupted.", 130)
    return 0


def _error(message: str, status: int) -> int:
    one_line = " ".join(message.split())
    print(f"geneverse: error: {one_line}", file=sys.stderr)
    return status


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``geneverse`` command and its subcommands."""
    from .. import __version__

    parser = Parser(
        prog="geneverse",
        description="Exact signed mutual information (MI) between every pair of genes.",
        epilog="Run 'geneverse COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"geneverse {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    _coexpression.add_commands(commands)
    _cache.add_commands(commands)
    _network.add_commands(commands)
    info = commands.add_parser(
        "info",
        help="print the versions of geneverse and its dependencies, and the usable backends",
        description="Print what to paste into a bug report: versions and usable backends.",
    )
    info.set_defaults(run=_run_info)
    return parser


def _run_info(args: argparse.Namespace) -> None:
    """``geneverse info``."""
    from .._versions import print_versions

    print_versions()
