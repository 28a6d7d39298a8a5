"""The benchmark workloads, generated with fixed seeds.

=========  ==================  =============================================================
name       genes × cells       what
=========  ==================  =============================================================
seed       2,000 × 5,000       negative-binomial counts, ~10 % nonzero, planted modules
pbmc68k    765 × 700           ``adata.raw`` of ``scanpy.datasets.pbmc68k_reduced()``, real
dense      2,000 × 5,000       1 + negative-binomial counts: no zeros, every value ≥ 1
atlas      20,000 × 100,000    negative-binomial counts, ~5 % nonzero, made chunk by chunk
=========  ==================  =============================================================

The synthetic model (one draw per cell and gene, all from fixed seeds):

* Genes are grouped into *programs*. Each program ``k`` has a latent per-cell activity
  ``z[c, k] ~ N(0, 1)``. A program's genes are split in a co-expressed set (sign ``+1``,
  log-mean ``+ effect * z``) and an anti-correlated set (sign ``-1``, log-mean
  ``- effect * z``: the opposite activity). Other genes are background (sign 0).
* The mean of gene ``g`` in cell ``c`` is
  ``mu = scale * base[g] * size[c] * exp(sign[g] * effect * z[c, program[g]] - effect²/2)``
  with ``base`` log-normal, ``size`` a log-normal library size, and ``scale`` calibrated
  (by root finding on a sample of cells) so that the expected nonzero fraction is the target.
* Counts are negative binomial (mean ``mu``, dispersion ``r[g]``), drawn by inverting the
  CDF with one uniform per entry: an entry is nonzero when its uniform exceeds the NB
  probability of 0, so the matrix is built sparse, chunk by chunk, without a dense copy.

The truth is stored in the AnnData: ``var["program"]`` (program of each gene, -1 for
background), ``var["program_sign"]`` (+1 co-expressed, -1 anti-correlated, 0 background),
``var["base_mean"]``, ``var["dispersion"]``, ``obs["size_factor"]``,
``obsm["program_activity"]`` (the latent ``z``) and ``uns["workload"]`` (every parameter).
Expected signed MI: positive within a set, negative between the two sets of a program,
near zero elsewhere.

Groups of cells (for differential co-expression; off in every workload of the table):
with ``group_programs`` or ``group_fraction`` set, each cell is in group ``"B"`` with
probability ``group_fraction`` (default 0.5), else ``"A"`` (``obs["group"]``), and the
last ``group_programs`` programs are active in group B only: in group A their genes'
log-mean has no program term at all (so their mean is the same in both groups, and they
are independent of each other there). ``var["group_specific"]`` marks those genes.

Use :func:`make_workload` (``tiny=True`` for tests) or :func:`load_workload`, which caches
the result as ``.h5ad``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
from scipy import optimize, sparse

#: Bump when the generator changes: it is part of the cache file names.
GENERATOR_VERSION = 1

#: Names of every workload: those of the design's table, then ``scores4k`` (the top-k
#: size where the recommended score is timed) and ``chunked10k`` (read chunk by chunk).
WORKLOADS = ("seed", "pbmc68k", "dense", "atlas", "scores4k", "chunked10k")


@dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of one synthetic workload.

    Attributes
    ----------
    n_genes, n_cells
        Shape (genes × cells; the AnnData is cells × genes).
    nonzero
        Target fraction of nonzero entries; ``None`` for a dense matrix of ``1 + counts``.
    seed
        Seed of every random draw.
    program_size
        Genes per program (its co-expressed and anti-correlated sets together).
    anti_fraction
        Share of a program's genes in its anti-correlated set.
    module_fraction
        Share of all genes that belong to a program.
    effect
        Log-scale loading of a program's activity on its genes.
    size_sigma
        Standard deviation of the log library size of the cells.
    base_sigma
        Standard deviation of the log base mean of the genes.
    dense_mean
        Median base mean of a gene when ``nonzero`` is ``None`` (no calibration then).
    chunk_cells
        Cells generated at a time; part of the result (each chunk has its own seed).
    group_programs
        How many programs (the last ones) are active only in the cells of group ``"B"``;
        ``None`` (or 0 with ``group_fraction``): none.
    group_fraction
        Share of the cells in group ``"B"``; ``None``: 0.5 when ``group_programs`` is set.
        Cells get groups only when one of the two is set; unset, they change nothing of
        the output (their ``None`` is not even stored in ``uns``).
    """

    n_genes: int
    n_cells: int
    nonzero: float | None
    seed: int
    program_size: int = 30
    anti_fraction: float = 1 / 3
    module_fraction: float = 0.3
    effect: float = 1.0
    size_sigma: float = 0.2
    base_sigma: float = 1.0
    dense_mean: float = 4.0
    chunk_cells: int = 1000
    group_programs: int | None = None
    group_fraction: float | None = None

    @property
    def n_programs(self) -> int:
        """Number of programs (at least one)."""
        return max(1, round(self.n_genes * self.module_fraction / self.program_size))

    @property
    def has_groups(self) -> bool:
        """Whether the cells are split into groups A and B."""
        return self.group_programs is not None or self.group_fraction is not None


#: The synthetic workloads at full size.
SPECS: dict[str, SyntheticSpec] = {
    "seed": SyntheticSpec(n_genes=2_000, n_cells=5_000, nonzero=0.10, seed=20_001),
    "dense": SyntheticSpec(n_genes=2_000, n_cells=5_000, nonzero=None, seed=20_002),
    "atlas": SyntheticSpec(n_genes=20_000, n_cells=100_000, nonzero=0.05, seed=20_003),
    "scores4k": SyntheticSpec(n_genes=4_000, n_cells=20_000, nonzero=0.10, seed=20_004),
    "chunked10k": SyntheticSpec(n_genes=10_000, n_cells=20_000, nonzero=0.06, seed=20_005),
}

#: Shape of every workload with ``tiny=True`` (genes, cells): for tests, in well under 1 s.
TINY_SHAPES: dict[str, tuple[int, int]] = {
    "seed": (60, 400),
    "dense": (60, 400),
    "atlas": (80, 800),
    "pbmc68k": (100, 300),
    "scores4k": (60, 400),
    "chunked10k": (70, 400),
}


def make_workload(name: str, *, tiny: bool = False) -> ad.AnnData:
    """The workload ``name`` (one of :data:`WORKLOADS`) as an AnnData (cells × genes).

    ``tiny=True`` gives the same kind of data at the shape of :data:`TINY_SHAPES`.
    """
    if name == "pbmc68k":
        return pbmc68k(tiny=tiny)
    if name not in SPECS:
        raise ValueError(f"unknown workload {name!r}; use one of {WORKLOADS}")
    spec = SPECS[name]
    if tiny:
        n_genes, n_cells = TINY_SHAPES[name]
        spec = replace(spec, n_genes=n_genes, n_cells=n_cells, program_size=10, chunk_cells=256)
    adata = synthetic(spec)
    adata.uns["workload"]["name"] = name
    adata.uns["workload"]["tiny"] = tiny
    return adata


def load_workload(name: str, cache_dir: Path | str, *, tiny: bool = False) -> ad.AnnData:
    """:func:`make_workload`, cached as an ``.h5ad`` file in ``cache_dir``."""
    path = workload_path(name, cache_dir, tiny=tiny)
    if path.exists():
        return ad.read_h5ad(path)
    adata = make_workload(name, tiny=tiny)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.h5ad")
    adata.write_h5ad(partial)
    partial.replace(path)
    return adata


def workload_path(name: str, cache_dir: Path | str, *, tiny: bool = False) -> Path:
    """Where :func:`load_workload` caches workload ``name``."""
    suffix = "-tiny" if tiny else ""
    return Path(cache_dir) / f"{name}{suffix}-v{GENERATOR_VERSION}.h5ad"


def pbmc68k(*, tiny: bool = False) -> ad.AnnData:
    """``scanpy.datasets.pbmc68k_reduced()`` with X taken from ``.raw`` (765 genes × 700 cells).

    The values are scanpy's log-normalized expression (non-negative, ~33 % nonzero). It ships
    inside scanpy, so no network is needed.
    """
    import scanpy as sc

    source = sc.datasets.pbmc68k_reduced()
    X = sparse.csr_matrix(source.raw.X)
    adata = ad.AnnData(X=X, obs=source.obs.copy(), var=pd.DataFrame(index=source.raw.var_names))
    if tiny:
        n_genes, n_cells = TINY_SHAPES["pbmc68k"]
        adata = adata[:n_cells, :n_genes].copy()
    adata.uns["workload"] = {
        "name": "pbmc68k",
        "tiny": tiny,
        "source": "scanpy.datasets.pbmc68k_reduced().raw",
        "nonzero_fraction": _nonzero_fraction(adata.X),
    }
    return adata


def synthetic(spec: SyntheticSpec, *, n_workers: int | None = None) -> ad.AnnData:
    """Negative-binomial counts with planted programs, as described in the module docstring.

    Chunks of cells are made by ``n_workers`` threads (default: the cores, at most 4; each
    holds a few dense ``chunk_cells × n_genes`` float64 temporaries); the result does not
    depend on ``n_workers``.
    """
    genes = _gene_parameters(spec)
    scale = 1.0 if spec.nonzero is None else _calibrate_scale(spec, genes)

    def make_chunk(
        index: int,
    ) -> tuple[np.ndarray | sparse.csr_matrix, np.ndarray, np.ndarray, Any]:
        n_cells = min(spec.chunk_cells, spec.n_cells - index * spec.chunk_cells)
        z, size = _cell_parameters(spec, index, n_cells)
        in_b = _cell_groups(spec, index, n_cells)
        active = None if in_b is None else _active_programs(spec, in_b)
        return _counts_chunk(spec, genes, scale, z, size, index, active), z, size, in_b

    n_chunks = -(-spec.n_cells // spec.chunk_cells)
    workers = min(n_workers or _available_cores(), 4, n_chunks)
    with ThreadPoolExecutor(max_workers=workers) as pool:  # numpy releases the GIL
        results = list(pool.map(make_chunk, range(n_chunks)))
    chunks = [chunk for chunk, *_ in results]
    activities = [z for _, z, _, _ in results]
    sizes = [size for _, _, size, _ in results]
    in_group_b = [in_b for *_, in_b in results]
    del results
    if spec.nonzero is None:
        X = np.vstack(chunks)
    else:
        X = _stack_csr(chunks, spec.n_genes)
    del chunks

    var = pd.DataFrame(
        {
            "program": genes["program"],
            "program_sign": genes["sign"],
            "base_mean": (scale * genes["base"]).astype(np.float32),
            "dispersion": genes["dispersion"].astype(np.float32),
        },
        index=pd.Index([f"gene{i:05d}" for i in range(spec.n_genes)]),
    )
    obs = pd.DataFrame(
        {"size_factor": np.concatenate(sizes).astype(np.float32)},
        index=pd.Index([f"cell{i:06d}" for i in range(spec.n_cells)]),
    )
    if spec.has_groups:
        obs["group"] = pd.Categorical.from_codes(
            np.concatenate(in_group_b).astype(np.int8), categories=["A", "B"]
        )
        var["group_specific"] = genes["program"] >= spec.n_programs - _n_group_programs(spec)
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.obsm["program_activity"] = np.vstack(activities).astype(np.float32)
    parameters = {k: v for k, v in asdict(spec).items() if v is not None}
    adata.uns["workload"] = {
        **parameters,
        "dense": spec.nonzero is None,
        "n_programs": spec.n_programs,
        "scale": float(scale),
        "nonzero_fraction": _nonzero_fraction(X),
        "generator_version": GENERATOR_VERSION,
    }
    return adata


def _gene_parameters(spec: SyntheticSpec) -> dict[str, np.ndarray]:
    """Program, sign, base mean and NB dispersion of every gene."""
    rng = np.random.default_rng([spec.seed, 0])
    n_genes, size = spec.n_genes, spec.program_size
    program = np.full(n_genes, -1, dtype=np.int32)
    sign = np.zeros(n_genes, dtype=np.int8)
    members = rng.permutation(n_genes)[: spec.n_programs * size].reshape(-1, size)
    n_anti = max(1, round(size * spec.anti_fraction))
    for k, genes in enumerate(members):
        program[genes] = k
        sign[genes[: size - n_anti]] = 1
        sign[genes[size - n_anti :]] = -1
    median = spec.dense_mean if spec.nonzero is None else 1.0
    base = median * np.exp(rng.normal(0.0, spec.base_sigma, n_genes))
    dispersion = np.exp(rng.normal(np.log(2.0), 0.3, n_genes))
    return {"program": program, "sign": sign, "base": base, "dispersion": dispersion}


def _cell_parameters(spec: SyntheticSpec, chunk: int, n_cells: int) -> tuple[np.ndarray, ...]:
    """Program activities ``z`` (cells × programs) and library sizes of one chunk of cells."""
    rng = np.random.default_rng([spec.seed, 1, chunk])
    z = rng.standard_normal((n_cells, spec.n_programs))
    sigma = spec.size_sigma
    size = np.exp(rng.normal(-(sigma**2) / 2, sigma, n_cells))
    return z, size


def _n_group_programs(spec: SyntheticSpec) -> int:
    """The programs active in group B only (the last ones), checked."""
    n = spec.group_programs or 0
    if not 0 <= n <= spec.n_programs:
        raise ValueError(f"group_programs={n} must lie in 0..{spec.n_programs} (the programs)")
    return n


def _cell_groups(spec: SyntheticSpec, chunk: int, n_cells: int) -> np.ndarray | None:
    """Whether each cell of a chunk is in group B (``None`` without groups)."""
    if not spec.has_groups:
        return None
    fraction = 0.5 if spec.group_fraction is None else spec.group_fraction
    if not 0 < fraction < 1:
        raise ValueError(f"group_fraction={fraction} must lie strictly between 0 and 1")
    return np.random.default_rng([spec.seed, 4, chunk]).random(n_cells) < fraction


def _active_programs(spec: SyntheticSpec, in_b: np.ndarray) -> np.ndarray:
    """Cells × programs: whether the program acts in the cell (group B: all of them)."""
    active = np.ones((in_b.size, spec.n_programs), dtype=bool)
    first = spec.n_programs - _n_group_programs(spec)
    active[:, first:] = in_b[:, None]
    return active


def _means(
    spec: SyntheticSpec,
    genes: dict[str, np.ndarray],
    z: np.ndarray,
    size: np.ndarray,
    active: np.ndarray | None = None,
) -> np.ndarray:
    """NB means (cells × genes) before the global scale; ``active`` (cells × programs)
    switches a program's whole term off in a cell."""
    padded = np.concatenate([z, np.zeros((z.shape[0], 1))], axis=1)  # program -1: no activity
    activity = np.take(padded, genes["program"], axis=1)
    sign = genes["sign"].astype(np.float64)
    log_mu = activity
    log_mu *= spec.effect * sign
    if active is None:
        log_mu += np.log(genes["base"]) - (spec.effect**2 / 2) * np.abs(sign)
    else:
        log_mu -= (spec.effect**2 / 2) * np.abs(sign)
        on = np.concatenate([active, np.ones((active.shape[0], 1), dtype=bool)], axis=1)
        log_mu *= np.take(on, genes["program"], axis=1)
        log_mu += np.log(genes["base"])
    log_mu += np.log(size)[:, None]
    return np.exp(log_mu, out=log_mu)


def _p_zero(mu: np.ndarray, dispersion: np.ndarray) -> np.ndarray:
    """NB probability of a zero count: ``(r / (r + mu)) ** r`` (``dispersion`` broadcasts)."""
    out = mu + dispersion
    np.divide(dispersion, out, out=out)
    np.log(out, out=out)
    out *= dispersion
    return np.exp(out, out=out)


def _calibrate_scale(spec: SyntheticSpec, genes: dict[str, np.ndarray]) -> float:
    """The scale of every mean that gives the target expected nonzero fraction."""
    n_cells = min(spec.n_cells, max(200, 4_000_000 // spec.n_genes))
    rng = np.random.default_rng([spec.seed, 2])
    z = rng.standard_normal((n_cells, spec.n_programs))
    sigma = spec.size_sigma
    mu = _means(spec, genes, z, np.exp(rng.normal(-(sigma**2) / 2, sigma, n_cells)))
    r = genes["dispersion"]

    def excess(log_scale: float) -> float:
        return 1.0 - _p_zero(np.exp(log_scale) * mu, r).mean() - spec.nonzero

    return float(np.exp(optimize.brentq(excess, -30.0, 30.0, xtol=1e-8)))


def _counts_chunk(
    spec: SyntheticSpec,
    genes: dict[str, np.ndarray],
    scale: float,
    z: np.ndarray,
    size: np.ndarray,
    chunk: int,
    active: np.ndarray | None = None,
) -> sparse.csr_matrix | np.ndarray:
    """NB counts of one chunk of cells: CSR, or dense ``1 + counts`` for a dense workload."""
    mu = _means(spec, genes, z, size, active)
    mu *= scale
    n_cells, n_genes = mu.shape
    uniform = np.random.default_rng([spec.seed, 3, chunk]).random(mu.shape).ravel()
    p_zero = _p_zero(mu, genes["dispersion"]).ravel()
    mu = mu.ravel()
    if spec.nonzero is None:
        r = np.tile(genes["dispersion"], n_cells)
        counts = _nb_inverse_cdf(uniform, mu, r, p_zero)
        return (counts.reshape(n_cells, n_genes) + 1).astype(np.float32)
    flat = np.flatnonzero(uniform > p_zero)
    rows, cols = np.divmod(flat, n_genes)
    r = genes["dispersion"][cols]
    counts = _nb_inverse_cdf(uniform[flat], mu[flat], r, p_zero[flat])
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_cells))])
    return sparse.csr_matrix(
        (counts.astype(np.float32), cols.astype(np.int32), indptr), shape=(n_cells, n_genes)
    )


def _nb_inverse_cdf(
    uniform: np.ndarray, mu: np.ndarray, r: np.ndarray, p_zero: np.ndarray
) -> np.ndarray:
    """The smallest ``k`` with ``NB_cdf(k; mu, r) >= uniform``, entry by entry.

    Walks the pmf recursion ``p(k) = p(k-1) * (k - 1 + r) / k * mu / (r + mu)`` on the
    entries not yet resolved, so the work is the sum of the counts.
    """
    counts = np.zeros(uniform.shape, dtype=np.int64)
    active = np.flatnonzero(uniform > p_zero)  # the rest are zeros
    cdf, pmf = p_zero[active], p_zero[active]
    u, rr, q = uniform[active], r[active], mu[active] / (r[active] + mu[active])
    k = 0
    while active.size:
        k += 1
        pmf = pmf * (k - 1 + rr) / k * q
        cdf = cdf + pmf
        done = (cdf >= u) | (pmf < 1e-300) | (k >= 1_000_000)
        counts[active[done]] = k
        keep = ~done
        active, cdf, pmf, u, rr, q = active[keep], cdf[keep], pmf[keep], u[keep], rr[keep], q[keep]
    return counts


def _stack_csr(chunks: list[sparse.csr_matrix], n_genes: int) -> sparse.csr_matrix:
    """Row-stack CSR chunks (int64 ``indptr`` when ``nnz`` needs it)."""
    nnz = sum(chunk.nnz for chunk in chunks)
    index_dtype = np.int64 if nnz >= np.iinfo(np.int32).max else np.int32
    data = np.concatenate([chunk.data for chunk in chunks])
    indices = np.concatenate([chunk.indices for chunk in chunks]).astype(np.int32, copy=False)
    offsets = np.cumsum([0] + [chunk.nnz for chunk in chunks[:-1]])
    tails = [c.indptr[1:].astype(np.int64) + off for c, off in zip(chunks, offsets, strict=True)]
    indptr = np.concatenate([[0], *tails]).astype(index_dtype)
    n_cells = indptr.shape[0] - 1
    return sparse.csr_matrix((data, indices, indptr), shape=(n_cells, n_genes))


def _available_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _nonzero_fraction(X: sparse.spmatrix | np.ndarray) -> float:
    """Fraction of entries that are not zero."""
    nonzero = X.count_nonzero() if sparse.issparse(X) else np.count_nonzero(X)
    return float(nonzero / (X.shape[0] * X.shape[1]))
