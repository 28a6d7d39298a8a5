"""Estimators, G-test, Benjamini–Hochberg and the permutation helpers of ``_statistics``.

The oracles here are the definitions of ``geneverse._statistics`` written out as plain
per-pair loops over dense bins (like ``tests/oracle.py``), independent of the counts.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import sparse

from geneverse._data._binning import bin_genes
from geneverse.kernels._numpy import NumpyKernel
from geneverse.tl._coexpression import _statistics as gs

from oracle import oracle_bins, oracle_signs

# --------------------------------------------------------------------------------------------
# Oracles, straight from the definitions
# --------------------------------------------------------------------------------------------


def oracle_table(a: np.ndarray, b: np.ndarray, na: int, nb: int, zeros: str) -> np.ndarray:
    """The pair's joint counts: over all cells (include) or where A or B > 0 (exclude)."""
    cells = np.ones(a.shape, dtype=bool) if zeros == "include" else (a > 0) | (b > 0)
    table = np.zeros((na, nb))
    for x, y in zip(a[cells], b[cells], strict=True):
        table[x, y] += 1
    return table


def oracle_entropy(counts: np.ndarray, miller_madow: bool) -> float:
    """Plug-in entropy in bits, plus (m - 1) / (2 n ln 2) for Miller–Madow."""
    n = counts.sum()
    p = counts[counts > 0] / n
    h = -float(np.sum(p * np.log2(p)))
    if miller_madow:
        h += (np.count_nonzero(counts) - 1) / (2 * n * math.log(2))
    return h


def oracle_mi(a, b, na, nb, *, estimator: str, zeros: str) -> float:
    """MI = H(A) + H(B) - H(A, B) of the pair's table, clipped at 0; 0 for an empty table."""
    table = oracle_table(a, b, na, nb, zeros)
    if table.sum() == 0:
        return 0.0
    mm = estimator == "miller_madow"
    h_a = oracle_entropy(table.sum(axis=1), mm)
    h_b = oracle_entropy(table.sum(axis=0), mm)
    return max(h_a + h_b - oracle_entropy(table.ravel(), mm), 0.0)


def oracle_g_test(a, b, na, nb, williams: bool = True) -> tuple[float, int, float]:
    """G, df and p of the full table (all cells), with Williams' q, from the textbook."""
    table = oracle_table(a, b, na, nb, "include")
    n = table.sum()
    rows, cols = table.sum(axis=1), table.sum(axis=0)
    rows, cols, table = rows[rows > 0], cols[cols > 0], table[rows > 0][:, cols > 0]
    expected = np.outer(rows, cols) / n
    observed = table > 0
    g = 2 * float(np.sum(table[observed] * np.log(table[observed] / expected[observed])))
    df = (rows.size - 1) * (cols.size - 1)
    if df == 0:
        return g, 0, 1.0
    q = 1.0
    if williams:
        q += (n * np.sum(1 / rows) - 1) * (n * np.sum(1 / cols) - 1) / (6 * n * df)
    return g, df, float(scipy.stats.chi2.sf(g / q, df))


def block_of(X: np.ndarray, n_bins: int, start: int = 0, stop: int | None = None):
    """The NumPy kernel's count block of genes ``start:stop``, and its binned data."""
    data = bin_genes(sparse.csc_matrix(X), n_bins)
    kernel = NumpyKernel(data, signed=True, n_jobs=1)
    stop = data.n_genes if stop is None else stop
    return kernel, data, kernel.count_block(start, stop)


small_counts = hnp.arrays(
    np.float64,
    st.tuples(st.integers(1, 30), st.integers(1, 5)),
    elements=st.sampled_from([0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 4.5, 7.0]),
)


def _block_range(draw_start: int, draw_length: int, n_genes: int) -> tuple[int, int]:
    start = draw_start % n_genes
    return start, min(n_genes, start + 1 + draw_length % n_genes)


# --------------------------------------------------------------------------------------------
# Estimators and zero handling equal the per-pair oracles
# --------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    X=small_counts,
    n_bins=st.integers(1, 5),
    estimator=st.sampled_from(gs.ESTIMATORS),
    zeros=st.sampled_from(gs.ZEROS),
    where=st.tuples(st.integers(0, 10), st.integers(0, 10)),
)
def test_mi_equals_oracle(X, n_bins, estimator, zeros, where):
    start, stop = _block_range(*where, X.shape[1])
    _, data, block = block_of(X, n_bins, start, stop)
    result = gs.block_statistics(block, data, start, estimator=estimator, zeros=zeros)

    bins, nbg = oracle_bins(X, n_bins)
    signs = oracle_signs(X)
    for r, i in enumerate(range(start, stop)):
        for c, j in enumerate(range(start, X.shape[1])):
            expected = 0.0
            if i != j:
                mi = oracle_mi(
                    bins[:, i], bins[:, j], nbg[i], nbg[j], estimator=estimator, zeros=zeros
                )
                expected = mi * signs[i, j]
            assert result.mi[r, c] == pytest.approx(expected, abs=1e-9), (i, j)


@settings(max_examples=60, deadline=None)
@given(X=small_counts, n_bins=st.integers(1, 5), williams=st.booleans())
def test_g_test_equals_oracle(X, n_bins, williams):
    _, data, block = block_of(X, n_bins)
    test = gs.g_test(gs.pair_tables(block, data, 0), williams=williams)
    bins, nbg = oracle_bins(X, n_bins)
    for i in range(X.shape[1]):
        for j in range(i + 1, X.shape[1]):
            g, df, p = oracle_g_test(bins[:, i], bins[:, j], nbg[i], nbg[j], williams)
            assert test.statistic[i, j] == pytest.approx(g, abs=1e-8)
            assert test.dof[i, j] == df
            assert test.pvalues[i, j] == pytest.approx(p, rel=1e-7, abs=1e-12)
    np.testing.assert_array_equal(np.diag(test.pvalues), 1.0)


def test_g_test_matches_scipy():
    """Without Williams' correction the G-test is scipy's log-likelihood chi2 test."""
    rng = np.random.default_rng(3)
    X = rng.poisson(0.8, size=(300, 4)) * rng.integers(0, 2, size=(300, 4))
    _, data, block = block_of(X.astype(float), 4)
    test = gs.g_test(gs.pair_tables(block, data, 0), williams=False)
    bins, nbg = oracle_bins(X, 4)
    for i in range(4):
        for j in range(i + 1, 4):
            table = oracle_table(bins[:, i], bins[:, j], nbg[i], nbg[j], "include")
            table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
            ref = scipy.stats.chi2_contingency(table, correction=False, lambda_="log-likelihood")
            assert test.statistic[i, j] == pytest.approx(ref.statistic, rel=1e-9)
            assert test.dof[i, j] == ref.dof
            assert test.pvalues[i, j] == pytest.approx(ref.pvalue, rel=1e-7)


def test_plugin_exclude_is_the_kernels_mi():
    rng = np.random.default_rng(0)
    X = rng.negative_binomial(1, 0.7, size=(400, 30)).astype(float)
    kernel, data, block = block_of(X, 10)
    ours = gs.block_statistics(block, data, 0, signed=True).mi
    np.testing.assert_allclose(ours.astype(np.float32), kernel.finish_block(0, block), atol=1e-6)
    assert ours.dtype == np.float64


def test_miller_madow_is_the_plugin_plus_its_correction():
    """The closed form of the docstring, by hand on one pair: values 1 and 2 are bins 1, 2."""
    X = np.array(
        [[1, 0], [2, 1], [0, 2], [1, 2], [2, 0], [1, 1], [2, 2], [1, 1], [2, 2], [0, 0]], float
    )
    np.testing.assert_array_equal(oracle_bins(X, 2)[0], X)
    _, data, block = block_of(X, 2)
    tables = gs.pair_tables(block, data, 0)

    def mi(estimator, zeros):
        return gs.mutual_information(tables, estimator=estimator, zeros=zeros)[0, 1]

    # exclude: 9 counted cells; A in bins {0, 1, 2}, B in {0, 1, 2}, 7 occupied joint cells
    correction = (3 + 3 - 7 - 1) / (2 * 9 * math.log(2))
    assert mi("miller_madow", "exclude") == pytest.approx(
        max(mi("plugin", "exclude") + correction, 0), abs=1e-12
    )
    assert mi("miller_madow", "exclude") > 0  # the example is not clipped
    # include: 10 cells, the (0, 0) cell is an 8th occupied joint cell
    correction = (3 + 3 - 8 - 1) / (2 * 10 * math.log(2))
    assert mi("miller_madow", "include") == pytest.approx(
        max(mi("plugin", "include") + correction, 0), abs=1e-12
    )


def test_unknown_choices_are_errors():
    _, data, block = block_of(np.eye(3), 2)
    tables = gs.pair_tables(block, data, 0)
    with pytest.raises(ValueError, match="estimator"):
        gs.mutual_information(tables, estimator="jackknife")
    with pytest.raises(ValueError, match="zeros"):
        gs.mutual_information(tables, zeros="some")


# --------------------------------------------------------------------------------------------
# Calibration: null data and planted modules
# --------------------------------------------------------------------------------------------


def _pair_pvalues(X: np.ndarray, n_bins: int = 10) -> np.ndarray:
    _, data, block = block_of(X, n_bins)
    return gs.block_statistics(block, data, 0, pvalues=True).pvalues


def null_counts(n_genes: int, n_cells: int, seed: int) -> np.ndarray:
    """Independent negative-binomial genes, ~10 % nonzero, dispersions and depths varied."""
    rng = np.random.default_rng(seed)
    shape = rng.uniform(0.2, 2.0, n_genes)
    p_zero = rng.uniform(0.85, 0.95, n_genes)
    return rng.negative_binomial(shape, p_zero ** (1 / shape), size=(n_cells, n_genes))


def planted_modules(n_genes: int, n_cells: int, modules: int, size: int, seed: int):
    """Negative-binomial counts whose means follow latent module activities.

    Every gene of module ``k`` follows the activity ``L_k`` of the cell (gamma, mean 1),
    either up (``L_k``) or down (``1 / (0.5 + L_k)``); the other genes are flat. Modules
    are independent, so a pair is dependent exactly when both genes are in one module.
    """
    rng = np.random.default_rng(seed)
    module = np.full(n_genes, -1)
    module[: modules * size] = np.repeat(np.arange(modules), size)
    activity = rng.gamma(0.5, 2.0, size=(n_cells, modules))
    in_module = module >= 0
    mean = np.ones((n_cells, n_genes))
    act = activity[:, module[in_module]]
    up = rng.random(in_module.sum()) < 0.5
    mean[:, in_module] = np.where(up, act, 1 / (0.5 + act))
    mu = rng.uniform(0.05, 0.3, n_genes) * mean / mean.mean(axis=0)
    shape = rng.uniform(0.5, 2.0, n_genes)
    X = rng.negative_binomial(shape, shape / (shape + mu))
    truth = (module[:, None] == module[None, :]) & in_module[:, None]
    return X, truth


def test_null_calibration():
    """Independent genes: 5 % of pairs at p < 0.05, and BH finds (almost) nothing."""
    X = null_counts(200, 2000, seed=0)
    assert 0.08 < np.count_nonzero(X) / X.size < 0.12
    p = _pair_pvalues(X)
    upper = p[np.triu_indices(200, 1)]
    assert 0.03 <= np.mean(upper < 0.05) <= 0.07
    assert 0.005 <= np.mean(upper < 0.01) <= 0.015
    assert np.count_nonzero(gs.bh_qvalues(upper) < 0.05) <= 2


def test_bh_false_discoveries_on_planted_modules():
    """BH at q < 0.05 on known modules: at most 5 % of the discoveries are false."""
    X, truth = planted_modules(200, 2000, modules=2, size=80, seed=0)
    q = gs.bh_qvalues_matrix(_pair_pvalues(X))
    upper = np.triu_indices(200, 1)
    found, true = q[upper] < 0.05, truth[upper]
    false_discovery_proportion = np.count_nonzero(found & ~true) / np.count_nonzero(found)
    assert false_discovery_proportion <= 0.05
    assert np.count_nonzero(found & true) / np.count_nonzero(true) > 0.3  # not vacuous


# --------------------------------------------------------------------------------------------
# Benjamini–Hochberg
# --------------------------------------------------------------------------------------------

pvalue_sets = hnp.arrays(
    np.float64,
    st.integers(1, 60),
    elements=st.one_of(st.floats(0, 1), st.sampled_from([0.0, 0.01, 0.5, 1.0])),
)


@settings(max_examples=100, deadline=None)
@given(p=pvalue_sets)
def test_bh_equals_scipy(p):
    np.testing.assert_allclose(
        gs.bh_qvalues(p), scipy.stats.false_discovery_control(p), rtol=1e-12, atol=1e-15
    )


@settings(max_examples=100, deadline=None)
@given(p=pvalue_sets, data=st.data())
def test_bh_of_a_subset_is_conservative(p, data):
    keep = data.draw(hnp.arrays(bool, p.shape))
    full = gs.bh_qvalues(p)
    assert np.all(gs.bh_qvalues(p[keep], n_tests=p.size) >= full[keep] - 1e-15)


def test_bh_matrix_counts_each_pair_once():
    rng = np.random.default_rng(1)
    p = rng.random((12, 12)) ** 3
    p = np.triu(p, 1) + np.triu(p, 1).T
    q = gs.bh_qvalues_matrix(p)
    upper = np.triu_indices(12, 1)
    np.testing.assert_allclose(q[upper], scipy.stats.false_discovery_control(p[upper]))
    np.testing.assert_array_equal(q, q.T)
    np.testing.assert_array_equal(np.diag(q), 1.0)

    mask = rng.random((12, 12)) < 0.4
    mask = mask | mask.T
    q_masked = gs.bh_qvalues_matrix(p, mask=mask)
    tested = mask[upper]
    expected = scipy.stats.false_discovery_control(p[upper][tested])
    np.testing.assert_allclose(q_masked[upper][tested], expected)
    np.testing.assert_array_equal(q_masked[upper][~tested], 1.0)
    assert gs.bh_qvalues_matrix(np.zeros((0, 0))).shape == (0, 0)


def test_bh_sparse():
    rng = np.random.default_rng(2)
    p = np.triu(rng.random((15, 15)) ** 4, 1)
    p[0, 1] = 0.0  # an underflowed p-value is a test
    p = p + p.T
    dense_q = gs.bh_qvalues_matrix(p)
    rows, cols = np.nonzero(~np.eye(15, dtype=bool))
    everything = sparse.csr_matrix((p[rows, cols], (rows, cols)), shape=p.shape)
    assert everything.nnz == 15 * 14  # the explicit zero is stored
    q = gs.bh_qvalues_sparse(everything)
    np.testing.assert_allclose(q.toarray()[rows, cols], dense_q[rows, cols])

    kept = sparse.csr_matrix(np.where(p < 0.05, p, 0.0))  # only the small ones, like top k
    q_kept = gs.bh_qvalues_sparse(kept).tocoo()
    assert q_kept.nnz == kept.nnz
    assert np.all(q_kept.data >= dense_q[q_kept.row, q_kept.col] - 1e-15)


def test_bh_rejects_bad_pvalues():
    for bad in ([0.1, np.nan], [1.5], [-0.1]):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            gs.bh_qvalues(np.array(bad))
    with pytest.raises(ValueError, match="n_tests"):
        gs.bh_qvalues(np.array([0.1, 0.2]), n_tests=1)


# --------------------------------------------------------------------------------------------
# Permutation helpers
# --------------------------------------------------------------------------------------------


def test_shuffle_cells_keeps_each_gene_and_moves_cells():
    X = sparse.random(500, 20, density=0.1, format="csc", random_state=4) * 10
    shuffled = gs.shuffle_cells(X, np.random.default_rng(0))
    assert shuffled.has_sorted_indices and shuffled.nnz == X.nnz
    for g in range(20):
        a, b = X[:, [g]], shuffled[:, [g]]
        np.testing.assert_array_equal(np.sort(a.data), np.sort(b.data))
    assert (shuffled != X).nnz > 0
    data = bin_genes(X.tocsc(), 10)
    np.testing.assert_array_equal(bin_genes(shuffled, 10).bin_counts, data.bin_counts)


def test_permutation_pvalues():
    np.testing.assert_allclose(gs.permutation_pvalues(np.array([0, 3, 99]), 99), [0.01, 0.04, 1])
    with pytest.raises(ValueError, match="n_permutations"):
        gs.permutation_pvalues(np.zeros(2), 0)
