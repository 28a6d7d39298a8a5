"""Synthetic test data with a known truth: independent genes, and planted modules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

#: The benchmark generator (planted programs, optional groups of cells): the truth is known.
_WORKLOADS = Path(__file__).resolve().parents[1] / "benchmarks" / "workloads.py"


def workloads():
    """``benchmarks/workloads.py`` as a module (loaded once)."""
    name = "geneverse_benchmark_workloads"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, _WORKLOADS)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def null_counts(n_genes: int, n_cells: int, seed: int) -> np.ndarray:
    """Independent negative-binomial genes, ~10 % nonzero, dispersions and depths varied."""
    rng = np.random.default_rng(seed)
    shape = rng.uniform(0.2, 2.0, n_genes)
    p_zero = rng.uniform(0.85, 0.95, n_genes)
    return rng.negative_binomial(shape, p_zero ** (1 / shape), size=(n_cells, n_genes))


def planted_modules(n_genes: int, n_cells: int, modules: int, size: int, seed: int):
    """Negative-binomial counts whose means follow latent module activities.

    Every gene of module ``k`` follows the activity ``L_k`` of the cell (gamma, mean 1),
    either up (``L_k``) or down (``1 / (0.5 + L_k)``); the other genes are flat. Modules
    are independent, so a pair is dependent exactly when both genes are in one module.
    """
    rng = np.random.default_rng(seed)
    module = np.full(n_genes, -1)
    module[: modules * size] = np.repeat(np.arange(modules), size)
    activity = rng.gamma(0.5, 2.0, size=(n_cells, modules))
    in_module = module >= 0
    mean = np.ones((n_cells, n_genes))
    act = activity[:, module[in_module]]
    up = rng.random(in_module.sum()) < 0.5
    mean[:, in_module] = np.where(up, act, 1 / (0.5 + act))
    mu = rng.uniform(0.05, 0.3, n_genes) * mean / mean.mean(axis=0)
    shape = rng.uniform(0.5, 2.0, n_genes)
    X = rng.negative_binomial(shape, shape / (shape + mu))
    truth = (module[:, None] == module[None, :]) & in_module[:, None]
    return X, truth
