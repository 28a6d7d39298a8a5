"""The test oracle: the definition (docs/definition.md) written out as plain per-pair loops.

This is the definition of the result, not a backend: slow, dense and obvious.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.stats

#: Correlations smaller than this are zero in exact arithmetic on the test data (small
#: integer or dyadic values), and only floating-point noise in ``numpy.corrcoef``.
_EXACT_ZERO_CORRELATION = 1e-12


def oracle_bins(X: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Bins of every value (cells × genes) and the number of bins of every gene
    (definition §1)."""
    bins = np.zeros(X.shape, dtype=np.int64)
    n_bins_per_gene = np.ones(X.shape[1], dtype=np.int64)
    for g in range(X.shape[1]):
        expressed = X[:, g] > 0
        v = X[expressed, g]
        if v.size == 0:
            continue
        k = min(n_bins, np.unique(v).size)
        if k <= 1:
            bins[expressed, g] = 1
            n_bins_per_gene[g] = 2
        else:
            edges = np.percentile(v, np.linspace(0, 100, k + 1)[1:-1])
            bins[expressed, g] = np.searchsorted(edges, v, side="right") + 1
            n_bins_per_gene[g] = k + 1
    return bins, n_bins_per_gene


def oracle_pair_mi(bins_a: np.ndarray, bins_b: np.ndarray, na: int, nb: int) -> float:
    """Plug-in MI in bits over the cells where either gene is expressed (definition §2–3)."""
    counted = (bins_a > 0) | (bins_b > 0)
    if not counted.any():
        return 0.0
    joint = np.bincount(bins_a[counted] * nb + bins_b[counted], minlength=na * nb)
    p = joint.reshape(na, nb) / joint.sum()
    pa, pb = p.sum(axis=1), p.sum(axis=0)
    nz = p > 0
    return float(np.sum(p[nz] * np.log2(p[nz] / np.outer(pa, pb)[nz])))


def oracle_signs(X: np.ndarray) -> np.ndarray:
    """``numpy.sign`` of the Pearson correlations over all cells; undefined counts as 0
    (definition §4)."""
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # one cell: no degrees of freedom
        r = np.atleast_2d(np.corrcoef(X.astype(np.float64), rowvar=False))
    r = np.where(np.isfinite(r) & (np.abs(r) >= _EXACT_ZERO_CORRELATION), r, 0.0)
    return np.sign(r)


def oracle_signed_mi(X, n_bins: int = 10, signed: bool = True) -> np.ndarray:
    """The full (genes × genes) MI matrix, float64, diagonal 0."""
    X = np.asarray(X.toarray() if hasattr(X, "toarray") else X)
    bins, nbg = oracle_bins(X, n_bins)
    n_genes = X.shape[1]
    signs = oracle_signs(X) if signed else np.ones((n_genes, n_genes))
    mi = np.zeros((n_genes, n_genes))
    for i in range(n_genes):
        for j in range(i + 1, n_genes):
            value = oracle_pair_mi(bins[:, i], bins[:, j], nbg[i], nbg[j]) * signs[i, j]
            mi[i, j] = mi[j, i] = value
    return mi


def oracle_entropy(X) -> np.ndarray:
    """Shannon entropy (nats) of the counts of each gene's distinct values > 0."""
    X = np.asarray(X.toarray() if hasattr(X, "toarray") else X)
    out = np.zeros(X.shape[1])
    for g in range(X.shape[1]):
        v = X[X[:, g] > 0, g]
        if v.size:
            out[g] = scipy.stats.entropy(np.unique(v, return_counts=True)[1])
    return out


# --------------------------------------------------------------------------------------------
# Every scoring choice (definition §2-§5), per pair, from the dense bins
# --------------------------------------------------------------------------------------------


def oracle_table(a: np.ndarray, b: np.ndarray, na: int, nb: int, zeros: str) -> np.ndarray:
    """The pair's joint counts: over all cells (include) or where A or B > 0 (exclude)."""
    cells = np.ones(a.shape, dtype=bool) if zeros == "include" else (a > 0) | (b > 0)
    table = np.zeros((na, nb))
    np.add.at(table, (a[cells], b[cells]), 1)
    return table


def oracle_table_entropy(counts: np.ndarray, miller_madow: bool) -> float:
    """Plug-in entropy in bits, plus (m - 1) / (2 n ln 2) for Miller–Madow."""
    n = counts.sum()
    p = counts[counts > 0] / n
    h = -float(np.sum(p * np.log2(p)))
    if miller_madow:
        h += (np.count_nonzero(counts) - 1) / (2 * n * math.log(2))
    return h


def oracle_mi(a, b, na, nb, *, estimator: str, zeros: str) -> float:
    """MI = H(A) + H(B) - H(A, B) of the pair's table, clipped at 0; 0 for an empty table."""
    table = oracle_table(a, b, na, nb, zeros)
    if table.sum() == 0:
        return 0.0
    mm = estimator == "miller_madow"
    h_a = oracle_table_entropy(table.sum(axis=1), mm)
    h_b = oracle_table_entropy(table.sum(axis=0), mm)
    return max(h_a + h_b - oracle_table_entropy(table.ravel(), mm), 0.0)


def oracle_g_test(a, b, na, nb, williams: bool = True) -> tuple[float, int, float]:
    """G, df and p of the full table (all cells), with Williams' q, from the textbook."""
    table = oracle_table(a, b, na, nb, "include")
    n = table.sum()
    rows, cols = table.sum(axis=1), table.sum(axis=0)
    rows, cols, table = rows[rows > 0], cols[cols > 0], table[rows > 0][:, cols > 0]
    expected = np.outer(rows, cols) / n
    observed = table > 0
    g = 2 * float(np.sum(table[observed] * np.log(table[observed] / expected[observed])))
    df = (rows.size - 1) * (cols.size - 1)
    if df == 0:
        return g, 0, 1.0
    q = 1.0
    if williams:
        q += (n * np.sum(1 / rows) - 1) * (n * np.sum(1 / cols) - 1) / (6 * n * df)
    return g, df, float(scipy.stats.chi2.sf(g / q, df))


def oracle_scores(
    X,
    n_bins: int = 10,
    *,
    signed: bool = True,
    estimator: str = "plugin",
    zeros: str = "exclude",
    pvals: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The (genes × genes) MI under a scoring choice and, with ``pvals``, the G-test
    p-values (float64, diagonal MI 0 and p-value 1)."""
    X = np.asarray(X.toarray() if hasattr(X, "toarray") else X)
    bins, nbg = oracle_bins(X, n_bins)
    n_genes = X.shape[1]
    signs = oracle_signs(X) if signed else np.ones((n_genes, n_genes))
    mi = np.zeros((n_genes, n_genes))
    p = np.ones((n_genes, n_genes)) if pvals else None
    for i in range(n_genes):
        for j in range(i + 1, n_genes):
            pair = bins[:, i], bins[:, j], nbg[i], nbg[j]
            value = oracle_mi(*pair, estimator=estimator, zeros=zeros) * signs[i, j]
            mi[i, j] = mi[j, i] = value
            if p is not None:
                p[i, j] = p[j, i] = oracle_g_test(*pair)[2]
    return mi, p
