"""``gv.pl.network``: the strongest edges of a gene module (or of all genes), drawn."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from .._data._genes import gene_positions
from .._utils import check_whole_number, doc_params
from ..get._network import module_column, to_networkx
from ..get._network import network as edge_list
from ._differential import GAIN, LOSS
from ._figure import axes, doc_show, finished
from ._heatmap import _module_colours

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Edge widths (points) of the weakest and the strongest edge drawn.
_WIDTHS = (0.6, 4.0)
_NO_MODULE_COLOUR = "0.85"


@doc_params(doc_show=doc_show)
def network(
    adata: AnnData,
    key: str = "gv",
    *,
    module: str | Sequence[str] | None = None,
    module_key: str = "gv_module",
    n_edges: int = 50,
    score: str | None = None,
    max_q: float | None = None,
    gene_symbols: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool = False,
) -> Axes | Figure | None:
    """The strongest edges of a gene module, drawn as a graph.

    The ``n_edges`` edges with the largest ``|score|`` between genes of ``module`` (of all
    genes without it), as :func:`geneverse.get.network` lists them, placed by a
    force-directed layout (:func:`networkx.kamada_kawai_layout`, each connected component
    on its own). An edge's colour is its sign (red: genes expressed together, or for a
    differential key gaining MI; blue: the opposite), its width its ``|score|``; genes
    are coloured by module, as in :func:`~geneverse.pl.mi_heatmap`.

    Parameters
    ----------
    adata
        Annotated data matrix with a stored pair score.
    key
        The ``key_added`` of :func:`~geneverse.tl.coexpression` (or of
        :func:`~geneverse.tl.differential_coexpression`).
    module
        The module (or modules) whose edges to draw, of ``adata.var[module_key]``.
        ``None``: the strongest edges of all genes.
    module_key
        The ``var`` column of modules (``key_added`` of :func:`~geneverse.tl.modules`).
    n_edges
        How many edges to draw, the strongest first.
    score
        Which score of ``key`` (see :func:`~geneverse.get.network`).
    max_q
        Only edges with a q-value ``<= max_q`` (see :func:`~geneverse.get.network`).
    gene_symbols
        Column of ``adata.var`` with the gene names to write on the vertices.
    {doc_show}

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` if ``return_fig=True``; otherwise the
    :class:`~matplotlib.axes.Axes` if the figure is not shown, else ``None``.

    Examples
    --------
    >>> gv.tl.modules(adata)  # doctest: +SKIP
    >>> gv.pl.network(adata, module="M3", n_edges=40)  # doctest: +SKIP
    """

    n_edges = check_whole_number("n_edges", n_edges, minimum=1, what="edges")
    edges = edge_list(
        adata, key, score=score, max_q=max_q, module=module, module_key=module_key
    ).head(n_edges)
    if edges.empty:
        where = "" if module is None else f" between genes of module {module!r}"
        raise ValueError(
            f"No edge{where} to draw under key={key!r}: every score is 0 there, or max_q "
            "removed them all. Choose another module or a larger max_q."
        )
    fig, ax = axes(ax, (6.0, 5.5))
    _draw(ax, edges, adata, module_key, gene_symbols)
    what = "all genes" if module is None else f"module {_shown(module)}"
    ax.set_title(f"The {len(edges)} strongest edges of {what}", fontsize=10)
    return finished(fig, ax, show=show, return_fig=return_fig)


def _shown(module: str | Sequence[str]) -> str:
    return module if isinstance(module, str) else ", ".join(map(str, module))


def _draw(ax: Axes, edges: pd.DataFrame, adata, module_key, gene_symbols) -> None:
    import networkx as nx
    from matplotlib.lines import Line2D

    graph = to_networkx(edges)
    weights = np.abs(np.array([w for _, _, w in graph.edges(data="weight")]))
    layout = packed_layout(graph)
    low, high = float(weights.min()), float(weights.max())
    share = (weights - low) / (high - low) if high > low else np.ones_like(weights)
    signs = np.sign([w for _, _, w in graph.edges(data="weight")])
    nx.draw_networkx_edges(
        graph, layout, ax=ax, width=_WIDTHS[0] + share * (_WIDTHS[1] - _WIDTHS[0]),
        edge_color=[GAIN if s > 0 else LOSS for s in signs], alpha=0.7,
    )  # fmt: skip
    nodes = list(graph.nodes())
    colours = _node_colours(adata, nodes, module_key)
    nx.draw_networkx_nodes(
        graph, layout, ax=ax, node_size=90, node_color=[_lighter(c) for c in colours],
        edgecolors=colours, linewidths=1.5,
    )  # fmt: skip
    names = adata.var[gene_symbols].astype(str) if gene_symbols else None
    labels = {node: (node if names is None else names[node]) for node in nodes}
    nx.draw_networkx_labels(
        graph, {node: (x, y) for node, (x, y) in layout.items()}, labels=labels, ax=ax,
        font_size=7, verticalalignment="bottom",
        bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.7},
    )  # fmt: skip
    handles = [
        Line2D([], [], color=colour, lw=2, label=label)
        for colour, label, present in (
            (GAIN, "positive", (signs > 0).any()),
            (LOSS, "negative", (signs < 0).any()),
        )
        if present
    ]
    ax.legend(handles=handles, loc="lower left", fontsize=8, frameon=False, title="score")
    ax.margins(0.08)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_axis_off()


def packed_layout(graph) -> dict:
    """A force-directed layout of each connected component (Kamada–Kawai, unweighted, so
    that the genes are evenly spaced; the edges' widths show their strength), the
    components side by side, largest first, each in a square whose side grows with the
    square root of its genes (one layout of all would push them far apart)."""
    import networkx as nx

    components = sorted(nx.connected_components(graph), key=lambda c: (-len(c), min(c)))
    sides = [np.sqrt(len(component)) for component in components]
    row_width = max(sum(sides) / max(1.0, np.sqrt(len(components))), 1.6 * sides[0])
    layout, x, y, row_height = {}, 0.0, 0.0, 0.0
    for component, side in zip(components, sides, strict=True):
        if x > 0 and x + side > row_width * 1.01:
            x, y, row_height = 0.0, y - row_height * 1.15, 0.0
        sub = graph.subgraph(component)
        if len(component) > 2:
            points = nx.kamada_kawai_layout(sub, weight=None)
        else:
            points = {node: (i - 0.5, 0.0) for i, node in enumerate(sorted(component))}
        coords = np.array(list(points.values()), dtype=float)
        coords -= coords.min(axis=0)
        coords /= max(float(coords.max()), 1e-12)
        for node, (u, v) in zip(points, coords, strict=True):
            layout[node] = (x + u * side * 0.85, y - (1 - v) * side * 0.85)
        x += side * 1.15
        row_height = max(row_height, side)
    return layout


def _lighter(colour, share: float = 0.55) -> tuple[float, ...]:
    """``colour`` mixed with ``share`` of white."""
    from matplotlib.colors import to_rgb

    return tuple(c + (1.0 - c) * share for c in to_rgb(colour))


def _node_colours(adata: AnnData, nodes: list[str], module_key: str) -> list:
    """Each gene's module colour (those of the heatmap's module bars), grey without one."""
    if module_key not in adata.var.columns:
        return [_NO_MODULE_COLOUR] * len(nodes)
    column = module_column(adata, module_key)
    colours = _module_colours(len(column.cat.categories))
    codes = pd.Categorical(column).codes[gene_positions(adata, nodes)]
    return [colours[code] if code >= 0 else _NO_MODULE_COLOUR for code in codes]
