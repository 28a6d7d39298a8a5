"""``gv.pp.filter_entropy``: keep the genes whose expression carries information."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from .. import _logging as logg
from .._data._binning import ValueRuns
from .._data._chunked import chunk_source, chunked_value_runs
from .._data._matrix import select_matrix
from .._utils import check_flag, check_key, check_number


def filter_entropy(
    adata: AnnData,
    min_entropy: float = 1.0,
    *,
    layer: str | None = None,
    use_raw: bool | None = None,
    inplace: bool = True,
    key_added: str = "entropy",
) -> tuple[np.ndarray, np.ndarray] | None:
    """Keep the genes whose nonzero values have an entropy above ``min_entropy``.

    A gene's entropy is the Shannon entropy, in nats, of the counts of its distinct
    values ``> 0`` (as :func:`scipy.stats.entropy` of those counts). A gene expressed at
    a single level, or in few cells at few levels, carries little information for MI.
    This is GeneVector's ``quality_control(adata, entropy_threshold=1.0)``, used in place
    of highly-variable-gene selection.

    Parameters
    ----------
    adata
        Annotated data matrix (cells × genes).
    min_entropy
        Keep genes with entropy strictly greater than this (nats).
    layer
        Use ``adata.layers[layer]`` instead of ``adata.X``.
    use_raw
        Use ``adata.raw``; ``None``: when it exists and no ``layer`` is given.
    inplace
        Subset ``adata`` to the kept genes and store the entropy, or return them.
    key_added
        Name of the ``adata.var`` column for the entropy.

    Returns
    -------
    ``None`` when ``inplace=True``: ``adata`` is subset to the kept genes and gets
    ``adata.var[key_added]`` (float, nats). Otherwise ``(mask, entropy)``: the boolean mask
    of kept genes and every gene's entropy, and ``adata`` is not changed.

    Examples
    --------
    >>> import scanpy as sc
    >>> import geneverse as gv
    >>> adata = sc.datasets.pbmc68k_reduced().raw.to_adata()
    >>> gv.pp.filter_entropy(adata, min_entropy=1.0)
    """
    min_entropy = check_number("min_entropy", min_entropy, what="nats")
    inplace = check_flag("inplace", inplace)
    key_added = check_key("key_added", key_added)
    selection = select_matrix(adata, layer=layer, use_raw=use_raw)
    source = chunk_source(selection.values, selection.positions, selection.source)
    (runs,), _ = chunked_value_runs(source, adata.var_names, adata.obs_names)
    entropy = entropy_of_runs(runs)
    keep = entropy > min_entropy
    if not inplace:
        return keep, entropy
    logg.info(
        f"filtered out {int((~keep).sum())} genes with entropy <= {min_entropy} nats, "
        f"kept {int(keep.sum())}"
    )
    adata.var[key_added] = entropy
    adata._inplace_subset_var(keep)
    return None


def entropy_of_runs(runs: ValueRuns) -> np.ndarray:
    """Entropy (nats) of the counts of each gene's distinct values > 0; 0 when none."""
    counts = runs.counts.astype(np.float64)
    total = runs.n_expressed()
    clogc = np.bincount(runs.gene_of_run(), weights=counts * np.log(counts), minlength=runs.n_genes)
    safe_total = np.maximum(total, 1.0)
    return np.where(total > 0, np.log(safe_total) - clogc / safe_total, 0.0)
