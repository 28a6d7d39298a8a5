"""No silent wrong result, no lost result: input as scipy defines it, robust signs, an
honest cache, safe and unique keys, gene selection by one rule, arguments checked.

Each class of defect has its property here, in every backend; these tests fail on
geneverse 0.1 (commit 1d7de96) and pass now.
"""

from __future__ import annotations

import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import sparse

import geneverse as gv
from test_coexpression import expression

from conftest import BACKENDS, assert_unchanged, snapshot
from oracle import oracle_signs

FAST = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}


def _adata(X, names=None) -> ad.AnnData:
    adata = ad.AnnData(X)
    adata.var_names = names if names is not None else [f"g{i}" for i in range(adata.n_vars)]
    adata.obs_names = [f"c{i}" for i in range(adata.n_obs)]
    return adata


def _mi(X, backend="numpy", device=None, **kwargs) -> np.ndarray:
    adata = _adata(X)
    gv.tl.coexpression(adata, backend=backend, device=device, **kwargs)
    mi = adata.varp["gv_mi"]
    return mi.toarray() if sparse.issparse(mi) else mi


# --------------------------------------------------------------------------------------------
# Canonical input: every form of one matrix gives one result
# --------------------------------------------------------------------------------------------


def _with_duplicates(data, rows, cols, shape) -> sparse.csr_matrix:
    """A CSR matrix that stores the entries as given: duplicates, unsorted, zeros kept."""
    by_row = np.argsort(rows, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=shape[0]))])
    return sparse.csr_matrix((data[by_row], cols[by_row], indptr), shape=shape)


def _forms(X: np.ndarray, rng: np.random.Generator) -> dict[str, object]:
    """Equal matrices, stored every way scipy allows."""
    coo = sparse.coo_matrix(X)
    split = rng.random(coo.nnz) < 0.5  # these entries are stored as two halves
    zeros = min(2, coo.nnz)
    rows = np.concatenate([coo.row, coo.row[split], coo.row[:zeros]])
    cols = np.concatenate([coo.col, coo.col[split], coo.col[:zeros]])
    values = np.concatenate(
        [np.where(split, coo.data / 2, coo.data), coo.data[split] / 2, np.zeros(zeros)]
    )
    order = rng.permutation(rows.size)  # unsorted
    rows, cols, values = rows[order], cols[order], values[order]
    wide = sparse.csr_matrix(X)
    wide.indices, wide.indptr = wide.indices.astype(np.int64), wide.indptr.astype(np.int64)
    return {
        "dense": X,
        "csr": sparse.csr_matrix(X),
        "csc": sparse.csc_matrix(X),
        "csr_array": sparse.csr_array(X),
        "csc_array": sparse.csc_array(X),
        "csr with duplicates, explicit zeros, unsorted": _with_duplicates(
            values, rows, cols, X.shape
        ),
        "csc with duplicates": _with_duplicates(values, cols, rows, X.shape[::-1]).T.tocsc(
            copy=False
        ),
        "int64 indices": wide,
    }


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
@settings(max_examples=25, **FAST)
@given(X=expression(), seed=st.integers(0, 2**16), pvals=st.booleans())
def test_every_form_of_a_matrix_gives_one_result(backend, device, X, seed, pvals):
    forms = _forms(X, np.random.default_rng(seed))
    expected = _mi(X, backend=backend, device=device, pvals=pvals)
    for name, form in forms.items():
        np.testing.assert_array_equal(
            _mi(form, backend=backend, device=device, pvals=pvals), expected, err_msg=name
        )


def _split_entry() -> sparse.csr_matrix:
    """Gene 0 holds 2, 2, 3, 3 over four cells, the first 2 stored as 1 + 1."""
    return _with_duplicates(
        np.r_[1.0, 1.0, 2.0, 3.0, 3.0], np.r_[0, 0, 1, 2, 3], np.zeros(5, dtype=int), (5, 2)
    )


def test_a_split_entry_is_its_sum_in_the_bins_and_the_entropy():
    messy = _split_entry()
    assert messy.nnz == 5 and not messy.has_canonical_format
    _, entropy = gv.pp.filter_entropy(_adata(messy), inplace=False)
    assert entropy[0] == pytest.approx(np.log(2))  # two values, two cells each
    adata = _adata(messy)
    gv.tl.coexpression(adata, n_bins=2)
    np.testing.assert_array_equal(adata.layers["gv_bins"].toarray()[:, 0], [1, 1, 2, 2, 0])
    assert adata.X.nnz == 5  # the user's matrix is left as it was


# --------------------------------------------------------------------------------------------
# Signs: scale invariant, offsets and huge values, the same in every backend
# --------------------------------------------------------------------------------------------


def _correlated(seed: int, n_cells: int = 60, n_genes: int = 6) -> np.ndarray:
    """Small integer counts with clearly nonzero correlations of both signs."""
    rng = np.random.default_rng(seed)
    latent = rng.integers(0, 4, size=(n_cells, 1))
    loading = rng.choice([-1, 1], size=n_genes)
    X = rng.integers(0, 3, size=(n_cells, n_genes)) + np.clip(latent * loading + 2, 0, None)
    X[rng.random(X.shape) < 0.3] = 0
    return X.astype(np.float64)


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
@settings(max_examples=15, **FAST)
@given(seed=st.integers(0, 2**16), exponent=st.integers(-30, 30))
def test_scaling_by_a_power_of_ten_never_changes_a_sign(backend, device, seed, exponent):
    X = _correlated(seed)
    reference = np.sign(_mi(X, backend=backend, device=device))
    scaled = np.sign(_mi(X * 10.0**exponent, backend=backend, device=device))
    np.testing.assert_array_equal(scaled, reference)
    r = np.corrcoef(X, rowvar=False)
    clear = (np.abs(r) > 1e-6) & ~np.eye(X.shape[1], dtype=bool)
    np.testing.assert_array_equal(reference[clear], np.sign(r)[clear])


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
def test_dense_genes_with_a_large_offset_get_corrcoef_signs(backend, device):
    """1e9 + {0, 1, 2}: the one-pass covariance cancels to noise; centred, it does not."""
    rng = np.random.default_rng(5)
    X = 1e9 + rng.integers(0, 3, size=(80, 8)).astype(np.float64)
    X[:, 1] = 1e9 + 2 - (X[:, 0] - 1e9)  # anti-correlated with gene 0
    signs = np.sign(_mi(X, backend=backend, device=device))
    r = np.corrcoef(X, rowvar=False)
    clear = (np.abs(r) > 1e-6) & ~np.eye(8, dtype=bool)
    np.testing.assert_array_equal(signs[clear], np.sign(r)[clear])
    assert signs[0, 1] == -1


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
def test_huge_values_give_no_nan_and_corrcoef_signs(backend, device):
    X = _correlated(11) * 1e200
    mi = _mi(X, backend=backend, device=device, pvals=True)
    assert np.isfinite(mi).all()
    expected = oracle_signs(_correlated(11))  # corrcoef overflows at 1e200; the signs do not
    np.testing.assert_array_equal(np.sign(mi), expected * (mi != 0))
    assert (np.sign(mi)[expected != 0] != 0).mean() > 0.5


# --------------------------------------------------------------------------------------------
# The cache: any input that determines the result changes the key
# --------------------------------------------------------------------------------------------


@pytest.fixture
def cached_adata(pbmc, tmp_path):
    gv.settings.cache_dir = tmp_path
    adata = ad.AnnData(pbmc.raw[:, pbmc.var_names[:40]].X.copy(), obs=pbmc.obs.copy())
    adata.var_names = pbmc.var_names[:40]
    adata.var["picked"] = np.arange(40) < 20
    adata.var["targets"] = (np.arange(40) % 3 == 0) & (np.arange(40) < 20)  # among "picked"
    adata.obs["half"] = pd.Categorical(np.where(np.arange(adata.n_obs) % 2, "x", "y"))
    return adata


def _from_cache(adata, capsys, **kwargs) -> bool:
    gv.settings.verbosity = "info"
    capsys.readouterr()
    gv.tl.coexpression(adata, **kwargs)
    gv.settings.verbosity = 0
    return "loaded from the cache" in capsys.readouterr().err


def _set(frame_of, column, values_of):
    """A change of one column of ``obs`` or ``var`` (``frame_of(adata)``)."""

    def change(adata):
        frame = frame_of(adata)
        frame[column] = values_of(frame[column])

    return change


def _rename(adata):
    adata.var_names = [f"x{i}" for i in range(adata.n_vars)]


def _add_one(adata):
    adata.X.data[0] += 1


#: A call, and a change after which the same call must not be a cache hit (a change of the
#: data, or a second call with other arguments).
CHANGES = {
    "the genes= column": ({"genes": "picked"}, _set(lambda a: a.var, "picked", lambda c: ~c)),
    "the against= column": (  # the same genes enter the kernel, other pairs are wanted
        {"genes": "picked", "against": "targets"},
        _set(lambda a: a.var, "targets", lambda c: np.roll(c.to_numpy(), 1)),
    ),
    "the groupby= column": (
        {"groupby": "half"},
        _set(lambda a: a.obs, "half", lambda c: pd.Categorical(np.roll(c.to_numpy(), 1))),
    ),
    "a value": ({}, _add_one),
    "the names of the genes": ({}, _rename),
    "the genes": ({"genes": [1, 2, 3]}, {"genes": [1, 2, 4]}),
    "a parameter": ({"top_k": 3}, {"top_k": 4}),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_every_input_that_matters_misses_the_cache(cached_adata, capsys, change):
    kwargs, then = CHANGES[change]
    assert not _from_cache(cached_adata, capsys, **kwargs)
    assert _from_cache(cached_adata, capsys, **kwargs)  # the same call: a hit
    if isinstance(then, dict):
        kwargs = then
    else:
        then(cached_adata)
    assert not _from_cache(cached_adata, capsys, **kwargs)


def test_a_random_generator_is_refused_and_a_fresh_seed_is_stored(pbmc):
    adata = pbmc[:, :20].copy()
    before = snapshot(adata)
    with pytest.raises(TypeError, match="integer seed"):
        gv.tl.coexpression(adata, n_permutations=3, random_state=np.random.default_rng(0))
    with pytest.raises(TypeError, match="random_state must be a whole number"):
        gv.tl.coexpression(adata, n_permutations=3, random_state="abc")
    assert_unchanged(before, adata)
    gv.tl.coexpression(adata, n_permutations=3, random_state=None)
    seed = adata.uns["gv"]["params"]["random_state"]
    again = gv.tl.coexpression(adata, n_permutations=3, random_state=seed, copy=True)
    np.testing.assert_array_equal(again.varp["gv_pvals"], adata.varp["gv_pvals"])


# --------------------------------------------------------------------------------------------
# Keys: safe, unique, and a rerun replaces every result of its key
# --------------------------------------------------------------------------------------------


def test_group_names_that_meet_in_a_key_stay_apart(pbmc, tmp_path):
    adata = pbmc[:, :30].copy()
    labels = np.array(["a/b", "a_b", "c d"])[np.arange(adata.n_obs) % 3]
    adata.obs["group"] = labels
    gv.tl.coexpression(adata, groupby="group", pvals=True)
    groups = list(adata.uns["gv"]["groups"])
    keys = list(adata.uns["gv"]["group_keys"])
    assert groups == ["a/b", "a_b", "c d"] and len(set(keys)) == 3
    for group in groups:
        alone = gv.tl.coexpression(adata[labels == group].copy(), copy=True)
        np.testing.assert_array_equal(
            gv.get.mi_pairs(adata, group=group, n=None)["mi"],
            gv.get.mi_pairs(alone, n=None)["mi"],
        )
    adata.write_h5ad(tmp_path / "groups.h5ad")
    back = ad.read_h5ad(tmp_path / "groups.h5ad")
    for key in adata.varp:
        np.testing.assert_array_equal(back.varp[key], adata.varp[key])
    assert list(back.uns["gv"]["groups"]) == groups


@pytest.mark.parametrize("key", ["a/b", "", " gv", 3])
def test_keys_that_h5ad_cannot_hold_are_refused(pbmc, key):
    adata = pbmc[:, :10].copy()
    before = snapshot(adata)
    with pytest.raises(ValueError, match="key_added"):
        gv.tl.coexpression(adata, key_added=key)
    assert_unchanged(before, adata)


def test_a_rerun_replaces_every_result_of_its_key(pbmc, tmp_path):
    adata = pbmc[:, :30].copy()
    adata.obs["half"] = np.where(np.arange(adata.n_obs) % 2, "x", "y")
    gv.tl.coexpression(adata, groupby="half", pvals=True)
    gv.tl.coexpression(adata, key_added="gv_other")  # another key is left alone
    gv.tl.coexpression(adata)
    assert {k for k in adata.varp if k.startswith("gv_") and not k.startswith("gv_other")} == {
        "gv_mi"
    }
    assert "gv_n_bins_x" not in adata.var and "gv_other_mi" in adata.varp
    with pytest.raises(ValueError, match="did not run with groupby"):
        gv.get.mi_pairs(adata, group="x")
    adata.write_h5ad(tmp_path / "rerun.h5ad")
    ad.read_h5ad(tmp_path / "rerun.h5ad")


# --------------------------------------------------------------------------------------------
# Gene selection by one rule
# --------------------------------------------------------------------------------------------


def test_integer_positions_are_positions_even_for_numeric_names():
    X = _correlated(3)
    adata = _adata(X, names=["3", "0", "5", "1", "2", "4"])
    gv.tl.coexpression(adata, genes=[0, 1])
    np.testing.assert_array_equal(adata.var["gv_used"], [True, True, False, False, False, False])
    gv.tl.coexpression(adata, genes=np.array([0, 1], dtype=np.int64))
    np.testing.assert_array_equal(adata.var["gv_used"], [True, True, False, False, False, False])
    gv.tl.coexpression(adata, genes=["0", "1"])  # names are names
    np.testing.assert_array_equal(adata.var["gv_used"], [False, True, False, True, False, False])


def test_sets_generators_and_nullable_booleans_select_genes():
    adata = _adata(_correlated(4))
    gv.tl.coexpression(adata, genes={"g1", "g4"})
    assert adata.var["gv_used"].sum() == 2
    gv.tl.coexpression(adata, genes=(name for name in ["g0", "g2", "g3"]))
    assert adata.var["gv_used"].sum() == 3
    adata.var["chosen"] = pd.array([True, False, True, True, False, None], dtype="boolean")
    with pytest.raises(ValueError, match="missing values"):
        gv.tl.coexpression(adata, genes="chosen")
    adata.var["chosen"] = adata.var["chosen"].fillna(False)
    gv.tl.coexpression(adata, genes="chosen")
    assert adata.var["gv_used"].sum() == 3


def test_duplicate_names_work_or_say_how_to_fix_them():
    adata = _adata(_correlated(6), names=["a", "b", "a", "c", "d", "e"])
    gv.tl.coexpression(adata)  # no selection: the positions need no names
    gv.tl.coexpression(adata, genes=["b", "c"])  # unique names among duplicates: fine
    assert adata.var["gv_used"].sum() == 2
    before = snapshot(adata)
    with pytest.raises(ValueError, match=r"var_names_make_unique\(\)"):
        gv.tl.coexpression(adata, genes=["a", "c"])
    assert_unchanged(before, adata)


def test_a_few_genes_of_a_huge_anndata_are_stored_sparse():
    few = sparse.csr_matrix(np.random.default_rng(0).integers(0, 5, size=(50, 3)))
    rest = sparse.random(50, 300_000 - 3, density=1e-4, format="csr", random_state=0) * 5
    adata = ad.AnnData(sparse.hstack([few, rest], format="csr"))
    gv.tl.coexpression(adata, genes=[0, 1, 2], pvals=True)
    mi = adata.varp["gv_mi"]
    assert sparse.issparse(mi) and mi.shape == (300_000, 300_000) and mi.nnz <= 6
    assert sparse.issparse(adata.varp["gv_pvals"])


# --------------------------------------------------------------------------------------------
# Arguments
# --------------------------------------------------------------------------------------------


def test_numpy_integers_and_boolean_values_are_accepted():
    X = _correlated(8)
    adata = _adata(X)
    gv.tl.coexpression(adata, n_jobs=np.int64(2), n_bins=np.int32(4), top_k=np.int64(2))
    detected = _adata(X > 0)  # detection calls: a 0/1 matrix
    gv.tl.coexpression(detected)
    np.testing.assert_array_equal(detected.varp["gv_mi"], _mi((X > 0).astype(np.uint8)))


def test_groupby_on_a_float_column_is_refused(pbmc):
    adata = pbmc[:, :10].copy()
    before = snapshot(adata)
    with pytest.raises(ValueError, match="floating-point numbers"):
        gv.tl.coexpression(adata, groupby="percent_mito")
    assert_unchanged(before, adata)


def test_the_command_line_never_shows_a_traceback(tmp_path):
    """A matrix with duplicate entries, and an argument the library refuses, from the CLI."""
    ad.AnnData(_split_entry()).write_h5ad(tmp_path / "in.h5ad")
    run = [sys.executable, "-m", "geneverse", "coexpression", tmp_path / "in.h5ad", "-q"]
    good = subprocess.run(
        [*run, "-o", tmp_path / "out.h5ad", "--no-cache", "--n-bins", "2"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert good.returncode == 0, good.stderr
    result = ad.read_h5ad(tmp_path / "out.h5ad")
    assert np.isfinite(result.varp["gv_mi"]).all()
    np.testing.assert_array_equal(result.layers["gv_bins"].toarray()[:, 0], [1, 1, 2, 2, 0])
    bad = subprocess.run(
        [*run, "-o", tmp_path / "o.h5ad", "--key-added", "a/b"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("geneverse: error: key_added='a/b'")
    assert not (tmp_path / "o.h5ad").exists()
