"""gv.tl.differential_coexpression: each group's MI as coexpression computes it, the
permutation p-values (planted changes rank first, a calibrated null), the pair
restrictions, storage and errors; gv.pl.differential; the generator's groups."""

from __future__ import annotations

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.metrics import roc_auc_score

import geneverse as gv

from conftest import assert_unchanged, snapshot
from synthetic import workloads

matplotlib.use("Agg")
import matplotlib.pyplot as plt

RECOMMENDED = {"zeros": "include", "estimator": "miller_madow"}


def synthetic(**spec) -> ad.AnnData:
    """Generator data with its genes detected in >= 5 % of the cells in var["detected"]."""
    generator = workloads()
    adata = generator.synthetic(generator.SyntheticSpec(**spec))
    adata.var["detected"] = np.asarray((adata.X > 0).mean(axis=0)).ravel() >= 0.05
    return adata


def upper(adata: ad.AnnData, key: str) -> np.ndarray:
    """The pairs of detected genes (upper triangle) of ``varp[key]``."""
    genes = np.flatnonzero(adata.var["detected"])
    matrix = adata.varp[key]
    matrix = matrix.toarray() if sparse.issparse(matrix) else np.asarray(matrix)
    return matrix[np.ix_(genes, genes)][np.triu_indices(genes.size, 1)]


@pytest.fixture(scope="module")
def changed() -> ad.AnnData:
    """One program of two active in group B only (120 genes × 2,400 cells), and the
    differential run of B against A."""
    adata = synthetic(
        n_genes=120, n_cells=2400, nonzero=0.2, seed=1, effect=1.5, module_fraction=0.5,
        group_programs=1,
    )  # fmt: skip
    gv.tl.differential_coexpression(adata, "group", group="B", reference="A", genes="detected")
    return adata


def planted_pairs(adata: ad.AnnData) -> np.ndarray:
    genes = adata.var[adata.var["detected"]]
    program, specific = genes["program"].to_numpy(), genes["group_specific"].to_numpy()
    same = (program[:, None] == program[None, :]) & specific[:, None] & specific[None, :]
    return same[np.triu_indices(len(genes), 1)]


def test_planted_changes_rank_first(changed):
    truth = planted_pairs(changed)
    assert truth.sum() > 100
    p = upper(changed, "gv_diff_pvals")
    assert roc_auc_score(truth, -p) >= 0.95
    # The other program is active in both groups: strong pairs, no change.
    program = changed.var["program"][changed.var["detected"]].to_numpy()
    stable = ((program[:, None] == program[None, :]) & (program[:, None] >= 0))[
        np.triu_indices(program.size, 1)
    ] & ~truth
    assert np.median(p[stable]) > 0.2 and np.median(p[truth]) < 0.02


def test_null_fraction_below_005_is_about_005():
    """No program differs between the groups (random labels): p < 0.05 for about 5 % of
    the pairs (with 100 permutations exactly 5/101 in expectation)."""
    adata = synthetic(n_genes=100, n_cells=2000, nonzero=0.2, seed=8, group_fraction=0.5)
    gv.tl.differential_coexpression(adata, "group", group="B", reference="A", genes="detected")
    p = upper(adata, "gv_diff_pvals")
    assert p.size > 3000
    assert 0.03 <= np.mean(p < 0.05) <= 0.07
    np.testing.assert_allclose(np.unique(p) * 101, np.round(np.unique(p) * 101), atol=1e-4)


def test_each_group_is_coexpression_on_its_cells(changed):
    for name in ("A", "B"):
        subset = changed[changed.obs["group"] == name].copy()
        gv.tl.coexpression(subset, genes="detected", **RECOMMENDED)
        np.testing.assert_array_equal(changed.varp[f"gv_diff_mi_{name}"], subset.varp["gv_mi"])
    np.testing.assert_array_equal(
        changed.varp["gv_diff_dmi"], changed.varp["gv_diff_mi_B"] - changed.varp["gv_diff_mi_A"]
    )
    uns = changed.uns["gv_diff"]
    assert list(uns["groups"]) == ["B", "A"]
    np.testing.assert_array_equal(uns["n_cells"], [(changed.obs["group"] == g).sum() for g in "BA"])


def test_q_values_and_seed(changed):
    p, q = upper(changed, "gv_diff_pvals"), upper(changed, "gv_diff_qvals")
    from geneverse.tl._coexpression._statistics import bh_qvalues

    np.testing.assert_allclose(q, bh_qvalues(p), rtol=1e-6)
    again = changed.copy()
    gv.tl.differential_coexpression(
        again, "group", group="B", reference="A", genes="detected", n_permutations=20
    )
    other = changed.copy()
    gv.tl.differential_coexpression(
        other, "group", group="B", reference="A", genes="detected", n_permutations=20,
        random_state=7,
    )  # fmt: skip
    third = changed.copy()
    gv.tl.differential_coexpression(
        third, "group", group="B", reference="A", genes="detected", n_permutations=20
    )
    np.testing.assert_array_equal(again.varp["gv_diff_pvals"], third.varp["gv_diff_pvals"])
    assert not np.array_equal(again.varp["gv_diff_pvals"], other.varp["gv_diff_pvals"])


def test_top_k_and_against_keep_the_dense_values_at_their_pairs(changed):
    adata = changed.copy()
    kwargs = {"genes": "detected", "n_permutations": 100}
    gv.tl.differential_coexpression(adata, "group", group="B", reference="A", top_k=5,
                                    key_added="top", **kwargs)  # fmt: skip
    detected = list(adata.var_names[adata.var["detected"]][:8])
    gv.tl.differential_coexpression(adata, "group", group="B", reference="A", against=detected,
                                    key_added="rect", **kwargs)  # fmt: skip
    dense = {name: np.asarray(adata.varp[f"gv_diff_{name}"]) for name in ("dmi", "pvals")}
    for key in ("top", "rect"):
        dmi = adata.varp[f"{key}_dmi"]
        assert sparse.issparse(dmi) and dmi.nnz > 0
        rows, cols = dmi.nonzero()
        for name in ("dmi", "pvals", "mi_A", "mi_B"):
            stored = np.asarray(adata.varp[f"{key}_{name}"][rows, cols]).ravel()
            reference = dense.get(name, np.asarray(adata.varp.get(f"gv_diff_{name}")))
            np.testing.assert_array_equal(stored, reference[rows, cols])
    # top_k: each gene's 5 largest |dmi| (union of both directions)
    top = adata.varp["top_dmi"].toarray()
    genes = np.flatnonzero(adata.var["detected"])
    full = np.abs(dense["dmi"][np.ix_(genes, genes)])
    kept = np.abs(top[np.ix_(genes, genes)])
    for i in range(genes.size):
        fifth = np.sort(full[i])[-5]
        assert (kept[i][full[i] > fifth] > 0).all()
    # against: only pairs with a gene of `against`
    rows, cols = adata.varp["rect_dmi"].nonzero()
    chosen = set(adata.var_names.get_indexer(detected))
    assert all(r in chosen or c in chosen for r, c in zip(rows, cols, strict=True))


def test_without_permutations_only_the_change(changed):
    adata = changed.copy()
    gv.tl.differential_coexpression(adata, "group", group="B", reference="A",
                                    genes="detected", n_permutations=0)  # fmt: skip
    assert "gv_diff_pvals" not in adata.varp and "gv_diff_qvals" not in adata.varp
    np.testing.assert_array_equal(adata.varp["gv_diff_dmi"], changed.varp["gv_diff_dmi"])
    with pytest.raises(ValueError, match="n_permutations > 0"):
        gv.get.network(adata, "gv_diff", max_q=0.05)


def test_network_h5ad_and_copy(changed, tmp_path):
    edges = gv.get.network(changed, "gv_diff", sign=1)
    assert list(edges.columns) == ["source", "target", "dmi", "pval", "qval"]
    assert len(edges) > 0 and (edges["dmi"] > 0).all()
    rows, cols = (changed.var_names.get_indexer(edges[end]) for end in ("source", "target"))
    np.testing.assert_array_equal(edges["qval"], changed.varp["gv_diff_qvals"][rows, cols])
    group_b = gv.get.network(changed, "gv_diff", group="B")
    assert list(group_b.columns) == ["source", "target", "mi"]
    changed.write_h5ad(tmp_path / "diff.h5ad")
    back = ad.read_h5ad(tmp_path / "diff.h5ad")
    for key in ("dmi", "pvals", "qvals", "mi_A", "mi_B"):
        np.testing.assert_array_equal(back.varp[f"gv_diff_{key}"], changed.varp[f"gv_diff_{key}"])
    assert back.uns["gv_diff"]["params"] == changed.uns["gv_diff"]["params"] | {"genes": "detected"}
    pd.testing.assert_frame_equal(gv.get.network(back, "gv_diff", sign=1), edges)
    before = snapshot(changed)
    copy = gv.tl.differential_coexpression(
        changed, "group", group="A", reference="B", genes="detected", n_permutations=5, copy=True
    )
    assert_unchanged(before, changed)
    np.testing.assert_array_equal(copy.varp["gv_diff_dmi"], -changed.varp["gv_diff_dmi"])


def test_rerun_with_the_same_key_replaces_everything(changed):
    adata = changed.copy()
    adata.obs["half"] = pd.Categorical(np.where(np.arange(adata.n_obs) % 2, "odd", "even"))
    gv.tl.differential_coexpression(adata, "half", group="odd", reference="even",
                                    genes="detected", n_permutations=0)  # fmt: skip
    assert "gv_diff_mi_A" not in adata.varp and "gv_diff_pvals" not in adata.varp
    assert {"gv_diff_mi_odd", "gv_diff_mi_even", "gv_diff_dmi"} <= set(adata.varp)


@pytest.fixture
def small() -> ad.AnnData:
    adata = synthetic(n_genes=30, n_cells=300, nonzero=0.2, seed=2, group_fraction=0.5)
    adata.obs["kind"] = pd.Categorical(["x"] * 300, categories=["x", "empty"])
    adata.obs["score"] = np.linspace(0, 1, 300)
    return adata


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"groupby": "cluster"}, r"groupby='cluster' is not a column of adata\.obs"),
        ({"group": "C"}, r"group='C' is not a category of adata\.obs\['group'\]"),
        ({"reference": "B"}, r"group and reference are both 'B'"),
        ({"groupby": "kind", "group": "x", "reference": "empty"},
         r"reference='empty' has 0 cells"),
        ({"groupby": "score", "group": 0, "reference": 1}, r"floating-point numbers"),
        ({"genes": ["gene00000", "nope"]}, r"not in adata\.var_names: 'nope'"),
        ({"n_bins": 0}, r"n_bins=0 is out of range"),
        ({"zeros": "all"}, r"zeros='all' is not known"),
        ({"backend": "fortran"}, r"backend='fortran' is not known"),
        ({"layer": "counts"}, r"layer='counts' is not in adata\.layers"),
    ],
)  # fmt: skip
def test_bad_input_raises_and_changes_nothing(small, kwargs, match):
    before = snapshot(small)
    arguments = {"groupby": "group", "group": "B", "reference": "A", "n_permutations": 5}
    with pytest.raises(ValueError, match=match):
        gv.tl.differential_coexpression(small, **(arguments | kwargs))
    assert_unchanged(before, small)


def test_negative_values_are_refused_before_anything_is_written(small):
    small.layers["scaled"] = small.X.toarray() - 1.0
    before = snapshot(small)
    with pytest.raises(ValueError, match="negative values"):
        gv.tl.differential_coexpression(small, "group", group="B", reference="A",
                                        layer="scaled")  # fmt: skip
    assert_unchanged(before, small)


# --- the plot ---------------------------------------------------------------------------------


def test_plot_shows_each_pair_and_labels_the_most_changed(changed):
    max_q = float(np.quantile(upper(changed, "gv_diff_qvals"), 0.1))
    ax = gv.pl.differential(changed, n_labels=5, max_q=max_q, show=False)
    edges = gv.get.network(changed, "gv_diff")
    points = np.concatenate([collection.get_offsets() for collection in ax.collections])
    assert len(points) == len(edges) and len(ax.collections) == 3
    labels = [text.get_text() for text in ax.texts]
    top = edges[edges["qval"] <= max_q].head(5)
    assert labels == [f"{a}–{b}" for a, b in zip(top["source"], top["target"], strict=True)]
    assert ax.get_xlabel() == "signed MI in A (bits)"
    assert ax.get_ylabel() == "signed MI in B (bits)"
    gained = ax.collections[1].get_offsets()  # more MI in B: above the diagonal
    assert (gained[:, 1] > gained[:, 0]).all()
    plt.close("all")


def test_plot_needs_a_differential_key(changed):
    with pytest.raises(ValueError, match=r"holds no differential co-expression"):
        gv.pl.differential(changed, key="gv_diff_mi", show=False)
    fig = gv.pl.differential(changed, n_labels=0, return_fig=True)
    assert isinstance(fig, matplotlib.figure.Figure) and not fig.axes[0].texts
    plt.close("all")


# --- the generator ------------------------------------------------------------------------------


def test_generator_program_acts_in_group_b_only():
    adata = synthetic(n_genes=120, n_cells=3000, nonzero=0.2, seed=4, effect=1.5,
                      module_fraction=0.5, group_programs=1)  # fmt: skip
    assert list(adata.obs["group"].cat.categories) == ["A", "B"]
    assert 0.45 < np.mean(adata.obs["group"] == "B") < 0.55
    specific = adata.var["group_specific"].to_numpy()
    program = adata.var["program"].to_numpy()
    assert specific.any() and (program[specific] == program.max()).all()
    co = np.flatnonzero(specific & (adata.var["program_sign"].to_numpy() > 0))[:6]
    for group, low, high in (("A", -0.05, 0.05), ("B", 0.1, 1.0)):
        values = np.log1p(adata[adata.obs["group"] == group, co].X.toarray())
        correlation = np.corrcoef(values.T)[np.triu_indices(co.size, 1)]
        assert low < np.median(correlation) < high, (group, correlation)
    plain = synthetic(n_genes=40, n_cells=200, nonzero=0.2, seed=4)
    assert "group" not in plain.obs and "group_specific" not in plain.var
    assert "group_programs" not in plain.uns["workload"]
