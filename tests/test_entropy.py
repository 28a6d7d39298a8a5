"""gv.pp.filter_entropy: the definition (docs/definition.md) and GeneVector's gene selection."""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import sparse

import geneverse as gv

from conftest import assert_unchanged, snapshot
from oracle import oracle_entropy


def genevector_quality_control_mask(X: np.ndarray, threshold: float = 1.0) -> np.ndarray:
    """GeneVector 1.0's ``quality_control`` rule, transcribed: the entropy of the counts of
    every distinct value but the smallest (meant to drop the zeros), ``> threshold``."""
    entropy = [
        scipy.stats.entropy(np.unique(X[:, g], return_counts=True)[1][1:])
        for g in range(X.shape[1])
    ]
    return np.array(entropy) > threshold


def test_keeps_the_genes_genevector_keeps_on_pbmc68k_raw(pbmc):
    raw = pbmc.raw.to_adata()
    X = raw.X.toarray()
    assert (X == 0).any(axis=0).all(), "the comparison needs a zero in every gene"
    mask, entropy = gv.pp.filter_entropy(raw, min_entropy=1.0, inplace=False)
    np.testing.assert_array_equal(mask, genevector_quality_control_mask(X, 1.0))
    np.testing.assert_allclose(entropy, oracle_entropy(X), rtol=1e-12, atol=1e-12)
    # pbmc68k_reduced was already filtered, so 1.0 nats keeps every gene; a higher
    # threshold makes the comparison drop genes too.
    mask, _ = gv.pp.filter_entropy(raw, min_entropy=5.0, inplace=False)
    np.testing.assert_array_equal(mask, genevector_quality_control_mask(X, 5.0))
    assert 0 < mask.sum() < raw.n_vars


@settings(max_examples=80, deadline=None)
@given(
    X=arrays(
        np.int64, st.tuples(st.integers(1, 30), st.integers(1, 6)), elements=st.integers(0, 6)
    ),
    threshold=st.floats(0.0, 2.0),
)
def test_equals_the_definition(X, threshold):
    adata = ad.AnnData(sparse.csr_matrix(X.astype(np.float32)))
    mask, entropy = gv.pp.filter_entropy(adata, min_entropy=threshold, inplace=False)
    expected = oracle_entropy(X)
    np.testing.assert_allclose(entropy, expected, atol=1e-12)
    decided = np.abs(expected - threshold) > 1e-9
    np.testing.assert_array_equal(mask[decided], (expected > threshold)[decided])


def test_a_gene_without_zeros_keeps_its_smallest_value():
    """Unlike GeneVector, the smallest value of a gene expressed in every cell counts."""
    X = np.array([[1.0], [1.0], [2.0], [3.0]])
    _, entropy = gv.pp.filter_entropy(ad.AnnData(X), inplace=False)
    np.testing.assert_allclose(entropy, [scipy.stats.entropy([2, 1, 1])])


def test_inplace_false_changes_nothing(pbmc):
    adata = pbmc.copy()
    before = snapshot(adata)
    gv.pp.filter_entropy(adata, inplace=False)
    assert_unchanged(before, adata)


def test_inplace_subsets_and_stores_the_entropy(pbmc):
    adata = pbmc.copy()
    mask, entropy = gv.pp.filter_entropy(adata, inplace=False)
    assert gv.pp.filter_entropy(adata, key_added="gene_entropy") is None
    assert list(adata.var_names) == list(pbmc.var_names[mask])
    np.testing.assert_array_equal(adata.var["gene_entropy"], entropy[mask])
    assert (adata.var["gene_entropy"] > 1.0).all()
    assert adata.raw.n_vars == pbmc.raw.n_vars, "raw keeps every gene, as in scanpy"


def test_layer_is_used(pbmc):
    adata = pbmc.raw.to_adata()
    adata.layers["doubled"] = adata.X * 2
    adata.X = sparse.csr_matrix(adata.shape, dtype=np.float32)
    _, from_layer = gv.pp.filter_entropy(adata, layer="doubled", inplace=False)
    _, from_x = gv.pp.filter_entropy(adata, inplace=False)
    assert (from_layer > 0).any() and not from_x.any()
