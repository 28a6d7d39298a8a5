"""Estimators, significance and multiple testing for the pairwise MI, from a row block's counts.

Everything here is finished from a :class:`~geneverse.kernels._base.CountBlock` (the counts
``n_ij(a, b)``, ``a, b > 0``, of genes ``start:stop`` × ``start:n_genes``) and the marginals
of :class:`~geneverse.kernels._base.BinnedGenes` (``n_cells``, ``bin_counts``, ``xlogx``,
``value_sums``, ``varies``), vectorised over the block like ``NumpyKernel.finish_block``.

Notation (DESIGN.md §3), for a pair ``(i, j)``: ``N`` cells in all, ``n_i(a)`` the cells with
``i`` in bin ``a > 0``, ``z_i = sum_a n_i(a)``, ``c_ij = sum_ab n_ij(a, b)`` and
``n = z_i + z_j - c_ij`` the cells where ``i`` or ``j`` is expressed. The *full* contingency
table of the pair over all ``N`` cells has the cells

=================  =============================================
``(a, b)``         ``n_ij(a, b)``                     (``a, b > 0``)
``(a, 0)``         ``n_i(a) - sum_b n_ij(a, b)``
``(0, b)``         ``n_j(b) - sum_a n_ij(a, b)``
``(0, 0)``         ``N - n``
=================  =============================================

its rows sum to ``n_i(a)`` and ``N - z_i``, its columns to ``n_j(b)`` and ``N - z_j``.
The *counted* table of GeneVector's score (``zeros="exclude"``, DESIGN.md §2.2) is the same
without the ``(0, 0)`` cell, over ``n`` cells: its margins are ``n_i(a)`` and ``n - z_i``.

With ``S(table) = sum over its cells of m log2 m`` (the ``xlogx`` table), the plug-in
entropy of a table of total ``T`` is ``H = log2 T - S / T`` bits, so
``MI = H(A) + H(B) - H(A, B) = log2 T + (S_joint - S_A - S_B) / T``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import sparse
from scipy.stats import chi2

from ...kernels import BinnedGenes, CountBlock

Estimator = Literal["plugin", "miller_madow"]
Zeros = Literal["exclude", "include"]

ESTIMATORS: tuple[str, ...] = ("plugin", "miller_madow")
ZEROS: tuple[str, ...] = ("exclude", "include")


# --------------------------------------------------------------------------------------------
# Per-pair sums of the contingency tables of a row block
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairTables:
    """What every statistic of a row block needs, per pair and per gene.

    Pair arrays have the block's shape ``(rows, columns)``: entry ``[r, c]`` is the pair of
    genes ``start + r`` and ``start + c``. Row-gene arrays have shape ``(rows, 1)``,
    column-gene arrays ``(1, columns)``, so that they broadcast against the pair arrays.

    Attributes
    ----------
    n_cells
        ``N``, all cells.
    counted
        ``n``, ``int64``: the cells where either gene is expressed.
    joint_xlogx
        ``sum m log2 m`` over the cells of the pair's table except ``(0, 0)``.
    joint_occupied
        The number of nonzero cells of the pair's table except ``(0, 0)``.
    row_expressed, col_expressed
        ``z_i``, ``z_j``: cells expressing the gene.
    row_xlogx, col_xlogx
        ``sum_{a > 0} n_i(a) log2 n_i(a)``.
    row_occupied, col_occupied
        The gene's nonzero bins ``a > 0`` (``n_i(a) > 0``).
    row_inverse, col_inverse
        ``sum_{a > 0, n_i(a) > 0} 1 / n_i(a)`` (for Williams' correction).
    xlogx
        The ``m log2 m`` table, ``m = 0..N``.
    """

    n_cells: int
    counted: np.ndarray
    joint_xlogx: np.ndarray
    joint_occupied: np.ndarray
    row_expressed: np.ndarray
    col_expressed: np.ndarray
    row_xlogx: np.ndarray
    col_xlogx: np.ndarray
    row_occupied: np.ndarray
    col_occupied: np.ndarray
    row_inverse: np.ndarray
    col_inverse: np.ndarray
    xlogx: np.ndarray


def pair_tables(block: CountBlock, data: BinnedGenes, start: int) -> PairTables:
    """The per-pair sums of the row block ``start:stop × start:n_genes`` (see module text).

    ``block`` may be the sum of the counts of several chunks of cells; only the marginals of
    ``data`` over all cells are used.
    """
    counts = block.counts
    rows, width, columns = counts.shape[0], counts.shape[1], counts.shape[2]
    if columns != data.n_genes - start:
        raise ValueError(f"a block from gene {start} has {data.n_genes - start} columns")
    marginals = _expressed_bins(data, width)
    row_marg = marginals[start : start + rows]  # (rows, a)
    col_marg = marginals[start:]  # (columns, b)

    in_row_bin = counts.sum(axis=3)  # (r, a, c): i in bin a, j expressed
    in_col_bin = counts.sum(axis=1)  # (r, c, b)
    row_only = row_marg[:, :, None] - in_row_bin  # n_ij(a, 0)
    col_only = col_marg[None, :, :] - in_col_bin  # n_ij(0, b)
    xlogx = data.xlogx

    joint_xlogx = xlogx[counts].sum(axis=(1, 3))
    joint_xlogx += xlogx[row_only].sum(axis=1) + xlogx[col_only].sum(axis=2)
    joint_occupied = np.count_nonzero(counts, axis=(1, 3))
    joint_occupied += np.count_nonzero(row_only, axis=1) + np.count_nonzero(col_only, axis=2)

    expressed = marginals.sum(axis=1)
    gene_xlogx = xlogx[marginals].sum(axis=1)
    occupied = np.count_nonzero(marginals, axis=1)
    inverse = (1.0 / np.where(marginals > 0, marginals, np.inf)).sum(axis=1)
    r, c = slice(start, start + rows), slice(start, None)
    return PairTables(
        n_cells=int(data.n_cells),
        counted=expressed[r, None] + expressed[None, c] - in_row_bin.sum(axis=1),
        joint_xlogx=joint_xlogx,
        joint_occupied=joint_occupied.astype(np.int64),
        row_expressed=expressed[r, None],
        col_expressed=expressed[None, c],
        row_xlogx=gene_xlogx[r, None],
        col_xlogx=gene_xlogx[None, c],
        row_occupied=occupied[r, None],
        col_occupied=occupied[None, c],
        row_inverse=inverse[r, None],
        col_inverse=inverse[None, c],
        xlogx=xlogx,
    )


def _expressed_bins(data: BinnedGenes, width: int) -> np.ndarray:
    """``n_i(a)`` for ``a = 1..width``, ``int64`` ``(n_genes, width)``, zero-padded."""
    marginals = np.zeros((data.n_genes, width), dtype=np.int64)
    stored = data.bin_counts[:, 1 : width + 1]
    marginals[:, : stored.shape[1]] = stored
    return marginals


def _zero_diagonal(values: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Set the block's self-pairs (``[r, r]``: gene ``start + r`` with itself) to ``fill``."""
    diagonal = np.arange(min(values.shape))
    values[diagonal, diagonal] = fill
    return values


# --------------------------------------------------------------------------------------------
# Mutual information: plug-in and Miller–Madow, zeros excluded or included
# --------------------------------------------------------------------------------------------


def mutual_information(
    tables: PairTables, *, estimator: Estimator = "plugin", zeros: Zeros = "exclude"
) -> np.ndarray:
    """Unsigned MI in bits of every pair of the block, ``float64``, self-pairs 0.

    Parameters
    ----------
    tables
        The block's :func:`pair_tables`.
    estimator
        ``"plugin"``: ``MI = H(A) + H(B) - H(A, B)`` with plug-in entropies
        ``H = -sum p log2 p`` (DESIGN.md §2.3).
        ``"miller_madow"``: every entropy term gets the Miller–Madow bias correction,
        ``H_MM = H_plugin + (m - 1) / (2 T ln 2)`` bits, where ``T`` is the table's total
        (the pair's counted cells, below) and ``m`` the number of its nonzero cells: for
        ``H(A)`` the occupied bins of ``A`` among the counted cells, for ``H(A, B)`` the
        occupied cells of the joint table. So
        ``MI_MM = H_MM(A) + H_MM(B) - H_MM(A, B)
        = MI_plugin + (m_A + m_B - m_AB - 1) / (2 T ln 2)``.
    zeros
        ``"exclude"`` (GeneVector's score, the default): the table counts the ``T = n``
        cells where either gene is expressed, without the ``(0, 0)`` cell; a gene is in bin
        0 in ``n - z`` of them. ``"include"``: the textbook MI over all ``T = N`` cells, the
        joint table gets the ``(0, 0)`` cell ``N - n`` and the marginals are over all cells
        (bin 0 in ``N - z``).

    Returns
    -------
    ``(rows, columns)`` ``float64``. MI is ``>= 0``: values below 0 are clipped to 0 (float
    noise for the plug-in estimate; for Miller–Madow, whose correction is negative for a
    near-independent pair, a real negative estimate, clipped because the sign of the
    stored result is reserved for the direction of the Pearson correlation). A pair with
    ``T = 0`` has MI 0.
    """
    _check_choice("estimator", estimator, ESTIMATORS)
    _check_choice("zeros", zeros, ZEROS)
    t = tables
    if zeros == "exclude":
        total, zero_cell = t.counted, np.zeros_like(t.counted)
    else:
        total, zero_cell = np.full_like(t.counted, t.n_cells), t.n_cells - t.counted
    row_zero, col_zero = total - t.row_expressed, total - t.col_expressed

    s_joint = t.joint_xlogx + t.xlogx[zero_cell]
    s_row = t.row_xlogx + t.xlogx[row_zero]
    s_col = t.col_xlogx + t.xlogx[col_zero]
    safe_total = np.maximum(total, 1)
    mi = np.log2(safe_total) + (s_joint - s_row - s_col) / safe_total
    if estimator == "miller_madow":
        m_joint = t.joint_occupied + (zero_cell > 0)
        m_row = t.row_occupied + (row_zero > 0)
        m_col = t.col_occupied + (col_zero > 0)
        mi += (m_row + m_col - m_joint - 1) / (2 * safe_total * np.log(2))
    mi = np.where(total > 0, np.maximum(mi, 0.0), 0.0)
    return _zero_diagonal(mi)


def pearson_signs(block: CountBlock, data: BinnedGenes, start: int) -> np.ndarray:
    """``sign`` of each pair's Pearson correlation over all cells (DESIGN.md §2.4).

    ``N sum(xy) - sum(x) sum(y)`` has the sign of the covariance; a pair with a constant
    gene (``varies`` false) has no correlation and gets 0. Same as ``NumpyKernel._signs``.
    """
    stop = start + block.products.shape[0]
    sums = data.value_sums
    covariance = data.n_cells * block.products - sums[start:stop, None] * sums[None, start:]
    defined = data.varies[start:stop, None] & data.varies[None, start:]
    return np.sign(covariance) * defined


# --------------------------------------------------------------------------------------------
# The G-test of independence on the full table, with Williams' correction
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GTest:
    """The G-test of every pair of a row block; ``(rows, columns)`` arrays, self-pairs
    ``statistic`` 0, ``dof`` 0, ``correction`` 1, ``pvalues`` 1."""

    statistic: np.ndarray
    dof: np.ndarray
    correction: np.ndarray
    pvalues: np.ndarray


def g_test(tables: PairTables, *, williams: bool = True) -> GTest:
    """The G-test of independence of every pair, on its full table over all ``N`` cells.

    ``G = 2 sum O ln(O / E) = 2 N ln(2) MI_full``, with ``E = row * column / N`` and
    ``MI_full`` the plug-in MI in bits of the full table (``zeros="include"``), whose
    ``(0, 0)`` cell ``N - n`` the counts give. Degrees of freedom ``df = (r - 1)(c - 1)``
    with ``r``, ``c`` the nonzero rows and columns of the full table (the gene's occupied
    bins, bin 0 included when some cell does not express it). Williams' correction divides
    ``G`` by ``q = 1 + (N sum_i 1/row_i - 1)(N sum_j 1/col_j - 1) / (6 N df)`` (sums over
    the nonzero rows and columns); ``p = chi2.sf(G / q, df)``, and ``p = 1`` when
    ``df = 0`` (a gene with one occupied bin cannot depend on anything).

    Why the full table and not the counted one of the MI score: the score leaves out the
    cells where both genes are zero. Conditioning on "A or B expressed" makes even
    independent genes dependent (given that a cell is counted, ``A = 0`` forces
    ``B > 0``), so the counted table of an independent pair is far from independent and a
    test on it rejects almost always. Over all cells, independent genes give an
    independent table, and ``G`` is asymptotically ``chi2(df)``.

    Parameters
    ----------
    tables
        The block's :func:`pair_tables`.
    williams
        Apply Williams' correction (default). Without it, ``q = 1``.
    """
    t = tables
    n_cells = t.n_cells
    mi_full = mutual_information(t, estimator="plugin", zeros="include")
    statistic = 2.0 * n_cells * np.log(2.0) * mi_full

    row_zero = n_cells - t.row_expressed
    col_zero = n_cells - t.col_expressed
    n_rows = t.row_occupied + (row_zero > 0)
    n_cols = t.col_occupied + (col_zero > 0)
    dof = _zero_diagonal((n_rows - 1) * (n_cols - 1))

    correction = np.ones_like(statistic)
    if williams:
        row_sum = t.row_inverse + 1.0 / np.where(row_zero > 0, row_zero, np.inf)
        col_sum = t.col_inverse + 1.0 / np.where(col_zero > 0, col_zero, np.inf)
        numerator = (n_cells * row_sum - 1.0) * (n_cells * col_sum - 1.0)
        tested = dof > 0
        correction[tested] += numerator[tested] / (6.0 * n_cells * dof[tested])
    pvalues = np.where(dof > 0, chi2.sf(statistic / correction, np.maximum(dof, 1)), 1.0)
    return GTest(statistic, dof, correction, pvalues)


# --------------------------------------------------------------------------------------------
# All of a block at once (what ``tl.coexpression`` calls)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockStatistics:
    """The finished row block: signed (or unsigned) MI and, when asked for, p-values."""

    mi: np.ndarray
    pvalues: np.ndarray | None = None


def block_statistics(
    block: CountBlock,
    data: BinnedGenes,
    start: int,
    *,
    signed: bool = True,
    estimator: Estimator = "plugin",
    zeros: Zeros = "exclude",
    pvalues: bool = False,
    williams: bool = True,
) -> BlockStatistics:
    """MI (``estimator``, ``zeros``), times the Pearson signs when ``signed``, and the
    G-test p-values when ``pvalues``, of the row block ``start:stop × start:n_genes``.

    With ``estimator="plugin", zeros="exclude"`` the MI equals the kernels'
    ``finish_block`` (in float64). All arrays are ``float64``; self-pairs have MI 0 and
    p-value 1.
    """
    tables = pair_tables(block, data, start)
    mi = mutual_information(tables, estimator=estimator, zeros=zeros)
    if signed:
        mi *= pearson_signs(block, data, start)
    p = g_test(tables, williams=williams).pvalues if pvalues else None
    return BlockStatistics(mi=mi, pvalues=p)


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
        ranked = p * m / np.arange(1, p.size + 1)
        q = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
        return cls(p, q)

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


def bh_qvalues_matrix(pvalues: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """BH q-values of a symmetric ``(G, G)`` matrix of pair p-values, each pair once.

    The tests are the pairs of the strict upper triangle (and of ``mask``, a symmetric
    boolean matrix of the wanted pairs, when given). Returns a symmetric ``float64``
    matrix; the diagonal and the pairs outside ``mask`` get 1. Works row by row, without
    ``(G^2)``-sized index arrays: memory is one copy of the tested p-values.
    """
    p = np.asarray(pvalues)
    n_genes = p.shape[0]
    if p.shape != (n_genes, n_genes):
        raise ValueError(f"pvalues must be a square matrix, not of shape {p.shape}")
    if n_genes == 0:
        return np.ones((0, 0))
    tested = [_tested_columns(mask, n_genes, i) for i in range(n_genes)]
    step_up = _StepUp.of(np.concatenate([p[i, cols] for i, cols in enumerate(tested)]))
    q = np.ones((n_genes, n_genes))
    for i, columns in enumerate(tested):
        q[i, columns] = q[columns, i] = step_up(p[i, columns])
    return q


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
    p = np.asarray(pvalues, dtype=np.float64)
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


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not known; use one of {list(allowed)}")
