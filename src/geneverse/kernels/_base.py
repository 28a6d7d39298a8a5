"""The one small interface every kernel implements.

A kernel knows nothing of AnnData. It receives the genes' nonzero bins in a cell-major
sparse layout (:class:`~geneverse._data._binned.BinnedGenes`) and the scoring choice
(:class:`Scoring`), counts the co-occurrences of bins of a block of gene pairs, and
finishes those integer counts at once into the stored scores (:class:`PairScores`): the
MI under that choice, signed, and with a test the Williams-corrected G statistic and its
degrees of freedom. The finish follows one written sequence of floating-point
operations, the same in every backend (the docs page "How the scores are computed"),
so every backend gives the same bits.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .._data._binned import BinnedGenes

#: A pair's correlation sign counts only when ``|N * P - S_i * S_j|`` exceeds this share of
#: ``N * norm_i * norm_j + |S_i * S_j|``, its rounding error bound (with room for the
#: summation of a few million cells); below it the correlation is 0 to working precision.
SIGN_TOLERANCE = 2.0**-32


@dataclass(frozen=True)
class Scoring:
    """What a kernel turns each pair's counts into.

    Attributes
    ----------
    signed
        Multiply the MI by the sign of the pair's Pearson correlation.
    include_zeros
        Count the cells where both genes are zero (the MI over all cells); otherwise the
        table holds only the cells expressing either gene (GeneVector's score).
    miller_madow
        Add the Miller–Madow correction to each entropy term.
    g_test
        Also give the G statistic of the full table (all cells) with Williams'
        correction, and its degrees of freedom.
    """

    signed: bool = True
    include_zeros: bool = False
    miller_madow: bool = False
    g_test: bool = False


@dataclass(frozen=True)
class PairScores:
    """The scores of a block of gene pairs: genes ``rows`` against genes ``columns``.

    Attributes
    ----------
    mi
        ``float32`` ``(rows, columns)``: the MI in bits under the scoring choice (signed
        when the scoring is), never ``-0.0``.
    statistic
        With ``g_test``: ``float64``, the Williams-corrected G statistic ``G / q`` of each
        pair's full table (0 where ``dof`` is 0); else ``None``.
    dof
        With ``g_test``: ``int32``, the degrees of freedom ``(r - 1)(c - 1)`` of the full
        table's occupied rows and columns; else ``None``.
    pvalues
        With ``g_test``, from a kernel that finishes the test's p-values with each pair
        (the Rust core): ``float32`` ``chi2.sf(statistic, dof)``, 1 where ``dof`` is 0,
        and then ``statistic`` and ``dof`` are ``None``; else ``None`` (the caller
        computes them from ``statistic`` and ``dof``, with the same result).
    """

    mi: np.ndarray
    statistic: np.ndarray | None = None
    dof: np.ndarray | None = None
    pvalues: np.ndarray | None = None


class Kernel(ABC):
    """A backend that scores blocks of gene pairs.

    Subclasses set :attr:`name`, implement :meth:`unavailable_reason` (``None`` when the
    backend can run here) and :meth:`scores`. An instance is made for one input:
    ``Kernel(data, scoring, n_jobs=..., device=...)``, so a kernel may prepare state (move
    the data to a device, build an index) once in ``__init__``.
    """

    name: ClassVar[str]
    #: Rough co-occurrence increments per second and thread, for the estimate of a run.
    throughput: ClassVar[float] = 2e8

    def __init__(
        self, data: BinnedGenes, scoring: Scoring, *, n_jobs: int, device: str | None = None
    ) -> None:
        reason = self.unavailable_reason(device)
        if reason is not None:
            raise RuntimeError(f"The {self.name!r} backend cannot run here: {reason}")
        self.data = data
        self.scoring = scoring
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

    @abstractmethod
    def scores(self, start: int, stop: int, first_column: int | None = None) -> PairScores:
        """The scores of genes ``start:stop`` against genes ``first_column:n_genes``.

        ``first_column=None`` (or ``start``) asks for a row block: columns ``start:``, so
        the block's own pairs are in it both ways (left of its diagonal, each entry is the
        mirror of the one above it) and its diagonal, a gene with itself, is 0 (MI 0,
        statistic 0, dof 0). Otherwise ``first_column >= stop``: a rectangle of pairs of
        two disjoint sets of genes.

        Returns
        -------
        :class:`PairScores` of shape ``(stop - start, n_genes - first_column)``.
        """

    def _columns(self, start: int, stop: int, first_column: int | None) -> int:
        """Check a request; the first column (``start`` for a row block)."""
        n_genes = self.data.n_genes
        if not 0 <= start <= stop <= n_genes:
            raise ValueError(f"rows {start}:{stop} are outside 0:{n_genes}.")
        if first_column is None or first_column == start:
            return start
        if not stop <= first_column <= n_genes:
            raise ValueError(
                f"columns from {first_column} must start at the rows' first gene ({start}) "
                f"or after their last ({stop}), within 0:{n_genes}."
            )
        return first_column
