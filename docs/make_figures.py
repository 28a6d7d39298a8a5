"""Run the tutorial and save its figures and printed tables into docs/_static/.

The tutorial (tutorial.md) shows the code between the ``# [name]`` and ``# [name-end]``
markers of this file, so what the page shows is what made the figures. Run it from the
repository root after changing the tutorial or the plots::

    python docs/make_figures.py

It takes about a minute with the Rust backend (the differential run's 1,000
permutations), several with the NumPy one.
"""

from __future__ import annotations

import io
import os
import tempfile
from contextlib import redirect_stdout, suppress
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import networkx as nx
import pandas as pd
import scanpy as sc

import geneverse as gv
from geneverse.cli import main

STATIC = Path(__file__).resolve().parent / "_static"
DPI = 72

matplotlib.use("Agg")
sc.settings.autoshow = False  # the plots are saved below, not shown
pd.set_option("display.width", 100)
STATIC.mkdir(exist_ok=True)


def save_figure(name: str) -> None:
    """Save the current figure (the one the tutorial's last plot drew) and close it, as a
    PNG of at most 256 colours (a third of the bytes, the same picture)."""
    from PIL import Image

    path = STATIC / name
    plt.gcf().savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close("all")
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def hub_genes(adata, module: str, n: int) -> list[str]:
    """The ``n`` genes of ``module`` with the largest sum of positive MI to the others."""
    edges = gv.get.network(adata, module=module, sign=1)
    strength = (
        pd.concat([edges.groupby("source")["mi"].sum(), edges.groupby("target")["mi"].sum()])
        .groupby(level=0)
        .sum()
    )
    return list(strength.sort_values(ascending=False).index[:n])


def save_text(name: str, text: str) -> None:
    (STATIC / name).write_text(text.rstrip() + "\n")


# [load]
adata = sc.datasets.pbmc68k_reduced()  # 700 PBMCs; .raw holds log-normalized values
# [load-end]

# [coexpression]
gv.tl.coexpression(adata, zeros="include", estimator="miller_madow", pvals=True)
# [coexpression-end]
save_text("tutorial_adata.txt", repr(adata))

# [pairs]
pairs = gv.get.mi_pairs(adata, n=8)
# [pairs-end]
save_text("tutorial_pairs.txt", pairs.to_string())

# [modules]
gv.tl.modules(adata, max_q=1)  # see the note below on max_q
modules = adata.var["gv_module"]
# [modules-end]
save_text(
    "tutorial_modules.txt",
    "\n".join(
        f"{name} ({size:>3} genes): " + ", ".join(hub_genes(adata, name, 9))
        for name, size in modules.value_counts(sort=False).items()
    ),
)

# [heatmap]
gv.pl.mi_heatmap(adata, modules=True, n_genes=48)
# [heatmap-end]
save_figure("tutorial_heatmap.png")

# [network]
nk = adata.var.loc["NKG7", "gv_module"]  # the module of the NK and cytotoxic genes
gv.pl.network(adata, module=nk, n_edges=40)
# [network-end]
save_figure("tutorial_modules.png")

# [scores]
gv.tl.module_scores(adata)
for marker in ["CD79A", "NKG7", "LYZ", "CYTL1"]:  # B, NK, monocyte, CD34+ genes
    name = modules[marker]
    adata.obs[f"{name} ({marker})"] = adata.obsm["gv_module_scores"][name]
sc.pl.umap(adata, color=[*adata.obs.columns[-4:], "bulk_labels"], ncols=3)
# [scores-end]
save_figure("tutorial_umap.png")

# [differential]
gv.tl.differential_coexpression(
    adata,
    "bulk_labels",
    group="CD19+ B",
    reference="Dendritic",
    genes="highly_variable",
    n_permutations=1000,
)
gv.pl.differential(adata)
# [differential-end]
save_figure("tutorial_differential.png")

# [differential-table]
changed = gv.get.network(adata, "gv_diff", max_q=0.05)
# [differential-table-end]
save_text("tutorial_differential.txt", f"{len(changed)} pairs\n" + changed.head(8).to_string())

folder = Path(tempfile.mkdtemp())
os.chdir(folder)  # the export writes its file here, not into docs/
# [export]
edges = gv.get.network(adata, max_q=0.01, top_k=10, sign=1)
graph = gv.get.to_networkx(edges)  # or gv.get.to_igraph(edges)
nx.write_graphml(graph, "pbmc_network.graphml")  # for Cytoscape, Gephi, ...
# [export-end]
save_text(
    "tutorial_export.txt",
    f"{len(edges)} edges between {graph.number_of_nodes()} genes\n" + edges.head(5).to_string(),
)


def command_help(*args: str) -> str:
    """What ``geneverse ARGS --help`` prints, 88 columns wide."""
    os.environ["COLUMNS"] = "88"
    with redirect_stdout(io.StringIO()) as buffer, suppress(SystemExit):
        main([*args, "--help"])
    return buffer.getvalue()


for command in ("demo", "coexpression", "info"):
    save_text(f"cli_{command}.txt", command_help(command))
print(f"wrote the tutorial's figures and tables to {STATIC}")
