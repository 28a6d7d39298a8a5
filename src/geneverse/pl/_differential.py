"""``gv.pl.differential``: each pair's MI in the reference against its MI in the group."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from .._utils import check_number, check_whole_number, doc_params
from ..get._network import DMI, edge_table, filtered_edges, pair_score, values_at
from ._figure import axes, doc_show, finished

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Colours of pairs that gain MI in the group, lose it, or do not change significantly.
GAIN, LOSS, SAME = "#b2182b", "#2166ac", "0.75"


@doc_params(doc_show=doc_show)
def differential(
    adata: AnnData,
    key: str = "gv_diff",
    *,
    n_labels: int = 10,
    max_q: float = 0.05,
    gene_symbols: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Axes | Figure | None:
    """Scatter of each gene pair's MI in the reference (x) against its MI in the group (y).

    Shows the result of :func:`geneverse.tl.differential_coexpression`. Pairs on the
    diagonal have the same MI in both groups; pairs above it gain MI in the group (red),
    pairs below it lose MI (blue), coloured when their q-value is at most ``max_q`` (grey
    otherwise, or every pair when the run had no permutations). The ``n_labels`` most
    changed significant pairs (largest ``|dmi|``) are labelled.

    Parameters
    ----------
    adata
        Annotated data matrix on which :func:`~geneverse.tl.differential_coexpression` ran.
    key
        Its ``key_added``.
    n_labels
        How many of the most changed pairs to label (0: none).
    max_q
        The q-value up to which a pair's change counts as significant (coloured).
    gene_symbols
        Column of ``adata.var`` with the gene names to write in the labels.
    {doc_show}

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` if ``return_fig=True``; otherwise the
    :class:`~matplotlib.axes.Axes` if the figure is not shown, else ``None``.

    Examples
    --------
    >>> gv.tl.differential_coexpression(adata, "bulk_labels", group="CD14+ Monocyte",
    ...                                 reference="Dendritic")  # doctest: +SKIP
    >>> gv.pl.differential(adata)  # doctest: +SKIP
    """

    pairs, names = _pairs(adata, key)
    n_labels = check_whole_number("n_labels", n_labels, minimum=0, what="labels")
    max_q = check_number("max_q", max_q, what="a q-value bound")
    significant = (
        pairs["qval"].to_numpy() <= max_q if "qval" in pairs else np.zeros(len(pairs), dtype=bool)
    )
    fig, ax = axes(ax, (5.2, 5.0))
    _scatter(ax, pairs, significant, names, max_q="qval" in pairs and max_q)
    labelled = pairs[significant if "qval" in pairs else np.ones(len(pairs), dtype=bool)]
    _label(ax, labelled.head(n_labels), adata, gene_symbols)
    return finished(fig, ax, show=show, return_fig=return_fig)


def _pairs(adata: AnnData, key: str) -> tuple[pd.DataFrame, tuple[str, str]]:
    """Every changed pair (strongest ``|dmi|`` first) with its MI in each group."""
    if not isinstance(key, str) or f"{key}_{DMI}" not in adata.varp:
        raise ValueError(
            f"key={key!r} holds no differential co-expression (no adata.varp['{key}_dmi']); "
            "run gv.tl.differential_coexpression(adata, groupby, group=..., reference=..., "
            f"key_added={key!r}) first."
        )
    group, reference = (str(name) for name in np.asarray(adata.uns[key]["groups"]).ravel())
    stored, edges = filtered_edges(adata, key)
    pairs = edge_table(adata, stored, edges)
    rows, cols = edges.ends()
    for name, column in ((group, "mi_group"), (reference, "mi_reference")):
        matrix = pair_score(adata, key, group=name).values
        pairs[column] = values_at(matrix, rows, cols, fill=0.0)
    return pairs, (group, reference)


def _scatter(ax: Axes, pairs: pd.DataFrame, significant, names, *, max_q) -> None:
    group, reference = names
    x, y = pairs["mi_reference"].to_numpy(), pairs["mi_group"].to_numpy()
    gain = significant & (pairs[DMI].to_numpy() > 0)
    loss = significant & (pairs[DMI].to_numpy() < 0)
    rest = ~(gain | loss)
    kinds = (
        (rest, SAME, "no significant change" if max_q else "pairs"),
        (gain, GAIN, f"more MI in {group}"),
        (loss, LOSS, f"less MI in {group}"),
    )
    for mask, colour, label in kinds:
        if mask.any():
            ax.scatter(x[mask], y[mask], s=4, c=colour, lw=0, rasterized=True,
                       label=f"{label} ({int(mask.sum()):,})")  # fmt: skip
    low = float(min(x.min(initial=0), y.min(initial=0)))
    high = float(max(x.max(initial=0), y.max(initial=0)))
    margin = 0.05 * (high - low or 1.0)
    limits = (low - margin, high + margin)
    ax.plot(limits, limits, ls="--", lw=0.8, c="0.3", zorder=0)
    ax.set_xlim(limits)
    ax.set_ylim(limits)
    ax.set_aspect("equal")
    ax.set_xlabel(f"signed MI in {reference} (bits)")
    ax.set_ylabel(f"signed MI in {group} (bits)")
    title = f"Differential co-expression, {group} vs {reference}"
    ax.set_title(title + (f"\n(coloured: q ≤ {max_q:g})" if max_q else ""), fontsize=10)
    ax.legend(
        loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=8, markerscale=3,
        frameon=False, ncols=1,
    )  # fmt: skip


def _label(ax: Axes, pairs: pd.DataFrame, adata: AnnData, gene_symbols: str | None) -> None:
    """Label the pairs in a column right of the axes, in the order of their points'
    heights, each joined to its point by a thin line."""
    if pairs.empty:
        return
    names = (
        pd.Series(adata.var_names, index=adata.var_names)
        if gene_symbols is None
        else adata.var[gene_symbols].astype(str)
    )
    points = np.column_stack([pairs["mi_reference"], pairs["mi_group"]])
    heights = (ax.transData + ax.transAxes.inverted()).transform(points)[:, 1]
    axes_points = ax.get_window_extent().height * 72.0 / ax.figure.dpi
    placed = spread(heights, gap=_LABEL_FONTSIZE * 1.4 / max(axes_points, 1.0))
    for row, point, y in zip(pairs.itertuples(), points, placed, strict=True):
        ax.annotate(
            f"{names[row.source]}–{names[row.target]}",
            xy=tuple(point),
            xytext=(1.03, y),
            textcoords="axes fraction",
            fontsize=_LABEL_FONTSIZE,
            va="center",
            ha="left",
            arrowprops={"arrowstyle": "-", "lw": 0.4, "color": "0.45", "shrinkA": 1, "shrinkB": 1},
        )


#: Font size of the pair labels.
_LABEL_FONTSIZE = 7.0


def spread(heights: np.ndarray, *, gap: float) -> np.ndarray:
    """Heights (axes fraction) at least ``gap`` apart, in the order of ``heights``, as
    close to them as that allows, within ``[0, 1]`` when they fit."""
    order = np.argsort(heights, kind="stable")
    placed = np.clip(heights[order].astype(np.float64), 0.0, 1.0)
    for i in range(1, placed.size):
        placed[i] = max(placed[i], placed[i - 1] + gap)
    overflow = placed[-1] - 1.0
    if overflow > 0:
        placed -= overflow
        for i in range(placed.size - 2, -1, -1):  # push down, then keep the gaps from below
            placed[i] = min(placed[i], placed[i + 1] - gap)
        placed -= min(0.0, placed[0])
    out = np.empty_like(placed)
    out[order] = placed
    return out
