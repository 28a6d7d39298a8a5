"""``gv.get.mi_pairs``: the strongest gene pairs as a tidy table, and the shared MI accessors."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._data._genes import gene_position
from .._utils import MI, check_whole_number

#: Entries of the MI matrix read at once when scanning it (about 16 MB of float32).
_BLOCK_ENTRIES = 1 << 22


def mi_matrix(
    adata: AnnData, key: str = "gv", group: str | None = None
) -> np.ndarray | sparse.spmatrix:
    """The MI matrix stored by :func:`geneverse.tl.coexpression` under ``key`` (and ``group``).

    Raises
    ------
    ValueError
        If there is no such matrix, saying how to compute it or which groups there are.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"key must be the key_added of gv.tl.coexpression, not {key!r}.")
    groups = _groups(adata, key)
    name = f"{key}_{MI}" if group is None else f"{key}_{MI}_{_group_key(adata, key, group)}"
    if name in adata.varp:
        return adata.varp[name]
    if group is None and groups:
        raise ValueError(
            f"gv.tl.coexpression ran with groupby=: there is one MI matrix per group. Pass "
            f"group= one of {groups}."
        )
    if group is not None:
        hint = f"its groups are {groups}" if groups else "it did not run with groupby="
        raise ValueError(f"No MI of group {group!r} under key={key!r}: {hint}.")
    found = sorted(k[: -len("_mi")] for k in adata.varp if k.endswith("_mi"))
    other = f" MI was stored under key={found[0]!r}; pass that key." if found else ""
    raise ValueError(
        f"No mutual information found in adata.varp[{name!r}]: run "
        f"gv.tl.coexpression(adata, key_added={key!r}) first.{other}"
    )


def _group_key(adata: AnnData, key: str, group: str) -> str:
    """The key suffix of a group's results (``uns[key]["group_keys"]``)."""
    uns = adata.uns.get(key, {})
    names, suffixes = uns.get("groups"), uns.get("group_keys")
    if names is None or suffixes is None:
        return str(group).replace("/", "_")
    by_name = dict(
        zip(np.asarray(names).astype(str), np.asarray(suffixes).astype(str), strict=True)
    )
    return by_name.get(str(group), str(group))


def _groups(adata: AnnData, key: str) -> list[str]:
    """The ``groupby`` categories of the run under ``key`` (none without groupby)."""
    uns = adata.uns.get(key)
    if not isinstance(uns, dict) or "groups" not in uns:
        return []
    return [str(name) for name in np.asarray(uns["groups"]).ravel()]


def used_genes(adata: AnnData, key: str = "gv") -> np.ndarray:
    """Positions (in ``adata.var_names``) of the genes that entered the MI computation."""
    column = f"{key}_used"
    if column not in adata.var.columns:
        return np.arange(adata.n_vars)
    return np.flatnonzero(adata.var[column].to_numpy(dtype=bool))


def used_gene_position(adata: AnnData, gene: str, key: str = "gv") -> int:
    """Position of ``gene`` in ``adata.var_names``; an error if unknown or not used for MI."""
    position = gene_position(adata, gene)
    if position not in set(used_genes(adata, key)):
        raise ValueError(
            f"Gene {gene!r} was not part of the MI computation (adata.var['{key}_used'] is "
            "False), so it has no MI; rerun gv.tl.coexpression with it included."
        )
    return position


def strongest_abs_mi(mi: np.ndarray | sparse.spmatrix) -> np.ndarray:
    """Largest ``|MI|`` of each gene with any other gene (0 for unused genes).

    Ranking genes by it lists them in the order they first appear in :func:`mi_pairs`.
    """
    if sparse.issparse(mi):
        return abs(sparse.csr_matrix(mi)).max(axis=1).toarray().ravel().astype(np.float64)
    strongest = np.empty(mi.shape[0], dtype=np.float64)
    step = max(1, _BLOCK_ENTRIES // max(1, mi.shape[1]))
    for start in range(0, mi.shape[0], step):
        block = np.abs(np.asarray(mi[start : start + step]), dtype=np.float64)
        strongest[start : start + step] = block.max(axis=1, initial=0.0)
    return strongest


def mi_pairs(
    adata: AnnData,
    key: str = "gv",
    n: int | None = 100,
    gene: str | None = None,
    *,
    group: str | None = None,
) -> pd.DataFrame:
    """The gene pairs with the strongest signed mutual information, as a tidy table.

    Reads the MI computed by :func:`geneverse.tl.coexpression`. Each unordered pair of the
    genes that entered the computation (``adata.var[f"{key}_used"]``) appears once, the
    largest ``|MI|`` first (ties in the order of ``adata.var_names``). The matrix is read
    block by block, so this is fast and light on memory for 20,000 genes. For a sparse
    result (``top_k`` or ``against`` of :func:`~geneverse.tl.coexpression`), the pairs are
    those it stored.

    Parameters
    ----------
    adata
        Annotated data matrix on which :func:`geneverse.tl.coexpression` was run.
    key
        The ``key_added`` of :func:`geneverse.tl.coexpression`.
    n
        Number of pairs to return; ``None`` for all of them.
    gene
        Only the pairs of this gene (a name of ``adata.var_names``); it is then ``gene_a``.
    group
        With ``groupby`` in :func:`~geneverse.tl.coexpression`: the pairs of this category.

    Returns
    -------
    A :class:`pandas.DataFrame` with one row per pair, strongest first, and columns

    ``gene_a``, ``gene_b`` : :class:`str`
        The two genes; ``gene_a`` comes first in ``adata.var_names`` (or is ``gene``).
    ``mi`` : :class:`float`
        Their signed MI in bits: positive for co-expressed genes, negative for genes
        expressed in different cells.

    Examples
    --------
    >>> import scanpy as sc
    >>> import geneverse as gv
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> gv.tl.coexpression(adata)
    >>> gv.get.mi_pairs(adata, n=5)  # doctest: +SKIP
    >>> gv.get.mi_pairs(adata, gene="CD79A", n=10)  # doctest: +SKIP
    """
    n = _check_n(n)
    mi = mi_matrix(adata, key, group)
    used = used_genes(adata, key)
    if gene is not None:
        rows, cols, values = _pairs_of_gene(mi, used, used_gene_position(adata, gene, key), n)
    elif sparse.issparse(mi):
        rows, cols, values = _top_pairs_sparse(mi, used, n)
    else:
        rows, cols, values = _top_pairs_dense(mi, used, n)
    names = adata.var_names.astype(str).to_numpy()
    return pd.DataFrame(
        {"gene_a": names[rows], "gene_b": names[cols], MI: values.astype(np.float64)}
    )


def _check_n(n: int | None) -> int | None:
    return None if n is None else check_whole_number("n", n, minimum=0, what="pairs")


def _ranked(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``n`` pairs by ``|MI|`` descending, then row, then column."""
    order = np.lexsort((cols, rows, -np.abs(values.astype(np.float64))))[:n]
    return rows[order], cols[order], values[order]


def _top_entries(scores: np.ndarray, n: int | None) -> np.ndarray:
    """Flat positions of the ``n`` largest ``scores`` (ties: the first positions), unordered.

    ``scores`` holds ``-1`` where there is no pair (``|MI| >= 0`` everywhere else).
    """
    valid = scores >= 0
    if n is None or n >= int(valid.sum()):
        return np.flatnonzero(valid)
    if n == 0:
        return np.empty(0, dtype=np.intp)
    threshold = scores[np.argpartition(scores, scores.size - n)[scores.size - n]]
    above = np.flatnonzero(scores > threshold)
    tied = np.flatnonzero(scores == threshold)[: n - above.size]
    return np.concatenate([above, tied])


def _top_pairs_dense(
    mi: np.ndarray, used: np.ndarray, n: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Strongest pairs of the upper triangle over the used genes, one block of rows at a time."""
    n_used = used.size
    if n_used < 2:
        return (np.empty(0, dtype=np.intp),) * 2 + (np.empty(0, dtype=mi.dtype),)
    all_used = n_used == mi.shape[0]
    step = max(1, _BLOCK_ENTRIES // max(1, n_used))
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for start in range(0, n_used, step):
        stop = min(n_used, start + step)
        # rows start:stop against columns start: (the only ones that can be above the diagonal)
        block = (
            np.asarray(mi[start:stop, start:])
            if all_used
            else mi[np.ix_(used[start:stop], used[start:])]
        )
        scores = np.abs(block, dtype=np.float64)
        local_rows = np.arange(stop - start)[:, None]
        scores[np.arange(scores.shape[1])[None, :] <= local_rows] = -1.0
        flat = _top_entries(scores.ravel(), n)
        r, c = np.divmod(flat, scores.shape[1])
        found.append((r + start, c + start, block.ravel()[flat]))
    rows, cols, values = (np.concatenate(parts) for parts in zip(*found, strict=True))
    rows, cols, values = _ranked(rows, cols, values, n)
    return used[rows], used[cols], values


def _top_pairs_sparse(
    mi: sparse.spmatrix, used: np.ndarray, n: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Strongest stored pairs of a sparse (top-k) MI matrix, over the used genes."""
    upper = sparse.triu(sparse.csr_matrix(mi)[used][:, used], k=1).tocoo()
    flat = _top_entries(np.abs(upper.data.astype(np.float64)), n)
    rows, cols, values = _ranked(upper.row[flat], upper.col[flat], upper.data[flat], n)
    return used[rows], used[cols], values


def _pairs_of_gene(
    mi: np.ndarray | sparse.spmatrix, used: np.ndarray, position: int, n: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs of one gene with every other used gene, strongest first."""
    partners = used[used != position]
    row = mi[position]
    row = row.toarray().ravel() if sparse.issparse(row) else np.asarray(row).ravel()
    values = row[partners]
    rows = np.full(partners.size, position)
    flat = _top_entries(np.abs(values.astype(np.float64)), n)
    rows, cols, values = _ranked(rows[flat], partners[flat], values[flat], n)
    return rows, cols, values
