"""Matrices read chunk by chunk over cells: Dask arrays and backed ``.h5ad`` files.

The raw values are read at most twice, whatever the number of genes (docs: "How the
scores are computed"):

1. every chunk is validated and gives its genes' value runs; the merged runs give the
   exact edges (:class:`~geneverse._data._binning.GeneBins`), as in memory;
2. every chunk is binned with those edges into its compact entries (13 bytes each);
   counting then runs on the compact bins of all cells, as in memory.

Only value runs and compact bins travel between the chunks and the caller: on a
``dask.distributed`` cluster the chunks of X stay on the workers and are never densified.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import reduce, singledispatch
from typing import Any

import numpy as np
from scipy import sparse

from ._binning import CellEntries, GeneBins, ValueRuns, bin_cells
from ._matrix import check_values, matrix_digest, used_columns

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
        """``combine`` of ``task(chunk, first_cell)`` over all chunks (each the canonical CSR
        of the used genes' values of some cells)."""


def _used_genes_of(block: Any, columns: np.ndarray) -> sparse.csr_matrix:
    """A block of rows of the values as canonical CSR of the used genes."""
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

        parts = self.delayed_map(task)
        while len(parts) > 1:  # a tree, so that no one task gathers every chunk's result
            pairs = [parts[i : i + 2] for i in range(0, len(parts), 2)]
            parts = [dask.delayed(combine)(*pair) if len(pair) == 2 else pair[0] for pair in pairs]
        return parts[0].compute()

    def delayed_map(self, task: Callable[..., Any]) -> list[Any]:
        """``task(chunk, first_cell)`` of every chunk, as Dask delayed objects (not run)."""
        import dask

        values = self.values.rechunk({1: -1}) if self.values.numblocks[1] > 1 else self.values
        blocks = values.to_delayed()[:, 0]
        starts = np.concatenate([[0], np.cumsum(values.chunks[0])[:-1]])
        return [
            dask.delayed(_run_on_block)(task, block, self.columns, int(start))
            for block, start in zip(blocks, starts, strict=True)
        ]


def _run_on_block(task, block, columns: np.ndarray, start: int):
    return task(_used_genes_of(block, columns), start)


def is_chunked(values: Any) -> bool:
    """Whether ``values`` is read chunk by chunk (a Dask array, a backed dataset)."""
    return _chunked_reader(values) is not None


def chunk_source(values: Any, columns: np.ndarray, source: str) -> ChunkSource:
    """The chunk reader for ``values``: a Dask array by its chunks, any other array (backed
    or in memory) in slices of cells."""
    return (_chunked_reader(values) or SlicedSource)(values, columns, source)


@singledispatch
def _reader_of_type(values: Any) -> type[ChunkSource] | None:
    """The reader of a chunked array type; ``None`` for arrays in memory."""
    return None


#: The chunked array types, by module: registered once their module is loaded.
_CHUNKED_TYPES = (
    ("dask.array", "Array", DaskSource),
    ("h5py", "Dataset", SlicedSource),
    ("anndata.abc", "CSRDataset", SlicedSource),
    ("anndata.abc", "CSCDataset", SlicedSource),
)


def _chunked_reader(values: Any) -> type[ChunkSource] | None:
    """``_reader_of_type``, with the chunked types of the modules loaded so far registered.

    An array of a type exists only once the type's module is loaded, so geneverse never
    needs to import Dask or h5py itself to recognise their arrays.
    """
    for module_name, type_name, reader in _CHUNKED_TYPES:
        module = sys.modules.get(module_name)
        kind = getattr(module, type_name, None)
        if kind is not None and kind not in _reader_of_type.registry:
            _reader_of_type.register(kind, lambda values, reader=reader: reader)
    return _reader_of_type(values)


def chunked_value_runs(
    source: ChunkSource,
    gene_names: np.ndarray,
    cell_names: np.ndarray,
    labels: np.ndarray | None = None,
    n_groups: int = 1,
) -> tuple[list[ValueRuns], list[str]]:
    """Pass 1: every chunk validated; the merged value runs of each group of cells, and
    each chunk's digest (in the order of the cells).

    ``labels`` holds each cell's group (``0..n_groups - 1``; -1 for none; ``None``: all in
    group 0).
    """
    gene_names, cell_names = np.asarray(gene_names), np.asarray(cell_names)

    def runs_of_chunk(chunk: sparse.csr_matrix, start: int):
        names = cell_names[start : start + chunk.shape[0]]
        check_values(chunk, source=source.source, gene_names=gene_names, cell_names=names)
        groups = _group_rows(chunk, labels, start, n_groups)
        return [ValueRuns.of_matrix(rows) for rows in groups], [matrix_digest(chunk)]

    def combine(a, b):
        merged = [ValueRuns.merge([x, y]) for x, y in zip(a[0], b[0], strict=True)]
        return merged, a[1] + b[1]

    return source.map_reduce(runs_of_chunk, combine)


def chunked_matrix(
    source: ChunkSource, gene_names: np.ndarray, cell_names: np.ndarray
) -> sparse.csr_matrix:
    """The used genes' values of every chunk, validated, as one canonical CSR matrix."""
    gene_names, cell_names = np.asarray(gene_names), np.asarray(cell_names)

    def checked(chunk: sparse.csr_matrix, start: int) -> list[sparse.csr_matrix]:
        names = cell_names[start : start + chunk.shape[0]]
        check_values(chunk, source=source.source, gene_names=gene_names, cell_names=names)
        return [chunk]

    return sparse.vstack(source.map_reduce(checked, lambda a, b: a + b), format="csr")


def chunked_entries(
    source: ChunkSource, genes: list[GeneBins], labels: np.ndarray | None = None
) -> list[CellEntries]:
    """Pass 2: each group's compact entries, every chunk binned with its group's bins."""
    parts = source.map_reduce(entries_task(genes, labels), _concatenate_lists)
    return [concatenated(group_parts) for group_parts in parts]


def entries_task(
    genes: list[GeneBins], labels: np.ndarray | None
) -> Callable[[sparse.csr_matrix, int], list[list[CellEntries]]]:
    """The task of pass 2: a chunk's compact entries of each group (each in a list)."""

    def entries_of_chunk(chunk: sparse.csr_matrix, start: int) -> list[list[CellEntries]]:
        groups = _group_rows(chunk, labels, start, len(genes))
        return [[bin_cells(rows, bins)] for rows, bins in zip(groups, genes, strict=True)]

    return entries_of_chunk


def _concatenate_lists(a: list[list], b: list[list]) -> list[list]:
    return [x + y for x, y in zip(a, b, strict=True)]


def _group_rows(
    chunk: sparse.csr_matrix, labels: np.ndarray | None, start: int, n_groups: int
) -> list[sparse.csr_matrix]:
    """The rows of ``chunk`` (cells from ``start``) of each group."""
    if labels is None:
        return [chunk]
    own = labels[start : start + chunk.shape[0]]
    return [chunk[np.flatnonzero(own == k)] for k in range(n_groups)]


def concatenated(parts: list[CellEntries]) -> CellEntries:
    """The entries of consecutive chunks of cells, as one set of cells."""
    offsets = np.cumsum([0] + [part.genes.shape[0] for part in parts])
    indptr = np.concatenate(
        [[0]] + [part.indptr[1:] + offset for part, offset in zip(parts, offsets, strict=False)]
    )
    return CellEntries(
        indptr=indptr.astype(np.int64),
        genes=np.concatenate([part.genes for part in parts]),
        bins=np.concatenate([part.bins for part in parts]),
        values=np.concatenate([part.values for part in parts]),
    )
