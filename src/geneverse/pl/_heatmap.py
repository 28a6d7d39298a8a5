"""``gv.pl.mi_heatmap``: the signed MI of a set of genes, clustered into modules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from anndata import AnnData
from scipy import sparse
from scipy.cluster import hierarchy

from .._data._genes import gene_positions, symbols_column
from .._utils import check_whole_number
from ..get._pairs import mi_matrix, strongest_abs_mi, used_genes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure

#: Above this many genes the tick labels would overlap: they are left out.
_MAX_LABELLED = 200
_COLORBAR_LABEL = "signed MI (bits)"


def mi_heatmap(
    adata: AnnData,
    genes: Sequence[str] | str | None = None,
    *,
    key: str = "gv",
    group: str | None = None,
    n_genes: int = 50,
    cluster: bool = True,
    gene_symbols: str | None = None,
    cmap: str | Colormap = "RdBu_r",
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Axes | Figure | None:
    """Heatmap of the signed mutual information between genes, clustered into modules.

    Shows the MI computed by :func:`geneverse.tl.coexpression`. Genes are ordered by
    hierarchical clustering (average linkage of their MI profiles, with optimal leaf
    ordering), so that modules of co-expressed genes appear as red blocks on the
    diagonal and genes expressed in different cells as blue. The colour scale is
    centred on 0 and symmetric. The diagonal (a gene with itself) is grey.

    Parameters
    ----------
    adata
        Annotated data matrix on which :func:`geneverse.tl.coexpression` was run.
    genes
        The genes to show: a list of names (of ``adata.var_names``, or of
        ``adata.var[gene_symbols]`` when ``gene_symbols`` is given), or the name of a
        boolean ``adata.var`` column such as ``"highly_variable"`` (then the ``n_genes``
        of its genes that have the strongest pairs). ``None``: the ``n_genes`` genes
        with the strongest pairs, that is with the largest ``|MI|`` with any other gene:
        the genes of the top pairs of :func:`geneverse.get.mi_pairs`.
    key
        The ``key_added`` of :func:`geneverse.tl.coexpression`.
    group
        With ``groupby`` in :func:`~geneverse.tl.coexpression`: show the MI of this category.
    n_genes
        How many genes to show when ``genes`` is ``None`` or a column name.
    cluster
        Order the genes by hierarchical clustering. Otherwise a list of genes is shown in
        the given order, and selected genes by their strongest pair.
    gene_symbols
        Column of ``adata.var`` with the gene names to show (and to look ``genes`` up in),
        for data indexed by Ensembl IDs, such as ``"feature_name"`` in CELLxGENE files.
    cmap
        A diverging colormap (name or :class:`~matplotlib.colors.Colormap`).
    ax
        Draw into these axes (the colour bar takes room from them). ``None``: a new figure.
    show
        Show the figure (:func:`matplotlib.pyplot.show`). ``None``: as
        ``scanpy.settings.autoshow``.
    return_fig
        Return the :class:`~matplotlib.figure.Figure` (and do not show it).

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` if ``return_fig=True``; otherwise the
    :class:`~matplotlib.axes.Axes` of the heatmap if the figure is not shown, else ``None``.
    The image is ``ax.images[0]``; its colour bar is labelled ``"signed MI (bits)"``.

    Examples
    --------
    >>> import scanpy as sc
    >>> import geneverse as gv
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> gv.tl.coexpression(adata)
    >>> gv.pl.mi_heatmap(adata, n_genes=40)  # doctest: +SKIP
    >>> gv.pl.mi_heatmap(adata, ["CD79A", "CD79B", "MS4A1", "NKG7", "GNLY"])  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    mi = mi_matrix(adata, key, group)  # a clear error first if coexpression has not run
    positions, title = _select(
        adata, mi, genes, key=key, n_genes=n_genes, gene_symbols=gene_symbols
    )
    if group is not None:
        title = f"{title} in {group}"
    values = _submatrix(mi, positions)
    if cluster:
        order = cluster_order(values)
        positions, values = positions[order], values[np.ix_(order, order)]
    labels = _labels(adata, positions, gene_symbols)

    if ax is None:
        fig, ax = plt.subplots(figsize=_figsize(len(labels)), layout="constrained")
    else:
        fig = ax.figure
    _draw(fig, ax, values, labels, cmap=cmap, title=title)

    if return_fig:
        return fig
    if _resolve_show(show):
        plt.show()
        return None
    return ax


def cluster_order(values: np.ndarray) -> np.ndarray:
    """Leaf order of average-linkage clustering of the genes' MI profiles.

    ``values`` is the symmetric genes × genes MI. A gene is most similar to itself, so its
    diagonal entry is taken as the largest MI before comparing profiles.
    """
    n = values.shape[0]
    if n < 3:
        return np.arange(n)
    profiles = values.astype(np.float64, copy=True)
    np.fill_diagonal(profiles, max(float(values.max()), 0.0))
    linkage = hierarchy.linkage(
        profiles, method="average", metric="euclidean", optimal_ordering=True
    )
    return hierarchy.leaves_list(linkage)


def _select(
    adata: AnnData,
    mi: np.ndarray | sparse.spmatrix,
    genes: Sequence[str] | str | None,
    *,
    key: str,
    n_genes: int,
    gene_symbols: str | None,
) -> tuple[np.ndarray, str]:
    """Positions (in ``adata.var_names``) of the genes to show, and the plot's title."""
    if gene_symbols is not None:
        symbols_column(adata, gene_symbols)
    if genes is None or isinstance(genes, str):
        check_whole_number("n_genes", n_genes, minimum=1, what="genes to show")
        candidates = used_genes(adata, key)
        what = "genes"
        if isinstance(genes, str):
            candidates = np.intersect1d(candidates, gene_positions(adata, genes))
            what = f"{genes} genes"
        score = strongest_abs_mi(mi)[candidates]
        chosen = candidates[np.argsort(-score, kind="stable")[:n_genes]]
        return chosen, f"Signed MI of the {chosen.size} {what} with the strongest pairs"
    positions = gene_positions(adata, genes, gene_symbols=gene_symbols)
    _check_used(adata, positions, key, gene_symbols)
    return positions, f"Signed MI of {positions.size} genes"


def _check_used(adata: AnnData, positions: np.ndarray, key: str, gene_symbols: str | None) -> None:
    unused = np.setdiff1d(positions, used_genes(adata, key))
    if unused.size:
        names = _labels(adata, unused, gene_symbols)
        raise ValueError(
            f"{unused.size} of the requested genes were not part of the MI computation "
            f"(adata.var['{key}_used'] is False), so they have no MI: {_shown(names)}. "
            "Drop them, or rerun gv.tl.coexpression with them included."
        )


def _shown(names: Sequence[str]) -> str:
    return ", ".join(map(repr, list(names)[:5])) + (" ..." if len(names) > 5 else "")


def _submatrix(mi: np.ndarray | sparse.spmatrix, positions: np.ndarray) -> np.ndarray:
    if sparse.issparse(mi):
        return sparse.csr_matrix(mi)[positions][:, positions].toarray().astype(np.float64)
    return np.asarray(mi[np.ix_(positions, positions)], dtype=np.float64)


def _labels(adata: AnnData, positions: np.ndarray, gene_symbols: str | None) -> list[str]:
    names = adata.var_names if gene_symbols is None else adata.var[gene_symbols]
    return [str(name) for name in np.asarray(names)[positions]]


def _figsize(n_genes: int) -> tuple[float, float]:
    side = float(np.clip(0.17 * n_genes + 2.0, 4.0, 14.0))
    return side + 1.2, side


def _fontsize(n_genes: int) -> float:
    return float(np.clip(350 / max(n_genes, 1), 4.0, 10.0))


def _draw(fig: Figure, ax: Axes, values: np.ndarray, labels: list[str], *, cmap, title: str):
    """The image, symmetric colour scale, gene labels and colour bar."""
    from matplotlib import colormaps
    from matplotlib.colors import Colormap

    n = len(labels)
    off_diagonal = ~np.eye(n, dtype=bool)
    vmax = float(np.abs(values[off_diagonal]).max()) if n > 1 else 0.0
    vmax = vmax if vmax > 0 else 1.0
    colormap = cmap if isinstance(cmap, Colormap) else colormaps[cmap]
    image = ax.imshow(
        np.ma.masked_array(values, mask=~off_diagonal),
        cmap=colormap.with_extremes(bad="0.85"),
        vmin=-vmax,
        vmax=vmax,
        interpolation="nearest",
    )
    ticks = np.arange(n) if n <= _MAX_LABELLED else []
    shown = labels if n <= _MAX_LABELLED else []
    ax.set_xticks(ticks, shown, rotation=90, fontsize=_fontsize(n))
    ax.set_yticks(ticks, shown, fontsize=_fontsize(n))
    ax.tick_params(length=2)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, shrink=0.5, aspect=25, label=_COLORBAR_LABEL)
    return image


def _resolve_show(show: bool | None) -> bool:
    """scanpy's rule: ``show=None`` follows ``scanpy.settings.autoshow``."""
    if show is not None:
        return bool(show)
    from scanpy import settings

    return bool(settings.autoshow)
