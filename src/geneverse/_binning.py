"""Per-gene discretisation (DESIGN.md §2.1): the one place where bins are made.

Every backend receives the bins made here, so the edges and the way a value on an
edge falls are the same everywhere. The edges reproduce ``numpy.percentile`` with its
default linear interpolation bit for bit (including its dtype rules: the difference of
the two neighbours is taken in the input dtype, the interpolation in float64), and a
value ``x`` gets ``searchsorted(edges, x, side="right") + 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from .kernels._base import BinnedGenes


@dataclass(frozen=True)
class SortedColumns:
    """The nonzero values of each gene (column), sorted increasingly within the gene.

    ``values[indptr[g]:indptr[g+1]]`` are gene ``g``'s values > 0, in the input dtype.
    """

    indptr: np.ndarray
    values: np.ndarray

    @property
    def n_genes(self) -> int:
        return self.indptr.shape[0] - 1

    def gene_of_entry(self) -> np.ndarray:
        """The gene of every entry of :attr:`values`."""
        return np.repeat(np.arange(self.n_genes), np.diff(self.indptr))

    def run_lengths(self) -> tuple[np.ndarray, np.ndarray]:
        """Counts of each distinct value, gene by gene.

        Returns
        -------
        counts
            How many cells have each distinct value, genes one after the other.
        n_distinct
            Number of distinct values of each gene.
        """
        values, genes = self.values, self.gene_of_entry()
        starts = np.ones(values.shape[0], dtype=bool)
        starts[1:] = (values[1:] != values[:-1]) | (genes[1:] != genes[:-1])
        first = np.flatnonzero(starts)
        counts = np.diff(np.append(first, values.shape[0]))
        n_distinct = np.bincount(genes[first], minlength=self.n_genes)
        return counts, n_distinct


def sort_columns(matrix: sparse.csc_matrix) -> SortedColumns:
    """Sort each gene's nonzero values (``matrix`` is cells × genes, no explicit zeros)."""
    by_value = np.argsort(matrix.data, kind="stable")
    genes = np.repeat(np.arange(matrix.shape[1]), np.diff(matrix.indptr))
    order = by_value[np.argsort(genes[by_value], kind="stable")]
    return SortedColumns(indptr=matrix.indptr.astype(np.int64), values=matrix.data[order])


def _quantile_fractions(n_bins: int) -> np.ndarray:
    """Row ``k``: the ``k - 1`` inner quantiles of ``k`` bins as numpy computes them, padded."""
    table = np.zeros((n_bins + 1, max(n_bins - 1, 1)))
    for k in range(2, n_bins + 1):
        table[k, : k - 1] = np.true_divide(np.linspace(0, 100, k + 1)[1:-1], 100)
    return table


def bin_edges(columns: SortedColumns, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Edges of every gene: ``numpy.percentile(v, linspace(0, 100, k + 1)[1:-1])``.

    Returns
    -------
    edges
        ``float64``, shape ``(n_genes, max(n_bins - 1, 0))``, padded with ``+inf``.
    n_distinct
        Number of distinct values > 0 of every gene (``k = min(n_bins, n_distinct)``).
    """
    _, n_distinct = columns.run_lengths()
    k = np.minimum(n_bins, n_distinct)
    n_edges = np.where(k >= 2, k - 1, 0)
    edges = np.full((columns.n_genes, max(n_bins - 1, 0)), np.inf)

    gene = np.repeat(np.arange(columns.n_genes), n_edges)
    slot = np.arange(gene.shape[0]) - np.repeat(np.cumsum(n_edges) - n_edges, n_edges)
    q = _quantile_fractions(n_bins)[k[gene], slot]

    size = np.diff(columns.indptr)[gene]
    virtual = (size - 1) * q
    below = np.floor(virtual).astype(np.int64)
    gamma = virtual - below
    at_end = virtual >= size - 1
    first = columns.indptr[gene]
    lower = columns.values[first + np.where(at_end, size - 1, below)]
    upper = columns.values[first + np.where(at_end, size - 1, below + 1)]
    edges[gene, slot] = _lerp(lower, upper, np.where(at_end, 0.0, gamma))
    return edges, n_distinct


def _lerp(lower: np.ndarray, upper: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """numpy's ``_lerp``: the difference in the input dtype, the rest in float64."""
    difference = (upper - lower).astype(np.float64)
    result = lower.astype(np.float64) + difference * gamma
    high = gamma >= 0.5
    result[high] = upper[high].astype(np.float64) - difference[high] * (1 - gamma[high])
    return result


def assign_bins(matrix: sparse.csc_matrix, edges: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """Bin of every stored value of ``matrix``: ``searchsorted(edges, x, "right") + 1``."""
    genes = np.repeat(np.arange(matrix.shape[1]), np.diff(matrix.indptr))
    bins = np.ones(matrix.data.shape[0], dtype=np.uint8)
    for start in range(0, bins.shape[0], chunk):
        part = slice(start, start + chunk)
        x = matrix.data[part].astype(np.float64)[:, None]
        bins[part] += (edges[genes[part]] <= x).sum(axis=1, dtype=np.uint8)
    return bins


def xlogx_table(n_cells: int) -> np.ndarray:
    """``m * log2(m)`` for ``m = 0..n_cells`` (0 at ``m = 0``): the one table MI uses."""
    m = np.arange(n_cells + 1, dtype=np.float64)
    return m * np.log2(m, out=np.zeros_like(m), where=m > 0)


def bin_genes(matrix: sparse.csc_matrix, n_bins: int) -> BinnedGenes:
    """Discretise every gene of ``matrix`` (cells × genes) into the kernels' input.

    ``matrix`` holds the used genes' values (validated: finite, ``>= 0``) with no
    explicit zeros; any int or float dtype.
    """
    n_cells, n_genes = matrix.shape
    edges, n_distinct = bin_edges(sort_columns(matrix), n_bins)
    bins = assign_bins(matrix, edges)
    n_bins_per_gene = (np.minimum(n_bins, n_distinct) + 1).astype(np.int32)

    by_cell = sparse.csc_matrix(
        (np.arange(1, bins.shape[0] + 1), matrix.indices, matrix.indptr), shape=matrix.shape
    ).tocsr()
    order = by_cell.data - 1
    values = matrix.data.astype(np.float64)

    genes_of_entry = np.repeat(np.arange(n_genes), np.diff(matrix.indptr))
    max_bins = int(n_bins_per_gene.max(initial=1))
    bin_counts = np.bincount(
        genes_of_entry * max_bins + bins, minlength=n_genes * max_bins
    ).reshape(n_genes, max_bins)
    n_expressed = np.diff(matrix.indptr)
    varies = (n_expressed > 0) & ((n_expressed < n_cells) | (n_distinct > 1))

    return BinnedGenes(
        n_cells=n_cells,
        indptr=by_cell.indptr.astype(np.int64),
        genes=by_cell.indices.astype(np.int32),
        bins=bins[order],
        values=values[order],
        n_bins=n_bins_per_gene,
        bin_counts=bin_counts.astype(np.int64),
        value_sums=np.bincount(genes_of_entry, weights=values, minlength=n_genes).astype(
            np.float64
        ),
        varies=varies,
        xlogx=xlogx_table(n_cells),
    )
