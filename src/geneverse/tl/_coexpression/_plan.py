"""Which pairs and which cells: the genes in the order they enter a kernel, and the groups
of cells of ``groupby``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from ..._data._genes import GeneSelection, gene_mask


@dataclass(frozen=True)
class GenePlan:
    """Which genes enter, in which order, and which pairs are wanted.

    ``order`` holds the positions in ``adata.var_names`` of the used genes, the row genes
    (``genes``) first; only the first ``n_rows`` are computed as rows. With ``against``,
    ``in_against`` marks (in ``order``) the genes of ``against``: a pair is wanted when
    one of its genes is a row gene and the other is in ``against``.
    """

    order: np.ndarray
    n_rows: int
    in_against: np.ndarray | None

    @property
    def n_genes(self) -> int:
        return int(self.order.size)

    def pair_mask(self, start: int, stop: int) -> np.ndarray | None:
        """Which entries of the row block ``start:stop × start:`` are wanted (None: all)."""
        if self.in_against is None:
            return None
        columns = np.arange(start, self.order.size)
        return (
            (columns[None, :] >= self.n_rows)
            | self.in_against[start:stop, None]
            | self.in_against[None, start:]
        )

    def tested(self) -> np.ndarray | None:
        """The wanted pairs as a symmetric ``(n_genes, n_genes)`` mask (None: all)."""
        if self.in_against is None:
            return None
        tested = np.zeros((self.n_genes, self.n_genes), dtype=bool)
        tested[: self.n_rows] = self.in_against
        tested[:, : self.n_rows] |= self.in_against[:, None]
        return tested


def plan_genes(adata: AnnData, genes: GeneSelection, against: GeneSelection) -> GenePlan:
    """Resolve ``genes`` and ``against`` into the order in which genes enter the kernel."""
    rows = gene_mask(adata, genes, what="genes")
    if against is None:
        return GenePlan(order=np.flatnonzero(rows), n_rows=int(rows.sum()), in_against=None)
    columns = gene_mask(adata, against, what="against")
    order = np.concatenate([np.flatnonzero(rows), np.flatnonzero(columns & ~rows)])
    return GenePlan(order=order, n_rows=int(rows.sum()), in_against=columns[order])


def stored_genes(adata: AnnData, given: GeneSelection, positions: np.ndarray) -> Any:
    """A gene selection as an ``.h5ad`` file can hold it: its ``var`` column, or the names."""
    if given is None or isinstance(given, str):
        return given
    return np.asarray(adata.var_names[np.sort(positions)], dtype=str)


@dataclass(frozen=True)
class Group:
    """The cells of one ``groupby`` category (``name=None``: all cells, no groupby).

    ``suffix`` ends the keys of the group's results (``varp[f"gv_mi_{suffix}"]``): the
    category with what an ``.h5ad`` key cannot hold replaced, made unique.
    """

    name: str | None
    suffix: str | None
    cells: np.ndarray


def resolve_groups(adata: AnnData, groupby: str | None) -> list[Group]:
    """The cells of each category of ``adata.obs[groupby]`` (all cells without groupby)."""
    if groupby is None:
        return [Group(name=None, suffix=None, cells=np.arange(adata.n_obs))]
    labels = _group_labels(adata, groupby)
    categories = (
        labels.cat.categories
        if isinstance(labels.dtype, pd.CategoricalDtype)
        else pd.Index(sorted(labels.unique(), key=str))
    )
    found = [
        (str(category), np.flatnonzero((labels == category).to_numpy())) for category in categories
    ]
    found = [(name, cells) for name, cells in found if cells.size]
    suffixes = key_suffixes([name for name, _ in found])
    return [
        Group(name=name, suffix=suffix, cells=cells)
        for (name, cells), suffix in zip(found, suffixes, strict=True)
    ]


def _group_labels(adata: AnnData, groupby: str) -> pd.Series:
    if not isinstance(groupby, str) or groupby not in adata.obs.columns:
        raise ValueError(
            f"groupby={groupby!r} is not a column of adata.obs (columns: "
            f"{list(adata.obs.columns)}); name a categorical column such as a cell type."
        )
    labels = adata.obs[groupby]
    if pd.api.types.is_float_dtype(labels.dtype):
        raise ValueError(
            f"adata.obs[{groupby!r}] holds floating-point numbers, which would make one "
            "network per distinct value; group by a categorical, string, integer or boolean "
            f"column (e.g. pd.cut(adata.obs[{groupby!r}], bins=5) for ranges of it)."
        )
    if labels.isna().any():
        raise ValueError(
            f"adata.obs[{groupby!r}] has missing values; fill them or drop those cells first."
        )
    return labels


def key_suffixes(names: list[str]) -> list[str]:
    """One key suffix per group name: ``/`` (which an ``.h5ad`` key cannot hold) becomes
    ``_``, and a suffix taken already gets ``_2``, ``_3``, ...: the map is one-to-one."""
    suffixes: list[str] = []
    for name in names:
        base = name.replace("/", "_") or "_"
        suffix, n = base, 2
        while suffix in suffixes:
            suffix, n = f"{base}_{n}", n + 1
        suffixes.append(suffix)
    return suffixes
