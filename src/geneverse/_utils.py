"""Every check of the user's input, raised before anything of the AnnData is written."""

from __future__ import annotations

import numpy as np


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
