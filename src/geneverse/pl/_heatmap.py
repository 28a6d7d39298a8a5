"""``gv.pl.mi_heatmap``: the signed MI of a set of genes, clustered into modules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse
from scipy.cluster import hierarchy

from .._data._genes import gene_positions, symbols_column
from .._utils import check_whole_number, doc_params
from ..get._network import module_column
from ..get._pairs import mi_matrix, strongest_abs_mi, used_genes
from ._figure import axes, doc_show, finished

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure

#: Above this many genes the tick labels would overlap: they are left out.
_MAX_LABELLED = 200
_COLORBAR_LABEL = "signed MI (bits)"
#: The ``var`` column of ``modules=True`` (``key_added`` of ``gv.tl.modules``).
_MODULE_KEY = "gv_module"
#: The colour of genes in no module in the module bars.
_NO_MODULE_COLOUR = "0.92"
#: Width of a module bar, as a share of the heatmap's side.
_BAR = 0.025
#: Font size of the module names beside the bar.
_MODULE_FONTSIZE = 9.0


@doc_params(doc_show=doc_show)
def mi_heatmap(
    adata: AnnData,
    genes: Sequence[str] | str | None = None,
    *,
    key: str = "gv",
    group: str | None = None,
    n_genes: int = 50,
    cluster: bool = True,
    gene_symbols: str | None = None,
    modules: bool | str = False,
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
        Order the genes by hierarchical clustering (within each module, with
        ``modules``). Otherwise a list of genes is shown in the given order, and selected
        genes by their strongest pair.
    gene_symbols
        Column of ``adata.var`` with the gene names to show (and to look ``genes`` up in),
        for data indexed by Ensembl IDs, such as ``"feature_name"`` in CELLxGENE files.
    modules
        Show the gene modules of :func:`geneverse.tl.modules` as colour bars along the top
        and the right side, with their names, and group the genes by module (largest
        first, genes in no module last, in light grey). ``True`` reads
        ``adata.var["gv_module"]``; a string names another ``var`` column of modules.
        With ``genes=None`` (or a column name), the genes shown are those of modules, the
        strongest of each module in turn, so that every module is shown.
    cmap
        A diverging colormap (name or :class:`~matplotlib.colors.Colormap`).
    {doc_show}

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` if ``return_fig=True``; otherwise the
    :class:`~matplotlib.axes.Axes` of the heatmap if the figure is not shown, else ``None``.
    The image is ``ax.images[0]``; its colour bar is labelled ``"signed MI (bits)"``.
    With ``modules``, the module bars are the first two child axes of ``ax`` (an image
    each, labelled ``"modules"``).

    Examples
    --------
    >>> import scanpy as sc
    >>> import geneverse as gv
    >>> adata = sc.datasets.pbmc68k_reduced()
    >>> gv.tl.coexpression(adata)
    >>> gv.pl.mi_heatmap(adata, n_genes=40)  # doctest: +SKIP
    >>> gv.pl.mi_heatmap(adata, ["CD79A", "CD79B", "MS4A1", "NKG7", "GNLY"])  # doctest: +SKIP
    >>> gv.tl.modules(adata)  # doctest: +SKIP
    >>> gv.pl.mi_heatmap(adata, modules=True)  # doctest: +SKIP
    """

    mi = mi_matrix(adata, key, group)  # a clear error first if coexpression has not run
    column = _module_column(adata, modules)
    positions, title = _select(
        adata, mi, genes, key=key, n_genes=n_genes, gene_symbols=gene_symbols, modules=column
    )
    if group is not None:
        title = f"{title} in {group}"
    values = _submatrix(mi, positions)
    order = _order(values, None if column is None else column.to_numpy()[positions], cluster)
    positions, values = positions[order], values[np.ix_(order, order)]
    labels = _labels(adata, positions, gene_symbols)

    fig, ax = axes(ax, _figsize(len(labels)))
    _draw(fig, ax, values, labels, cmap=cmap, title=title, modules=column is not None)
    if column is not None:
        _module_bars(ax, column, positions)

    return finished(fig, ax, show=show, return_fig=return_fig)


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


def _module_column(adata: AnnData, modules: bool | str) -> pd.Series | None:
    """The modules to draw: ``None``, or the categorical ``var`` column."""
    if isinstance(modules, bool | np.bool_):
        return module_column(adata, _MODULE_KEY) if modules else None
    if not isinstance(modules, str):
        raise TypeError(
            f"modules must be True, False or the name of a var column of modules, not {modules!r}."
        )
    return module_column(adata, modules)


def _order(values: np.ndarray, modules: np.ndarray | None, cluster: bool) -> np.ndarray:
    """The order of the shown genes: by module (in category order, no module last), and
    by clustering within each module (or within all, without modules)."""
    n = values.shape[0]
    if modules is None:
        return cluster_order(values) if cluster else np.arange(n)
    codes = pd.Categorical(modules).codes
    codes = np.where(codes < 0, codes.max(initial=0) + 1, codes)
    order = []
    for code in np.unique(codes):
        members = np.flatnonzero(codes == code)
        if cluster:
            members = members[cluster_order(values[np.ix_(members, members)])]
        order.append(members)
    return np.concatenate(order) if order else np.arange(0)


def _select(
    adata: AnnData,
    mi: np.ndarray | sparse.spmatrix,
    genes: Sequence[str] | str | None,
    *,
    key: str,
    n_genes: int,
    gene_symbols: str | None,
    modules: pd.Series | None = None,
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
        if modules is not None:
            chosen = _each_module_in_turn(candidates, score, modules, n_genes)
            title = f"Signed MI of {chosen.size} {what} of {_n_modules(modules, chosen)} modules"
            return chosen, title
        chosen = candidates[np.argsort(-score, kind="stable")[:n_genes]]
        return chosen, f"Signed MI of the {chosen.size} {what} with the strongest pairs"
    positions = gene_positions(adata, genes, gene_symbols=gene_symbols)
    _check_used(adata, positions, key, gene_symbols)
    return positions, f"Signed MI of {positions.size} genes"


def _each_module_in_turn(
    candidates: np.ndarray, score: np.ndarray, modules: pd.Series, n_genes: int
) -> np.ndarray:
    """Up to ``n_genes`` genes of modules: each module's strongest first, in turn."""
    codes = pd.Categorical(modules).codes[candidates]
    in_module = codes >= 0
    if not in_module.any():
        raise ValueError(
            f"No gene with MI is in a module of adata.var[{modules.name!r}]; run "
            "gv.tl.modules on this MI first, or pass modules=False."
        )
    candidates, score, codes = candidates[in_module], score[in_module], codes[in_module]
    by_strength = np.lexsort((candidates, -score))
    candidates, codes = candidates[by_strength], codes[by_strength]
    rank = np.empty(codes.size, dtype=np.int64)  # the gene's rank within its module
    for code in np.unique(codes):
        members = np.flatnonzero(codes == code)
        rank[members] = np.arange(members.size)
    return candidates[np.lexsort((codes, rank))][:n_genes]


def _n_modules(modules: pd.Series, positions: np.ndarray) -> int:
    return int(np.unique(pd.Categorical(modules).codes[positions]).size)


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


def _draw(
    fig: Figure,
    ax: Axes,
    values: np.ndarray,
    labels: list[str],
    *,
    cmap,
    title: str,
    modules: bool = False,
):
    """The image, symmetric colour scale, gene labels and colour bar (further right, and
    the title higher, when module bars take the top and the right side)."""
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
    ax.set_title(title, pad=_BAR_POINTS * 2 if modules else 6.0)
    pad = 0.09 if modules else 0.05
    fig.colorbar(image, ax=ax, shrink=0.5, aspect=25, pad=pad, label=_COLORBAR_LABEL)
    return image


#: Room for a module bar above the heatmap, in points (the title's pad).
_BAR_POINTS = 12.0


def _module_bars(ax: Axes, column: pd.Series, positions: np.ndarray) -> None:
    """Colour bars of the genes' modules along the top and the right side of the heatmap,
    with the modules' names beside the right one."""
    from matplotlib.colors import ListedColormap, to_rgba

    categories = list(column.cat.categories)
    codes = pd.Categorical(column).codes[positions]
    colours = [to_rgba(colour) for colour in _module_colours(len(categories))]
    colours.append(to_rgba(_NO_MODULE_COLOUR))
    index = np.where(codes < 0, len(categories), codes)
    colormap = ListedColormap(colours)
    n = positions.size
    bars = []
    for bounds, image in (
        ((0.0, 1.0 + _BAR / 2, 1.0, _BAR), index[None, :]),
        ((1.0 + _BAR / 2, 0.0, _BAR, 1.0), index[:, None]),
    ):
        bar = ax.inset_axes(bounds)
        bars.append(bar)
        bar.imshow(image, cmap=colormap, vmin=-0.5, vmax=len(colours) - 0.5, aspect="auto",
                   interpolation="nearest")  # fmt: skip
        bar.set_axis_off()
        bar.set_label("modules")
    right = bars[-1]
    # A module's name is written when its block is tall enough for it (the axes' height
    # before the layout is final is close enough to decide that).
    points_per_gene = ax.get_window_extent().height * 72 / ax.figure.dpi / max(n, 1)
    for code in np.unique(codes[codes >= 0]):
        members = np.flatnonzero(codes == code)
        if members.size * points_per_gene < _MODULE_FONTSIZE + 1:
            continue
        right.text(
            1.4, (members.min() + members.max()) / 2, categories[code],
            fontsize=_MODULE_FONTSIZE, va="center", ha="left",
            transform=right.get_yaxis_transform(),
        )  # fmt: skip


def _module_colours(n: int) -> list:
    """One colour per module: scanpy's default palettes (20, then 28, then 102 colours)."""
    from scanpy.plotting import palettes

    for palette in (palettes.default_20, palettes.default_28, palettes.default_102):
        if n <= len(palette):
            return list(palette[:n])
    return [palettes.default_102[i % len(palettes.default_102)] for i in range(n)]
