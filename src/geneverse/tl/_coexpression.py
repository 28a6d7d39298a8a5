"""``gv.tl.coexpression``: signed mutual information between every pair of genes."""

from __future__ import annotations

from typing import Any

import numpy as np
from anndata import AnnData
from scipy import sparse

from .. import _logging as logg
from .._binning import bin_genes
from .._matrix import GeneSelection, Selection, select_matrix
from .._settings import resolve_n_jobs, settings
from .._validate import check_flag, check_key, check_n_bins, check_values
from ..kernels import BinnedGenes, Kernel, resolve_backend


def coexpression(
    adata: AnnData,
    *,
    layer: str | None = None,
    use_raw: bool | None = None,
    genes: GeneSelection = None,
    n_bins: int = 10,
    signed: bool = True,
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
    n_bins
        Most bins of a gene's nonzero values (1–255).
    signed
        Multiply each MI by the sign of the genes' Pearson correlation.
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
    ``adata.layers["gv_bins"]`` : :class:`scipy.sparse.csr_matrix` (``uint8``)
        The bin of every value (0 = not expressed; columns of unused genes are empty).
    ``adata.var["gv_n_bins"]`` : :class:`pandas.Series` (``int``)
        Bins of each gene, counting the zero bin (0 for unused genes).
    ``adata.var["gv_used"]`` : :class:`pandas.Series` (``bool``)
        The genes that entered the computation.
    ``adata.uns["gv"]`` : :class:`dict`
        ``"params"`` (every argument), ``"backend"`` (what ran) and ``"version"``.

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
    check_flag("signed", signed)
    check_flag("copy", copy)
    check_key(key_added)
    n_jobs = resolve_n_jobs(n_jobs)
    kernel_class = resolve_backend(settings.backend if backend == "auto" else backend, device)
    selection = select_matrix(adata, layer=layer, use_raw=use_raw, genes=genes)
    check_values(
        selection.matrix,
        source=selection.source,
        gene_names=adata.var_names[selection.used],
        cell_names=adata.obs_names,
    )

    binned = bin_genes(selection.matrix, n_bins)
    kernel = kernel_class(binned, signed=signed, n_jobs=n_jobs, device=device)
    logg.info(
        f"    {binned.n_genes} genes × {binned.n_cells} cells, backend {kernel.name!r}, "
        f"{n_jobs} threads"
    )
    mi = mutual_information(kernel)

    if copy:
        adata = adata.copy()
    params = {
        "layer": layer,
        "use_raw": selection.use_raw,
        "genes": _genes_param(adata, genes, selection),
        "n_bins": n_bins,
        "signed": signed,
        "backend": backend,
        "device": device,
        "n_jobs": n_jobs,
    }
    _store(adata, key_added, selection, binned, mi, params, kernel.name)
    logg.info("    finished", since=started)
    logg.hint(f"added 'varp[{key_added}_mi]', 'layers[{key_added}_bins]', 'uns[{key_added}]'")
    return adata if copy else None


def mutual_information(kernel: Kernel) -> np.ndarray:
    """The full symmetric MI matrix, assembled from the kernel's row blocks."""
    n_genes = kernel.data.n_genes
    step = max(1, kernel.preferred_block_rows)
    starts = range(0, n_genes, step)
    mi = np.zeros((n_genes, n_genes), dtype=np.float32)
    for start in logg.progress(starts, total=len(starts), description="gene blocks"):
        stop = min(n_genes, start + step)
        block = kernel.row_block(start, stop)
        mi[start:stop, start:] = block
        mi[start:, start:stop] = block.T
    return mi


def _genes_param(adata: AnnData, genes: GeneSelection, selection: Selection) -> Any:
    """``genes`` as it can be stored in an .h5ad file: its name, or the names selected."""
    if genes is None or isinstance(genes, str):
        return genes
    return np.asarray(adata.var_names[selection.used], dtype=str)


def _store(
    adata: AnnData,
    key: str,
    selection: Selection,
    binned: BinnedGenes,
    mi: np.ndarray,
    params: dict[str, Any],
    backend: str,
) -> None:
    """Write every result into ``adata``, all at once, at the end."""
    from .. import __version__

    used = selection.used
    positions = np.flatnonzero(used)
    bins = sparse.csr_matrix(
        (binned.bins, positions[binned.genes], binned.indptr), shape=adata.shape, dtype=np.uint8
    )
    n_bins = np.zeros(adata.n_vars, dtype=np.int32)
    n_bins[used] = binned.n_bins
    if used.all():
        full = mi
    else:
        full = np.zeros((adata.n_vars, adata.n_vars), dtype=np.float32)
        full[np.ix_(positions, positions)] = mi

    adata.layers[f"{key}_bins"] = bins
    adata.varp[f"{key}_mi"] = full
    adata.var[f"{key}_n_bins"] = n_bins
    adata.var[f"{key}_used"] = used
    adata.uns[key] = {"params": params, "backend": backend, "version": __version__}
