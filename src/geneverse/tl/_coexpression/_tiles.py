"""Counting on a Dask array: tiles of gene blocks, run where the data are.

Pass 2 bins each chunk of cells into its compact entries on the worker that holds the
chunk. The genes are cut into blocks; each tile task receives the compact entries of two
gene blocks over all cells, scores their pairs with the kernel and returns its finished
scores (the tile of a dense or rectangle output, with its p-values) or, with ``top_k``,
its genes' best candidates. Only compact bins and finished tiles travel between the
workers and the client: never count blocks, never X.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ... import _logging as logg
from ..._data._binned import BinnedGenes
from ..._data._binning import CellEntries, GeneBins, ValueRuns
from ..._data._chunked import DaskSource, concatenated, entries_task
from ...kernels import Kernel, Scoring
from ._assemble import TopKAssembler
from ._estimate import check_compact_bins_fit
from ._plan import GenePlan, Group
from ._results import GroupResult
from ._run import Computation, Scored, assembler_of, group_labels
from ._scoring import scored_row_blocks

#: Genes per block: a quarter of the genes, within these bounds (enough tiles to share out,
#: each large enough that its kernel's set-up is small next to its counting).
_BLOCK_GENES = (256, 4096)


@dataclass(frozen=True)
class TileSpec:
    """What a tile task needs besides the entries: the kernel, the scoring, the per-gene
    bin tables of its genes, and which pairs are wanted."""

    kernel_class: type[Kernel]
    scoring: Scoring
    n_jobs: int
    device: str | None
    top_k: int | None
    n_cells: int
    n_bins: np.ndarray
    bin_counts: np.ndarray
    varies: np.ndarray
    rows: tuple[int, int]
    columns: tuple[int, int] | None
    plan: GenePlan


@dataclass(frozen=True)
class TileResult:
    """A tile's finished scores: the tile itself (``mi``, ``pvalues``), or with top-k the
    best candidates of its genes (``genes``, ``partners``, ``mi``, ``pvalues``)."""

    mi: np.ndarray
    pvalues: np.ndarray | None
    genes: np.ndarray | None = None
    partners: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        parts = (self.mi, self.pvalues, self.genes, self.partners)
        return sum(part.nbytes for part in parts if part is not None)


def run_tiles(
    source: DaskSource, runs: list[ValueRuns], groups: list[Group], computation: Computation
) -> list[GroupResult]:
    """Every group's result, counted in tiles of gene blocks on the Dask scheduler."""
    import dask

    n_entries = sum(int(group_runs.counts.sum()) for group_runs in runs)
    check_compact_bins_fit(n_entries, computation.plan.n_genes, source.source, on_workers=True)
    genes = [
        GeneBins.of_runs(group_runs, group.cells.size, computation.n_bins)
        for group_runs, group in zip(runs, groups, strict=True)
    ]
    chunks = source.delayed_map(entries_task(genes, group_labels(groups, source.n_cells)))
    blocks = gene_blocks(computation.plan.n_genes)
    logg.info(
        f"    counting {len(blocks)} gene blocks in {_n_tiles(blocks, computation.plan)} tiles "
        "where the chunks are (pass 2 of 2)"
    )
    results = []
    for k, group_genes in enumerate(genes):
        parts = [dask.delayed(operator.getitem)(chunk, k) for chunk in chunks]
        block_entries = [dask.delayed(_block_entries)(parts, lo, hi) for lo, hi in blocks]
        tiles = _tiles(blocks, computation.plan)
        tasks = [
            dask.delayed(score_tile)(
                block_entries[a],
                None if a == b else block_entries[b],
                _spec(computation, group_genes, blocks[a], None if a == b else blocks[b]),
            )
            for a, b in tiles
        ]
        *tile_results, entries = dask.compute(*tasks, dask.delayed(_all_entries)(parts))
        scores = _assembled(computation, blocks, tiles, tile_results)
        results.append(Scored.of(group_genes.binned(entries), *scores).result(computation))
    return results


def gene_blocks(n_genes: int) -> list[tuple[int, int]]:
    """The gene blocks ``(lo, hi)`` of the tiles."""
    low, high = _BLOCK_GENES
    size = int(np.clip(-(-n_genes // 4), low, high))
    return [(lo, min(n_genes, lo + size)) for lo in range(0, n_genes, size)]


def _tiles(blocks: list[tuple[int, int]], plan: GenePlan) -> list[tuple[int, int]]:
    """The tiles ``(a, b)``, ``a <= b``, in order, that hold a wanted pair."""
    return [
        (a, b)
        for a in range(len(blocks))
        for b in range(a, len(blocks))
        if min(blocks[a][0], blocks[b][0]) < plan.n_rows
    ]


def _n_tiles(blocks: list[tuple[int, int]], plan: GenePlan) -> int:
    return len(_tiles(blocks, plan))


def _spec(computation: Computation, genes: GeneBins, rows, columns) -> TileSpec:
    """The spec of the tile of gene blocks ``rows`` and ``columns`` (``None``: diagonal)."""
    assert computation.kernel_class is not None
    own = np.r_[slice(*rows)] if columns is None else np.r_[slice(*rows), slice(*columns)]
    return TileSpec(
        kernel_class=computation.kernel_class,
        scoring=computation.scoring,
        n_jobs=computation.n_jobs,
        device=computation.device,
        top_k=computation.top_k,
        n_cells=genes.n_cells,
        n_bins=genes.n_bins[own],
        bin_counts=genes.bin_counts[own],
        varies=genes.varies[own],
        rows=rows,
        columns=columns,
        plan=computation.plan,
    )


def _block_entries(parts: list[list[CellEntries]], lo: int, hi: int) -> CellEntries:
    """The entries of the genes ``lo:hi`` (numbered from 0) of every chunk, all cells."""
    selected = []
    for (part,) in parts:
        keep = (part.genes >= lo) & (part.genes < hi)
        kept_before = np.concatenate([[0], np.cumsum(keep)])
        indptr = kept_before[part.indptr]
        selected.append(
            CellEntries(indptr, part.genes[keep] - lo, part.bins[keep], part.values[keep])
        )
    return concatenated(selected)


def _all_entries(parts: list[list[CellEntries]]) -> CellEntries:
    return concatenated([part for (part,) in parts])


def score_tile(rows: CellEntries, columns: CellEntries | None, spec: TileSpec) -> TileResult:
    """The finished scores of one tile (a task: runs on a worker)."""
    n_rows = spec.rows[1] - spec.rows[0]
    entries = rows if columns is None else _side_by_side(rows, columns, n_rows)
    data = BinnedGenes.of(
        n_cells=spec.n_cells,
        indptr=entries.indptr,
        genes=entries.genes,
        bins=entries.bins,
        values=entries.values,
        n_bins=spec.n_bins,
        bin_counts=spec.bin_counts,
        varies=spec.varies,
    )
    kernel = spec.kernel_class(data, spec.scoring, n_jobs=spec.n_jobs, device=spec.device)
    first = None if columns is None else n_rows
    local = assembler_of(spec.top_k, data.n_genes, against=False)
    if spec.top_k is None and columns is not None:
        mi = np.zeros((n_rows, data.n_genes - n_rows), dtype=np.float32)
        pvalues = None
    for block in scored_row_blocks(kernel, n_rows, first_column=first):
        wanted = _wanted(spec, block.start, block.mi.shape)
        block_mi, block_p = block.mi, block.pvalues
        if wanted is not None:
            block_mi = np.where(wanted, block_mi, 0)
            block_p = None if block_p is None else np.where(wanted, block_p, 0)
        if spec.top_k is None and columns is not None:
            rows_here = slice(block.start, block.start + block_mi.shape[0])
            mi[rows_here] = block_mi
            if block_p is not None:
                if pvalues is None:
                    pvalues = np.ones(mi.shape, dtype=np.float32)
                pvalues[rows_here] = block_p
        else:
            local.add(block.start, block_mi, block_p, first_column=first)
    if spec.top_k is None:
        if columns is None:
            mi, pvalues = local.result()
        return TileResult(mi=mi, pvalues=pvalues)
    assert isinstance(local, TopKAssembler)
    partners, values, payload = local.candidates(np.arange(data.n_genes))
    genes = _global(np.arange(data.n_genes), spec)
    return TileResult(mi=values, pvalues=payload, genes=genes, partners=_global(partners, spec))


def _side_by_side(rows: CellEntries, columns: CellEntries, n_rows: int) -> CellEntries:
    """Each cell's entries of the row genes, then of the column genes (numbered after)."""
    n_cells = rows.indptr.size - 1
    indptr = rows.indptr + columns.indptr
    # An entry moves by the other part's entries before it: the column genes' entries of
    # the cells before its own (row genes), or the row genes' entries up to its own cell.
    row_cells = np.repeat(np.arange(n_cells), np.diff(rows.indptr))
    column_cells = np.repeat(np.arange(n_cells), np.diff(columns.indptr))
    at_rows = np.arange(rows.genes.size) + columns.indptr[row_cells]
    at_columns = np.arange(columns.genes.size) + rows.indptr[column_cells + 1]
    size = rows.genes.size + columns.genes.size
    genes, bins, values = np.empty(size, np.int32), np.empty(size, np.uint8), np.empty(size)
    for target, row_part, column_part in (
        (genes, rows.genes, columns.genes + n_rows),
        (bins, rows.bins, columns.bins),
        (values, rows.values, columns.values),
    ):
        target[at_rows] = row_part
        target[at_columns] = column_part
    return CellEntries(indptr, genes, bins, values)


def _wanted(spec: TileSpec, start: int, shape: tuple[int, int]) -> np.ndarray | None:
    """Which pairs of a block (rows ``start:`` of the tile) are wanted (``None``: all)."""
    plan = spec.plan
    if plan.in_against is None:
        return None
    row_genes = _global(np.arange(start, start + shape[0]), spec)
    first = start if spec.columns is None else spec.rows[1] - spec.rows[0]
    column_genes = _global(np.arange(first, first + shape[1]), spec)
    return ((row_genes[:, None] < plan.n_rows) & plan.in_against[None, column_genes]) | (
        (column_genes[None, :] < plan.n_rows) & plan.in_against[row_genes, None]
    )


def _global(local: np.ndarray, spec: TileSpec) -> np.ndarray:
    """The genes of the plan of a tile's genes (rows, then columns); -1 stays -1."""
    n_rows = spec.rows[1] - spec.rows[0]
    in_rows = local < n_rows
    columns_start = spec.rows[0] if spec.columns is None else spec.columns[0] - n_rows
    genes = np.where(in_rows, spec.rows[0] + local, columns_start + local)
    return np.where(local < 0, -1, genes)


def _assembled(
    computation: Computation,
    blocks: list[tuple[int, int]],
    tiles: list[tuple[int, int]],
    results: list[TileResult],
) -> tuple[Any, Any]:
    """The symmetric scores of the plan's genes from the tiles, in the order of the tiles."""
    plan = computation.plan
    assembler = assembler_of(computation.top_k, plan.n_genes, against=plan.in_against is not None)
    for (a, b), result in zip(tiles, results, strict=True):
        if result.genes is not None:
            assert isinstance(assembler, TopKAssembler)
            assembler.add_candidates(result.genes, result.partners, result.mi, result.pvalues)
        else:
            first = None if a == b else blocks[b][0]
            assembler.add(blocks[a][0], result.mi, result.pvalues, first_column=first)
    return assembler.result()
