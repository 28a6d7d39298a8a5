"""gv.tl.modules recovers planted programs and the cell types of real PBMCs;
gv.tl.module_scores is scanpy's score_genes and leaves nothing else behind."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse
from sklearn.metrics import adjusted_rand_score

import geneverse as gv

from conftest import assert_unchanged, snapshot
from synthetic import workloads

#: The recommended score for networks (docs page "Which score to rank pairs by").
RECOMMENDED = {"zeros": "include", "estimator": "miller_madow"}
#: Marker genes of four PBMC types, and the bulk_labels type of each.
MARKERS = {
    "CD19+ B": ["CD79A", "CD79B", "MS4A1"],
    "CD56+ NK": ["GNLY", "NKG7", "GZMB", "PRF1"],
    "CD14+ Monocyte": ["LYZ", "S100A8", "S100A9", "FCN1"],
    "CD34+": ["PRSS57", "CYTL1"],
}


def planted_truth(adata: ad.AnnData) -> np.ndarray:
    """The generator's sets: ``"P3+"`` (co-expressed genes of program 3), ``"P3-"`` (its
    anti-correlated genes), ``"background"`` (genes of no program)."""
    program, sign = adata.var["program"].to_numpy(), adata.var["program_sign"].to_numpy()
    sets = np.char.add(np.char.add("P", program.astype(str)), np.where(sign > 0, "+", "-"))
    return np.where(program >= 0, sets, "background")


def found(adata: ad.AnnData, key: str = "gv_module") -> np.ndarray:
    """Each gene's module, ``"none"`` for genes in no module."""
    return adata.var[key].astype(object).fillna("none").to_numpy(dtype=str)


@pytest.fixture(scope="module")
def planted() -> ad.AnnData:
    """400 genes × 3,000 cells with planted programs; the recommended MI, with G-test
    q-values, of the genes detected in at least 5 % of the cells."""
    spec = workloads().SyntheticSpec(n_genes=400, n_cells=3000, nonzero=0.15, seed=5)
    adata = workloads().synthetic(spec)
    detected = np.asarray((adata.X > 0).mean(axis=0)).ravel() >= 0.05
    adata.var["detected"] = detected
    gv.tl.coexpression(adata, genes="detected", pvals=True, **RECOMMENDED)
    return adata


@pytest.fixture(scope="module")
def pbmc_modules() -> ad.AnnData:
    """pbmc68k_reduced with the recommended MI of its .raw (no tests: the G-test is
    conservative for genes of a dozen cells in 10 bins), its modules and their scores."""
    adata = sc.datasets.pbmc68k_reduced()
    gv.tl.coexpression(adata, use_raw=True, **RECOMMENDED)
    gv.tl.modules(adata)
    gv.tl.module_scores(adata, use_raw=True)
    return adata


def test_recovers_the_planted_programs(planted):
    """ARI over the detected genes: each co-expressed set, each anti-correlated set and the
    background are one class each; genes in no module are one class too, so a background
    gene put in a module, or a planted gene left out, counts against it."""
    adata = planted.copy()
    gv.tl.modules(adata)
    detected = adata.var["detected"].to_numpy()
    truth, modules = planted_truth(adata)[detected], found(adata)[detected]
    assert adjusted_rand_score(truth, modules) >= 0.9
    assert np.mean(modules[truth == "background"] == "none") >= 0.95
    for program in np.unique(adata.var["program"][adata.var["program"] >= 0]):
        majority = [pd.Series(modules[truth == f"P{program}{sign}"]).mode()[0] for sign in "+-"]
        assert majority[0] != majority[1] and "none" not in majority  # two modules


def test_sparse_top_k_result_gives_the_same_modules(planted):
    adata = planted.copy()
    gv.tl.modules(adata)
    gv.tl.coexpression(
        adata, genes="detected", pvals=True, top_k=20, key_added="top", **RECOMMENDED
    )
    assert sparse.issparse(adata.varp["top_mi"])
    gv.tl.modules(adata, "top", key_added="top_module")
    assert adjusted_rand_score(found(adata), found(adata, "top_module")) >= 0.95


def test_q_values_filter_the_edges(planted):
    """At 1 % FDR (the default with q-values), fewer background genes join than with every
    positive edge; a tiny max_q leaves no edge and so no module."""
    adata = planted.copy()
    background = planted_truth(adata) == "background"
    gv.tl.modules(adata)
    assert adata.uns["gv_module"]["params"]["max_q"] == 0.01
    strict = np.count_nonzero(background & (found(adata) != "none"))
    gv.tl.modules(adata, max_q=1.0, n_neighbors=None, min_membership=0)
    loose = np.count_nonzero(background & (found(adata) != "none"))
    assert loose > strict
    gv.tl.modules(adata, max_q=1e-300)
    assert adata.var["gv_module"].isna().all()


def test_genes_not_used_are_in_no_module(planted):
    adata = planted.copy()
    gv.tl.modules(adata)
    assert adata.var["gv_module"][~adata.var["gv_used"]].isna().all()
    assert adata.var["gv_module"][adata.var["gv_used"]].notna().any()


def test_modules_named_by_size_none_smaller_than_min_size(planted):
    adata = planted.copy()
    gv.tl.modules(adata, min_size=8, min_membership=0)
    column = adata.var["gv_module"]
    assert isinstance(column.dtype, pd.CategoricalDtype)
    names = list(column.cat.categories)
    assert names == [f"M{i + 1}" for i in range(len(names))]
    sizes = column.value_counts(sort=False)[names].to_numpy()
    assert (np.diff(sizes) <= 0).all() and sizes.min() >= 8
    np.testing.assert_array_equal(adata.uns["gv_module"]["sizes"], sizes)


def test_resolution_and_random_state(planted):
    adata = planted.copy()
    gv.tl.modules(adata, n_neighbors=None, max_q=1.0, min_membership=0, resolution=0.05)
    coarse = adata.var["gv_module"].cat.categories.size
    gv.tl.modules(adata, n_neighbors=None, max_q=1.0, min_membership=0, resolution=3.0)
    assert adata.var["gv_module"].cat.categories.size > coarse
    gv.tl.modules(adata, random_state=None)
    assert isinstance(adata.uns["gv_module"]["params"]["random_state"], int)


def test_another_stored_score(planted):
    adata = planted.copy()
    gv.tl.coexpression(adata, genes="detected", method="pearson", key_added="gvp")
    gv.tl.modules(adata, "gvp", key_added="by_pearson")
    assert adata.uns["by_pearson"]["score"] == "gvp_pearson"
    detected = adata.var["detected"].to_numpy()
    truth = planted_truth(adata)[detected]
    assert adjusted_rand_score(truth, found(adata, "by_pearson")[detected]) >= 0.8


def test_params_copy_and_h5ad(planted, tmp_path):
    before = snapshot(planted)
    result = gv.tl.modules(planted, resolution=1.5, copy=True)
    assert_unchanged(before, planted)
    params = result.uns["gv_module"]["params"]
    expected = {"key": "gv", "score": None, "group": None, "max_q": 0.01, "n_neighbors": 10,
                "resolution": 1.5, "min_size": 5, "min_membership": 0.2, "n_iterations": -1,
                "random_state": 0, "key_added": "gv_module", "copy": True}  # fmt: skip
    assert params == expected
    result.write_h5ad(tmp_path / "modules.h5ad")
    back = ad.read_h5ad(tmp_path / "modules.h5ad")
    pd.testing.assert_series_equal(back.var["gv_module"], result.var["gv_module"])
    assert back.uns["gv_module"]["params"]["score"] is None
    assert gv.tl.modules(planted.copy()) is None


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"key": "nope"}, ValueError, r"run gv\.tl\.coexpression\(adata, key_added='nope'\)"),
        ({"score": "spearman"}, ValueError, r"score='spearman' is not stored"),
        ({"resolution": 0}, ValueError, r"resolution=0.0 must be positive"),
        ({"min_size": 0}, ValueError, r"min_size=0 is out of range"),
        ({"min_membership": 2}, ValueError, r"min_membership=2.0 must lie in \[0, 1\]"),
        ({"n_neighbors": 0}, ValueError, r"n_neighbors=0 is out of range"),
        ({"n_iterations": 0}, ValueError, r"n_iterations must be a whole number"),
        ({"max_q": 0}, ValueError, r"max_q=0.0 is not a q-value bound"),
        ({"key_added": "a/b"}, ValueError, r"cannot be written to an \.h5ad file"),
        ({"random_state": 1.5}, TypeError, r"random_state must be a whole number"),
    ],
)
def test_bad_input_raises_and_changes_nothing(planted, kwargs, error, match):
    adata = planted.copy()
    before = snapshot(adata)
    with pytest.raises(error, match=match):
        gv.tl.modules(adata, **kwargs)
    assert_unchanged(before, adata)


# --- real data ---------------------------------------------------------------------------------


def test_pbmc_marker_genes_each_in_one_module(pbmc_modules):
    column = pbmc_modules.var["gv_module"]
    majorities = {}
    for cell_type, genes in MARKERS.items():
        modules = column[genes]
        counts = modules.value_counts()
        assert modules.notna().all(), (cell_type, modules)
        assert counts.iloc[0] >= len(genes) - len(genes) // 3, (cell_type, modules)  # mostly
        majorities[cell_type] = counts.index[0]
    assert len(set(majorities.values())) == len(MARKERS), majorities  # distinct


def test_pbmc_module_scores_highest_in_the_matching_cell_type(pbmc_modules):
    column = pbmc_modules.var["gv_module"]
    scores = pbmc_modules.obsm["gv_module_scores"]
    labels = pbmc_modules.obs["bulk_labels"]
    for cell_type, genes in MARKERS.items():
        module = column[genes].value_counts().index[0]
        by_type = scores[module].groupby(labels, observed=True).mean()
        assert by_type.idxmax() == cell_type, (module, by_type.sort_values().tail(3))


# --- module scores -----------------------------------------------------------------------------


def test_module_scores_are_score_genes_and_leave_no_other_trace(pbmc_modules):
    adata = pbmc_modules.copy()
    del adata.obsm["gv_module_scores"]
    before = snapshot(adata)
    gv.tl.module_scores(adata, ctrl_size=30, n_bins=20, random_state=3)
    scores = adata.obsm.pop("gv_module_scores")
    assert_unchanged(before, adata)  # nothing else: no obs column of score_genes
    assert list(scores.columns) == list(adata.var["gv_module"].cat.categories)
    pd.testing.assert_index_equal(scores.index, adata.obs_names)
    for module in ("M1", scores.columns[-1]):
        genes = list(adata.var_names[adata.var["gv_module"] == module])
        expected = sc.tl.score_genes(
            adata, genes, ctrl_size=30, n_bins=20, random_state=3, copy=True, use_raw=True
        ).obs["score"]
        np.testing.assert_array_equal(scores[module].to_numpy(), expected.to_numpy())


def test_module_scores_of_a_layer_and_of_chosen_modules(pbmc_modules, tmp_path):
    adata = pbmc_modules.copy()
    adata.layers["lognorm"] = adata.raw.X.copy()
    gv.tl.module_scores(adata, modules=["M2", "M1"], layer="lognorm", key_added="by_layer")
    scores = adata.obsm["by_layer"]
    assert list(scores.columns) == ["M2", "M1"]
    np.testing.assert_allclose(scores["M1"], adata.obsm["gv_module_scores"]["M1"], rtol=1e-5)
    adata.write_h5ad(tmp_path / "scores.h5ad")
    back = ad.read_h5ad(tmp_path / "scores.h5ad")
    pd.testing.assert_frame_equal(back.obsm["by_layer"], scores)
    copy = gv.tl.module_scores(pbmc_modules, modules="M3", copy=True)
    assert list(copy.obsm["gv_module_scores"].columns) == ["M3"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"key": "clusters"}, r"module_key='clusters' is not a column of adata\.var"),
        ({"modules": ["M1", "M99"]}, r"\['M99'\] not in adata\.var\['gv_module'\]"),
        ({"layer": "counts"}, r"layer='counts' is not in adata\.layers"),
        ({"ctrl_size": 0}, r"ctrl_size=0 is out of range"),
    ],
)
def test_module_scores_bad_input_changes_nothing(pbmc_modules, kwargs, match):
    adata = pbmc_modules.copy()
    before = snapshot(adata)
    with pytest.raises(ValueError, match=match):
        gv.tl.module_scores(adata, **kwargs)
    assert_unchanged(before, adata)


def test_no_edge_means_no_module_and_a_warning(capsys):
    adata = ad.AnnData(X=np.zeros((3, 5), dtype=np.float32))
    mi = np.zeros((5, 5), dtype=np.float32)
    mi[0, 1] = mi[1, 0] = 0.5
    adata.varp["gv_mi"] = -mi  # anti-correlated only: no positive edge
    adata.var["gv_used"] = True
    gv.settings.verbosity = 1
    gv.tl.modules(adata)
    assert adata.var["gv_module"].isna().all() and not len(adata.var["gv_module"].cat.categories)
    assert "WARNING: no gene module found in 'gv_mi'" in capsys.readouterr().err
    adata.varp["gv_mi"] = mi
    gv.tl.modules(adata, min_size=2)
    assert adata.var["gv_module"].tolist()[:2] == ["M1", "M1"]
    assert adata.var["gv_module"][2:].isna().all()
