"""``gv.tl.modules``: gene modules, communities of the graph of a stored pair score.

The graph (see :func:`modules` and the tutorial): the used genes are its vertices; a pair is an edge
when its score is positive and, when q-values are stored, significant; each gene keeps
its ``n_neighbors`` strongest edges (an edge stays when it is among the strongest of
either of its genes), weighted by the score. Leiden community detection (leidenalg,
as ``sc.tl.leiden``) partitions it; a gene whose mean edge weight to the other genes
of its community is below ``min_membership`` times the community's median leaves it,
and communities left with fewer than ``min_size`` genes are no module.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _logging as logg
from .._utils import (
    check_flag,
    check_key,
    check_number,
    check_random_state,
    check_whole_number,
    is_whole_number,
)
from ..get._network import (
    Edges,
    PairScore,
    checked_max_q,
    pair_score,
    per_gene_top,
    score_edges,
)

#: ``max_q`` when q-values are stored and none is given: edges at a false discovery rate
#: of 1 %. At 5 %, one edge in twenty is false, enough to tie unrelated genes into small
#: spurious modules (the benchmarks' section "Gene networks" on the backends page).
DEFAULT_MAX_Q = 0.01
#: The prefix of module names: "M1" is the largest module.
MODULE_PREFIX = "M"


def modules(
    adata: AnnData,
    key: str = "gv",
    *,
    score: str | None = None,
    group: str | None = None,
    max_q: float | None = None,
    n_neighbors: int | None = 10,
    resolution: float = 1.0,
    min_size: int = 5,
    min_membership: float = 0.2,
    n_iterations: int = -1,
    random_state: int | None = 0,
    key_added: str = "gv_module",
    copy: bool = False,
) -> AnnData | None:
    """Gene modules: communities of co-expressed genes in the graph of a stored score.

    The genes that entered the score's computation are the vertices of a graph whose
    edges are the pairs with a positive score (genes expressed together), significant
    ones only when q-values are stored; each gene keeps its ``n_neighbors`` strongest
    edges, weighted by the score. The Leiden algorithm (:mod:`leidenalg`, as
    :func:`scanpy.tl.leiden`) finds its communities. A gene whose mean edge weight to the
    other genes of its community is below ``min_membership`` times the community's median
    is left out, and a community left with fewer than ``min_size`` genes is no module.
    Anti-correlated genes (negative scores) are never linked: the two sides of a program
    that switches genes on and off become two modules.

    Rank with the MI over all cells, ``gv.tl.coexpression(adata, zeros="include",
    estimator="miller_madow", pvals=True)`` (see :doc:`/scores`); GeneVector's MI, the
    default of :func:`~geneverse.tl.coexpression`, links independent genes.

    Parameters
    ----------
    adata
        Annotated data matrix with a stored pair score.
    key
        The ``key_added`` of :func:`~geneverse.tl.coexpression`.
    score
        Which score of ``key``: ``None`` for its MI (or its measure with ``method=``),
        a name such as ``"pearson"`` (``adata.varp[f"{key}_pearson"]``), or any key of
        ``adata.varp`` holding a symmetric genes × genes score.
    group
        With ``groupby=`` in :func:`~geneverse.tl.coexpression`: the modules of this
        group's MI.
    max_q
        Keep the edges with a q-value ``<= max_q`` (``adata.varp[f"{key}_qvals"]``).
        ``None``: 0.01 when q-values are stored, no test otherwise; a number without
        q-values is an error. The G-test is conservative for genes expressed in few
        cells with many bins (log-normalized values; see ``pvals`` of
        :func:`~geneverse.tl.coexpression`): their pairs may have q-values near 1, and
        ``max_q=1`` keeps every positive edge.
    n_neighbors
        Edges per gene: an edge stays when it is among the ``n_neighbors`` strongest of
        either of its genes (a k-nearest-neighbour graph of genes, as
        :func:`scanpy.pp.neighbors` makes of cells). ``None``: every edge. Without it,
        the many weak edges of a dense score join distinct programs into one module.
    resolution
        Leiden's resolution: higher values give more and smaller modules.
    min_size
        The fewest genes of a module; smaller communities are no module.
    min_membership
        A gene stays in its community when its mean edge weight to the other genes of the
        community is at least this share of the community's median (0: every gene
        stays). It removes genes that joined through a few weak edges.
    n_iterations
        Iterations of the Leiden algorithm; a negative number runs it until the partition
        no longer improves.
    random_state
        Seed of the Leiden algorithm (``None``: a fresh one, stored in ``uns``).
    key_added
        The ``var`` column (and ``uns`` key) written.
    copy
        Return a copy with the results instead of writing into ``adata``.

    Returns
    -------
    ``None``, or a new AnnData if ``copy=True``. Sets these fields (``key_added="gv_module"``):

    ``adata.var["gv_module"]`` : :class:`pandas.Categorical`
        The module of each gene: ``"M1"`` (the largest), ``"M2"``, ...; NaN for genes in
        no module (genes not used, without edges, or in too small a community).
    ``adata.uns["gv_module"]`` : :class:`dict`
        ``"params"`` (every argument; ``max_q`` and ``random_state`` as used), ``"score"``
        (the ``varp`` key of the score), ``"sizes"`` (genes per module) and ``"version"``.

    Examples
    --------
    >>> import scanpy as sc
    >>> import geneverse as gv
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> gv.tl.coexpression(adata, zeros="include", estimator="miller_madow")
    >>> gv.tl.modules(adata)
    >>> adata.var["gv_module"].value_counts().head()  # doctest: +SKIP
    """
    started = logg.info("finding gene modules")
    stored = pair_score(adata, key, score, group)
    options = _checked_options(
        stored,
        max_q=max_q,
        n_neighbors=n_neighbors,
        resolution=resolution,
        min_size=min_size,
        min_membership=min_membership,
        n_iterations=n_iterations,
        random_state=random_state,
        key_added=key_added,
        copy=copy,
    )
    edges = score_edges(stored, sign=1, max_q=options["max_q"])
    if options["n_neighbors"] is not None:
        edges = edges.subset(per_gene_top(edges, options["n_neighbors"]))
    labels = _communities(stored.used, edges, options)
    labels = _members(stored.used, edges, labels, options)
    column, sizes = _named(adata.n_vars, stored.used, labels)

    target = adata.copy() if options["copy"] else adata
    target.var[options["key_added"]] = column
    target.uns[options["key_added"]] = {
        "params": {"key": key, "score": score, "group": group, **options},
        "score": stored.varp_key,
        "sizes": np.asarray(sizes, dtype=np.int64),
        "version": _version(),
    }
    _log_result(stored, sizes, options["key_added"], started)
    return target if options["copy"] else None


def _checked_options(stored: PairScore, **options: Any) -> dict[str, Any]:
    """The options, checked one by one (``max_q`` resolved, a fresh seed drawn)."""
    o = options
    o["max_q"] = checked_max_q(stored, o["max_q"])
    if o["max_q"] is None and stored.qvals is not None:
        o["max_q"] = DEFAULT_MAX_Q
    if o["n_neighbors"] is not None:
        o["n_neighbors"] = check_whole_number(
            "n_neighbors", o["n_neighbors"], minimum=1, what="edges per gene"
        )
    o["resolution"] = check_number("resolution", o["resolution"], what="Leiden's resolution")
    if o["resolution"] <= 0:
        raise ValueError(f"resolution={o['resolution']} must be positive (1.0 is the default).")
    o["min_size"] = check_whole_number("min_size", o["min_size"], minimum=1, what="genes")
    o["min_membership"] = check_number("min_membership", o["min_membership"], what="a share")
    if not 0 <= o["min_membership"] <= 1:
        raise ValueError(f"min_membership={o['min_membership']} must lie in [0, 1].")
    if not is_whole_number(o["n_iterations"]) or o["n_iterations"] == 0:
        raise ValueError(
            f"n_iterations must be a whole number of iterations (negative: until the "
            f"partition no longer improves), not {o['n_iterations']!r}."
        )
    o["n_iterations"] = int(o["n_iterations"])
    o["random_state"] = check_random_state(o["random_state"])
    if o["random_state"] is None:
        o["random_state"] = int(np.random.SeedSequence().generate_state(1)[0])
    o["key_added"] = check_key("key_added", o["key_added"])
    o["copy"] = check_flag("copy", o["copy"])
    return o


def _communities(used: np.ndarray, edges: Edges, options: dict[str, Any]) -> np.ndarray:
    """The Leiden community of each used gene (in the order of ``used``)."""
    import igraph
    import leidenalg

    if edges.rows.size == 0:  # no edge, no community
        return np.full(used.size, -1, dtype=np.int64)
    vertex = np.full(int(used.max(initial=-1)) + 1, -1, dtype=np.int64)
    vertex[used] = np.arange(used.size)
    ends = np.column_stack([vertex[edges.rows], vertex[edges.cols]])
    graph = igraph.Graph(n=used.size, edges=ends.tolist(), directed=False)
    graph.es["weight"] = edges.values.astype(np.float64).tolist()
    partition = leidenalg.find_partition(
        graph,
        leidenalg.RBConfigurationVertexPartition,
        weights="weight",
        resolution_parameter=options["resolution"],
        n_iterations=options["n_iterations"],
        seed=options["random_state"],
    )
    return np.asarray(partition.membership, dtype=np.int64)


def _members(
    used: np.ndarray, edges: Edges, labels: np.ndarray, options: dict[str, Any]
) -> np.ndarray:
    """The communities after ``min_membership`` and ``min_size``: -1 for no module."""
    labels = labels.copy()
    if options["min_membership"] > 0 and edges.rows.size and labels.size:
        strength = _strength_within(used, edges, labels)
        sizes = np.bincount(labels, minlength=labels.max(initial=-1) + 1)
        mean = strength / np.maximum(sizes[labels] - 1, 1)
        median = pd.Series(mean).groupby(labels).transform("median").to_numpy()
        labels[mean < options["min_membership"] * median] = -1
    kept = labels >= 0
    if kept.any():
        sizes = np.bincount(labels[kept], minlength=labels.max() + 1)
        labels[kept & (sizes[np.maximum(labels, 0)] < options["min_size"])] = -1
    return labels


def _strength_within(used: np.ndarray, edges: Edges, labels: np.ndarray) -> np.ndarray:
    """Each gene's summed edge weight to the other genes of its community."""
    vertex = np.full(int(used.max(initial=-1)) + 1, -1, dtype=np.int64)
    vertex[used] = np.arange(used.size)
    a, b = vertex[edges.rows], vertex[edges.cols]
    inside = labels[a] == labels[b]
    weights = edges.values[inside].astype(np.float64)
    strength = np.bincount(a[inside], weights=weights, minlength=used.size)
    return strength + np.bincount(b[inside], weights=weights, minlength=used.size)


def _named(n_vars: int, used: np.ndarray, labels: np.ndarray) -> tuple[pd.Categorical, list]:
    """Modules named ``M1``, ``M2``, ... by size (ties: the first gene), as a column."""
    kept = labels >= 0
    found = np.unique(labels[kept])
    sizes = np.array([np.count_nonzero(labels == m) for m in found], dtype=np.int64)
    first = np.array([used[labels == m].min() for m in found], dtype=np.int64)
    order = np.lexsort((first, -sizes))
    names = [f"{MODULE_PREFIX}{rank + 1}" for rank in range(found.size)]
    name_of = dict(zip(found[order].tolist(), names, strict=True))
    values = np.full(n_vars, None, dtype=object)
    values[used[kept]] = [name_of[m] for m in labels[kept].tolist()]
    return pd.Categorical(values, categories=names), sizes[order].tolist()


def _log_result(stored: PairScore, sizes: list[int], key_added: str, started: float) -> None:
    if not sizes:
        logg.warning(
            f"no gene module found in {stored.varp_key!r}: no community of positive "
            "edges is large enough. Lower min_size, raise max_q, or check the score "
            "(rank with zeros='include', see the docs page 'Which score to rank pairs by')."
        )
    logg.info(
        f"    found {len(sizes)} modules of {sum(sizes)} of {stored.used.size} genes",
        since=started,
    )
    logg.hint(f"added var[{key_added!r}], uns[{key_added!r}]")


def _version() -> str:
    from .. import __version__

    return __version__
