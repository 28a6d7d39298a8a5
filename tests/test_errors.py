"""Bad input raises a clear error and leaves the AnnData exactly as it was."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

import geneverse as gv

from conftest import assert_unchanged, snapshot


def _counts(layout=sparse.csr_matrix) -> ad.AnnData:
    rng = np.random.default_rng(0)
    X = rng.poisson(0.5, size=(30, 6)).astype(np.float32)
    adata = ad.AnnData(layout(X))
    adata.var_names = [f"gene{i}" for i in range(6)]
    adata.obs_names = [f"cell{i}" for i in range(30)]
    adata.var["highly_variable"] = [True, False] * 3
    adata.var["symbol"] = list("abcdef")
    adata.layers["counts"] = adata.X.copy()
    adata.uns["note"] = {"kept": np.arange(3)}
    return adata


def _with_value(value: float, layout=sparse.csr_matrix) -> ad.AnnData:
    adata = _counts(np.asarray)
    X = adata.X.copy()
    X[4, 2] = value
    adata.X = layout(X)
    return adata


BAD_CALLS = {
    "negative": (
        lambda: _with_value(-1.5),
        {},
        ValueError,
        r"negative values \(first: gene 'gene2' in cell 'cell4'.*use_raw=True",
    ),
    "negative dense": (
        lambda: _with_value(-0.1, np.asarray),
        {},
        ValueError,
        "negative values.*log-normalized layer",
    ),
    "nan": (lambda: _with_value(np.nan), {}, ValueError, "NaN values.*gene2"),
    "infinite": (lambda: _with_value(np.inf, np.asarray), {}, ValueError, "infinite values"),
    "empty": (lambda: ad.AnnData(np.zeros((0, 3))), {}, ValueError, "empty"),
    "no genes": (lambda: _counts(), {"genes": []}, ValueError, "genes is empty"),
    "all-false mask": (
        lambda: _counts(),
        {"genes": np.zeros(6, dtype=bool)},
        ValueError,
        "No genes are selected",
    ),
    "n_bins 0": (lambda: _counts(), {"n_bins": 0}, ValueError, "n_bins=0 is out of range"),
    "n_bins 256": (lambda: _counts(), {"n_bins": 256}, ValueError, "at most 255 bins"),
    "n_bins float": (lambda: _counts(), {"n_bins": 2.5}, TypeError, "whole number"),
    "unknown layer": (
        lambda: _counts(),
        {"layer": "spliced"},
        ValueError,
        r"layer='spliced' is not in adata.layers \(layers: \['counts'\]\)",
    ),
    "unknown gene": (
        lambda: _counts(),
        {"genes": ["gene1", "CD3E"]},
        ValueError,
        "not in adata.var_names: 'CD3E'",
    ),
    "unknown var column": (
        lambda: _counts(),
        {"genes": "highly_variable_genes"},
        ValueError,
        "not a column of adata.var",
    ),
    "non-boolean var column": (
        lambda: _counts(),
        {"genes": "symbol"},
        ValueError,
        "needs a boolean column",
    ),
    "mask of wrong length": (
        lambda: _counts(),
        {"genes": np.ones(4, dtype=bool)},
        ValueError,
        "length 4",
    ),
    "use_raw without raw": (lambda: _counts(), {"use_raw": True}, ValueError, "no .raw"),
    "use_raw and layer": (
        lambda: _counts(),
        {"use_raw": True, "layer": "counts"},
        ValueError,
        "pass only one",
    ),
    "unknown backend": (lambda: _counts(), {"backend": "cuda"}, ValueError, "not known"),
    "device without gpu": (
        lambda: _counts(),
        {"backend": "numpy", "device": "cuda"},
        ValueError,
        "device='cuda' applies only with method='mi' and backend='gpu'",
    ),
    "bad n_jobs": (lambda: _counts(), {"n_jobs": 0}, ValueError, "positive number of threads"),
    "bad key": (lambda: _counts(), {"key_added": ""}, ValueError, "non-empty string"),
    "string values": (
        lambda: ad.AnnData(np.full((3, 2), "a", dtype=object)),
        {},
        TypeError,
        "needs numbers",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_input_raises_and_changes_nothing(case):
    make, kwargs, error, message = BAD_CALLS[case]
    adata = make()
    before = snapshot(adata)
    with pytest.raises(error, match=message):
        gv.tl.coexpression(adata, **kwargs)
    assert_unchanged(before, adata)


def test_scaled_data_is_refused_with_the_fix(pbmc):
    """pbmc68k_reduced's X is scaled (negative values): the message says what to use."""
    adata = pbmc.copy()
    before = snapshot(adata)
    with pytest.raises(ValueError, match="use_raw=True"):
        gv.tl.coexpression(adata, use_raw=False)
    assert_unchanged(before, adata)


def test_unusable_backend_says_why(monkeypatch):
    from geneverse.kernels import _numba

    monkeypatch.setattr(
        _numba.NumbaKernel, "unavailable_reason", classmethod(lambda cls, device=None: "gone")
    )
    adata = _counts()
    before = snapshot(adata)
    with pytest.raises(ValueError, match="The 'numba' backend cannot run here: gone"):
        gv.tl.coexpression(adata, backend="numba")
    assert_unchanged(before, adata)
    assert not gv.backends().loc["numba", "usable"]
    assert gv.backends().loc["numba", "reason"] == "gone"


def test_filter_entropy_bad_input_changes_nothing():
    adata = _with_value(-2.0)
    before = snapshot(adata)
    with pytest.raises(ValueError, match="negative values"):
        gv.pp.filter_entropy(adata)
    with pytest.raises(TypeError, match="min_entropy"):
        gv.pp.filter_entropy(_counts(), min_entropy="high")
    assert_unchanged(before, adata)


def test_settings_refuse_nonsense():
    with pytest.raises(ValueError, match="verbosity"):
        gv.settings.verbosity = 9
    with pytest.raises(ValueError, match="backend"):
        gv.settings.backend = "fortran"
    with pytest.raises(ValueError, match="n_jobs"):
        gv.settings.n_jobs = -3
