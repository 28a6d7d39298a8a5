"""Typed stub of ``geneverse._core``, the compiled Rust core (``src_rust/``)."""

from typing import Protocol, final, type_check_only

import numpy as np
from numpy.typing import NDArray

__all__ = ["CooccurrenceKernel", "__version__", "bh_qvalues_of_pairs", "chi2_pvalues"]

__version__: str

@type_check_only
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
    def varies(self) -> NDArray[np.bool_]: ...
    @property
    def value_sums(self) -> NDArray[np.float64]: ...
    @property
    def value_norms(self) -> NDArray[np.float64]: ...
    @property
    def expressed(self) -> NDArray[np.int64]: ...
    @property
    def bins_xlogx(self) -> NDArray[np.float64]: ...
    @property
    def occupied(self) -> NDArray[np.int64]: ...
    @property
    def full_inverse(self) -> NDArray[np.float64]: ...
    @property
    def xlogx(self) -> NDArray[np.float64]: ...
    @property
    def log2(self) -> NDArray[np.float64]: ...

@final
class CooccurrenceKernel:
    """The co-occurrence kernel of one input and one scoring choice (the docs page "How
    the scores are computed").

    The constructor checks ``data`` completely (``ValueError`` saying what is wrong,
    ``TypeError`` for a wrong dtype) and builds the kernel's blocked copy of the entries
    (about 10 bytes per entry when ``signed``, 2 otherwise, plus a values matrix and
    bitsets for blocks that most cells express). A pair's sign counts only when
    ``|N * P - S_i * S_j|`` exceeds ``sign_tolerance`` times its rounding error bound.
    Everything runs on ``n_jobs`` threads (0: one per core) with the GIL released.
    ``block_genes`` (1 to 256) is for tuning; results do not depend on it, nor on
    ``n_jobs``, bit for bit.
    """

    def __new__(
        cls,
        data: _BinnedArrays,
        *,
        signed: bool,
        include_zeros: bool,
        miller_madow: bool,
        g_test: bool,
        sign_tolerance: float,
        n_jobs: int,
        block_genes: int | None = None,
    ) -> CooccurrenceKernel: ...
    def scores(
        self, start: int, stop: int, first_column: int | None = None, pvalues: bool = False
    ) -> tuple[
        NDArray[np.float32],
        NDArray[np.float64] | None,
        NDArray[np.int32] | None,
        NDArray[np.float32] | None,
    ]:
        """The scores of genes ``start:stop`` against genes ``first_column:n_genes``.

        ``first_column=None`` (or ``start``) is a row block: columns ``start:``, the pairs
        within the rows both ways (left of the diagonal mirrored from above), the
        diagonal 0. Otherwise ``first_column >= stop``: a rectangle of disjoint genes.
        Returns ``(mi, statistic, dof, pvalues)``, new arrays of shape
        ``(stop - start, n_genes - first)`` or ``None``: the MI in bits (``float32``) under
        the scoring choice, and with ``g_test`` either the Williams-corrected G statistic
        (``float64``) and its degrees of freedom (``int32``) or, with ``pvalues``, the
        p-values ``chi2.sf(statistic, dof)`` (``float32``, 1 on a row block's diagonal),
        finished with each pair. ``ValueError`` for rows or columns outside the genes, or
        ``pvalues`` without ``g_test``.
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

def chi2_pvalues(
    statistic: NDArray[np.float64],
    dof: NDArray[np.int32],
    n_jobs: int = 0,
    row_block: bool = False,
) -> NDArray[np.float32]:
    """The G-test's p-values, ``chi2.sf(statistic, dof)`` as ``float32`` in the shape of
    ``statistic``, 1 where ``dof`` is 0.

    Computed in closed form (a finite sum for whole degrees of freedom) on ``n_jobs``
    threads (0: one per core), the GIL released. Both arrays must be C-contiguous and of
    the same shape; ``ValueError`` otherwise, or for a negative ``dof``. With
    ``row_block``, the arrays are a kernel's row block (rows ``r0:r1`` against the columns
    from ``r0``): the pairs left of its diagonal are copied from their mirrors instead of
    computed, and the diagonal is 1.
    """

def bh_qvalues_of_pairs(
    pvalues: NDArray[np.float32], tested: NDArray[np.bool_] | None = None, n_jobs: int = 0
) -> NDArray[np.float32]:
    """Benjamini–Hochberg q-values of the pairs ``i < j`` of a symmetric ``(G, G)`` matrix
    of p-values, each pair one test (only the pairs ``tested`` marks, when given).

    Returns a symmetric ``float32`` matrix with 1 on the diagonal and at the untested
    pairs, computed from one sort of 64-bit keys (p-value bits, then position) on
    ``n_jobs`` threads (0: one per core), the GIL released. ``ValueError`` for arrays
    that are not square, of one shape and C-contiguous, or p-values outside ``[0, 1]``.
    """
