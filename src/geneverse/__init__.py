"""geneverse: exact, fast signed mutual information between every pair of genes.

Use it as ``import geneverse as gv``, between other scverse tools::

    gv.pp.filter_entropy(adata)
    gv.tl.coexpression(adata)
    gv.pl.mi_heatmap(adata)
"""

from importlib.metadata import PackageNotFoundError, version

from . import get, pl, pp, tl
from ._settings import settings
from ._versions import print_versions
from .kernels import backends

try:
    __version__ = version("geneverse")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "backends", "get", "pl", "pp", "print_versions", "settings", "tl"]
