"""Write a run's results into the AnnData, all at once, at the end.

A rerun with the same ``key_added`` replaces every result of that key: the keys a run
writes are recorded in ``uns[key]["stored"]``, and the next run removes them first.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from anndata import AnnData
from scipy import sparse

from ._plan import Group
from ._results import GroupResult

#: The p-value and q-value scores, and the value of a pair that was not tested.
TEST_SCORES = ("pvals", "qvals")
_UNTESTED = 1.0
#: A result of the used genes is placed densely among all genes when that costs at most
#: this many bytes, or at most 4 times a dense matrix of the used genes; otherwise sparsely.
_DENSE_VAR_SPACE_BYTES = 1 << 26


def store(
    adata: AnnData,
    key: str,
    columns: np.ndarray,
    groups: list[Group],
    results: list[GroupResult],
    uns: dict[str, Any],
) -> dict[str, list[str]]:
    """Write every result into ``adata`` (replacing those of an earlier run under ``key``);
    returns what was written, by slot."""
    forget(adata, key)
    written: dict[str, list[str]] = {"layers": [], "var": [], "varp": []}
    if results[0].bins is not None:
        adata.layers[f"{key}_bins"] = _bins_layer(adata, columns, groups, results)
        written["layers"].append(f"{key}_bins")
    for group, result in zip(groups, results, strict=True):
        suffix = "" if group.suffix is None else f"_{group.suffix}"
        if result.n_bins is not None:
            n_bins = np.zeros(adata.n_vars, dtype=np.int32)
            n_bins[columns] = result.n_bins
            adata.var[f"{key}_n_bins{suffix}"] = n_bins
            written["var"].append(f"{key}_n_bins{suffix}")
        for name, scores in result.scores.items():
            fill = _UNTESTED if name in TEST_SCORES else 0.0
            adata.varp[f"{key}_{name}{suffix}"] = in_var_space(scores, columns, adata.n_vars, fill)
            written["varp"].append(f"{key}_{name}{suffix}")
    used = np.zeros(adata.n_vars, dtype=bool)
    used[columns] = True
    adata.var[f"{key}_used"] = used
    written["var"].append(f"{key}_used")
    if groups[0].name is not None:
        uns = uns | {
            "groups": np.asarray([group.name for group in groups], dtype=str),
            "group_keys": np.asarray([group.suffix for group in groups], dtype=str),
        }
    adata.uns[key] = uns | {
        "stored": {slot: np.asarray(k, dtype=str) for slot, k in written.items()}
    }
    return written


def forget(adata: AnnData, key: str) -> None:
    """Remove every result an earlier run stored under ``key``."""
    previous = adata.uns.get(key)
    if not isinstance(previous, dict):
        return
    stored = previous.get("stored")
    if not isinstance(stored, dict):
        return
    for slot in ("layers", "var", "varp"):
        container = getattr(adata, slot)
        for name in np.asarray(stored.get(slot, []), dtype=str).ravel():
            if slot == "var":
                if name in adata.var.columns:
                    del adata.var[name]
            elif name in container:
                del container[name]
    del adata.uns[key]


def dense_in_var_space(n_vars: int, n_used: int) -> bool:
    """Whether a genes × genes result of ``n_used`` of ``n_vars`` genes is stored densely."""
    var_space = 4 * n_vars * n_vars
    return var_space <= max(_DENSE_VAR_SPACE_BYTES, 4 * 4 * n_used * n_used)


def in_var_space(scores, columns: np.ndarray, n_vars: int, fill: float = 0.0):
    """Place the used genes' matrix at their positions among all genes.

    Dense when :func:`dense_in_var_space` (others: ``fill``), else CSR holding the used
    genes' pairs only (for p- and q-values, a pair not stored was not tested).
    """
    if sparse.issparse(scores) or not dense_in_var_space(n_vars, columns.size):
        coo = sparse.coo_matrix(scores)
        matrix = sparse.csr_matrix(
            (coo.data.astype(np.float32), (columns[coo.row], columns[coo.col])),
            shape=(n_vars, n_vars),
        )
        matrix.sort_indices()
        return matrix
    if columns.size == n_vars and (columns == np.arange(n_vars)).all():
        return scores
    full = np.full((n_vars, n_vars), fill, dtype=np.float32)
    full[np.ix_(columns, columns)] = scores
    return full


def _bins_layer(adata, columns, groups, results) -> sparse.csr_matrix:
    """Every group's bins in one cells × genes layer."""
    if len(groups) == 1 and groups[0].cells.size == adata.n_obs:  # only the gene columns move
        bins = results[0].bins
        layer = sparse.csr_matrix(
            (bins.data, columns[bins.indices], bins.indptr), shape=adata.shape, dtype=np.uint8
        )
        layer.sort_indices()  # the used genes may come in another order than var's
        return layer
    parts = []
    for group, result in zip(groups, results, strict=True):
        coo = result.bins.tocoo()
        parts.append((group.cells[coo.row], columns[coo.col], coo.data))
    rows, cols, values = (np.concatenate(part) for part in zip(*parts, strict=True))
    return sparse.csr_matrix((values, (rows, cols)), shape=adata.shape, dtype=np.uint8)
