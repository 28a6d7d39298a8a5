"""Shared fixtures: the backends to test, real data and its oracle, AnnData snapshots."""

from __future__ import annotations

import copy

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse

import geneverse as gv

from oracle import oracle_signed_mi

#: Every backend the README's install gives, as ``(backend, device)``; torch runs on CPU.
BACKENDS = [("numpy", None), ("rust", None), ("numba", None), ("gpu", "cpu")]


@pytest.fixture(autouse=True)
def _quiet_and_uncached():
    """Tests run silently and compute every time; a test of messages or of the cache
    sets the verbosity or the cache folder itself."""
    before = gv.settings.verbosity, gv.settings.cache_dir
    gv.settings.verbosity = 0
    gv.settings.cache_dir = None
    yield
    gv.settings.verbosity, gv.settings.cache_dir = before


@pytest.fixture(scope="session")
def pbmc() -> ad.AnnData:
    """``scanpy.datasets.pbmc68k_reduced()``: real, log-normalized ``.raw`` (765 × 700)."""
    return sc.datasets.pbmc68k_reduced()


@pytest.fixture(scope="session")
def pbmc_oracle(pbmc) -> np.ndarray:
    """The oracle's signed MI of ``pbmc.raw`` for the genes of ``pbmc.var_names``."""
    return oracle_signed_mi(pbmc.raw[:, pbmc.var_names].X, n_bins=10, signed=True)


def snapshot(adata: ad.AnnData) -> ad.AnnData:
    """A deep copy of every slot, to compare against after a call."""
    return copy.deepcopy(adata)


def assert_unchanged(before: ad.AnnData, after: ad.AnnData) -> None:
    """Every slot of ``after`` equals ``before``: X, layers, obs, var, uns, m/p slots, raw."""
    assert after.shape == before.shape
    _assert_same(before.X, after.X, "X")
    pd.testing.assert_frame_equal(before.obs, after.obs)
    pd.testing.assert_frame_equal(before.var, after.var)
    for slot in ("layers", "obsm", "varm", "obsp", "varp"):
        assert set(getattr(before, slot)) == set(getattr(after, slot)), slot
        for key in getattr(before, slot):
            _assert_same(getattr(before, slot)[key], getattr(after, slot)[key], f"{slot}/{key}")
    _assert_same_tree(before.uns, after.uns, "uns")
    assert (before.raw is None) == (after.raw is None)
    if before.raw is not None:
        _assert_same(before.raw.X, after.raw.X, "raw.X")
        pd.testing.assert_frame_equal(before.raw.var, after.raw.var)


def _assert_same(a, b, where: str) -> None:
    assert type(a) is type(b), where
    if sparse.issparse(a):
        assert a.format == b.format and a.dtype == b.dtype, where
        a, b = a.tocoo(), b.tocoo()
        for part in ("row", "col", "data"):
            np.testing.assert_array_equal(getattr(a, part), getattr(b, part), err_msg=where)
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=where)
        assert np.asarray(a).dtype == np.asarray(b).dtype, where


def _assert_same_tree(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for key in a:
            _assert_same_tree(a[key], b[key], f"{where}/{key}")
    else:
        _assert_same(a, b, where)


def full_matrix(kernel, block: int | None = None) -> np.ndarray:
    """A kernel's symmetric MI matrix, assembled from row blocks of ``block`` rows (default:
    the kernel's preferred size), each checked for dtype and shape."""
    n_genes = kernel.data.n_genes
    block = block or kernel.preferred_block_rows
    out = np.zeros((n_genes, n_genes), dtype=np.float32)
    for start in range(0, n_genes, block):
        stop = min(n_genes, start + block)
        rows = kernel.scores(start, stop).mi
        assert rows.dtype == np.float32
        assert rows.shape == (stop - start, n_genes - start)
        out[start:stop, start:] = rows
        out[start:, start:stop] = rows.T
    return out
