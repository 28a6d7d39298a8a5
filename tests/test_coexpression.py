"""gv.tl.coexpression equals the oracle, in every backend, and stores what its docstring says."""

from __future__ import annotations

import inspect

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import sparse

import geneverse as gv
from geneverse.kernels import unavailable_reason

from conftest import BACKENDS
from oracle import oracle_bins, oracle_scores

TOLERANCE = 1e-6
FORMATS = {"dense": np.asarray, "csr": sparse.csr_matrix, "csc": sparse.csc_matrix}


@st.composite
def expression(draw) -> np.ndarray:
    """Small cells × genes matrices with the hard cases of the definition (docs/definition.md).

    Values are small integers or multiples of 1/4 (exact in binary, so sums are exact and
    correlations that are zero in exact arithmetic are zero). Genes include all-zero ones,
    genes at a single level, genes with many levels (more than ``n_bins``), and many ties,
    which put values exactly on bin edges.
    """
    n_cells = draw(st.integers(1, 40))
    n_genes = draw(st.integers(1, 7))
    columns = []
    for _ in range(n_genes):
        kind = draw(st.sampled_from(["zero", "constant", "few", "many", "dense"]))
        density = draw(st.floats(0.05, 1.0))
        expressed = (
            draw(st.lists(st.booleans(), min_size=n_cells, max_size=n_cells))
            if kind != "dense"
            else [True] * n_cells
        )
        levels = {"zero": 1, "constant": 1, "few": 3, "many": 40, "dense": 25}[kind]
        values = draw(st.lists(st.integers(1, levels), min_size=n_cells, max_size=n_cells))
        column = np.array(values, dtype=np.float64) * np.array(expressed)
        if kind == "zero":
            column[:] = 0
        elif density < 0.3:
            column[: int(n_cells * (1 - density))] = 0
        columns.append(column)
    X = np.stack(columns, axis=1)
    if draw(st.booleans()):
        X = X / 4
    return X


def _dtype_for(X: np.ndarray, choice: str) -> np.dtype:
    if choice == "int" and np.all(X == np.round(X)):
        return np.dtype(np.int64)
    if choice == "uint8" and np.all(X == np.round(X)) and X.max(initial=0) < 256:
        return np.dtype(np.uint8)
    return np.dtype(np.float32 if choice == "float32" else np.float64)


def _run(X, *, backend="numpy", device=None, n_bins=10, signed=True, **kwargs) -> ad.AnnData:
    adata = ad.AnnData(X)
    adata.var_names = [f"g{i}" for i in range(adata.n_vars)]
    gv.tl.coexpression(
        adata, backend=backend, device=device, n_bins=n_bins, signed=signed, **kwargs
    )
    return adata


def test_every_backend_of_the_install_is_usable():
    """The README's install builds the Rust core and brings numba and torch (CPU)."""
    for backend, device in BACKENDS:
        assert unavailable_reason(backend, device) is None, backend


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    X=expression(),
    n_bins=st.integers(1, 20),
    signed=st.booleans(),
    estimator=st.sampled_from(["plugin", "miller_madow"]),
    zeros=st.sampled_from(["exclude", "include"]),
    pvals=st.booleans(),
    layout=st.sampled_from(list(FORMATS)),
    dtype=st.sampled_from(["int", "uint8", "float32", "float64"]),
)
def test_equals_oracle(backend, device, X, n_bins, signed, estimator, zeros, pvals, layout, dtype):
    X = X.astype(_dtype_for(X, dtype))
    choices = {"signed": signed, "estimator": estimator, "zeros": zeros, "pvals": pvals}
    adata = _run(FORMATS[layout](X), backend=backend, device=device, n_bins=n_bins, **choices)

    expected_bins, expected_n_bins = oracle_bins(X, n_bins)
    np.testing.assert_array_equal(adata.layers["gv_bins"].toarray(), expected_bins)
    np.testing.assert_array_equal(adata.var["gv_n_bins"], expected_n_bins)
    mi = adata.varp["gv_mi"]
    assert mi.dtype == np.float32
    choices.pop("signed")
    expected_mi, expected_p = oracle_scores(X, n_bins, signed=signed, **choices)
    np.testing.assert_allclose(mi, expected_mi, rtol=0, atol=TOLERANCE)
    if pvals:
        np.testing.assert_allclose(adata.varp["gv_pvals"], expected_p, rtol=1e-5, atol=1e-30)


SCORING_CHOICES = [
    {"signed": signed, "estimator": estimator, "zeros": zeros, "pvals": pvals}
    for signed in (True, False)
    for estimator in ("plugin", "miller_madow")
    for zeros in ("exclude", "include")
    for pvals in (False, True)
]


@pytest.mark.parametrize("choices", SCORING_CHOICES, ids=lambda c: "-".join(map(str, c.values())))
def test_every_backend_gives_the_same_bits_on_pbmc68k_raw(pbmc, choices):
    """Every scoring choice, every backend: identical MI and p-values, equal to the oracle."""
    adata = pbmc[:, :150].copy()
    results = {
        backend: gv.tl.coexpression(adata, backend=backend, device=device, copy=True, **choices)
        for backend, device in BACKENDS
    }
    reference = results["numpy"]
    for backend, result in results.items():
        np.testing.assert_array_equal(result.varp["gv_mi"], reference.varp["gv_mi"], backend)
        if choices["pvals"]:
            np.testing.assert_array_equal(result.varp["gv_pvals"], reference.varp["gv_pvals"])
    signed = choices["signed"]
    rest = {name: choices[name] for name in ("estimator", "zeros", "pvals")}
    expected_mi, expected_p = oracle_scores(
        adata.raw[:, adata.var_names].X, 10, signed=signed, **rest
    )
    np.testing.assert_allclose(reference.varp["gv_mi"], expected_mi, rtol=0, atol=TOLERANCE)
    if choices["pvals"]:
        np.testing.assert_allclose(reference.varp["gv_pvals"], expected_p, rtol=1e-5, atol=1e-30)


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
def test_equals_oracle_on_pbmc68k_raw(pbmc, pbmc_oracle, backend, device):
    adata = gv.tl.coexpression(pbmc, backend=backend, device=device, copy=True)
    assert adata.uns["gv"]["params"]["use_raw"] is True
    assert adata.uns["gv"]["backend"] == backend
    np.testing.assert_allclose(adata.varp["gv_mi"], pbmc_oracle, rtol=0, atol=TOLERANCE)
    expected_bins, _ = oracle_bins(pbmc.raw[:, pbmc.var_names].X.toarray(), 10)
    np.testing.assert_array_equal(adata.layers["gv_bins"].toarray(), expected_bins)


def test_pbmc68k_has_structure(pbmc_oracle):
    """The real data is not a trivial case: both signs and a spread of values occur."""
    assert (pbmc_oracle > 0.05).sum() > 100
    assert (pbmc_oracle < -0.01).sum() > 100


def test_stores_what_the_design_says(pbmc):
    adata = gv.tl.coexpression(pbmc, genes="highly_variable", key_added="hv", copy=True)
    used = pbmc.var["highly_variable"].to_numpy()
    mi = adata.varp["hv_mi"]
    assert mi.shape == (pbmc.n_vars, pbmc.n_vars) and mi.dtype == np.float32
    np.testing.assert_array_equal(mi, mi.T)
    assert not np.diag(mi).any()
    assert not mi[~used].any() and not mi[:, ~used].any()
    bins = adata.layers["hv_bins"]
    assert sparse.isspmatrix_csr(bins) and bins.dtype == np.uint8 and bins.shape == pbmc.shape
    assert bins[:, ~used].nnz == 0
    np.testing.assert_array_equal(adata.var["hv_used"], used)
    assert (adata.var["hv_n_bins"][~used] == 0).all()
    assert (adata.var["hv_n_bins"][used] >= 1).all()
    uns = adata.uns["hv"]
    assert uns["version"] == gv.__version__
    assert uns["params"]["genes"] == "highly_variable"
    arguments = set(inspect.signature(gv.tl.coexpression).parameters)
    assert set(uns["params"]) == arguments - {"adata"}


def test_subset_equals_the_same_block_of_the_full_result(pbmc, pbmc_oracle):
    genes = list(pbmc.var_names[[3, 50, 7, 400]])
    adata = gv.tl.coexpression(pbmc, genes=genes, copy=True)
    idx = np.sort(pbmc.var_names.get_indexer(genes))
    np.testing.assert_allclose(
        adata.varp["gv_mi"][np.ix_(idx, idx)], pbmc_oracle[np.ix_(idx, idx)], atol=TOLERANCE
    )
    stored = adata.uns["gv"]["params"]["genes"]
    assert sorted(stored) == sorted(genes)


def test_boolean_mask_and_name_list_select_the_same_genes(pbmc):
    mask = pbmc.var["highly_variable"].to_numpy()
    by_mask = gv.tl.coexpression(pbmc, genes=mask, copy=True)
    by_names = gv.tl.coexpression(pbmc, genes=list(pbmc.var_names[mask]), copy=True)
    np.testing.assert_array_equal(by_mask.varp["gv_mi"], by_names.varp["gv_mi"])


def test_layer_and_use_raw_pick_the_matrix(pbmc):
    adata = pbmc.copy()
    adata.layers["lognorm"] = pbmc.raw[:, pbmc.var_names].X.copy()
    from_layer = gv.tl.coexpression(adata, layer="lognorm", copy=True)
    from_raw = gv.tl.coexpression(adata, use_raw=True, copy=True)
    np.testing.assert_array_equal(from_layer.varp["gv_mi"], from_raw.varp["gv_mi"])
    assert from_layer.uns["gv"]["params"]["use_raw"] is False
    assert from_layer.uns["gv"]["params"]["layer"] == "lognorm"
    adata.X = adata.layers["lognorm"] * 2
    from_x = gv.tl.coexpression(adata, use_raw=False, copy=True)
    assert from_x.uns["gv"]["params"]["use_raw"] is False
    np.testing.assert_allclose(from_x.varp["gv_mi"], from_raw.varp["gv_mi"], atol=TOLERANCE)


def test_in_place_returns_none_and_copy_leaves_the_input(pbmc):
    adata = pbmc.copy()
    assert gv.tl.coexpression(adata) is None
    assert "gv_mi" in adata.varp
    untouched = pbmc.copy()
    result = gv.tl.coexpression(untouched, copy=True)
    assert isinstance(result, ad.AnnData) and "gv_mi" in result.varp
    assert "gv_mi" not in untouched.varp and "gv" not in untouched.uns


def test_survives_h5ad_round_trip(pbmc, tmp_path):
    adata = gv.tl.coexpression(pbmc, genes="highly_variable", copy=True)
    path = tmp_path / "gv.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    np.testing.assert_array_equal(back.varp["gv_mi"], adata.varp["gv_mi"])
    assert back.varp["gv_mi"].dtype == np.float32
    bins = back.layers["gv_bins"]
    assert sparse.issparse(bins) and bins.dtype == np.uint8
    assert (bins != adata.layers["gv_bins"]).nnz == 0
    pd.testing.assert_series_equal(back.var["gv_n_bins"], adata.var["gv_n_bins"])
    pd.testing.assert_series_equal(back.var["gv_used"], adata.var["gv_used"])
    assert back.uns["gv"]["backend"] == adata.uns["gv"]["backend"]
    assert back.uns["gv"]["version"] == adata.uns["gv"]["version"]
    for name, value in adata.uns["gv"]["params"].items():
        np.testing.assert_array_equal(back.uns["gv"]["params"][name], value, err_msg=name)


@pytest.mark.parametrize("backend", ["rust", "numba"])
def test_thread_count_does_not_change_the_result(pbmc, backend):
    one = gv.tl.coexpression(pbmc, backend=backend, n_jobs=1, copy=True)
    two = gv.tl.coexpression(pbmc, backend=backend, n_jobs=2, copy=True)
    np.testing.assert_array_equal(one.varp["gv_mi"], two.varp["gv_mi"])
    assert two.uns["gv"]["params"]["n_jobs"] == 2


def test_unsigned_is_the_absolute_value_of_signed(pbmc):
    signed = gv.tl.coexpression(pbmc, copy=True).varp["gv_mi"]
    unsigned = gv.tl.coexpression(pbmc, signed=False, copy=True).varp["gv_mi"]
    assert (unsigned >= 0).all()
    np.testing.assert_allclose(np.abs(signed), unsigned, atol=TOLERANCE)


def test_auto_records_the_backend_that_ran(pbmc):
    adata = gv.tl.coexpression(pbmc, copy=True)
    assert adata.uns["gv"]["params"]["backend"] == "auto"
    assert adata.uns["gv"]["backend"] == gv.backends().query("usable").index[0]


def test_progress_and_timings_follow_the_verbosity(pbmc, capsys):
    gv.settings.verbosity = "info"
    gv.tl.coexpression(pbmc, copy=True)
    assert "finished" in capsys.readouterr().err
    gv.settings.verbosity = "warning"
    gv.tl.coexpression(pbmc, copy=True)
    assert capsys.readouterr().err == ""
