"""Per-gene discretisation (docs: "The exact definition", §1): the one place where bins are made.

Every backend receives the bins made here, so the edges and the way a value on an
edge falls are the same everywhere. The edges reproduce ``numpy.percentile`` with its
default linear interpolation bit for bit (including its dtype rules: the difference of
the two neighbours is taken in the input dtype, the interpolation in float64), and a
value ``x`` gets ``searchsorted(edges, x, side="right") + 1``.

Edges come from each gene's distinct values and their multiplicities
(:class:`ValueRuns`), which chunks of cells can compute apart and merge exactly; so a
matrix read chunk by chunk (Dask, backed files) gets the very same bins as in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from ._binned import BinnedGenes


@dataclass(frozen=True)
class ValueRuns:
    """Each gene's distinct values ``> 0``, increasing, and how many cells have each.

    Gene ``g`` owns ``values[run_ptr[g]:run_ptr[g+1]]`` (input dtype) and the matching
    ``counts`` (``int64``).
    """

    run_ptr: np.ndarray
    values: np.ndarray
    counts: np.ndarray

    @property
    def n_genes(self) -> int:
        return self.run_ptr.shape[0] - 1

    @property
    def n_distinct(self) -> np.ndarray:
        """Number of distinct values ``> 0`` of each gene."""
        return np.diff(self.run_ptr)

    def gene_of_run(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_genes), self.n_distinct)

    def n_expressed(self) -> np.ndarray:
        """Cells with a value ``> 0``, per gene."""
        return np.bincount(self.gene_of_run(), weights=self.counts, minlength=self.n_genes)

    def varying_genes(self, n_cells: int) -> np.ndarray:
        """Genes not constant over the ``n_cells`` cells (as :func:`varying_genes`)."""
        n_expressed = self.n_expressed()
        return (n_expressed > 0) & ((n_expressed < n_cells) | (self.n_distinct > 1))

    def value_sums(self) -> np.ndarray:
        """Sum of each gene's values over all cells, in float64, in increasing value order."""
        weights = self.values.astype(np.float64) * self.counts
        return np.bincount(self.gene_of_run(), weights=weights, minlength=self.n_genes)

    def values_at(self, genes: np.ndarray, ranks: np.ndarray) -> np.ndarray:
        """The ``ranks``-th smallest value (0-based, with repeats) of each of ``genes``."""
        ends = np.cumsum(self.counts)
        first_entry = np.concatenate([[0], ends])[self.run_ptr[genes]]
        return self.values[np.searchsorted(ends, first_entry + ranks, side="right")]

    @classmethod
    def of_matrix(cls, matrix: sparse.csr_matrix | sparse.csc_matrix) -> ValueRuns:
        """The runs of a canonical cells × genes matrix (no explicit zeros)."""
        if matrix.format == "csc":
            matrix = sparse.csc_matrix(matrix, copy=True)  # sorted in place below
        else:
            matrix = matrix.tocsc()  # a new matrix: gene by gene
        values = matrix.data
        for start, stop in zip(matrix.indptr[:-1], matrix.indptr[1:], strict=True):
            values[start:stop].sort()  # each gene on its own: n log(n / genes), no argsort
        new_run = np.ones(values.shape[0], dtype=bool)
        new_run[1:] = values[1:] != values[:-1]
        new_run[matrix.indptr[:-1][np.diff(matrix.indptr) > 0]] = True
        first = np.flatnonzero(new_run)
        counts = np.diff(np.append(first, values.shape[0])).astype(np.int64)
        run_ptr = np.searchsorted(first, matrix.indptr).astype(np.int64)
        return cls(run_ptr, values[first], counts)

    @classmethod
    def merge(cls, parts: Sequence[ValueRuns]) -> ValueRuns:
        """The runs of the union of disjoint sets of cells."""
        genes = np.concatenate([part.gene_of_run() for part in parts])
        values = np.concatenate([part.values for part in parts])
        counts = np.concatenate([part.counts for part in parts])
        return cls._from_entries(genes, values, counts, n_genes=parts[0].n_genes)

    @classmethod
    def _from_entries(cls, genes, values, counts, *, n_genes: int) -> ValueRuns:
        by_value = np.argsort(values, kind="stable")
        order = by_value[np.argsort(genes[by_value], kind="stable")]
        genes, values, counts = genes[order], values[order], counts[order]
        starts = np.ones(values.shape[0], dtype=bool)
        starts[1:] = (values[1:] != values[:-1]) | (genes[1:] != genes[:-1])
        first = np.flatnonzero(starts)
        run_ptr = np.zeros(n_genes + 1, dtype=np.int64)
        np.cumsum(np.bincount(genes[first], minlength=n_genes), out=run_ptr[1:])
        return cls(run_ptr, values[first], np.add.reduceat(counts, first) if first.size else counts)


@dataclass(frozen=True)
class GeneBins:
    """What every cell's entries of a gene are turned into, fixed over all cells.

    The bin edges, the bins per gene and the bin counts over all ``n_cells`` cells, and
    the two constants that make each value a *sign value*: ``(x - sign_shift) *
    sign_scale`` (see :class:`~geneverse._data._binned.BinnedGenes`).
    """

    n_cells: int
    edges: np.ndarray
    n_bins: np.ndarray
    bin_counts: np.ndarray
    varies: np.ndarray
    sign_shift: np.ndarray
    sign_scale: np.ndarray

    @classmethod
    def of_runs(cls, runs: ValueRuns, n_cells: int, n_bins: int) -> GeneBins:
        """Edges and marginals from the genes' value runs over ``n_cells`` cells."""
        edges = bin_edges(runs, n_bins)
        n_bins_per_gene = (np.minimum(n_bins, runs.n_distinct) + 1).astype(np.int32)
        max_bins = int(n_bins_per_gene.max(initial=1))
        genes = runs.gene_of_run()
        run_bins = bins_of(runs.values, runs.gene_of_run(), edges)
        bin_counts = np.bincount(
            genes * max_bins + run_bins, weights=runs.counts, minlength=runs.n_genes * max_bins
        ).reshape(runs.n_genes, max_bins)
        shift, scale = _sign_constants(runs, n_cells)
        return cls(
            n_cells=n_cells,
            edges=edges,
            n_bins=n_bins_per_gene,
            bin_counts=bin_counts.astype(np.int64),
            varies=runs.varying_genes(n_cells),
            sign_shift=shift,
            sign_scale=scale,
        )

    def sign_values(self, values: np.ndarray, genes: np.ndarray) -> np.ndarray:
        """The sign values (``float64``) of entries with these ``values`` of these ``genes``
        (in slices, so that no temporary is as large as the entries)."""
        out = np.empty(values.shape[0], dtype=np.float64)
        shifted = bool(self.sign_shift.any())
        for piece in _pieces(values.shape[0]):
            own, x = genes[piece], out[piece]
            x[:] = values[piece]
            if shifted:
                x -= np.take(self.sign_shift, own)
            x *= np.take(self.sign_scale, own)
        return out

    def binned(self, entries: CellEntries) -> BinnedGenes:
        """The kernels' input from every cell's entries, made with these bins."""
        return BinnedGenes.of(
            n_cells=self.n_cells,
            indptr=entries.indptr,
            genes=entries.genes,
            bins=entries.bins,
            values=entries.values,
            n_bins=self.n_bins,
            bin_counts=self.bin_counts,
            varies=self.varies,
        )


@dataclass(frozen=True)
class CellEntries:
    """Some cells' entries, cell-major: their offsets, genes, bins and sign values."""

    indptr: np.ndarray
    genes: np.ndarray
    bins: np.ndarray
    values: np.ndarray


def _sign_constants(runs: ValueRuns, n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """The shift and scale of every gene's sign values, from its value runs."""
    has_values = runs.n_distinct > 0
    highest, lowest = np.zeros(runs.n_genes), np.zeros(runs.n_genes)
    highest[has_values] = runs.values[runs.run_ptr[1:][has_values] - 1]
    lowest[has_values] = runs.values[runs.run_ptr[:-1][has_values]]
    return sign_constants(runs.n_expressed(), runs.value_sums(), lowest, highest, n_cells)


def sign_constants(
    n_expressed: np.ndarray,
    value_sums: np.ndarray,
    lowest: np.ndarray,
    highest: np.ndarray,
    n_cells: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per gene, the shift and the power-of-two scale that make its values sign values.

    A gene expressed in every cell is centred on its mean (no implicit zero moves), which
    removes the cancellation of the one-pass covariance; then every gene is divided by the
    power of two at or above its largest ``|x - shift|``, so that sums of products of sign
    values can neither overflow nor lose the scale of very small values. ``lowest`` and
    ``highest`` are each gene's smallest and largest nonzero value.
    """
    dense = (n_expressed == n_cells) & (n_expressed > 0)
    shift = np.where(dense, value_sums / max(n_cells, 1), 0.0)
    spread = np.maximum(highest - shift, shift - lowest)
    _, exponent = np.frexp(spread)  # spread = m * 2**exponent with 0.5 <= m < 1 (0 for 0)
    return shift, np.ldexp(1.0, -exponent)


def _quantile_fractions(n_bins: int) -> np.ndarray:
    """Row ``k``: the ``k - 1`` inner quantiles of ``k`` bins as numpy computes them, padded."""
    table = np.zeros((n_bins + 1, max(n_bins - 1, 1)))
    for k in range(2, n_bins + 1):
        table[k, : k - 1] = np.true_divide(np.linspace(0, 100, k + 1)[1:-1], 100)
    return table


def bin_edges(runs: ValueRuns, n_bins: int) -> np.ndarray:
    """Edges of every gene: ``numpy.percentile(v, linspace(0, 100, k + 1)[1:-1])``.

    ``k = min(n_bins, distinct values > 0)``; ``float64``, shape
    ``(n_genes, max(n_bins - 1, 0))``, padded with ``+inf``.
    """
    k = np.minimum(n_bins, runs.n_distinct)
    n_edges = np.where(k >= 2, k - 1, 0)
    edges = np.full((runs.n_genes, max(n_bins - 1, 0)), np.inf)

    gene = np.repeat(np.arange(runs.n_genes), n_edges)
    slot = np.arange(gene.shape[0]) - np.repeat(np.cumsum(n_edges) - n_edges, n_edges)
    q = _quantile_fractions(n_bins)[k[gene], slot]

    size = runs.n_expressed().astype(np.int64)[gene]
    virtual = (size - 1) * q
    below = np.floor(virtual).astype(np.int64)
    gamma = virtual - below
    at_end = virtual >= size - 1
    lower = runs.values_at(gene, np.where(at_end, size - 1, below))
    upper = runs.values_at(gene, np.where(at_end, size - 1, below + 1))
    edges[gene, slot] = _lerp(lower, upper, np.where(at_end, 0.0, gamma))
    return edges


def _lerp(lower: np.ndarray, upper: np.ndarray, gamma: np.ndarray) -> np.ndarray:
    """numpy's ``_lerp``: the difference in the input dtype, the rest in float64."""
    difference = (upper - lower).astype(np.float64)
    result = lower.astype(np.float64) + difference * gamma
    high = gamma >= 0.5
    result[high] = upper[high].astype(np.float64) - difference[high] * (1 - gamma[high])
    return result


#: Entries binned at a time (bounds the temporaries of the vectorised steps).
_PIECE = 1 << 20
#: Up to this many edges per gene, an entry's bin is found by comparing it with each edge
#: of its gene, all entries at once; beyond, gene by gene with a binary search.
_COMPARED_EDGES = 32


def _pieces(n: int):
    return (slice(start, min(n, start + _PIECE)) for start in range(0, n, _PIECE))


def bins_of(values: np.ndarray, genes: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The bin of each value of gene ``genes[e]``: ``searchsorted(edges[g], x, "right") + 1``
    (in ``float64``, as the edges; ``edges`` padded with ``+inf``), in any order of entries."""
    bins = np.ones(values.shape[0], dtype=np.uint8)
    n_edges = int(np.count_nonzero(np.isfinite(edges), axis=1).max(initial=0))
    if n_edges > _COMPARED_EDGES:
        for gene in np.unique(genes):
            own = genes == gene
            bins[own] += np.searchsorted(edges[gene], values[own].astype(np.float64), "right")
        return bins
    by_edge = np.ascontiguousarray(edges[:, :n_edges].T)  # one row per edge: cache-friendly
    edge = np.empty(min(_PIECE, values.shape[0]))
    below = np.empty(edge.shape, dtype=bool)
    for piece in _pieces(values.shape[0]):
        x, own, counted = values[piece].astype(np.float64), genes[piece], bins[piece]
        size = x.shape[0]
        for row in by_edge:  # edges <= x: the padding (+inf) never counts
            np.take(row, own, out=edge[:size])
            np.less_equal(edge[:size], x, out=below[:size])
            counted += below[:size]
    return bins


def bin_cells(matrix: sparse.csr_matrix, genes: GeneBins) -> CellEntries:
    """The entries of the cells of ``matrix`` (cells × genes, canonical CSR), binned with
    ``genes``' edges: the kernels' cell-major layout, in the order of the matrix itself."""
    gene_of_entry = matrix.indices.astype(np.int32)  # a copy: the layout owns its arrays
    return CellEntries(
        indptr=matrix.indptr.astype(np.int64),
        genes=gene_of_entry,
        bins=bins_of(matrix.data, gene_of_entry, genes.edges),
        values=genes.sign_values(matrix.data, gene_of_entry),
    )


def varying_genes(matrix: sparse.csr_matrix | sparse.csc_matrix) -> np.ndarray:
    """Genes not constant over the cells of ``matrix`` (their correlation is defined)."""
    n_cells, n_genes = matrix.shape
    if not matrix.nnz:
        return np.zeros(n_genes, dtype=bool)
    csr = sparse.csr_matrix(matrix)
    n_expressed = np.bincount(csr.indices, minlength=n_genes)
    # A gene expressed in every cell has no implicit zeros, so min is its smallest value.
    highest = csr.max(axis=0).toarray().ravel()
    lowest = csr.min(axis=0).toarray().ravel()
    partial = (n_expressed > 0) & (n_expressed < n_cells)
    return partial | ((n_expressed == n_cells) & (highest != lowest))


def bin_genes(matrix: sparse.spmatrix | sparse.sparray, n_bins: int) -> BinnedGenes:
    """Discretise every gene of ``matrix`` (cells × genes) into the kernels' input.

    ``matrix`` holds the used genes' values (validated: finite, ``>= 0``), canonical (no
    duplicates, no explicit zeros, sorted), CSR (the kernels' layout: no copy) or CSC.
    """
    csr = sparse.csr_matrix(matrix)
    genes = GeneBins.of_runs(ValueRuns.of_matrix(csr), csr.shape[0], n_bins)
    return genes.binned(bin_cells(csr, genes))
