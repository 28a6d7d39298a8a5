"""Dask arrays (local and on a distributed cluster) and backed files equal in-memory runs."""

from __future__ import annotations

import anndata as ad
import dask.array as da
import numpy as np
import pytest
from distributed import Client, LocalCluster
from scipy import sparse

import geneverse as gv
from geneverse._data import _chunked

from conftest import BACKENDS, assert_unchanged, snapshot

CPU_BACKENDS = [backend for backend, _ in BACKENDS if backend != "gpu"]


@pytest.fixture(scope="module")
def counts(pbmc) -> ad.AnnData:
    """pbmc68k's log-normalized values as X (sparse), 700 cells × 765 genes."""
    adata = pbmc.raw.to_adata()
    adata.obs = pbmc.obs.copy()
    adata.var["highly_variable"] = pbmc.var["highly_variable"].reindex(adata.var_names)
    return adata


@pytest.fixture(scope="module")
def in_memory(counts) -> ad.AnnData:
    return gv.tl.coexpression(counts, backend="numpy", copy=True)


def _as_dask(adata: ad.AnnData, dense: bool, chunk: int = 150) -> ad.AnnData:
    X = adata.X.toarray() if dense else adata.X
    lazy = ad.AnnData(
        da.from_array(X, chunks=(chunk, -1), asarray=False), obs=adata.obs, var=adata.var
    )
    return lazy


def _assert_same_result(result: ad.AnnData, expected: ad.AnnData) -> None:
    mi, reference = result.varp["gv_mi"], expected.varp["gv_mi"]
    if sparse.issparse(reference):
        mi, reference = mi.toarray(), reference.toarray()
    np.testing.assert_array_equal(mi, reference)
    assert (result.layers["gv_bins"] != expected.layers["gv_bins"]).nnz == 0
    np.testing.assert_array_equal(result.var["gv_n_bins"], expected.var["gv_n_bins"])


@pytest.fixture(scope="module")
def client():
    """A 2-worker cluster on loopback, started and closed by the tests."""
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
            processes=True,
        ) as cluster,
        Client(cluster) as dask_client,
    ):
        yield dask_client


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dense", [False, True], ids=["sparse-chunks", "dense-chunks"])
def test_distributed_equals_in_memory(client, counts, backend, dense):
    expected = gv.tl.coexpression(counts, backend=backend, copy=True)
    result = gv.tl.coexpression(_as_dask(counts, dense), backend=backend, copy=True)
    _assert_same_result(result, expected)
    assert result.uns["gv"]["backend"] == backend


def test_local_dask_top_k_and_against_equal_in_memory(counts):
    lazy = _as_dask(counts, dense=False, chunk=99)
    for kwargs in ({"top_k": 7}, {"genes": ["CST3", "LYZ"], "against": "highly_variable"}):
        expected = gv.tl.coexpression(counts, copy=True, **kwargs)
        _assert_same_result(gv.tl.coexpression(lazy, copy=True, **kwargs), expected)


def test_many_passes_over_the_cells_equal_one(counts, in_memory, monkeypatch):
    monkeypatch.setattr(_chunked, "_PASS_BYTES", 4 * 1024**2)
    lazy = _as_dask(counts, dense=False)
    _assert_same_result(gv.tl.coexpression(lazy, backend="numpy", copy=True), in_memory)


@pytest.mark.parametrize("layout", ["csr", "dense"])
def test_backed_equals_in_memory(counts, in_memory, tmp_path, monkeypatch, layout):
    monkeypatch.setattr(_chunked, "SLICE_CELLS", 128)
    on_disk = counts.copy()
    if layout == "dense":
        on_disk.X = on_disk.X.toarray()
    path = tmp_path / "counts.h5ad"
    on_disk.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    with pytest.raises(ValueError, match="use copy=False"):
        gv.tl.coexpression(backed, copy=True)
    gv.tl.coexpression(backed, backend="numpy")
    _assert_same_result(backed, in_memory)
    mask, entropy = gv.pp.filter_entropy(backed, inplace=False)
    expected_mask, expected_entropy = gv.pp.filter_entropy(counts, inplace=False)
    np.testing.assert_array_equal(mask, expected_mask)
    np.testing.assert_allclose(entropy, expected_entropy, rtol=1e-12)
    backed.file.close()


def test_bad_value_in_a_late_chunk_is_found_before_anything_is_written(counts):
    X = counts.X.toarray()
    X[650, 3] = -1.0
    lazy = ad.AnnData(da.from_array(X, chunks=(100, -1)), obs=counts.obs, var=counts.var)
    before = snapshot(lazy)
    with pytest.raises(ValueError, match=f"negative values .*cell {counts.obs_names[650]!r}"):
        gv.tl.coexpression(lazy)
    assert "gv_mi" not in lazy.varp and "gv" not in lazy.uns
    assert list(lazy.var.columns) == list(before.var.columns)


def test_groupby_on_chunked_data_says_what_to_do(counts):
    lazy = _as_dask(counts, dense=False)
    before = snapshot(lazy)
    with pytest.raises(ValueError, match="groupby= needs the data in memory"):
        gv.tl.coexpression(lazy, groupby="phase")
    assert list(lazy.var.columns) == list(before.var.columns)


def test_chunks_are_never_densified(counts, monkeypatch):
    """Sparse chunks stay sparse: converting one to a dense array fails the run."""

    def refuse(*args, **kwargs):
        raise AssertionError("a sparse chunk was densified")

    monkeypatch.setattr(sparse.csr_matrix, "toarray", refuse)
    monkeypatch.setattr(sparse.csc_matrix, "toarray", refuse)
    monkeypatch.setattr(sparse.csr_matrix, "todense", refuse)
    gv.tl.coexpression(_as_dask(counts, dense=False), backend="rust", copy=True)


def test_snapshot_helper_sees_changes(counts):
    """The comparison used above fails when something changed (it can fail)."""
    adata = counts.copy()
    before = snapshot(adata)
    adata.var["x"] = 1
    with pytest.raises(AssertionError):
        assert_unchanged(before, adata)
