"""Plotting: ``gv.pl``."""

from ._heatmap import mi_heatmap

__all__ = ["mi_heatmap"]
