"""The ``numba`` backend: the co-occurrence scan of DESIGN.md §3 as a parallel JIT loop.

For every gene ``i`` of a row block (genes spread over the threads) the kernel walks the
cells expressing ``i`` and, in each, the genes ``j >= i`` expressed there, adding one to
``counts[a, j, b]`` (``a``, ``b`` the two nonzero bins, minus 1).
The buffer is bin-of-``i``-major, so the increments of one cell land in one
``n_cols * max_bins`` slab that stays in cache. The work is ``sum nnz(cell)**2 / 2``
increments, never ``n_genes**2 * n_cells``. Each gene's row is then finished in float64
from its counts, the marginals and the shared ``xlogx`` table.

The fused :meth:`NumbaKernel.row_block` counts a row into a per-thread buffer, finishes
it and zeroes the buffer while it reads it; :meth:`NumbaKernel.count_block` keeps the
counts of every row (a :class:`~geneverse.kernels._base.CountBlock`, which chunks of
cells add up) and :meth:`NumbaKernel.finish_block` finishes them. Both finish a row with
the same two compiled functions, in the same order, so that
``finish_block(start, count_block(start, stop))`` equals ``row_block(start, stop)`` bit for
bit, and so does the finish of counts summed over chunks of the cells.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from ._base import BinnedGenes, CountBlock, Kernel

try:
    import numba
except ImportError as _error:  # pragma: no cover - numba is a dependency
    numba = None
    _IMPORT_ERROR: ImportError | None = _error
else:
    _IMPORT_ERROR = None

_prange = numba.prange if numba is not None else range

#: Tasks per thread: genes differ in how many cells express them, so more tasks than
#: threads keeps every thread busy to the end.
_TASKS_PER_THREAD = 8


def _count_gene(i, start, counts, gram, data, index, signed):  # pragma: no cover
    """Add gene ``i``'s co-occurrences with the genes ``j >= i`` into ``counts`` (and ``gram``).

    Column ``j - start`` of the buffers is gene ``j``. Within a cell, the entries after
    gene ``i``'s own are exactly the genes ``j > i`` (genes increase within a cell).
    """
    genes, bins, values = data
    g_ptr, g_pos, g_end = index
    for k in range(g_ptr[i], g_ptr[i + 1]):
        p = g_pos[k]
        slab = counts[bins[p] - 1]
        for q in range(p, g_end[k]):
            slab[genes[q] - start, bins[q] - 1] += 1
    if signed:
        for k in range(g_ptr[i], g_ptr[i + 1]):
            p = g_pos[k]
            v_i = values[p]
            for q in range(p, g_end[k]):
                gram[genes[q] - start] += v_i * values[q]


def _joint_sums(counts, lo, nb_i, bc_i, xlogx, s_joint, both, col, clear):  # pragma: no cover
    """Per column ``lo:``: the joint ``sum xlogx`` and co-expressing cells of one row.

    ``counts`` is the row's ``(bins of i, columns, bins of j)`` counts. ``s_joint`` gets
    ``sum_a (sum_b xlogx[n_ij(a,b)] + xlogx[n_i(a) - sum_b n_ij(a,b)])``, ``col`` the sums
    over ``a``, ``both`` the total. With ``clear`` the counts read are set back to 0 (the
    fused path's reused buffer). Each bin-of-``i`` slab of ``counts`` is walked linearly
    and without branches: bins a gene does not have hold zero counts and
    ``xlogx[0] == 0``, so they add nothing.
    """
    n_cols, n_nz = counts.shape[1], counts.shape[2]
    s_joint[lo:] = 0.0
    both[lo:] = 0
    col[lo:] = 0
    for a in range(nb_i):
        slab = counts[a]
        x_a = bc_i[a + 1]
        for j_col in range(lo, n_cols):
            s = 0.0
            r = 0
            for b in range(n_nz):
                m = slab[j_col, b]
                s += xlogx[m]
                r += m
                col[j_col, b] += m
            if clear:
                for b in range(n_nz):
                    slab[j_col, b] = 0
            s_joint[j_col] += s + xlogx[x_a - r]
            both[j_col] += r


def _finish_row(i, start, out_row, gram, s_joint, both, col, stats, signed):  # pragma: no cover
    """MI of gene ``i`` with the genes ``j >= i`` from the joint sums (§3) and the gram."""
    n_bins, bin_counts, expressed, s_bins, value_sums, varies, xlogx, n_cells = stats
    for j_col in range(i - start, out_row.shape[0]):
        j = start + j_col
        bc_j = bin_counts[j]
        s = s_joint[j_col]
        for b in range(n_bins[j] - 1):
            s += xlogx[bc_j[b + 1] - col[j_col, b]]
        n = expressed[i] + expressed[j] - both[j_col]
        if j == i or n == 0:
            out_row[j_col] = 0.0
            continue
        s_i = xlogx[n - expressed[i]] + s_bins[i]
        s_j = xlogx[n - expressed[j]] + s_bins[j]
        mi = max(math.log2(n) + (s - s_i - s_j) / n, 0.0)
        if signed and mi > 0.0:  # 0 keeps no sign (never -0.0)
            cov = n_cells * gram[j_col] - value_sums[i] * value_sums[j]
            if not (varies[i] and varies[j]) or cov == 0.0:
                mi = 0.0
            elif cov < 0.0:
                mi = -mi
        out_row[j_col] = mi


def _mirror_rows(out):  # pragma: no cover
    """Left of the diagonal, a row block is the transpose of the rows above."""
    for r in _prange(out.shape[0]):
        for c in range(r):
            out[r, c] = out[c, r]


def _row_block(start, stop, data, index, stats, signed, n_tasks, max_nz_bins):  # pragma: no cover
    """Signed MI of genes ``start:stop`` against ``start:`` (see :meth:`NumbaKernel.row_block`).

    Each row is computed for ``j >= i`` only; the part left of the diagonal is copied from
    the rows above it at the end.
    """
    n_bins, bin_counts, xlogx = stats[0], stats[1], stats[6]
    n_rows = stop - start
    n_cols = n_bins.shape[0] - start
    out = np.zeros((n_rows, n_cols), dtype=np.float32)
    for task in _prange(n_tasks):
        counts = np.zeros((max_nz_bins, n_cols, max_nz_bins), dtype=np.int32)
        gram = np.zeros(n_cols, dtype=np.float64)
        s_joint = np.empty(n_cols, dtype=np.float64)
        both = np.empty(n_cols, dtype=np.int64)
        col = np.empty((n_cols, max_nz_bins), dtype=np.int64)
        for r in range(task, n_rows, n_tasks):
            i = start + r
            _count_gene(i, start, counts, gram, data, index, signed)
            _joint_sums(counts, r, n_bins[i] - 1, bin_counts[i], xlogx, s_joint, both, col, True)
            _finish_row(i, start, out[r], gram, s_joint, both, col, stats, signed)
            gram[r:] = 0.0
    _mirror_rows(out)
    return out


def _count_block(start, stop, data, index, signed, max_nz_bins, n_genes):  # pragma: no cover
    """Counts and gram of genes ``start:stop`` against ``start:`` (a ``CountBlock``'s arrays).

    Each row is counted for ``j >= i`` (as the fused path); the part left of the diagonal
    is the transpose of the rows above it.
    """
    n_rows, n_cols = stop - start, n_genes - start
    counts = np.zeros((n_rows, max_nz_bins, n_cols, max_nz_bins), dtype=np.int64)
    products = np.zeros((n_rows, n_cols), dtype=np.float64)
    for r in _prange(n_rows):
        _count_gene(start + r, start, counts[r], products[r], data, index, signed)
    for r in _prange(n_rows):
        for c in range(r):
            products[r, c] = products[c, r]
            for a in range(max_nz_bins):
                for b in range(max_nz_bins):
                    counts[r, a, c, b] = counts[c, b, r, a]
    return counts, products


def _finish_block(start, counts, products, stats, signed, n_tasks):  # pragma: no cover
    """Signed MI of a row block from its counts and gram, with the fused path's finish."""
    n_bins, bin_counts, xlogx = stats[0], stats[1], stats[6]
    n_rows, max_nz_bins, n_cols = counts.shape[0], counts.shape[1], counts.shape[2]
    out = np.zeros((n_rows, n_cols), dtype=np.float32)
    for task in _prange(n_tasks):
        s_joint = np.empty(n_cols, dtype=np.float64)
        both = np.empty(n_cols, dtype=np.int64)
        col = np.empty((n_cols, max_nz_bins), dtype=np.int64)
        for r in range(task, n_rows, n_tasks):
            i = start + r
            row = counts[r]
            _joint_sums(row, r, n_bins[i] - 1, bin_counts[i], xlogx, s_joint, both, col, False)
            _finish_row(i, start, out[r], products[r], s_joint, both, col, stats, signed)
    _mirror_rows(out)
    return out


if numba is not None:
    _joint_sums = numba.njit(cache=True)(_joint_sums)
    _count_gene = numba.njit(cache=True)(_count_gene)
    _finish_row = numba.njit(cache=True)(_finish_row)
    _mirror_rows = numba.njit(parallel=True, cache=True)(_mirror_rows)
    _row_block = numba.njit(parallel=True, cache=True)(_row_block)
    _count_block = numba.njit(parallel=True, cache=True)(_count_block)
    _finish_block = numba.njit(parallel=True, cache=True)(_finish_block)


class NumbaKernel(Kernel):
    """Co-occurrence counting with a parallel Numba loop (``backend="numba"``).

    ``n_jobs`` sets Numba's threads for the duration of each :meth:`row_block`,
    :meth:`count_block` and :meth:`finish_block` call (capped at
    ``numba.config.NUMBA_NUM_THREADS``); the previous setting is restored afterwards.
    The kernel may be built on data with no entries (a summary of the marginals, see
    :meth:`~geneverse._binning.GeneBins.summary`) to finish counts made elsewhere.
    """

    name = "numba"

    def __init__(
        self, data: BinnedGenes, *, signed: bool, n_jobs: int, device: str | None = None
    ) -> None:
        super().__init__(data, signed=signed, n_jobs=n_jobs, device=device)
        self._threads = _thread_count(n_jobs)
        self._data = (
            np.ascontiguousarray(data.genes, dtype=np.int32),
            np.ascontiguousarray(data.bins, dtype=np.uint8),
            np.ascontiguousarray(data.values, dtype=np.float64),
        )
        self._index = _gene_index(data)
        self._stats = _gene_stats(data)
        self._max_nz_bins = max(data.max_bins - 1, 1)

    @classmethod
    def unavailable_reason(cls, device: str | None = None) -> str | None:
        """``None`` when numba imports (CPU only); else why not and how to fix it."""
        if device not in (None, "cpu"):
            return f"it runs on the CPU only (got device={device!r})."
        if _IMPORT_ERROR is None:
            return None
        return (
            f"numba cannot be imported ({_IMPORT_ERROR}); install it with `pip install numba` "
            'or use backend="rust" or backend="numpy".'
        )

    @property
    def preferred_block_rows(self) -> int:
        """Rows per call: enough tasks for every thread, little repeated work."""
        return 256

    def row_block(self, start: int, stop: int) -> np.ndarray:
        """Signed MI of genes ``start:stop`` against genes ``start:n_genes`` (float32).

        Counts and finishes one row at a time (fused); equal bit for bit to
        ``finish_block(start, count_block(start, stop))``.
        """
        self._check_rows(start, stop)
        if stop == start:
            return np.zeros((0, self.data.n_genes - start), dtype=np.float32)
        with self._numba_threads():
            return _row_block(
                start,
                stop,
                self._data,
                self._index,
                self._stats,
                self.signed,
                self._tasks(stop - start),
                self._max_nz_bins,
            )

    def count_block(self, start: int, stop: int) -> CountBlock:
        """Co-occurrence counts and value products of genes ``start:stop`` (see
        :class:`~geneverse.kernels._base.CountBlock`); products are 0 when unsigned."""
        self._check_rows(start, stop)
        with self._numba_threads():
            counts, products = _count_block(
                start,
                stop,
                self._data,
                self._index,
                self.signed,
                self._max_nz_bins,
                self.data.n_genes,
            )
        return CountBlock(counts=counts, products=products)

    def finish_block(self, start: int, block: CountBlock) -> np.ndarray:
        """Signed MI of the row block whose counts are ``block``, with this data's marginals.

        The rows are ``start:start + len(block.counts)``; the counts may be those of other
        cells (summed over chunks), only the marginals of :attr:`data` are used.
        """
        n_genes, width = self.data.n_genes, self._max_nz_bins
        counts = np.ascontiguousarray(block.counts, dtype=np.int64)
        products = np.ascontiguousarray(block.products, dtype=np.float64)
        n_rows = self._check_count_block(start, counts, products, width)
        if n_rows == 0:
            return np.zeros((0, n_genes - start), dtype=np.float32)
        with self._numba_threads():
            return _finish_block(
                start, counts, products, self._stats, self.signed, self._tasks(n_rows)
            )

    def _tasks(self, n_rows: int) -> int:
        return min(n_rows, self._threads * _TASKS_PER_THREAD)

    @contextmanager
    def _numba_threads(self) -> Iterator[None]:
        """Numba runs with this kernel's threads inside the block, as before after it."""
        previous = numba.get_num_threads()
        numba.set_num_threads(self._threads)
        try:
            yield
        finally:
            numba.set_num_threads(previous)


def _thread_count(n_jobs: int | None) -> int:
    """Numba threads for ``n_jobs``: all of them for ``None`` or ``< 1``, else capped."""
    limit = numba.config.NUMBA_NUM_THREADS
    if n_jobs is None or n_jobs < 1:
        return limit
    return min(int(n_jobs), limit)


def _gene_index(data: BinnedGenes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gene-major view of the entries: ``g_ptr``; per entry its position and its cell's end.

    Gene ``g``'s entries are ``g_ptr[g]:g_ptr[g+1]``, cells increasing; entry ``k`` is
    position ``g_pos[k]`` of the cell-major arrays, whose cell ends at ``g_end[k]``.
    """
    counts = np.bincount(data.genes, minlength=data.n_genes)
    g_ptr = np.zeros(data.n_genes + 1, dtype=np.int64)
    np.cumsum(counts, out=g_ptr[1:])
    g_pos = np.argsort(data.genes, kind="stable").astype(np.int64)
    ends = np.repeat(np.asarray(data.indptr[1:], dtype=np.int64), np.diff(data.indptr))
    return g_ptr, g_pos, ends[g_pos]


def _gene_stats(data: BinnedGenes) -> tuple:
    """Per-gene constants of the finish, typed for the compiled code."""
    bin_counts = np.ascontiguousarray(data.bin_counts, dtype=np.int64)
    xlogx = np.ascontiguousarray(data.xlogx, dtype=np.float64)
    return (
        np.ascontiguousarray(data.n_bins, dtype=np.int64),
        bin_counts,
        bin_counts.sum(axis=1),
        xlogx[bin_counts].sum(axis=1),
        np.ascontiguousarray(data.value_sums, dtype=np.float64),
        np.ascontiguousarray(data.varies, dtype=np.bool_),
        xlogx,
        float(data.n_cells),
    )
