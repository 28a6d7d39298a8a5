"""Matrices read chunk by chunk over cells: Dask arrays and backed ``.h5ad`` files.

Two passes over the cells, each a map over chunks and a reduction (DESIGN.md §5):

1. every chunk is validated and gives its genes' value runs; the merged runs give the
   exact edges (:class:`~geneverse._binning.GeneBins`), as in memory;
2. every chunk is binned with those edges and counted by the chosen kernel; the integer
   count blocks are added up and finished once.

Only value runs, bins and count blocks travel between the chunks and the caller: on a
``dask.distributed`` cluster the chunks of X stay on the workers and are never densified.
"""

from __future__ import annotations

import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from functools import reduce
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from .. import _logging as logg
from ..kernels import BinnedGenes, CountBlock, Kernel
from ._binning import GeneBins, ValueRuns, bin_cells
from ._matrix import check_values, used_columns

#: Memory for the count blocks of one pass over the cells (held twice: the running sum
#: and one chunk's blocks).
_PASS_BYTES = 256 * 1024**2
#: Cells per slice when reading a backed file.
SLICE_CELLS = 10_000


class ChunkSource(ABC):
    """The used genes' values, one chunk of cells at a time."""

    def __init__(self, values: Any, columns: np.ndarray, source: str) -> None:
        self.values = values
        self.columns = columns
        self.source = source

    @property
    def n_cells(self) -> int:
        return int(self.values.shape[0])

    @abstractmethod
    def map_reduce(self, task: Callable[..., Any], combine: Callable[[Any, Any], Any]) -> Any:
        """``combine`` of ``task(chunk, first_cell)`` over all chunks (CSC of used genes)."""


def _used_genes_of(block: Any, columns: np.ndarray) -> sparse.csc_matrix:
    """A block of rows of the values as CSC of the used genes, no explicit zeros."""
    return used_columns(block if sparse.issparse(block) else np.asarray(block), columns)


class SlicedSource(ChunkSource):
    """Any matrix that slices by rows: a backed ``.h5ad`` matrix (h5py dataset, anndata
    sparse dataset) read from disk slice by slice, or an in-memory array."""

    def map_reduce(self, task, combine):
        results = (
            task(_used_genes_of(self.values[start : start + SLICE_CELLS], self.columns), start)
            for start in range(0, self.n_cells, SLICE_CELLS)
        )
        return reduce(combine, results)


class DaskSource(ChunkSource):
    """A Dask array chunked over cells; tasks run where the chunks are (workers)."""

    def map_reduce(self, task, combine):
        import dask

        values = self.values.rechunk({1: -1}) if self.values.numblocks[1] > 1 else self.values
        blocks = values.to_delayed()[:, 0]
        starts = np.concatenate([[0], np.cumsum(values.chunks[0])[:-1]])
        parts = [
            dask.delayed(_run_on_block)(task, block, self.columns, int(start))
            for block, start in zip(blocks, starts, strict=True)
        ]
        while len(parts) > 1:  # a tree, so that no one task gathers every chunk's result
            pairs = [parts[i : i + 2] for i in range(0, len(parts), 2)]
            parts = [dask.delayed(combine)(*pair) if len(pair) == 2 else pair[0] for pair in pairs]
        return parts[0].compute()


def _run_on_block(task, block, columns: np.ndarray, start: int):
    return task(_used_genes_of(block, columns), start)


def is_chunked(values: Any) -> bool:
    """Whether ``values`` must be read chunk by chunk (Dask array, backed dataset)."""
    return _is_dask(values) or _is_backed(values)


def _is_dask(values: Any) -> bool:
    return type(values).__module__.startswith("dask.")


def _is_backed(values: Any) -> bool:
    module = type(values).__module__
    return module.startswith("h5py") or "sparse_dataset" in module


def chunk_source(values: Any, columns: np.ndarray, source: str) -> ChunkSource:
    """The chunk reader for ``values``."""
    kind = DaskSource if _is_dask(values) else SlicedSource
    return kind(values, columns, source)


def chunked_value_runs(
    source: ChunkSource, gene_names: pd.Index, cell_names: pd.Index
) -> ValueRuns:
    """Pass 1: validate every chunk and merge the genes' value runs."""
    gene_names, cell_names = np.asarray(gene_names), np.asarray(cell_names)

    def runs_of_chunk(chunk: sparse.csc_matrix, start: int) -> ValueRuns:
        check_values(
            chunk,
            source=source.source,
            gene_names=gene_names,
            cell_names=cell_names[start : start + chunk.shape[0]],
        )
        return ValueRuns.of_matrix(chunk)

    return source.map_reduce(runs_of_chunk, lambda a, b: ValueRuns.merge([a, b]))


def chunked_bins(source: ChunkSource, genes: GeneBins) -> sparse.csr_matrix:
    """The bins of every cell (cells × used genes, CSR ``uint8``)."""

    def bins_of_chunk(chunk: sparse.csc_matrix, start: int) -> list[sparse.csr_matrix]:
        binned = bin_cells(chunk, genes)
        return [sparse.csr_matrix((binned.bins, binned.genes, binned.indptr), chunk.shape)]

    return sparse.vstack(source.map_reduce(bins_of_chunk, operator.add), format="csr")


def chunked_count_blocks(
    source: ChunkSource,
    genes: GeneBins,
    make_kernel: Callable[[BinnedGenes], Kernel],
    n_rows: int,
) -> Iterator[tuple[int, CountBlock]]:
    """Pass 2: ``(start, counts)`` of the row blocks, the counts added up over chunks.

    Each pass over the cells counts as many row blocks as fit in the pass's memory.
    """
    width = max(genes.bin_counts.shape[1] - 1, 1)
    n_genes = genes.n_bins.shape[0]
    passes = _passes(n_rows, n_genes, width)
    for blocks in logg.progress(passes, total=len(passes), description="passes over cells"):

        def count_chunk(chunk: sparse.csc_matrix, start: int, blocks=blocks) -> list[CountBlock]:
            kernel = make_kernel(bin_cells(chunk, genes))
            return [kernel.count_block(first, last) for first, last in blocks]

        totals = source.map_reduce(count_chunk, _add_into)
        yield from zip((first for first, _ in blocks), totals, strict=True)


def _add_into(total: list[CountBlock], more: list[CountBlock]) -> list[CountBlock]:
    """Add ``more`` into ``total`` in place (each partial sum is used once)."""
    for into, part in zip(total, more, strict=True):
        np.add(into.counts, part.counts, out=into.counts)
        np.add(into.products, part.products, out=into.products)
    return total


def _passes(n_rows: int, n_genes: int, width: int) -> list[list[tuple[int, int]]]:
    """Row blocks grouped so that one pass's count blocks fit in ``_PASS_BYTES``."""
    passes: list[list[tuple[int, int]]] = []
    current: list[tuple[int, int]] = []
    used = 0
    start = 0
    while start < n_rows:
        per_row = 8 * (width * width + 1) * (n_genes - start)
        rows = int(max(1, min(n_rows - start, (_PASS_BYTES // 4) // per_row)))
        if current and used + rows * per_row > _PASS_BYTES:
            passes.append(current)
            current, used = [], 0
        current.append((start, start + rows))
        used += rows * per_row
        start += rows
    if current:
        passes.append(current)
    return passes
