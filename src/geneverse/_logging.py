"""Messages and progress bars under Python's ``logging``, like scanpy's.

Every message geneverse prints goes through the ``geneverse`` logger, so a pipeline can
set its level, add handlers or silence it as for any library. ``gv.settings.verbosity``
sets that logger's level (0 errors, 1 warnings, 2 info, 3 hints, 4 debug); geneverse's
own handler writes to standard error. Progress bars (tqdm) show for long runs at info
verbosity and above.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from datetime import timedelta
from time import perf_counter
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

#: Between info and debug, as scanpy's hints.
HINT = (logging.INFO + logging.DEBUG) // 2
logging.addLevelName(HINT, "HINT")

#: The level of each verbosity.
LEVELS = (logging.ERROR, logging.WARNING, logging.INFO, HINT, logging.DEBUG)

logger = logging.getLogger("geneverse")


class _StderrHandler(logging.Handler):
    """Writes each message to the standard error of the moment (a notebook or a test may
    replace ``sys.stderr`` after geneverse is imported)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


logger.addHandler(_StderrHandler())
logger.propagate = False


def set_verbosity(verbosity: int) -> None:
    """Set the ``geneverse`` logger's level to that of ``verbosity`` (0 to 4)."""
    logger.setLevel(LEVELS[verbosity])


def info(message: str, *, since: float | None = None) -> float:
    """Log ``message`` at info level; with ``since``, append the time it took.

    Returns the current time, to pass as ``since`` to the message that ends the step.
    """
    now = perf_counter()
    if since is not None:
        message = f"{message} ({timedelta(seconds=now - since)})"
    logger.info(message)
    return now


def hint(message: str) -> None:
    """Log ``message`` at hint level."""
    logger.log(HINT, f"--> {message}")


def warning(message: str) -> None:
    """Log ``message`` at warning level."""
    logger.warning(f"WARNING: {message}")


def debug(message: str) -> None:
    """Log ``message`` at debug level."""
    logger.debug(message)


def progress(items: Iterable[T], *, total: int, description: str) -> Iterator[T]:
    """Iterate over ``items`` with a progress bar that appears only for long runs.

    The bar shows after 2 seconds, and only when the ``geneverse`` logger passes info.
    """
    return iter(
        tqdm(
            items,
            total=total,
            desc=description,
            disable=not logger.isEnabledFor(logging.INFO),
            delay=2.0,
            file=sys.stderr,
            leave=False,
        )
    )
