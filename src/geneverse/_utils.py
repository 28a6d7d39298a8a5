"""Shared by every part of geneverse: the choices, the checks of arguments, doc snippets.

Each choice a user makes by name (a backend, a method, an estimator, what to do with
zeros) is a :class:`~typing.Literal` type, spelled here and only here: the functions, the
settings and the command line take their lists of choices from it
(:func:`get_literal_vals`), and the code compares against the constants unpacked from it.
Every check raises before anything of the AnnData is written, with a message that says
what was wrong and what to pass instead.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, Literal, TypeVar, get_args, get_origin

import numpy as np

F = TypeVar("F", bound=Callable[..., Any])

# --------------------------------------------------------------------------------------------
# The choices
# --------------------------------------------------------------------------------------------

Backend = Literal["auto", "gpu", "rust", "numba", "numpy"]
AUTO, GPU, RUST, NUMBA, NUMPY = get_args(Backend)

Method = Literal["mi", "pearson", "spearman", "jaccard", "cosine"]
MI, PEARSON, SPEARMAN, JACCARD, COSINE = get_args(Method)

Estimator = Literal["plugin", "miller_madow"]
PLUGIN, MILLER_MADOW = get_args(Estimator)

Zeros = Literal["exclude", "include"]
EXCLUDE, INCLUDE = get_args(Zeros)

VerbosityName = Literal["error", "warning", "info", "hint", "debug"]

#: Most bins of a gene, counting the zero bin: bins are stored as ``uint8``.
MAX_BINS = 255


def get_literal_vals(choices: Any) -> tuple[Any, ...]:
    """The values of a ``Literal`` type (or of a union of them), in order."""
    if get_origin(choices) is Literal:
        return get_args(choices)
    return tuple(value for part in get_args(choices) for value in get_literal_vals(part))


def check_choice(name: str, value: Any, choices: Any) -> Any:
    """``value`` must be one of the values of the ``Literal`` type ``choices``."""
    allowed = get_literal_vals(choices)
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name}={value!r} is not known; use one of {list(allowed)}.")
    return value


def package_version() -> str:
    """geneverse's version (imported when asked: this module is imported by the package)."""
    from . import __version__

    return __version__


# --------------------------------------------------------------------------------------------
# Checks of single arguments
# --------------------------------------------------------------------------------------------


def is_whole_number(value: Any) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def check_whole_number(
    name: str, value: Any, *, minimum: int, maximum: int | None = None, what: str
) -> int:
    """``value`` as an ``int``, if it is a whole number in ``minimum..maximum``.

    ``what`` says what the number counts, for the message ("partners per gene").
    """
    if not is_whole_number(value):
        raise TypeError(f"{name} must be a whole number of {what}, not {value!r}.")
    value = int(value)
    high = "" if maximum is None else f" and at most {maximum}"
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name}={value} is out of range: use at least {minimum}{high} {what}.")
    return value


def check_flag(name: str, value: Any) -> bool:
    """A yes/no argument must be a bool (numpy's too)."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, not {value!r}.")
    return bool(value)


def check_number(name: str, value: Any, *, what: str) -> float:
    """A real, finite number (Python or numpy), as a ``float``."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of {what}, not {value!r}.")
    if not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number of {what}, not {value!r}.")
    return float(value)


def check_key(name: str, key: Any) -> str:
    """A key that prefixes stored results: a non-empty string that ``.h5ad`` can hold."""
    if not isinstance(key, str) or not key.strip():
        raise ValueError(f"{name} must be a non-empty string, not {key!r}.")
    if "/" in key or key != key.strip():
        raise ValueError(
            f"{name}={key!r} cannot be written to an .h5ad file (no '/' and no leading or "
            "trailing spaces); use letters, digits and '_', such as 'gv_tcells'."
        )
    return key


def check_n_jobs(n_jobs: Any) -> int | None:
    """``None``, ``-1`` (all cores) or a positive number of threads, numpy integers too."""
    if n_jobs is None:
        return None
    if not is_whole_number(n_jobs) or (int(n_jobs) < 1 and int(n_jobs) != -1):
        raise ValueError(
            f"n_jobs must be a positive number of threads (or -1 for all cores), not {n_jobs!r}."
        )
    return int(n_jobs)


def check_random_state(random_state: Any) -> int | None:
    """A seed: ``None`` or a whole number ``>= 0`` (numpy integers too)."""
    if random_state is None:
        return None
    if isinstance(random_state, np.random.Generator | np.random.RandomState):
        raise TypeError(
            "random_state must be an integer seed (or None), not a numpy random generator: "
            "pass the seed you made it from, e.g. random_state=0, so that the run can be "
            "repeated and stored."
        )
    return check_whole_number("random_state", random_state, minimum=0, what="a seed")


# --------------------------------------------------------------------------------------------
# Shared docstring text (scanpy's _doc_params)
# --------------------------------------------------------------------------------------------


def doc_params(**snippets: str) -> Callable[[F], F]:
    """Replace each docstring line that is only ``{name}`` by the shared text ``name``,
    indented as that line (like scanpy's ``_doc_params``)."""

    def decorate(function: F) -> F:
        if function.__doc__ is not None:
            function.__doc__ = _filled(function.__doc__, snippets)
        return function

    return decorate


def _filled(doc: str, snippets: dict[str, str]) -> str:
    lines = []
    for line in doc.splitlines():
        name = line.strip()
        if name.startswith("{") and name.endswith("}") and name[1:-1] in snippets:
            indent = line[: len(line) - len(line.lstrip())]
            lines.extend(
                indent + part if part else part for part in snippets[name[1:-1]].splitlines()
            )
        else:
            lines.append(line)
    return "\n".join(lines)


doc_adata = """\
adata
    Annotated data matrix (cells × genes) of counts or log-normalized values."""

doc_matrix = """\
layer
    Use ``adata.layers[layer]`` instead of ``adata.X``.
use_raw
    Use ``adata.raw`` (values of the genes of ``adata.var_names``). ``None``: use it
    when it exists and no ``layer`` is given, as scanpy does."""

doc_genes = """\
genes
    The genes to compute on: ``None`` (all), the name of a boolean ``var`` column such as
    ``"highly_variable"``, gene names, integer positions, or a boolean mask (see
    :doc:`/genes`)."""

doc_backend = """\
backend
    ``"auto"`` (the fastest usable: ``"gpu"``, ``"rust"``, ``"numba"``, ``"numpy"``)
    or one of those names. See :func:`geneverse.backends`.
device
    For ``backend="gpu"``: the torch device, such as ``"cuda"`` or ``"cpu"``.
n_jobs
    Threads; ``None`` uses ``gv.settings.n_jobs``, ``-1`` all cores. The result does not
    depend on it."""

doc_score = """\
n_bins
    Most bins of a gene's nonzero values (1–255).
signed
    Multiply each MI by the sign of the genes' Pearson correlation.
estimator
    ``"plugin"`` (GeneVector's) or ``"miller_madow"``, which adds ``(occupied cells −
    1) / (2 n)`` to each entropy term against the plug-in estimate's bias.
zeros
    ``"exclude"`` (GeneVector's: only the cells expressing either gene count) or
    ``"include"`` (the textbook MI over all cells). Leaving out the cells where both
    genes are zero makes even independent genes look dependent, so GeneVector's MI
    does not rank pairs: to rank pairs or build a network, use ``"include"`` (with
    ``estimator="miller_madow"``); ``"exclude"`` is for parity with GeneVector. See
    :doc:`/scores`."""
