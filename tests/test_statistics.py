"""The G-test and Miller–Madow against textbook statistics, calibration on null and planted
data, Benjamini–Hochberg and the permutation helpers of ``_statistics``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import sparse

from geneverse._data._binning import bin_genes
from geneverse.kernels import PairScores, Scoring
from geneverse.kernels._numpy import NumpyKernel
from geneverse.tl._coexpression import _statistics as gs
from geneverse.tl._coexpression._statistics import g_test_pvalues

from oracle import oracle_bins, oracle_g_test, oracle_table
from synthetic import null_counts, planted_modules

# --------------------------------------------------------------------------------------------
# The finish against textbook statistics, one pair at a time
# --------------------------------------------------------------------------------------------


def scores_of(X: np.ndarray, n_bins: int, **choices) -> PairScores:
    """The NumPy kernel's scores of all pairs of ``X``'s genes."""
    data = bin_genes(sparse.csc_matrix(X), n_bins)
    return NumpyKernel(data, Scoring(**choices), n_jobs=1).scores(0, X.shape[1])


def test_g_test_matches_scipy():
    """Williams' correction off, the G-test is scipy's log-likelihood chi2 test; on, the
    statistic is divided by Williams' q (the oracle's textbook formula)."""
    rng = np.random.default_rng(3)
    X = (rng.poisson(0.8, size=(300, 4)) * rng.integers(0, 2, size=(300, 4))).astype(float)
    scores = scores_of(X, 4, g_test=True)
    p = g_test_pvalues(scores.statistic, scores.dof)
    bins, nbg = oracle_bins(X, 4)
    for i in range(4):
        for j in range(i + 1, 4):
            table = oracle_table(bins[:, i], bins[:, j], nbg[i], nbg[j], "include")
            table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
            ref = scipy.stats.chi2_contingency(table, correction=False, lambda_="log-likelihood")
            g, df, expected_p = oracle_g_test(bins[:, i], bins[:, j], nbg[i], nbg[j])
            assert g == pytest.approx(ref.statistic, rel=1e-9) and df == ref.dof
            assert scores.dof[i, j] == df
            assert p[i, j] == pytest.approx(expected_p, rel=1e-6)
    assert (np.diag(p) == 1).all() and (np.diag(scores.dof) == 0).all()


def test_miller_madow_is_the_plugin_plus_its_correction():
    """The closed form of the definition, by hand on one pair: values 1 and 2 are bins 1, 2."""
    X = np.array(
        [[1, 0], [2, 1], [0, 2], [1, 2], [2, 0], [1, 1], [2, 2], [1, 1], [2, 2], [0, 0]], float
    )
    np.testing.assert_array_equal(oracle_bins(X, 2)[0], X)

    def mi(miller_madow, include_zeros):
        choices = {"miller_madow": miller_madow, "include_zeros": include_zeros}
        return float(scores_of(X, 2, signed=False, **choices).mi[0, 1])

    # exclude: 9 counted cells; A in bins {0, 1, 2}, B in {0, 1, 2}, 7 occupied joint cells
    correction = (3 + 3 - 7 - 1) / (2 * 9 * math.log(2))
    assert mi(True, False) == pytest.approx(max(mi(False, False) + correction, 0), abs=1e-6)
    assert mi(True, False) > 0  # the example is not clipped
    # include: 10 cells, the (0, 0) cell is an 8th occupied joint cell
    correction = (3 + 3 - 8 - 1) / (2 * 10 * math.log(2))
    assert mi(True, True) == pytest.approx(max(mi(False, True) + correction, 0), abs=1e-6)


def test_g_test_pvalues_of_untested_pairs_are_one():
    statistic = np.array([[0.0, 3.84, 100.0]])
    dof = np.array([[0, 1, 4]], dtype=np.int32)
    p = g_test_pvalues(statistic, dof)
    assert p.dtype == np.float32
    np.testing.assert_allclose(
        p, [[1.0, scipy.stats.chi2.sf(3.84, 1), scipy.stats.chi2.sf(100, 4)]], rtol=1e-6
    )


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    statistic=hnp.arrays(
        np.float64, st.integers(1, 300), elements=st.floats(0, 5_000, allow_nan=False)
    ),
    seed=st.integers(0, 2**16),
    max_dof=st.sampled_from([1, 4, 9, 100, 400]),
)
@pytest.mark.parametrize("with_core", [True, False], ids=["core", "scipy"])
def test_g_test_pvalues_equal_scipys_chi2_survival(
    statistic, seed, max_dof, with_core, monkeypatch
):
    """The closed form of the core (and scipy's, without it) within float32 rounding, from
    p near 1 to p underflowing to 0, with and without degrees of freedom."""
    dof = np.random.default_rng(seed).integers(0, max_dof + 1, statistic.size).astype(np.int32)
    with monkeypatch.context() as patch:
        if not with_core:
            patch.setattr(gs, "_compiled_core", lambda: None)
        p = g_test_pvalues(statistic, dof, n_jobs=2)
    expected = np.where(dof > 0, scipy.stats.chi2.sf(statistic, np.maximum(dof, 1)), 1.0)
    assert p.dtype == np.float32 and p.shape == statistic.shape
    np.testing.assert_allclose(p, expected, rtol=2e-7, atol=1e-44)


def test_row_block_pvalues_are_each_pairs_computed_once():
    """A kernel's row block: the core's p-values computed right of the diagonal and
    mirrored equal those computed at every entry, bit for bit, with 1 on the diagonal."""
    X = np.random.default_rng(5).poisson(1.0, (80, 12)).astype(float)
    data = bin_genes(sparse.csr_matrix(X), 4)
    kernel = NumpyKernel(data, Scoring(include_zeros=True, g_test=True), n_jobs=1)
    for start, stop in [(0, 12), (3, 7), (11, 12)]:
        block = kernel.scores(start, stop)
        every = g_test_pvalues(block.statistic, block.dof)
        once = g_test_pvalues(block.statistic, block.dof, row_block=True)
        np.testing.assert_array_equal(once, every)
        assert (np.diag(once) == 1).all()


# --------------------------------------------------------------------------------------------
# Calibration: null data and planted modules
# --------------------------------------------------------------------------------------------


def _pair_pvalues(X: np.ndarray, n_bins: int = 10) -> np.ndarray:
    scores = scores_of(X.astype(float), n_bins, g_test=True)
    return g_test_pvalues(scores.statistic, scores.dof)


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


@settings(max_examples=60, deadline=None)
@given(
    n_genes=st.integers(0, 40),
    seed=st.integers(0, 2**16),
    n_levels=st.sampled_from([2, 5, 1000]),
    masked=st.booleans(),
)
def test_bh_matrix_of_the_core_equals_numpys_and_scipys(n_genes, seed, n_levels, masked):
    """The core's q-values equal the NumPy path's bit for bit and scipy's BH, with tied
    p-values (few levels), p-values of 0 and 1, and a mask of the tested pairs."""
    rng = np.random.default_rng(seed)
    levels = np.concatenate([[0.0, 1.0], rng.random(n_levels) ** 4]).astype(np.float32)
    p = np.triu(rng.choice(levels, (n_genes, n_genes)), 1)
    p = p + p.T
    mask = None
    if masked:
        mask = rng.random((n_genes, n_genes)) < 0.5
        mask = mask | mask.T
    q = gs.bh_qvalues_matrix(p, mask=mask, n_jobs=2)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gs, "_compiled_core", lambda: None)
        numpy_q = gs.bh_qvalues_matrix(p, mask=mask)
    np.testing.assert_array_equal(q, numpy_q)
    upper = np.triu_indices(n_genes, 1)
    tested = np.ones(upper[0].size, bool) if mask is None else mask[upper]
    if tested.any():
        expected = scipy.stats.false_discovery_control(p[upper][tested].astype(np.float64))
        np.testing.assert_allclose(q[upper][tested], expected, rtol=1e-6)
    np.testing.assert_array_equal(q[upper][~tested], 1.0)
    np.testing.assert_array_equal(q, q.T)


@pytest.mark.parametrize("with_core", [True, False], ids=["core", "numpy"])
@pytest.mark.parametrize("bad", [np.nan, -0.5, 1.5])
def test_bh_matrix_refuses_pvalues_outside_the_unit_interval(bad, with_core, monkeypatch):
    p = np.full((3, 3), 0.5, dtype=np.float32)
    p[0, 2] = p[2, 0] = bad
    if not with_core:
        monkeypatch.setattr(gs, "_compiled_core", lambda: None)
    with pytest.raises(ValueError, match=r"p-values must lie in \[0, 1\]"):
        gs.bh_qvalues_matrix(p)


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
