"""The ``numba`` backend: the co-occurrence scan as a parallel JIT loop, finished per row.

For every gene ``i`` of a block of rows (genes spread over the threads) the kernel walks
the cells expressing ``i`` and, in each, the column genes ``j`` expressed there, adding one
to ``counts[a, j, b]`` (``a``, ``b`` the two nonzero bins, minus 1). The buffer is
bin-of-``i``-major, so the increments of one cell land in one ``n_cols * max_bins`` slab
that stays in cache. The work is ``sum nnz(cell)**2 / 2`` increments, never
``n_genes**2 * n_cells``.

The row's counts are then finished at once (fused): one pass over the buffer gives, per
column, the joint ``S`` sum, the co-expressing cells and the per-bin column sums (and
zeroes the buffer for the thread's next row); a second, per pair, adds the column
marginals and turns the sums into the MI under the scoring choice, its sign and, with a
test, the Williams-corrected G statistic. Both follow the one sequence of ``float64``
operations of the docs page "How the scores are computed", with the per-gene constants
and the ``xlogx`` / ``log2`` tables of :class:`~geneverse._data._binned.BinnedGenes`, so
the scores equal those of every other backend bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from .._utils import NUMBA
from ._base import SIGN_TOLERANCE, BinnedGenes, Kernel, PairScores, Scoring

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
_LN2 = float(np.log(2.0))


def _count_gene(i, first, counts, gram, entries, index, signed):  # pragma: no cover
    """Add gene ``i``'s co-occurrences with the genes ``j >= first, j > i`` into ``counts``
    (and the products of their sign values into ``gram``).

    Column ``j - first`` of the buffers is gene ``j``. Within a cell the genes increase,
    so the entries after gene ``i``'s own are the genes ``j > i``; the first of them at or
    after ``first`` is found by bisection (a rectangle's columns start after its rows).
    The products are added in increasing cell order, from 0.0.
    """
    genes, bins, values = entries
    g_ptr, g_pos, g_end = index
    for k in range(g_ptr[i], g_ptr[i + 1]):
        p = g_pos[k]
        lo, hi = p + 1, g_end[k]
        if first > i + 1:
            while lo < hi:
                mid = (lo + hi) >> 1
                if genes[mid] < first:
                    lo = mid + 1
                else:
                    hi = mid
        slab = counts[bins[p] - 1]
        for q in range(lo, g_end[k]):
            slab[genes[q] - first, bins[q] - 1] += 1
        if signed:
            v_i = values[p]
            for q in range(lo, g_end[k]):
                gram[genes[q] - first] += v_i * values[q]


def _joint_sums(counts, lo, nb_i, bc_i, xlogx, sums, occupancy):  # pragma: no cover
    """Per column ``lo:`` of one row: ``S`` over the bins of ``i``, ``c``, ``k_b`` and ``m``.

    ``counts`` is the row's ``(bins of i, columns, bins of j)`` buffer. For each bin ``a``
    of ``i`` (increasing) and column: ``t = sum_b xlogx[n(a, b)]`` (``b`` increasing, from
    0.0), ``u = n_i(a) - r_a`` and ``S += t + xlogx[u]``; ``both`` gets ``c = sum_a r_a``,
    ``col`` the ``k_b`` and, with ``occupancy`` (Miller–Madow), ``occupied`` the nonzero
    cells ``n(a, b)`` and ``u``. Each slab is walked linearly without branches and set back
    to 0 for the next row: bins a gene does not have hold zero counts and
    ``xlogx[0] == 0``, so they add nothing.
    """
    s_joint, both, col, occupied = sums
    n_cols, n_nz = counts.shape[1], counts.shape[2]
    s_joint[lo:] = 0.0
    both[lo:] = 0
    col[lo:] = 0
    occupied[lo:] = 0
    for a in range(nb_i):
        slab = counts[a]
        x_a = bc_i[a + 1]
        if occupancy:
            for j_col in range(lo, n_cols):
                t = 0.0
                r = 0
                nonzero = 0
                for b in range(n_nz):
                    m = slab[j_col, b]
                    t += xlogx[m]
                    r += m
                    nonzero += m > 0
                    col[j_col, b] += m
                    slab[j_col, b] = 0
                u = x_a - r
                s_joint[j_col] += t + xlogx[u]
                both[j_col] += r
                occupied[j_col] += nonzero + (u > 0)
        else:
            for j_col in range(lo, n_cols):
                t = 0.0
                r = 0
                for b in range(n_nz):
                    m = slab[j_col, b]
                    t += xlogx[m]
                    r += m
                    col[j_col, b] += m
                    slab[j_col, b] = 0
                s_joint[j_col] += t + xlogx[x_a - r]
                both[j_col] += r


def _finish_row(i, first, lo, sums, gram, genes_, tables, scoring, out):  # pragma: no cover
    """The scores of gene ``i`` against the columns ``lo:`` (genes ``first + lo:``).

    The order of operations of the docs page "How the scores are computed", per pair.
    """
    s_joint, both, col, occupied_cells = sums
    n_bins, bin_counts, expressed, bins_xlogx, occupied, levels, full_inverse = genes_[:7]
    varies, value_sums, value_norms = genes_[7:]
    xlogx, log2, n_cells, g_factor = tables
    signed, include_zeros, miller_madow, g_test = scoring
    mi_row, statistic_row, dof_row = out
    n_float = float(n_cells)
    z_i = expressed[i]
    inverse_i = n_float * full_inverse[i] - 1.0
    for j_col in range(lo, mi_row.shape[0]):
        j = first + j_col
        bc_j = bin_counts[j]
        s = s_joint[j_col]
        m = occupied_cells[j_col]
        for b in range(n_bins[j] - 1):
            v = bc_j[b + 1] - col[j_col, b]
            s += xlogx[v]
            m += v > 0
        z_j = expressed[j]
        n = z_i + z_j - both[j_col]
        s_full = s + xlogx[n_cells - n]
        if include_zeros:
            total = n_cells
            s_table = s_full
            m += n_cells - n > 0
        else:
            total = n
            s_table = s
        mi = 0.0
        if total > 0:
            y_i, y_j = total - z_i, total - z_j
            s_i = xlogx[y_i] + bins_xlogx[i]
            s_j = xlogx[y_j] + bins_xlogx[j]
            mi = log2[total] + ((s_table - s_i) - s_j) / total
            if miller_madow:
                m_i = occupied[i] + (y_i > 0)
                m_j = occupied[j] + (y_j > 0)
                mi += float(m_i + m_j - m - 1) / ((2.0 * total) * _LN2)
            mi = max(mi, 0.0)
        if signed and mi > 0.0:
            if not (varies[i] and varies[j]):
                mi = 0.0
            else:
                cov = n_float * gram[j_col] - value_sums[i] * value_sums[j]
                bound = SIGN_TOLERANCE * (
                    n_float * value_norms[i] * value_norms[j] + abs(value_sums[i] * value_sums[j])
                )
                if abs(cov) <= bound:
                    mi = 0.0
                elif cov < 0.0:
                    mi = -mi
        mi_row[j_col] = mi + 0.0  # never -0.0
        if g_test:
            plugin = 0.0
            if n_cells > 0:
                g_i = xlogx[n_cells - z_i] + bins_xlogx[i]
                g_j = xlogx[n_cells - z_j] + bins_xlogx[j]
                plugin = log2[n_cells] + ((s_full - g_i) - g_j) / n_cells
            g = max(plugin, 0.0) * g_factor
            dof = (levels[i] - 1) * (levels[j] - 1)
            statistic = 0.0
            if dof > 0 and n_cells > 0:  # (no cells: q = inf, and G / q = 0.0)
                inverse_j = n_float * full_inverse[j] - 1.0
                q = 1.0 + (inverse_i * inverse_j) / ((6.0 * n_float) * dof)
                statistic = g / q
            statistic_row[j_col] = statistic
            dof_row[j_col] = dof


def _mirror_rows(values):  # pragma: no cover
    """Left of the diagonal, a row block is the transpose of the rows above."""
    for r in _prange(values.shape[0]):
        for c in range(r):
            values[r, c] = values[c, r]


def _scores(start, stop, first, data, genes_, tables, scoring, n_tasks, n_nz):  # pragma: no cover
    """MI (and statistic, dof) of genes ``start:stop`` against ``first:``.

    A row block (``first == start``) computes each row for ``j > i`` only; left of the
    diagonal is copied from the rows above at the end, and the diagonal stays 0.
    """
    entries, index = data
    n_bins, bin_counts = genes_[0], genes_[1]
    xlogx = tables[0]
    signed, miller_madow, g_test = scoring[0], scoring[2], scoring[3]
    n_rows = stop - start
    n_cols = n_bins.shape[0] - first
    row_block = first == start
    mi = np.zeros((n_rows, n_cols), dtype=np.float32)
    n_tested = n_cols if g_test else 0
    statistic = np.zeros((n_rows, n_tested), dtype=np.float64)
    dof = np.zeros((n_rows, n_tested), dtype=np.int32)
    for task in _prange(n_tasks):
        counts = np.zeros((n_nz, n_cols, n_nz), dtype=np.int32)
        gram = np.zeros(n_cols, dtype=np.float64)
        s_joint = np.empty(n_cols, dtype=np.float64)
        both = np.empty(n_cols, dtype=np.int64)
        col = np.empty((n_cols, n_nz), dtype=np.int64)
        occupied = np.empty(n_cols, dtype=np.int64)
        sums = (s_joint, both, col, occupied)
        for r in range(task, n_rows, n_tasks):
            i = start + r
            lo = r + 1 if row_block else 0
            _count_gene(i, first, counts, gram, entries, index, signed)
            _joint_sums(counts, lo, n_bins[i] - 1, bin_counts[i], xlogx, sums, miller_madow)
            out = (mi[r], statistic[r], dof[r])
            _finish_row(i, first, lo, sums, gram, genes_, tables, scoring, out)
            if signed:
                gram[lo:] = 0.0
    if row_block:
        _mirror_rows(mi)
        if g_test:
            _mirror_rows(statistic)
            _mirror_rows(dof)
    return mi, statistic, dof


if numba is not None:
    _count_gene = numba.njit(cache=True)(_count_gene)
    _joint_sums = numba.njit(cache=True)(_joint_sums)
    _finish_row = numba.njit(cache=True)(_finish_row)
    _mirror_rows = numba.njit(parallel=True, cache=True)(_mirror_rows)
    _scores = numba.njit(parallel=True, cache=True)(_scores)


class NumbaKernel(Kernel):
    """Co-occurrence counting with a parallel Numba loop (``backend="numba"``).

    ``n_jobs`` sets Numba's threads for the duration of each :meth:`scores` call (capped
    at ``numba.config.NUMBA_NUM_THREADS``; all of them for ``None`` or ``< 1``); the
    previous setting is restored afterwards. Results do not depend on ``n_jobs``.
    """

    name = NUMBA

    def __init__(
        self, data: BinnedGenes, scoring: Scoring, *, n_jobs: int, device: str | None = None
    ) -> None:
        super().__init__(data, scoring, n_jobs=n_jobs, device=device)
        self._threads = _thread_count(n_jobs)
        self._entries = (
            np.ascontiguousarray(data.genes, dtype=np.int32),
            np.ascontiguousarray(data.bins, dtype=np.uint8),
            np.ascontiguousarray(data.values, dtype=np.float64),
        )
        self._index = _gene_index(data)
        self._genes = _gene_constants(data)
        n_cells = int(data.n_cells)
        self._tables = (
            np.ascontiguousarray(data.xlogx, dtype=np.float64),
            np.ascontiguousarray(data.log2, dtype=np.float64),
            n_cells,
            (2.0 * n_cells) * _LN2,
        )
        self._scoring = (
            bool(scoring.signed),
            bool(scoring.include_zeros),
            bool(scoring.miller_madow),
            bool(scoring.g_test),
        )
        self._n_nz = max(data.max_bins - 1, 1)

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

    def scores(self, start: int, stop: int, first_column: int | None = None) -> PairScores:
        """The scores of genes ``start:stop`` against ``first_column:`` (see
        :meth:`~geneverse.kernels._base.Kernel.scores`), each row counted and finished at
        once."""
        first = self._columns(start, stop, first_column)
        n_rows, n_cols = stop - start, self.data.n_genes - first
        if n_rows == 0 or n_cols == 0:
            return self._empty(n_rows, n_cols)
        with self._numba_threads():
            mi, statistic, dof = _scores(
                start,
                stop,
                first,
                (self._entries, self._index),
                self._genes,
                self._tables,
                self._scoring,
                min(n_rows, self._threads * _TASKS_PER_THREAD),
                self._n_nz,
            )
        if not self.scoring.g_test:
            return PairScores(mi=mi)
        return PairScores(mi=mi, statistic=statistic, dof=dof)

    def _empty(self, n_rows: int, n_cols: int) -> PairScores:
        shape = (n_rows, n_cols)
        if not self.scoring.g_test:
            return PairScores(mi=np.zeros(shape, dtype=np.float32))
        return PairScores(
            mi=np.zeros(shape, dtype=np.float32),
            statistic=np.zeros(shape, dtype=np.float64),
            dof=np.zeros(shape, dtype=np.int32),
        )

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


def _gene_constants(data: BinnedGenes) -> tuple:
    """The per-gene constants of the finish (those of ``data``), typed for the compiled code.

    ``levels`` (the occupied rows of a gene's full table) is ``occupied`` plus the zero bin
    when some cell does not express the gene.
    """
    expressed = np.ascontiguousarray(data.expressed, dtype=np.int64)
    occupied = np.ascontiguousarray(data.occupied, dtype=np.int64)
    return (
        np.ascontiguousarray(data.n_bins, dtype=np.int64),
        np.ascontiguousarray(data.bin_counts, dtype=np.int64),
        expressed,
        np.ascontiguousarray(data.bins_xlogx, dtype=np.float64),
        occupied,
        occupied + (expressed < data.n_cells),
        np.ascontiguousarray(data.full_inverse, dtype=np.float64),
        np.ascontiguousarray(data.varies, dtype=np.bool_),
        np.ascontiguousarray(data.value_sums, dtype=np.float64),
        np.ascontiguousarray(data.value_norms, dtype=np.float64),
    )
