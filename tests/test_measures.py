"""Pearson, Spearman, Jaccard and cosine between all genes equal dense references, sparsely."""

from __future__ import annotations

import tracemalloc
import warnings

import anndata as ad
import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import sparse

import geneverse as gv
from geneverse._data._matrix import used_columns
from geneverse.tl._coexpression import _measures as gm

METHODS = ["pearson", "spearman", "jaccard", "cosine"]


def measure(X, method: str) -> np.ndarray:
    """A measure of every pair, as the pipeline computes it: canonical CSC, one row block."""
    csc = used_columns(X, np.arange(X.shape[1]))
    return gm.MeasureScorer(csc, method).scores(0, X.shape[1]).mi


# --------------------------------------------------------------------------------------------
# Dense references (the definitions, on the dense matrix), with our conventions: diagonal 0,
# undefined pairs 0
# --------------------------------------------------------------------------------------------


def _conventions(matrix: np.ndarray) -> np.ndarray:
    matrix = np.where(np.isfinite(matrix), matrix, 0.0)
    np.fill_diagonal(matrix, 0.0)
    return matrix


def _constant(X: np.ndarray) -> np.ndarray:
    return np.all(X == X[:1], axis=0)


def _undefined_correlation(matrix: np.ndarray, X: np.ndarray) -> np.ndarray:
    constant = _constant(X)
    matrix[constant, :] = matrix[:, constant] = 0.0
    return _conventions(matrix)


def reference_pearson(X: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = np.atleast_2d(np.corrcoef(X, rowvar=False))
    return _undefined_correlation(r.reshape(X.shape[1], X.shape[1]), X)


def reference_spearman(X: np.ndarray) -> np.ndarray:
    """``scipy.stats.spearmanr`` of the genes that vary (it gives one NaN for all otherwise)."""
    out = np.zeros((X.shape[1], X.shape[1]))
    varying = np.flatnonzero(~_constant(X))
    if varying.size >= 2:
        r = scipy.stats.spearmanr(X[:, varying]).statistic
        out[np.ix_(varying, varying)] = r if varying.size > 2 else [[1, r], [r, 1]]
    return _conventions(out)


def reference_jaccard(X: np.ndarray) -> np.ndarray:
    cells = [set(np.flatnonzero(X[:, g] > 0)) for g in range(X.shape[1])]
    out = np.zeros((X.shape[1], X.shape[1]))
    for i, a in enumerate(cells):
        for j, b in enumerate(cells):
            if i != j and a | b:
                out[i, j] = len(a & b) / len(a | b)
    return out


def reference_cosine(X: np.ndarray) -> np.ndarray:
    out = np.zeros((X.shape[1], X.shape[1]))
    for i in range(X.shape[1]):
        for j in range(X.shape[1]):
            norms = np.linalg.norm(X[:, i]) * np.linalg.norm(X[:, j])
            if i != j and norms > 0:
                out[i, j] = X[:, i] @ X[:, j] / norms
    return out


REFERENCES = {
    "pearson": reference_pearson,
    "spearman": reference_spearman,
    "jaccard": reference_jaccard,
    "cosine": reference_cosine,
}

expression = hnp.arrays(
    np.float64,
    st.tuples(st.integers(1, 40), st.integers(1, 6)),
    elements=st.sampled_from([0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 3.5, 0.25, 10.0]),
)


def with_special_genes(X: np.ndarray) -> np.ndarray:
    """Add an all-zero gene, a constant nonzero gene and a gene expressed everywhere."""
    rng = np.random.default_rng(X.size)
    everywhere = rng.integers(1, 4, size=(X.shape[0], 1)).astype(float)
    return np.hstack([X, np.zeros((X.shape[0], 1)), np.full((X.shape[0], 1), 2.0), everywhere])


@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=40, deadline=None)
@given(X=expression, special=st.booleans(), fmt=st.sampled_from(["csr", "csc", "csr_array"]))
def test_measures_equal_dense_references(method, X, special, fmt):
    if special:
        X = with_special_genes(X)
    matrix = {"csr": sparse.csr_matrix, "csc": sparse.csc_matrix, "csr_array": sparse.csr_array}
    ours = measure(matrix[fmt](X), method)
    assert ours.dtype == np.float32 and ours.shape == (X.shape[1], X.shape[1])
    np.testing.assert_allclose(ours, REFERENCES[method](X), atol=1e-6, rtol=0)
    np.testing.assert_array_equal(ours, ours.T)


@pytest.mark.parametrize("method", METHODS)
def test_blocks_and_rectangles_are_slices_of_the_whole(method):
    X = sparse.random(200, 23, density=0.3, format="csc", random_state=3) * 7
    scorer = gm.MeasureScorer(used_columns(X, np.arange(23)), method)
    whole = scorer.scores(0, 23).mi
    np.testing.assert_array_equal(scorer.scores(5, 11).mi, whole[5:11, 5:])
    np.testing.assert_array_equal(scorer.scores(2, 9, 15).mi, whole[2:9, 15:])


@pytest.mark.parametrize("method", METHODS)
def test_measures_on_realistic_counts(method):
    rng = np.random.default_rng(7)
    latent = rng.gamma(0.5, 2.0, size=(600, 1))
    X = rng.negative_binomial(1.0, 1 / (1 + 0.3 * latent * rng.uniform(0.2, 3, 40)))
    X = np.log1p(X.astype(float))
    np.testing.assert_allclose(
        measure(sparse.csr_matrix(X), method), REFERENCES[method](X), atol=1e-6, rtol=0
    )


def test_explicit_zeros_and_duplicates_are_ignored():
    X = np.array([[0.0, 1.0, 2.0], [3.0, 0.0, 1.0], [0.0, 2.0, 0.0], [1.0, 1.0, 0.0]])
    clean = sparse.coo_matrix(X)
    rows = np.concatenate([clean.row, [0, 2, 1]])
    cols = np.concatenate([clean.col, [0, 2, 2]])
    data = np.concatenate([clean.data, [0.0, 0.0, 0.0]])
    messy = sparse.coo_matrix((data, (rows, cols)), shape=X.shape).tocsc()  # unsummed zeros
    assert messy.nnz > clean.nnz
    for method in METHODS:
        np.testing.assert_allclose(measure(messy, method), REFERENCES[method](X), atol=1e-6)


@pytest.mark.parametrize("bad", [-1.0, np.nan, np.inf])
@pytest.mark.parametrize("method", METHODS)
def test_invalid_values_are_errors(bad, method):
    adata = ad.AnnData(sparse.csr_matrix(np.array([[1.0, 0.0], [bad, 2.0]])))
    with pytest.raises(ValueError, match=r"negative|NaN|infinite"):
        gv.tl.coexpression(adata, method=method)


# --------------------------------------------------------------------------------------------
# None densifies X
# --------------------------------------------------------------------------------------------


@pytest.fixture
def forbid_densifying(monkeypatch):
    """Make densifying any sparse matrix with ``n_cells`` rows an error; returns a setter."""
    limit = {}

    def guarded(original):
        def method(self, *args, **kwargs):
            if self.shape[0] == limit.get("n_cells"):
                raise AssertionError(f"densified a {self.shape} sparse matrix")
            return original(self, *args, **kwargs)

        return method

    kinds = [sparse.csr_matrix, sparse.csc_matrix, sparse.coo_matrix]
    kinds += [sparse.csr_array, sparse.csc_array, sparse.coo_array]
    for kind in kinds:
        for name in ("toarray", "todense"):
            monkeypatch.setattr(kind, name, guarded(getattr(kind, name)))
    return limit


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("fmt", ["csr", "csc"])
def test_no_measure_densifies_X(method, fmt, forbid_densifying):
    X = sparse.random(301, 17, density=0.1, format=fmt, random_state=1) * 5
    forbid_densifying["n_cells"] = 301
    with pytest.raises(AssertionError, match="densified"):
        X.toarray()  # the guard works
    measure(X, method)


@pytest.mark.parametrize("method", METHODS)
def test_memory_stays_sparse(method):
    """200,000 cells × 50 genes: dense X would be 80 MB; the measure stays under 20 MB."""
    rng = np.random.default_rng(0)
    n_cells, n_genes, nnz = 200_000, 50, 100_000
    X = sparse.csc_matrix(
        (
            rng.integers(1, 20, nnz).astype(float),
            (rng.integers(0, n_cells, nnz), rng.integers(0, n_genes, nnz)),
        ),
        shape=(n_cells, n_genes),
    )
    tracemalloc.start()
    try:
        measure(X, method)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20e6, f"peak {peak / 1e6:.1f} MB"
