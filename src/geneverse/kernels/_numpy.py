"""The ``numpy`` backend: co-occurrence counts as scipy sparse products (always available)."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from .._data._binned import BinnedGenes
from .._utils import NUMPY
from ._base import SIGN_TOLERANCE, Kernel, PairScores, Scoring

#: Entries of the ``(rows, columns, bins)`` temporaries of a block held at once.
_BLOCK_ENTRIES = 1 << 22
_LN2 = float(np.log(2.0))


class NumpyKernel(Kernel):
    """Counts ``n_ij(a, b)`` as ``Y_I.T @ Y_J`` with ``Y`` the one-hot of the nonzero bins.

    Every gene gets ``max_bins - 1`` one-hot columns (bins it does not use stay empty), so
    row ``i * w + a - 1`` and column ``j * w + b - 1`` of the product hold ``n_ij(a, b)``.
    The product stays sparse (on typical data a pair shares a few bins at most); the
    scores are finished from its nonzero counts with ``bincount`` sums, in the order of
    operations of the docs page "How the scores are computed" (scipy's product and
    ``bincount`` add in the order of their inputs, which is that order).
    Single-threaded (scipy); ``n_jobs`` does not change anything.
    """

    name = NUMPY
    throughput = 2e7

    def __init__(
        self, data: BinnedGenes, scoring: Scoring, *, n_jobs: int, device: str | None = None
    ) -> None:
        super().__init__(data, scoring, n_jobs=n_jobs, device=device)
        width = max(data.max_bins - 1, 1)
        self._width = width
        shape = (data.n_cells, data.n_genes * width)
        columns = data.genes.astype(np.int64) * width + data.bins - 1
        ones = np.ones(columns.shape[0], dtype=np.int32)
        self._onehot = sparse.csr_matrix((ones, columns, data.indptr), shape=shape)
        self._onehot_t = self._onehot.T.tocsr()
        if scoring.signed:
            values_shape = (data.n_cells, data.n_genes)
            self._values = sparse.csr_matrix((data.values, data.genes, data.indptr), values_shape)
            self._values_t = self._values.T.tocsr()
        self._marginals = np.zeros((data.n_genes, width), dtype=np.int64)
        self._marginals[:, : data.max_bins - 1] = data.bin_counts[:, 1:]

    @classmethod
    def unavailable_reason(cls, device: str | None = None) -> str | None:
        return None

    @property
    def preferred_block_rows(self) -> int:
        per_row = self._width * max(self.data.n_genes, 1)
        return max(1, _BLOCK_ENTRIES // per_row)

    def scores(self, start: int, stop: int, first_column: int | None = None) -> PairScores:
        first = self._columns(start, stop, first_column)
        scores = _finish(self._block_counts(start, stop, first), self.data, self.scoring)
        if first == start:
            _mirror(scores, stop - start)
        return scores

    def _block_counts(self, start: int, stop: int, first: int) -> _BlockCounts:
        """The nonzero counts and the value products of rows ``start:stop`` × ``first:``."""
        w = self._width
        product = self._onehot_t[start * w : stop * w] @ self._onehot[:, first * w :]
        product.sort_indices()  # row-major: b increasing within (i, a, j)
        counts = product.tocoo()
        products = None
        if self.scoring.signed:
            products = (self._values_t[start:stop] @ self._values[:, first:]).toarray()
        return _BlockCounts(
            rows=(start, stop),
            first=first,
            width=w,
            row=counts.row.astype(np.int64),
            col=counts.col.astype(np.int64),
            count=counts.data.astype(np.int64),
            marginals=self._marginals,
            products=products,
        )


class _BlockCounts:
    """A block's nonzero co-occurrence counts (in row-major order) and value products."""

    def __init__(self, *, rows, first, width, row, col, count, marginals, products) -> None:
        self.start, self.stop = rows
        self.first = first
        self.width = width
        self.n_rows = self.stop - self.start
        self.n_cols = marginals.shape[0] - first
        self.row, self.col, self.count = row, col, count
        self.marginals = marginals
        self.products = products
        #: The flat pair (``r * n_cols + c``) of each count.
        self.pair = row // width * self.n_cols + col // width

    def per_bin(self, index: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """``weights`` summed per pair and bin (``index`` the bin), ``(rows, cols, width)``."""
        flat = self.pair * self.width + index
        size = self.n_rows * self.n_cols * self.width
        return np.bincount(flat, weights, minlength=size).reshape(
            self.n_rows, self.n_cols, self.width
        )


def _finish(block: _BlockCounts, data: BinnedGenes, scoring: Scoring) -> PairScores:
    """The fused finish of the docs, vectorised over the block's pairs."""
    xlogx, w = data.xlogx, block.width
    rows, cols = slice(block.start, block.stop), slice(block.first, None)
    a, b = block.row % w, block.col % w
    within = block.per_bin(a, xlogx[block.count])  # t_a, b increasing
    in_row = block.per_bin(a, block.count.astype(np.float64)).astype(np.int64)  # r_a
    in_col = block.per_bin(b, block.count.astype(np.float64)).astype(np.int64)  # k_b
    only_row = block.marginals[rows][:, None, :] - in_row  # u_a = n_i(a) - r_a
    only_col = block.marginals[cols][None, :, :] - in_col  # v_b = n_j(b) - k_b

    s = np.zeros((block.n_rows, block.n_cols))
    for bin_ in range(w):
        s += within[:, :, bin_] + xlogx[only_row[:, :, bin_]]
    for bin_ in range(w):
        s += xlogx[only_col[:, :, bin_]]
    size = block.n_rows * block.n_cols
    occupied = np.bincount(block.pair, minlength=size).reshape(block.n_rows, block.n_cols)
    occupied += np.count_nonzero(only_row, axis=2) + np.count_nonzero(only_col, axis=2)

    z_i, z_j = data.expressed[rows, None], data.expressed[None, cols]
    either = z_i + z_j - in_row.sum(axis=2)
    n_cells = data.n_cells
    if scoring.include_zeros:
        total = np.full_like(either, n_cells)
        neither = n_cells - either
        s_table = s + xlogx[neither]
        occupied += neither > 0
    else:
        total, s_table = either, s
    mi = _plugin(s_table, total, z_i, z_j, data, rows, cols)
    if scoring.miller_madow:
        y_i, y_j = total - z_i, total - z_j
        m_i = data.occupied[rows, None] + (y_i > 0)
        m_j = data.occupied[None, cols] + (y_j > 0)
        safe = np.maximum(total, 1)
        correction = (m_i + m_j - occupied - 1).astype(np.float64) / ((2.0 * safe) * _LN2)
        mi = np.where(total > 0, mi + correction, 0.0)
    mi = np.maximum(mi, 0.0)
    if scoring.signed:
        mi = mi * _signs(block.products, data, rows, cols)
    mi = mi + 0.0  # no -0.0
    statistic = dof = None
    if scoring.g_test:
        statistic, dof = _g_test(s + xlogx[n_cells - either], z_i, z_j, data, rows, cols)
    return PairScores(mi=mi.astype(np.float32), statistic=statistic, dof=dof)


def _plugin(s_table, total, z_i, z_j, data: BinnedGenes, rows, cols) -> np.ndarray:
    """``log2[T] + ((S - s_i) - s_j) / T``, 0 where ``T`` is 0 (not yet clipped)."""
    xlogx = data.xlogx
    s_i = xlogx[total - z_i] + data.bins_xlogx[rows, None]
    s_j = xlogx[total - z_j] + data.bins_xlogx[None, cols]
    safe = np.maximum(total, 1)
    log2 = data.log2[np.minimum(safe, data.n_cells)]  # no cell at all: no pair counted
    mi = log2 + ((s_table - s_i) - s_j) / safe
    return np.where(total > 0, mi, 0.0)


def _signs(products: np.ndarray, data: BinnedGenes, rows, cols) -> np.ndarray:
    """The sign of each pair's correlation, 0 when undefined or 0 to working precision."""
    n_cells = float(data.n_cells)
    sums_i, sums_j = data.value_sums[rows, None], data.value_sums[None, cols]
    norms_i, norms_j = data.value_norms[rows, None], data.value_norms[None, cols]
    covariance = n_cells * products - sums_i * sums_j
    bound = SIGN_TOLERANCE * (n_cells * norms_i * norms_j + np.abs(sums_i * sums_j))
    defined = data.varies[rows, None] & data.varies[None, cols] & (np.abs(covariance) > bound)
    return np.sign(covariance) * defined


def _g_test(s_full, z_i, z_j, data: BinnedGenes, rows, cols):
    """Williams-corrected G of each pair's full table, and its degrees of freedom."""
    n_cells = data.n_cells
    total = np.full(s_full.shape, n_cells)
    plugin = np.maximum(_plugin(s_full, total, z_i, z_j, data, rows, cols), 0.0)
    g = plugin * ((2.0 * n_cells) * _LN2)
    levels = data.occupied + (data.expressed < n_cells)
    dof = (levels[rows, None] - 1) * (levels[None, cols] - 1)
    inverse_i, inverse_j = data.full_inverse[rows, None], data.full_inverse[None, cols]
    tested = dof > 0
    q = 1.0 + ((n_cells * inverse_i - 1.0) * (n_cells * inverse_j - 1.0)) / (
        (6.0 * n_cells) * np.maximum(dof, 1)
    )
    statistic = np.where(tested, g / q, 0.0)
    return statistic, dof.astype(np.int32)


def _mirror(scores: PairScores, n: int) -> None:
    """A row block left of its diagonal mirrors the rows above; its diagonal is 0."""
    for values in (scores.mi, scores.statistic, scores.dof):
        if values is None:
            continue
        square = values[:, :n]
        lower = np.tril_indices(n, -1)
        square[lower] = square.T[lower]
        np.fill_diagonal(square, 0)
