"""``gv.tl.module_scores``: one score per cell and gene module, by ``scanpy.tl.score_genes``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from anndata import AnnData

from .. import _logging as logg
from .._data._matrix import resolve_use_raw
from .._utils import (
    check_flag,
    check_key,
    check_random_state,
    check_whole_number,
    doc_matrix,
    doc_params,
)
from ..get._network import module_column

#: The obs column ``score_genes`` writes into the scratch AnnData (never into the user's).
_SCRATCH = "score"


@doc_params(doc_matrix=doc_matrix)
def module_scores(
    adata: AnnData,
    key: str = "gv_module",
    *,
    modules: str | Sequence[str] | None = None,
    ctrl_size: int = 50,
    n_bins: int = 25,
    gene_pool: Sequence[str] | None = None,
    random_state: int | None = 0,
    layer: str | None = None,
    use_raw: bool | None = None,
    key_added: str = "gv_module_scores",
    copy: bool = False,
) -> AnnData | None:
    """Score every cell for each gene module, with :func:`scanpy.tl.score_genes`.

    A module's score in a cell is the mean expression of the module's genes minus that of
    a reference set of genes drawn from the same expression bins
    (:func:`scanpy.tl.score_genes`, Satija et al. 2015), for the modules of
    :func:`~geneverse.tl.modules`. Nothing else of ``adata`` changes (``score_genes``'
    ``obs`` column is written into a scratch AnnData that shares the values).

    Parameters
    ----------
    adata
        Annotated data matrix (cells × genes) with gene modules.
    key
        The ``var`` column of the modules (``key_added`` of :func:`~geneverse.tl.modules`).
    modules
        The modules to score (a name or names of ``adata.var[key]``); ``None``: all.
    ctrl_size
        Reference genes drawn per expression bin (``score_genes``' ``ctrl_size``).
    n_bins
        Expression bins the reference genes are drawn from (``score_genes``' ``n_bins``).
    gene_pool
        Genes to draw the reference from (``None``: all genes of the matrix).
    random_state
        Seed of the reference genes' draw (the same for every module).
    {doc_matrix}
    key_added
        The ``obsm`` key written.
    copy
        Return a copy with the scores instead of writing into ``adata``.

    Returns
    -------
    ``None``, or a new AnnData if ``copy=True``. Sets (``key_added="gv_module_scores"``):

    ``adata.obsm["gv_module_scores"]`` : :class:`pandas.DataFrame`
        Cells × modules (columns named by module, ``"M1"``, ...), the score of each.

    Examples
    --------
    >>> import scanpy as sc
    >>> import geneverse as gv
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> gv.tl.coexpression(adata, zeros="include", estimator="miller_madow")
    >>> gv.tl.modules(adata)
    >>> gv.tl.module_scores(adata)
    >>> adata.obs["M1"] = adata.obsm["gv_module_scores"]["M1"]  # doctest: +SKIP
    >>> sc.pl.umap(adata, color="M1")  # doctest: +SKIP
    """
    started = logg.info("scoring gene modules in every cell")
    column = module_column(adata, key)
    names = _chosen(column, modules, key)
    options = _checked(
        ctrl_size=ctrl_size,
        n_bins=n_bins,
        random_state=random_state,
        key_added=key_added,
        copy=copy,
    )
    scratch = _scratch(adata, layer, use_raw)
    pool = None if gene_pool is None else list(gene_pool)
    scores = pd.DataFrame(index=adata.obs_names.copy())
    for name in names:
        scores[name] = _score(scratch, list(column.index[column == name]), pool, options)
    target = adata.copy() if options["copy"] else adata
    target.obsm[options["key_added"]] = scores
    logg.info(f"    scored {len(names)} modules", since=started)
    logg.hint(f"added obsm[{options['key_added']!r}]")
    return target if options["copy"] else None


def _chosen(column: pd.Series, modules: Any, key: str) -> list[str]:
    """The modules to score, each with at least one gene."""
    present = [name for name in column.cat.categories if (column == name).any()]
    if modules is None:
        if not present:
            raise ValueError(
                f"adata.var[{key!r}] holds no module (every gene is NaN); find modules "
                "first with gv.tl.modules, with a lower min_size if it found none."
            )
        return [str(name) for name in present]
    names = [modules] if isinstance(modules, str) else list(modules)
    unknown = [name for name in names if name not in present]
    if not names or unknown:
        raise ValueError(
            f"modules={modules!r}: {unknown or 'no module'} not in adata.var[{key!r}] "
            f"(its modules: {[str(name) for name in present]})."
        )
    return [str(name) for name in names]


def _checked(**options: Any) -> dict[str, Any]:
    o = options
    o["ctrl_size"] = check_whole_number("ctrl_size", o["ctrl_size"], minimum=1, what="genes")
    o["n_bins"] = check_whole_number("n_bins", o["n_bins"], minimum=1, what="expression bins")
    o["random_state"] = check_random_state(o["random_state"])
    o["key_added"] = check_key("key_added", o["key_added"])
    o["copy"] = check_flag("copy", o["copy"])
    return o


def _scratch(adata: AnnData, layer: str | None, use_raw: bool | None) -> AnnData:
    """An AnnData that shares the values ``score_genes`` reads (X, a layer or raw.X) and
    holds nothing else, so that its obs column never reaches ``adata``."""
    if layer is not None and (not isinstance(layer, str) or layer not in adata.layers):
        raise ValueError(
            f"layer={layer!r} is not in adata.layers (layers: {list(adata.layers)}); use "
            "one of those, or layer=None for adata.X."
        )
    if resolve_use_raw(adata, layer, use_raw):
        values, genes = adata.raw.X, adata.raw.var_names
    elif layer is not None:
        values, genes = adata.layers[layer], adata.var_names
    else:
        values, genes = adata.X, adata.var_names
    if values is None:
        raise ValueError("adata.X is empty (None); name a layer with layer='...'.")
    return AnnData(
        X=values,
        obs=pd.DataFrame(index=adata.obs_names.copy()),
        var=pd.DataFrame(index=genes.copy()),
    )


def _score(scratch: AnnData, genes: list[str], pool: list[str] | None, options) -> pd.Series:
    import scanpy as sc

    sc.tl.score_genes(
        scratch,
        genes,
        ctrl_size=options["ctrl_size"],
        n_bins=options["n_bins"],
        gene_pool=pool,
        random_state=options["random_state"],
        score_name=_SCRATCH,
        use_raw=False,
    )
    return scratch.obs.pop(_SCRATCH)
