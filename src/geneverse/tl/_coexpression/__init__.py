"""``gv.tl.coexpression``: signed mutual information between every pair of genes.

The stages, one direction, each in its own module of this package: check the arguments
(:mod:`._options`) → plan the genes and groups (:mod:`._plan`) → pick the matrix and read
it (``geneverse._data``) → look up the cache (:mod:`._results`) → bin and score each group
(:mod:`._run`, the kernels, :mod:`._scoring`, :mod:`._assemble`) → store everything in the
AnnData at once, at the end (:mod:`._store`).
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from anndata import AnnData

from ... import _logging as logg
from ..._data._chunked import (
    DaskSource,
    chunk_source,
    chunked_matrix,
    chunked_value_runs,
    is_chunked,
)
from ..._data._genes import GeneSelection
from ..._data._matrix import Selection, check_values, matrix_digest, select_matrix
from ..._settings import settings
from ..._utils import (
    AUTO,
    EXCLUDE,
    MI,
    PLUGIN,
    Backend,
    Estimator,
    Method,
    Zeros,
    doc_adata,
    doc_backend,
    doc_genes,
    doc_matrix,
    doc_params,
    doc_score,
    package_version,
)
from ...kernels import resolve_backend
from ._estimate import check_output_fits
from ._options import Options, check_combinations
from ._plan import GenePlan, Group, plan_genes, resolve_groups, stored_genes
from ._results import GroupResult, cached, combined_digest
from ._run import Computation, group_labels, run_chunked, run_in_memory
from ._scoring import kernel_scoring
from ._store import store
from ._tiles import run_tiles


@doc_params(
    doc_adata=doc_adata,
    doc_matrix=doc_matrix,
    doc_genes=doc_genes,
    doc_score=doc_score,
    doc_backend=doc_backend,
)
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
    method: Method = MI,
    estimator: Estimator = PLUGIN,
    zeros: Zeros = EXCLUDE,
    pvals: bool = False,
    n_permutations: int = 0,
    random_state: int | None = 0,
    cache: bool = True,
    backend: Backend = AUTO,
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
    {doc_adata}
    {doc_matrix}
    {doc_genes}
    against
        Compute only the rectangle ``genes × against`` (same forms as ``genes``): 50
        marker genes against all 20,000 cost 50 × 20,000 pairs, not 20,000².
        ``None``: every pair of ``genes``.
    groupby
        An ``obs`` column (categorical, string, integer or boolean): one result per
        category, each equal to running on that category's cells alone (bins included).
    top_k
        Keep, for every gene, its ``top_k`` strongest ``|MI|`` partners (union of both
        directions), as a sparse matrix; the dense genes × genes matrix is never built.
    {doc_score}
    method
        ``"mi"``, or one of GeneVector's other co-expression measures, computed without
        densifying X: ``"pearson"``, ``"spearman"``, ``"jaccard"`` (of the expressed
        cells) or ``"cosine"``; stored as ``adata.varp[f"{key_added}_{method}"]``.
        The options of the MI only (``n_bins``, ``signed``, ``estimator``, ``zeros``,
        ``pvals``, ``n_permutations``, ``backend``, ``device``) are an error with
        another method; every other option means the same for every method.
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
        Seed of the permutations (a whole number, or ``None`` for a fresh one, which is
        stored in ``uns``); only with ``n_permutations``.
    cache
        Reuse a stored result of an identical call (same values, genes, cells, groups,
        parameters and version) from ``gv.settings.cache_dir``, and store this one there
        (the cache keeps at most ``gv.settings.cache_max_bytes``, the results used least
        recently are removed first).
    {doc_backend}
    key_added
        Prefix of the keys written to ``adata``. A rerun with the same key replaces every
        result of the earlier run.
    copy
        Return a copy with the results instead of writing into ``adata``.

    Returns
    -------
    ``None``, or a new AnnData if ``copy=True``. Sets these fields (``key_added="gv"``):

    ``adata.varp["gv_mi"]`` : :class:`numpy.ndarray` (``float32``, genes × genes)
        Signed MI in bits; symmetric, diagonal 0, rows and columns of unused genes 0.
        A :class:`scipy.sparse.csr_matrix` when ``top_k`` or ``against`` is given, or when
        ``genes`` selects so few of many genes that a dense matrix over all genes would be
        mostly empty (then only the used genes' pairs are stored). With ``groupby``, one
        ``adata.varp["gv_mi_{group}"]`` per category instead (``{group}`` is the
        category, with characters an ``.h5ad`` key cannot hold replaced by ``_`` and made
        unique: ``uns["gv"]["group_keys"]``). With another ``method``,
        ``adata.varp["gv_{method}"]``.
    ``adata.layers["gv_bins"]`` : :class:`scipy.sparse.csr_matrix` (``uint8``)
        The bin of every value (0 = not expressed; columns of unused genes are empty).
        With ``groupby``, each cell's bins are those of its category.
    ``adata.var["gv_n_bins"]`` : :class:`pandas.Series` (``int``)
        Bins of each gene, counting the zero bin (0 for unused genes); with ``groupby``,
        ``adata.var["gv_n_bins_{group}"]``.
    ``adata.var["gv_used"]`` : :class:`pandas.Series` (``bool``)
        The genes that entered the computation.
    ``adata.varp["gv_pvals"]``, ``adata.varp["gv_qvals"]`` : ``float32``
        With ``pvals`` or ``n_permutations``: each pair's p-value and Benjamini–Hochberg
        q-value (1 for unused genes; sparse like ``gv_mi`` with ``top_k``/``against``).
    ``adata.uns["gv"]`` : :class:`dict`
        ``"params"`` (every argument), ``"backend"`` (what ran), ``"version"``,
        ``"stored"`` (the keys written) and, with ``groupby``, ``"groups"`` (the
        categories) and ``"group_keys"`` (their key suffixes, in the same order).

    Examples
    --------
    >>> import scanpy as sc
    >>> import geneverse as gv
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> gv.tl.coexpression(adata, use_raw=True)
    >>> adata.varp["gv_mi"].shape
    (765, 765)
    """
    options = Options.checked(
        **{name: value for name, value in locals().items() if name != "adata"}
    )
    started = logg.info(
        "computing signed mutual information" if method == MI else f"computing {method}"
    )
    if options.copy and adata.isbacked:
        raise ValueError(
            "copy=True would load this backed AnnData into memory; use copy=False: the "
            "results are added to the AnnData (X stays on disk), or load it first with "
            "adata.to_memory()."
        )
    plan = plan_genes(adata, options.genes, options.against)
    groups = resolve_groups(adata, options.groupby)
    selection = select_matrix(
        adata, layer=options.layer, use_raw=options.use_raw, columns=plan.order
    )
    chunked = is_chunked(selection.values)
    check_combinations(options, _DEFAULTS, chunked=chunked)
    kernel_class = None
    if options.method == MI:
        kernel_class = resolve_backend(
            settings.backend if options.backend_name() == AUTO else options.backend_name(),
            options.device,
        )
    n_outputs = len(groups) * (3 if options.tests else 1)
    check_output_fits(adata.n_vars, plan, options.top_k, n_outputs)
    computation = Computation(
        method=options.method,
        plan=plan,
        top_k=options.top_k,
        n_bins=options.n_bins,
        scoring=kernel_scoring(
            signed=options.signed,
            zeros=options.zeros,
            estimator=options.estimator,
            g_test=options.pvals and options.n_permutations == 0,
        ),
        n_permutations=options.n_permutations,
        seed=_seed(options),
        kernel_class=kernel_class,
        n_jobs=options.threads,
        device=options.device,
    )
    params = _stored_params(adata, options, plan, selection, computation)
    results = _compute(adata, selection, groups, computation, params, options.cache)
    target = adata.copy() if options.copy else adata
    uns = {
        "params": params,
        "backend": kernel_class.name if kernel_class is not None else options.method,
        "version": package_version(),
    }
    written = store(target, options.key_added, selection.columns, groups, results, uns)
    logg.info("    finished", since=started)
    logg.hint(
        "added " + ", ".join(f"{slot}[{k!r}]" for slot, keys in written.items() for k in keys)
    )
    return target if options.copy else None


#: The defaults of every option: an option set away from them must apply to the call.
_DEFAULTS: dict[str, Any] = {
    name: parameter.default
    for name, parameter in inspect.signature(coexpression).parameters.items()
    if parameter.default is not inspect.Parameter.empty
}


def _seed(options: Options) -> int | None:
    """The permutations' seed: ``random_state``, or a fresh one drawn for ``None``."""
    if options.n_permutations == 0:
        return None
    if options.random_state is None:
        return int(np.random.SeedSequence().generate_state(1)[0])
    return options.random_state


def _compute(
    adata: AnnData,
    selection: Selection,
    groups: list[Group],
    computation: Computation,
    params: dict[str, Any],
    use_cache: bool,
) -> list[GroupResult]:
    """Every group's result: read the values, then look up the cache or compute."""
    gene_names = np.asarray(adata.var_names[selection.columns])
    cell_names = np.asarray(adata.obs_names)
    key_parts = _key_parts(computation, groups, gene_names, params)
    use_cache = use_cache and settings.cache_dir is not None
    if is_chunked(selection.values):
        source = chunk_source(selection.values, selection.positions, selection.source)
        logg.info(
            f"    reading {selection.source} chunk by chunk ({type(selection.values).__name__})"
        )
        if computation.method != MI:
            matrix = chunked_matrix(source, gene_names, cell_names)
            return cached(
                lambda: run_in_memory(matrix, groups, computation),
                matrix_digest(matrix), key_parts, use_cache,
            )  # fmt: skip
        labels = group_labels(groups, source.n_cells)
        runs, digests = chunked_value_runs(source, gene_names, cell_names, labels, len(groups))
        run = run_tiles if isinstance(source, DaskSource) else run_chunked
        return cached(
            lambda: run(source, runs, groups, computation),
            combined_digest(digests), key_parts, use_cache,
        )  # fmt: skip
    matrix = selection.in_memory()
    check_values(matrix, source=selection.source, gene_names=gene_names, cell_names=cell_names)
    return cached(
        lambda: run_in_memory(matrix, groups, computation),
        matrix_digest(matrix), key_parts, use_cache,
    )  # fmt: skip


def _key_parts(computation: Computation, groups: list[Group], gene_names, params) -> dict:
    """Everything besides the values that determines the result: the genes used (positions
    and names, in order), the pairs, the cells of each group and every parameter."""
    plan = computation.plan
    return {
        "order": plan.order,
        "n_rows": plan.n_rows,
        "in_against": plan.in_against,
        "gene_names": [str(name) for name in gene_names],
        "groups": [[group.name, group.suffix, group.cells] for group in groups],
        "method": computation.method,
        "top_k": computation.top_k,
        "n_bins": computation.n_bins,
        "scoring": [
            computation.scoring.signed,
            computation.scoring.include_zeros,
            computation.scoring.miller_madow,
            computation.scoring.g_test,
        ],
        "n_permutations": computation.n_permutations,
        "seed": computation.seed,
    }


def _stored_params(adata, options: Options, plan: GenePlan, selection, computation) -> dict:
    """Every argument, as an ``.h5ad`` file can hold it."""
    return {
        "layer": options.layer,
        "use_raw": selection.use_raw,
        "genes": stored_genes(adata, options.genes, plan.order[: plan.n_rows]),
        "against": None
        if plan.in_against is None
        else stored_genes(adata, options.against, plan.order[plan.in_against]),
        "groupby": options.groupby,
        "top_k": options.top_k,
        "n_bins": options.n_bins,
        "signed": options.signed,
        "method": options.method,
        "estimator": options.estimator,
        "zeros": options.zeros,
        "pvals": options.tests,
        "n_permutations": options.n_permutations,
        "random_state": computation.seed if options.n_permutations else options.random_state,
        "cache": options.cache,
        "backend": options.backend,
        "device": options.device,
        "n_jobs": options.threads,
        "key_added": options.key_added,
        "copy": options.copy,
    }
