"""The NumPy backend: co-occurrence counts as scipy sparse products (always available)."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from ._base import BinnedGenes, CountBlock, Kernel

#: Entries of the dense count block ``(rows, bins, columns, bins)`` held at once.
_BLOCK_ENTRIES = 1 << 23


class NumpyKernel(Kernel):
    """Counts ``n_ij(a, b)`` as ``Y_I.T @ Y`` with ``Y`` the one-hot of the nonzero bins.

    Every gene gets ``max_bins - 1`` one-hot columns (bins it does not use stay empty), so
    row ``i * w + a - 1`` and column ``j * w + b - 1`` of the product hold ``n_ij(a, b)``.
    The product stays sparse (on typical data a pair shares a few bins at most) and the MI
    is finished from its nonzero counts with a handful of ``bincount`` sums.
    Single-threaded (scipy); ``n_jobs`` is ignored.
    """

    name = "numpy"
    throughput = 2e7

    def __init__(
        self, data: BinnedGenes, *, signed: bool, n_jobs: int, device: str | None = None
    ) -> None:
        super().__init__(data, signed=signed, n_jobs=n_jobs, device=device)
        width = max(data.max_bins - 1, 1)
        self._width = width
        shape = (data.n_cells, data.n_genes * width)
        columns = data.genes.astype(np.int64) * width + data.bins - 1
        ones = np.ones(columns.shape[0], dtype=np.int32)
        self._onehot = sparse.csr_matrix((ones, columns, data.indptr), shape=shape)
        self._onehot_t = self._onehot.T.tocsr()
        if signed:
            values_shape = (data.n_cells, data.n_genes)
            self._values = sparse.csr_matrix((data.values, data.genes, data.indptr), values_shape)
            self._values_t = self._values.T.tocsr()
        self._marginals = data.bin_counts[:, 1 : width + 1]
        self._expressed = data.bin_counts.sum(axis=1)
        self._marginal_xlogx = data.xlogx[self._marginals].sum(axis=1)

    @classmethod
    def unavailable_reason(cls, device: str | None = None) -> str | None:
        return None

    @property
    def preferred_block_rows(self) -> int:
        per_row = self._width**2 * self.data.n_genes
        return max(1, _BLOCK_ENTRIES // per_row)

    def row_block(self, start: int, stop: int) -> np.ndarray:
        """As :meth:`Kernel.row_block`, finished from the sparse product (never densified)."""
        self._check_rows(start, stop)
        counts = self._sparse_counts(start, stop).tocoo()
        return self._signed_mi(
            start, stop, counts.row, counts.col, counts.data, self._products(start, stop)
        )

    def count_block(self, start: int, stop: int) -> CountBlock:
        self._check_rows(start, stop)
        w, n_cols = self._width, self.data.n_genes - start
        counts = self._sparse_counts(start, stop).toarray().astype(np.int64)
        return CountBlock(
            counts=counts.reshape(stop - start, w, n_cols, w),
            products=self._products(start, stop),
        )

    def finish_block(self, start: int, block: CountBlock) -> np.ndarray:
        n_rows = self._check_count_block(start, block.counts, block.products, self._width)
        flat = block.counts.reshape(n_rows * self._width, -1)
        rows, cols = np.nonzero(flat)
        return self._signed_mi(start, start + n_rows, rows, cols, flat[rows, cols], block.products)

    def _sparse_counts(self, start: int, stop: int) -> sparse.csr_matrix:
        """``n_ij(a, b)`` of genes ``start:stop`` against ``start:``, rows and columns in
        order (so that its entries come in the order ``numpy.nonzero`` gives)."""
        w = self._width
        counts = (self._onehot_t[start * w : stop * w] @ self._onehot)[:, start * w :]
        counts.sort_indices()
        return counts

    def _products(self, start: int, stop: int) -> np.ndarray:
        """Sums of the value products of the pairs (zeros when unsigned)."""
        if not self.signed:
            return np.zeros((stop - start, self.data.n_genes - start))
        return (self._values_t[start:stop] @ self._values)[:, start:].toarray()

    def _signed_mi(self, start, stop, rows, cols, counts, products) -> np.ndarray:
        """``float32`` signed MI of a row block from its nonzero counts (row-major order)."""
        mi = self._finish(start, stop, rows, cols, counts)
        if self.signed:
            mi *= self._signs(products, start, stop)
        diagonal = np.arange(stop - start)
        mi[diagonal, diagonal] = 0.0
        return mi.astype(np.float32)

    def _finish(self, start, stop, rows, cols, counts) -> np.ndarray:
        """MI in bits from the nonzero counts ``n_ij(a, b)`` at ``(rows, cols)`` of the
        block's ``(genes · bins) × (genes · bins)`` matrix, the marginals and the
        ``m log2 m`` table (§3)."""
        xlogx, w = self.data.xlogx, self._width
        n_rows, n_cols = stop - start, self.data.n_genes - start
        rows, cols = rows.astype(np.int64), cols.astype(np.int64)
        pair = rows // w * n_cols + cols // w
        weights = counts.astype(np.float64)  # sums of integers below 2**53: exact

        def summed(index, values, shape):
            sums = np.bincount(index, values, minlength=int(np.prod(shape)))
            return sums.astype(np.float64, copy=False).reshape(shape)

        both = summed(pair, weights, (n_rows, n_cols)).astype(np.int64)
        in_row_bin = summed(rows * n_cols + cols // w, weights, (n_rows, w, n_cols))
        in_col_bin = summed(pair * w + cols % w, weights, (n_rows, n_cols, w))
        z_i, z_j = self._expressed[start:stop, None], self._expressed[None, start:]
        n = z_i + z_j - both

        s_joint = summed(pair, xlogx[counts], (n_rows, n_cols))
        s_joint += xlogx[self._marginals[start:stop, :, None] - in_row_bin.astype(np.int64)].sum(
            axis=1
        )
        s_joint += xlogx[self._marginals[None, start:, :] - in_col_bin.astype(np.int64)].sum(axis=2)
        s_i = xlogx[n - z_i] + self._marginal_xlogx[start:stop, None]
        s_j = xlogx[n - z_j] + self._marginal_xlogx[None, start:]

        safe_n = np.maximum(n, 1)
        mi = np.log2(safe_n) + (s_joint - s_i - s_j) / safe_n
        return np.where(n > 0, np.maximum(mi, 0.0), 0.0)

    def _signs(self, products: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Sign of each pair's Pearson correlation over all cells; 0 when undefined."""
        data = self.data
        sums = data.value_sums
        covariance = data.n_cells * products - sums[start:stop, None] * sums[None, start:]
        defined = data.varies[start:stop, None] & data.varies[None, start:]
        return np.sign(covariance) * defined
