"""From the user's scoring choices to the kernel's, and from the kernel's scores to the
stored ones: the MI, and the p-values and q-values of a test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from ... import _logging as logg
from ..._utils import INCLUDE, MILLER_MADOW, Estimator, Zeros
from ...kernels import Kernel, Scoring
from ._statistics import bh_qvalues_matrix, bh_qvalues_sparse, g_test_pvalues


def kernel_scoring(*, signed: bool, zeros: Zeros, estimator: Estimator, g_test: bool) -> Scoring:
    """The kernels' :class:`~geneverse.kernels.Scoring` of the user's (checked) choices."""
    return Scoring(
        signed=signed,
        include_zeros=zeros == INCLUDE,
        miller_madow=estimator == MILLER_MADOW,
        g_test=g_test,
    )


@dataclass(frozen=True)
class ScoredBlock:
    """Rows ``start:start + len(mi)`` against the columns of the request: the MI and, with
    a test, the p-values (``float32``, 1 on the diagonal)."""

    start: int
    mi: np.ndarray
    pvalues: np.ndarray | None


def scored_row_blocks(
    kernel: Kernel, n_rows: int, first_column: int | None = None
) -> Iterator[ScoredBlock]:
    """The kernel's blocks of the first ``n_rows`` genes, with their p-values: row blocks,
    or against the genes from ``first_column`` (see :meth:`geneverse.kernels.Kernel.scores`)."""
    step = max(1, kernel.preferred_block_rows)
    starts = range(0, n_rows, step)
    for start in logg.progress(starts, total=len(starts), description="gene blocks"):
        scores = kernel.scores(start, min(n_rows, start + step), first_column)
        pvalues = scores.pvalues
        if pvalues is None and scores.statistic is not None:
            row_block = first_column is None
            pvalues = g_test_pvalues(scores.statistic, scores.dof, kernel.n_jobs, row_block)
        yield ScoredBlock(start, scores.mi, pvalues)


def qvalues(
    pvalues: np.ndarray | sparse.csr_matrix,
    tested: np.ndarray | None,
    n_genes: int,
    n_jobs: int = 1,
):
    """Benjamini–Hochberg q-values, each pair counted once.

    ``tested`` marks the pairs tested in a dense matrix (``None``: all pairs); a sparse
    matrix holds only some pairs (``top_k``, ``against``): its q-values count every pair
    that was tested (``n_genes`` choose 2 for ``top_k``), so they are never too small.
    A dense matrix's q-values are computed on ``n_jobs`` threads.
    """
    if sparse.issparse(pvalues):
        n_tests = n_genes * (n_genes - 1) // 2 if tested is None else int(tested.sum()) // 2
        return bh_qvalues_sparse(pvalues, n_tests=max(n_tests, pvalues.nnz // 2)).astype(np.float32)
    return bh_qvalues_matrix(pvalues, mask=tested, n_jobs=n_jobs)
