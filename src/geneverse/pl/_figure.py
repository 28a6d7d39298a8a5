"""What every ``gv.pl`` function shares: its axes, and scanpy's ``show`` / ``return_fig``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

doc_show = """\
ax
    Draw into these axes. ``None``: a new figure.
show
    Show the figure (:func:`matplotlib.pyplot.show`). ``None``: as
    ``scanpy.settings.autoshow``.
return_fig
    Return the :class:`~matplotlib.figure.Figure` (and do not show it)."""


def axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """``ax`` and its figure, or a new figure of ``figsize`` (constrained layout)."""
    import matplotlib.pyplot as plt

    if ax is None:
        return plt.subplots(figsize=figsize, layout="constrained")
    return ax.figure, ax


def finished(fig: Figure, ax: Axes, *, show: bool | None, return_fig: bool):
    """scanpy's ending: the figure with ``return_fig``; else shown (``None``), or the axes."""
    if return_fig:
        return fig
    if _resolve_show(show):
        import matplotlib.pyplot as plt

        plt.show()
        return None
    return ax


def _resolve_show(show: bool | None) -> bool:
    """scanpy's rule: ``show=None`` follows ``scanpy.settings.autoshow``."""
    if show is not None:
        return bool(show)
    from scanpy import settings

    return bool(settings.autoshow)
