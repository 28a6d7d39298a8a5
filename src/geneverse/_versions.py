"""``gv.print_versions``: what to paste into a bug report."""

from __future__ import annotations

import io
import warnings
from contextlib import redirect_stdout
from importlib import import_module
from typing import TextIO

#: Shown first, as the session's main packages (those installed); the rest follow as
#: dependencies.
_MAIN_PACKAGES = (
    "geneverse",
    "anndata",
    "scanpy",
    "numpy",
    "scipy",
    "pandas",
    "numba",
    "torch",
    "dask",
    "matplotlib",
)

# session_info lists the modules found in the globals of the code that calls it, so it is
# called from a namespace that holds the main packages.
_SHOW = (
    "session_info.show(html=False, dependencies=True, na=False, "
    "excludes=['builtins', 'stdlib_list'])"
)


def print_versions(*, file: TextIO | None = None) -> None:
    """Print the versions of geneverse and its dependencies, and which backends are usable.

    Paste this into bug reports. Uses :mod:`session_info`, then prints the table of
    :func:`geneverse.backends`.

    Parameters
    ----------
    file
        Where to print; ``None`` for standard output.

    Examples
    --------
    >>> import geneverse as gv
    >>> gv.print_versions()  # doctest: +SKIP
    """
    print(session_text(), file=file)
    print(backends_text(), file=file)


def session_text() -> str:
    """The :mod:`session_info` report of the main packages, their dependencies and the OS."""
    import session_info

    namespace = {"session_info": session_info}
    for name in _MAIN_PACKAGES:
        try:
            namespace[name] = import_module(name)
        except ImportError:  # an optional dependency that is not installed
            continue
    with redirect_stdout(io.StringIO()) as buffer, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "__version__ is deprecated"
        exec(_SHOW, namespace)
    return buffer.getvalue().rstrip()


def backends_text() -> str:
    """The table of :func:`geneverse.backends`, under a heading."""
    from .kernels import backends

    table = backends()
    width = max(map(len, table.index))
    lines = [
        f"{name:<{width}}  " + ("usable" if row.usable else f"not usable: {row.reason}")
        for name, row in table.iterrows()
    ]
    return "\n".join(
        ["-----", 'geneverse backends (backend="auto" tries them in this order)', *lines]
    )
