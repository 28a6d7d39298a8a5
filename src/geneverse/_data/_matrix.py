"""Choose the matrix to work on: ``layer`` / ``use_raw`` / ``genes``, whatever its array type."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import singledispatch
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

GeneSelection = None | str | Sequence[str] | np.ndarray | pd.Series | pd.Index


@dataclass(frozen=True)
class Selection:
    """Where the values of the used genes are, before anything is read.

    ``values`` is the array that holds them (``X``, a layer or ``raw.X``: in memory, Dask
    or backed), ``positions`` the column in ``values`` of each used gene and ``columns``
    its position in ``adata.var_names``, both in the order the genes enter the kernel;
    ``source`` names the array for messages (``"adata.X"``, ``"adata.layers['counts']"``).
    """

    values: Any
    positions: np.ndarray
    columns: np.ndarray
    source: str
    use_raw: bool

    def in_memory(self) -> sparse.csc_matrix:
        """The used genes' values, cells × used genes, as CSC without explicit zeros."""
        return used_columns(self.values, self.positions)


def resolve_use_raw(adata: AnnData, layer: str | None, use_raw: bool | None) -> bool:
    """scanpy's rule: ``adata.raw`` when it exists and no ``layer`` is given."""
    if use_raw is None:
        return adata.raw is not None and layer is None
    if use_raw and layer is not None:
        raise ValueError(
            f"use_raw=True and layer={layer!r} name two different matrices; pass only one."
        )
    if use_raw and adata.raw is None:
        raise ValueError(
            "use_raw=True but this AnnData has no .raw; use the default (use_raw=None) or "
            "name a layer with layer='...'."
        )
    return bool(use_raw)


def resolve_genes(adata: AnnData, genes: GeneSelection) -> np.ndarray:
    """The boolean mask over ``adata.var_names`` of the genes to use."""
    n_vars = adata.n_vars
    if genes is None:
        return np.ones(n_vars, dtype=bool)
    if isinstance(genes, str):
        return _var_column_mask(adata, genes)
    values = np.asarray(genes)
    if values.dtype == bool:
        if values.shape != (n_vars,):
            raise ValueError(
                f"genes is a boolean mask of length {values.size}, but the AnnData has "
                f"{n_vars} genes; the mask needs one entry per gene of adata.var_names."
            )
        return values.copy()
    positions = adata.var_names.get_indexer(pd.Index(values.astype(str)))
    missing = [str(name) for name in values[positions < 0]]
    if missing:
        shown = ", ".join(map(repr, missing[:5])) + (" ..." if len(missing) > 5 else "")
        raise ValueError(
            f"{len(missing)} of the requested genes are not in adata.var_names: {shown}. "
            "Check the spelling, or whether the names are Ensembl IDs or symbols."
        )
    mask = np.zeros(n_vars, dtype=bool)
    mask[positions] = True
    return mask


def _var_column_mask(adata: AnnData, column: str) -> np.ndarray:
    if column not in adata.var.columns:
        raise ValueError(
            f"genes={column!r} is not a column of adata.var (columns: "
            f"{list(adata.var.columns)}). Pass a boolean var column such as "
            "'highly_variable', a list of gene names, or a boolean mask."
        )
    values = adata.var[column]
    if values.dtype != bool:
        raise ValueError(
            f"adata.var[{column!r}] holds {values.dtype} values; genes= needs a boolean "
            "column (True for the genes to use)."
        )
    return values.to_numpy(copy=True)


def select_matrix(
    adata: AnnData,
    *,
    layer: str | None,
    use_raw: bool | None,
    columns: np.ndarray | None = None,
) -> Selection:
    """Where the values of the genes at ``columns`` (positions in ``adata.var_names``; all
    when ``None``) are, after checking that there is something to compute on."""
    use_raw = resolve_use_raw(adata, layer, use_raw)
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(
            f"The AnnData is empty ({adata.n_obs} cells × {adata.n_vars} genes); "
            "there is nothing to compute."
        )
    if columns is None:
        columns = np.arange(adata.n_vars)
    if columns.size == 0:
        raise ValueError("No genes are selected (genes= selects none); select at least one.")
    source, values, positions = _source(adata, layer, use_raw)
    return Selection(
        values=values,
        positions=positions[columns],
        columns=columns,
        source=source,
        use_raw=use_raw,
    )


def _source(adata: AnnData, layer: str | None, use_raw: bool):
    """Name and array of the values, and the array's column of each gene of ``adata``."""
    if use_raw:
        positions = adata.raw.var_names.get_indexer(adata.var_names)
        if (positions < 0).any():
            absent = adata.var_names[positions < 0][:5].tolist()
            raise ValueError(
                f"Genes of adata.var_names are missing from adata.raw (e.g. {absent}); "
                "use use_raw=False or a layer."
            )
        return "adata.raw.X", adata.raw.X, positions
    if layer is not None:
        if layer not in adata.layers:
            raise ValueError(
                f"layer={layer!r} is not in adata.layers (layers: {list(adata.layers)}); "
                "use one of those, or layer=None for adata.X."
            )
        return f"adata.layers[{layer!r}]", adata.layers[layer], np.arange(adata.n_vars)
    if adata.X is None:
        raise ValueError("adata.X is empty (None); name a layer with layer='...'.")
    return "adata.X", adata.X, np.arange(adata.n_vars)


@singledispatch
def used_columns(values, columns: np.ndarray) -> sparse.csc_matrix:
    """The given columns of ``values`` as a new CSC matrix without explicit zeros."""
    raise TypeError(
        f"geneverse cannot read a matrix of type {type(values).__name__}; use a numpy array, "
        "a scipy sparse matrix, a Dask array or a backed .h5ad file."
    )


@used_columns.register(np.ndarray)
def _(values: np.ndarray, columns: np.ndarray) -> sparse.csc_matrix:
    # Gene by gene (a transposed copy), the nonzero entries come out in CSC order: no
    # detour through COO, no sorting.
    by_gene = np.ascontiguousarray(_supported(values).T[columns])
    n_cells = values.shape[0]
    entries = np.flatnonzero(by_gene)  # NaN counts as nonzero: the validation rejects it
    indptr = np.zeros(columns.size + 1, dtype=np.int64)
    np.cumsum(np.count_nonzero(by_gene, axis=1), out=indptr[1:])
    cells = (entries % max(n_cells, 1)).astype(np.int32)
    data = by_gene.reshape(-1)[entries]
    return sparse.csc_matrix((data, cells, indptr), shape=(n_cells, columns.size))


@used_columns.register(sparse.spmatrix)
@used_columns.register(sparse.sparray)
def _(values, columns: np.ndarray) -> sparse.csc_matrix:
    every_column = columns.size == values.shape[1] and (columns == np.arange(columns.size)).all()
    if every_column:  # a new matrix all the same, without the cost of indexing every column
        return _clean(sparse.csc_matrix(values, copy=True))
    return _clean(sparse.csc_matrix(values)[:, columns])


def _supported(values: np.ndarray) -> np.ndarray:
    """scipy.sparse has no float16: such values are widened to float32 (exactly)."""
    return values.astype(np.float32) if values.dtype == np.float16 else values


def _clean(matrix: sparse.csc_matrix) -> sparse.csc_matrix:
    """Drop explicit zeros in place: ``matrix`` is always a new one (copied or indexed)."""
    matrix.eliminate_zeros()
    matrix.sort_indices()
    return matrix


_BAD_NUMBER_HINT = (
    "Fix or remove these values (for example with numpy.nan_to_num) before computing MI."
)


_SCALED_DATA_HINT = (
    "Mutual information needs non-negative expression: pass raw counts, a log-normalized "
    "layer (layer='...') or use_raw=True, not scaled or centred data."
)


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
