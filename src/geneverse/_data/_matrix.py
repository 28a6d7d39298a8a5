"""The matrix to work on: which one (``layer``, ``use_raw``), its used genes' values read in
canonical form (whatever its array type), and the check of those values."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import singledispatch
from typing import Any

import numpy as np
from anndata import AnnData
from scipy import sparse


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

    def in_memory(self) -> sparse.csr_matrix:
        """The used genes' values, cells × used genes, canonical CSR (:func:`used_columns`)."""
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
    if columns.size > 0 and adata.n_obs > np.iinfo(np.int32).max:
        raise ValueError(f"{adata.n_obs} cells are more than geneverse can count (2**31 - 1).")
    source, values, positions = _source(adata, layer, use_raw)
    kind = np.dtype(getattr(values, "dtype", np.dtype(object))).kind
    if kind not in "biuf":
        raise TypeError(
            f"{source} holds {values.dtype} values; geneverse needs numbers "
            "(integer counts or floats, or booleans for detection calls)."
        )
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
def used_columns(values, columns: np.ndarray) -> sparse.csr_matrix:
    """The given columns of ``values`` (cells × genes) as a new, canonical CSR matrix:
    duplicate entries summed (as scipy defines the matrix), no explicit zeros, indices
    sorted. CSR is the kernels' layout: each cell's entries together.

    The user's matrix is never changed. Boolean values become 0/1 and ``float16`` becomes
    ``float32`` (scipy.sparse has neither), exactly.
    """
    raise TypeError(
        f"geneverse cannot read a matrix of type {type(values).__name__}; use a numpy array, "
        "a scipy sparse matrix, a Dask array or a backed .h5ad file."
    )


@used_columns.register(np.ndarray)
def _(values: np.ndarray, columns: np.ndarray) -> sparse.csr_matrix:
    every_column = columns.size == values.shape[1] and (columns == np.arange(columns.size)).all()
    selected = values if every_column else values[:, columns]
    return sparse.csr_matrix(_supported(np.asarray(selected)))  # NaN is an entry: refused later


@used_columns.register(sparse.spmatrix)
@used_columns.register(sparse.sparray)
def _(values, columns: np.ndarray) -> sparse.csr_matrix:
    every_column = columns.size == values.shape[1] and (columns == np.arange(columns.size)).all()
    if values.dtype.kind == "b" or values.dtype == np.float16:
        values = values.astype(_supported_dtype(values.dtype))
    if every_column and _is_canonical_csr(values):  # read as it is: never written to
        return sparse.csr_matrix(values, copy=False)
    matrix = sparse.csr_matrix(values, copy=True)
    if every_column:  # a new matrix all the same, without the cost of indexing every column
        return _canonical(matrix)
    # Select columns after summing duplicates: indexing a matrix with duplicates keeps them.
    matrix.sum_duplicates()
    return _canonical(matrix[:, columns])


def _is_canonical_csr(values) -> bool:
    """A CSR matrix (or array) with sorted indices, no duplicates and no explicit zeros."""
    return values.format == "csr" and values.has_canonical_format and bool(np.all(values.data != 0))


def _supported_dtype(dtype: np.dtype) -> np.dtype:
    """scipy.sparse has no float16 or bool arithmetic: float32 and uint8 hold them exactly."""
    if dtype == np.float16:
        return np.dtype(np.float32)
    if dtype.kind == "b":
        return np.dtype(np.uint8)
    return dtype


def _supported(values: np.ndarray) -> np.ndarray:
    dtype = _supported_dtype(values.dtype)
    return values if dtype == values.dtype else values.astype(dtype)


def _canonical(matrix: sparse.csr_matrix) -> sparse.csr_matrix:
    """Sum duplicates, drop explicit zeros and sort, in place: ``matrix`` is a new one."""
    matrix.sum_duplicates()
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


def check_values(matrix: sparse.csr_matrix, *, source: str, gene_names, cell_names) -> None:
    """The selected values must be numbers, finite and ``>= 0``.

    Names the first offending gene and cell, and says what to use instead.
    """
    data = matrix.data
    for problem, bad in (
        ("NaN", np.isnan(data) if matrix.dtype.kind == "f" else None),
        ("infinite", np.isinf(data) if matrix.dtype.kind == "f" else None),
        ("negative", data < 0),
    ):
        if bad is None or not bad.any():
            continue
        entry = int(np.flatnonzero(bad)[0])
        cell = int(np.searchsorted(matrix.indptr, entry, side="right") - 1)
        gene = int(matrix.indices[entry])
        hint = _SCALED_DATA_HINT if problem == "negative" else _BAD_NUMBER_HINT
        raise ValueError(
            f"{source} contains {problem} values (first: gene {gene_names[gene]!r} in cell "
            f"{cell_names[cell]!r}, value {data[entry]}). {hint}"
        )


def matrix_digest(matrix: sparse.csr_matrix) -> str:
    """The SHA-256 (hex) of a canonical CSR matrix: its shape, dtype and arrays.

    Canonical form makes it a digest of the matrix as scipy defines it: equal matrices
    stored with duplicates, unsorted or with explicit zeros get the same digest.
    """
    digest = hashlib.sha256()
    header = f"{matrix.format} {matrix.shape[0]} {matrix.shape[1]} {matrix.dtype.str}".encode()
    digest.update(len(header).to_bytes(8, "little") + header)
    for part in (matrix.indptr.astype(np.int64), matrix.indices.astype(np.int64), matrix.data):
        array = np.ascontiguousarray(part)
        digest.update(array.nbytes.to_bytes(8, "little"))
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()
