"""Plotting: ``gv.pl``."""

from ._differential import differential
from ._heatmap import mi_heatmap
from ._network import network

__all__ = ["differential", "mi_heatmap", "network"]
