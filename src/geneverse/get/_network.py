"""``gv.get.network``: a stored pair score as a tidy edge list, and the same edges as an
igraph or networkx graph.

A *score* is a genes × genes matrix stored by a tool under its key: the MI of
:func:`~geneverse.tl.coexpression` (``varp[f"{key}_mi"]``, or another measure,
``varp[f"{key}_pearson"]``), or the MI difference of
:func:`~geneverse.tl.differential_coexpression` (``varp[f"{key}_dmi"]``). Its test, when
one ran, is stored beside it (``varp[f"{key}_pvals"]``, ``varp[f"{key}_qvals"]``). An
*edge* is a pair of used genes whose score is not 0, each unordered pair once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .._utils import MI, check_number, check_whole_number, doc_params, is_whole_number
from ._pairs import _group_key, _groups, mi_matrix, used_genes

if TYPE_CHECKING:
    import igraph
    import networkx

#: A stored genes × genes matrix: dense, or any scipy sparse matrix.
Matrix: TypeAlias = Any

#: The MI difference of :func:`~geneverse.tl.differential_coexpression`.
DMI = "dmi"
#: Entries of a dense score read at once when scanning it (about 16 MB of float32).
_BLOCK_ENTRIES = 1 << 22
#: The columns of an edge list besides the score's.
_ENDS = ("source", "target")
_TESTS = ("pval", "qval")


@dataclass(frozen=True)
class PairScore:
    """A stored genes × genes score and, when it was tested, its p- and q-values.

    ``name`` is the score's column in an edge list (``"mi"``, ``"dmi"``, ``"pearson"``,
    ...), ``varp_key`` where it is stored, ``used`` the positions of the genes that
    entered its computation.
    """

    key: str
    name: str
    varp_key: str
    values: Matrix
    pvals: Matrix | None
    qvals: Matrix | None
    used: np.ndarray


def pair_score(
    adata: AnnData, key: str = "gv", score: str | None = None, group: str | None = None
) -> PairScore:
    """The score stored under ``key`` (see :func:`network` for ``score`` and ``group``).

    Raises
    ------
    ValueError
        If there is no such score, saying what was found and how to compute it.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(
            f"key must be the key_added of gv.tl.coexpression or "
            f"gv.tl.differential_coexpression (such as 'gv'), not {key!r}."
        )
    suffix = "" if group is None else f"_{_checked_group(adata, key, group)}"
    name, varp_key = (
        _default_score(adata, key, group, suffix)
        if score is None
        else _named_score(adata, key, score, suffix)
    )
    values = adata.varp[varp_key]
    tested = name in (MI, DMI) and varp_key == f"{key}_{name}{suffix}"
    return PairScore(
        key=key,
        name=name,
        varp_key=varp_key,
        values=values,
        pvals=adata.varp.get(f"{key}_pvals{suffix}") if tested else None,
        qvals=adata.varp.get(f"{key}_qvals{suffix}") if tested else None,
        used=used_genes(adata, key),
    )


def _checked_group(adata: AnnData, key: str, group: Any) -> str:
    """The key suffix of ``group`` of the run under ``key``."""
    groups = _groups(adata, key)
    if not groups:
        raise ValueError(
            f"group={group!r} needs a run with groups under key={key!r} "
            "(gv.tl.coexpression with groupby=, or gv.tl.differential_coexpression); "
            "this one has none: drop group=."
        )
    if str(group) not in groups:
        raise ValueError(f"group={group!r} is not a group of key={key!r}; its groups are {groups}.")
    return _group_key(adata, key, str(group))


def _default_score(adata: AnnData, key: str, group: str | None, suffix: str) -> tuple[str, str]:
    """The main score of the run under ``key``: its MI difference, its MI, or its measure."""
    if group is None and f"{key}_{DMI}" in adata.varp:
        return DMI, f"{key}_{DMI}"
    if f"{key}_{MI}{suffix}" in adata.varp:
        return MI, f"{key}_{MI}{suffix}"
    method = _stored_method(adata, key)
    if method is not None and f"{key}_{method}{suffix}" in adata.varp:
        return method, f"{key}_{method}{suffix}"
    mi_matrix(adata, key, group)  # raises the error that says what to run
    raise AssertionError("mi_matrix finds the MI or raises")


def _stored_method(adata: AnnData, key: str) -> str | None:
    """The ``method`` of the :func:`~geneverse.tl.coexpression` run under ``key``."""
    uns = adata.uns.get(key)
    params = uns.get("params") if isinstance(uns, dict) else None
    method = params.get("method") if isinstance(params, dict) else None
    return method if isinstance(method, str) else None


def _named_score(adata: AnnData, key: str, score: Any, suffix: str) -> tuple[str, str]:
    """``score`` under ``key`` (``"pearson"`` → ``varp[f"{key}_pearson"]``), or a varp key."""
    if not isinstance(score, str) or not score:
        raise ValueError(f"score must be the name of a stored score such as 'mi', not {score!r}.")
    if f"{key}_{score}{suffix}" in adata.varp:
        return score, f"{key}_{score}{suffix}"
    if not suffix and score in adata.varp:
        return score.removeprefix(f"{key}_"), score
    stored = [
        name.removeprefix(f"{key}_")
        for name in adata.varp
        if name.startswith(f"{key}_") and not name.startswith((f"{key}_pvals", f"{key}_qvals"))
    ]
    found = f"the scores under key={key!r} are {stored}" if stored else f"key={key!r} has none"
    raise ValueError(
        f"score={score!r} is not stored (neither adata.varp[{f'{key}_{score}{suffix}'!r}] nor "
        f"adata.varp[{score!r}]); {found}. Compute it first, e.g. "
        f"gv.tl.coexpression(adata, method='pearson', key_added={key!r})."
    )


# --------------------------------------------------------------------------------------------
# Edges
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Edges:
    """Pairs of genes (positions in ``adata.var_names``, each unordered pair once) and
    their scores."""

    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray

    def subset(self, keep: np.ndarray) -> Edges:
        return Edges(self.rows[keep], self.cols[keep], self.values[keep])

    def ends(self) -> tuple[np.ndarray, np.ndarray]:
        """Each edge's genes, the one that comes first in ``adata.var_names`` first."""
        first = self.rows < self.cols
        return np.where(first, self.rows, self.cols), np.where(first, self.cols, self.rows)


def score_edges(
    score: PairScore,
    *,
    min_score: float = 0.0,
    sign: int | None = None,
    max_q: float | None = None,
    genes: np.ndarray | None = None,
) -> Edges:
    """Every pair of used genes (and of ``genes``, a mask) whose score is not 0, with
    ``|score| >= min_score``, of the given ``sign`` (+1, -1, ``None`` for both) and with
    ``q <= max_q``; read block by block, never as a dense copy of the whole matrix."""
    used = score.used if genes is None else score.used[genes[score.used]]

    def wanted(values: np.ndarray) -> np.ndarray:
        ok = (values != 0) & (np.abs(values) >= min_score)
        if sign is not None:
            ok &= np.sign(values) == sign
        return ok

    if sparse.issparse(score.values):
        return _sparse_edges(score, used, wanted, max_q)
    return _dense_edges(score, used, wanted, max_q)


def _dense_edges(score: PairScore, used: np.ndarray, wanted, max_q: float | None) -> Edges:
    n = used.size
    step = max(1, _BLOCK_ENTRIES // max(1, n))
    parts: list[tuple[np.ndarray, ...]] = []
    for start in range(0, n, step):
        stop = min(n, start + step)
        index = np.ix_(used[start:stop], used[start:])
        block = np.asarray(score.values[index])
        ok = wanted(block)
        ok &= np.arange(n - start)[None, :] > np.arange(stop - start)[:, None]  # upper
        if max_q is not None and score.qvals is not None:
            ok &= np.asarray(score.qvals[index]) <= max_q
        r, c = np.nonzero(ok)
        parts.append((used[start + r], used[start + c], block[r, c]))
    if not parts:
        return _no_edges(score.values.dtype)
    rows, cols, values = (np.concatenate(p) for p in zip(*parts, strict=True))
    return Edges(rows, cols, values)


def _sparse_edges(score: PairScore, used: np.ndarray, wanted, max_q: float | None) -> Edges:
    if used.size < 2:
        return _no_edges(score.values.dtype)
    upper = sparse.triu(sparse.csr_matrix(score.values)[used][:, used], k=1).tocoo()
    rows, cols, values = used[upper.row], used[upper.col], upper.data
    ok = wanted(values)
    if max_q is not None:
        ok &= values_at(score.qvals, rows, cols, fill=1.0) <= max_q
    return Edges(rows[ok], cols[ok], values[ok])


def _no_edges(dtype) -> Edges:
    empty = np.empty(0, dtype=np.intp)
    return Edges(empty, empty, np.empty(0, dtype=dtype))


def values_at(matrix: Matrix, rows: np.ndarray, cols: np.ndarray, *, fill: float) -> np.ndarray:
    """``matrix[rows, cols]``; for a sparse matrix, ``fill`` where nothing is stored."""
    if not sparse.issparse(matrix):
        return np.asarray(matrix[rows, cols])
    csr = sparse.csr_matrix(matrix)
    if not csr.has_canonical_format:  # sorted, no duplicates; never change the stored one
        csr = csr.copy()
        csr.sum_duplicates()
    out = np.full(rows.size, fill, dtype=np.float64)
    if csr.nnz == 0:
        return out
    n = csr.shape[1]
    stored_rows = np.repeat(np.arange(csr.shape[0], dtype=np.int64), np.diff(csr.indptr))
    keys = stored_rows * n + csr.indices  # ascending: rows, then sorted columns
    wanted = rows.astype(np.int64) * n + cols
    where = np.minimum(np.searchsorted(keys, wanted), keys.size - 1)
    hit = keys[where] == wanted
    out[hit] = csr.data[where[hit]]
    return out


def per_gene_top(edges: Edges, k: int) -> np.ndarray:
    """Which edges are among the ``k`` strongest (``|score|``) of either of their genes;
    ties go to the partner that comes first in ``adata.var_names``."""
    n_edges = edges.rows.size
    genes = np.concatenate([edges.rows, edges.cols])
    partners = np.concatenate([edges.cols, edges.rows])
    strength = np.abs(np.concatenate([edges.values, edges.values]).astype(np.float64))
    edge = np.concatenate([np.arange(n_edges), np.arange(n_edges)])
    order = np.lexsort((partners, -strength, genes))
    sorted_genes = genes[order]
    rank = np.arange(order.size) - np.searchsorted(sorted_genes, sorted_genes, side="left")
    keep = np.zeros(n_edges, dtype=bool)
    keep[edge[order[rank < k]]] = True
    return keep


def strongest_first(edges: Edges) -> np.ndarray:
    """The order of ``edges``: ``|score|`` descending, then the genes' positions."""
    return np.lexsort((edges.cols, edges.rows, -np.abs(edges.values.astype(np.float64))))


# --------------------------------------------------------------------------------------------
# gv.get.network
# --------------------------------------------------------------------------------------------


def network(
    adata: AnnData,
    key: str = "gv",
    *,
    score: str | None = None,
    group: str | None = None,
    min_score: float = 0.0,
    max_q: float | None = None,
    top_k: int | None = None,
    module: str | Sequence[str] | None = None,
    module_key: str = "gv_module",
    sign: int | None = None,
) -> pd.DataFrame:
    """A stored gene-pair score as a tidy edge list, strongest first.

    Reads the score of :func:`geneverse.tl.coexpression` (the MI, or the measure it
    computed) or of :func:`geneverse.tl.differential_coexpression` (the MI difference).
    Each unordered pair of the genes that entered the computation
    (``adata.var[f"{key}_used"]``) whose score is not 0 is one edge, listed once; the
    filters below apply in the order given, ``top_k`` last. The largest ``|score|``
    comes first, ties in the order of ``adata.var_names``.

    Parameters
    ----------
    adata
        Annotated data matrix with a stored score.
    key
        The ``key_added`` of :func:`~geneverse.tl.coexpression` or
        :func:`~geneverse.tl.differential_coexpression`.
    score
        Which score of ``key``: ``None`` for its main one (the MI difference ``"dmi"`` of a
        differential run, else ``"mi"``, else the measure of ``method=``), or a name such
        as ``"pearson"`` (``adata.varp[f"{key}_pearson"]``), or any key of
        ``adata.varp`` holding a symmetric genes × genes score.
    group
        A run with groups (``groupby=`` of :func:`~geneverse.tl.coexpression`, or the two
        groups of :func:`~geneverse.tl.differential_coexpression`): the MI of this group.
    min_score
        Keep the edges with ``|score| >= min_score``.
    max_q
        Keep the edges with q-value ``<= max_q`` (from ``pvals=True``, or the permutation
        test of a differential run); an error when no q-values are stored.
    top_k
        Keep an edge when it is among the ``top_k`` strongest edges (``|score|``, after the
        other filters) of either of its genes.
    module
        Keep the edges between genes of this module (or of these modules), as stored in
        ``adata.var[module_key]`` by :func:`~geneverse.tl.modules`.
    module_key
        The ``var`` column of modules.
    sign
        ``1``: only positive scores (genes expressed together; for a differential run,
        pairs that gain MI in ``group``); ``-1``: only negative ones; ``None``: both.

    Returns
    -------
    A :class:`pandas.DataFrame`, one row per edge, with columns

    ``source``, ``target`` : :class:`str`
        The two genes (names of ``adata.var_names``); ``source`` comes first in
        ``adata.var_names``.
    ``mi`` : :class:`float`
        The score, named after it: ``mi`` (signed MI in bits), ``dmi`` (MI in ``group``
        minus MI in ``reference``, bits) or the measure's name (``pearson``, ...).
    ``pval``, ``qval`` : :class:`float`
        The pair's p-value and Benjamini–Hochberg q-value, when they are stored.

    Examples
    --------
    >>> import scanpy as sc
    >>> import geneverse as gv
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> gv.tl.coexpression(adata, zeros="include", estimator="miller_madow", pvals=True)
    >>> edges = gv.get.network(adata, max_q=0.01, top_k=10, sign=1)  # doctest: +SKIP
    >>> graph = gv.get.to_networkx(edges)  # doctest: +SKIP
    """
    stored, edges = filtered_edges(
        adata, key, score=score, group=group, min_score=min_score, max_q=max_q, top_k=top_k,
        module=module, module_key=module_key, sign=sign,
    )  # fmt: skip
    return edge_table(adata, stored, edges)


def filtered_edges(
    adata: AnnData,
    key: str = "gv",
    *,
    score: str | None = None,
    group: str | None = None,
    min_score: float = 0.0,
    max_q: float | None = None,
    top_k: int | None = None,
    module: str | Sequence[str] | None = None,
    module_key: str = "gv_module",
    sign: int | None = None,
) -> tuple[PairScore, Edges]:
    """The score and the edges of :func:`network` (same arguments), strongest first."""
    stored = pair_score(adata, key, score, group)
    min_score = check_number("min_score", min_score, what="|score|")
    if min_score < 0:
        raise ValueError(f"min_score={min_score} is a bound on |score|: use 0 or more.")
    max_q = checked_max_q(stored, max_q)
    sign = checked_sign(sign)
    if top_k is not None:
        top_k = check_whole_number("top_k", top_k, minimum=1, what="edges per gene")
    genes = None if module is None else module_mask(adata, module, module_key)
    edges = score_edges(stored, min_score=min_score, sign=sign, max_q=max_q, genes=genes)
    if top_k is not None:
        edges = edges.subset(per_gene_top(edges, top_k))
    return stored, edges.subset(strongest_first(edges))


def checked_max_q(stored: PairScore, max_q: Any) -> float | None:
    """``max_q`` as a number in ``(0, 1]``; an error when the score has no q-values."""
    if max_q is None:
        return None
    max_q = check_number("max_q", max_q, what="a q-value bound")
    if not 0 < max_q <= 1:
        raise ValueError(f"max_q={max_q} is not a q-value bound: use a number in (0, 1].")
    if stored.qvals is None:
        how = (
            "rerun gv.tl.differential_coexpression with n_permutations > 0"
            if stored.name == DMI
            else f"compute them with gv.tl.coexpression(adata, pvals=True, key_added="
            f"{stored.key!r})"
            if stored.name == MI
            else "only the MI has them (gv.tl.coexpression with pvals=True)"
        )
        raise ValueError(
            f"max_q={max_q} needs q-values, and the score {stored.varp_key!r} has none "
            f"(no adata.varp['{stored.key}_qvals']): {how}, or drop max_q."
        )
    return max_q


def checked_sign(sign: Any) -> int | None:
    if sign is None:
        return None
    if not is_whole_number(sign) or int(sign) not in (1, -1):
        raise ValueError(
            f"sign must be 1 (positive scores only), -1 (negative only) or None, not {sign!r}."
        )
    return int(sign)


def module_mask(adata: AnnData, module: Any, module_key: str) -> np.ndarray:
    """The genes of ``module`` (a name or names of ``adata.var[module_key]``)."""
    column = module_column(adata, module_key)
    names = [module] if isinstance(module, str) else list(module)
    unknown = [name for name in names if name not in set(column.cat.categories)]
    if not names or unknown:
        raise ValueError(
            f"module={module!r}: {unknown or 'no module'} not in adata.var[{module_key!r}] "
            f"(its modules: {list(column.cat.categories)})."
        )
    return column.isin(names).to_numpy()


def module_column(adata: AnnData, module_key: str) -> pd.Series:
    """``adata.var[module_key]``, a categorical column of modules."""
    if not isinstance(module_key, str) or module_key not in adata.var.columns:
        raise ValueError(
            f"module_key={module_key!r} is not a column of adata.var; run "
            f"gv.tl.modules(adata, key_added={module_key!r}) first."
        )
    column = adata.var[module_key]
    if not isinstance(column.dtype, pd.CategoricalDtype):
        raise ValueError(
            f"adata.var[{module_key!r}] is not categorical ({column.dtype}); modules are a "
            "categorical column, as gv.tl.modules stores them."
        )
    return column


def edge_table(adata: AnnData, stored: PairScore, edges: Edges) -> pd.DataFrame:
    """The edge list of ``edges``: genes by name, the score, and its test when stored."""
    names = adata.var_names.astype(str).to_numpy()
    rows, cols = edges.ends()
    table = {
        "source": pd.Series(names[rows], dtype=object),
        "target": pd.Series(names[cols], dtype=object),
        stored.name: edges.values.astype(np.float64),
    }
    if stored.pvals is not None:
        table["pval"] = values_at(stored.pvals, rows, cols, fill=1.0).astype(np.float64)
    if stored.qvals is not None:
        table["qval"] = values_at(stored.qvals, rows, cols, fill=1.0).astype(np.float64)
    return pd.DataFrame(table)


# --------------------------------------------------------------------------------------------
# Graphs
# --------------------------------------------------------------------------------------------


_doc_graph = """\
edges
    An edge list of :func:`network` (or any DataFrame with ``source`` and ``target``
    columns, each unordered pair once), or an AnnData: then the edge list of
    ``network(edges, **network_options)``.
weight
    The column that becomes the edges' ``"weight"`` attribute; ``None``: the score (the
    column after ``source`` and ``target``).
**network_options
    With an AnnData: the arguments of :func:`network` (``key``, ``max_q``, ...)."""


@doc_params(doc_graph=_doc_graph)
def to_igraph(
    edges: pd.DataFrame | AnnData, *, weight: str | None = None, **network_options: Any
) -> igraph.Graph:
    """An undirected :class:`igraph.Graph` with exactly the edges of an edge list.

    Parameters
    ----------
    {doc_graph}

    Returns
    -------
    The graph: one vertex per gene of the edge list (vertex attribute ``"name"``), one
    edge per row, with every other column as an edge attribute and ``"weight"``.

    Examples
    --------
    >>> graph = gv.get.to_igraph(adata, max_q=0.01, sign=1)  # doctest: +SKIP
    >>> graph.community_leiden(weights="weight", objective_function="modularity")  # doctest: +SKIP
    """
    import igraph

    table = _edge_list(edges, network_options)
    names, ends = _vertices(table)
    graph = igraph.Graph(n=len(names), edges=ends.tolist(), directed=False)
    graph.vs["name"] = list(names)
    for column, values in _attributes(table, weight).items():
        graph.es[column] = values
    return graph


@doc_params(doc_graph=_doc_graph)
def to_networkx(
    edges: pd.DataFrame | AnnData, *, weight: str | None = None, **network_options: Any
) -> networkx.Graph:
    """An undirected :class:`networkx.Graph` with exactly the edges of an edge list.

    Parameters
    ----------
    {doc_graph}

    Returns
    -------
    The graph: the genes as node ids, one edge per row with every other column and
    ``"weight"`` as edge attributes. ``networkx.write_graphml`` writes it for Cytoscape.

    Examples
    --------
    >>> import networkx as nx
    >>> graph = gv.get.to_networkx(adata, max_q=0.01, sign=1)  # doctest: +SKIP
    >>> nx.write_graphml(graph, "network.graphml")  # doctest: +SKIP
    """
    import networkx

    table = _edge_list(edges, network_options)
    names, ends = _vertices(table)
    graph = networkx.Graph()
    graph.add_nodes_from(names)
    attributes = _attributes(table, weight)
    columns = list(attributes)
    graph.add_edges_from(
        (names[a], names[b], dict(zip(columns, values, strict=True)))
        for (a, b), *values in zip(ends.tolist(), *attributes.values(), strict=True)
    )
    return graph


def _edge_list(edges: pd.DataFrame | AnnData, options: dict[str, Any]) -> pd.DataFrame:
    if isinstance(edges, AnnData):
        return network(edges, **options)
    if options:
        raise TypeError(
            f"{sorted(options)} are options of gv.get.network, for an AnnData; this is "
            "an edge list already: filter it with pandas, or pass the AnnData."
        )
    if not isinstance(edges, pd.DataFrame) or not set(_ENDS) <= set(edges.columns):
        raise ValueError(
            "edges must be an edge list of gv.get.network (a DataFrame with columns "
            "'source' and 'target'), or an AnnData."
        )
    pairs = pd.DataFrame(np.sort(edges[list(_ENDS)].astype(str).to_numpy(), axis=1))
    if pairs.duplicated().any() or (pairs[0] == pairs[1]).any():
        raise ValueError(
            "edges lists a pair twice (or a gene with itself); a graph of genes has each "
            "unordered pair once, as gv.get.network lists them."
        )
    return edges


def _vertices(table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The genes, in the order they first appear, and each edge's two vertex indices."""
    sources = table["source"].astype(str).to_numpy()
    targets = table["target"].astype(str).to_numpy()
    names = pd.unique(np.column_stack([sources, targets]).ravel())
    ends = np.column_stack(
        [pd.Categorical(ends, categories=names).codes for ends in (sources, targets)]
    )
    return np.asarray(names, dtype=object), ends.reshape(-1, 2).astype(np.int64)


def _attributes(table: pd.DataFrame, weight: str | None) -> dict[str, list[Any]]:
    """The edge attributes: every column but the genes', and ``"weight"``."""
    others = [column for column in table.columns if column not in _ENDS]
    if weight is None:
        scores = [column for column in others if column not in _TESTS]
        if not scores:
            raise ValueError(
                "edges has no score column (besides source, target); name the weight "
                "column with weight=."
            )
        weight = scores[0]
    elif weight not in others:
        raise ValueError(f"weight={weight!r} is not a column of edges (columns: {others}).")
    attributes = {str(column): table[column].tolist() for column in others}
    attributes["weight"] = table[weight].astype(np.float64).tolist()
    return attributes
