"""Getters: ``gv.get``, results of geneverse as tidy pandas objects."""

from ._pairs import mi_pairs

__all__ = ["mi_pairs"]
