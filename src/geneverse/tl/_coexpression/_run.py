"""The runs: each group of cells' data, scored block by block and assembled.

In memory, the used genes' values are read once (canonical, validated) and every group's
cells are binned on their own; read chunk by chunk (Dask, backed), pass 1 gives each
group's exact edges and pass 2 its compact bins, and counting then runs as in memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import sparse

from ... import _logging as logg
from ..._data._binned import BinnedGenes
from ..._data._binning import GeneBins, ValueRuns, bin_genes
from ..._data._chunked import ChunkSource, chunked_entries
from ..._utils import MI, Method
from ...kernels import Kernel, Scoring
from ._assemble import Assembler, DenseAssembler, SparseAssembler, TopKAssembler
from ._estimate import check_compact_bins_fit, estimate_run
from ._measures import MeasureScorer
from ._plan import GenePlan, Group
from ._results import GroupResult
from ._scoring import ScoredBlock, qvalues, scored_row_blocks
from ._statistics import permutation_pvalues, shuffle_cells


@dataclass(frozen=True)
class Computation:
    """What to compute for each group of cells: the method, the pairs and the options."""

    method: Method
    plan: GenePlan
    top_k: int | None
    n_bins: int
    scoring: Scoring
    n_permutations: int
    seed: int | None
    kernel_class: type[Kernel] | None
    n_jobs: int
    device: str | None

    def kernel(self, data: BinnedGenes, scoring: Scoring | None = None) -> Kernel:
        """The MI kernel of ``data``."""
        assert self.kernel_class is not None
        return self.kernel_class(
            data, scoring or self.scoring, n_jobs=self.n_jobs, device=self.device
        )

    def scores_of(self, scorer: Any) -> tuple[Any, Any]:
        """The assembled scores (and p-values) of every wanted pair, from ``scorer``'s blocks."""
        return assemble(scored_row_blocks(scorer, self.plan.n_rows), self.plan, self.top_k)


def run_in_memory(
    matrix: sparse.csr_matrix, groups: list[Group], computation: Computation
) -> list[GroupResult]:
    """Each group's result from the used genes' values of all cells (``matrix``)."""
    results = []
    for group in groups:
        cells = _rows(matrix, group.cells)
        if computation.method != MI:
            scores, _ = computation.scores_of(MeasureScorer(cells, computation.method))
            results.append(GroupResult(bins=None, n_bins=None, scores={computation.method: scores}))
        else:
            scored = _scored(bin_genes(cells, computation.n_bins), group, computation, cells)
            results.append(scored.result(computation))  # the binned data are freed by now
    return results


def run_chunked(
    source: ChunkSource, runs: list[ValueRuns], groups: list[Group], computation: Computation
) -> list[GroupResult]:
    """Pass 2 of chunked data: each group's compact bins, then counting as in memory.

    ``runs`` are pass 1's merged value runs of each group.
    """
    n_entries = sum(int(group_runs.counts.sum()) for group_runs in runs)
    check_compact_bins_fit(n_entries, computation.plan.n_genes, source.source, on_workers=False)
    genes = [
        GeneBins.of_runs(group_runs, group.cells.size, computation.n_bins)
        for group_runs, group in zip(runs, groups, strict=True)
    ]
    logg.info(f"    binning {source.source} chunk by chunk (pass 2 of 2)")
    entries = chunked_entries(source, genes, group_labels(groups, source.n_cells))
    return [
        _scored(group_genes.binned(group_entries), group, computation).result(computation)
        for group_genes, group_entries, group in zip(genes, entries, groups, strict=True)
    ]


def group_labels(groups: list[Group], n_cells: int) -> np.ndarray | None:
    """The index of each cell's group (-1 for none); ``None`` for all cells in one group."""
    if len(groups) == 1 and groups[0].cells.size == n_cells:
        return None
    labels = np.full(n_cells, -1, dtype=np.int64)
    for k, group in enumerate(groups):
        labels[group.cells] = k
    return labels


@dataclass(frozen=True)
class Scored:
    """A group's bins (the layer), bins per gene, assembled MI and p-values."""

    bins: sparse.csr_matrix
    n_bins: np.ndarray
    mi: Any
    pvalues: Any

    @classmethod
    def of(cls, binned: BinnedGenes, mi: Any, pvalues: Any) -> Scored:
        """Keeps the bins layer of ``binned`` (which shares its arrays), not the rest."""
        shape = (binned.n_cells, binned.n_genes)
        bins = sparse.csr_matrix((binned.bins, binned.genes, binned.indptr), shape=shape)
        return cls(bins=bins, n_bins=binned.n_bins, mi=mi, pvalues=pvalues)

    def result(self, computation: Computation) -> GroupResult:
        """The group's result, with the q-values of its p-values."""
        scores = {MI: self.mi}
        if self.pvalues is not None:
            tested = computation.plan.tested()
            q = qvalues(self.pvalues, tested, self.mi.shape[0], computation.n_jobs)
            scores |= {"pvals": self.pvalues, "qvals": q}
        return GroupResult(bins=self.bins, n_bins=self.n_bins, scores=scores)


def _scored(
    binned: BinnedGenes,
    group: Group,
    computation: Computation,
    cells: sparse.csr_matrix | None = None,
) -> Scored:
    """A group's MI and p-values from its binned data (with a permutation null, from
    shuffles of its ``cells``' values). The kernel, its copy of the entries and the sign
    values are freed when this returns, before the q-values (:meth:`Scored.result`)."""
    kernel = computation.kernel(binned)
    logg.info(estimate_run(binned, kernel, computation.plan.n_rows, group.name, computation.top_k))
    mi, pvalues = computation.scores_of(kernel)
    if computation.n_permutations:
        assert cells is not None
        pvalues = _permutation_pvalues(cells, mi, computation)
    return Scored.of(binned, mi, pvalues)


def _rows(matrix: sparse.csr_matrix, cells: np.ndarray) -> sparse.csr_matrix:
    return matrix if cells.size == matrix.shape[0] else matrix[cells]


def _permutation_pvalues(
    cells: sparse.csr_matrix, observed: np.ndarray, computation: Computation
) -> np.ndarray:
    """``(1 + b) / (1 + P)``: ``b`` shuffles of each gene's cells with ``|MI| >= |observed|``."""
    rng = np.random.default_rng(computation.seed)
    exceed = np.zeros(observed.shape, dtype=np.int32)
    plain = replace(computation.scoring, g_test=False)
    n = computation.n_permutations
    for _ in logg.progress(range(n), total=n, description="permutations"):
        kernel = computation.kernel(bin_genes(shuffle_cells(cells, rng), computation.n_bins), plain)
        null, _ = computation.scores_of(kernel)
        exceed += np.abs(null) >= np.abs(observed)
    return permutation_pvalues(exceed, n).astype(np.float32)


def assembler_of(top_k: int | None, n_genes: int, *, against: bool) -> Assembler:
    """The assembler of the output asked for: top-k, a sparse rectangle, or dense."""
    if top_k is not None:
        return TopKAssembler(n_genes, top_k)
    if against:
        return SparseAssembler(n_genes)
    return DenseAssembler(n_genes)


def assemble(blocks: Iterable[ScoredBlock], plan: GenePlan, top_k: int | None):
    """The symmetric matrix of the plan's genes (and the p-values') from row blocks."""
    assembler = assembler_of(top_k, plan.n_genes, against=plan.in_against is not None)
    for block in blocks:
        mi, pvalues = block.mi, block.pvalues
        wanted = plan.pair_mask(block.start, block.start + mi.shape[0])
        if wanted is not None:
            mi = np.where(wanted, mi, 0)
            pvalues = None if pvalues is None else np.where(wanted, pvalues, 0)
        assembler.add(block.start, mi, pvalues)
    return assembler.result()
