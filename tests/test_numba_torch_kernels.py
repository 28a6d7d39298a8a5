"""Properties of the numba and torch kernels themselves, beyond "equals the oracle".

``test_coexpression.py`` checks every backend against the oracle through
``gv.tl.coexpression``; here the kernels are driven directly: thread counts, row blocks,
gene tiles and cell chunks must not change a single bit of the result, the torch kernel
runs on ``device="cpu"``, and the CUDA paths (``@pytest.mark.gpu``) agree exactly.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from scipy import sparse

from geneverse._binning import bin_genes
from geneverse.kernels import _torch
from geneverse.kernels._base import BinnedGenes, Kernel
from geneverse.kernels._numba import NumbaKernel
from geneverse.kernels._torch import TorchKernel

from oracle import oracle_signed_mi

TOLERANCE = 1e-6

requires_torch = pytest.mark.skipif(
    not TorchKernel.cpu_available(), reason="PyTorch is not installed"
)


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


requires_cuda = pytest.mark.skipif(not _cuda_available(), reason="no CUDA device")


def _expression(seed: int, n_cells: int = 80, n_genes: int = 30) -> np.ndarray:
    """Small integer counts with the hard genes: all zero, constant, binary, never zero."""
    rng = np.random.default_rng(seed)
    X = rng.poisson(rng.uniform(0.2, 4, n_genes), (n_cells, n_genes)).astype(np.float64)
    X *= rng.random((n_cells, n_genes)) < rng.uniform(0.05, 1, n_genes)
    if n_genes >= 4:
        X[:, 0] = 0
        X[:, 1] = 3
        X[:, 2] = 2 * (rng.random(n_cells) < 0.5)
        X[:, 3] = rng.integers(1, 50, n_cells)
    return X


def _binned(X: np.ndarray, n_bins: int = 10) -> BinnedGenes:
    return bin_genes(sparse.csc_matrix(X), n_bins)


def _full_matrix(kernel: Kernel, block: int | None = None) -> np.ndarray:
    """The symmetric MI matrix, assembled from row blocks of ``block`` rows."""
    n_genes = kernel.data.n_genes
    block = block or kernel.preferred_block_rows
    out = np.zeros((n_genes, n_genes), dtype=np.float32)
    for start in range(0, n_genes, block):
        stop = min(n_genes, start + block)
        rows = kernel.row_block(start, stop)
        assert rows.dtype == np.float32
        assert rows.shape == (stop - start, n_genes - start)
        out[start:stop, start:] = rows
        out[start:, start:stop] = rows.T
    return out


# -- numba ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n_bins", [1, 2, 5, 20])
@pytest.mark.parametrize("signed", [True, False])
def test_numba_equals_oracle(n_bins, signed):
    X = _expression(n_bins)
    got = _full_matrix(NumbaKernel(_binned(X, n_bins), signed=signed, n_jobs=1), block=7)
    expected = oracle_signed_mi(X, n_bins=n_bins, signed=signed)
    np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)


def test_numba_threads_give_identical_results():
    import numba

    data = _binned(_expression(1, n_cells=200, n_genes=60))
    before = numba.get_num_threads()
    one = _full_matrix(NumbaKernel(data, signed=True, n_jobs=1))
    two = _full_matrix(NumbaKernel(data, signed=True, n_jobs=2))
    np.testing.assert_array_equal(one, two)
    assert numba.get_num_threads() == before


@pytest.mark.parametrize("block", [1, 5, 60])
def test_numba_row_blocks_do_not_change_the_result(block):
    data = _binned(_expression(2, n_genes=60))
    kernel = NumbaKernel(data, signed=True, n_jobs=2)
    np.testing.assert_array_equal(_full_matrix(kernel, block), _full_matrix(kernel, 60))


def test_numba_runs_on_the_cpu_only():
    assert NumbaKernel.unavailable_reason() is None
    assert NumbaKernel.unavailable_reason("cpu") is None
    assert "CPU only" in NumbaKernel.unavailable_reason("cuda")


# -- torch on the CPU -----------------------------------------------------------------------


@requires_torch
@pytest.mark.parametrize("n_bins", [1, 3, 20])
@pytest.mark.parametrize("signed", [True, False])
def test_torch_cpu_equals_oracle(n_bins, signed):
    X = _expression(10 + n_bins)
    kernel = TorchKernel(_binned(X, n_bins), signed=signed, n_jobs=1, device="cpu")
    expected = oracle_signed_mi(X, n_bins=n_bins, signed=signed)
    np.testing.assert_allclose(_full_matrix(kernel, 9), expected, atol=TOLERANCE, rtol=0)


@requires_torch
def test_torch_cpu_equals_numba_bit_for_bit():
    data = _binned(_expression(3, n_cells=150, n_genes=50))
    numba_mi = _full_matrix(NumbaKernel(data, signed=True, n_jobs=2))
    torch_mi = _full_matrix(TorchKernel(data, signed=True, n_jobs=2, device="cpu"))
    np.testing.assert_array_equal(torch_mi, numba_mi)


@requires_torch
@pytest.mark.parametrize("chunk_cells", [1, 7, 64])
def test_torch_cell_chunks_give_the_one_chunk_result(chunk_cells):
    data = _binned(_expression(4, n_cells=100, n_genes=25))
    whole = TorchKernel(data, signed=True, n_jobs=1, device="cpu", chunk_cells=100)
    chunked = TorchKernel(data, signed=True, n_jobs=1, device="cpu", chunk_cells=chunk_cells)
    assert chunked._plan.chunk_cells == chunk_cells
    np.testing.assert_array_equal(_full_matrix(chunked), _full_matrix(whole))


@requires_torch
@pytest.mark.parametrize("tile_genes", [1, 3, 8, 40])
def test_torch_gene_tiles_do_not_change_the_result(tile_genes, monkeypatch):
    monkeypatch.setattr(_torch, "_MIN_DIAGONAL_SPLIT", 4)  # exercise the split diagonal too
    data = _binned(_expression(5, n_genes=40))
    reference = _full_matrix(NumbaKernel(data, signed=True, n_jobs=1))
    kernel = TorchKernel(data, signed=True, n_jobs=1, device="cpu", tile_genes=tile_genes)
    for block in (5, 17, 40):  # blocks smaller and larger than a tile
        np.testing.assert_array_equal(_full_matrix(kernel, block), reference)


@requires_torch
@pytest.mark.parametrize("shape", [(0, 4), (4, 0), (1, 5), (3, 1)])
def test_torch_and_numba_handle_degenerate_shapes(shape):
    data = _binned(np.ones(shape))
    for kernel in (
        NumbaKernel(data, signed=True, n_jobs=1),
        TorchKernel(data, signed=True, n_jobs=1, device="cpu"),
    ):
        np.testing.assert_array_equal(_full_matrix(kernel, 2), np.zeros((shape[1],) * 2))


@requires_torch
def test_torch_needs_cuda_for_the_default_device(monkeypatch):
    import torch

    assert TorchKernel.unavailable_reason("cpu") is None
    assert TorchKernel.cpu_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    reason = TorchKernel.unavailable_reason()
    assert "CUDA" in reason and 'device="cpu"' in reason and "rust" in reason
    assert TorchKernel.unavailable_reason("cuda") == reason
    with pytest.raises(RuntimeError, match="CUDA"):
        TorchKernel(_binned(_expression(6)), signed=True, n_jobs=1)


def test_torch_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    for device in (None, "cpu", "cuda"):
        assert "pip install geneverse[gpu]" in TorchKernel.unavailable_reason(device)
    assert not TorchKernel.cpu_available()


@requires_torch
def test_torch_cpu_refuses_cuda_only_products():
    data = _binned(_expression(7))
    with pytest.raises(ValueError, match="CUDA"):
        TorchKernel(data, signed=True, n_jobs=1, device="cpu", gemm="int8")
    with pytest.raises(ValueError, match="gemm"):
        TorchKernel(data, signed=True, n_jobs=1, device="cpu", gemm="float64")


# -- torch on CUDA --------------------------------------------------------------------------


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("gemm", ["int8", "half", "float32"])
def test_cuda_products_equal_numba_bit_for_bit(gemm):
    data = _binned(_expression(8, n_cells=300, n_genes=70))
    reference = _full_matrix(NumbaKernel(data, signed=True, n_jobs=2))
    kernel = TorchKernel(data, signed=True, n_jobs=1, device="cuda", gemm=gemm)
    np.testing.assert_array_equal(_full_matrix(kernel), reference)


@pytest.mark.gpu
@requires_cuda
def test_cuda_default_device_tiles_and_chunks(monkeypatch):
    monkeypatch.setattr(_torch, "_MIN_DIAGONAL_SPLIT", 8)
    data = _binned(_expression(9, n_cells=300, n_genes=70))
    reference = _full_matrix(NumbaKernel(data, signed=True, n_jobs=2))
    default = TorchKernel(data, signed=True, n_jobs=1)
    assert default._plan.gemm == "int8"
    np.testing.assert_array_equal(_full_matrix(default), reference)
    small = TorchKernel(data, signed=True, n_jobs=1, tile_genes=16, chunk_cells=37)
    np.testing.assert_array_equal(_full_matrix(small, 23), reference)
