"""``geneverse cache info`` and ``geneverse cache clear``: the result cache."""

from __future__ import annotations

import argparse

from ._common import UsageError


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``cache`` to the ``geneverse`` command."""
    cache = commands.add_parser(
        "cache",
        help="show or empty the result cache",
        description="The result cache holds the results of earlier identical calls, at "
        "most gv.settings.cache_max_bytes (those used least recently are removed first).",
    )
    cache.add_argument("action", choices=("info", "clear"), help="show it, or empty it")
    cache.set_defaults(run=run_cache)


def run_cache(args: argparse.Namespace) -> None:
    """``geneverse cache info|clear``."""
    from .._settings import settings
    from ..tl._coexpression import _cache

    folder = settings.cache_dir
    if folder is None:
        raise UsageError("the cache is switched off (gv.settings.cache_dir is None).")
    if args.action == "clear":
        removed = _cache.clear(folder)
        print(f"removed {removed} cached results from {folder}")
        return
    results = _cache.stored_results(folder) if folder.is_dir() else []
    total = sum(result.size for result in results)
    print(f"cache folder: {folder}")
    print(f"results:      {len(results)}, {total / 2**20:,.1f} MiB")
    print(
        f"bound:        {settings.cache_max_bytes / 2**20:,.1f} MiB (gv.settings.cache_max_bytes)"
    )
