"""The numba and torch kernels, driven directly: the NumPy kernel's bits, and the oracle.

``NumpyKernel`` is the reference of the kernel contract (the docs page "How the scores are
computed"): both kernels must give its very bits, the MI (``float32``), the G statistic
(``float64``) and the degrees of freedom (``int32``), for every scoring choice, for row
blocks and for rectangles, whatever their threads, gene tiles or cell chunks. The one
allowed difference: the torch kernel sums the products of the sign values with a matrix
product, in another order, so a *sign* may differ where a pair's covariance is within
rounding of its bound (never on data whose products are exact: small integers or
multiples of 1/4 on a power-of-two number of cells, used wherever tiles or chunks are
compared). The torch kernel runs on ``device="cpu"`` (the CUDA path minus its ``int8``
product); the CUDA tests (``@pytest.mark.gpu``) are skipped without a device.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys

import numpy as np
import pytest
import scipy.special
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import sparse

from geneverse._data._binning import bin_genes
from geneverse._utils import GPU, MILLER_MADOW, NUMBA, PLUGIN
from geneverse.kernels import SIGN_TOLERANCE, BinnedGenes, PairScores, Scoring, _torch
from geneverse.kernels._numba import NumbaKernel
from geneverse.kernels._numpy import NumpyKernel
from geneverse.kernels._torch import TorchKernel

from oracle import oracle_scores

TOLERANCE = 1e-6

#: Every scoring choice: signed, include_zeros, miller_madow, g_test.
SCORINGS = [Scoring(*flags) for flags in itertools.product([False, True], repeat=4)]
DEFAULT = Scoring()
RECOMMENDED = Scoring(signed=True, include_zeros=True, miller_madow=True, g_test=True)


def _name(scoring: Scoring) -> str:
    flags = ("signed", "zeros", "mm", "g")
    on = [flag for flag, value in zip(flags, vars(scoring).values(), strict=True) if value]
    return "-".join(on) or "none"


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


# -- inputs ---------------------------------------------------------------------------------


def _expression(seed: int, n_cells: int = 64, n_genes: int = 30) -> np.ndarray:
    """Small integer counts with the hard genes: all zero, constant, binary, never zero.

    On a power-of-two number of cells (the default) every product of sign values and
    every sum of them is exact, so the torch kernel's signs are the reference's too.
    """
    rng = np.random.default_rng(seed)
    X = rng.poisson(rng.uniform(0.2, 4, n_genes), (n_cells, n_genes)).astype(np.float64)
    X *= rng.random((n_cells, n_genes)) < rng.uniform(0.05, 1, n_genes)
    if n_genes >= 5:
        X[:, 0] = 0
        X[:, 1] = 3
        X[:, 2] = 2 * (rng.random(n_cells) < 0.5)
        X[:, 3] = rng.integers(1, 50, n_cells)
        X[:, 4] = X[:, 3] // 2 + 1  # dense, and tied with gene 3
    return X


def _binned(X: np.ndarray, n_bins: int = 10) -> BinnedGenes:
    return bin_genes(sparse.csc_matrix(X), n_bins)


@st.composite
def _expressions(draw) -> tuple[np.ndarray, int]:
    """Few cells and genes, with ties, genes all zero, constant or never zero, values
    small integers or multiples of 1/4; and a number of bins."""
    n_cells = draw(st.integers(1, 24))
    columns = []
    for _ in range(draw(st.integers(1, 7))):
        kind = draw(st.sampled_from(["sparse", "zero", "constant", "dense"]))
        if kind == "zero":
            column = [0] * n_cells
        elif kind == "constant":
            column = [draw(st.integers(1, 5))] * n_cells
        else:
            low = 1 if kind == "dense" else 0
            column = draw(st.lists(st.integers(low, 4), min_size=n_cells, max_size=n_cells))
        columns.append(column)
    scale = draw(st.sampled_from([1.0, 0.25]))
    return np.array(columns, dtype=np.float64).T * scale, draw(st.sampled_from([1, 2, 3, 10]))


# -- kernels --------------------------------------------------------------------------------


def _numba(data: BinnedGenes, scoring: Scoring, **options) -> NumbaKernel:
    return NumbaKernel(data, scoring, n_jobs=options.pop("n_jobs", 1), **options)


def _torch_cpu(data: BinnedGenes, scoring: Scoring, **options) -> TorchKernel:
    """Small tiles and cell chunks by default: several tiles, split diagonals, chunks."""
    options = {"n_jobs": 1, "tile_genes": 7, "chunk_cells": 29, **options}
    return TorchKernel(data, scoring, device="cpu", **options)


KERNELS = [
    pytest.param(_numba, id=NUMBA),
    pytest.param(_torch_cpu, id=f"{GPU}-cpu", marks=requires_torch),
]


@pytest.fixture(autouse=True)
def _split_diagonals(monkeypatch):
    """Diagonal tiles of more than 4 genes are split, so small tiles take that path too."""
    monkeypatch.setattr(_torch, "_MIN_DIAGONAL_SPLIT", 4)


# -- comparisons ----------------------------------------------------------------------------


def _near_sign_bound(data: BinnedGenes, start: int, stop: int, first: int) -> np.ndarray:
    """The pairs whose ``|cov|`` is within rounding of its bound: there, and only there,
    a sum of the value products in another order may change the sign."""
    values = sparse.csr_matrix(
        (data.values, data.genes, data.indptr), shape=(data.n_cells, data.n_genes)
    ).toarray()
    products = values[:, start:stop].T @ values[:, first:]
    n_cells = float(data.n_cells)
    sums_i, sums_j = data.value_sums[start:stop, None], data.value_sums[None, first:]
    norms_i, norms_j = data.value_norms[start:stop, None], data.value_norms[None, first:]
    scale = n_cells * norms_i * norms_j + np.abs(sums_i * sums_j)
    covariance = n_cells * products - sums_i * sums_j
    return np.abs(np.abs(covariance) - SIGN_TOLERANCE * scale) <= 2.0**-40 * scale


def _assert_scores(got: PairScores, expected: PairScores, near_bound=None) -> None:
    """Bit for bit (``near_bound``: the pairs where a sign alone may differ)."""
    assert got.mi.dtype == np.float32 and got.mi.shape == expected.mi.shape
    assert not np.signbit(got.mi[got.mi == 0]).any(), "an MI of -0.0"
    differ = got.mi != expected.mi
    if near_bound is not None:
        differ &= ~near_bound
    assert not differ.any(), f"{differ.sum()} MI differ, e.g. at {np.argwhere(differ)[:3]}"
    if expected.statistic is None:
        assert got.statistic is None and got.dof is None
        return
    assert got.statistic.dtype == np.float64 and got.dof.dtype == np.int32
    np.testing.assert_array_equal(got.statistic, expected.statistic)
    np.testing.assert_array_equal(got.dof, expected.dof)


def _assert_like_numpy(kernel, data: BinnedGenes, scoring: Scoring, requests) -> None:
    """``kernel.scores(*request)`` equals the NumPy kernel's for every request."""
    reference = NumpyKernel(data, scoring, n_jobs=1)
    exact_signs = isinstance(kernel, NumbaKernel) or not scoring.signed
    for start, stop, first in requests:
        near = None
        if not exact_signs:
            near = _near_sign_bound(data, start, stop, start if first is None else first)
        expected = reference.scores(start, stop, first)
        _assert_scores(kernel.scores(start, stop, first), expected, near)


def _full(kernel, block: int | None = None) -> PairScores:
    """The kernel's symmetric scores of all pairs, from row blocks of ``block`` rows."""
    n_genes = kernel.data.n_genes
    block = block or kernel.preferred_block_rows
    g_test = kernel.scoring.g_test
    mi = np.zeros((n_genes, n_genes), dtype=np.float32)
    statistic = np.zeros(mi.shape) if g_test else None
    dof = np.zeros(mi.shape, dtype=np.int32) if g_test else None
    for start in range(0, n_genes, block):
        stop = min(n_genes, start + block)
        rows = kernel.scores(start, stop)
        for full, part in ((mi, rows.mi), (statistic, rows.statistic), (dof, rows.dof)):
            if full is None:
                assert part is None
                continue
            assert part.dtype == full.dtype and part.shape == (stop - start, n_genes - start)
            full[start:stop, start:] = part
            full[start:, start:stop] = part.T
    return PairScores(mi=mi, statistic=statistic, dof=dof)


#: Row blocks and rectangles of 30 genes: all rows, inside, at the end, one row, the
#: first column given as the first row, rectangles after the rows, none.
REQUESTS = [
    (0, 30, None),
    (4, 21, None),
    (17, 30, None),
    (29, 30, None),
    (6, 13, 6),
    (0, 9, 9),
    (3, 11, 20),
    (28, 29, 29),
    (8, 8, None),
    (2, 5, 30),
]


# -- the NumPy kernel's bits ----------------------------------------------------------------


@pytest.mark.parametrize("make_kernel", KERNELS)
@pytest.mark.parametrize("scoring", SCORINGS, ids=_name)
def test_kernels_give_the_numpy_kernels_bits(make_kernel, scoring):
    data = _binned(_expression(1))
    _assert_like_numpy(make_kernel(data, scoring), data, scoring, REQUESTS)


@pytest.mark.parametrize("make_kernel", KERNELS)
@pytest.mark.parametrize("n_bins", [1, 2, 4])
def test_few_bins_give_the_numpy_kernels_bits(make_kernel, n_bins):
    data = _binned(_expression(2, n_cells=50), n_bins)  # products may be rounded here
    for scoring in (DEFAULT, RECOMMENDED, Scoring(signed=False, miller_madow=True)):
        _assert_like_numpy(make_kernel(data, scoring), data, scoring, REQUESTS[:4])


@given(
    example=_expressions(),
    scoring=st.sampled_from(SCORINGS),
    tile_genes=st.sampled_from([1, 2, 3, 8]),
    chunk_cells=st.sampled_from([1, 5, None]),
    cut=st.data(),
)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_inputs_give_the_numpy_kernels_bits(example, scoring, tile_genes, chunk_cells, cut):
    X, n_bins = example
    n_genes = X.shape[1]
    data = _binned(X, n_bins)
    stop = cut.draw(st.integers(1, n_genes), label="stop")
    start = cut.draw(st.integers(0, stop), label="start")
    first = cut.draw(st.integers(stop, n_genes), label="first")
    requests = [(0, n_genes, None), (start, stop, None), (start, stop, first)]
    _assert_like_numpy(_numba(data, scoring), data, scoring, requests)
    if TorchKernel.cpu_available():
        kernel = _torch_cpu(data, scoring, tile_genes=tile_genes, chunk_cells=chunk_cells)
        _assert_like_numpy(kernel, data, scoring, requests)


@pytest.fixture(scope="module")
def pbmc_binned() -> BinnedGenes:
    """The genes of ``scanpy.datasets.pbmc68k_reduced().raw`` (700 cells × 765 genes,
    log-normalized values: their products are rounded)."""
    import scanpy as sc

    return _binned(sc.datasets.pbmc68k_reduced().raw.X)


@pytest.mark.parametrize("scoring", [DEFAULT, RECOMMENDED], ids=_name)
def test_real_genes_give_the_numpy_kernels_bits(pbmc_binned, scoring):
    data, requests = pbmc_binned, [(0, 48, None), (100, 140, 500)]
    kernels = [_numba(data, scoring, n_jobs=2)]
    if TorchKernel.cpu_available():
        kernels.append(TorchKernel(data, scoring, n_jobs=1, device="cpu"))
    for kernel in kernels:
        _assert_like_numpy(kernel, data, scoring, requests)


# -- the oracle -----------------------------------------------------------------------------


def _pvalues(scores: PairScores) -> np.ndarray:
    """The shared finish of the p-values: ``chi2.sf(statistic, dof)``, 1 where dof is 0."""
    tested = scores.dof > 0
    p = np.ones(scores.statistic.shape)
    p[tested] = scipy.special.chdtrc(scores.dof[tested], scores.statistic[tested])
    return p


@pytest.mark.parametrize("make_kernel", KERNELS)
@pytest.mark.parametrize(
    ("signed", "estimator", "zeros", "n_bins"),
    [
        (True, PLUGIN, "exclude", 10),
        (False, MILLER_MADOW, "exclude", 3),
        (True, PLUGIN, "include", 3),
        (True, MILLER_MADOW, "include", 10),
    ],
)
def test_kernels_equal_the_oracle(make_kernel, signed, estimator, zeros, n_bins):
    X = _expression(3, n_cells=70, n_genes=14)
    scoring = Scoring(
        signed=signed,
        include_zeros=zeros == "include",
        miller_madow=estimator == MILLER_MADOW,
        g_test=True,
    )
    got = _full(make_kernel(_binned(X, n_bins), scoring), block=5)
    mi, p = oracle_scores(X, n_bins, signed=signed, estimator=estimator, zeros=zeros, pvals=True)
    np.testing.assert_allclose(got.mi, mi, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(_pvalues(got), p, rtol=TOLERANCE, atol=0)


# -- rectangles, threads, tiles, chunks -----------------------------------------------------


@pytest.mark.parametrize("make_kernel", KERNELS)
@pytest.mark.parametrize("scoring", [DEFAULT, RECOMMENDED], ids=_name)
def test_rectangles_are_slices_of_the_row_block(make_kernel, scoring):
    data = _binned(_expression(4))
    kernel = make_kernel(data, scoring)
    for start, stop in [(0, 30), (3, 10), (12, 13)]:
        block = kernel.scores(start, stop)
        _assert_scores(kernel.scores(start, stop, start), block)
        for first in sorted({stop, min(stop + 2, 30), max(stop, 29), 30}):
            cut = slice(first - start, None)
            expected = PairScores(
                mi=block.mi[:, cut],
                statistic=None if block.statistic is None else block.statistic[:, cut],
                dof=None if block.dof is None else block.dof[:, cut],
            )
            _assert_scores(kernel.scores(start, stop, first), expected)


@pytest.mark.parametrize("scoring", [DEFAULT, RECOMMENDED], ids=_name)
def test_numba_threads_and_row_blocks_change_no_bit(scoring):
    import numba

    data = _binned(_expression(5, n_genes=40))
    before = numba.get_num_threads()
    reference = _full(NumpyKernel(data, scoring, n_jobs=1), block=40)
    for n_jobs, block in [(1, 40), (2, 1), (2, 7), (0, 40)]:
        kernel = _numba(data, scoring, n_jobs=n_jobs)
        _assert_scores(_full(kernel, block), reference)
        assert numba.get_num_threads() == before


@requires_torch
@pytest.mark.parametrize("scoring", [DEFAULT, RECOMMENDED], ids=_name)
def test_torch_tiles_chunks_and_threads_change_no_bit(scoring):
    import torch

    data = _binned(_expression(6, n_genes=40))
    before = torch.get_num_threads()
    reference = _full(NumpyKernel(data, scoring, n_jobs=1), block=40)
    for tile_genes, chunk_cells, n_jobs, block in [
        (1, 64, 1, 40),
        (3, 1, 1, 17),
        (8, 7, 2, 5),
        (40, None, 2, 40),
        (None, 64, 1, 13),
    ]:
        kernel = _torch_cpu(
            data, scoring, tile_genes=tile_genes, chunk_cells=chunk_cells, n_jobs=n_jobs
        )
        assert kernel._plan.tile_genes == min(tile_genes or 256, 40)
        _assert_scores(_full(kernel, block), reference)
        assert torch.get_num_threads() == before


@requires_torch
@pytest.mark.parametrize("scoring", [DEFAULT, RECOMMENDED], ids=_name)
def test_torch_int8_products_give_the_same_bits(scoring, monkeypatch):
    """The CUDA default's ``int8`` one-hot tiles and ``torch._int_mm`` counts, run on the
    CPU (where ``_int_mm`` exists too), with the shapes CUDA's ``_int_mm`` accepts."""
    import torch

    real_int_mm = torch._int_mm

    def int_mm(a, b):
        assert a.dtype == b.dtype == torch.int8
        assert a.shape[0] > 16 and a.shape[1] % 8 == 0 and b.shape[1] % 8 == 0
        return real_int_mm(a, b)

    monkeypatch.setattr(torch, "_int_mm", int_mm)
    data = _binned(_expression(14, n_genes=40))
    reference = _full(NumpyKernel(data, scoring, n_jobs=1), block=40)
    for tile_genes, chunk_cells in [(1, 64), (9, 13), (40, None)]:
        kernel = _torch_cpu(data, scoring, tile_genes=tile_genes, chunk_cells=chunk_cells)
        kernel._plan = dataclasses.replace(kernel._plan, gemm="int8")
        _assert_scores(_full(kernel, 17), reference)


@pytest.mark.parametrize("make_kernel", KERNELS)
@pytest.mark.parametrize("shape", [(0, 4), (4, 0), (1, 5), (3, 1), (6, 2)])
def test_degenerate_shapes(make_kernel, shape):
    data = _binned(np.ones(shape))
    n_genes = shape[1]
    for scoring in (DEFAULT, RECOMMENDED):
        kernel = make_kernel(data, scoring)
        scores = kernel.scores(0, n_genes)
        if shape[0] > 0:  # (the NumPy kernel reads past its log2 table without cells)
            _assert_scores(scores, NumpyKernel(data, scoring, n_jobs=1).scores(0, n_genes))
        assert not scores.mi.any() and not _full(kernel, 2).mi.any()
        assert scores.statistic is None or not scores.statistic.any()


@pytest.mark.parametrize("make_kernel", KERNELS)
def test_empty_requests(make_kernel):
    data = _binned(_expression(7, n_genes=12))
    kernel = make_kernel(data, RECOMMENDED)
    for request, shape in [((3, 3), (0, 9)), ((12, 12), (0, 0)), ((0, 2, 12), (2, 0))]:
        scores = kernel.scores(*request)
        assert scores.mi.shape == scores.statistic.shape == scores.dof.shape == shape


@pytest.mark.parametrize("make_kernel", KERNELS)
def test_bad_requests_raise(make_kernel):
    kernel = make_kernel(_binned(_expression(8, n_genes=12)), DEFAULT)
    for start, stop in [(5, 3), (0, 13), (-1, 4)]:
        with pytest.raises(ValueError, match="outside"):
            kernel.scores(start, stop)
    for first in (4, 7, 13, 0):
        with pytest.raises(ValueError, match="columns from"):
            kernel.scores(2, 8, first)


# -- where each kernel runs -----------------------------------------------------------------


def test_numba_runs_on_the_cpu_only():
    assert NumbaKernel.unavailable_reason() is None
    assert NumbaKernel.unavailable_reason("cpu") is None
    assert "CPU only" in NumbaKernel.unavailable_reason("cuda")
    with pytest.raises(RuntimeError, match="CPU only"):
        NumbaKernel(_binned(_expression(9)), DEFAULT, n_jobs=1, device="cuda")


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
        TorchKernel(_binned(_expression(10)), DEFAULT, n_jobs=1)


def test_torch_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    for device in (None, "cpu", "cuda"):
        assert "pip install geneverse[gpu]" in TorchKernel.unavailable_reason(device)
    assert not TorchKernel.cpu_available()


@requires_torch
def test_torch_refuses_bad_plans():
    data = _binned(_expression(11))
    with pytest.raises(ValueError, match="CUDA"):
        TorchKernel(data, DEFAULT, n_jobs=1, device="cpu", gemm="int8")
    with pytest.raises(ValueError, match="gemm"):
        TorchKernel(data, DEFAULT, n_jobs=1, device="cpu", gemm="float64")
    for option in ("tile_genes", "chunk_cells"):
        for value in (0, -3, 2.5):
            with pytest.raises(ValueError, match=option):
                TorchKernel(data, DEFAULT, n_jobs=1, device="cpu", **{option: value})


def test_no_nvidia_driver_is_answered_without_importing_torch(monkeypatch):
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


# -- torch on CUDA --------------------------------------------------------------------------


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("gemm", ["int8", "half", "float32"])
def test_cuda_gives_the_numpy_kernels_bits(gemm):
    data = _binned(_expression(12, n_cells=256, n_genes=70))
    requests = [(0, 70, None), (5, 50, None), (69, 70, None), (3, 20, 33)]
    for scoring in SCORINGS:
        kernel = TorchKernel(data, scoring, n_jobs=1, device="cuda", gemm=gemm)
        _assert_like_numpy(kernel, data, scoring, requests)


@pytest.mark.gpu
@requires_cuda
def test_cuda_default_device_tiles_and_chunks():
    data = _binned(_expression(13, n_cells=256, n_genes=70))
    for scoring in (DEFAULT, RECOMMENDED):
        reference = _full(NumpyKernel(data, scoring, n_jobs=1), block=70)
        default = TorchKernel(data, scoring, n_jobs=1)
        assert default._plan.gemm == "int8"
        _assert_scores(_full(default), reference)
        small = TorchKernel(data, scoring, n_jobs=1, tile_genes=16, chunk_cells=37)
        _assert_scores(_full(small, 23), reference)
        on_cpu = TorchKernel(data, scoring, n_jobs=1, device="cpu", tile_genes=16)
        _assert_scores(_full(on_cpu, 23), reference)


@pytest.mark.gpu
@requires_cuda
def test_cuda_real_genes_give_the_numpy_kernels_bits(pbmc_binned):
    data = pbmc_binned
    for scoring in (DEFAULT, RECOMMENDED):
        kernel = TorchKernel(data, scoring, n_jobs=1, tile_genes=128)
        _assert_like_numpy(kernel, data, scoring, [(0, 300, None), (300, 400, 400)])
