"""Significance and multiple testing: p-values from the kernels' G statistics, BH
q-values, and the permutation null."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse, special


def g_test_pvalues(
    statistic: np.ndarray, dof: np.ndarray, n_jobs: int = 1, row_block: bool = False
) -> np.ndarray:
    """``chi2.sf(statistic, dof)`` of a block's pairs (``float32``), 1 where ``dof`` is 0.

    The Rust core computes them in closed form on ``n_jobs`` threads (< 1: one per core);
    without the core, scipy's ``chdtrc`` does. ``row_block``: the block is a kernel's row
    block (rows ``r0:r1`` against the columns from ``r0``, symmetric left of the diagonal,
    whose ``dof`` is 0), so the core computes each pair once and copies its mirror.
    """
    statistic = np.ascontiguousarray(statistic, dtype=np.float64)
    dof = np.ascontiguousarray(dof, dtype=np.int32)
    core = _compiled_core()
    if core is not None:
        return core.chi2_pvalues(statistic, dof, max(n_jobs, 0), row_block=row_block)
    tested = dof > 0
    p = np.ones(statistic.shape, dtype=np.float32)
    p[tested] = special.chdtrc(dof[tested], statistic[tested])
    return p


def _compiled_core():
    """``geneverse._core`` when it imports and has the statistics functions, else ``None``."""
    try:
        from ... import _core
    except ImportError:
        return None
    has_statistics = hasattr(_core, "chi2_pvalues") and hasattr(_core, "bh_qvalues_of_pairs")
    return _core if has_statistics else None


# --------------------------------------------------------------------------------------------
# Benjamini–Hochberg
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _StepUp:
    """The BH q-value as a function of the p-value, from the sorted p-values of the tests.

    ``q(p_(k)) = min_{j >= k} min(1, m p_(j) / j)`` with ``p_(1) <= ... <= p_(K)`` the known
    p-values and ``m >= K`` the number of tests. Tied p-values get the same q-value (the
    one of the last of the ties), so q depends on the value only and can be looked up.
    """

    sorted_p: np.ndarray
    q: np.ndarray

    @classmethod
    def of(cls, pvalues: np.ndarray, n_tests: int | None = None) -> _StepUp:
        p = np.sort(_checked_pvalues(pvalues).ravel())
        m = p.size if n_tests is None else int(n_tests)
        if m < p.size:
            raise ValueError(f"n_tests={m} is smaller than the {p.size} p-values given")
        return cls(p, _step_up(p, m))

    def __call__(self, pvalues: np.ndarray) -> np.ndarray:
        """The q-values of ``pvalues``, each one of the p-values the table was made of."""
        if self.sorted_p.size == 0:
            return np.ones(np.shape(pvalues))
        last_tie = np.searchsorted(self.sorted_p, pvalues, side="right") - 1
        return self.q[np.maximum(last_tie, 0)]


def bh_qvalues(pvalues: np.ndarray, n_tests: int | None = None) -> np.ndarray:
    """Benjamini–Hochberg q-values (adjusted p-values) of a set of tests.

    ``q_(k) = min_{j >= k} min(1, m p_(j) / j)`` over the p-values sorted increasingly;
    rejecting the tests with ``q <= alpha`` is the BH procedure at FDR level ``alpha``.
    Pass each unordered gene pair once (the upper triangle, e.g.
    ``p[np.triu_indices(G, 1)]``).

    Parameters
    ----------
    pvalues
        Any shape, values in ``[0, 1]``.
    n_tests
        The number of tests ``m``, when only some of their p-values are given (pairs that
        were not stored): the q-values are then conservative, never smaller than those of
        BH with all p-values known, since a p-value's rank among the given ones is at most
        its rank among all of them. Default: ``pvalues.size``, exact BH.

    Returns
    -------
    ``float64`` q-values, in the shape of ``pvalues``.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    return _StepUp.of(p, n_tests)(p).reshape(p.shape)


def bh_qvalues_matrix(
    pvalues: np.ndarray, mask: np.ndarray | None = None, n_jobs: int = 1
) -> np.ndarray:
    """BH q-values of a symmetric ``(G, G)`` matrix of pair p-values, each pair once.

    The tests are the pairs of the strict upper triangle (and of ``mask``, a symmetric
    boolean matrix of the wanted pairs, when given), their p-values taken as ``float32``.
    Returns a symmetric ``float32`` matrix; the diagonal and the pairs outside ``mask``
    get 1. The Rust core sorts one 64-bit key per test (its p-value and position: 16 bytes
    per test with the sort's buffer) on ``n_jobs`` threads (< 1: one per core); without
    it, NumPy sorts the p-values and looks each one's q-value up, with the same result.
    """
    p = np.asarray(pvalues)
    n_genes = p.shape[0] if p.ndim else 0
    if p.shape != (n_genes, n_genes):
        raise ValueError(f"pvalues must be a square matrix, not of shape {p.shape}")
    core = _compiled_core()
    if core is not None:
        tested = None if mask is None else np.ascontiguousarray(mask, dtype=bool)
        p32 = np.ascontiguousarray(p, dtype=np.float32)
        return core.bh_qvalues_of_pairs(p32, tested, max(n_jobs, 0))
    q = np.ones((n_genes, n_genes), dtype=np.float32)
    columns = [_tested_columns(mask, n_genes, i) for i in range(n_genes)]
    rows = [_checked_pvalues(p[i, cols]).astype(np.float32) for i, cols in enumerate(columns)]
    step_up = _StepUp.of(np.concatenate(rows) if rows else np.ones(0, np.float32))
    for i, (cols, row) in enumerate(zip(columns, rows, strict=True)):
        q[i, cols] = q[cols, i] = step_up(row)
    return q


def _step_up(sorted_p: np.ndarray, n_tests: int) -> np.ndarray:
    """``q_(k) = min_{j >= k} min(1, m p_(j) / j)`` of increasing p-values (ties share the
    q-value of the last of them), computed in ``float64`` and given in ``sorted_p``'s dtype."""
    ranked = sorted_p.astype(np.float64) * n_tests / np.arange(1, sorted_p.size + 1)
    q = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    return q.astype(sorted_p.dtype)


def _tested_columns(mask: np.ndarray | None, n_genes: int, i: int) -> np.ndarray:
    """The columns ``j > i`` of row ``i`` that are tests."""
    if mask is None:
        return np.arange(i + 1, n_genes)
    return i + 1 + np.flatnonzero(mask[i, i + 1 :])


def bh_qvalues_sparse(pvalues: sparse.spmatrix | sparse.sparray, n_tests: int | None = None):
    """BH q-values of the pairs stored in a sparse ``(G, G)`` matrix of p-values.

    The stored entries of the strict upper triangle are the known tests (explicit zeros
    included: a p-value that underflowed to 0 is a test); their q-values, looked up by
    value, are returned at every stored position (the lower triangle of a symmetric
    matrix gets its mirror's). The pairs not stored are tests too, with unknown p-values
    (``n_tests`` defaults to all ``G (G - 1) / 2`` pairs), so the q-values are conservative
    (see :func:`bh_qvalues`).

    Returns
    -------
    A CSR matrix (``float64``) with the structure of ``pvalues``.
    """
    coo = sparse.coo_matrix(pvalues)
    n_genes = coo.shape[0]
    upper = coo.row < coo.col
    m = n_genes * (n_genes - 1) // 2 if n_tests is None else n_tests
    step_up = _StepUp.of(coo.data[upper], m)
    q = np.where(coo.row == coo.col, 1.0, step_up(coo.data.astype(np.float64)))
    out = sparse.coo_matrix((q, (coo.row, coo.col)), shape=coo.shape).tocsr()
    return out


def _checked_pvalues(pvalues: np.ndarray) -> np.ndarray:
    p = np.asarray(pvalues)
    p = p if p.dtype in (np.float32, np.float64) else p.astype(np.float64)
    if p.size and not (np.all(p >= 0) and np.all(p <= 1)):  # also catches NaN
        raise ValueError("p-values must lie in [0, 1] (no NaN)")
    return p


# --------------------------------------------------------------------------------------------
# Permutation null
# --------------------------------------------------------------------------------------------


def shuffle_cells(
    matrix: sparse.spmatrix | sparse.sparray, rng: np.random.Generator
) -> sparse.csc_matrix:
    """The cells × genes ``matrix`` with each gene's cells shuffled independently.

    Every gene keeps its values (so its bins and marginals), moved to a uniformly random
    set of cells in random order, independently of the other genes: a draw from the null
    of independent genes. Only the nonzero entries move (``O(nnz)`` for genes expressed
    in fewer than ~2 % of the cells, ``O(N)`` per gene otherwise); returns a CSC matrix
    with sorted indices.
    """
    csc = sparse.csc_matrix(matrix)
    n_cells = csc.shape[0]
    rows = np.empty_like(csc.indices)
    for gene in range(csc.shape[1]):
        first, last = csc.indptr[gene], csc.indptr[gene + 1]
        rows[first:last] = rng.choice(n_cells, size=last - first, replace=False)
    shuffled = sparse.csc_matrix((csc.data.copy(), rows, csc.indptr.copy()), shape=csc.shape)
    shuffled.sort_indices()
    return shuffled


def permutation_pvalues(exceedances: np.ndarray, n_permutations: int) -> np.ndarray:
    """Permutation p-values ``(b + 1) / (P + 1)`` (Phipson & Smyth 2010).

    ``exceedances`` (``b``) counts, per pair, the permutations whose statistic (unsigned MI)
    was at least the observed one; ``P`` is the number of permutations. Never 0, and exact
    (valid at every level) for a permutation null.
    """
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be at least 1, not {n_permutations}")
    return (np.asarray(exceedances, dtype=np.float64) + 1.0) / (n_permutations + 1.0)
