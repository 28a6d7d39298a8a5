"""Global settings of geneverse: ``gv.settings``."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir

from . import _logging as logg
from ._utils import (
    AUTO,
    Backend,
    VerbosityName,
    check_choice,
    check_n_jobs,
    check_whole_number,
    get_literal_vals,
)

_VERBOSITY_NAMES = get_literal_vals(VerbosityName)
#: The default bound of the result cache.
DEFAULT_CACHE_MAX_BYTES = 2 * 1024**3


def default_cache_dir() -> Path:
    """geneverse's folder in the user's cache directory (``platformdirs``)."""
    return Path(user_cache_dir("geneverse", appauthor=False))


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Settings:
    """Settings that apply to every call, like ``scanpy.settings``.

    Attributes
    ----------
    verbosity
        0 errors, 1 warnings, 2 info (default: timings and progress bars of long runs),
        3 hints, 4 debug. Names (``"info"``) are accepted too. It sets the level of the
        ``geneverse`` logger (:mod:`logging`), through which every message goes.
    n_jobs
        Threads for the ``rust``, ``numba`` and ``gpu`` (on CPU) backends when a call passes
        ``n_jobs=None``. Defaults to the cores available to this process.
    backend
        The backend used when a call passes ``backend="auto"``; ``"auto"`` picks the fastest
        usable one (see :func:`geneverse.backends`).
    cache_dir
        Where results are cached (a later identical call loads them); ``None`` disables
        the cache. Defaults to geneverse's folder in the user's cache directory.
    cache_max_bytes
        The most the cache holds (default 2 GiB): a result larger than a quarter of it is
        not stored, and storing one removes the results used least recently until it
        fits. ``geneverse cache info`` and ``geneverse cache clear`` show and empty it.
    """

    def __init__(self) -> None:
        self.verbosity = 2
        self._n_jobs = available_cores()
        self._backend: Backend = AUTO
        self._cache_dir: Path | None = default_cache_dir()
        self._cache_max_bytes = DEFAULT_CACHE_MAX_BYTES

    @property
    def verbosity(self) -> int:
        return self._verbosity

    @verbosity.setter
    def verbosity(self, value: int | VerbosityName) -> None:
        if isinstance(value, str):
            if value not in _VERBOSITY_NAMES:
                raise ValueError(
                    f"verbosity {value!r} is not known; use one of {list(_VERBOSITY_NAMES)} "
                    "or a number from 0 to 4."
                )
            value = _VERBOSITY_NAMES.index(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 4:
            raise ValueError(f"verbosity must be a number from 0 to 4, not {value!r}.")
        self._verbosity = value
        logg.set_verbosity(value)

    @property
    def n_jobs(self) -> int:
        return self._n_jobs

    @n_jobs.setter
    def n_jobs(self, value: int) -> None:
        if value is None:
            raise ValueError("gv.settings.n_jobs must be a number of threads (or -1), not None.")
        self._n_jobs = resolve_n_jobs(value)

    @property
    def backend(self) -> Backend:
        return self._backend

    @backend.setter
    def backend(self, value: Backend) -> None:
        check_choice("backend", value, Backend)
        self._backend = value

    @property
    def cache_dir(self) -> Path | None:
        return self._cache_dir

    @cache_dir.setter
    def cache_dir(self, value: str | os.PathLike | None) -> None:
        self._cache_dir = None if value is None else Path(value)

    @property
    def cache_max_bytes(self) -> int:
        return self._cache_max_bytes

    @cache_max_bytes.setter
    def cache_max_bytes(self, value: int) -> None:
        self._cache_max_bytes = check_whole_number(
            "cache_max_bytes", value, minimum=0, what="bytes"
        )

    def __repr__(self) -> str:
        return (
            f"geneverse settings: verbosity={self.verbosity}, n_jobs={self.n_jobs}, "
            f"backend={self.backend!r}, cache_dir={self.cache_dir}, "
            f"cache_max_bytes={self.cache_max_bytes}"
        )


def resolve_n_jobs(n_jobs: int | None) -> int:
    """Turn an ``n_jobs`` argument into a positive thread count (``-1``: all cores)."""
    n_jobs = check_n_jobs(n_jobs)
    if n_jobs is None:
        return settings.n_jobs
    if n_jobs == -1:
        return available_cores()
    return n_jobs


settings = Settings()
