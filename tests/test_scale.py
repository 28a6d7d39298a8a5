"""Outputs for large runs: sparse top-k, a query rectangle, per-group networks, refusals."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import sparse

import geneverse as gv
from geneverse.tl._coexpression._assemble import TopKAssembler

from conftest import BACKENDS, assert_unchanged, snapshot

CPU_BACKENDS = [backend for backend in BACKENDS if backend[0] != "gpu"]


def top_k_of_dense(mi: np.ndarray, k: int) -> np.ndarray:
    """Each gene's ``k`` largest ``|MI|`` partners (ties: smaller index), union of both
    directions, zeros dropped: the definition of ``top_k``, written plainly."""
    keep = np.zeros(mi.shape, dtype=bool)
    for i in range(mi.shape[0]):
        order = sorted(range(mi.shape[1]), key=lambda j: (-abs(mi[i, j]), j))[:k]
        keep[i, order] = True
    keep = (keep | keep.T) & (mi != 0)
    return np.where(keep, mi, 0)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 40),
    k=st.integers(1, 12),
    block=st.integers(1, 15),
    levels=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_top_k_assembler_keeps_the_definition_under_ties(n, k, block, levels, seed):
    """Few distinct values (so many ties, and zeros), fed as row blocks in order."""
    rng = np.random.default_rng(seed)
    upper = np.triu(rng.integers(-levels, levels + 1, (n, n)), 1).astype(np.float32)
    mi = upper + upper.T
    assembler = TopKAssembler(n, k)
    for start in range(0, n, block):
        assembler.add(start, mi[start : start + block, start:])
    kept, _ = assembler.result()
    np.testing.assert_array_equal(kept.toarray(), top_k_of_dense(mi, k))


@pytest.fixture(scope="module")
def dense(pbmc) -> np.ndarray:
    return gv.tl.coexpression(pbmc, copy=True).varp["gv_mi"]


@pytest.mark.parametrize("k", [1, 5, 40])
@pytest.mark.parametrize(("backend", "device"), CPU_BACKENDS)
def test_top_k_equals_the_top_k_of_the_dense_result(pbmc, dense, k, backend, device):
    adata = gv.tl.coexpression(pbmc, top_k=k, backend=backend, copy=True)
    mi = adata.varp["gv_mi"]
    assert sparse.issparse(mi) and mi.dtype == np.float32
    assert (mi != mi.T).nnz == 0
    np.testing.assert_array_equal(mi.toarray(), top_k_of_dense(dense, k))
    assert adata.uns["gv"]["params"]["top_k"] == k


def test_top_k_survives_h5ad_round_trip(pbmc, tmp_path):
    adata = gv.tl.coexpression(pbmc, top_k=10, copy=True)
    adata.write_h5ad(tmp_path / "topk.h5ad")
    back = ad.read_h5ad(tmp_path / "topk.h5ad")
    assert (back.varp["gv_mi"] != adata.varp["gv_mi"]).nnz == 0


@pytest.mark.parametrize(("backend", "device"), CPU_BACKENDS)
def test_against_equals_the_same_block_of_the_full_result(pbmc, dense, backend, device):
    markers = ["CD79A", "MS4A1", "CST3", "NKG7", "LYZ"]
    against = pbmc.var["highly_variable"].to_numpy()
    adata = gv.tl.coexpression(pbmc, genes=markers, against=against, backend=backend, copy=True)
    rows = pbmc.var_names.isin(markers)
    wanted = (rows[:, None] & against[None, :]) | (against[:, None] & rows[None, :])
    np.testing.assert_array_equal(adata.varp["gv_mi"].toarray(), np.where(wanted, dense, 0))
    assert adata.var["gv_used"].sum() == (rows | against).sum()
    assert list(adata.uns["gv"]["params"]["genes"]) == list(pbmc.var_names[rows])


def test_against_all_genes_costs_only_the_rectangle(pbmc, dense):
    adata = gv.tl.coexpression(pbmc, genes=["CST3"], against=pbmc.var_names, copy=True)
    row = pbmc.var_names.get_loc("CST3")
    np.testing.assert_array_equal(adata.varp["gv_mi"][[row]].toarray()[0], dense[row])
    assert adata.varp["gv_mi"].nnz <= 2 * pbmc.n_vars


@pytest.mark.parametrize(("backend", "device"), CPU_BACKENDS)
def test_groupby_equals_running_on_each_subset(pbmc, backend, device):
    adata = gv.tl.coexpression(pbmc, groupby="phase", backend=backend, copy=True)
    groups = list(adata.uns["gv"]["groups"])
    assert groups == list(pbmc.obs["phase"].cat.categories)
    bins = adata.layers["gv_bins"]
    for group in groups:
        cells = (pbmc.obs["phase"] == group).to_numpy()
        alone = gv.tl.coexpression(pbmc[cells].copy(), backend=backend, copy=True)
        np.testing.assert_array_equal(adata.varp[f"gv_mi_{group}"], alone.varp["gv_mi"])
        np.testing.assert_array_equal(adata.var[f"gv_n_bins_{group}"], alone.var["gv_n_bins"])
        assert (bins[cells] != alone.layers["gv_bins"]).nnz == 0
    assert "gv_mi" not in adata.varp


def test_groupby_bad_column_changes_nothing(pbmc):
    adata = pbmc.copy()
    before = snapshot(adata)
    with pytest.raises(ValueError, match=r"not a column of adata\.obs"):
        gv.tl.coexpression(adata, groupby="cell_type")
    adata.obs["with_gaps"] = pd.Categorical(["a"] * 699 + [None])
    before = snapshot(adata)
    with pytest.raises(ValueError, match="missing values"):
        gv.tl.coexpression(adata, groupby="with_gaps")
    assert_unchanged(before, adata)


def test_too_large_dense_output_is_refused_before_allocating():
    n_genes = 400_000  # 4 bytes × 400,000² = 640 GB
    adata = ad.AnnData(sparse.random(3, n_genes, density=1e-4, format="csr", random_state=0))
    before = snapshot(adata)
    with pytest.raises(MemoryError, match=r"need about .* GB.*top_k=50"):
        gv.tl.coexpression(adata)
    assert_unchanged(before, adata)


@pytest.mark.parametrize("top_k", [0, -2, 1.5, True])
def test_bad_top_k_is_refused(pbmc, top_k):
    with pytest.raises((TypeError, ValueError), match=r"top_k(=-?\d+ is out of range| must be a)"):
        gv.tl.coexpression(pbmc, top_k=top_k, copy=True)


def test_estimate_is_logged_before_the_run(pbmc, capsys):
    gv.settings.verbosity = "info"
    gv.tl.coexpression(pbmc, copy=True)
    err = capsys.readouterr().err
    assert "co-occurrences" in err and "roughly" in err and "GB of output" in err
    assert err.index("roughly") < err.index("finished")
