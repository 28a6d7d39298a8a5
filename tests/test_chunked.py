"""Dask arrays (local and on a distributed cluster) and backed files equal in-memory runs,
read at most twice, counted in tiles whose tasks return nothing larger than a tile."""

from __future__ import annotations

import collections
import dataclasses
from collections import Counter

import anndata as ad
import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
from dask.callbacks import Callback
from distributed import Client, LocalCluster
from scipy import sparse

import geneverse as gv
from geneverse._data import _chunked
from geneverse.tl._coexpression import _estimate, _tiles

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
def test_distributed_equals_in_memory(client, counts, backend, dense, small_tiles):
    for kwargs in ({}, {"zeros": "include", "estimator": "miller_madow", "pvals": True}):
        expected = gv.tl.coexpression(counts, backend=backend, copy=True, **kwargs)
        lazy = _as_dask(counts, dense)
        result = gv.tl.coexpression(lazy, backend=backend, copy=True, **kwargs)
        _assert_same_result(result, expected)
        assert result.uns["gv"]["backend"] == backend


@pytest.fixture
def small_tiles(monkeypatch):
    """Gene blocks of 100 genes, so that pbmc68k's 765 genes make 36 tiles."""
    monkeypatch.setattr(_tiles, "_BLOCK_GENES", (100, 100))


OUTPUTS = [
    {"top_k": 7},
    {"top_k": 3, "pvals": True, "zeros": "include"},
    {"genes": ["CST3", "LYZ"], "against": "highly_variable"},
    {"genes": "highly_variable", "pvals": True},
    {"groupby": "phase"},
    {"groupby": "phase", "top_k": 4, "pvals": True},
]


@pytest.mark.parametrize("kwargs", OUTPUTS, ids=lambda kwargs: "-".join(kwargs))
def test_local_dask_equals_in_memory_for_every_output(counts, kwargs, small_tiles):
    lazy = _as_dask(counts, dense=False, chunk=99)
    expected = gv.tl.coexpression(counts, copy=True, **kwargs)
    result = gv.tl.coexpression(lazy, copy=True, **kwargs)
    for name, value in expected.varp.items():
        other = result.varp[name]
        if sparse.issparse(value):
            assert sparse.issparse(other) and (value != other).nnz == 0, name
        else:
            np.testing.assert_array_equal(other, value, err_msg=name)
    assert (result.layers["gv_bins"] != expected.layers["gv_bins"]).nnz == 0


@pytest.fixture
def reads(monkeypatch):
    """Counts how often each chunk of cells of the raw matrix is read, by its first cell."""
    seen: Counter = Counter()
    original = _chunked._used_genes_of

    def counted(block, columns):
        seen[(block.shape[0], _first_value(block))] += 1
        return original(block, columns)

    monkeypatch.setattr(_chunked, "_used_genes_of", counted)
    return seen


def _first_value(block) -> float:
    block = block if sparse.issparse(block) else np.asarray(block)
    return float(sparse.csr_matrix(block).sum())


@pytest.mark.parametrize("kind", ["dask", "backed"])
def test_the_raw_matrix_is_read_at_most_twice(counts, reads, kind, tmp_path, small_tiles):
    """Whatever the number of genes and tiles, every chunk is read twice: runs, then bins."""
    if kind == "dask":
        data = _as_dask(counts, dense=False, chunk=70)
    else:
        counts.write_h5ad(tmp_path / "counts.h5ad")
        data = ad.read_h5ad(tmp_path / "counts.h5ad", backed="r")
    with dask.config.set(scheduler="threads"):  # in this process, where the reads are counted
        gv.tl.coexpression(data, top_k=5, pvals=True)
    assert reads and max(reads.values()) == 2
    assert sum(reads.values()) == 2 * len(reads)


class _TaskResults(Callback):
    """Records the type and size of the result of every task the threaded scheduler runs."""

    def __init__(self, input_name: str) -> None:
        super().__init__()
        self.input_name = input_name
        self.results: list[tuple[str, int, int]] = []

    def _posttask(self, key, result, dsk, state, id):
        name = key[0] if isinstance(key, tuple) else key
        if not str(name).startswith(self.input_name):  # the input array's own chunks
            self.results.append((type(result).__name__, _nbytes(result), _max_ndim(result)))


def _nbytes(result) -> int:
    if isinstance(result, list | tuple):
        return sum(_nbytes(item) for item in result)
    if hasattr(result, "nbytes"):
        return int(result.nbytes)
    if dataclasses.is_dataclass(result):
        return sum(_nbytes(getattr(result, f.name)) for f in dataclasses.fields(result))
    return 0


def _max_ndim(result) -> int:
    if isinstance(result, list | tuple):
        return max((_max_ndim(item) for item in result), default=0)
    if isinstance(result, np.ndarray):
        return result.ndim
    if dataclasses.is_dataclass(result):
        return max(
            (_max_ndim(getattr(result, f.name)) for f in dataclasses.fields(result)), default=0
        )
    return 0


@pytest.mark.parametrize("kwargs", [{}, {"top_k": 5, "pvals": True}], ids=["dense", "top-k"])
def test_no_task_returns_more_than_a_finished_tile(counts, kwargs, small_tiles):
    """Tasks return value runs, compact bins (13 bytes a value) and finished tiles: never
    a count block (4-d), never the raw values of more than one chunk."""
    lazy = _as_dask(counts, dense=False, chunk=100)
    tracker = _TaskResults(lazy.X.name)
    with tracker, dask.config.set(scheduler="threads"):
        gv.tl.coexpression(lazy, **kwargs)
    assert tracker.results
    assert max(ndim for _, _, ndim in tracker.results) <= 2
    n_entries = counts.X.nnz
    tile = 100 * 100 * 2 * 4  # a finished tile of 100 × 100 genes, MI and p-values, float32
    compact = 13 * n_entries + 8 * (counts.n_obs + 1) * 2
    for kind, nbytes, _ in tracker.results:
        if kind == "TileResult":
            assert nbytes <= max(tile, 2 * 200 * 5 * 12), (kind, nbytes)
        else:
            assert nbytes <= compact, (kind, nbytes)


def test_compact_bins_that_cannot_fit_are_refused_before_pass_2(counts, monkeypatch):
    lazy = _as_dask(counts, dense=False, chunk=100)
    fake = collections.namedtuple("memory", "available")(available=1000)
    monkeypatch.setattr(_estimate.psutil, "virtual_memory", lambda: fake)
    with pytest.raises(MemoryError, match=r"Select fewer genes with genes=.*dask\.distributed"):
        gv.tl.coexpression(lazy, top_k=5)  # no dense output: the compact bins are too large
    assert not lazy.varp and not lazy.layers and not lazy.uns
    pd.testing.assert_frame_equal(lazy.var, counts.var)


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


def test_groupby_on_backed_data_equals_in_memory(counts, tmp_path, monkeypatch):
    monkeypatch.setattr(_chunked, "SLICE_CELLS", 128)
    counts.write_h5ad(tmp_path / "counts.h5ad")
    backed = ad.read_h5ad(tmp_path / "counts.h5ad", backed="r")
    gv.tl.coexpression(backed, groupby="phase", pvals=True)
    expected = gv.tl.coexpression(counts, groupby="phase", pvals=True, copy=True)
    for name, value in expected.varp.items():
        np.testing.assert_array_equal(backed.varp[name], value, err_msg=name)
    assert (backed.layers["gv_bins"] != expected.layers["gv_bins"]).nnz == 0
    backed.file.close()


def test_chunks_are_never_densified(counts, monkeypatch):
    """Sparse chunks stay sparse: converting one to a dense array fails the run."""

    def refuse(*args, **kwargs):
        raise AssertionError("a sparse chunk was densified")

    monkeypatch.setattr(sparse.csr_matrix, "toarray", refuse)
    monkeypatch.setattr(sparse.csc_matrix, "toarray", refuse)
    monkeypatch.setattr(sparse.csr_matrix, "todense", refuse)
    gv.tl.coexpression(_as_dask(counts, dense=False), copy=True)


def test_snapshot_helper_sees_changes(counts):
    """The comparison used above fails when something changed (it can fail)."""
    adata = counts.copy()
    before = snapshot(adata)
    adata.var["x"] = 1
    with pytest.raises(AssertionError):
        assert_unchanged(before, adata)
