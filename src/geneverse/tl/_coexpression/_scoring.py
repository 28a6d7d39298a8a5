"""What each pair's counts become: the MI (estimator, zeros), its sign, its p-value.

The default score (plug-in MI over the cells expressing either gene, GeneVector's) is
finished by the kernel itself; any other choice finishes the kernel's counts with
:mod:`geneverse._statistics`, the same for every backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from ... import _logging as logg
from ...kernels import CountBlock, Kernel
from ._statistics import (
    ESTIMATORS,
    ZEROS,
    bh_qvalues_matrix,
    bh_qvalues_sparse,
    block_statistics,
)

#: One row block: its first row, the MI and (when asked for) the p-values.
ScoredBlock = tuple[int, np.ndarray, np.ndarray | None]


@dataclass(frozen=True)
class Scoring:
    """The choices that turn counts into scores."""

    estimator: str = "plugin"
    zeros: str = "exclude"
    pvals: bool = False
    n_permutations: int = 0

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("estimator", self.estimator, ESTIMATORS),
            ("zeros", self.zeros, ZEROS),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not known; use one of {list(allowed)}.")
        if isinstance(self.n_permutations, bool) or not isinstance(self.n_permutations, int):
            raise TypeError(f"n_permutations must be a whole number, not {self.n_permutations!r}.")
        if self.n_permutations < 0:
            raise ValueError("n_permutations must be 0 (no permutation null) or more.")

    @property
    def by_kernel(self) -> bool:
        """The kernel's own fused finish gives this score (GeneVector's, no G-test)."""
        return self.estimator == "plugin" and self.zeros == "exclude" and not self.g_test

    @property
    def g_test(self) -> bool:
        """p-values from the G-test (``pvals=True`` without a permutation null)."""
        return self.pvals and self.n_permutations == 0


def score_block(finisher: Kernel, start: int, counts: CountBlock, scoring: Scoring) -> ScoredBlock:
    """Score the counts of a row block with the marginals of ``finisher``'s data."""
    if scoring.by_kernel:
        return start, finisher.finish_block(start, counts), None
    stats = block_statistics(
        counts,
        finisher.data,
        start,
        signed=finisher.signed,
        estimator=scoring.estimator,
        zeros=scoring.zeros,
        pvalues=scoring.g_test,
    )
    pvalues = None if stats.pvalues is None else stats.pvalues.astype(np.float32)
    return start, stats.mi.astype(np.float32), pvalues


def scored_row_blocks(kernel: Kernel, n_rows: int, scoring: Scoring) -> Iterator[ScoredBlock]:
    """The kernel's row blocks over the first ``n_rows`` genes, scored."""
    step = max(1, kernel.preferred_block_rows)
    starts = range(0, n_rows, step)
    for start in logg.progress(starts, total=len(starts), description="gene blocks"):
        stop = min(n_rows, start + step)
        if scoring.by_kernel:
            yield start, kernel.row_block(start, stop), None
        else:
            yield score_block(kernel, start, kernel.count_block(start, stop), scoring)


def qvalues(pvalues: np.ndarray | sparse.csr_matrix, tested: np.ndarray | None, n_genes: int):
    """Benjamini–Hochberg q-values, each pair counted once.

    ``tested`` marks the pairs tested in a dense matrix (``None``: all pairs); a sparse
    matrix holds only some pairs (``top_k``, ``against``): its q-values count every pair
    that was tested (``n_genes`` choose 2 for ``top_k``), so they are never too small.
    """
    if sparse.issparse(pvalues):
        n_tests = n_genes * (n_genes - 1) // 2 if tested is None else int(tested.sum()) // 2
        return bh_qvalues_sparse(pvalues, n_tests=max(n_tests, pvalues.nnz // 2)).astype(np.float32)
    return bh_qvalues_matrix(pvalues, mask=tested).astype(np.float32)
