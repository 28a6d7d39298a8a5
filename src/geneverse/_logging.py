"""Scanpy-style messages and progress bars that respect ``gv.settings.verbosity``."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from datetime import timedelta
from time import perf_counter
from typing import TypeVar

from tqdm.auto import tqdm

from ._settings import settings

T = TypeVar("T")

_INFO = 2
_HINT = 3


def _print(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def info(message: str, *, since: float | None = None) -> float:
    """Print ``message`` at info level; with ``since``, append the time it took.

    Returns the current time, to pass as ``since`` to the message that ends the step.
    """
    now = perf_counter()
    if settings.verbosity >= _INFO:
        if since is not None:
            message = f"{message} ({timedelta(seconds=now - since)})"
        _print(message)
    return now


def hint(message: str) -> None:
    """Print ``message`` at hint level."""
    if settings.verbosity >= _HINT:
        _print(f"--> {message}")


def progress(items: Iterable[T], *, total: int, description: str) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar that appears only for long runs.

    The bar shows after 2 seconds, and never below info verbosity.
    """
    return iter(
        tqdm(
            items,
            total=total,
            desc=description,
            disable=settings.verbosity < _INFO,
            delay=2.0,
            file=sys.stderr,
            leave=False,
        )
    )
