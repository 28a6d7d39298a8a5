"""What a run will cost, said before it starts: the work, the time, the memory."""

from __future__ import annotations

import numpy as np
import psutil

from ...kernels import BinnedGenes, Kernel
from ._plan import GenePlan
from ._store import dense_in_var_space

_GB = 1024**3


def _gigabytes(n_bytes: float) -> str:
    return f"{n_bytes / _GB:.2g} GB"


def output_bytes(n_vars: int, n_used: int, n_outputs: int) -> int:
    """Bytes of ``n_outputs`` dense genes × genes results of ``n_used`` genes stored among
    ``n_vars`` (dense or sparse, as :func:`~._store.dense_in_var_space`), plus one to build."""
    used = 4 * n_used * n_used
    stored = 4 * n_vars * n_vars if dense_in_var_space(n_vars, n_used) else 12 * n_used * n_used
    return n_outputs * (used + stored) if n_used != n_vars else (n_outputs + 1) * used


def check_output_fits(n_vars: int, plan: GenePlan, top_k: int | None, n_outputs: int) -> None:
    """Refuse, before allocating, ``n_outputs`` dense genes × genes results (unless
    ``top_k`` or the plan's ``against`` makes them sparse) larger than the memory available.

    Raises
    ------
    MemoryError
        With the estimate, and ``top_k`` as the way out.
    """
    if top_k is not None or plan.in_against is not None:
        return
    needed = output_bytes(n_vars, plan.n_genes, n_outputs)
    available = psutil.virtual_memory().available
    if needed > available:
        raise MemoryError(
            f"The dense results of {plan.n_genes} genes need about {_gigabytes(needed)}, but "
            f"only {_gigabytes(available)} of memory is available. Pass top_k=50 to keep "
            "each gene's 50 strongest partners as a sparse matrix, or select fewer genes "
            "with genes=... (for example 'highly_variable')."
        )


#: Bytes per entry of the compact bins (gene, bin, sign value), of a kernel's own copy of
#: them, and of the bins layer that is stored.
COMPACT_BYTES, KERNEL_BYTES, LAYER_BYTES = 13, 11, 5


def check_compact_bins_fit(n_entries: int, n_genes: int, source: str, *, on_workers: bool) -> None:
    """Refuse, after pass 1 and before pass 2, compact bins that cannot fit in memory.

    ``n_entries`` are the nonzero values of the used genes; ``on_workers``: the counting
    runs on Dask workers, and only the bins layer comes here.

    Raises
    ------
    MemoryError
        With the estimate, and the ways out.
    """
    per_entry = LAYER_BYTES if on_workers else COMPACT_BYTES + KERNEL_BYTES + LAYER_BYTES
    needed = n_entries * per_entry
    available = psutil.virtual_memory().available
    if needed > available:
        where = "the bins layer of" if on_workers else "the compact bins of"
        raise MemoryError(
            f"{where} {n_entries:,} nonzero values of {n_genes} genes of {source} need about "
            f"{_gigabytes(needed)}, but only {_gigabytes(available)} of memory is available. "
            "Select fewer genes with genes=... (for example 'highly_variable'), or pass X as "
            "a Dask array to a dask.distributed cluster, whose workers then hold the bins."
        )


def cooccurrence_work(data: BinnedGenes, n_rows: int) -> float:
    """Increments of the co-occurrence counts: pairs of a cell's entries, one a row gene."""
    per_cell = np.diff(data.indptr).astype(np.float64)
    if n_rows >= data.n_genes:
        in_rows = per_cell
    else:  # genes are sorted within a cell: the row genes come first
        in_rows = np.minimum(per_cell, _entries_below(data, n_rows))
    return float(np.sum(in_rows * (per_cell - (in_rows - 1) / 2)))


def _entries_below(data: BinnedGenes, n_rows: int) -> np.ndarray:
    """Entries of each cell whose gene is one of the first ``n_rows``."""
    below = np.concatenate([[0], np.cumsum(data.genes < n_rows)])
    return (below[data.indptr[1:]] - below[data.indptr[:-1]]).astype(np.float64)


def estimate_run(
    data: BinnedGenes, kernel: Kernel, n_rows: int, group: str | None, top_k: int | None
) -> str:
    """A one-line estimate of the run's time and output memory, for the info log."""
    work = cooccurrence_work(data, n_rows)
    seconds = work / (kernel.throughput * max(1, kernel.n_jobs))
    n = data.n_genes
    output = 2 * n * top_k * 12 if top_k is not None else 4 * n * n
    where = "" if group is None else f" in group {group!r}"
    return (
        f"    {n} genes × {data.n_cells} cells{where}: {work:.2g} co-occurrences, "
        f"backend {kernel.name!r} with {kernel.n_jobs} threads, roughly {seconds:.2g} s "
        f"and {_gigabytes(output)} of output"
    )
