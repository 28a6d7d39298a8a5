"""The kernels' input: the genes' nonzero bins, cell by cell, and the per-gene tables.

Every number a kernel's finish needs beyond the pair's own counts is computed here, once,
by one function (:meth:`BinnedGenes.of`), so that every backend finishes with the very
same tables and gives the same bits (see the docs page "How the scores are computed").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BinnedGenes:
    """The input of every kernel: one CSR row per cell, the used genes as columns.

    Build it with :meth:`of`, which derives the per-gene tables from the entries.

    Attributes
    ----------
    n_cells
        Number of cells (rows), all of them, expressed or not.
    indptr
        ``int64``, shape ``(n_cells + 1,)``: cell ``c`` owns entries ``indptr[c]:indptr[c+1]``.
    genes
        ``int32``, the gene (column, ``0..n_genes-1``) of each entry, strictly increasing
        within a cell.
    bins
        ``uint8``, the bin of each entry, ``1..n_bins[gene]-1`` (bin 0, not expressed, is
        never stored).
    values
        ``float64``, the *sign value* of each entry, from which the Pearson signs are
        computed: the gene's value ``x``, centred (``x - mean``) when the gene is
        expressed in every cell, then divided by a power of two so that every sign value
        lies in ``[-1, 1]``. Neither changes the sign of a correlation, and neither can
        overflow or cancel catastrophically.
    n_bins
        ``int32``, shape ``(n_genes,)``: bins per gene, counting the zero bin.
    bin_counts
        ``int64``, shape ``(n_genes, max_bins)``: ``bin_counts[g, a]`` is the number of cells
        with gene ``g`` in bin ``a`` (column 0 is unused and 0).
    varies
        ``bool``, shape ``(n_genes,)``: the gene is not constant over the cells, so its
        Pearson correlation with another gene is defined.
    value_sums
        ``float64``: each gene's sign values summed over the cells, in increasing cell order.
    value_norms
        ``float64``: ``sqrt`` of each gene's sum of squared sign values (same order).
    expressed
        ``int64``: cells expressing each gene, ``z_g = sum_{a >= 1} bin_counts[g, a]``.
    bins_xlogx
        ``float64``: ``sum_{a >= 1} xlogx[bin_counts[g, a]]``, ``a`` increasing.
    occupied
        ``int64``: the gene's nonzero bins that some cell is in.
    full_inverse
        ``float64``: ``sum 1 / bin_counts[g, a]`` over the occupied bins ``a >= 1`` (``a``
        increasing), plus ``1 / (n_cells - z_g)`` when some cell does not express the gene:
        the sum over the occupied rows of the gene's full table (Williams' correction).
    xlogx
        ``float64``, shape ``(n_cells + 1,)``: ``xlogx[m] = m * log2(m)`` (0 for ``m = 0``).
    log2
        ``float64``, shape ``(n_cells + 1,)``: ``log2(m)`` (0 for ``m = 0``).
    """

    n_cells: int
    indptr: np.ndarray
    genes: np.ndarray
    bins: np.ndarray
    values: np.ndarray
    n_bins: np.ndarray
    bin_counts: np.ndarray
    varies: np.ndarray
    value_sums: np.ndarray
    value_norms: np.ndarray
    expressed: np.ndarray
    bins_xlogx: np.ndarray
    occupied: np.ndarray
    full_inverse: np.ndarray
    xlogx: np.ndarray
    log2: np.ndarray

    @classmethod
    def of(
        cls,
        *,
        n_cells: int,
        indptr: np.ndarray,
        genes: np.ndarray,
        bins: np.ndarray,
        values: np.ndarray,
        n_bins: np.ndarray,
        bin_counts: np.ndarray,
        varies: np.ndarray,
    ) -> BinnedGenes:
        """The kernels' input from its entries (cell-major), bins per gene and bin counts.

        Derives ``value_sums``, ``value_norms`` and the per-gene tables of the finish.
        """
        n_genes = int(np.asarray(n_bins).shape[0])
        genes = _contiguous(genes, np.int32)
        values = _contiguous(values, np.float64)
        bin_counts = _contiguous(bin_counts, np.int64)
        value_sums, squares = _sums_and_squares(genes, values, n_genes)
        xlogx, log2 = _tables(n_cells)
        nonzero_bins = bin_counts[:, 1:]
        expressed = nonzero_bins.sum(axis=1)
        inverse = np.divide(
            1.0, nonzero_bins, out=np.zeros(nonzero_bins.shape), where=nonzero_bins > 0
        )
        unexpressed = n_cells - expressed
        zero_bin = np.divide(1.0, unexpressed, out=np.zeros(n_genes), where=unexpressed > 0)
        return cls(
            n_cells=int(n_cells),
            indptr=_contiguous(indptr, np.int64),
            genes=genes,
            bins=_contiguous(bins, np.uint8),
            values=values,
            n_bins=_contiguous(n_bins, np.int32),
            bin_counts=bin_counts,
            varies=_contiguous(varies, np.bool_),
            value_sums=value_sums.astype(np.float64),
            value_norms=np.sqrt(squares),
            expressed=expressed.astype(np.int64),
            bins_xlogx=_sequential_sums(xlogx[nonzero_bins]),
            occupied=np.count_nonzero(nonzero_bins, axis=1).astype(np.int64),
            full_inverse=_sequential_sums(np.column_stack([inverse, zero_bin])),
            xlogx=xlogx,
            log2=log2,
        )

    @property
    def n_genes(self) -> int:
        """Number of genes (columns)."""
        return int(self.n_bins.shape[0])

    @property
    def max_bins(self) -> int:
        """Largest number of bins of any gene, counting the zero bin."""
        return int(self.bin_counts.shape[1])


#: Entries summed at a time by ``_sums_and_squares``.
_PIECE = 1 << 22


def _sums_and_squares(genes: np.ndarray, values: np.ndarray, n_genes: int):
    """Each gene's sum of values and of squared values: in increasing cell order within
    each slice of entries, slice after slice (a fixed order, whatever the backend)."""
    sums, squares = np.zeros(n_genes), np.zeros(n_genes)
    for start in range(0, values.shape[0], _PIECE):
        own, x = genes[start : start + _PIECE], values[start : start + _PIECE]
        sums += np.bincount(own, weights=x, minlength=n_genes)
        squares += np.bincount(own, weights=x * x, minlength=n_genes)
    return sums, squares


def _contiguous(array, dtype) -> np.ndarray:
    """``array`` as a C-contiguous, aligned array of ``dtype`` (a copy only when it is not):
    what every kernel borrows. Arrays unpickled on a Dask worker may be unaligned."""
    return np.require(array, dtype=dtype, requirements=["C_CONTIGUOUS", "ALIGNED"])


def _tables(n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """``m * log2(m)`` and ``log2(m)`` for ``m = 0..n_cells`` (0 at ``m = 0``)."""
    m = np.arange(n_cells + 1, dtype=np.float64)
    log2 = np.log2(m, out=np.zeros_like(m), where=m > 0)
    return m * log2, log2


def _sequential_sums(terms: np.ndarray) -> np.ndarray:
    """Row sums added left to right (``numpy.sum`` adds pairwise): the kernels' order."""
    if terms.shape[1] == 0:
        return np.zeros(terms.shape[0])
    return np.ascontiguousarray(np.cumsum(terms, axis=1)[:, -1])
