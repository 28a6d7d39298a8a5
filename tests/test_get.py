"""gv.get.mi_pairs equals a brute force over the dense MI matrix."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import geneverse as gv
from geneverse.get import _pairs

N_GENES = 30
UNUSED = [3, 17, 29]


def _mi_adata(seed: int = 0) -> ad.AnnData:
    """An AnnData with a stored MI: symmetric, many ties (one decimal), zeros, unused genes."""
    rng = np.random.default_rng(seed)
    upper = np.round(rng.normal(0, 0.6, size=(N_GENES, N_GENES)), 1)
    upper[rng.random(upper.shape) < 0.2] = 0.0
    mi = np.triu(upper, 1)
    mi = (mi + mi.T).astype(np.float32)
    used = np.ones(N_GENES, dtype=bool)
    used[UNUSED] = False
    mi[~used] = 0
    mi[:, ~used] = 0
    adata = ad.AnnData(
        X=np.zeros((4, N_GENES), dtype=np.float32),
        var=pd.DataFrame(index=[f"g{i}" for i in range(N_GENES)]),
    )
    adata.varp["gv_mi"] = mi
    adata.var["gv_used"] = used
    return adata


def brute_force(adata: ad.AnnData, key: str = "gv", n=None, gene=None) -> pd.DataFrame:
    """Every pair of used genes (i < j, or the pairs of ``gene``), sorted by |MI|, i, j."""
    mi = adata.varp[f"{key}_mi"]
    mi = mi.toarray() if sparse.issparse(mi) else np.asarray(mi)
    used = np.flatnonzero(adata.var[f"{key}_used"])
    rows = []
    for i in used:
        for j in used:
            if gene is None and i < j:
                rows.append((i, j, mi[i, j]))
            elif gene is not None and adata.var_names[i] == gene and i != j:
                rows.append((i, j, mi[i, j]))
    rows.sort(key=lambda r: (-abs(float(r[2])), r[0], r[1]))
    rows = rows[:n]
    names = adata.var_names
    return pd.DataFrame(
        {
            "gene_a": pd.Series([names[i] for i, _, _ in rows], dtype=object),
            "gene_b": pd.Series([names[j] for _, j, _ in rows], dtype=object),
            "mi": pd.Series([float(v) for _, _, v in rows], dtype=np.float64),
        }
    )


@pytest.fixture(params=[1 << 22, 40], ids=["one-block", "many-blocks"])
def block_entries(request, monkeypatch):
    """Run with the real block size and with tiny blocks, to test the merging of blocks."""
    monkeypatch.setattr(_pairs, "_BLOCK_ENTRIES", request.param)
    return request.param


@pytest.mark.parametrize("n", [0, 1, 7, 50, 300, None])
def test_top_pairs_equal_brute_force(block_entries, n):
    adata = _mi_adata()
    expected = brute_force(adata, n=n)
    pd.testing.assert_frame_equal(gv.get.mi_pairs(adata, n=n), expected)


@pytest.mark.parametrize("n", [1, 5, None])
def test_pairs_of_one_gene(n):
    adata = _mi_adata(seed=1)
    result = gv.get.mi_pairs(adata, n=n, gene="g5")
    pd.testing.assert_frame_equal(result, brute_force(adata, n=n, gene="g5"))
    assert (result["gene_a"] == "g5").all()
    assert not result["gene_b"].isin(["g5", *(f"g{i}" for i in UNUSED)]).any()


def test_every_unordered_pair_once_and_only_used_genes():
    adata = _mi_adata(seed=2)
    pairs = gv.get.mi_pairs(adata, n=None)
    n_used = N_GENES - len(UNUSED)
    assert len(pairs) == n_used * (n_used - 1) // 2
    unordered = {frozenset(p) for p in zip(pairs.gene_a, pairs.gene_b, strict=True)}
    assert len(unordered) == len(pairs)
    assert not pd.concat([pairs.gene_a, pairs.gene_b]).isin([f"g{i}" for i in UNUSED]).any()
    assert list(pairs.columns) == ["gene_a", "gene_b", "mi"]
    assert pairs["mi"].dtype == np.float64
    assert np.all(np.diff(pairs["mi"].abs().to_numpy()) <= 0)


def test_sparse_mi_matrix():
    adata = _mi_adata(seed=3)
    dense = brute_force(adata, n=40)
    adata.varp["gv_mi"] = sparse.csr_matrix(adata.varp["gv_mi"])
    pd.testing.assert_frame_equal(gv.get.mi_pairs(adata, n=40), dense)


def test_other_key_and_all_genes_used_without_used_column():
    adata = _mi_adata(seed=4)
    adata.varp["run2_mi"] = adata.varp.pop("gv_mi")
    del adata.var["gv_used"]
    adata.var["run2_used"] = True
    result = gv.get.mi_pairs(adata, key="run2", n=10)
    pd.testing.assert_frame_equal(result, brute_force(adata, key="run2", n=10))


def test_real_coexpression_result(pbmc):
    adata = pbmc.raw.to_adata()[:, :60].copy()
    gv.tl.coexpression(adata, backend="numpy")
    pd.testing.assert_frame_equal(gv.get.mi_pairs(adata, n=25), brute_force(adata, n=25))
    pd.testing.assert_frame_equal(
        gv.get.mi_pairs(adata, n=5, gene="S100A8"), brute_force(adata, n=5, gene="S100A8")
    )


def test_real_sparse_top_k_result(pbmc):
    adata = pbmc.raw.to_adata()[:, :60].copy()
    dense = gv.tl.coexpression(adata, backend="numpy", copy=True)
    gv.tl.coexpression(adata, backend="numpy", top_k=3)
    assert sparse.issparse(adata.varp["gv_mi"])
    # the 3 strongest pairs are among every gene's 3 strongest partners
    pd.testing.assert_frame_equal(gv.get.mi_pairs(adata, n=3), brute_force(dense, n=3))
    stored = gv.get.mi_pairs(adata, n=None)
    assert len(stored) == sparse.triu(adata.varp["gv_mi"], k=1).nnz


def test_error_without_coexpression():
    adata = _mi_adata()
    del adata.varp["gv_mi"]
    with pytest.raises(ValueError, match=r"run gv\.tl\.coexpression\(adata"):
        gv.get.mi_pairs(adata)


def test_error_names_the_key_that_exists():
    adata = _mi_adata()
    with pytest.raises(ValueError, match="key='gv'"):
        gv.get.mi_pairs(adata, key="other")


def test_error_unknown_gene():
    with pytest.raises(ValueError, match=r"not in adata\.var_names: 'NOPE'"):
        gv.get.mi_pairs(_mi_adata(), gene="NOPE")


def test_error_unused_gene():
    with pytest.raises(ValueError, match="not part of the MI computation"):
        gv.get.mi_pairs(_mi_adata(), gene="g3")


@pytest.mark.parametrize("n", [-1, 2.5, "10", True])
def test_error_bad_n(n):
    with pytest.raises(
        (TypeError, ValueError), match=r"n(=-1)? (must be a whole number|is out of range)"
    ):
        gv.get.mi_pairs(_mi_adata(), n=n)


def test_large_matrix_is_scanned_in_blocks(monkeypatch):
    """20,000 genes are not needed to see the work stay in blocks: count the block reads."""
    adata = _mi_adata(seed=5)
    monkeypatch.setattr(_pairs, "_BLOCK_ENTRIES", 3 * N_GENES)
    reads = []
    original = _pairs._top_entries
    monkeypatch.setattr(_pairs, "_top_entries", lambda s, n: reads.append(s.size) or original(s, n))
    gv.get.mi_pairs(adata, n=5)
    assert len(reads) > 1
    assert max(reads) <= 3 * N_GENES


def _grouped() -> ad.AnnData:
    """A result of ``coexpression(groupby=...)``: one matrix per category."""
    adata = _mi_adata(seed=6)
    adata.varp["gv_mi_T cells"] = adata.varp.pop("gv_mi")
    adata.varp["gv_mi_B cells"] = _mi_adata(seed=7).varp["gv_mi"]
    adata.uns["gv"] = {"groups": np.array(["T cells", "B cells"])}
    return adata


def test_pairs_of_one_group():
    adata = _grouped()
    expected = _mi_adata(seed=7)
    pd.testing.assert_frame_equal(
        gv.get.mi_pairs(adata, n=12, group="B cells"), brute_force(expected, n=12)
    )


def test_error_groups_without_group():
    with pytest.raises(ValueError, match=r"one MI matrix per group.*\['T cells', 'B cells'\]"):
        gv.get.mi_pairs(_grouped())


def test_error_unknown_group():
    with pytest.raises(ValueError, match=r"No MI of group 'NK' .*its groups are"):
        gv.get.mi_pairs(_grouped(), group="NK")
