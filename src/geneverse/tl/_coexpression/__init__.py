"""``gv.tl.coexpression``: signed mutual information between every pair of genes.

The flow, one direction: pick the matrix → validate → bins → kernel (counts → MI) →
assemble → store in the AnnData, all at once, at the end.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from ... import _logging as logg
from ..._data._binning import GeneBins, bin_genes
from ..._data._chunked import (
    chunk_source,
    chunked_bins,
    chunked_count_blocks,
    chunked_value_runs,
    is_chunked,
)
from ..._data._matrix import GeneSelection, check_values, resolve_genes, select_matrix
from ..._settings import resolve_n_jobs, settings
from ..._utils import (
    check_flag,
    check_key,
    check_method,
    check_n_bins,
    check_top_k,
)
from ...kernels import BinnedGenes, Kernel, resolve_backend
from ._assemble import Assembler, DenseAssembler, SparseAssembler, TopKAssembler
from ._estimate import check_dense_fits, estimate_run
from ._measures import MEASURES
from ._results import GroupResult, cached
from ._scoring import ScoredBlock, Scoring, qvalues, score_block, scored_row_blocks
from ._statistics import permutation_pvalues, shuffle_cells


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


@dataclass(frozen=True)
class Group:
    """The cells of one ``groupby`` category (``name=None``: all cells, no groupby)."""

    name: str | None
    cells: np.ndarray


def coexpression(
    adata: AnnData,
    *,
    layer: str | None = None,
    use_raw: bool | None = None,
    genes: GeneSelection = None,
    against: GeneSelection = None,
    groupby: str | None = None,
    top_k: int | None = None,
    n_bins: int = 10,
    signed: bool = True,
    method: str = "mi",
    estimator: str = "plugin",
    zeros: str = "exclude",
    pvals: bool = False,
    n_permutations: int = 0,
    random_state: int = 0,
    cache: bool = True,
    backend: str = "auto",
    device: str | None = None,
    n_jobs: int | None = None,
    key_added: str = "gv",
    copy: bool = False,
) -> AnnData | None:
    """Signed mutual information (MI) between every pair of genes.

    Each gene's nonzero values are cut into at most ``n_bins`` quantile bins (zero is a bin
    of its own); the MI of two genes is the plug-in MI, in bits, of their joint bins over
    the cells that express at least one of them, and its sign is the sign of their Pearson
    correlation over all cells. The result equals GeneVector's ``compute_mi_vectorized``
    and is computed by counting co-occurrences of bins, which is exact and much faster.

    Parameters
    ----------
    adata
        Annotated data matrix (cells × genes) of counts or log-normalized values.
    layer
        Use ``adata.layers[layer]`` instead of ``adata.X``.
    use_raw
        Use ``adata.raw`` (values of the genes of ``adata.var_names``). ``None``: use it
        when it exists and no ``layer`` is given, as scanpy does.
    genes
        The genes to compute on: ``None`` (all), a boolean ``var`` column name such as
        ``"highly_variable"``, a list of gene names, or a boolean mask.
    against
        Compute only the rectangle ``genes × against`` (same forms as ``genes``): 50
        marker genes against all 20,000 cost 50 × 20,000 pairs, not 20,000².
        ``None``: every pair of ``genes``.
    groupby
        A categorical ``obs`` column: one MI matrix per category, each equal to running on
        that category's cells alone (bins included).
    top_k
        Keep, for every gene, its ``top_k`` strongest ``|MI|`` partners (union of both
        directions), as a sparse matrix; the dense genes × genes matrix is never built.
    n_bins
        Most bins of a gene's nonzero values (1–255).
    signed
        Multiply each MI by the sign of the genes' Pearson correlation.
    method
        ``"mi"``, or one of GeneVector's other co-expression measures, computed without
        densifying X: ``"pearson"``, ``"spearman"``, ``"jaccard"`` (of the expressed
        cells) or ``"cosine"``; stored as ``adata.varp[f"{key_added}_{method}"]``.
    estimator
        ``"plugin"`` (GeneVector's) or ``"miller_madow"``, which adds ``(occupied cells −
        1) / (2 n)`` to each entropy term against the plug-in estimate's bias.
    zeros
        ``"exclude"`` (GeneVector's: only the cells expressing either gene count) or
        ``"include"`` (the textbook MI over all cells). Leaving out the cells where both
        genes are zero makes even independent genes look dependent, so GeneVector's MI
        does not rank pairs: to rank pairs or build a network, use ``"include"`` (with
        ``estimator="miller_madow"``); ``"exclude"`` is for parity with GeneVector.
    pvals
        Also test each pair: the G-test of independence, with Williams' correction, on
        the full table over all cells (including the cells where both genes are zero;
        the MI leaves them out, and conditioning on that would make even independent
        genes look dependent), and Benjamini–Hochberg q-values. On log-normalized
        values with many bins the χ² approximation is conservative: use
        ``n_permutations`` or fewer bins there.
    n_permutations
        p-values from a permutation null instead (implies ``pvals``): each gene's cells
        are shuffled independently ``n_permutations`` times; ``p = (1 + b) / (1 +
        n_permutations)`` with ``b`` the shuffles whose ``|MI|`` is at least the observed.
    random_state
        Seed of the permutations.
    cache
        Reuse a stored result of an identical call (same data, genes, parameters and
        version) from ``gv.settings.cache_dir``, and store this one there.
    backend
        ``"auto"`` (the fastest usable: ``"gpu"``, ``"rust"``, ``"numba"``, ``"numpy"``)
        or one of those names. See :func:`geneverse.backends`.
    device
        For ``backend="gpu"``: the torch device, such as ``"cuda"`` or ``"cpu"``.
    n_jobs
        Threads; ``None`` uses ``gv.settings.n_jobs``, ``-1`` all cores.
    key_added
        Prefix of the keys written to ``adata``.
    copy
        Return a copy with the results instead of writing into ``adata``.

    Returns
    -------
    ``None``, or a new AnnData if ``copy=True``. Sets these fields (``key_added="gv"``):

    ``adata.varp["gv_mi"]`` : :class:`numpy.ndarray` (``float32``, genes × genes)
        Signed MI in bits; symmetric, diagonal 0, rows and columns of unused genes 0.
        A :class:`scipy.sparse.csr_matrix` when ``top_k`` or ``against`` is given. With
        ``groupby``, one ``adata.varp["gv_mi_{category}"]`` per category instead.
    ``adata.layers["gv_bins"]`` : :class:`scipy.sparse.csr_matrix` (``uint8``)
        The bin of every value (0 = not expressed; columns of unused genes are empty).
        With ``groupby``, each cell's bins are those of its category.
    ``adata.var["gv_n_bins"]`` : :class:`pandas.Series` (``int``)
        Bins of each gene, counting the zero bin (0 for unused genes); with ``groupby``,
        ``adata.var["gv_n_bins_{category}"]``.
    ``adata.var["gv_used"]`` : :class:`pandas.Series` (``bool``)
        The genes that entered the computation.
    ``adata.varp["gv_pvals"]``, ``adata.varp["gv_qvals"]`` : ``float32``
        With ``pvals`` or ``n_permutations``: each pair's p-value and Benjamini–Hochberg
        q-value (1 for unused genes; sparse like ``gv_mi`` with ``top_k``/``against``).
    ``adata.uns["gv"]`` : :class:`dict`
        ``"params"`` (every argument), ``"backend"`` (what ran), ``"version"`` and, with
        ``groupby``, ``"groups"`` (the categories, in the order of the keys).

    Examples
    --------
    >>> import scanpy as sc
    >>> import geneverse as gv
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> gv.tl.coexpression(adata, use_raw=True)
    >>> adata.varp["gv_mi"].shape
    (765, 765)
    """
    started = logg.info("computing signed mutual information")
    check_n_bins(n_bins)
    for name, flag in (("signed", signed), ("pvals", pvals), ("copy", copy), ("cache", cache)):
        check_flag(name, flag)
    check_key(key_added)
    check_top_k(top_k)
    check_method(method)
    scoring = Scoring(estimator, zeros, pvals or n_permutations > 0, n_permutations)
    if copy and adata.isbacked:
        raise ValueError(
            "copy=True would load this backed AnnData into memory; use copy=False: the "
            "results are added to the AnnData (X stays on disk), or load it first with "
            "adata.to_memory()."
        )
    n_jobs = resolve_n_jobs(n_jobs)
    kernel_class = resolve_backend(settings.backend if backend == "auto" else backend, device)
    plan = plan_genes(adata, genes, against)
    groups = resolve_groups(adata, groupby)
    selection = select_matrix(adata, layer=layer, use_raw=use_raw, columns=plan.order)
    chunked = is_chunked(selection.values)
    if scoring.n_permutations and (chunked or top_k is not None or against is not None):
        raise ValueError(
            "n_permutations needs the dense result of data in memory; drop top_k/against, "
            "or use pvals=True (the G-test), which works everywhere."
        )
    if top_k is None and against is None:
        check_dense_fits(adata.n_vars, n_outputs=len(groups) * (2 if scoring.pvals else 1))
    params = {
        "layer": layer,
        "use_raw": selection.use_raw,
        "genes": _genes_param(adata, genes, plan.order[: plan.n_rows]),
        "against": _genes_param(adata, against, plan.order[plan.in_against])
        if plan.in_against is not None
        else None,
        "groupby": groupby,
        "top_k": top_k,
        "n_bins": n_bins,
        "signed": signed,
        "method": method,
        "estimator": estimator,
        "zeros": zeros,
        "pvals": scoring.pvals,
        "n_permutations": n_permutations,
        "random_state": random_state,
        "cache": cache,
        "backend": backend,
        "device": device,
        "n_jobs": n_jobs,
    }

    def make_kernel(data: BinnedGenes) -> Kernel:
        return kernel_class(data, signed=signed, n_jobs=n_jobs, device=device)

    if chunked:
        if method != "mi":
            raise ValueError(
                f"method={method!r} needs the data in memory; load it first (adata.to_memory())."
            )
        results = _run_chunked(
            adata, selection, groups, plan, make_kernel,
            n_bins=n_bins, top_k=top_k, scoring=scoring,
        )  # fmt: skip
    else:
        matrix = _checked_in_memory(adata, selection)

        def compute() -> list[GroupResult]:
            if method != "mi":
                return _run_measure(matrix, groups, method)
            return _run_in_memory(
                matrix, groups, plan, make_kernel,
                n_bins=n_bins, top_k=top_k, scoring=scoring, seed=random_state,
            )  # fmt: skip

        use_cache = cache and settings.cache_dir is not None
        gene_names = adata.var_names[plan.order]
        results = cached(compute, matrix, gene_names, groups, params) if use_cache else compute()

    if copy:
        adata = adata.copy()
    _store(adata, key_added, selection.columns, groups, results, params, kernel_class.name)
    logg.info("    finished", since=started)
    logg.hint(f"added 'varp[{key_added}_{method}]' and 'uns[{key_added}]'")
    return adata if copy else None


def plan_genes(adata: AnnData, genes: GeneSelection, against: GeneSelection) -> GenePlan:
    """Resolve ``genes`` and ``against`` into the order in which genes enter the kernel."""
    rows = resolve_genes(adata, genes)
    if against is None:
        return GenePlan(order=np.flatnonzero(rows), n_rows=int(rows.sum()), in_against=None)
    columns = resolve_genes(adata, against)
    order = np.concatenate([np.flatnonzero(rows), np.flatnonzero(columns & ~rows)])
    return GenePlan(order=order, n_rows=int(rows.sum()), in_against=columns[order])


def resolve_groups(adata: AnnData, groupby: str | None) -> list[Group]:
    """The cells of each category of ``adata.obs[groupby]`` (all cells without groupby)."""
    if groupby is None:
        return [Group(name=None, cells=np.arange(adata.n_obs))]
    if groupby not in adata.obs.columns:
        raise ValueError(
            f"groupby={groupby!r} is not a column of adata.obs (columns: "
            f"{list(adata.obs.columns)}); name a categorical column such as a cell type."
        )
    labels = adata.obs[groupby]
    if labels.isna().any():
        raise ValueError(
            f"adata.obs[{groupby!r}] has missing values; fill them or drop those cells first."
        )
    categories = (
        labels.cat.categories
        if isinstance(labels.dtype, pd.CategoricalDtype)
        else (pd.Index(sorted(labels.unique(), key=str)))
    )
    groups = [
        Group(
            name=str(category).replace("/", "_"),  # "/" cannot be in an .h5ad key
            cells=np.flatnonzero((labels == category).to_numpy()),
        )
        for category in categories
    ]
    return [group for group in groups if group.cells.size]


def _rows(matrix: sparse.csc_matrix, cells: np.ndarray) -> sparse.csc_matrix:
    return matrix if cells.size == matrix.shape[0] else matrix[cells]


def _run_in_memory(matrix, groups, plan, make_kernel, *, n_bins, top_k, scoring, seed):
    """Bin and count each group of cells of the used genes' values (``matrix``)."""
    results = []
    for group in groups:
        cells = _rows(matrix, group.cells)
        binned = bin_genes(cells, n_bins)
        kernel = make_kernel(binned)
        logg.info(estimate_run(binned, kernel, plan.n_rows, group.name, top_k))
        mi, pvalues = assemble(scored_row_blocks(kernel, plan.n_rows, scoring), plan, top_k)
        if scoring.n_permutations:
            pvalues = _permutation_pvalues(cells, mi, n_bins, make_kernel, plan, scoring, seed)
        results.append(
            GroupResult(
                bins=sparse.csr_matrix((binned.bins, binned.genes, binned.indptr), cells.shape),
                n_bins=binned.n_bins,
                scores={"mi": mi, **_significance(pvalues, plan)},
            )
        )
    return results


def _run_chunked(adata, selection, groups, plan, make_kernel, *, n_bins, top_k, scoring):
    """Two passes over chunks of cells (Dask, backed): edges, then reduced counts."""
    if groups[0].name is not None:
        raise ValueError(
            "groupby= needs the data in memory; load it with adata.to_memory() (backed) "
            "or adata.X = adata.X.compute() (Dask), or subset the cells of each group."
        )
    source = chunk_source(selection.values, selection.positions, selection.source)
    logg.info(f"    reading {selection.source} chunk by chunk ({type(selection.values).__name__})")
    runs = chunked_value_runs(source, adata.var_names[selection.columns], adata.obs_names)
    genes = GeneBins.of_runs(runs, source.n_cells, n_bins)
    finisher = make_kernel(genes.summary())
    blocks = (
        score_block(finisher, start, counts, scoring)
        for start, counts in chunked_count_blocks(source, genes, make_kernel, plan.n_rows)
    )
    mi, pvalues = assemble(blocks, plan, top_k)
    return [
        GroupResult(
            bins=chunked_bins(source, genes),
            n_bins=genes.n_bins,
            scores={"mi": mi, **_significance(pvalues, plan)},
        )
    ]


def _run_measure(matrix, groups, method: str) -> list[GroupResult]:
    """GeneVector's other co-expression measures, from sparse Gram matrices."""
    return [
        GroupResult(
            bins=None,
            n_bins=None,
            scores={method: MEASURES[method](_rows(matrix, group.cells)).astype(np.float32)},
        )
        for group in groups
    ]


def _checked_in_memory(adata: AnnData, selection) -> sparse.csc_matrix:
    """The used genes' values, read once and validated."""
    matrix = selection.in_memory()
    check_values(
        matrix,
        source=selection.source,
        gene_names=adata.var_names[selection.columns],
        cell_names=adata.obs_names,
    )
    return matrix


def _permutation_pvalues(cells, observed, n_bins, make_kernel, plan, scoring, seed):
    """``(1 + b) / (1 + P)``: ``b`` shuffles of each gene's cells with ``|MI| >= |observed|``."""
    rng = np.random.default_rng(seed)
    exceed = np.zeros(observed.shape, dtype=np.int32)
    plain = Scoring(scoring.estimator, scoring.zeros)
    for _ in logg.progress(
        range(scoring.n_permutations), total=scoring.n_permutations, description="permutations"
    ):
        kernel = make_kernel(bin_genes(shuffle_cells(cells, rng), n_bins))
        null, _ = assemble(scored_row_blocks(kernel, plan.n_rows, plain), plan, None)
        exceed += np.abs(null) >= np.abs(observed)
    return permutation_pvalues(exceed, scoring.n_permutations).astype(np.float32)


def _significance(pvalues, plan: GenePlan) -> dict[str, Any]:
    """The p-values and their q-values, when there are p-values."""
    if pvalues is None:
        return {}
    tested = None
    if plan.in_against is not None:
        tested = np.zeros(pvalues.shape, dtype=bool)
        tested[: plan.n_rows] = plan.in_against
        tested[:, : plan.n_rows] |= plan.in_against[:, None]
    return {"pvals": pvalues, "qvals": qvalues(pvalues, tested, pvalues.shape[0])}


def assemble(blocks: Iterable[ScoredBlock], plan: GenePlan, top_k: int | None):
    """The symmetric MI matrix of the plan's genes (and the p-values') from row blocks."""
    n_genes = plan.order.size
    assembler: Assembler
    if top_k is not None:
        assembler = TopKAssembler(n_genes, top_k)
    elif plan.in_against is not None:
        assembler = SparseAssembler(n_genes)
    else:
        assembler = DenseAssembler(n_genes)
    for start, block, pvalues in blocks:
        wanted = plan.pair_mask(start, start + block.shape[0])
        if wanted is not None:
            block = np.where(wanted, block, 0)
            pvalues = None if pvalues is None else np.where(wanted, pvalues, 0)
        assembler.add(start, block, pvalues)
    return assembler.result()


def _genes_param(adata: AnnData, given: GeneSelection, positions: np.ndarray) -> Any:
    """A gene selection as it can be stored in an .h5ad file: its name, or the names."""
    if given is None or isinstance(given, str):
        return given
    return np.asarray(adata.var_names[np.sort(positions)], dtype=str)


def _store(
    adata: AnnData,
    key: str,
    columns: np.ndarray,
    groups: list[Group],
    results: list[GroupResult],
    params: dict[str, Any],
    backend: str,
) -> None:
    """Write every result into ``adata``, all at once, at the end."""
    from ... import __version__

    if results[0].bins is not None:
        adata.layers[f"{key}_bins"] = _bins_layer(adata, columns, groups, results)
    for group, result in zip(groups, results, strict=True):
        suffix = "" if group.name is None else f"_{group.name}"
        if result.n_bins is not None:
            n_bins = np.zeros(adata.n_vars, dtype=np.int32)
            n_bins[columns] = result.n_bins
            adata.var[f"{key}_n_bins{suffix}"] = n_bins
        for name, scores in result.scores.items():
            fill = 1.0 if name in ("pvals", "qvals") else 0.0
            adata.varp[f"{key}_{name}{suffix}"] = _in_var_space(scores, columns, adata.n_vars, fill)
    used = np.zeros(adata.n_vars, dtype=bool)
    used[columns] = True
    adata.var[f"{key}_used"] = used
    uns = {"params": params, "backend": backend, "version": __version__}
    if groups[0].name is not None:
        uns["groups"] = np.asarray([group.name for group in groups], dtype=str)
    adata.uns[key] = uns


def _bins_layer(adata, columns, groups, results) -> sparse.csr_matrix:
    """Every group's bins in one cells × genes layer."""
    if len(groups) == 1:  # all cells, in order: only the gene columns move
        bins = results[0].bins
        layer = sparse.csr_matrix(
            (bins.data, columns[bins.indices], bins.indptr), shape=adata.shape, dtype=np.uint8
        )
        layer.sort_indices()  # the used genes may come in another order than var's
        return layer
    parts = []
    for group, result in zip(groups, results, strict=True):
        coo = result.bins.tocoo()
        parts.append((group.cells[coo.row], columns[coo.col], coo.data))
    rows, cols, values = (np.concatenate(part) for part in zip(*parts, strict=True))
    return sparse.csr_matrix((values, (rows, cols)), shape=adata.shape, dtype=np.uint8)


def _in_var_space(mi, columns: np.ndarray, n_vars: int, fill: float = 0.0):
    """Place the used genes' matrix at their positions among all genes (others: ``fill``)."""
    if sparse.issparse(mi):
        coo = mi.tocoo()
        return sparse.csr_matrix(
            (coo.data, (columns[coo.row], columns[coo.col])), shape=(n_vars, n_vars)
        )
    if columns.size == n_vars and (columns == np.arange(n_vars)).all():
        return mi
    full = np.full((n_vars, n_vars), fill, dtype=np.float32)
    full[np.ix_(columns, columns)] = mi
    return full
