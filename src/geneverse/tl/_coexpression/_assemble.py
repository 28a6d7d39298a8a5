"""Assemble the symmetric matrix of scores from tiles: dense, sparse rectangle, or top-k.

A tile is a block of rows ``r0:r1`` against the columns ``c0:c0 + width``: either a row
block (``c0 == r0``: its own pairs both ways, diagonal included) or a rectangle of
disjoint genes (``c0 >= r1``). An assembler keeps what the user asked for, so the dense
``genes × genes`` matrix is only ever built when it is the requested output. A tile may
come with a payload (the pairs' p-values), kept at the same positions as the scores.
Each pair must come in one tile only; for the top-k, the tiles of each gene must come in
increasing order of their partners (row blocks in order, or tiles in order of their
(row block, column block)).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from scipy import sparse

Matrix = np.ndarray | sparse.csr_matrix


class Assembler(ABC):
    """Collects the upper-triangle blocks of a symmetric ``n × n`` matrix."""

    def __init__(self, n: int) -> None:
        self.n = n

    @abstractmethod
    def add(
        self,
        start: int,
        block: np.ndarray,
        payload: np.ndarray | None = None,
        first_column: int | None = None,
    ) -> None:
        """Take the tile ``block``: rows ``start:start + len(block)`` against the columns
        ``first_column:first_column + block.shape[1]`` (``None``: a row block, from
        ``start``)."""

    @abstractmethod
    def result(self) -> tuple[Matrix, Matrix | None]:
        """The symmetric matrix (dense or CSR ``float32``) and its payload's, if any."""


class DenseAssembler(Assembler):
    """The full matrix, ``4 n²`` bytes (twice with a payload)."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self._matrix = np.zeros((n, n), dtype=np.float32)
        self._payload: np.ndarray | None = None

    def add(self, start, block, payload=None, first_column=None) -> None:
        first = start if first_column is None else first_column
        _place(self._matrix, start, first, block)
        if payload is not None:
            if self._payload is None:
                self._payload = np.ones((self.n, self.n), dtype=np.float32)
            _place(self._payload, start, first, payload)

    def result(self) -> tuple[np.ndarray, np.ndarray | None]:
        return self._matrix, self._payload


def _place(matrix: np.ndarray, start: int, first: int, block: np.ndarray) -> None:
    rows = slice(start, start + block.shape[0])
    columns = slice(first, first + block.shape[1])
    matrix[rows, columns] = block
    matrix[columns, rows] = block.T


class SparseAssembler(Assembler):
    """Only the nonzero entries, for outputs that are mostly zero (a rectangle)."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self._parts: list[tuple[np.ndarray, ...]] = []

    def add(self, start, block, payload=None, first_column=None) -> None:
        first = start if first_column is None else first_column
        rows, cols = np.nonzero(block)
        extra = () if payload is None else (payload[rows, cols],)
        self._parts.append((rows + start, cols + first, block[rows, cols], *extra))

    def result(self) -> tuple[sparse.csr_matrix, sparse.csr_matrix | None]:
        rows, cols, values, *extra = (np.concatenate(p) for p in zip(*self._parts, strict=True))
        payload = _symmetric_csr(rows, cols, extra[0], self.n) if extra else None
        return _symmetric_csr(rows, cols, values, self.n), payload


class TopKAssembler(Assembler):
    """Each gene's ``k`` strongest ``|MI|`` partners (union of both directions).

    Ties in ``|MI|`` go to the partner with the smaller index; zeros are never kept. Holds
    ``O(n k)`` plus one block, never the ``n × n`` matrix.
    """

    def __init__(self, n: int, k: int) -> None:
        super().__init__(n)
        self.k = k
        self._partner = np.full((n, k), -1, dtype=np.int64)
        self._value = np.zeros((n, k), dtype=np.float32)
        self._payload: np.ndarray | None = None

    def add(self, start, block, payload=None, first_column=None) -> None:
        if payload is not None and self._payload is None:
            self._payload = np.ones((self.n, self.k), dtype=np.float32)
        first = start if first_column is None else first_column
        n_rows, n_cols = block.shape
        # The tile's row genes see all its columns as partners; its column genes see the
        # row genes in their column, except (in a row block) the columns that are rows too.
        columns = np.arange(first, first + n_cols)
        self._merge(
            np.arange(start, start + n_rows), np.broadcast_to(columns, block.shape), block, payload
        )
        skip = n_rows if first == start else 0
        later = block[:, skip:].T
        rows = np.broadcast_to(np.arange(start, start + n_rows), later.shape)
        later_payload = None if payload is None else payload[:, skip:].T
        self._merge(columns[skip:], rows, later, later_payload)

    def add_candidates(self, genes, partners, values, payload=None) -> None:
        """Merge each of ``genes``' best candidate ``partners`` (``(len(genes), m)``, ascending
        in each row, ``-1`` for none) found elsewhere, e.g. a tile's own top-k."""
        if payload is not None and self._payload is None:
            self._payload = np.ones((self.n, self.k), dtype=np.float32)
        self._merge(genes, partners, values, payload)

    def candidates(self, genes: np.ndarray):
        """The current lists of ``genes``: partners, values and payload (or ``None``)."""
        payload = None if self._payload is None else self._payload[genes]
        return self._partner[genes], self._value[genes], payload

    def _merge(self, genes, partners, values, payload) -> None:
        """Merge candidate ``partners`` (ascending in each row) into the genes' lists."""
        # Partners kept so far come from earlier blocks and have smaller indices than the
        # candidates, so in the concatenation [kept, candidates] ties in |MI| go to the
        # earlier position, which is the smaller partner index.
        kept = [self._partner, self._value] + ([self._payload] if payload is not None else [])
        new = [partners, values] + ([payload] if payload is not None else [])
        old_values = self._value[genes]
        chosen = _strongest(np.abs(np.concatenate([old_values, values], axis=1)), self.k)
        from_old = chosen < self.k
        in_old, in_new = np.minimum(chosen, self.k - 1), np.maximum(chosen - self.k, 0)
        best = [
            np.where(
                from_old,
                np.take_along_axis(old[genes], in_old, axis=1),
                np.take_along_axis(add, in_new, axis=1),
            )
            for old, add in zip(kept, new, strict=True)
        ]
        by_partner = np.argsort(np.where(best[0] < 0, self.n, best[0]), axis=1)
        for old, array in zip(kept, best, strict=True):
            old[genes] = np.take_along_axis(array, by_partner, axis=1)

    def result(self) -> tuple[sparse.csr_matrix, sparse.csr_matrix | None]:
        kept = (self._partner >= 0) & (self._value != 0)
        rows = np.repeat(np.arange(self.n), self.k).reshape(self.n, self.k)[kept]
        partners = self._partner[kept]
        payload = None
        if self._payload is not None:
            payload = _symmetric_csr(rows, partners, self._payload[kept], self.n)
        return _symmetric_csr(rows, partners, self._value[kept], self.n), payload


def _strongest(strength: np.ndarray, k: int) -> np.ndarray:
    """The positions of each row's ``k`` largest values, ascending (``(rows, k)``); of tied
    values, the earliest. One selection per row (``np.partition``), no sort."""
    n_rows, width = strength.shape
    if width <= k:
        return np.broadcast_to(np.arange(width), (n_rows, width))
    threshold = np.partition(strength, width - k, axis=1)[:, width - k, None]
    chosen = strength > threshold
    tied = strength == threshold
    room = k - np.count_nonzero(chosen, axis=1)
    crowded = np.flatnonzero(np.count_nonzero(tied, axis=1) > room)
    if crowded.size:  # more ties than places left: the earliest of them
        first_ties = np.cumsum(tied[crowded], axis=1, dtype=np.int32) <= room[crowded, None]
        tied[crowded] &= first_ties
    chosen |= tied
    return np.nonzero(chosen)[1].reshape(n_rows, k)


def _symmetric_csr(rows, cols, values, n: int) -> sparse.csr_matrix:
    """CSR of the entries and their mirror images, each position once."""
    all_rows = np.concatenate([rows, cols])
    all_cols = np.concatenate([cols, rows])
    all_values = np.concatenate([values, values]).astype(np.float32)
    _, first = np.unique(all_rows.astype(np.int64) * n + all_cols, return_index=True)
    matrix = sparse.csr_matrix(
        (all_values[first], (all_rows[first], all_cols[first])), shape=(n, n), dtype=np.float32
    )
    matrix.sort_indices()
    return matrix
