"""``gv.tl.differential_coexpression``: which gene pairs change their MI between two groups.

Per pair, ``dmi = MI(group) - MI(reference)``, each MI computed on that group's cells alone
(bins included), exactly as :func:`~geneverse.tl.coexpression` on the subset. The null
shuffles the cells' labels between the two groups (sizes kept): each permutation bins
and scores both groups once with the same kernel (``tl._coexpression``'s engine), and a
pair's p-value is ``(1 + b) / (1 + P)`` with ``b`` the permutations whose ``|dmi|`` is at
least the observed one. The engine scores one group at a time; the difference of two
kernels' row blocks (:class:`_Difference`) and the per-pair exceedance counts
(:class:`_Exceedances`) are what this module adds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from .. import _logging as logg
from .._data._binned import BinnedGenes
from .._data._binning import bin_genes
from .._data._chunked import is_chunked
from .._data._genes import GeneSelection
from .._data._matrix import check_values, select_matrix
from .._settings import resolve_n_jobs, settings
from .._utils import (
    AUTO,
    INCLUDE,
    MI,
    MILLER_MADOW,
    Backend,
    Estimator,
    Zeros,
    doc_backend,
    doc_genes,
    doc_matrix,
    doc_params,
    package_version,
)
from ..kernels import Kernel, PairScores, resolve_backend
from ._coexpression._estimate import check_output_fits, estimate_run
from ._coexpression._options import backend_asked, checked_arguments
from ._coexpression._plan import GenePlan, key_suffixes, plan_genes, stored_genes
from ._coexpression._run import Computation
from ._coexpression._scoring import kernel_scoring, qvalues, scored_row_blocks
from ._coexpression._statistics import permutation_pvalues
from ._coexpression._store import forget, in_var_space

_UNTESTED = 1.0
#: The fewest cells of a group: the MI of fewer is 0.
_MIN_CELLS = 2


@doc_params(doc_matrix=doc_matrix, doc_genes=doc_genes, doc_backend=doc_backend)
def differential_coexpression(
    adata: AnnData,
    groupby: str,
    *,
    group: Any,
    reference: Any,
    n_permutations: int = 100,
    layer: str | None = None,
    use_raw: bool | None = None,
    genes: GeneSelection = None,
    against: GeneSelection = None,
    top_k: int | None = None,
    n_bins: int = 10,
    signed: bool = True,
    estimator: Estimator = MILLER_MADOW,
    zeros: Zeros = INCLUDE,
    backend: Backend = AUTO,
    device: str | None = None,
    n_jobs: int | None = None,
    random_state: int | None = 0,
    key_added: str = "gv_diff",
    copy: bool = False,
) -> AnnData | None:
    """Differential co-expression: the change of each pair's MI between two groups of cells.

    For every pair of genes, ``dmi = MI(group) − MI(reference)``, each signed MI computed
    on that group's cells alone, bins included, exactly as
    :func:`~geneverse.tl.coexpression` on the subset. Its significance comes from
    permutations of the cells' labels between the two groups (group sizes kept): ``p =
    (1 + b) / (1 + n_permutations)`` with ``b`` the permutations whose ``|dmi|`` is at
    least the observed one, and Benjamini–Hochberg q-values over the pairs. Each
    permutation costs one MI run per group.

    Parameters
    ----------
    adata
        Annotated data matrix (cells × genes) of counts or log-normalized values.
    groupby
        An ``obs`` column (categorical, string, integer or boolean) holding the groups.
    group
        The category of ``groupby`` whose change is measured (a positive ``dmi``: more MI
        in ``group``).
    reference
        The category it is compared with; cells of other categories are not used.
    n_permutations
        Label permutations for the p-values (0: the ``dmi`` alone, no p-values). The
        smallest p-value is ``1 / (1 + n_permutations)``, so the q-value of a pair among
        ``m`` tested pairs, ``k`` of them at that p-value, is at least ``m / ((1 +
        n_permutations) k)``: for q-values below 0.05 among many pairs, restrict the pairs
        (``genes``, ``against``) or raise ``n_permutations`` (e.g. 1,000 for the 47,000
        pairs of 300 genes).
    {doc_matrix}
    {doc_genes}
    against
        Compute only the pairs of ``genes × against`` (same forms as ``genes``).
    top_k
        Keep, for every gene, the ``top_k`` pairs with the largest ``|dmi|`` (union of
        both directions), as sparse matrices; p-values and q-values are computed for
        those pairs, the q-values counting every pair as tested.
    n_bins
        Most bins of a gene's nonzero values (1–255), in each group.
    signed
        Multiply each MI by the sign of the genes' Pearson correlation in that group: a
        pair that turns from co-expressed to mutually exclusive changes by the sum of
        its two MIs.
    estimator
        ``"miller_madow"`` (the default here) or ``"plugin"``; see
        :func:`~geneverse.tl.coexpression`.
    zeros
        ``"include"`` (the default here: the MI over all cells of the group, which ranks
        pairs) or ``"exclude"`` (GeneVector's); see :doc:`/scores`.
    {doc_backend}
    random_state
        Seed of the permutations (a whole number, or ``None`` for a fresh one, which is
        stored in ``uns``).
    key_added
        Prefix of the keys written. A rerun with the same key replaces every result of the
        earlier run.
    copy
        Return a copy with the results instead of writing into ``adata``.

    Returns
    -------
    ``None``, or a new AnnData if ``copy=True``. Sets these fields (``key_added="gv_diff"``):

    ``adata.varp["gv_diff_dmi"]`` : :class:`numpy.ndarray` (``float32``, genes × genes)
        MI in ``group`` minus MI in ``reference``, in bits; symmetric, 0 for unused genes.
        A :class:`scipy.sparse.csr_matrix` with ``top_k`` or ``against``.
    ``adata.varp["gv_diff_pvals"]``, ``adata.varp["gv_diff_qvals"]`` : ``float32``
        With ``n_permutations > 0``: each pair's permutation p-value and its BH q-value
        (1 for pairs that were not tested).
    ``adata.varp["gv_diff_mi_{{group}}"]``, ``adata.varp["gv_diff_mi_{{reference}}"]``
        Each group's signed MI, on the same pairs (``{{group}}`` is the category, with
        characters an ``.h5ad`` key cannot hold replaced: ``uns["gv_diff"]["group_keys"]``).
    ``adata.var["gv_diff_used"]`` : :class:`pandas.Series` (``bool``)
        The genes that entered the computation.
    ``adata.uns["gv_diff"]`` : :class:`dict`
        ``"params"`` (every argument), ``"groups"`` (``[group, reference]``),
        ``"group_keys"``, ``"n_cells"`` (cells of each), ``"backend"``, ``"version"``
        and ``"stored"`` (the keys written).

    Examples
    --------
    >>> import scanpy as sc
    >>> import geneverse as gv
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> gv.tl.differential_coexpression(
    ...     adata, "bulk_labels", group="CD14+ Monocyte", reference="Dendritic"
    ... )  # doctest: +SKIP
    >>> gv.get.network(adata, "gv_diff", max_q=0.05).head()  # doctest: +SKIP
    """
    options = _Options.checked(
        n_permutations=n_permutations, layer=layer, use_raw=use_raw, top_k=top_k,
        n_bins=n_bins, signed=signed, estimator=estimator, zeros=zeros, backend=backend,
        device=device, n_jobs=n_jobs, random_state=random_state, key_added=key_added,
        copy=copy,
    )  # fmt: skip
    started = logg.info(f"computing differential co-expression, {group!r} vs {reference!r}")
    groups = two_groups(adata, groupby, group, reference)
    plan = plan_genes(adata, genes, against)
    matrix, columns = _values(adata, plan, options)
    computation = _computation(plan, options)
    n_outputs = 5 if options.n_permutations else 3  # dmi, the two MIs (p, q)
    check_output_fits(adata.n_vars, plan, options.top_k, n_outputs)
    result = _run(matrix, groups, computation, options)
    target = adata.copy() if options.copy else adata
    params = _params(adata, groupby, group, reference, genes, against, plan, options)
    written = _store(target, options.key_added, columns, groups, result, params, computation)
    logg.info("    finished", since=started)
    logg.hint("added " + ", ".join(f"{slot}[{k!r}]" for slot, ks in written.items() for k in ks))
    return target if options.copy else None


# --------------------------------------------------------------------------------------------
# The arguments
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    n_permutations: int
    layer: str | None
    use_raw: bool | None
    top_k: int | None
    n_bins: int
    signed: bool
    estimator: Estimator
    zeros: Zeros
    backend: Backend
    device: str | None
    n_jobs: int | None
    random_state: int  # a fresh seed is drawn for None
    key_added: str
    copy: bool

    @classmethod
    def checked(cls, **arguments: Any) -> _Options:
        a = checked_arguments(arguments)
        if a["random_state"] is None:
            a["random_state"] = int(np.random.SeedSequence().generate_state(1)[0])
        return cls(**a)


@dataclass(frozen=True)
class Groups:
    """The two groups compared: their names, key suffixes and cells (sorted positions)."""

    names: tuple[str, str]
    suffixes: tuple[str, str]
    cells: tuple[np.ndarray, np.ndarray]


def two_groups(adata: AnnData, groupby: Any, group: Any, reference: Any) -> Groups:
    """The cells of ``group`` and ``reference`` in ``adata.obs[groupby]``."""
    if not isinstance(groupby, str) or groupby not in adata.obs.columns:
        raise ValueError(
            f"groupby={groupby!r} is not a column of adata.obs (columns: "
            f"{list(adata.obs.columns)}); name the column that holds the groups, such as "
            "a condition or a cell type."
        )
    labels = adata.obs[groupby]
    if pd.api.types.is_float_dtype(labels.dtype):
        raise ValueError(
            f"adata.obs[{groupby!r}] holds floating-point numbers; compare two categories "
            "of a categorical, string, integer or boolean column."
        )
    known = _categories(labels)
    names = []
    for argument, value in (("group", group), ("reference", reference)):
        if str(value) not in known:
            raise ValueError(
                f"{argument}={value!r} is not a category of adata.obs[{groupby!r}] "
                f"(categories: {list(known)})."
            )
        names.append(str(value))
    if names[0] == names[1]:
        raise ValueError(
            f"group and reference are both {names[0]!r}; compare two different categories "
            f"of adata.obs[{groupby!r}]."
        )
    text = labels.astype(str).where(labels.notna())
    cells = tuple(np.flatnonzero((text == name).to_numpy()) for name in names)
    for argument, name, found in zip(("group", "reference"), names, cells, strict=True):
        if found.size < _MIN_CELLS:
            raise ValueError(
                f"{argument}={name!r} has {found.size} cells in adata.obs[{groupby!r}]; "
                f"a group needs at least {_MIN_CELLS} cells (a few hundred for a reliable "
                "MI). Choose another category."
            )
    suffixes = key_suffixes(names)
    return Groups(
        names=(names[0], names[1]), suffixes=(suffixes[0], suffixes[1]), cells=(cells[0], cells[1])
    )


def _categories(labels: pd.Series) -> list[str]:
    if isinstance(labels.dtype, pd.CategoricalDtype):
        return [str(category) for category in labels.cat.categories]
    return sorted({str(value) for value in labels.dropna().unique()})


def _values(adata: AnnData, plan: GenePlan, options: _Options):
    """The used genes' values of all cells (canonical CSR, validated), and their columns."""
    selection = select_matrix(
        adata, layer=options.layer, use_raw=options.use_raw, columns=plan.order
    )
    if is_chunked(selection.values) or adata.isbacked:
        raise ValueError(
            f"{selection.source} is read chunk by chunk (a Dask array or a backed file); "
            "differential co-expression reads each group's cells many times: load the "
            "data first with adata.to_memory() (or a subset of cells and genes)."
        )
    matrix = selection.in_memory()
    check_values(
        matrix,
        source=selection.source,
        gene_names=np.asarray(adata.var_names[selection.columns]),
        cell_names=np.asarray(adata.obs_names),
    )
    return matrix, selection.columns


def _computation(plan: GenePlan, options: _Options) -> Computation:
    name = backend_asked(options.backend, options.device)
    kernel_class = resolve_backend(
        cast(Backend, settings.backend if name == AUTO else name), options.device
    )
    return Computation(
        method=MI,
        plan=plan,
        top_k=options.top_k,
        n_bins=options.n_bins,
        scoring=kernel_scoring(
            signed=options.signed, zeros=options.zeros, estimator=options.estimator, g_test=False
        ),
        n_permutations=0,
        seed=None,
        kernel_class=kernel_class,
        n_jobs=resolve_n_jobs(options.n_jobs),
        device=options.device,
    )


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


class _Difference:
    """Row blocks of ``MI(group) - MI(reference)`` from the two groups' kernels."""

    def __init__(self, group: Kernel, reference: Kernel) -> None:
        self.group, self.reference = group, reference
        self.preferred_block_rows = min(group.preferred_block_rows, reference.preferred_block_rows)

    def scores(self, start: int, stop: int, first_column: int | None = None) -> PairScores:
        """As :meth:`geneverse.kernels.Kernel.scores`: the MI difference of the pairs."""
        group = self.group.scores(start, stop, first_column).mi
        return PairScores(mi=group - self.reference.scores(start, stop, first_column).mi)


@dataclass(frozen=True)
class _Result:
    dmi: np.ndarray | sparse.csr_matrix
    mi: tuple[Any, Any]
    pvalues: np.ndarray | sparse.csr_matrix | None
    qvalues: np.ndarray | sparse.csr_matrix | None


def _kernel(matrix: sparse.csr_matrix, cells: np.ndarray, computation: Computation) -> Kernel:
    """The MI kernel of the cells ``cells`` (sorted): their own bins, as coexpression makes."""
    return computation.kernel(_binned(matrix, cells, computation.n_bins))


def _binned(matrix: sparse.csr_matrix, cells: np.ndarray, n_bins: int) -> BinnedGenes:
    rows = matrix if cells.size == matrix.shape[0] else matrix[cells]
    return bin_genes(rows, n_bins)


def _run(matrix, groups: Groups, computation: Computation, options: _Options) -> _Result:
    """The observed dmi and each group's MI, then the permutation p-values and q-values."""
    kernels = [_kernel(matrix, cells, computation) for cells in groups.cells]
    for kernel, name in zip(kernels, groups.names, strict=True):
        logg.info(estimate_run(kernel.data, kernel, computation.plan.n_rows, name, options.top_k))
    plan = computation.plan
    if options.top_k is None and plan.in_against is None:
        mi = tuple(computation.scores_of(kernel)[0] for kernel in kernels)
        dmi = mi[0] - mi[1]
        exceedances = _Exceedances.of_dense(dmi)
    else:
        dmi, _ = computation.scores_of(_Difference(*kernels))
        exceedances = _Exceedances.of_sparse(dmi)
        mi = tuple(
            exceedances.pair_matrix(_gather(kernel, exceedances, plan)) for kernel in kernels
        )
    if options.n_permutations == 0:
        return _Result(dmi=dmi, mi=mi, pvalues=None, qvalues=None)
    _permute(matrix, groups, computation, exceedances, options)
    pvalues = exceedances.pvalues(options.n_permutations)
    q = qvalues(pvalues, plan.tested(), plan.n_genes, computation.n_jobs)
    return _Result(dmi=dmi, mi=mi, pvalues=pvalues, qvalues=q)


def _permute(matrix, groups: Groups, computation, exceedances, options: _Options) -> None:
    """Count, per pair, the label permutations with ``|dmi| >= |observed dmi|``."""
    n = options.n_permutations
    logg.info(
        f"    {n} permutations of the labels of {sum(c.size for c in groups.cells)} cells, "
        "2 MI runs each"
    )
    shuffles = _shuffled_groups(groups, options.random_state, n)
    for cells in logg.progress(shuffles, total=n, description="permutations"):
        null = _Difference(*(_kernel(matrix, part, computation) for part in cells))
        for block in scored_row_blocks(cast(Kernel, null), computation.plan.n_rows):
            exceedances.add(block.start, block.mi)


def _shuffled_groups(groups: Groups, seed: int, n: int) -> Iterator[tuple[np.ndarray, ...]]:
    """The cells of the two groups after each of ``n`` shuffles of their labels."""
    rng = np.random.default_rng(seed)
    pooled = np.concatenate(groups.cells)
    n_group = groups.cells[0].size
    for _ in range(n):
        shuffled = pooled[rng.permutation(pooled.size)]
        yield np.sort(shuffled[:n_group]), np.sort(shuffled[n_group:])


class _Exceedances:
    """Per tested pair, the permutations whose ``|dmi|`` reached the observed one.

    Dense: every pair of the plan's genes (the upper triangle of a matrix of counts);
    sparse: the pairs stored in the observed sparse ``dmi``, as arrays sorted by row.
    """

    def __init__(self, observed, rows=None, cols=None, n_genes=0) -> None:
        self.observed = observed
        self.rows, self.cols, self.n_genes = rows, cols, n_genes
        self.counts = np.zeros(np.shape(observed), dtype=np.int32)

    @classmethod
    def of_dense(cls, dmi: np.ndarray) -> _Exceedances:
        return cls(np.abs(dmi))

    @classmethod
    def of_sparse(cls, dmi: sparse.csr_matrix) -> _Exceedances:
        upper = sparse.triu(dmi, k=1).tocsr()
        upper.sort_indices()
        coo = upper.tocoo()
        return cls(
            np.abs(coo.data), coo.row.astype(np.int64), coo.col.astype(np.int64), dmi.shape[0]
        )

    @property
    def is_dense(self) -> bool:
        return self.rows is None

    def rows_in(self, start: int, stop: int) -> slice:
        """The pairs whose first gene is in ``start:stop`` (sparse)."""
        first, last = np.searchsorted(self.rows, [start, stop])
        return slice(int(first), int(last))

    def add(self, start: int, block: np.ndarray) -> None:
        """Count the permutation's row block ``start:`` (rows × columns from ``start``)."""
        stop = start + block.shape[0]
        if self.is_dense:
            self.counts[start:stop, start:] += np.abs(block) >= self.observed[start:stop, start:]
            return
        pairs = self.rows_in(start, stop)
        values = block[self.rows[pairs] - start, self.cols[pairs] - start]
        self.counts[pairs] += np.abs(values) >= self.observed[pairs]

    def pvalues(self, n_permutations: int):
        """``(1 + b) / (1 + P)`` per pair, symmetric, 1 on the diagonal."""
        p = permutation_pvalues(self.counts, n_permutations).astype(np.float32)
        if not self.is_dense:
            return self.pair_matrix(p)
        upper = np.triu(np.ones(p.shape, dtype=bool), k=1)
        p = np.where(upper, p, p.T)
        np.fill_diagonal(p, _UNTESTED)
        return p

    def pair_matrix(self, values: np.ndarray) -> sparse.csr_matrix:
        """The symmetric CSR of one value per stored pair (sparse)."""
        rows = np.concatenate([self.rows, self.cols])
        cols = np.concatenate([self.cols, self.rows])
        data = np.concatenate([values, values]).astype(np.float32)
        matrix = sparse.csr_matrix((data, (rows, cols)), shape=(self.n_genes, self.n_genes))
        matrix.sort_indices()
        return matrix


def _gather(kernel: Kernel, pairs: _Exceedances, plan: GenePlan) -> np.ndarray:
    """One kernel's MI at the stored pairs, block by block."""
    out = np.zeros(pairs.rows.size, dtype=np.float32)
    for block in scored_row_blocks(kernel, plan.n_rows):
        where = pairs.rows_in(block.start, block.start + block.mi.shape[0])
        out[where] = block.mi[pairs.rows[where] - block.start, pairs.cols[where] - block.start]
    return out


# --------------------------------------------------------------------------------------------
# Storing
# --------------------------------------------------------------------------------------------


def _store(adata, key, columns, groups: Groups, result: _Result, params, computation) -> dict:
    """Write everything into ``adata`` (replacing an earlier run under ``key``)."""
    forget(adata, key)
    n = adata.n_vars
    matrices = {f"{key}_dmi": (result.dmi, 0.0)}
    for suffix, mi in zip(groups.suffixes, result.mi, strict=True):
        matrices[f"{key}_mi_{suffix}"] = (mi, 0.0)
    if result.pvalues is not None:
        matrices[f"{key}_pvals"] = (result.pvalues, _UNTESTED)
        matrices[f"{key}_qvals"] = (result.qvalues, _UNTESTED)
    for name, (values, fill) in matrices.items():
        adata.varp[name] = in_var_space(values, columns, n, fill)
    used = np.zeros(n, dtype=bool)
    used[columns] = True
    adata.var[f"{key}_used"] = used
    written = {"var": [f"{key}_used"], "varp": list(matrices)}
    adata.uns[key] = {
        "params": params,
        "groups": np.asarray(groups.names, dtype=str),
        "group_keys": np.asarray(groups.suffixes, dtype=str),
        "n_cells": np.asarray([cells.size for cells in groups.cells], dtype=np.int64),
        "backend": computation.kernel_class.name,
        "version": package_version(),
        "stored": {slot: np.asarray(keys, dtype=str) for slot, keys in written.items()},
    }
    return written


def _params(adata, groupby, group, reference, genes, against, plan: GenePlan, options) -> dict:
    """Every argument, as an ``.h5ad`` file can hold it."""
    return {
        "groupby": groupby,
        "group": str(group),
        "reference": str(reference),
        "n_permutations": options.n_permutations,
        "layer": options.layer,
        "use_raw": options.use_raw,
        "genes": stored_genes(adata, genes, plan.order[: plan.n_rows]),
        "against": None
        if plan.in_against is None
        else stored_genes(adata, against, plan.order[plan.in_against]),
        "top_k": options.top_k,
        "n_bins": options.n_bins,
        "signed": options.signed,
        "estimator": options.estimator,
        "zeros": options.zeros,
        "backend": options.backend,
        "device": options.device,
        "n_jobs": resolve_n_jobs(options.n_jobs),
        "random_state": options.random_state,
        "key_added": options.key_added,
        "copy": options.copy,
    }
