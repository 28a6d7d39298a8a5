"""Run the tutorial and save its figures and printed tables into docs/_static/.

The tutorial (tutorial.md) shows the code between the ``# [name]`` and ``# [name-end]``
markers of this file, so what the page shows is what made the figures. Run it from the
repository root after changing the tutorial or the plots::

    python docs/make_figures.py

It needs igraph (``pip install -e ".[doc]"``) for the Leiden clustering.
"""

from __future__ import annotations

import io
import os
from contextlib import redirect_stdout, suppress
from pathlib import Path

import anndata as ad
import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import scanpy as sc
from scipy import sparse

import geneverse as gv
from geneverse.cli import main

STATIC = Path(__file__).resolve().parent / "_static"
DPI = 80

matplotlib.use("Agg")
sc.settings.autoshow = False  # the plots are saved below, not shown
pd.set_option("display.width", 100)
STATIC.mkdir(exist_ok=True)


def save_figure(name: str) -> None:
    """Save the current figure (the one the tutorial's last plot drew) and close it."""
    plt.gcf().savefig(STATIC / name, dpi=DPI, bbox_inches="tight")
    plt.close("all")


def save_text(name: str, text: str) -> None:
    (STATIC / name).write_text(text.rstrip() + "\n")


# [load]
adata = sc.datasets.pbmc68k_reduced()  # 700 PBMCs; .raw holds log-normalized values
# [load-end]

# [filter]
gv.pp.filter_entropy(adata, min_entropy=1.0)
# [filter-end]

# [coexpression]
gv.tl.coexpression(adata)  # reads adata.raw, as scanpy does when it exists
# [coexpression-end]
save_text("tutorial_adata.txt", repr(adata))

# [heatmap]
gv.pl.mi_heatmap(adata, n_genes=50)
# [heatmap-end]
save_figure("tutorial_heatmap.png")

# [pairs]
pairs = gv.get.mi_pairs(adata, n=10)
# [pairs-end]
save_text("tutorial_pairs.txt", pairs.to_string())

# [pairs-gene]
cd79a = gv.get.mi_pairs(adata, gene="CD79A", n=8)
# [pairs-gene-end]
save_text("tutorial_pairs_cd79a.txt", cd79a.to_string())

# [graph]
strong = gv.get.mi_pairs(adata, n=1500)
strong = strong[strong["mi"] > 0]  # co-expression: positive MI only
names = pd.Index(pd.unique(strong[["gene_a", "gene_b"]].to_numpy().ravel()))
a, b = names.get_indexer(strong["gene_a"]), names.get_indexer(strong["gene_b"])
graph = sparse.csr_matrix((strong["mi"], (a, b)), shape=(names.size, names.size))
graph = graph + graph.T  # symmetric: an undirected graph of genes

genes = ad.AnnData(obs=pd.DataFrame(index=names))  # one observation per gene
genes.obsp["connectivities"] = graph
sc.tl.leiden(
    genes,
    adjacency=graph,
    flavor="igraph",
    n_iterations=-1,
    directed=False,
    key_added="module",
)
modules = genes.obs.groupby("module", observed=True).groups
# [graph-end]
sizes = genes.obs["module"].value_counts()
save_text(
    "tutorial_modules.txt",
    "\n".join(
        f"module {module:>2} ({sizes[module]:>2} genes): " + ", ".join(modules[module][:8])
        for module in sizes.index
    ),
)

# [module-heatmap]
largest = genes.obs["module"].value_counts().index[:6]
shown = [gene for module in largest for gene in modules[module][:8]]
gv.pl.mi_heatmap(adata, shown, cluster=False)
# [module-heatmap-end]
save_figure("tutorial_modules.png")

# [scores]
for module in largest:
    sc.tl.score_genes(adata, list(modules[module]), score_name=f"module {module}")
sc.pl.umap(adata, color=[*(f"module {m}" for m in largest), "bulk_labels"], ncols=4)
# [scores-end]
save_figure("tutorial_umap.png")


def command_help(*args: str) -> str:
    """What ``geneverse ARGS --help`` prints, 88 columns wide."""
    os.environ["COLUMNS"] = "88"
    with redirect_stdout(io.StringIO()) as buffer, suppress(SystemExit):
        main([*args, "--help"])
    return buffer.getvalue()


for command in ("demo", "coexpression", "info"):
    save_text(f"cli_{command}.txt", command_help(command))
print(f"wrote the tutorial's figures and tables to {STATIC}")
