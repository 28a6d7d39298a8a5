"""Properties of the numba and torch kernels themselves, beyond "equals the oracle".

``test_coexpression.py`` checks every backend against the oracle through
``gv.tl.coexpression``; here the kernels are driven directly: thread counts, row blocks,
gene tiles and cell chunks must not change a single bit of the result, the torch kernel
runs on ``device="cpu"``, and the CUDA paths (``@pytest.mark.gpu``) agree exactly. The
split of a row block into counts and finish (how chunks of cells are reduced) gives the
fused row block to the last bit, also when the counts are summed over chunks of cells and
finished by a kernel that holds only the marginals.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys

import numpy as np
import pytest
from scipy import sparse

from geneverse._data._binning import GeneBins, ValueRuns, bin_cells, bin_genes
from geneverse.kernels import BinnedGenes, CountBlock, Kernel, _torch
from geneverse.kernels._numba import NumbaKernel
from geneverse.kernels._torch import TorchKernel

from conftest import full_matrix
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


# -- numba ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n_bins", [1, 2, 5, 20])
@pytest.mark.parametrize("signed", [True, False])
def test_numba_equals_oracle(n_bins, signed):
    X = _expression(n_bins)
    got = full_matrix(NumbaKernel(_binned(X, n_bins), signed=signed, n_jobs=1), block=7)
    expected = oracle_signed_mi(X, n_bins=n_bins, signed=signed)
    np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)


def test_numba_threads_give_identical_results():
    import numba

    data = _binned(_expression(1, n_cells=200, n_genes=60))
    before = numba.get_num_threads()
    one = full_matrix(NumbaKernel(data, signed=True, n_jobs=1))
    two = full_matrix(NumbaKernel(data, signed=True, n_jobs=2))
    np.testing.assert_array_equal(one, two)
    assert numba.get_num_threads() == before
    kernel = NumbaKernel(data, signed=True, n_jobs=1)
    np.testing.assert_array_equal(kernel.finish_block(0, kernel.count_block(0, 60)), one)
    assert numba.get_num_threads() == before


@pytest.mark.parametrize("block", [1, 5, 60])
def test_numba_row_blocks_do_not_change_the_result(block):
    data = _binned(_expression(2, n_genes=60))
    kernel = NumbaKernel(data, signed=True, n_jobs=2)
    np.testing.assert_array_equal(full_matrix(kernel, block), full_matrix(kernel, 60))


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
    np.testing.assert_allclose(full_matrix(kernel, 9), expected, atol=TOLERANCE, rtol=0)


@requires_torch
def test_torch_cpu_equals_numba_bit_for_bit():
    data = _binned(_expression(3, n_cells=150, n_genes=50))
    numba_mi = full_matrix(NumbaKernel(data, signed=True, n_jobs=2))
    torch_mi = full_matrix(TorchKernel(data, signed=True, n_jobs=2, device="cpu"))
    np.testing.assert_array_equal(torch_mi, numba_mi)


@requires_torch
@pytest.mark.parametrize("chunk_cells", [1, 7, 64])
def test_torch_cell_chunks_give_the_one_chunk_result(chunk_cells):
    data = _binned(_expression(4, n_cells=100, n_genes=25))
    whole = TorchKernel(data, signed=True, n_jobs=1, device="cpu", chunk_cells=100)
    chunked = TorchKernel(data, signed=True, n_jobs=1, device="cpu", chunk_cells=chunk_cells)
    assert chunked._plan.chunk_cells == chunk_cells
    np.testing.assert_array_equal(full_matrix(chunked), full_matrix(whole))


@requires_torch
@pytest.mark.parametrize("tile_genes", [1, 3, 8, 40])
def test_torch_gene_tiles_do_not_change_the_result(tile_genes, monkeypatch):
    monkeypatch.setattr(_torch, "_MIN_DIAGONAL_SPLIT", 4)  # exercise the split diagonal too
    data = _binned(_expression(5, n_genes=40))
    reference = full_matrix(NumbaKernel(data, signed=True, n_jobs=1))
    kernel = TorchKernel(data, signed=True, n_jobs=1, device="cpu", tile_genes=tile_genes)
    for block in (5, 17, 40):  # blocks smaller and larger than a tile
        np.testing.assert_array_equal(full_matrix(kernel, block), reference)


@requires_torch
@pytest.mark.parametrize("shape", [(0, 4), (4, 0), (1, 5), (3, 1)])
def test_torch_and_numba_handle_degenerate_shapes(shape):
    data = _binned(np.ones(shape))
    for kernel in (
        NumbaKernel(data, signed=True, n_jobs=1),
        TorchKernel(data, signed=True, n_jobs=1, device="cpu"),
    ):
        np.testing.assert_array_equal(full_matrix(kernel, 2), np.zeros((shape[1],) * 2))


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


# -- counts and finish apart (chunks of cells) ------------------------------------------------


def _numba_kernel(data: BinnedGenes, signed: bool) -> Kernel:
    return NumbaKernel(data, signed=signed, n_jobs=2)


def _torch_kernel(data: BinnedGenes, signed: bool) -> Kernel:
    """Small tiles and cell chunks, and split diagonal tiles: every path of the torch kernel."""
    return TorchKernel(data, signed=signed, n_jobs=1, device="cpu", tile_genes=9, chunk_cells=31)


SPLIT_KERNELS = [
    pytest.param(_numba_kernel, id="numba"),
    pytest.param(_torch_kernel, id="torch-cpu", marks=requires_torch),
]
#: Row blocks: all rows, inside, at the end, one row, none.
ROW_BLOCKS = [(0, 30), (4, 21), (17, 30), (29, 30), (30, 30), (8, 8)]


@pytest.fixture
def split_diagonals(monkeypatch):
    monkeypatch.setattr(_torch, "_MIN_DIAGONAL_SPLIT", 4)


def _log_values(X: np.ndarray) -> np.ndarray:
    """Non-integer values, so that the value products are rounded (log1p of counts)."""
    return np.log1p(X * 1.7)


def _assert_bitwise(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype == expected.dtype == np.float32
    assert got.shape == expected.shape
    assert got.tobytes() == expected.tobytes()
    assert not np.signbit(expected[expected == 0]).any(), "a signed MI of -0.0"


@pytest.mark.usefixtures("split_diagonals")
@pytest.mark.parametrize("make_kernel", SPLIT_KERNELS)
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize(("n_bins", "values"), [(10, "counts"), (3, "log"), (1, "counts")])
def test_finish_of_counts_is_the_row_block_bit_for_bit(make_kernel, signed, n_bins, values):
    X = _expression(20 + n_bins, n_cells=90)
    if values == "log":
        X = _log_values(X)
    data = _binned(X, n_bins)
    kernel = make_kernel(data, signed)
    width = max(data.max_bins - 1, 1)
    for start, stop in ROW_BLOCKS:
        block = kernel.count_block(start, stop)
        assert block.counts.dtype == np.int64 and block.products.dtype == np.float64
        assert block.counts.shape == (stop - start, width, 30 - start, width)
        assert block.products.shape == (stop - start, 30 - start)
        if not signed:
            assert not block.products.any()
        _assert_bitwise(kernel.finish_block(start, block), kernel.row_block(start, stop))


@requires_torch
@pytest.mark.usefixtures("split_diagonals")
@pytest.mark.parametrize("values", ["counts", "log"])
def test_numba_and_torch_count_the_same(values):
    X = _expression(30, n_cells=90)
    if values == "log":
        X = _log_values(X)
    data = _binned(X)
    numba_kernel, torch_kernel = _numba_kernel(data, True), _torch_kernel(data, True)
    for start, stop in ROW_BLOCKS:
        numba_block = numba_kernel.count_block(start, stop)
        torch_block = torch_kernel.count_block(start, stop)
        np.testing.assert_array_equal(torch_block.counts, numba_block.counts)
        # float64 sums of the same products, maybe in another order
        np.testing.assert_allclose(torch_block.products, numba_block.products, rtol=1e-12)


def _cell_chunks(X: np.ndarray, n_bins: int, bounds: list[int]):
    """The global bins, the in-memory input, each chunk's input and the summary."""
    csc = sparse.csc_matrix(X)
    genes = GeneBins.of_runs(ValueRuns.of_matrix(csc), X.shape[0], n_bins)
    whole = bin_cells(csc, genes, all_cells=True)
    chunks = [bin_cells(csc[lo:hi], genes) for lo, hi in itertools.pairwise(bounds)]
    return whole, chunks, genes.summary()


@pytest.mark.parametrize("values", ["counts", "log"])
def test_marginals_of_all_cells_are_those_of_their_matrix(values):
    X = _expression(40, n_cells=100)
    X[:, 3] = 0  # a gene expressed nowhere
    X[:, 5] = 2  # and one constant everywhere
    csc = sparse.csc_matrix(_log_values(X) if values == "log" else X)
    genes = GeneBins.of_runs(ValueRuns.of_matrix(csc), X.shape[0], 10)
    given, computed = bin_cells(csc, genes, all_cells=True), bin_cells(csc, genes)
    for field in dataclasses.fields(given):
        a, b = getattr(given, field.name), getattr(computed, field.name)
        if field.name == "value_sums":  # added in value order, not in cell order
            np.testing.assert_allclose(a, b, rtol=1e-14)
        else:
            np.testing.assert_array_equal(a, b)
    assert not computed.varies[[0, 1, 3, 5]].any() and computed.varies[2]


@pytest.mark.usefixtures("split_diagonals")
@pytest.mark.parametrize("make_kernel", SPLIT_KERNELS)
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize(("n_bins", "values"), [(10, "counts"), (2, "counts"), (10, "log")])
def test_counts_summed_over_cell_chunks_finish_to_the_in_memory_row_block(
    make_kernel, signed, n_bins, values
):
    # With counts the products of every chunk are exact; with log values their sums may
    # differ in the last bits, which can flip the sign of a covariance ~0: here only of
    # pairs with MI 0, which are 0 (never -0.0) either way.
    X = _expression(40 + n_bins, n_cells=100)
    if values == "log":
        X = _log_values(X)
    X[60:, 4] = 0  # a gene absent from the last chunk
    whole, chunks, summary = _cell_chunks(X, n_bins, [0, 37, 60, 100])
    assert summary.genes.size == 0 and not summary.indptr.any()
    in_memory = make_kernel(whole, signed)
    finisher = make_kernel(summary, signed)
    for start, stop in ROW_BLOCKS:
        blocks = [make_kernel(chunk, signed).count_block(start, stop) for chunk in chunks]
        total = blocks[0] + blocks[1] + blocks[2]
        np.testing.assert_array_equal(total.counts, in_memory.count_block(start, stop).counts)
        _assert_bitwise(finisher.finish_block(start, total), in_memory.row_block(start, stop))


@pytest.mark.parametrize("make_kernel", SPLIT_KERNELS)
def test_a_kernel_on_a_summary_without_entries(make_kernel):
    X = _expression(50, n_cells=60)
    whole, _, summary = _cell_chunks(X, 10, [0, 60])
    kernel = make_kernel(summary, True)
    block = kernel.count_block(3, 12)  # no entries: no co-occurrences
    assert block.counts.shape == (9, whole.max_bins - 1, 27, whole.max_bins - 1)
    assert not block.counts.any() and not block.products.any()
    in_memory = make_kernel(whole, True)
    counts = in_memory.count_block(0, 29)
    _assert_bitwise(kernel.finish_block(0, counts), in_memory.row_block(0, 29))
    with pytest.raises(ValueError, match="count block"):
        kernel.finish_block(1, counts)  # one column too many for rows 1:30
    with pytest.raises(ValueError, match="outside"):
        kernel.count_block(5, 31)


@pytest.mark.parametrize("make_kernel", SPLIT_KERNELS)
def test_summary_of_cells_that_express_nothing(make_kernel):
    X = np.zeros((20, 6))
    _, chunks, summary = _cell_chunks(X, 10, [0, 7, 20])
    first, second = (make_kernel(chunk, True).count_block(0, 6) for chunk in chunks)
    total = first + second
    assert isinstance(total, CountBlock)
    got = make_kernel(summary, True).finish_block(0, total)
    _assert_bitwise(got, np.zeros((6, 6), dtype=np.float32))


# -- torch on CUDA --------------------------------------------------------------------------


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("gemm", ["int8", "half", "float32"])
def test_cuda_products_equal_numba_bit_for_bit(gemm):
    data = _binned(_expression(8, n_cells=300, n_genes=70))
    reference = full_matrix(NumbaKernel(data, signed=True, n_jobs=2))
    kernel = TorchKernel(data, signed=True, n_jobs=1, device="cuda", gemm=gemm)
    np.testing.assert_array_equal(full_matrix(kernel), reference)


@pytest.mark.gpu
@requires_cuda
def test_cuda_default_device_tiles_and_chunks(monkeypatch):
    monkeypatch.setattr(_torch, "_MIN_DIAGONAL_SPLIT", 8)
    data = _binned(_expression(9, n_cells=300, n_genes=70))
    reference = full_matrix(NumbaKernel(data, signed=True, n_jobs=2))
    default = TorchKernel(data, signed=True, n_jobs=1)
    assert default._plan.gemm == "int8"
    np.testing.assert_array_equal(full_matrix(default), reference)
    small = TorchKernel(data, signed=True, n_jobs=1, tile_genes=16, chunk_cells=37)
    np.testing.assert_array_equal(full_matrix(small, 23), reference)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("gemm", ["int8", "float32"])
def test_cuda_counts_and_finish_apart_equal_the_row_block(gemm, monkeypatch):
    monkeypatch.setattr(_torch, "_MIN_DIAGONAL_SPLIT", 8)
    X = _expression(11, n_cells=300, n_genes=70)
    whole, chunks, summary = _cell_chunks(X, 10, [0, 120, 121, 300])

    def make(data: BinnedGenes, device: str = "cuda") -> TorchKernel:
        kwargs = {"gemm": gemm} if device == "cuda" else {}
        return TorchKernel(data, signed=True, n_jobs=1, device=device, tile_genes=24, **kwargs)

    kernel, finisher, on_cpu = make(whole), make(summary), make(whole, "cpu")
    for start, stop in [(0, 70), (5, 50), (69, 70)]:
        expected = kernel.row_block(start, stop)
        block = kernel.count_block(start, stop)
        _assert_bitwise(kernel.finish_block(start, block), expected)
        total = make(chunks[0]).count_block(start, stop)
        for chunk in chunks[1:]:
            total = total + make(chunk).count_block(start, stop)
        np.testing.assert_array_equal(total.counts, block.counts)
        _assert_bitwise(finisher.finish_block(start, total), expected)
        # the finish adds in a fixed order and reads log2 from a table: CPU == CUDA
        _assert_bitwise(on_cpu.finish_block(start, block), expected)


def test_no_nvidia_driver_is_answered_without_importing_torch(monkeypatch):
    from geneverse.kernels import _torch

    monkeypatch.setattr(_torch, "_nvidia_driver_present", lambda: False)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setattr("builtins.__import__", _refuse_torch_import(__import__))
    assert "CUDA" in TorchKernel.unavailable_reason()


def _refuse_torch_import(real_import):
    def guarded(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise AssertionError("torch was imported")
        return real_import(name, *args, **kwargs)

    return guarded
