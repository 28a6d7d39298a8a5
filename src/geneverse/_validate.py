"""Every check of the user's input, raised before anything of the AnnData is written."""

from __future__ import annotations

import numpy as np
from scipy import sparse

_SCALED_DATA_HINT = (
    "Mutual information needs non-negative expression: pass raw counts, a log-normalized "
    "layer (layer='...') or use_raw=True, not scaled or centred data."
)


_BAD_NUMBER_HINT = (
    "Fix or remove these values (for example with numpy.nan_to_num) before computing MI."
)


def check_n_bins(n_bins: int) -> None:
    """``n_bins`` must be a whole number from 1 to 255 (bins are stored as uint8)."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer):
        raise TypeError(f"n_bins must be a whole number from 1 to 255, not {n_bins!r}.")
    if not 1 <= n_bins <= 255:
        raise ValueError(
            f"n_bins={n_bins} is out of range: use a number of bins from 1 to 255 "
            "(10, the default, is GeneVector's)."
        )


def check_top_k(top_k: int | None) -> None:
    """``top_k`` must be ``None`` or a positive whole number of partners."""
    if top_k is None:
        return
    if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1:
        raise ValueError(f"top_k must be a positive number of partners per gene, not {top_k!r}.")


METHODS = ("mi", "pearson", "spearman", "jaccard", "cosine")


def check_method(method: str) -> None:
    """``method`` must be MI or one of GeneVector's other co-expression measures."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not known; use one of {list(METHODS)}.")


def check_key(key_added: str) -> None:
    """``key_added`` must be a non-empty string (it prefixes every stored key)."""
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"key_added must be a non-empty string, not {key_added!r}.")


def check_flag(name: str, value: bool) -> None:
    """A yes/no argument must be a bool."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, not {value!r}.")


def check_values(matrix: sparse.csc_matrix, *, source: str, gene_names, cell_names) -> None:
    """The selected values must be numbers, finite and ``>= 0``.

    Names the first offending gene and cell, and says what to use instead.
    """
    if matrix.dtype.kind not in "iuf":
        raise TypeError(
            f"{source} holds {matrix.dtype} values; geneverse needs numbers "
            "(integer counts or floats)."
        )
    data = matrix.data
    for problem, bad in (
        ("NaN", np.isnan(data) if matrix.dtype.kind == "f" else None),
        ("infinite", np.isinf(data) if matrix.dtype.kind == "f" else None),
        ("negative", data < 0),
    ):
        if bad is None or not bad.any():
            continue
        entry = int(np.flatnonzero(bad)[0])
        gene = int(np.searchsorted(matrix.indptr, entry, side="right") - 1)
        cell = int(matrix.indices[entry])
        hint = _SCALED_DATA_HINT if problem == "negative" else _BAD_NUMBER_HINT
        raise ValueError(
            f"{source} contains {problem} values (first: gene {gene_names[gene]!r} in cell "
            f"{cell_names[cell]!r}, value {data[entry]}). {hint}"
        )
