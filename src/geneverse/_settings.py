"""Global settings of geneverse: ``gv.settings``."""

from __future__ import annotations

import os
from pathlib import Path

_BACKENDS = ("auto", "gpu", "rust", "numba", "numpy")
_VERBOSITY_NAMES = {"error": 0, "warning": 1, "info": 2, "hint": 3, "debug": 4}


def default_cache_dir() -> Path:
    """``platformdirs.user_cache_dir("geneverse")`` when platformdirs is installed, else
    ``$XDG_CACHE_HOME/geneverse`` or ``~/.cache/geneverse``."""
    try:
        from platformdirs import user_cache_dir
    except ImportError:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(base) / "geneverse"
    return Path(user_cache_dir("geneverse", appauthor=False))


def _default_n_jobs() -> int:
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
        3 hints, 4 debug. Names (``"info"``) are accepted too.
    n_jobs
        Threads for the ``rust``, ``numba`` and ``gpu`` (on CPU) backends when a call passes
        ``n_jobs=None``. Defaults to the cores available to this process.
    backend
        The backend used when a call passes ``backend="auto"``; ``"auto"`` picks the fastest
        usable one (see :func:`geneverse.backends`).
    cache_dir
        Where results are cached (a later identical call loads them); ``None`` disables
        the cache. Defaults to geneverse's folder in the user's cache directory.
    """

    def __init__(self) -> None:
        self._verbosity = 2
        self._n_jobs = _default_n_jobs()
        self._backend = "auto"
        self._cache_dir: Path | None = default_cache_dir()

    @property
    def verbosity(self) -> int:
        return self._verbosity

    @verbosity.setter
    def verbosity(self, value: int | str) -> None:
        if isinstance(value, str):
            if value not in _VERBOSITY_NAMES:
                raise ValueError(
                    f"verbosity {value!r} is not known; use one of {list(_VERBOSITY_NAMES)} "
                    "or a number from 0 to 4."
                )
            value = _VERBOSITY_NAMES[value]
        if not isinstance(value, int) or not 0 <= value <= 4:
            raise ValueError(f"verbosity must be a number from 0 to 4, not {value!r}.")
        self._verbosity = value

    @property
    def n_jobs(self) -> int:
        return self._n_jobs

    @n_jobs.setter
    def n_jobs(self, value: int) -> None:
        self._n_jobs = resolve_n_jobs(value)

    @property
    def backend(self) -> str:
        return self._backend

    @backend.setter
    def backend(self, value: str) -> None:
        if value not in _BACKENDS:
            raise ValueError(f"backend must be one of {list(_BACKENDS)}, not {value!r}.")
        self._backend = value

    @property
    def cache_dir(self) -> Path | None:
        return self._cache_dir

    @cache_dir.setter
    def cache_dir(self, value: str | os.PathLike | None) -> None:
        self._cache_dir = None if value is None else Path(value)

    def __repr__(self) -> str:
        return (
            f"geneverse settings: verbosity={self.verbosity}, n_jobs={self.n_jobs}, "
            f"backend={self.backend!r}, cache_dir={self.cache_dir}"
        )


def resolve_n_jobs(n_jobs: int | None) -> int:
    """Turn an ``n_jobs`` argument into a positive thread count (``-1``: all cores)."""
    if n_jobs is None:
        return settings.n_jobs
    if n_jobs == -1:
        return _default_n_jobs()
    if not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or n_jobs < 1:
        raise ValueError(
            f"n_jobs must be a positive number of threads (or -1 for all cores), not {n_jobs!r}."
        )
    return n_jobs


settings = Settings()
