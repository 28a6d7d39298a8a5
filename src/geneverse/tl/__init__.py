"""Tools: ``gv.tl``."""

from ._coexpression import coexpression

__all__ = ["coexpression"]
