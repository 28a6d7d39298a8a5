"""What a run gives per group of cells, and its round trip through the result cache."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse

from ... import _logging as logg
from ..._settings import settings
from . import _cache

Scores = np.ndarray | sparse.csr_matrix


@dataclass(frozen=True)
class GroupResult:
    """One group's bins (its cells × used genes; ``None`` for other measures than MI),
    bins per gene, and its genes × genes scores by name (``"mi"``, ``"pvals"``, ...)."""

    bins: sparse.csr_matrix | None
    n_bins: np.ndarray | None
    scores: dict[str, Scores]

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        if self.bins is not None:
            arrays |= _cache.sparse_arrays(f"{prefix}bins", self.bins)
            arrays[f"{prefix}n_bins"] = self.n_bins
        for name, scores in self.scores.items():
            if sparse.issparse(scores):
                arrays |= _cache.sparse_arrays(f"{prefix}sparse_{name}", scores)
            else:
                arrays[f"{prefix}dense_{name}"] = scores
        return arrays

    @classmethod
    def from_arrays(cls, prefix: str, arrays: dict[str, np.ndarray]) -> GroupResult:
        bins = n_bins = None
        if f"{prefix}n_bins" in arrays:
            bins = _cache.sparse_from_arrays(f"{prefix}bins", arrays).tocsr()
            n_bins = arrays[f"{prefix}n_bins"]
        scores: dict[str, Scores] = {}
        for key in sorted(arrays):
            if key.startswith(f"{prefix}dense_"):
                scores[key.removeprefix(f"{prefix}dense_")] = arrays[key]
            elif key.startswith(f"{prefix}sparse_") and key.endswith("_format"):
                name = key.removeprefix(f"{prefix}sparse_").removesuffix("_format")
                scores[name] = _cache.sparse_from_arrays(f"{prefix}sparse_{name}", arrays)
        return cls(bins=bins, n_bins=n_bins, scores=scores)


def combined_digest(digests: list[str]) -> str:
    """One digest of the chunks' digests, in the order of the cells."""
    return hashlib.sha256("\n".join(digests).encode()).hexdigest()


def cached(
    compute: Callable[[], list[GroupResult]],
    data_digest: str,
    key_parts: dict[str, Any],
    use_cache: bool,
) -> list[GroupResult]:
    """``compute()``, or the stored result of an identical earlier call.

    The key is the digest of the values (canonical: equal matrices give equal digests), of
    ``key_parts`` (genes, pairs, cells, groups and every parameter that changes the
    result) and of the package version.
    """
    if not use_cache:
        return compute()
    key = _cache.cache_key(data_digest, key_parts)
    n_groups = len(key_parts["groups"])
    stored = _cache.load(key, cache_dir=settings.cache_dir)
    if stored is not None:
        logg.info(f"    loaded from the cache ({settings.cache_dir})")
        return [GroupResult.from_arrays(f"g{i}_", stored) for i in range(n_groups)]
    results = compute()
    arrays: dict[str, np.ndarray] = {}
    for i, result in enumerate(results):
        arrays |= result.to_arrays(f"g{i}_")
    _cache.save(key, arrays, cache_dir=settings.cache_dir, max_bytes=settings.cache_max_bytes)
    return results
