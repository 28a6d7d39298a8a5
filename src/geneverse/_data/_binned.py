"""The kernels' input: the genes' nonzero bins, cell by cell, and their marginals."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BinnedGenes:
    """The input of every kernel: one CSR row per cell, the used genes as columns.

    Attributes
    ----------
    n_cells
        Number of cells (rows), all of them, expressed or not.
    indptr
        ``int64``, shape ``(n_cells + 1,)``: cell ``c`` owns entries ``indptr[c]:indptr[c+1]``.
    genes
        ``int32``, the gene (column, ``0..n_genes-1``) of each entry, increasing within a cell.
    bins
        ``uint8``, the bin of each entry, ``1..n_bins[gene]-1`` (bin 0, not expressed, is
        never stored).
    values
        ``float64``, the expression value of each entry (used for the Pearson signs).
    n_bins
        ``int32``, shape ``(n_genes,)``: bins per gene, counting the zero bin.
    bin_counts
        ``int64``, shape ``(n_genes, max_bins)``: ``bin_counts[g, a]`` is the number of cells
        with gene ``g`` in bin ``a`` (column 0 is unused and 0).
    value_sums
        ``float64``, shape ``(n_genes,)``: sum of each gene's values over all cells.
    varies
        ``bool``, shape ``(n_genes,)``: the gene is not constant over the cells, so its
        Pearson correlation with another gene is defined.
    xlogx
        ``float64``, shape ``(n_cells + 1,)``: ``xlogx[m] = m * log2(m)`` (0 for ``m = 0``),
        the one table every kernel finishes MI with.
    """

    n_cells: int
    indptr: np.ndarray
    genes: np.ndarray
    bins: np.ndarray
    values: np.ndarray
    n_bins: np.ndarray
    bin_counts: np.ndarray
    value_sums: np.ndarray
    varies: np.ndarray
    xlogx: np.ndarray

    @property
    def n_genes(self) -> int:
        """Number of genes (columns)."""
        return int(self.n_bins.shape[0])

    @property
    def max_bins(self) -> int:
        """Largest number of bins of any gene, counting the zero bin."""
        return int(self.bin_counts.shape[1])
