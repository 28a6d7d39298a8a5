"""Tools: ``gv.tl``."""

from ._coexpression import coexpression
from ._differential import differential_coexpression
from ._module_scores import module_scores
from ._modules import modules

__all__ = ["coexpression", "differential_coexpression", "module_scores", "modules"]
