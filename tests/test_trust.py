"""Significance, estimators, zero handling, other measures and the cache, through
``gv.tl.coexpression``, in every backend."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

import geneverse as gv
from test_measures import REFERENCES

from conftest import BACKENDS, assert_unchanged, snapshot
from oracle import oracle_scores
from synthetic import planted_modules


@pytest.fixture(scope="module")
def small() -> ad.AnnData:
    """Counts with planted modules (60 genes × 2,000 cells)."""
    X, _ = planted_modules(n_genes=60, n_cells=2000, modules=2, size=20, seed=3)
    adata = ad.AnnData(sparse.csr_matrix(X.astype(np.float32)))
    adata.var_names = [f"g{i}" for i in range(adata.n_vars)]
    return adata


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
@pytest.mark.parametrize(
    ("estimator", "zeros"), [("miller_madow", "exclude"), ("plugin", "include")]
)
def test_estimators_equal_their_oracles_in_every_backend(small, backend, device, estimator, zeros):
    adata = small[:, :15].copy()
    gv.tl.coexpression(adata, estimator=estimator, zeros=zeros, backend=backend, device=device)
    expected, _ = oracle_scores(adata.X.toarray(), estimator=estimator, zeros=zeros)
    np.testing.assert_allclose(adata.varp["gv_mi"], expected, atol=1e-6)
    assert adata.uns["gv"]["params"]["estimator"] == estimator


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
def test_pvalues_are_the_same_in_every_backend(small, backend, device):
    reference = gv.tl.coexpression(small, pvals=True, backend="numpy", copy=True)
    adata = gv.tl.coexpression(small, pvals=True, backend=backend, device=device, copy=True)
    for name in ("gv_mi", "gv_pvals", "gv_qvals"):
        np.testing.assert_allclose(adata.varp[name], reference.varp[name], rtol=1e-5, atol=1e-7)
    p, q = adata.varp["gv_pvals"], adata.varp["gv_qvals"]
    assert p.dtype == np.float32 and (p >= 0).all() and (p <= 1).all()
    np.testing.assert_array_equal(p, p.T)
    assert (np.diag(p) == 1).all() and (q >= p - 1e-7).all()


def test_planted_pairs_are_significant_and_null_pairs_mostly_not(small):
    _, truth = planted_modules(n_genes=60, n_cells=2000, modules=2, size=20, seed=3)
    adata = gv.tl.coexpression(small, pvals=True, copy=True)
    upper = np.triu_indices(small.n_vars, 1)
    planted = truth[upper]
    significant = adata.varp["gv_qvals"][upper] < 0.05
    assert significant[planted].mean() > 0.3
    assert significant[~planted].mean() < 0.05


def test_pvalues_with_top_k_and_against_are_sparse_like_the_mi(small):
    adata = gv.tl.coexpression(small, pvals=True, top_k=3, copy=True)
    mi, p = adata.varp["gv_mi"], adata.varp["gv_pvals"]
    assert sparse.issparse(p) and (abs(mi) > 0).nnz == p.nnz
    np.testing.assert_array_equal(np.sort(mi.indices), np.sort(p.indices))
    dense = gv.tl.coexpression(small, pvals=True, copy=True).varp["gv_pvals"]
    rows, cols = p.nonzero()
    np.testing.assert_allclose(p[rows, cols].A1, dense[rows, cols], rtol=1e-6)
    rectangle = gv.tl.coexpression(
        small, pvals=True, genes=["g0"], against=small.var_names, copy=True
    )
    assert sparse.issparse(rectangle.varp["gv_qvals"])


def test_permutation_pvalues(small):
    adata = gv.tl.coexpression(small, n_permutations=19, random_state=1, copy=True)
    p = adata.varp["gv_pvals"]
    assert adata.uns["gv"]["params"]["pvals"] is True
    off = ~np.eye(small.n_vars, dtype=bool)
    assert p[off].min() == pytest.approx(1 / 20) and p.max() <= 1
    strongest = np.unravel_index(np.argmax(np.abs(adata.varp["gv_mi"])), p.shape)
    assert p[strongest] == pytest.approx(1 / 20)
    again = gv.tl.coexpression(small, n_permutations=19, random_state=1, copy=True)
    np.testing.assert_array_equal(again.varp["gv_pvals"], p)
    with pytest.raises(ValueError, match="n_permutations=5 applies only with the dense result"):
        gv.tl.coexpression(small, n_permutations=5, top_k=3, copy=True)


@pytest.mark.parametrize("method", ["pearson", "spearman", "jaccard", "cosine"])
def test_other_measures_are_stored_under_their_name(small, method):
    adata = gv.tl.coexpression(small, method=method, genes=small.var_names[:30], copy=True)
    stored = adata.varp[f"gv_{method}"]
    expected = REFERENCES[method](small.X[:, :30].toarray())
    np.testing.assert_allclose(stored[:30, :30], expected, atol=1e-6)
    assert not stored[30:].any() and "gv_mi" not in adata.varp and "gv_bins" not in adata.layers
    assert adata.uns["gv"]["params"]["method"] == method


def test_bad_choices_change_nothing(small):
    adata = small.copy()
    before = snapshot(adata)
    for kwargs, message in (
        ({"method": "kendall"}, "method='kendall' is not known"),
        ({"estimator": "jackknife"}, "estimator='jackknife' is not known"),
        ({"zeros": "drop"}, "zeros='drop' is not known"),
        ({"n_permutations": -1}, "n_permutations=-1 is out of range"),
    ):
        with pytest.raises(ValueError, match=message):
            gv.tl.coexpression(adata, **kwargs)
    assert_unchanged(before, adata)


def test_cache_hit_returns_exactly_what_was_computed(small, tmp_path, capsys):
    gv.settings.cache_dir = tmp_path
    gv.settings.verbosity = "info"
    first = gv.tl.coexpression(small, pvals=True, copy=True)
    assert "loaded from the cache" not in capsys.readouterr().err
    second = gv.tl.coexpression(small, pvals=True, copy=True)
    assert "loaded from the cache" in capsys.readouterr().err
    for name in ("gv_mi", "gv_pvals", "gv_qvals"):
        np.testing.assert_array_equal(second.varp[name], first.varp[name])
        assert second.varp[name].dtype == first.varp[name].dtype
    assert (second.layers["gv_bins"] != first.layers["gv_bins"]).nnz == 0
    np.testing.assert_array_equal(second.var["gv_n_bins"], first.var["gv_n_bins"])

    gv.tl.coexpression(small, pvals=True, n_bins=5, copy=True)  # another parameter
    assert "loaded from the cache" not in capsys.readouterr().err
    changed = small.copy()
    changed.X[0, 0] += 1
    gv.tl.coexpression(changed, pvals=True, copy=True)  # another value
    assert "loaded from the cache" not in capsys.readouterr().err
    uncached = gv.tl.coexpression(small, pvals=True, cache=False, copy=True)
    assert "loaded from the cache" not in capsys.readouterr().err
    np.testing.assert_array_equal(uncached.varp["gv_mi"], first.varp["gv_mi"])


def test_cache_of_sparse_and_grouped_results(small, tmp_path):
    gv.settings.cache_dir = tmp_path
    adata = small.copy()
    adata.obs["half"] = np.repeat(["a", "b"], adata.n_obs // 2)
    for kwargs in ({"top_k": 4, "pvals": True}, {"groupby": "half"}, {"method": "jaccard"}):
        first = gv.tl.coexpression(adata, copy=True, **kwargs)
        second = gv.tl.coexpression(adata, copy=True, **kwargs)
        for name, value in first.varp.items():
            other = second.varp[name]
            if sparse.issparse(value):
                assert sparse.issparse(other) and (value != other).nnz == 0
            else:
                np.testing.assert_array_equal(value, other)
