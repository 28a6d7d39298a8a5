"""Which genes a user means: the one gene lookup of ``tl``, ``pl``, ``get`` and the CLI.

The rule (docs page "Selecting genes"): ``None`` is every gene; a string is a boolean
``adata.var`` column; a boolean mask has one entry per gene; any other collection (a list,
tuple, set, array, Index, Series or generator) holds either gene names or integer
positions (Python or numpy integers), never a mix. Names are looked up in
``adata.var_names`` (and, when ``gene_symbols`` is given, in that ``var`` column).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .._utils import is_whole_number

GeneSelection = None | str | Iterable[Any] | np.ndarray | pd.Series | pd.Index

_UNIQUE_HINT = "make the names unique first with adata.var_names_make_unique()"


def gene_mask(adata: AnnData, genes: GeneSelection, *, what: str = "genes") -> np.ndarray:
    """The boolean mask over ``adata.var_names`` of the genes of a selection.

    ``what`` names the argument in messages (``"genes"``, ``"against"``).
    """
    if genes is None:
        return np.ones(adata.n_vars, dtype=bool)
    if isinstance(genes, str):
        return boolean_column(adata, genes, what=what)
    mask = np.zeros(adata.n_vars, dtype=bool)
    mask[gene_positions(adata, genes, what=what)] = True
    return mask


def gene_positions(
    adata: AnnData, genes: Any, *, gene_symbols: str | None = None, what: str = "genes"
) -> np.ndarray:
    """Positions in ``adata.var_names`` of the genes of a collection, in the given order,
    each once (a boolean mask gives the genes it marks, in ``var`` order)."""
    if isinstance(genes, str):
        return np.flatnonzero(boolean_column(adata, genes, what=what))
    items = _as_array(genes, what)
    if items.size == 0:
        raise ValueError(f"{what} is empty; name at least one gene, or pass {what}=None.")
    if items.dtype == bool:
        if items.shape != (adata.n_vars,):
            raise ValueError(
                f"{what} is a boolean mask of length {items.size}, but the AnnData has "
                f"{adata.n_vars} genes; the mask needs one entry per gene of adata.var_names."
            )
        return np.flatnonzero(items)
    if all(is_whole_number(item) for item in items):
        return pd.unique(_checked_positions(adata, items.astype(np.int64), what))
    if all(isinstance(item, str) for item in items):
        return pd.unique(_named(adata, items, gene_symbols, what))
    raise TypeError(
        f"{what} mixes gene names and other values ({_shown(items)}); pass gene names "
        "(strings) or integer positions, not both."
    )


def gene_position(adata: AnnData, gene: Any, *, what: str = "gene") -> int:
    """The position of one gene (a name, or an integer position)."""
    if not isinstance(gene, str) and not is_whole_number(gene):
        raise TypeError(f"{what} must be one gene: a name or an integer position, not {gene!r}.")
    return int(gene_positions(adata, [gene], what=what)[0])


def symbols_column(adata: AnnData, gene_symbols: str) -> pd.Series:
    """``adata.var[gene_symbols]`` as strings: the gene names to show and look up."""
    if gene_symbols not in adata.var.columns:
        raise ValueError(
            f"gene_symbols={gene_symbols!r} is not a column of adata.var (columns: "
            f"{list(adata.var.columns)}); name the column that holds the gene symbols, "
            "such as 'feature_name' in CELLxGENE files."
        )
    return adata.var[gene_symbols].astype(str)


def boolean_column(adata: AnnData, column: str, *, what: str = "genes") -> np.ndarray:
    """``adata.var[column]`` as a boolean mask: a bool or nullable ``"boolean"`` column."""
    if column not in adata.var.columns:
        hint = (
            f" To select the gene {column!r}, pass a list: {what}=[{column!r}]."
            if column in adata.var_names
            else ""
        )
        raise ValueError(
            f"{what}={column!r} is not a column of adata.var (columns: "
            f"{list(adata.var.columns)}). Pass a boolean var column such as "
            f"'highly_variable', a list of gene names or positions, or a boolean mask.{hint}"
        )
    values = adata.var[column]
    if not (pd.api.types.is_bool_dtype(values.dtype)):
        raise ValueError(
            f"adata.var[{column!r}] holds {values.dtype} values; {what}= needs a boolean "
            "column (True for the genes to use)."
        )
    if values.isna().any():
        raise ValueError(
            f"adata.var[{column!r}] has missing values; fill them with True or False first "
            f"(adata.var[{column!r}] = adata.var[{column!r}].fillna(False))."
        )
    return values.to_numpy(dtype=bool, copy=True)


def _as_array(genes: Any, what: str) -> np.ndarray:
    """A collection of genes as a 1-d array (object for names and mixed values)."""
    if isinstance(genes, pd.Series | pd.Index):
        if pd.api.types.is_bool_dtype(genes.dtype):
            if genes.isna().any():
                raise ValueError(f"{what} is a boolean mask with missing values; fill them.")
            return genes.to_numpy(dtype=bool)
        return np.asarray(genes.to_numpy(), dtype=object).ravel()
    if isinstance(genes, np.ndarray):
        return genes.ravel() if genes.dtype == bool else genes.astype(object).ravel()
    if not isinstance(genes, Iterable):
        raise TypeError(
            f"{what} must be gene names, integer positions, a boolean mask, a var column "
            f"name or None, not {type(genes).__name__}."
        )
    items = list(genes)
    if items and all(isinstance(item, bool | np.bool_) for item in items):
        return np.asarray(items, dtype=bool)
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def _checked_positions(adata: AnnData, positions: np.ndarray, what: str) -> np.ndarray:
    bad = positions[(positions < 0) | (positions >= adata.n_vars)]
    if bad.size:
        raise ValueError(
            f"{what} holds positions outside 0..{adata.n_vars - 1} ({_shown(bad)}); integer "
            "positions count the genes of adata.var_names from 0."
        )
    return positions


def _named(adata: AnnData, names: np.ndarray, gene_symbols: str | None, what: str) -> np.ndarray:
    """Positions of ``names`` in ``var_names``, else in ``var[gene_symbols]``."""
    positions = _lookup(adata.var_names, names, "adata.var_names", what)
    if gene_symbols is not None:
        missing = positions < 0
        symbols = pd.Index(symbols_column(adata, gene_symbols))
        where = f"adata.var[{gene_symbols!r}]"
        positions[missing] = _lookup(symbols, names[missing], where, what, first=True)
    missing = names[positions < 0]
    if missing.size:
        where = "adata.var_names" + (
            f" or adata.var[{gene_symbols!r}]" if gene_symbols is not None else ""
        )
        raise ValueError(
            f"{missing.size} of the requested genes are not in {where}: {_shown(missing)}. "
            "Check the spelling, and whether the names are Ensembl IDs or gene symbols "
            "(gene_symbols= names the var column of symbols, e.g. 'feature_name')."
        )
    return positions


def _lookup(
    index: pd.Index, names: np.ndarray, where: str, what: str, *, first: bool = False
) -> np.ndarray:
    """Position of each name in ``index`` (-1 if absent). A name that ``index`` holds more
    than once is an error (or, with ``first``, its first position)."""
    index = pd.Index(index.astype(str))
    if index.is_unique:
        return index.get_indexer(pd.Index(names.astype(str))).astype(np.int64)
    table = pd.Series(np.arange(index.size), index=index)
    duplicated = index[index.duplicated()].unique()
    asked_twice = np.intersect1d(names.astype(str), duplicated.to_numpy(dtype=str))
    if asked_twice.size and not first:
        raise ValueError(
            f"{where} holds some of the requested {what} more than once "
            f"({_shown(asked_twice)}), so the name does not say which gene; {_UNIQUE_HINT}."
        )
    table = table[~table.index.duplicated()]
    return table.reindex(names.astype(str)).fillna(-1).to_numpy(dtype=np.int64)


def _shown(values: Any) -> str:
    values = list(values)
    return ", ".join(map(repr, values[:5])) + (" ..." if len(values) > 5 else "")
