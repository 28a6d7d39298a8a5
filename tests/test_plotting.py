"""gv.pl.mi_heatmap: what is drawn (genes, order, colour scale, labels) and scanpy's conventions."""

from __future__ import annotations

import anndata as ad
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from matplotlib.axes import Axes
from matplotlib.figure import Figure

import geneverse as gv
from geneverse.pl._heatmap import cluster_order

#: Two co-expressed modules, anti-correlated with each other, and weak background genes.
MODULE_A = ["A0", "A1", "A2", "A3", "A4"]
MODULE_B = ["B0", "B1", "B2", "B3"]
BACKGROUND = [f"n{i}" for i in range(12)]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def modules() -> ad.AnnData:
    """A stored MI with planted modules; genes shuffled so that the order must be found."""
    rng = np.random.default_rng(0)
    names = np.array(MODULE_A + MODULE_B + BACKGROUND)
    group = np.array([0] * len(MODULE_A) + [1] * len(MODULE_B) + [2] * len(BACKGROUND))
    mi = rng.uniform(-0.05, 0.05, size=(names.size, names.size))
    same = (group[:, None] == group[None, :]) & (group[:, None] < 2)
    mi[same] = rng.uniform(0.8, 1.2, size=same.sum())
    across = group[:, None] + group[None, :] == 1
    mi[across] = rng.uniform(-0.6, -0.4, size=across.sum())
    mi = np.triu(mi, 1)
    mi = mi + mi.T
    order = rng.permutation(names.size)
    adata = ad.AnnData(
        X=np.zeros((3, names.size), dtype=np.float32),
        var=pd.DataFrame(index=pd.Index(names[order])),
    )
    adata.varp["gv_mi"] = mi[np.ix_(order, order)].astype(np.float32)
    adata.var["gv_used"] = True
    adata.var["feature_name"] = [f"SYM_{name}" for name in adata.var_names]
    adata.var["marker"] = adata.var_names.str.startswith(("A", "B"))
    return adata


def heatmap(adata, *args, **kwargs):
    """Draw with show=False; the axes and its one image."""
    ax = gv.pl.mi_heatmap(adata, *args, show=False, **kwargs)
    assert isinstance(ax, Axes)
    (image,) = ax.images
    return ax, image


def ticks(ax: Axes) -> tuple[list[str], list[str]]:
    return (
        [label.get_text() for label in ax.get_xticklabels()],
        [label.get_text() for label in ax.get_yticklabels()],
    )


def contiguous(labels: list[str], members: list[str]) -> bool:
    where = sorted(labels.index(m) for m in members)
    return where == list(range(where[0], where[0] + len(members)))


def test_default_shows_the_genes_with_the_strongest_pairs_clustered(modules):
    ax, image = heatmap(modules, n_genes=9)
    x, y = ticks(ax)
    assert x == y
    assert sorted(x) == sorted(MODULE_A + MODULE_B)
    assert contiguous(x, MODULE_A) and contiguous(x, MODULE_B)
    shown = np.asarray(image.get_array())
    positions = [modules.var_names.get_loc(g) for g in x]
    np.testing.assert_allclose(
        shown[~np.eye(len(x), dtype=bool)],
        modules.varp["gv_mi"][np.ix_(positions, positions)][~np.eye(len(x), dtype=bool)],
        rtol=1e-6,
    )


def test_order_is_the_optimal_leaf_order(modules):
    genes = MODULE_B + BACKGROUND[:3] + MODULE_A
    ax, _ = heatmap(modules, genes)
    positions = [modules.var_names.get_loc(g) for g in genes]
    expected = np.array(genes)[cluster_order(modules.varp["gv_mi"][np.ix_(positions, positions)])]
    assert ticks(ax) == (list(expected), list(expected))


def test_list_of_genes_in_given_order_without_clustering(modules):
    genes = ["B2", "A0", "n3", "A4"]
    ax, _ = heatmap(modules, genes, cluster=False)
    assert ticks(ax) == (genes, genes)


def test_boolean_column_selects_among_its_genes(modules):
    ax, _ = heatmap(modules, "marker", n_genes=4)
    x, _ = ticks(ax)
    assert len(x) == 4 and set(x) <= set(MODULE_A + MODULE_B)


def test_colour_scale_symmetric_around_zero(modules):
    genes = MODULE_A + BACKGROUND[:2]
    _, image = heatmap(modules, genes)
    vmin, vmax = image.get_clim()
    positions = [modules.var_names.get_loc(g) for g in genes]
    sub = modules.varp["gv_mi"][np.ix_(positions, positions)]
    assert vmin == -vmax
    assert vmax == pytest.approx(np.abs(sub).max(), rel=1e-6)


def test_colour_bar_label_and_grey_diagonal(modules):
    _, image = heatmap(modules, MODULE_A)
    assert image.colorbar is not None
    assert image.colorbar.ax.get_ylabel() == "signed MI (bits)"
    assert np.ma.getmaskarray(image.get_array()).diagonal().all()


def test_gene_symbols_label_the_axes_and_find_genes(modules):
    ax, _ = heatmap(modules, ["SYM_A1", "A2", "SYM_B0"], gene_symbols="feature_name", cluster=False)
    assert ticks(ax) == (["SYM_A1", "SYM_A2", "SYM_B0"],) * 2


def test_draws_into_the_given_axes(modules):
    fig, (left, right) = plt.subplots(1, 2)
    result = gv.pl.mi_heatmap(modules, MODULE_A, ax=right, show=False)
    assert result is right
    assert len(right.images) == 1 and len(left.images) == 0
    assert result.figure is fig


def test_return_fig(modules):
    fig = gv.pl.mi_heatmap(modules, MODULE_A, return_fig=True)
    assert isinstance(fig, Figure)
    assert any(len(ax.images) == 1 for ax in fig.axes)


@pytest.mark.parametrize("autoshow", [True, False])
def test_show_none_follows_scanpy_autoshow(modules, monkeypatch, autoshow):
    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(True))
    before = sc.settings.autoshow
    sc.settings.autoshow = autoshow
    try:
        result = gv.pl.mi_heatmap(modules, MODULE_A)
    finally:
        sc.settings.autoshow = before
    assert (result is None) == autoshow
    assert shown == ([True] if autoshow else [])


def test_many_genes_drop_the_labels(modules, monkeypatch):
    monkeypatch.setattr("geneverse.pl._heatmap._MAX_LABELLED", 5)
    ax, _ = heatmap(modules, n_genes=10)
    assert ticks(ax) == ([], [])


def test_one_group_of_a_groupby_run(modules):
    modules.varp["gv_mi_NK"] = modules.varp.pop("gv_mi")
    modules.uns["gv"] = {"groups": np.array(["NK"])}
    ax, _ = heatmap(modules, MODULE_A, group="NK")
    assert ax.get_title().endswith("in NK")
    with pytest.raises(ValueError, match=r"Pass group= one of \['NK'\]"):
        gv.pl.mi_heatmap(modules, MODULE_A, show=False)


def test_real_data(pbmc):
    adata = pbmc.raw.to_adata()[:, :80].copy()
    gv.tl.coexpression(adata, backend="numpy")
    ax, image = heatmap(adata, n_genes=20)
    x, y = ticks(ax)
    assert x == y and len(x) == 20 and set(x) <= set(adata.var_names)
    vmin, vmax = image.get_clim()
    assert vmin == -vmax > -np.inf and vmax > 0


def test_error_without_coexpression(modules):
    del modules.varp["gv_mi"]
    with pytest.raises(ValueError, match=r"run gv\.tl\.coexpression"):
        gv.pl.mi_heatmap(modules, show=False)


def test_error_unknown_genes(modules):
    with pytest.raises(ValueError, match=r"2 of the requested genes.*'CD3E', 'XX'.*gene_symbols"):
        gv.pl.mi_heatmap(modules, ["A0", "CD3E", "XX"], show=False)


def test_error_unused_genes(modules):
    modules.var.loc["A3", "gv_used"] = False
    with pytest.raises(ValueError, match=r"not part of the MI computation.*'A3'"):
        gv.pl.mi_heatmap(modules, MODULE_A, show=False)


def test_error_single_gene_name_as_string(modules):
    with pytest.raises(ValueError, match=r"pass a list: genes=\['A0'\]"):
        gv.pl.mi_heatmap(modules, "A0", show=False)


def test_boolean_mask_selects_its_genes(modules):
    ax, _ = heatmap(modules, modules.var["marker"].to_numpy(), cluster=False)
    assert ticks(ax)[0] == list(modules.var_names[modules.var["marker"]])


def test_error_column_not_boolean(modules):
    with pytest.raises(ValueError, match="needs a boolean column"):
        gv.pl.mi_heatmap(modules, "feature_name", show=False)


def test_error_unknown_symbol_column(modules):
    with pytest.raises(ValueError, match="gene_symbols='symbol' is not a column"):
        gv.pl.mi_heatmap(modules, gene_symbols="symbol", show=False)


@pytest.mark.parametrize(
    ("n_genes", "error", "match"),
    [
        (0, ValueError, "n_genes=0 is out of range"),
        (-3, ValueError, "n_genes=-3 is out of range"),
        (2.5, TypeError, "n_genes must be a whole number"),
    ],
)
def test_error_bad_n_genes(modules, n_genes, error, match):
    with pytest.raises(error, match=match):
        gv.pl.mi_heatmap(modules, n_genes=n_genes, show=False)


# --- module bars ---------------------------------------------------------------------------


@pytest.fixture
def with_modules(modules) -> ad.AnnData:
    """The planted modules as gv.tl.modules stores them: B is the larger module here."""
    names = np.where(
        modules.var_names.isin(MODULE_B),
        "M1",
        np.where(modules.var_names.isin(MODULE_A), "M2", None),
    )
    modules.var["gv_module"] = pd.Categorical(names, categories=["M1", "M2"])
    return modules


def bars(ax: Axes) -> tuple[np.ndarray, np.ndarray]:
    """The colour indices of the top and the right module bar."""
    top, right = (child for child in ax.child_axes if child.get_label() == "modules")
    return np.asarray(top.images[0].get_array()).ravel(), np.asarray(
        right.images[0].get_array()
    ).ravel()


def test_module_bars_group_the_genes_by_module(with_modules):
    ax, image = heatmap(with_modules, n_genes=20, modules=True)
    x, y = ticks(ax)
    assert x == y and sorted(x) == sorted(MODULE_A + MODULE_B)  # genes of modules only
    assert x[: len(MODULE_B)] == [g for g in x if g in MODULE_B]  # M1 first, contiguous
    top, right = bars(ax)
    codes = pd.Categorical(with_modules.var["gv_module"][x]).codes
    np.testing.assert_array_equal(top, codes)
    np.testing.assert_array_equal(right, codes)
    names = [text.get_text() for child in ax.child_axes for text in child.texts]
    assert names == ["M1", "M2"]
    positions = [with_modules.var_names.get_loc(g) for g in x]
    off = ~np.eye(len(x), dtype=bool)
    np.testing.assert_allclose(
        np.asarray(image.get_array())[off],
        with_modules.varp["gv_mi"][np.ix_(positions, positions)][off],
        rtol=1e-6,
    )


def test_module_bars_of_given_genes_put_genes_in_no_module_last(with_modules):
    genes = ["n1", "A0", "B3", "n2", "A1"]
    ax, _ = heatmap(with_modules, genes, cluster=False, modules="gv_module")
    x, _ = ticks(ax)
    assert x == ["B3", "A0", "A1", "n1", "n2"]
    top, _ = bars(ax)
    np.testing.assert_array_equal(top, [0, 1, 1, 2, 2])  # 2: the colour of no module


def test_module_bars_each_module_in_turn(with_modules):
    ax, _ = heatmap(with_modules, n_genes=4, modules=True)
    x, _ = ticks(ax)
    assert sum(g in MODULE_A for g in x) == 2 and sum(g in MODULE_B for g in x) == 2


def test_module_bars_errors(with_modules):
    with pytest.raises(ValueError, match=r"module_key='clusters' is not a column of adata\.var"):
        gv.pl.mi_heatmap(with_modules, modules="clusters", show=False)
    with pytest.raises(ValueError, match="is not categorical"):
        gv.pl.mi_heatmap(with_modules, modules="feature_name", show=False)
    with pytest.raises(TypeError, match="modules must be True, False or the name"):
        gv.pl.mi_heatmap(with_modules, modules=3, show=False)
    with_modules.var["gv_module"] = pd.Categorical([None] * with_modules.n_vars, categories=["M1"])
    with pytest.raises(ValueError, match="No gene with MI is in a module"):
        gv.pl.mi_heatmap(with_modules, modules=True, show=False)
