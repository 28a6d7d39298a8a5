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
    a block of counts reshapes to ``(genes_I, bins, genes_J, bins)`` and the MI finish is
    a handful of vectorised reductions. Single-threaded (scipy); ``n_jobs`` is ignored.
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

    def count_block(self, start: int, stop: int) -> CountBlock:
        w = self._width
        counts = (self._onehot_t[start * w : stop * w] @ self._onehot)[:, start * w :]
        counts = counts.toarray().astype(np.int64)
        products = np.zeros((stop - start, self.data.n_genes - start))
        if self.signed:
            products = (self._values_t[start:stop] @ self._values)[:, start:].toarray()
        return CountBlock(
            counts=counts.reshape(stop - start, w, self.data.n_genes - start, w),
            products=products,
        )

    def finish_block(self, start: int, block: CountBlock) -> np.ndarray:
        stop = start + self._check_count_block(start, block.counts, block.products, self._width)
        mi = self._finish(block.counts, start, stop)
        if self.signed:
            mi *= self._signs(block.products, start, stop)
        rows = np.arange(stop - start)
        mi[rows, rows] = 0.0
        return mi.astype(np.float32)

    def _finish(self, counts: np.ndarray, start: int, stop: int) -> np.ndarray:
        """MI in bits from the counts, the marginals and the ``m log2 m`` table (§3)."""
        xlogx = self.data.xlogx
        rows, cols = slice(start, stop), slice(start, None)
        in_row_bin = counts.sum(axis=3)  # (i, a, j): cells with i in a and j expressed
        in_col_bin = counts.sum(axis=1)  # (i, j, b)
        both = in_row_bin.sum(axis=1)
        z_i, z_j = self._expressed[rows, None], self._expressed[None, cols]
        n = z_i + z_j - both

        s_joint = xlogx[counts].sum(axis=(1, 3))
        s_joint += xlogx[self._marginals[rows, :, None] - in_row_bin].sum(axis=1)
        s_joint += xlogx[self._marginals[None, cols, :] - in_col_bin].sum(axis=2)
        s_i = xlogx[n - z_i] + self._marginal_xlogx[rows, None]
        s_j = xlogx[n - z_j] + self._marginal_xlogx[None, cols]

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
