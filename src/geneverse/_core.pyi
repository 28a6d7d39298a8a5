"""Typed stub of ``geneverse._core``, the compiled Rust core (``src_rust/``)."""

from typing import Protocol

import numpy as np
from numpy.typing import NDArray

__version__: str

class _BinnedArrays(Protocol):
    """What the core reads from a :class:`geneverse.kernels.BinnedGenes` (its attributes).

    Every array must have exactly the dtype shown and be C-contiguous: it is borrowed as
    it is, never converted.
    """

    @property
    def n_cells(self) -> int: ...
    @property
    def indptr(self) -> NDArray[np.int64]: ...
    @property
    def genes(self) -> NDArray[np.int32]: ...
    @property
    def bins(self) -> NDArray[np.uint8]: ...
    @property
    def values(self) -> NDArray[np.float64]: ...
    @property
    def n_bins(self) -> NDArray[np.int32]: ...
    @property
    def bin_counts(self) -> NDArray[np.int64]: ...
    @property
    def value_sums(self) -> NDArray[np.float64]: ...
    @property
    def varies(self) -> NDArray[np.bool_]: ...
    @property
    def xlogx(self) -> NDArray[np.float64]: ...

class CooccurrenceKernel:
    """The co-occurrence MI kernel of one input (DESIGN.md §3).

    The constructor checks ``data`` completely (``ValueError`` saying what is wrong,
    ``TypeError`` for a wrong dtype) and builds the kernel's blocked copy of the entries
    (about 11 bytes per entry when ``signed``, 3 otherwise, plus a values matrix and
    bitsets for blocks that most cells express). Everything runs on ``n_jobs``
    threads (0: one per core) with the GIL released. ``block_genes`` (1 to 256) is for
    tuning; results do not depend on it, nor on ``n_jobs``, bit for bit.
    """

    def __init__(
        self,
        data: _BinnedArrays,
        *,
        signed: bool,
        n_jobs: int,
        block_genes: int | None = None,
    ) -> None: ...
    def row_block(self, start: int, stop: int) -> NDArray[np.float32]:
        """(Signed) MI in bits of genes ``start:stop`` against genes ``start:n_genes``.

        A new ``float32`` array of shape ``(stop - start, n_genes - start)``; its diagonal
        is 0.
        """
    def count_block(self, start: int, stop: int) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """``(counts, products)`` of a ``CountBlock`` for genes ``start:stop``.

        ``counts[r, a - 1, c, b - 1]`` (shape ``(rows, width, n_genes - start, width)``,
        ``width = max(max_bins - 1, 1)``) counts the cells with gene ``start + r`` in bin
        ``a`` and gene ``start + c`` in bin ``b``; ``products[r, c]`` sums their values'
        products (0 when not ``signed``). Diagonal pairs hold each gene with itself.
        """
    def finish_block(
        self, start: int, counts: NDArray[np.int64], products: NDArray[np.float64]
    ) -> NDArray[np.float32]:
        """(Signed) MI from :meth:`count_block`'s arrays (possibly summed over chunks of
        cells) with this kernel's marginals: the same array as :meth:`row_block`.

        ``ValueError`` when a shape is wrong or counts exceed their genes' bin counts.
        """
    @property
    def n_genes(self) -> int:
        """Number of genes."""
    @property
    def block_genes(self) -> int:
        """Genes per block (a tile is a block of rows × a block of columns)."""
    @property
    def nbytes(self) -> int:
        """Bytes held by the kernel (its blocked copy of the entries and gene tables)."""
