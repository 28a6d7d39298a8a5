"""Getters: ``gv.get``, results of geneverse as tidy pandas objects."""

from ._network import network, to_igraph, to_networkx
from ._pairs import mi_pairs

__all__ = ["mi_pairs", "network", "to_igraph", "to_networkx"]
