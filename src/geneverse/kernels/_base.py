"""The one small interface every MI kernel implements.

A kernel knows nothing of AnnData. It receives the genes' nonzero bins in a
cell-major sparse layout (:class:`BinnedGenes`), and fills blocks of rows of the
signed MI matrix with the co-occurrence algorithm of DESIGN.md §3. The caller
(:mod:`geneverse.tl._coexpression`) walks the row blocks, shows progress and
assembles the symmetric result.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .._data._binned import BinnedGenes


@dataclass(frozen=True)
class CountBlock:
    """The sufficient statistics of a row block, before the MI finish.

    For genes ``i`` in ``start:stop`` and ``j`` in ``start:n_genes``: ``counts[r, a-1, c,
    b-1]`` is ``n_ij(a, b)``, the cells with gene ``start + r`` in bin ``a > 0`` and gene
    ``start + c`` in bin ``b > 0`` (``int64``, shape ``(rows, max_bins - 1, columns,
    max_bins - 1)``), and ``products[r, c]`` the sum over cells of their values' product
    (``float64``; zeros when the run is unsigned). Counts of disjoint sets of cells add
    up, which is how chunks of cells are reduced.
    """

    counts: np.ndarray
    products: np.ndarray

    def __add__(self, other: CountBlock) -> CountBlock:
        return CountBlock(self.counts + other.counts, self.products + other.products)


class Kernel(ABC):
    """A backend that computes rows of the signed MI matrix.

    Subclasses set :attr:`name`, implement :meth:`unavailable_reason` (``None`` when the
    backend can run here), :meth:`count_block` and :meth:`finish_block`, and may replace
    :meth:`row_block` by a fused version with the same result. Instances are made for one
    run:
    ``Kernel(data, signed=..., n_jobs=..., device=...)``, so a kernel may prepare state
    (move data to a device, build an index) once in ``__init__``.
    """

    name: ClassVar[str]
    #: Rough co-occurrence increments per second and thread, for the estimate of a run.
    throughput: ClassVar[float] = 2e8

    def __init__(
        self, data: BinnedGenes, *, signed: bool, n_jobs: int, device: str | None = None
    ) -> None:
        reason = self.unavailable_reason(device)
        if reason is not None:
            raise RuntimeError(f"The {self.name!r} backend cannot run here: {reason}")
        self.data = data
        self.signed = signed
        self.n_jobs = n_jobs
        self.device = device

    @classmethod
    @abstractmethod
    def unavailable_reason(cls, device: str | None = None) -> str | None:
        """Why this backend cannot run here (on ``device``), or ``None`` when it can."""

    @property
    def preferred_block_rows(self) -> int:
        """How many rows the caller should ask for at a time (a hint, not a rule)."""
        return 256

    def row_block(self, start: int, stop: int) -> np.ndarray:
        """Signed MI of genes ``start:stop`` against genes ``start:n_genes``.

        Returns
        -------
        ``float32`` array of shape ``(stop - start, n_genes - start)``: entry ``[r, c]`` is
        the (signed, when ``self.signed``) MI in bits of gene ``start + r`` with gene
        ``start + c``. The diagonal entries (``r == c``) are 0.
        """
        return self.finish_block(start, self.count_block(start, stop))

    def _check_rows(self, start: int, stop: int) -> None:
        """A row block must lie within the genes."""
        n_genes = self.data.n_genes
        if not 0 <= start <= stop <= n_genes:
            raise ValueError(f"row block {start}:{stop} is outside 0:{n_genes}.")

    def _check_count_block(
        self, start: int, counts: np.ndarray, products: np.ndarray, width: int
    ) -> int:
        """Counts and products of rows from ``start`` must have the shapes of this data,
        with ``width`` nonzero bins per gene; returns the number of rows."""
        n_rows = counts.shape[0] if counts.ndim == 4 else -1
        self._check_rows(start, start + max(n_rows, 0))
        expected = (n_rows, width, self.data.n_genes - start, width)
        if counts.shape != expected or products.shape != expected[::2]:
            raise ValueError(
                f"a count block of rows from {start} must have counts of shape {expected} "
                f"and products of shape {expected[::2]}; got {counts.shape} and "
                f"{products.shape}."
            )
        return n_rows

    @abstractmethod
    def count_block(self, start: int, stop: int) -> CountBlock:
        """The co-occurrence counts (and value products) of a row block of this data."""

    @abstractmethod
    def finish_block(self, start: int, block: CountBlock) -> np.ndarray:
        """The row block's MI from its counts and this data's marginals (``row_block``).

        ``block`` may hold the counts of other cells than this kernel's entries (the sum
        over chunks of cells): only the marginals of :class:`BinnedGenes` (``n_cells``,
        ``bin_counts``, ``value_sums``, ``varies``, ``xlogx``) are used.
        """
