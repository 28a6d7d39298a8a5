"""GeneVector's other co-expression measures, block by block, without densifying X.

A :class:`MeasureScorer` takes the used genes' values (cells × genes, canonical, values
``>= 0``) and scores blocks of gene pairs like a kernel does, so that every output option
(``top_k``, ``against``, ``groupby``, the cache) works for every measure. Everything comes
from sparse Gram products ``X_I.T @ X_J`` of the block's genes and per-gene sums: work
``O(sum over cells of nnz(cell)^2)``, memory one block.

Conventions (the same for every measure, like ``varp["gv_mi"]``):

- the diagonal is 0 (GeneVector sets it to 0 for cosine and Jaccard, and ignores it for
  every target: a gene's similarity with itself is no co-expression);
- a pair whose measure is undefined gets 0: Pearson and Spearman with a constant gene
  (all zero, or the same value in every cell), cosine with an all-zero gene, Jaccard of
  two genes expressed nowhere (``0 / 0``). This matches the signs of the signed MI, where
  an undefined correlation counts as 0.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from ..._data._binning import sign_constants, varying_genes
from ..._utils import COSINE, JACCARD, PEARSON, SPEARMAN, Method
from ...kernels import PairScores

#: Entries of a block's dense temporaries held at once.
_BLOCK_ENTRIES = 1 << 22


class MeasureScorer:
    """Scores blocks of gene pairs with one of the measures (the interface of a kernel)."""

    def __init__(self, matrix: sparse.csr_matrix, method: Method) -> None:
        matrix = sparse.csc_matrix(matrix)  # gene by gene
        self.method = method
        self.n_genes = matrix.shape[1]
        n_cells = matrix.shape[0]
        if method in (PEARSON, SPEARMAN):
            values = matrix if method == PEARSON else _rank_offsets(matrix)
            values = _shifted_and_scaled(values)
            self._sums = np.asarray(values.sum(axis=0), dtype=np.float64).ravel()
            gram_diagonal = np.asarray(values.multiply(values).sum(axis=0)).ravel()
            scatter = np.maximum(gram_diagonal - self._sums * self._sums / max(n_cells, 1), 0.0)
            defined = varying_genes(matrix)
            self._spread = np.where(defined, np.sqrt(scatter), 0.0)
            self._n_cells = n_cells
        elif method == COSINE:
            values = matrix.astype(np.float64)
            self._norms = np.sqrt(np.asarray(values.multiply(values).sum(axis=0)).ravel())
        elif method == JACCARD:
            values = sparse.csc_matrix(
                (np.ones(matrix.nnz), matrix.indices, matrix.indptr), shape=matrix.shape
            )
            self._sizes = np.diff(matrix.indptr).astype(np.float64)
        else:
            raise ValueError(f"method={method!r} has no measure scorer.")
        self._by_gene = values.T.tocsr()
        self._by_cell = values.tocsr()

    @property
    def preferred_block_rows(self) -> int:
        return max(1, _BLOCK_ENTRIES // max(self.n_genes, 1))

    def scores(self, start: int, stop: int, first_column: int | None = None) -> PairScores:
        """The measure of genes ``start:stop`` against genes ``first_column:`` (see
        :meth:`geneverse.kernels.Kernel.scores`)."""
        first = start if first_column is None else first_column
        gram = (self._by_gene[start:stop] @ self._by_cell[:, first:]).toarray()
        rows, cols = slice(start, stop), slice(first, None)
        if self.method in (PEARSON, SPEARMAN):
            sums_i, sums_j = self._sums[rows, None], self._sums[None, cols]
            numerator = gram - sums_i * sums_j / max(self._n_cells, 1)
            denominator = self._spread[rows, None] * self._spread[None, cols]
            values = np.clip(_divided(numerator, denominator), -1.0, 1.0)
        elif self.method == COSINE:
            values = _divided(gram, self._norms[rows, None] * self._norms[None, cols])
        else:
            union = self._sizes[rows, None] + self._sizes[None, cols] - gram
            values = _divided(gram, union)
        if first == start:
            np.fill_diagonal(values[:, : stop - start], 0.0)
        return PairScores(mi=(values + 0.0).astype(np.float32))


def _divided(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, 0 where the denominator is 0."""
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _shifted_and_scaled(matrix: sparse.csc_matrix) -> sparse.csc_matrix:
    """The values as sign values: genes expressed in every cell centred, every gene scaled
    by a power of two (a correlation does not change; its computation no longer cancels)."""
    n_cells = matrix.shape[0]
    n_expressed = np.diff(matrix.indptr)
    data = matrix.data.astype(np.float64)
    genes = np.repeat(np.arange(matrix.shape[1]), n_expressed)
    sums = np.bincount(genes, weights=data, minlength=matrix.shape[1])
    highest = np.zeros(matrix.shape[1])
    lowest = np.full(matrix.shape[1], np.inf)
    np.maximum.at(highest, genes, data)
    np.minimum.at(lowest, genes, data)
    lowest[n_expressed == 0] = 0.0
    shift, scale = sign_constants(n_expressed, sums, lowest, highest, n_cells)
    values = (data - shift[genes]) * scale[genes]
    return sparse.csc_matrix((values, matrix.indices, matrix.indptr), shape=matrix.shape)


def _rank_offsets(csc: sparse.csc_matrix) -> sparse.csc_matrix:
    """``D``: each nonzero's average rank in its gene minus the zeros' average rank.

    The ranks come in sparse pieces: in a gene with ``z`` nonzero values among ``N``
    cells, all ``N - z`` zeros are tied at the lowest ranks and share the average rank
    ``(N - z + 1) / 2``; a nonzero value with average rank ``p`` among the nonzero values
    (1-based, ties averaged) has rank ``N - z + p``. A column constant does not change a
    Pearson correlation, so Spearman's correlation is Pearson's of ``D = p + (N - z - 1)
    / 2 > 0``, which is as sparse as X (the ranks of ``scipy.stats.spearmanr``).
    """
    n_cells, n_genes = csc.shape
    expressed = np.diff(csc.indptr)
    gene = np.repeat(np.arange(n_genes), expressed)
    order = np.lexsort((csc.data, gene))
    values, gene_sorted = csc.data[order], gene[order]
    position = np.arange(1, order.size + 1) - csc.indptr[gene_sorted]  # 1-based, in gene

    new_run = np.ones(order.size, dtype=bool)
    new_run[1:] = (values[1:] != values[:-1]) | (gene_sorted[1:] != gene_sorted[:-1])
    run = np.cumsum(new_run) - 1
    average = np.bincount(run, weights=position) / np.bincount(run)

    offsets = np.empty(order.size)
    offsets[order] = average[run] + (n_cells - expressed[gene_sorted] - 1) / 2.0
    return sparse.csc_matrix((offsets, csc.indices, csc.indptr), shape=csc.shape)
