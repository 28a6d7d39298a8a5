"""The benchmark workload generator (benchmarks/workloads.py) at its tiny size."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "workloads.py"


def _load_workloads():
    """benchmarks/workloads.py as a module (benchmarks/ is not a package)."""
    name = "geneverse_benchmark_workloads"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


workloads = _load_workloads()
SYNTHETIC = ["seed", "dense", "atlas"]


def _dense(X) -> np.ndarray:
    return X.toarray() if sparse.issparse(X) else np.asarray(X)


@pytest.mark.parametrize("name", SYNTHETIC)
def test_deterministic(name):
    first, second = (workloads.make_workload(name, tiny=True) for _ in range(2))
    np.testing.assert_array_equal(_dense(first.X), _dense(second.X))
    np.testing.assert_array_equal(first.var["program"], second.var["program"])
    np.testing.assert_array_equal(first.obsm["program_activity"], second.obsm["program_activity"])


def test_result_does_not_depend_on_threads():
    spec = workloads.SyntheticSpec(n_genes=50, n_cells=300, nonzero=0.1, seed=7, chunk_cells=64)
    one, four = workloads.synthetic(spec, n_workers=1), workloads.synthetic(spec, n_workers=4)
    np.testing.assert_array_equal(_dense(one.X), _dense(four.X))


@pytest.mark.parametrize("name", SYNTHETIC)
def test_shape_and_sparsity(name):
    adata = workloads.make_workload(name, tiny=True)
    n_genes, n_cells = workloads.TINY_SHAPES[name]
    assert adata.shape == (n_cells, n_genes)
    X = adata.X
    values = X.data if sparse.issparse(X) else X.ravel()
    assert values.dtype == np.float32
    assert np.all(values == np.round(values))  # counts
    if workloads.SPECS[name].nonzero is None:
        assert isinstance(X, np.ndarray)
        assert X.min() >= 1
    else:
        assert sparse.isspmatrix_csr(X)
        assert values.min() >= 1
        fraction = X.nnz / (n_cells * n_genes)
        assert fraction == pytest.approx(workloads.SPECS[name].nonzero, rel=0.25)
        assert adata.uns["workload"]["nonzero_fraction"] == pytest.approx(fraction)


def test_full_specs_promise_design_sizes():
    specs = workloads.SPECS
    assert (specs["seed"].n_genes, specs["seed"].n_cells, specs["seed"].nonzero) == (
        2_000,
        5_000,
        0.10,
    )
    assert (specs["dense"].n_genes, specs["dense"].n_cells, specs["dense"].nonzero) == (
        2_000,
        5_000,
        None,
    )
    assert (specs["atlas"].n_genes, specs["atlas"].n_cells, specs["atlas"].nonzero) == (
        20_000,
        100_000,
        0.05,
    )


@pytest.mark.parametrize("name", ["seed", "dense"])
def test_planted_modules(name):
    adata = workloads.make_workload(name, tiny=True)
    program = adata.var["program"].to_numpy()
    sign = adata.var["program_sign"].to_numpy()
    assert set(np.unique(sign)) == {-1, 0, 1}
    n_programs = adata.uns["workload"]["n_programs"]
    assert adata.obsm["program_activity"].shape == (adata.n_obs, n_programs)

    corr = np.corrcoef(_dense(adata.X).T)
    same = (program[:, None] == program[None, :]) & (program[:, None] >= 0)
    np.fill_diagonal(same, False)
    together = same & (sign[:, None] == sign[None, :])
    opposite = same & (sign[:, None] != sign[None, :])
    background = (program[:, None] < 0) & (program[None, :] < 0)
    np.fill_diagonal(background, False)
    assert corr[together].mean() > 0.1
    assert corr[opposite].mean() < -0.03
    assert abs(corr[background].mean()) < 0.06


def test_pbmc68k_is_raw():
    adata = workloads.make_workload("pbmc68k", tiny=True)
    assert adata.shape == workloads.TINY_SHAPES["pbmc68k"][::-1]
    assert sparse.issparse(adata.X)
    assert adata.X.min() >= 0
    assert adata.uns["workload"]["source"].endswith(".raw")
    assert workloads.make_workload("pbmc68k").shape == (700, 765)


def test_cache_roundtrip(tmp_path):
    first = workloads.load_workload("seed", tmp_path, tiny=True)
    assert workloads.workload_path("seed", tmp_path, tiny=True).exists()
    second = workloads.load_workload("seed", tmp_path, tiny=True)
    np.testing.assert_array_equal(_dense(first.X), _dense(second.X))
    np.testing.assert_array_equal(first.var["program_sign"], second.var["program_sign"])
