"""GeneVector's other co-expression targets, between all genes, without densifying X.

Each measure takes a cells × genes scipy sparse matrix (CSR or CSC; a dense array is
accepted too) of values ``>= 0`` and returns a dense ``(G, G)`` ``float64`` matrix: only the
gene × gene outputs are ever dense. Everything comes from two sparse Gram matrices,
``X.T @ X`` and ``B.T @ B`` with ``B`` the binary pattern of ``X``, and the column sums:
work ``O(sum over cells of nnz(cell)^2)`` and memory ``O(nnz + G^2)``.

Conventions (the same for every measure, like ``varp["gv_mi"]``):

- the diagonal is 0 (GeneVector sets it to 0 for cosine and Jaccard, and ignores it for
  every target: a gene's similarity with itself is no co-expression);
- a pair whose measure is undefined gets 0: Pearson and Spearman with a constant gene
  (all zero, or the same value in every cell), cosine with an all-zero gene, Jaccard of
  two genes expressed nowhere (``0 / 0``). This matches the signs of the signed MI, where
  an undefined correlation counts as 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
from scipy import sparse

from ..._data._binning import varying_genes

Measure = Literal["pearson", "spearman", "jaccard", "cosine"]
Matrix = sparse.spmatrix | sparse.sparray | np.ndarray


def pearson(X: Matrix) -> np.ndarray:
    """Pearson correlation of every pair of genes (columns) over all cells.

    ``r_ij = C_ij / sqrt(C_ii C_jj)`` with the co-scatter ``C = X.T X - s s.T / N`` from the
    sparse Gram matrix ``X.T X`` and the column sums ``s`` (``N`` cells). In float64; the
    cancellation in ``C`` costs about ``eps * mean^2 / variance`` of relative accuracy,
    negligible for expression data. Constant genes: 0; diagonal: 0.
    """
    csc = _checked_csc(X)
    return _pearson_of(csc, varying_genes(csc))


def spearman(X: Matrix) -> np.ndarray:
    """Spearman correlation of every pair of genes: Pearson of their ranks, ties averaged.

    The ranks come in sparse pieces. In a gene with ``z`` nonzero values among ``N``
    cells, all ``N - z`` zeros are tied at the lowest ranks and share the average rank
    ``r0 = (N - z + 1) / 2``; a nonzero value gets ``N - z`` plus its average rank among
    the nonzero values. So the rank column is ``r0`` everywhere plus a sparse correction
    ``D`` (``rank - r0``, stored where ``X`` is). A column constant does not change a
    Pearson correlation, hence ``spearman(X) = pearson(D)``, with ``D`` as sparse as ``X``.
    Equals ``scipy.stats.spearmanr`` (which ranks with ties averaged). Constant genes: 0;
    diagonal: 0.
    """
    csc = _checked_csc(X)
    return _pearson_of(_rank_offsets(csc), varying_genes(csc))


def cosine(X: Matrix) -> np.ndarray:
    """Cosine similarity of every pair of genes: ``x_i . x_j / (|x_i| |x_j|)``.

    From the sparse Gram matrix (its diagonal gives the norms). All-zero genes: 0;
    diagonal: 0 (as GeneVector).
    """
    csc = _checked_csc(X)
    gram = _gram(csc)
    norms = np.sqrt(np.diag(gram))
    return _normalised(gram, np.outer(norms, norms))


def jaccard(X: Matrix) -> np.ndarray:
    """Jaccard index of the genes' sets of expressing cells (``value > 0``).

    ``|A ∩ B| / |A ∪ B|`` with the intersections from the binary Gram matrix ``B.T B``
    and ``|A ∪ B| = |A| + |B| - |A ∩ B|``. Two genes expressed nowhere: 0; diagonal: 0
    (as GeneVector).
    """
    csc = _checked_csc(X)
    binary = sparse.csc_matrix((np.ones(csc.nnz), csc.indices, csc.indptr), shape=csc.shape)
    intersection = _gram(binary)
    size = np.diag(intersection)
    return _normalised(intersection, size[:, None] + size[None, :] - intersection)


#: ``method`` name → measure, for ``tl.coexpression(method=...)`` (``"mi"`` is the kernels').
MEASURES: dict[str, Callable[[Matrix], np.ndarray]] = {
    "pearson": pearson,
    "spearman": spearman,
    "jaccard": jaccard,
    "cosine": cosine,
}


def _checked_csc(X: Matrix) -> sparse.csc_matrix:
    """A float64 CSC copy of ``X`` without explicit zeros or duplicates; values checked."""
    csc = sparse.csc_matrix(X, dtype=np.float64, copy=True)
    csc.sum_duplicates()
    if not np.all(np.isfinite(csc.data)) or np.any(csc.data < 0):
        raise ValueError(
            "the co-expression measures need finite values >= 0 (counts or log-normalized "
            "values), not negative, NaN or infinite ones"
        )
    csc.eliminate_zeros()
    return csc


def _gram(csc: sparse.csc_matrix) -> np.ndarray:
    """``X.T @ X``, a sparse product, made dense only at ``(G, G)``."""
    return np.asarray((csc.T @ csc).toarray(), dtype=np.float64)


def _normalised(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, 0 where the denominator is 0, diagonal 0."""
    out = np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)
    np.fill_diagonal(out, 0.0)
    return out


def _pearson_of(csc: sparse.csc_matrix, defined: np.ndarray) -> np.ndarray:
    """Pearson correlations of the columns of ``csc``; pairs with a gene not ``defined``: 0."""
    n_cells = csc.shape[0]
    sums = np.asarray(csc.sum(axis=0), dtype=np.float64).ravel()
    scatter = _gram(csc) - np.outer(sums, sums) / max(n_cells, 1)
    spread = np.sqrt(np.where(defined, np.maximum(np.diag(scatter), 0.0), 0.0))
    scale = np.outer(spread, spread)
    scale[~(defined[:, None] & defined[None, :])] = 0.0
    return np.clip(_normalised(scatter, scale), -1.0, 1.0)


def _rank_offsets(csc: sparse.csc_matrix) -> sparse.csc_matrix:
    """``D``: each nonzero's average rank in its gene minus the zeros' average rank.

    For a gene with ``z`` nonzero values among ``N`` cells, a nonzero with average rank
    ``p`` among the nonzero values (1-based) has rank ``N - z + p`` and the zeros
    ``(N - z + 1) / 2``, so ``D = p + (N - z - 1) / 2 > 0``.
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
