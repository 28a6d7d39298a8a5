"""Sphinx configuration of the geneverse documentation.

Build with ``sphinx-build -W -b html docs docs/_build/html`` (no warnings allowed).
The tutorial's figures come from ``python docs/make_figures.py``.
"""

from __future__ import annotations

from datetime import date
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as installed_version

project = "geneverse"
author = "The geneverse developers"
copyright = f"{date.today().year}, {author}"
try:
    release = installed_version("geneverse")
except PackageNotFoundError:  # building from a source tree that was never installed
    release = "unknown"
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "generated/*.md"]

# MyST: ::: fences, definition lists, ``{include}`` of the repository's Markdown files.
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# API reference: one generated page per function, numpy-style docstrings as in scanpy.
autosummary_generate = True
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_param = True
napoleon_use_ivar = True
# Returns sections list what is stored, scanpy-style ("``adata.varp["gv_mi"]`` : type" and an
# indented description): render them as written, a definition list, not as napoleon fields.
napoleon_custom_sections = [("Params", "Parameters"), "Returns"]

html_theme = "sphinx_book_theme"
html_title = f"geneverse {release}"
html_static_path = ["_static"]
html_theme_options = {"show_toc_level": 2}
html_show_sourcelink = False
