"""The test oracle: DESIGN.md §2 written out as a plain per-pair loop.

This is the definition of the result, not a backend: slow, dense and obvious.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.stats

#: Correlations smaller than this are zero in exact arithmetic on the test data (small
#: integer or dyadic values), and only floating-point noise in ``numpy.corrcoef``.
_EXACT_ZERO_CORRELATION = 1e-12


def oracle_bins(X: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Bins of every value (cells × genes) and the number of bins of every gene (§2.1)."""
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
    """Plug-in MI in bits over the cells where either gene is expressed (§2.2–2.3)."""
    counted = (bins_a > 0) | (bins_b > 0)
    if not counted.any():
        return 0.0
    joint = np.bincount(bins_a[counted] * nb + bins_b[counted], minlength=na * nb)
    p = joint.reshape(na, nb) / joint.sum()
    pa, pb = p.sum(axis=1), p.sum(axis=0)
    nz = p > 0
    return float(np.sum(p[nz] * np.log2(p[nz] / np.outer(pa, pb)[nz])))


def oracle_signs(X: np.ndarray) -> np.ndarray:
    """``numpy.sign`` of the Pearson correlations over all cells; undefined counts as 0 (§2.4)."""
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
