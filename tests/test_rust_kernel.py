"""What is particular to the Rust kernel: threads, tiling, borrowing, errors, the GIL.

That it equals the oracle, like every backend, is in ``test_coexpression.py``.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest
from scipy import sparse

from geneverse._data._binning import bin_genes
from geneverse.kernels import BinnedGenes, CountBlock
from geneverse.kernels._numpy import NumpyKernel
from geneverse.kernels._rust import RustKernel

from conftest import full_matrix
from oracle import oracle_signed_mi

pytestmark = pytest.mark.skipif(
    RustKernel.unavailable_reason() is not None,
    reason=f"rust backend unavailable: {RustKernel.unavailable_reason()}",
)


def _counts(n_cells: int, n_genes: int, density: float, seed: int) -> np.ndarray:
    """Small integer counts (many ties), some all-zero genes and one constant gene."""
    rng = np.random.default_rng(seed)
    X = rng.poisson(3.0, size=(n_cells, n_genes)) * (rng.random((n_cells, n_genes)) < density)
    X[:, ::7] = 0  # never expressed
    if n_genes > 3:
        X[:, 3] = 2  # expressed everywhere, one value: no correlation
    return X.astype(np.float32)


def _binned(X: np.ndarray, n_bins: int = 10) -> BinnedGenes:
    return bin_genes(sparse.csc_matrix(X), n_bins)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.fixture(scope="module")
def data() -> BinnedGenes:
    return _binned(_counts(300, 90, 0.3, seed=1))


@pytest.mark.parametrize("signed", [True, False])
def test_thread_count_does_not_change_a_bit(data, signed):
    one = full_matrix(RustKernel(data, signed=signed, n_jobs=1), 37)
    two = full_matrix(RustKernel(data, signed=signed, n_jobs=2), 37)
    every_core = full_matrix(RustKernel(data, signed=signed, n_jobs=-1), 37)
    assert _same_bits(one, two)
    assert _same_bits(one, every_core)


def test_block_size_does_not_change_a_bit(data):
    from geneverse import _core

    expected = _core.CooccurrenceKernel(data, signed=True, n_jobs=2).row_block(5, 80)
    for block_genes in (1, 3, 16, 90, 256):
        kernel = _core.CooccurrenceKernel(data, signed=True, n_jobs=2, block_genes=block_genes)
        assert kernel.block_genes == block_genes
        assert _same_bits(kernel.row_block(5, 80), expected), block_genes


@pytest.mark.parametrize("n_bins", [1, 2, 3, 7, 20])
@pytest.mark.parametrize("step", [1, 4, 64])
@pytest.mark.parametrize("density", [0.4, 1.0])  # 1.0: dense blocks, bitsets on most CPUs
def test_equals_the_oracle_across_row_blocks(n_bins, step, density):
    X = _counts(60, 30, density, seed=n_bins)
    kernel = RustKernel(_binned(X, n_bins), signed=True, n_jobs=2)
    expected = oracle_signed_mi(X, n_bins=n_bins, signed=True)
    np.testing.assert_allclose(full_matrix(kernel, step), expected, atol=1e-6)


@pytest.mark.parametrize("X", [np.zeros((1, 4)), np.ones((1, 4)), np.zeros((5, 3))])
def test_degenerate_inputs_give_zeros(X):
    kernel = RustKernel(_binned(X), signed=True, n_jobs=1)
    assert not full_matrix(kernel, 2).any()


def test_read_only_inputs_are_borrowed_as_they_are(data):
    frozen = {}
    for field in dataclasses.fields(data):
        value = getattr(data, field.name)
        if isinstance(value, np.ndarray):
            value = value.copy()
            value.flags.writeable = False
        frozen[field.name] = value
    frozen_data = BinnedGenes(**frozen)
    kernel = RustKernel(frozen_data, signed=True, n_jobs=2)
    assert _same_bits(
        kernel.row_block(0, 40), RustKernel(data, signed=True, n_jobs=2).row_block(0, 40)
    )
    for name, value in frozen.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, getattr(data, name), err_msg=name)


@pytest.mark.parametrize(
    ("field", "bad", "error"),
    [
        ("indptr", lambda a: a.astype(np.int32), TypeError),
        ("genes", lambda a: a.astype(np.int64), TypeError),
        ("bins", lambda a: a.astype(np.int8), TypeError),
        ("values", lambda a: a.astype(np.float32), TypeError),
        ("varies", lambda a: a.astype(np.uint8), TypeError),
        ("bin_counts", lambda a: np.asfortranarray(a), ValueError),
        ("xlogx", lambda a: np.repeat(a, 2)[::2], ValueError),
        ("xlogx", lambda a: a[:-1], ValueError),
        ("value_sums", lambda a: a[:-1], ValueError),
        ("bin_counts", lambda a: a[:-1], ValueError),
        ("bins", lambda a: np.where(np.arange(a.size) == 0, 0, a).astype(np.uint8), ValueError),
        ("genes", lambda a: a[::-1].copy(), ValueError),
        ("bin_counts", lambda a: a - 1, ValueError),
    ],
)
def test_malformed_inputs_are_refused(data, field, bad, error):
    broken = dataclasses.replace(data, **{field: bad(getattr(data, field))})
    with pytest.raises(error, match=field if error is TypeError else None):
        RustKernel(broken, signed=True, n_jobs=1)


@pytest.mark.parametrize(("start", "stop"), [(-1, 3), (5, 4), (0, 91)])
def test_rows_out_of_range_are_refused(data, start, stop):
    kernel = RustKernel(data, signed=True, n_jobs=1)
    with pytest.raises((ValueError, OverflowError)):
        kernel.row_block(start, stop)


def test_only_the_cpu_is_supported():
    assert RustKernel.unavailable_reason() is None
    assert RustKernel.unavailable_reason("cpu") is None
    assert "CPU" in RustKernel.unavailable_reason("cuda")


@pytest.fixture(scope="module")
def dense_data() -> BinnedGenes:
    """Blocks that every cell expresses: counted with bitsets where the CPU makes it pay."""
    return _binned(_counts(300, 90, 1.0, seed=2), n_bins=4)


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("which", ["data", "dense_data"])
def test_count_blocks_equal_the_numpy_kernel(request, which, signed):
    data = request.getfixturevalue(which)
    rust = RustKernel(data, signed=signed, n_jobs=2).count_block(10, 60)
    numpy = NumpyKernel(data, signed=signed, n_jobs=1).count_block(10, 60)
    assert rust.counts.dtype == np.int64 and rust.products.dtype == np.float64
    np.testing.assert_array_equal(rust.counts, numpy.counts)
    np.testing.assert_allclose(rust.products, numpy.products, rtol=1e-12)


@pytest.mark.parametrize("which", ["data", "dense_data"])
def test_finishing_a_count_block_equals_the_row_block(request, which):
    data = request.getfixturevalue(which)
    kernel = RustKernel(data, signed=True, n_jobs=2)
    finished = kernel.finish_block(20, kernel.count_block(20, 70))
    assert _same_bits(finished, kernel.row_block(20, 70))


def test_count_blocks_of_chunks_of_cells_add_up(data):
    chunks = [_cells(data, 0, 120), _cells(data, 120, 250), _cells(data, 250, data.n_cells)]
    blocks = [RustKernel(chunk, signed=True, n_jobs=2).count_block(10, 50) for chunk in chunks]
    total = blocks[0] + blocks[1] + blocks[2]
    summary = dataclasses.replace(data, **_no_entries(data.n_cells))
    finished = RustKernel(summary, signed=True, n_jobs=2).finish_block(10, total)
    expected = RustKernel(data, signed=True, n_jobs=2).row_block(10, 50)
    np.testing.assert_allclose(finished, expected, atol=1e-6)


def _cells(data: BinnedGenes, first: int, last: int) -> BinnedGenes:
    """The cells ``first:last`` of ``data``, with their own bin counts and sums."""
    entries = slice(data.indptr[first], data.indptr[last])
    genes, bins, values = data.genes[entries], data.bins[entries], data.values[entries]
    bin_counts = np.zeros_like(data.bin_counts)
    np.add.at(bin_counts, (genes, bins), 1)
    return dataclasses.replace(
        data,
        n_cells=last - first,
        indptr=data.indptr[first : last + 1] - data.indptr[first],
        genes=genes,
        bins=bins,
        values=values,
        bin_counts=bin_counts,
        value_sums=np.bincount(genes, weights=values, minlength=data.n_genes),
        xlogx=data.xlogx[: last - first + 1],
    )


def _no_entries(n_cells: int) -> dict[str, np.ndarray]:
    return {
        "indptr": np.zeros(n_cells + 1, dtype=np.int64),
        "genes": np.zeros(0, dtype=np.int32),
        "bins": np.zeros(0, dtype=np.uint8),
        "values": np.zeros(0),
    }


def test_inconsistent_count_blocks_are_refused(data):
    kernel = RustKernel(data, signed=True, n_jobs=1)
    block = kernel.count_block(0, 30)
    with pytest.raises(ValueError, match="shape"):
        kernel.finish_block(0, CountBlock(block.counts[:, :, :-1], block.products))
    counts = block.counts.copy()
    counts[1, 0, 2, 0] += data.n_cells + 1
    with pytest.raises(ValueError, match="do not fit"):
        kernel.finish_block(0, CountBlock(counts, block.products))


def test_the_gil_is_released_while_counting():
    data = _binned(_counts(3000, 400, 1.0, seed=5))
    kernel = RustKernel(data, signed=True, n_jobs=1)
    span = {}

    def work():
        span["start"] = time.perf_counter()
        kernel.row_block(0, 400)
        span["stop"] = time.perf_counter()

    worker = threading.Thread(target=work)
    ticks = []
    worker.start()
    while worker.is_alive():
        ticks.append(time.perf_counter())
    worker.join()
    during = [t for t in ticks if span["start"] < t < span["stop"]]
    assert span["stop"] - span["start"] > 0.01
    assert len(during) > 100
