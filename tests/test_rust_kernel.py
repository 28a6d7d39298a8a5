"""The Rust kernel: the NumPy reference's bits for every scoring choice, and what is
particular to it (threads, tiling, borrowing, errors, the GIL)."""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import sparse

from geneverse._data._binned import BinnedGenes
from geneverse._data._binning import bin_genes
from geneverse.kernels import SIGN_TOLERANCE, PairScores, Scoring
from geneverse.kernels._numpy import NumpyKernel
from geneverse.kernels._rust import RustKernel
from geneverse.tl._coexpression._statistics import g_test_pvalues

from oracle import oracle_scores

pytestmark = pytest.mark.skipif(
    RustKernel.unavailable_reason() is not None,
    reason=f"rust backend unavailable: {RustKernel.unavailable_reason()}",
)

#: Every scoring choice.
SCORINGS = [Scoring(*flags) for flags in itertools.product([False, True], repeat=4)]
#: The default score and the recommended one (every correction and the test).
DEFAULT = Scoring()
RECOMMENDED = Scoring(include_zeros=True, miller_madow=True, g_test=True)


def _name(scoring: Scoring) -> str:
    flags = [f.name for f in dataclasses.fields(scoring) if getattr(scoring, f.name)]
    return "+".join(flags) or "unsigned"


def _counts(n_cells: int, n_genes: int, density: float, seed: int) -> np.ndarray:
    """Small integer counts (many ties), some all-zero genes and one constant gene."""
    rng = np.random.default_rng(seed)
    X = rng.poisson(3.0, size=(n_cells, n_genes)) * (rng.random((n_cells, n_genes)) < density)
    X[:, ::7] = 0  # never expressed
    if n_genes > 3:
        X[:, 3] = 2  # expressed everywhere, one value: no correlation
    return X.astype(np.float32)


def _binned(X, n_bins: int = 10) -> BinnedGenes:
    matrix = sparse.csc_matrix(X)
    matrix.eliminate_zeros()
    return bin_genes(matrix, n_bins)


#: Each output of a kernel and its dtype.
_DTYPES = {"mi": np.float32, "statistic": np.float64, "dof": np.int32, "pvalues": np.float32}


def _full(kernel, step: int) -> PairScores:
    """A kernel's (genes × genes) scores, from row blocks of ``step`` rows, each checked
    for dtype and shape (with a test: the statistic and dof, or the p-values of a Rust
    kernel that finishes them)."""
    n = kernel.data.n_genes
    fused = kernel.scoring.g_test and getattr(kernel, "finish_pvalues", False)
    present = {"mi": True, "statistic": kernel.scoring.g_test and not fused, "pvalues": fused}
    present["dof"] = present["statistic"]
    whole = {name: np.zeros((n, n), dtype=_DTYPES[name]) for name in present if present[name]}
    for start in range(0, n, step):
        stop = min(n, start + step)
        block = kernel.scores(start, stop)
        for name, is_present in present.items():
            part = getattr(block, name)
            assert (part is not None) == is_present, name
            if part is not None:
                assert part.dtype == _DTYPES[name] and part.shape == (stop - start, n - start)
                whole[name][start:stop, start:] = part
                whole[name][start:, start:stop] = part.T
    return PairScores(**whole)


def _same_bits(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    unsigned = {4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
    return np.array_equal(a.view(unsigned), b.view(unsigned))


def _with_pvalues(scores: PairScores) -> PairScores:
    """``scores`` with the p-values of its statistic and dof, when it has those only."""
    if scores.pvalues is not None or scores.statistic is None:
        return scores
    return dataclasses.replace(scores, pvalues=g_test_pvalues(scores.statistic, scores.dof))


def _assert_same_scores(got: PairScores, expected: PairScores, where: str = "") -> None:
    """Every output of both is the same (np.array_equal, what the contract asks, and,
    stricter, the very same bits); the p-values of a kernel that finishes them are those
    of the other's statistic and dof."""
    got, expected = _with_pvalues(got), _with_pvalues(expected)
    for field in ("mi", "statistic", "dof", "pvalues"):
        a, b = getattr(got, field), getattr(expected, field)
        if field in ("statistic", "dof") and (a is None or b is None):
            continue  # one kernel finished the p-values, compared below
        assert (a is None) == (b is None), (where, field)
        if a is not None:
            assert np.array_equal(a, b), (where, field, np.abs(a - b).max())
            assert _same_bits(a, b), (where, field)
    assert not np.signbit(got.mi[got.mi == 0]).any(), where  # never -0.0


@st.composite
def expression(draw) -> np.ndarray:
    """Small cells × genes matrices with the hard cases: all-zero genes, genes at one
    level, genes with more levels than bins, dense genes, many ties (values on bin edges);
    small integers or multiples of 1/4, sometimes far from 0 (signs of dense genes)."""
    n_cells = draw(st.integers(1, 40))
    n_genes = draw(st.integers(1, 8))
    columns = []
    for _ in range(n_genes):
        kind = draw(st.sampled_from(["zero", "constant", "few", "many", "dense"]))
        expressed = np.array(
            draw(st.lists(st.booleans(), min_size=n_cells, max_size=n_cells))
            if kind != "dense"
            else [True] * n_cells
        )
        levels = {"zero": 1, "constant": 1, "few": 3, "many": 40, "dense": 25}[kind]
        values = draw(st.lists(st.integers(1, levels), min_size=n_cells, max_size=n_cells))
        column = np.array(values, dtype=np.float64) * expressed
        if kind == "zero":
            column[:] = 0
        columns.append(column)
    X = np.stack(columns, axis=1)
    if draw(st.booleans()):
        X = X / 4
    if draw(st.booleans()):
        X = np.where(X > 0, X + 1e6, 0.0)
    return X


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    X=expression(),
    n_bins=st.integers(1, 12),
    scoring=st.sampled_from(SCORINGS),
    step=st.integers(1, 9),
    block_genes=st.sampled_from([None, 1, 2, 3, 256]),
)
def test_equals_the_numpy_kernel_bit_for_bit(X, n_bins, scoring, step, block_genes):
    data = _binned(X, n_bins)
    rust = RustKernel(data, scoring, n_jobs=2)
    numpy = NumpyKernel(data, scoring, n_jobs=1)
    _assert_same_scores(_full(rust, step), _full(numpy, data.n_genes or 1))
    statistic = RustKernel(data, scoring, n_jobs=2, finish_pvalues=False)
    _assert_same_scores(_full(statistic, step), _full(numpy, data.n_genes or 1), "statistic")
    n = data.n_genes
    for start, stop, first in [(0, n // 2, (n + 1) // 2), (0, 1, n - 1), (n // 3, n // 2, n)]:
        if start <= stop <= first <= n:
            _assert_same_scores(
                rust.scores(start, stop, first), numpy.scores(start, stop, first), "rectangle"
            )
    if block_genes is not None:
        core = _core_kernel(data, scoring, n_jobs=2, block_genes=block_genes)
        _assert_same_scores(PairScores(*core.scores(0, n)), numpy.scores(0, n), "blocks")


def _core_kernel(data: BinnedGenes, scoring: Scoring, **options):
    from geneverse import _core

    return _core.CooccurrenceKernel(
        data,
        signed=scoring.signed,
        include_zeros=scoring.include_zeros,
        miller_madow=scoring.miller_madow,
        g_test=scoring.g_test,
        sign_tolerance=SIGN_TOLERANCE,
        **options,
    )


@pytest.fixture(scope="module")
def data() -> BinnedGenes:
    return _binned(_counts(300, 90, 0.3, seed=1))


@pytest.fixture(scope="module")
def dense_data() -> BinnedGenes:
    """Blocks that every cell expresses: counted with bitsets where the CPU makes it pay,
    their products as matrix products."""
    return _binned(_counts(300, 90, 1.0, seed=2) + 1.0, n_bins=4)


@pytest.mark.parametrize("scoring", SCORINGS, ids=_name)
@pytest.mark.parametrize("which", ["data", "dense_data"])
def test_row_blocks_and_rectangles_equal_the_numpy_kernel(request, which, scoring):
    data = request.getfixturevalue(which)
    numpy = NumpyKernel(data, scoring, n_jobs=1)
    for finish_pvalues in (True, False):
        rust = RustKernel(data, scoring, n_jobs=2, finish_pvalues=finish_pvalues)
        _assert_same_scores(_full(rust, 37), _full(numpy, 90))
        for start, stop, first in [(0, 30, 30), (10, 20, 55), (40, 89, 89), (0, 90, 90)]:
            expected = numpy.scores(start, stop, first)
            _assert_same_scores(rust.scores(start, stop, first), expected)


@pytest.fixture(scope="module")
def pbmc_binned(pbmc) -> BinnedGenes:
    """The genes of ``pbmc68k_reduced().raw`` (log-normalised, 700 cells × 765 genes)."""
    return _binned(pbmc.raw.X)


@pytest.mark.parametrize("scoring", SCORINGS, ids=_name)
def test_real_data_equals_the_numpy_kernel(pbmc_binned, scoring):
    # The first 120 genes of every scoring choice; all genes below.
    head = _gene_subset(pbmc_binned, 120)
    rust = RustKernel(head, scoring, n_jobs=2)
    _assert_same_scores(_full(rust, 50), _full(NumpyKernel(head, scoring, n_jobs=1), 120))


@pytest.mark.slow
@pytest.mark.parametrize("scoring", [DEFAULT, RECOMMENDED], ids=_name)
def test_all_real_genes_equal_the_numpy_kernel(pbmc_binned, scoring):
    rust = RustKernel(pbmc_binned, scoring, n_jobs=2)
    numpy = NumpyKernel(pbmc_binned, scoring, n_jobs=1)
    _assert_same_scores(_full(rust, rust.preferred_block_rows), _full(numpy, 400))


def _gene_subset(data: BinnedGenes, n_genes: int) -> BinnedGenes:
    """The first ``n_genes`` genes of ``data``, over all its cells."""
    keep = data.genes < n_genes
    cell = np.repeat(np.arange(data.n_cells), np.diff(data.indptr))[keep]
    indptr = np.zeros(data.n_cells + 1, dtype=np.int64)
    np.cumsum(np.bincount(cell, minlength=data.n_cells), out=indptr[1:])
    return BinnedGenes.of(
        n_cells=data.n_cells,
        indptr=indptr,
        genes=data.genes[keep],
        bins=data.bins[keep],
        values=data.values[keep],
        n_bins=data.n_bins[:n_genes],
        bin_counts=data.bin_counts[:n_genes],
        varies=data.varies[:n_genes],
    )


@pytest.mark.parametrize("scoring", SCORINGS, ids=_name)
@pytest.mark.parametrize(("n_bins", "density"), [(1, 0.5), (3, 0.4), (7, 1.0), (20, 0.4)])
def test_equals_the_oracle(scoring, n_bins, density):
    X = _counts(50, 16, density, seed=n_bins)
    kernel = RustKernel(_binned(X, n_bins), scoring, n_jobs=2)
    got = _full(kernel, 6)
    mi, p = oracle_scores(
        X,
        n_bins,
        signed=scoring.signed,
        estimator="miller_madow" if scoring.miller_madow else "plugin",
        zeros="include" if scoring.include_zeros else "exclude",
        pvals=scoring.g_test,
    )
    np.testing.assert_allclose(got.mi, mi, atol=1e-6, rtol=0)
    if scoring.g_test:
        np.testing.assert_allclose(got.pvalues, p, atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def many_cells() -> BinnedGenes:
    """70,000 cells: genes 0, 1 and 4 with a bin of more than 65,535 cells (counted in
    ``u32`` tiles with each other, in ``u16`` tiles with the others), heavy ties."""
    rng = np.random.default_rng(7)
    n = 70_000
    X = np.zeros((n, 6))
    X[:, 0] = np.where(rng.random(n) < 0.97, 1.0, rng.integers(2, 6, n))
    X[:, 1] = np.where(rng.random(n) < 0.96, 3.0, rng.integers(0, 9, n))
    X[:, 2] = rng.poisson(0.3, n)
    X[:, 3] = rng.integers(1, 4, n) * (rng.random(n) < 0.99)
    X[:, 4] = X[:, 0] * (rng.random(n) < 0.995)
    X[:, 5] = rng.poisson(2.0, n) * (rng.random(n) < 0.5)
    return _binned(X)


@pytest.mark.parametrize("scoring", [DEFAULT, RECOMMENDED, Scoring(signed=False)], ids=_name)
def test_bins_of_more_than_65535_cells_equal_the_numpy_kernel(many_cells, scoring):
    largest = many_cells.bin_counts.max(axis=1)
    assert (largest[[0, 1, 4]] > 65_535).all() and (largest[[2, 3, 5]] <= 65_535).all()
    expected = _full(NumpyKernel(many_cells, scoring, n_jobs=1), 6)
    _assert_same_scores(_full(RustKernel(many_cells, scoring, n_jobs=2), 4), expected)
    for block_genes in (1, 2, 6):
        core = _core_kernel(many_cells, scoring, n_jobs=2, block_genes=block_genes)
        _assert_same_scores(PairScores(*core.scores(0, 6)), expected, f"{block_genes}")


@pytest.mark.parametrize("scoring", [DEFAULT, RECOMMENDED], ids=_name)
def test_rectangles_are_slices_of_row_blocks(data, scoring):
    kernel = RustKernel(data, scoring, n_jobs=2)
    for start, stop in [(0, 17), (20, 64), (88, 90)]:
        block = kernel.scores(start, stop)
        for first in sorted({stop, min(stop + 3, 90), 71, 89, 90} - set(range(stop))):
            rectangle = kernel.scores(start, stop, first)
            for field in ("mi", "statistic", "dof"):
                whole = getattr(block, field)
                part = None if whole is None else np.ascontiguousarray(whole[:, first - start :])
                assert _same_bits(getattr(rectangle, field), part), (start, stop, first, field)


@pytest.mark.parametrize("scoring", [DEFAULT, RECOMMENDED], ids=_name)
@pytest.mark.parametrize("which", ["data", "dense_data"])
def test_thread_count_does_not_change_a_bit(request, which, scoring):
    data = request.getfixturevalue(which)
    one = _full(RustKernel(data, scoring, n_jobs=1), 37)
    _assert_same_scores(_full(RustKernel(data, scoring, n_jobs=2), 37), one)
    _assert_same_scores(_full(RustKernel(data, scoring, n_jobs=-1), 37), one)


@pytest.mark.parametrize("scoring", [DEFAULT, RECOMMENDED], ids=_name)
@pytest.mark.parametrize("which", ["data", "dense_data"])
def test_block_size_does_not_change_a_bit(request, which, scoring):
    data = request.getfixturevalue(which)
    expected = _core_kernel(data, scoring, n_jobs=2)
    for block_genes in (1, 3, 16, 90, 256):
        kernel = _core_kernel(data, scoring, n_jobs=2, block_genes=block_genes)
        assert kernel.block_genes == block_genes
        for request_ in [(5, 80, None), (5, 30, 40)]:
            got, want = kernel.scores(*request_), expected.scores(*request_)
            for a, b in zip(got, want, strict=True):
                assert _same_bits(a, b), (block_genes, request_)


@pytest.mark.parametrize("X", [np.zeros((1, 4)), np.ones((1, 4)), np.zeros((5, 3))])
@pytest.mark.parametrize("scoring", [DEFAULT, RECOMMENDED], ids=_name)
def test_degenerate_inputs_give_zeros(X, scoring):
    data = _binned(X)
    got = _full(RustKernel(data, scoring, n_jobs=1), 2)
    assert not got.mi.any()
    _assert_same_scores(got, _full(NumpyKernel(data, scoring, n_jobs=1), 4))


def test_no_cells_and_no_genes():
    for n_cells, n_genes in [(0, 3), (4, 0), (0, 0)]:
        data = _binned(np.zeros((n_cells, n_genes)))
        for scoring in (DEFAULT, RECOMMENDED):
            got = RustKernel(data, scoring, n_jobs=1).scores(0, n_genes)
            assert got.mi.shape == (n_genes, n_genes) and not got.mi.any()
            if scoring.g_test:
                assert got.pvalues.shape == (n_genes, n_genes)
                assert (got.pvalues == 1).all()


def test_read_only_inputs_are_borrowed_as_they_are(data):
    frozen = {}
    for field in dataclasses.fields(data):
        value = getattr(data, field.name)
        if isinstance(value, np.ndarray):
            value = value.copy()
            value.flags.writeable = False
        frozen[field.name] = value
    frozen_data = BinnedGenes(**frozen)
    kernel = RustKernel(frozen_data, RECOMMENDED, n_jobs=2)
    _assert_same_scores(kernel.scores(0, 40), RustKernel(data, RECOMMENDED, n_jobs=2).scores(0, 40))
    for name, value in frozen.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, getattr(data, name), err_msg=name)


def _unaligned(array: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``array`` one byte off its alignment."""
    buffer = np.zeros(array.nbytes + 1, dtype=np.uint8)
    copy = buffer[1:].view(array.dtype).reshape(array.shape)
    copy[...] = array
    return copy


def test_unaligned_inputs_are_copied(data):
    """Arrays unpickled from a buffer (a Dask worker's) may be unaligned: the wrapper
    copies those, the core refuses them."""
    unaligned = {
        name: _unaligned(getattr(data, name)) for name in ("indptr", "n_bins", "values", "log2")
    }
    assert not any(array.flags.aligned for array in unaligned.values())
    moved = dataclasses.replace(data, **unaligned)
    _assert_same_scores(
        RustKernel(moved, RECOMMENDED, n_jobs=2).scores(0, 50),
        RustKernel(data, RECOMMENDED, n_jobs=2).scores(0, 50),
    )
    with pytest.raises(ValueError, match="indptr must be C-contiguous and aligned"):
        _core_kernel(moved, RECOMMENDED, n_jobs=1)


@pytest.mark.parametrize(
    ("field", "bad", "error"),
    [
        ("indptr", lambda a: a.astype(np.int32), TypeError),
        ("genes", lambda a: a.astype(np.int64), TypeError),
        ("bins", lambda a: a.astype(np.int8), TypeError),
        ("values", lambda a: a.astype(np.float32), TypeError),
        ("varies", lambda a: a.astype(np.uint8), TypeError),
        ("expressed", lambda a: a.astype(np.int32), TypeError),
        ("occupied", lambda a: a.astype(np.float64), TypeError),
        ("full_inverse", lambda a: a.astype(np.float32), TypeError),
        ("log2", lambda a: list(a), TypeError),
        ("bin_counts", lambda a: np.asfortranarray(a), ValueError),
        ("bin_counts", lambda a: a.ravel(), ValueError),
        ("xlogx", lambda a: np.repeat(a, 2)[::2], ValueError),
        ("xlogx", lambda a: a[:-1], ValueError),
        ("log2", lambda a: a[:-1], ValueError),
        ("value_sums", lambda a: a[:-1], ValueError),
        ("value_norms", lambda a: a[:-1], ValueError),
        ("bins_xlogx", lambda a: a[:-1], ValueError),
        ("bin_counts", lambda a: a[:-1], ValueError),
        ("bins", lambda a: np.where(np.arange(a.size) == 0, 0, a).astype(np.uint8), ValueError),
        ("genes", lambda a: a[::-1].copy(), ValueError),
        ("bin_counts", lambda a: a - 1, ValueError),
        ("bin_counts", lambda a: a + np.eye(*a.shape, k=1, dtype=np.int64), ValueError),
        ("expressed", lambda a: a + 1, ValueError),
        ("occupied", lambda a: a + 1, ValueError),
    ],
)
def test_malformed_inputs_are_refused(data, field, bad, error):
    broken = dataclasses.replace(data, **{field: bad(getattr(data, field))})
    with pytest.raises(error, match=field):
        RustKernel(broken, RECOMMENDED, n_jobs=1)
    with pytest.raises((TypeError, ValueError), match=field):  # the core checks it too
        _core_kernel(broken, RECOMMENDED, n_jobs=1)


@pytest.mark.parametrize(
    ("start", "stop", "first"),
    [(-1, 3, None), (5, 4, None), (0, 91, None), (10, 20, 15), (10, 20, 5), (0, 3, 91)],
)
def test_bad_requests_are_refused(data, start, stop, first):
    kernel = RustKernel(data, DEFAULT, n_jobs=1)
    with pytest.raises(ValueError, match=r"rows|columns"):
        kernel.scores(start, stop, first)
    with pytest.raises(ValueError, match=r"start|stop|first_column|columns"):
        kernel._core.scores(start, stop, first)


def test_bad_options_are_refused(data):
    with pytest.raises(ValueError, match="block_genes"):
        _core_kernel(data, DEFAULT, n_jobs=1, block_genes=0)
    with pytest.raises(ValueError, match="sign_tolerance"):
        from geneverse import _core

        _core.CooccurrenceKernel(
            data,
            signed=True,
            include_zeros=False,
            miller_madow=False,
            g_test=False,
            sign_tolerance=-1.0,
            n_jobs=1,
        )


def test_only_the_cpu_is_supported():
    assert RustKernel.unavailable_reason() is None
    assert RustKernel.unavailable_reason("cpu") is None
    assert "CPU" in RustKernel.unavailable_reason("cuda")


def test_the_gil_is_released_while_counting():
    data = _binned(_counts(3000, 400, 1.0, seed=5))
    kernel = RustKernel(data, RECOMMENDED, n_jobs=1)
    span = {}

    def work():
        span["start"] = time.perf_counter()
        kernel.scores(0, 400)
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
