"""The Rust backend: co-occurrence counting in the compiled core (``geneverse._core``).

The core borrows the arrays of :class:`BinnedGenes` without copying them, releases the
GIL, and counts tiles of gene pairs on a rayon pool of ``n_jobs`` threads
(``src_rust/``; DESIGN.md §3).
"""

from __future__ import annotations

import os

import numpy as np

from ._base import BinnedGenes, CountBlock, Kernel

#: The dtype and number of dimensions the core borrows each array of BinnedGenes as.
_LAYOUT: dict[str, tuple[type[np.generic], int]] = {
    "indptr": (np.int64, 1),
    "genes": (np.int32, 1),
    "bins": (np.uint8, 1),
    "values": (np.float64, 1),
    "n_bins": (np.int32, 1),
    "bin_counts": (np.int64, 2),
    "value_sums": (np.float64, 1),
    "varies": (np.bool_, 1),
    "xlogx": (np.float64, 1),
}

_REBUILD = "reinstall geneverse from its source with `pip install -e .`, which builds the Rust core"


def _core_module():
    """``geneverse._core``, imported on first use."""
    from .. import _core

    return _core


class RustKernel(Kernel):
    """Counts co-occurrences in compiled Rust with rayon threads, the GIL released.

    At construction the core checks the input and copies its entries into blocks of genes
    (a few dozen genes each, from the number of bins, so that a tile's counts fit in a
    core's L2 cache), each block's entries cell after cell: about 11 bytes per entry (3
    when unsigned). A tile, a block of rows × a block of columns, is then one scan over two
    sequential streams that counts the pairs of each cell's entries, and is finished at
    once. Blocks that most cells express also get their values as a matrix (8 bytes per
    cell and gene) and, where the CPU makes it pay (AVX-512 ``VPOPCNTQ``, chosen at run
    time), each gene's cells per bin as bitsets: their tiles are counted as
    ``popcount(cells_ia & cells_jb)``, the same integers. Results do not depend on
    ``n_jobs``, bit for bit; ``count_block`` and ``finish_block`` (chunks of cells) give
    the same bits as ``row_block``.
    """

    name = "rust"
    # Measured on one core (AMD EPYC): ~2e8/s on 5-10 % sparse data, where the per-pair
    # finish weighs as much as the counting, up to ~1.5e9/s on dense data.
    throughput = 2.5e8

    def __init__(
        self, data: BinnedGenes, *, signed: bool, n_jobs: int, device: str | None = None
    ) -> None:
        super().__init__(data, signed=signed, n_jobs=n_jobs, device=device)
        _check_layout(data)
        self._core = _core_module().CooccurrenceKernel(data, signed=signed, n_jobs=self.threads)

    @classmethod
    def unavailable_reason(cls, device: str | None = None) -> str | None:
        if device not in (None, "cpu"):
            return f"it runs on the CPU only (got device={device!r})"
        try:
            core = _core_module()
        except ImportError as error:
            return f"its compiled core geneverse._core does not import ({error}); {_REBUILD}"
        if not hasattr(core, "CooccurrenceKernel"):
            return f"its compiled core geneverse._core is out of date; {_REBUILD}"
        return None

    @property
    def preferred_block_rows(self) -> int:
        # The core counts whole blocks of genes, so row blocks that are whole numbers of
        # them waste nothing; about 512 rows keep every thread busy (a row block is many
        # tiles) and the progress bar smooth.
        block = self._core.block_genes
        return block * max(1, round(512 / block))

    @property
    def threads(self) -> int:
        """Rayon threads used: ``n_jobs``, or one per core when ``n_jobs`` is < 1."""
        return self.n_jobs if self.n_jobs >= 1 else (os.cpu_count() or 1)

    def row_block(self, start: int, stop: int) -> np.ndarray:
        return self._core.row_block(start, stop)

    def count_block(self, start: int, stop: int) -> CountBlock:
        counts, products = self._core.count_block(start, stop)
        return CountBlock(counts=counts, products=products)

    def finish_block(self, start: int, block: CountBlock) -> np.ndarray:
        counts = np.ascontiguousarray(block.counts, dtype=np.int64)
        products = np.ascontiguousarray(block.products, dtype=np.float64)
        return self._core.finish_block(start, counts, products)


def _check_layout(data: BinnedGenes) -> None:
    """Raise unless every array has the dtype and shape the core borrows without a copy."""
    for name, (dtype, ndim) in _LAYOUT.items():
        array = getattr(data, name)
        if not isinstance(array, np.ndarray) or array.dtype != dtype:
            found = getattr(array, "dtype", type(array).__name__)
            raise TypeError(f"BinnedGenes.{name} must be a {np.dtype(dtype)} array, not {found}")
        if array.ndim != ndim or not array.flags.c_contiguous:
            raise ValueError(
                f"BinnedGenes.{name} must be a C-contiguous {ndim}-d array "
                f"(got shape {array.shape})"
            )
