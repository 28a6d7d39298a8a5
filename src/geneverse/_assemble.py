"""Assemble the MI matrix from a kernel's row blocks: dense, sparse rectangle, or top-k.

A kernel hands out blocks ``rows start:stop × columns start:``; an assembler keeps what
the user asked for, so the dense ``genes × genes`` matrix is only ever built when it is
the requested output.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from scipy import sparse


class Assembler(ABC):
    """Collects the upper-triangle blocks of a symmetric ``n × n`` matrix."""

    def __init__(self, n: int) -> None:
        self.n = n

    @abstractmethod
    def add(self, start: int, block: np.ndarray) -> None:
        """Take ``block``: rows ``start:start+len(block)``, columns ``start:n``."""

    @abstractmethod
    def result(self) -> np.ndarray | sparse.csr_matrix:
        """The symmetric matrix (dense ``float32`` or CSR ``float32``)."""


class DenseAssembler(Assembler):
    """The full matrix, ``4 n²`` bytes."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self._matrix = np.zeros((n, n), dtype=np.float32)

    def add(self, start: int, block: np.ndarray) -> None:
        stop = start + block.shape[0]
        self._matrix[start:stop, start:] = block
        self._matrix[start:, start:stop] = block.T

    def result(self) -> np.ndarray:
        return self._matrix


class SparseAssembler(Assembler):
    """Only the nonzero entries, for outputs that are mostly zero (a rectangle)."""

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self._parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, start: int, block: np.ndarray) -> None:
        rows, cols = np.nonzero(block)
        self._parts.append((rows + start, cols + start, block[rows, cols]))

    def result(self) -> sparse.csr_matrix:
        rows, cols, values = (np.concatenate(p) for p in zip(*self._parts, strict=True))
        return _symmetric_csr(rows, cols, values, self.n)


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

    def add(self, start: int, block: np.ndarray) -> None:
        stop = start + block.shape[0]
        # The block's genes see all their partners from ``start`` on in their rows; the
        # genes after the block see the block's genes in its columns.
        columns = np.arange(start, self.n)
        self._merge(np.arange(start, stop), np.broadcast_to(columns, block.shape), block)
        later = block[:, stop - start :].T
        rows = np.broadcast_to(np.arange(start, stop), later.shape)
        self._merge(np.arange(stop, self.n), rows, later)

    def _merge(self, genes: np.ndarray, partners: np.ndarray, values: np.ndarray) -> None:
        """Merge candidate ``partners`` (ascending in each row) into the genes' lists."""
        # Partners kept so far come from earlier blocks and have smaller indices than the
        # candidates, so the concatenation is in ascending partner order and the stable
        # sort breaks ties in |MI| by the smaller partner index.
        all_partners = np.concatenate([self._partner[genes], partners], axis=1)
        all_values = np.concatenate([self._value[genes], values], axis=1)
        order = np.argsort(-np.abs(all_values), axis=1, kind="stable")[:, : self.k]
        best_partners = np.take_along_axis(all_partners, order, axis=1)
        best_values = np.take_along_axis(all_values, order, axis=1)
        by_partner = np.argsort(np.where(best_partners < 0, self.n, best_partners), axis=1)
        self._partner[genes] = np.take_along_axis(best_partners, by_partner, axis=1)
        self._value[genes] = np.take_along_axis(best_values, by_partner, axis=1)

    def result(self) -> sparse.csr_matrix:
        kept = (self._partner >= 0) & (self._value != 0)
        rows = np.repeat(np.arange(self.n), self.k).reshape(self.n, self.k)[kept]
        return _symmetric_csr(rows, self._partner[kept], self._value[kept], self.n)


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
