"""Preprocessing: ``gv.pp``."""

from ._entropy import filter_entropy

__all__ = ["filter_entropy"]
