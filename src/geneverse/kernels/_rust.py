"""The Rust backend: co-occurrence counting in the compiled core (``geneverse._core``).

The core borrows the arrays of :class:`BinnedGenes` without copying them, releases the
GIL, and counts and finishes tiles of gene pairs on a rayon pool of ``n_jobs`` threads
(``src_rust/``; the docs page "How the scores are computed").
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from .._data._binned import BinnedGenes
from .._utils import RUST
from ._base import SIGN_TOLERANCE, Kernel, PairScores, Scoring

#: The dtype and number of dimensions the core borrows each array of BinnedGenes as.
_LAYOUT: dict[str, tuple[type[np.generic], int]] = {
    "indptr": (np.int64, 1),
    "genes": (np.int32, 1),
    "bins": (np.uint8, 1),
    "values": (np.float64, 1),
    "n_bins": (np.int32, 1),
    "bin_counts": (np.int64, 2),
    "varies": (np.bool_, 1),
    "value_sums": (np.float64, 1),
    "value_norms": (np.float64, 1),
    "expressed": (np.int64, 1),
    "bins_xlogx": (np.float64, 1),
    "occupied": (np.int64, 1),
    "full_inverse": (np.float64, 1),
    "xlogx": (np.float64, 1),
    "log2": (np.float64, 1),
}

_REBUILD = "reinstall geneverse from its source with `pip install -e .`, which builds the Rust core"


def _core_module():
    """``geneverse._core``, imported on first use."""
    from .. import _core

    return _core


class RustKernel(Kernel):
    """Counts co-occurrences in compiled Rust with rayon threads, the GIL released.

    At construction the core checks the input and copies its entries into blocks of genes
    (a few dozen to a few hundred genes each, from their bins and density, so that a
    tile's counts fit in a core's L2 cache), each block's entries cell after cell: about
    10 bytes per entry (2 when unsigned). A tile, a block of rows × a block of columns, is
    then one scan over two sequential streams that counts the pairs of each cell's entries
    (in ``u16`` counts unless a bin of a gene of each block holds more than 65,535 cells),
    and each of its pairs is finished at once into its scores, in the order of operations
    every backend follows.
    Blocks that most cells express also get their sign values as a matrix (8 bytes per
    cell and gene) and, where the CPU makes it pay (AVX-512 ``VPOPCNTQ``, chosen at run
    time), each gene's cells per bin as bitsets: their tiles are counted as
    ``popcount(cells_ia & cells_jb)``, the same integers. Results do not depend on
    ``n_jobs`` nor on the blocks, bit for bit.

    With a test, the core also finishes each pair's p-value (``PairScores.pvalues``, the
    same bits as :func:`~geneverse.tl._coexpression._statistics.g_test_pvalues` of its
    statistic and dof), so the statistic and dof are never stored;
    ``finish_pvalues=False`` gives the statistic and dof instead, as the other kernels do.
    """

    name = RUST
    # Measured on one core (AMD EPYC): ~2e8/s on 5-10 % sparse data, where the per-pair
    # finish weighs as much as the counting, up to ~1.5e9/s on dense data.
    throughput = 2.5e8

    def __init__(
        self,
        data: BinnedGenes,
        scoring: Scoring,
        *,
        n_jobs: int,
        device: str | None = None,
        finish_pvalues: bool = True,
    ) -> None:
        super().__init__(data, scoring, n_jobs=n_jobs, device=device)
        self.finish_pvalues = finish_pvalues and scoring.g_test
        _check_layout(data)
        self._core = _core_module().CooccurrenceKernel(
            _aligned(data),
            signed=scoring.signed,
            include_zeros=scoring.include_zeros,
            miller_madow=scoring.miller_madow,
            g_test=scoring.g_test,
            sign_tolerance=SIGN_TOLERANCE,
            n_jobs=self.threads,
        )

    @classmethod
    def unavailable_reason(cls, device: str | None = None) -> str | None:
        if device not in (None, "cpu"):
            return f"it runs on the CPU only (got device={device!r})"
        try:
            core = _core_module()
        except ImportError as error:
            return f"its compiled core geneverse._core does not import ({error}); {_REBUILD}"
        if not hasattr(getattr(core, "CooccurrenceKernel", None), "scores"):
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

    def scores(self, start: int, stop: int, first_column: int | None = None) -> PairScores:
        first = self._columns(start, stop, first_column)
        mi, statistic, dof, pvalues = self._core.scores(
            start, stop, first, pvalues=self.finish_pvalues
        )
        return PairScores(mi=mi, statistic=statistic, dof=dof, pvalues=pvalues)


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


def _aligned(data: BinnedGenes) -> BinnedGenes:
    """``data``, with an aligned copy of any array that is not aligned (arrays unpickled
    from a buffer, as on a Dask worker, can be); the others are borrowed as they are."""
    copies = {
        name: np.array(getattr(data, name))
        for name in _LAYOUT
        if not getattr(data, name).flags.aligned
    }
    return dataclasses.replace(data, **copies) if copies else data
