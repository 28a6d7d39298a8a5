"""The geneverse benchmark, in one command.

    python benchmarks/run.py                       # seed, pbmc68k, dense on every CPU backend
    python benchmarks/run.py --gpu                 # seed and atlas on backend="gpu" (CUDA)
    python benchmarks/run.py --tiny                # the same, on tiny data: checks the script

For each workload (``benchmarks/workloads.py``) it times, each in a fresh
subprocess, end-to-end ``gv.tl.coexpression`` with every usable backend (one warm-up run,
then ``--repeats`` timed runs) and GeneVector 1.0's reference implementations on the same
data: ``compute_mi_rust`` (its Rust backend, the headline reference) and
``compute_mi_vectorized`` (its NumPy path, on a subset of genes, extrapolated by the number
of gene pairs). It reports medians, minima, first-call times, the peak RSS of every
subprocess (``wait4`` ``ru_maxrss``) and its baseline after imports and loading the data,
checks GeneVector's output against geneverse's, and writes the markdown report
(``--output``). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
#: geneverse backends, in the order of the report.
BACKENDS = ("rust", "numba", "numpy", "gpu")
#: GeneVector 1.0 functions the benchmark knows, by short name.
REFERENCE_FUNCTIONS = {
    "rust": "compute_mi_rust",
    "numba": "compute_mi_numba",
    "numpy": "compute_mi_vectorized",
}
#: Pairs whose values differ by more than this count as disagreeing (GeneVector rounds to
#: 5 decimals; geneverse stores float32).
TOLERANCE = 1e-5
#: The scores timed side by side: GeneVector's (the default) and the one the docs
#: recommend for ranking pairs and building networks.
SCORES = {
    "default": {},
    "recommended": {"zeros": "include", "estimator": "miller_madow", "pvals": True},
}
#: The workloads whose rows are timed with both scores, and the options of each workload.
SCORE_WORKLOADS = ("seed", "pbmc68k", "scores4k")
WORKLOAD_OPTIONS = {"scores4k": {"top_k": 50}, "atlas": {"top_k": 50}}
#: Matrices larger than this many genes are neither saved nor compared (atlas: 1.6 GB each).
MAX_COMPARED_GENES = 5_000
#: Packages whose versions the report lists.
VERSIONED = ("numpy", "scipy", "anndata", "scanpy", "geneverse", "genevector", "torch", "numba")
N_BINS = 10


# --------------------------------------------------------------------------------------
# What to measure
# --------------------------------------------------------------------------------------


@dataclass
class Measurement:
    """One subprocess: one implementation timed on one workload.

    ``impl`` is ``"geneverse"`` (``method`` = backend) or ``"genevector"`` (``method`` =
    a key of :data:`REFERENCE_FUNCTIONS`). ``warmup`` is ``"always"`` (one untimed run
    first) or ``"if_cheap"`` (the first run is a warm-up only when it took under a tenth of
    ``budget_s``; timed runs stop once they add up to ``budget_s``). ``options`` are
    further arguments of ``gv.tl.coexpression`` (the score, ``top_k``); ``python`` the
    interpreter of the subprocess (another build of geneverse), ``None`` for this one.
    """

    workload: str
    impl: str
    method: str
    label: str
    data_path: str
    repeats: int
    warmup: str = "always"
    budget_s: float = float("inf")
    device: str | None = None
    n_jobs: int = 1
    subset_genes: int | None = None
    save_path: str | None = None
    result_path: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    python: str | None = None


@dataclass
class Result:
    """What a measurement gave (filled by the child, ``peak_rss_mib`` by the parent)."""

    measurement: Measurement
    status: str = "ok"  # ok | failed | skipped | timeout
    reason: str = ""
    times: list[float] = field(default_factory=list)
    first_s: float | None = None
    warmup_discarded: bool = False
    load_s: float | None = None
    baseline_rss_mib: float | None = None
    peak_rss_mib: float | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float | None:
        return statistics.median(self.times) if self.times else None

    @property
    def minimum(self) -> float | None:
        return min(self.times) if self.times else None


# --------------------------------------------------------------------------------------
# The child: imports, loads, times, saves
# --------------------------------------------------------------------------------------


def child_main(request_path: str) -> None:
    """Run one :class:`Measurement` (this is a fresh subprocess) and write its JSON result."""
    request = Measurement(**json.loads(Path(request_path).read_text()))
    started = time.perf_counter()
    try:
        call, clear, save = _prepare(request)
    except Exception as error:  # report why, the parent shows it in the table
        _write_child_result(request, {"status": "skipped", "reason": _one_line(error)})
        return
    output = {"load_s": time.perf_counter() - started, "baseline_rss_mib": _own_peak_rss_mib()}
    try:
        output.update(_time_calls(call, clear, request))
        output["info"] = save()
        output["info"]["vmhwm_mib"] = _own_peak_rss_mib()  # cross-check of the parent's peak
    except Exception as error:
        output.update(status="failed", reason=_one_line(error))
    _write_child_result(request, output)


def _prepare(request: Measurement) -> tuple[Callable[[], Any], Callable[[], None], Callable]:
    """Import, load the data: the timed call, a reset between calls, and a saver."""
    import anndata

    if request.impl == "geneverse":
        import geneverse as gv

        gv.settings.verbosity = 1
        adata = anndata.read_h5ad(request.data_path)
        if request.method == "gpu":
            _import_torch_device(request.device)
        elif request.method == "numba":
            import numba  # noqa: F401  (its import belongs to the baseline, as torch's does)
        return _geneverse_calls(gv, adata, request)
    import genevector.metrics as gvm

    if request.method == "rust" and not gvm.HAS_RUST:
        raise RuntimeError("genevector was installed without its Rust module (HAS_RUST False)")
    adata = anndata.read_h5ad(request.data_path)
    return _genevector_calls(gvm, adata, request)


def _import_torch_device(device: str | None) -> None:
    """Initialise torch (and the CUDA context) before the baseline RSS is taken."""
    import torch

    if _is_cuda(device):
        torch.zeros(1, device=device or "cuda")


def _geneverse_calls(gv: Any, adata: Any, request: Measurement) -> tuple[Callable, ...]:
    """``gv.tl.coexpression`` on ``adata``, its result cache off; saving keeps ``varp["gv_mi"]``."""
    options = _no_cache(gv)

    def call() -> None:
        gv.tl.coexpression(
            adata,
            backend=request.method,
            device=request.device,
            n_jobs=request.n_jobs,
            **options,
            **request.options,
        )

    def clear() -> None:  # drop the previous results so a run's peak RSS is its own
        for slot in (adata.varp, adata.layers):
            for key in [key for key in slot if key.startswith("gv_")]:
                del slot[key]

    def save() -> dict[str, Any]:
        if request.save_path:
            np.save(request.save_path, _dense(adata.varp["gv_mi"]))
            if "gv_pvals" in adata.varp:
                np.save(
                    request.save_path.replace(".npy", "-pvals.npy"), _dense(adata.varp["gv_pvals"])
                )
        n_bins = adata.var["gv_n_bins"].to_numpy()
        info = {
            "backend_ran": str(adata.uns["gv"]["backend"]),
            "mean_nonzero_bins": float(np.mean(np.maximum(n_bins - 1, 0))),
        }
        if request.method == "gpu" and _is_cuda(request.device):
            import torch

            info["device_name"] = torch.cuda.get_device_name()
            info["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 1024**2
        return info

    return call, clear, save


def _dense(matrix: Any) -> np.ndarray:
    return matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)


def _no_cache(gv: Any) -> dict[str, Any]:
    """Turn geneverse's result cache off: every timed call computes (``cache=False``)."""
    import inspect

    if hasattr(gv.settings, "cache_dir"):
        gv.settings.cache_dir = None
    parameters = inspect.signature(gv.tl.coexpression).parameters
    return {"cache": False} if "cache" in parameters else {}


def _is_cuda(device: str | None) -> bool:
    return device is None or str(device).startswith("cuda")


def _genevector_calls(gvm: Any, adata: Any, request: Measurement) -> tuple[Callable, ...]:
    """A GeneVector MI function on ``adata.X`` (or a subset of its genes)."""
    function = getattr(gvm, REFERENCE_FUNCTIONS[request.method])
    X, names = adata.X, list(adata.var_names)
    genes = np.arange(len(names))
    if request.subset_genes is not None and request.subset_genes < len(names):
        genes = subset_indices(len(names), request.subset_genes)
        X, names = X[:, genes], [names[i] for i in genes]
    latest: list[Any] = []

    def call() -> None:
        latest.append(function(X, names, n_bins=N_BINS, signed=True))

    def clear() -> None:
        latest.clear()

    def save() -> dict[str, Any]:
        if request.save_path:
            np.save(request.save_path, scores_to_matrix(latest[-1], names))
        return {"genes": genes.tolist(), "n_genes": len(names)}

    return call, clear, save


def _time_calls(call: Callable, clear: Callable, request: Measurement) -> dict[str, Any]:
    """The first call's time, then the timed runs as :class:`Measurement` describes."""
    first = _timed(call)
    times: list[float] = []
    discarded = request.warmup == "always" or first < request.budget_s / 10
    if not discarded:
        times.append(first)
    while len(times) < request.repeats and sum(times) < request.budget_s:
        clear()
        times.append(_timed(call))
    return {"first_s": first, "times": times, "warmup_discarded": discarded}


def _timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _own_peak_rss_mib() -> float:
    """This process's peak RSS so far (``VmHWM``: since its ``exec``, unlike ``ru_maxrss``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _write_child_result(request: Measurement, output: dict[str, Any]) -> None:
    Path(request.result_path).write_text(json.dumps(output))


def _one_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip().splitlines()
    return text[0] if len(text) == 1 else f"{text[0]} …"


def subset_indices(n_genes: int, n_subset: int) -> np.ndarray:
    """``n_subset`` genes spread evenly over ``0..n_genes-1``."""
    return np.unique(np.linspace(0, n_genes - 1, n_subset).round().astype(np.int64))


def scores_to_matrix(scores: dict[str, dict[str, float]], names: Sequence[str]) -> np.ndarray:
    """GeneVector's dict-of-dicts of MI as a dense symmetric matrix (missing pairs 0)."""
    index = {name: i for i, name in enumerate(names)}
    matrix = np.zeros((len(names), len(names)))
    for a, row in scores.items():
        i = index[a]
        for b, value in row.items():
            matrix[i, index[b]] = value
    return matrix


# --------------------------------------------------------------------------------------
# The parent: runs the children and measures their peak RSS
# --------------------------------------------------------------------------------------


class Launcher:
    """The small process (``_launcher.py``) that forks every measured subprocess.

    Start it before the parent imports anything large: a forked child inherits its
    parent's RSS as the start of its own ``ru_maxrss``.
    """

    def __init__(self) -> None:
        command = [sys.executable, str(HERE / "_launcher.py")]
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def run(self, argv: list[str], env: dict[str, str], log: Path, timeout: float) -> dict:
        """Run ``argv`` to its end: ``{"status", "maxrss_kib", "timed_out"}``."""
        request = {"argv": argv, "env": env, "log": str(log), "timeout": timeout}
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        return json.loads(self._process.stdout.readline())

    def close(self) -> None:
        self._process.stdin.close()
        self._process.wait()


def run_child(
    measurement: Measurement, launcher: Launcher, env: dict[str, str], log: Path, timeout: float
) -> Result:
    """Run one measurement in a fresh subprocess; its peak RSS comes from ``wait4``."""
    request = measurement.result_path + ".request.json"
    Path(request).write_text(json.dumps(asdict(measurement)))
    Path(measurement.result_path).unlink(missing_ok=True)
    argv = [measurement.python or sys.executable, str(Path(__file__).resolve()), "--child", request]
    reply = launcher.run(argv, env, log, timeout)
    if reply["timed_out"]:
        return Result(measurement, status="timeout", reason=f"killed after {timeout:.0f} s")
    if not Path(measurement.result_path).exists():
        reason = f"the subprocess exited with status {reply['status']}: {_last_line(log)}"
        return Result(measurement, status="failed", reason=reason)
    result = Result(measurement, **json.loads(Path(measurement.result_path).read_text()))
    result.peak_rss_mib = reply["maxrss_kib"] / 1024
    return result


def _last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


def child_env(args: argparse.Namespace, run_dir: Path) -> dict[str, str]:
    """Environment of every child: quiet progress bars, a fresh numba cache for this run."""
    env = dict(os.environ)
    env["TQDM_DISABLE"] = "1"
    env["NUMBA_CACHE_DIR"] = str(run_dir / "numba-cache")  # empty: the first call compiles
    env["RAYON_NUM_THREADS"] = str(args.n_jobs)  # GeneVector's Rust: the same threads
    env["PYTHONWARNINGS"] = "ignore"
    if not _importable("geneverse") or args.from_source:
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(REPO / "src"), env.get("PYTHONPATH")])
        )
    return env


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# --------------------------------------------------------------------------------------
# Planning: which measurements, and why some are skipped
# --------------------------------------------------------------------------------------


def backend_devices(args: argparse.Namespace) -> dict[str, tuple[str | None, str]]:
    """For each requested backend: the device to use and why it cannot run (``""``: it can)."""
    plan: dict[str, tuple[str | None, str]] = {}
    for backend in args.backends:
        device = args.device if backend == "gpu" else None
        if backend == "gpu" and device is None:
            device = "cuda" if _cuda_available() or args.gpu else "cpu"
        plan[backend] = (device, _unavailable(backend, device))
    return plan


def _cuda_available() -> bool:
    if not _importable("torch"):
        return False
    import torch

    return bool(torch.cuda.is_available())


def _unavailable(backend: str, device: str | None) -> str:
    """Why geneverse's ``backend`` cannot run here, asked of geneverse itself."""
    try:
        from geneverse.kernels import unavailable_reason

        return unavailable_reason(backend, device) or ""
    except Exception as error:  # geneverse itself does not import: every backend fails
        return f"geneverse cannot be imported ({_one_line(error)})"


def reference_reason(method: str) -> str:
    """Why GeneVector's ``method`` cannot run here (``""``: it can, as far as we can tell)."""
    if not _importable("genevector"):
        return "GeneVector is not installed (`pip install -r benchmarks/requirements.txt`)"
    if method == "numba" and not _importable("numba"):
        return "numba is not installed"
    return ""


def plan_workload(
    name: str, data_path: Path, n_genes: int, args: argparse.Namespace, run_dir: Path
) -> list[Measurement | Result]:
    """The measurements of one workload (a :class:`Result` for each one skipped up front)."""
    backends = args.atlas_backends if name == "atlas" else args.backends
    devices = backend_devices(_with(args, backends=backends))
    compare = n_genes <= MAX_COMPARED_GENES
    scores = list(SCORES) if name in SCORE_WORKLOADS and args.scores else ["default"]
    builds: list[tuple[str | None, str | None, list[str]]] = [(None, None, backends)]
    if args.baseline_python and name != "atlas":
        builds.append((args.baseline_python, args.baseline_label, args.baseline_backends))
    planned: list[Measurement | Result] = []
    for python, build, build_backends in builds:
        for score in scores:
            for backend in build_backends:
                device, reason = devices.get(
                    backend, backend_devices(_with(args, backends=[backend]))[backend]
                )
                label = backend if device in (None, "cuda") else f"{backend} (device={device})"
                label += "" if score == "default" else f", {score} score"
                label += "" if build is None else f" — {build}"
                stem = f"{name}-gv-{backend}-{score}" + ("" if build is None else "-baseline")
                measurement = Measurement(
                    workload=name,
                    impl="geneverse",
                    method=backend,
                    label=label,
                    data_path=str(data_path),
                    repeats=args.repeats,
                    device=device,
                    n_jobs=args.n_jobs,
                    save_path=str(run_dir / f"{stem}.npy") if compare and build is None else None,
                    result_path=str(run_dir / f"{stem}.json"),
                    options={**WORKLOAD_OPTIONS.get(name, {}), **SCORES[score]},
                    python=python,
                )
                planned.append(Result(measurement, "skipped", reason) if reason else measurement)
    if name in ("atlas", "scores4k"):
        return planned  # GeneVector is O(G² N) with a dense copy: hours and 8 GB at this size
    for method in args.references:
        measurement = _reference_measurement(name, method, data_path, n_genes, args, run_dir)
        reason = reference_reason(method)
        planned.append(Result(measurement, "skipped", reason) if reason else measurement)
    return planned


def _reference_measurement(
    name: str, method: str, data_path: Path, n_genes: int, args: argparse.Namespace, run_dir: Path
) -> Measurement:
    subset = args.subset_genes if method == "numpy" and args.subset_genes < n_genes else None
    label = f"GeneVector {REFERENCE_FUNCTIONS[method]}"
    if subset is not None:
        label += f" ({subset} genes, extrapolated)"
    return Measurement(
        workload=name,
        impl="genevector",
        method=method,
        label=label,
        data_path=str(data_path),
        repeats=args.repeats,
        warmup="if_cheap",
        budget_s=args.reference_budget,
        n_jobs=args.n_jobs,
        subset_genes=subset,
        save_path=str(run_dir / f"{name}-genevector-{method}.npy"),
        result_path=str(run_dir / f"{name}-genevector-{method}.json"),
    )


def _with(args: argparse.Namespace, **changes: Any) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **changes})


# --------------------------------------------------------------------------------------
# Agreement: GeneVector's output against geneverse's
# --------------------------------------------------------------------------------------


def agreement(results: list[Result], X: Any) -> list[str]:
    """Markdown bullet lines comparing every saved matrix with geneverse's (each score with
    its own kind), and GeneVector's with geneverse's default score."""
    saved = [r for r in results if r.status == "ok" and r.measurement.save_path]
    lines: list[str] = []
    base = None
    for options in SCORES.values():
        ours = [r for r in saved if r.measurement.impl == "geneverse" and _score_of(r) == options]
        if not ours:
            continue
        reference = next((r for r in ours if r.measurement.method == "numpy"), ours[0])
        reference_mi = np.load(reference.measurement.save_path).astype(np.float64)
        base = reference_mi if not options else base
        for result in ours:
            if result is not reference:
                lines.append(_compare_ours(result, reference, reference_mi))
    if base is None:
        return lines or ["- No geneverse result to compare with."]
    corr = None
    for result in (r for r in saved if r.measurement.impl == "genevector"):
        corr = _genevector_correlation(X) if corr is None else corr
        lines.append(_compare_reference(result, base, corr))
    return lines


def _score_of(result: Result) -> dict[str, Any]:
    return {k: v for k, v in result.measurement.options.items() if k in SCORES["recommended"]}


def _compare_ours(result: Result, reference: Result, reference_mi: np.ndarray) -> str:
    """One bullet: a geneverse backend against another, MI (and p-values) element by element."""
    other = np.load(result.measurement.save_path).astype(np.float64)
    text = (
        f"- geneverse `{result.measurement.label}` vs `{reference.measurement.label}`: "
        f"max abs difference {np.abs(other - reference_mi).max():.3g}"
    )
    pvals = Path(result.measurement.save_path.replace(".npy", "-pvals.npy"))
    if pvals.exists():
        p = np.load(pvals).astype(np.float64)
        p_ref = np.load(reference.measurement.save_path.replace(".npy", "-pvals.npy"))
        scale = np.maximum(np.abs(p_ref), np.finfo(np.float32).tiny)  # p-values are float32
        text += f"; p-values: max relative difference {(np.abs(p - p_ref) / scale).max():.3g}"
    return text + "."


def _genevector_correlation(X: Any) -> np.ndarray:
    """The correlation matrix exactly as GeneVector computes its signs (float32)."""
    dense = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nan_to_num(np.corrcoef(dense.T), nan=0.0).astype(np.float32)


def _compare_reference(result: Result, base: np.ndarray, corr: np.ndarray) -> str:
    """One bullet: how far GeneVector's matrix is from ours, and why pairs differ."""
    theirs = np.load(result.measurement.save_path)
    genes = np.asarray(result.info.get("genes", np.arange(base.shape[0])))
    ours = base[np.ix_(genes, genes)]
    corr = corr[np.ix_(genes, genes)]
    upper = np.triu_indices(len(genes), 1)
    o, t, c = ours[upper], theirs[upper], corr[upper]
    bad = np.abs(o - t) > TOLERANCE
    counts = classify_differences(o[bad], t[bad], c[bad])
    scope = f"{len(genes)} genes, {o.size:,} pairs"
    text = (
        f"- `{REFERENCE_FUNCTIONS[result.measurement.method]}` ({scope}) vs geneverse: "
        f"max abs difference {np.abs(o - t).max():.3g}; {int(bad.sum()):,} pairs differ by "
        f"more than {TOLERANCE:g}"
    )
    if bad.any():
        text += ": " + ", ".join(f"{n:,} {why}" for why, n in counts.items() if n)
    return text + "."


def classify_differences(ours: np.ndarray, theirs: np.ndarray, corr: np.ndarray) -> dict:
    """Why the differing pairs differ (the arrays hold the differing pairs only).

    ``corr`` is the correlation as GeneVector computes it (``np.corrcoef``, float32).

    * geneverse 0, ``corr == 0``: a zero or undefined correlation, which GeneVector's Rust
      backend counts as positive (``sign >= 0``) where the definition
      (docs/definition.md) gives 0;
    * geneverse 0, ``0 < |corr| < 1e-6``: a correlation that is exactly zero (geneverse's
      sign is exact on such data: 0), where ``np.corrcoef``'s rounding leaves a tiny value
      whose sign GeneVector keeps;
    * same magnitude, opposite sign, ``|corr| < 1e-6``: the sign of a correlation that is
      zero up to rounding;
    * same magnitude otherwise: a sign disagreement;
    * anything else: different MI magnitudes (e.g. GeneVector numba's scrambled pairs).
    """
    same_magnitude = np.abs(np.abs(ours) - np.abs(theirs)) <= TOLERANCE
    tiny = np.abs(corr) < 1e-6
    zero_here = (ours == 0) & tiny
    exact = zero_here & (corr == 0)
    rounding = zero_here & (corr != 0)
    noise = ~zero_here & same_magnitude & tiny
    sign = ~zero_here & same_magnitude & ~tiny
    return {
        "with a zero correlation, which GeneVector counts as positive": int(exact.sum()),
        "with a correlation that is exactly zero, where np.corrcoef leaves rounding noise "
        "(|r| < 1e-6) whose sign GeneVector keeps and geneverse gives 0": int(rounding.sum()),
        "with a near-zero correlation (|r| < 1e-6) signed the other way": int(noise.sum()),
        "with a sign disagreement": int(sign.sum()),
        "with a different MI magnitude": int((~zero_here & ~same_magnitude).sum()),
    }


# --------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------


def machine_info(args: argparse.Namespace) -> dict[str, str]:
    """CPU, cores, memory, GPU, date, load and versions, for the report header."""
    info = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpuinfo_model(),
        "vector instructions (the Rust core picks at run time)": _vector_flags(),
        "cores": f"{os.cpu_count()} logical, {len(os.sched_getaffinity(0))} available",
        "memory": _meminfo_total(),
        "load average at start (1, 5, 15 min)": ", ".join(f"{v:.2f}" for v in os.getloadavg()),
        "threads (`n_jobs`, `RAYON_NUM_THREADS`)": str(args.n_jobs),
    }
    gpu = _nvidia_smi()
    if gpu:
        info["gpu"] = gpu
    info["python"] = platform.python_version()
    for package in VERSIONED:
        info[package] = _version(package)
    info["geneverse commit"] = _git_commit()
    return info


def _cpuinfo_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _vector_flags() -> str:
    """Which of the instruction sets the Rust core's dense kernels are built for this CPU has."""
    wanted = ("popcnt", "avx2", "avx512f", "avx512_vpopcntdq")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return ", ".join(flag for flag in wanted if flag in flags) or "none of them"
    except OSError:
        pass
    return "unknown"


def _meminfo_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _nvidia_smi() -> str:
    if not shutil.which("nvidia-smi"):
        return ""
    query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
    try:
        return subprocess.run(query, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        if package == "geneverse":
            return f"{_cargo_version()} (source tree, not installed)"
        return "not installed"


def _cargo_version() -> str:
    """geneverse's version as its Cargo.toml gives it (maturin takes it from there)."""
    import tomllib

    try:
        return tomllib.loads((REPO / "Cargo.toml").read_text())["package"]["version"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def _git_commit() -> str:
    """The commit of the working tree (read-only git), ``+dirty`` when the package's sources
    (``src/``, ``src_rust/``, the build files) have changes or untracked files."""
    sources = ["src", "src_rust", "Cargo.toml", "Cargo.lock", "pyproject.toml"]
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", *sources],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return commit + ("+dirty" if dirty else "")


def render(
    title: str, command: str, machine: dict[str, str], sections: list[str], notes: list[str]
) -> str:
    """The whole markdown report."""
    lines = [
        f"# {title}",
        "",
        "Command (from the repository root):",
        "",
        "```bash",
        command,
        "```",
        "",
    ]
    lines += ["## Machine and versions", "", "| | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in machine.items()]
    lines += ["", *sections, "## Notes", "", *notes, ""]
    return "\n".join(lines)


def render_scores(results: list[Result]) -> list[str]:
    """The section that sets the recommended score beside the default: time and memory."""
    rows = []
    for default in results:
        m = default.measurement
        if m.impl != "geneverse" or _score_of(default) or default.median is None:
            continue
        recommended = next(
            (
                r
                for r in results
                if r.measurement.workload == m.workload
                and r.measurement.method == m.method
                and r.measurement.python == m.python
                and _score_of(r) == SCORES["recommended"]
                and r.median is not None
            ),
            None,
        )
        if recommended is None:
            continue
        added = [_added_mib(default), _added_mib(recommended)]
        rows.append(
            "| "
            + " | ".join(
                [
                    f"`{m.workload}`",
                    f"`{m.label}`",
                    _seconds(default.median),
                    _seconds(recommended.median),
                    f"{recommended.median / default.median:.2f}×",
                    _mib(added[0]),
                    _mib(added[1]),
                    f"{added[1] / added[0]:.2f}×" if added[0] else "",
                ]
            )
            + " |"
        )
    if not rows:
        return []
    header = [
        "workload", "backend", "default median s", "recommended median s", "time ratio",
        "default added MiB", "recommended added MiB", "memory ratio",
    ]  # fmt: skip
    return [
        "## Scores: the recommended score beside the default",
        "",
        "The default is GeneVector's score (plug-in MI, zeros excluded); the recommended "
        'one, for ranking pairs and building networks, is `zeros="include", '
        'estimator="miller_madow", pvals=True` (G-test p-values and BH q-values stored '
        "too). Added memory: peak RSS minus the RSS before the first call, in the same "
        "subprocess. Same run, same machine, medians.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *rows,
        "",
    ]


def _added_mib(result: Result) -> float | None:
    if result.peak_rss_mib is None or result.baseline_rss_mib is None:
        return None
    return result.peak_rss_mib - result.baseline_rss_mib


def render_workload(name: str, description: str, results: list[Result], checks: list[str]) -> str:
    """The section of one workload: its table and its agreement check."""
    reference = next(
        (
            r
            for r in results
            if r.measurement.impl == "genevector"
            and r.measurement.method == "rust"
            and r.median is not None
        ),
        None,
    )
    columns = [
        "implementation", "runs", "median s", "min s", "first call s", "peak RSS MiB",
        "baseline RSS MiB", "speed-up vs GeneVector Rust",
    ]  # fmt: skip
    gpu = any("gpu_peak_mib" in r.info for r in results)
    if gpu:
        columns.append("peak GPU MiB")
    lines = [f"## `{name}`", "", description, ""]
    lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += [_row(result, reference, gpu) for result in results]
    lines += ["", "Agreement (upper-triangle pairs, signed MI in bits):", "", *checks, ""]
    return "\n".join(lines)


def _row(result: Result, reference: Result | None, gpu: bool) -> str:
    m = result.measurement
    name = f"geneverse `{m.label}`" if m.impl == "geneverse" else m.label
    if result.status != "ok":
        return f"| {name} | {result.status}: {result.reason} |" + " |" * (6 + gpu)
    median, minimum = result.median, result.minimum
    scale = extrapolation_factor(result)
    approx = "≈ " if scale != 1 else ""
    if reference is not None and median:
        speedup = (
            "1 (reference)"
            if result is reference
            else f"{approx}{reference.median / (median * scale):,.1f}×"
        )
    else:
        speedup = "n/a"
    runs = f"{len(result.times)}" + (" + warm-up" if result.warmup_discarded else "")
    cells = [
        name,
        runs,
        f"{approx}{_seconds(median * scale)}",
        f"{approx}{_seconds(minimum * scale)}",
        _seconds(result.first_s),
        _mib(result.peak_rss_mib),
        _mib(result.baseline_rss_mib),
        speedup,
    ]
    if gpu:
        cells.append(_mib(result.info.get("gpu_peak_mib")))
    return "| " + " | ".join(cells) + " |"


def extrapolation_factor(result: Result) -> float:
    """Full pairs / measured pairs for a subset measurement (1 otherwise)."""
    n_subset = result.info.get("n_genes")
    n_full = result.info.get("n_genes_full")
    if result.measurement.subset_genes is None or not n_subset or not n_full:
        return 1.0
    return (n_full * (n_full - 1)) / (n_subset * (n_subset - 1))


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"


def _mib(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


def notes(args: argparse.Namespace, results: list[Result]) -> list[str]:
    """The fixed notes of the report, plus the numba cold-compile time of this run."""
    lines = [
        "- Times are wall-clock seconds of one end-to-end call, in a fresh subprocess per row: "
        "`gv.tl.coexpression(adata, backend=..., n_jobs=..., cache=False)` on the AnnData "
        "(binning, counting, signs, storing; geneverse's result cache off), and "
        "GeneVector's function on `adata.X` and the gene "
        f"names with `n_bins={N_BINS}, signed=True` (discretizing, correlation, MI, its "
        "dict-of-dicts).",
        f"- geneverse rows: one warm-up call, then {args.repeats} timed calls; *first call* is "
        "the warm-up (numba loads or compiles its cache, torch initialises).",
        "- GeneVector rows: the first call is a warm-up only when it took under a tenth of "
        f"{args.reference_budget:g} s; timed calls stop at {args.repeats} or once they add up "
        f"to {args.reference_budget:g} s (`--reference-budget`), so slow rows have fewer runs.",
        f"- `compute_mi_vectorized` runs on {args.subset_genes} genes spread evenly over the "
        "workload (all cells); its times are extrapolated by the pair count, "
        "× G(G−1) / (g(g−1)), since its cost is a Python loop over pairs, each O(cells). "
        "Rows marked ≈ are extrapolated.",
        "- Peak RSS: `ru_maxrss` of the subprocess (`os.wait4`), covering imports, loading "
        "the data and every call; baseline RSS: the subprocess's peak after its imports and "
        "loading the data, before the first call. Peak − baseline is what the computation "
        "added.",
        "- Speed-up: GeneVector Rust's median over the row's median, measured in the same run "
        "on the same machine. The load averages above show how busy the machine was: on a "
        "shared machine the timings are noisy, so compare rows of one run, and read the "
        "minimum next to the median.",
        "- Known differences (docs/definition.md): GeneVector's Rust backend multiplies by +1 when "
        "the correlation is 0 (`s >= 0`), where the definition gives 0; its numba backend "
        "maps flat pair indices to the wrong gene pairs, so its output is scrambled; "
        "GeneVector rounds to 5 decimals and geneverse stores float32, hence the 1e-5 "
        "tolerance.",
    ]
    cold = [
        r
        for r in results
        if r.measurement.impl == "geneverse"
        and r.measurement.method == "numba"
        and r.first_s is not None
    ]
    if cold:
        first = cold[0]
        lines.append(
            f"- numba: the first call of this run ({first.measurement.workload}) compiled into "
            f"an empty cache (`NUMBA_CACHE_DIR`) and took {first.first_s:.2f} s; later "
            "subprocesses load the compiled kernels from that cache (their *first call*)."
        )
    return lines


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workloads", help="comma-separated (default: seed,pbmc68k,dense; with --gpu: seed,atlas)"
    )
    parser.add_argument(
        "--backends",
        help="geneverse backends, comma-separated "
        "(default: rust,numba,numpy,gpu; gpu runs on device='cpu' without CUDA)",
    )
    parser.add_argument(
        "--atlas-backends", default="gpu", help="backends for the atlas workload (default: gpu)"
    )
    parser.add_argument(
        "--references",
        default="rust,numpy",
        help="GeneVector functions: rust, numpy, numba, or none (default: rust,numpy)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs (default 3)")
    parser.add_argument(
        "--reference-budget",
        type=float,
        default=60.0,
        help="seconds of timed GeneVector runs per row (default 60)",
    )
    parser.add_argument(
        "--subset-genes",
        type=int,
        default=200,
        help="genes for GeneVector's NumPy path (default 200)",
    )
    parser.add_argument(
        "--n-jobs",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="threads for every implementation (default: all cores)",
    )
    parser.add_argument(
        "--device", help="torch device for backend='gpu' (default: cuda if available, else cpu)"
    )
    parser.add_argument(
        "--gpu", action="store_true", help="the GPU run: seed and atlas, backend='gpu' on CUDA"
    )
    parser.add_argument("--tiny", action="store_true", help="tiny workloads (checks the script)")
    parser.add_argument(
        "--output",
        help="report (default: benchmarks/RESULTS.md, "
        "RESULTS_GPU.md with --gpu, _work/RESULTS_tiny.md with --tiny)",
    )
    parser.add_argument(
        "--work-dir",
        default=str(HERE / "_work"),
        help="cached workloads, logs and raw results (default: benchmarks/_work)",
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per subprocess")
    parser.add_argument(
        "--from-source",
        action="store_true",
        help="import geneverse from src/ even when it is installed",
    )
    parser.add_argument(
        "--no-scores",
        dest="scores",
        action="store_false",
        help=f"time only the default score (default: also the recommended one on "
        f"{', '.join(SCORE_WORKLOADS)})",
    )
    parser.add_argument(
        "--baseline-python",
        help="an interpreter with another build of geneverse (e.g. the last release) whose "
        "rows are timed in the same run",
    )
    parser.add_argument(
        "--baseline-label", default="baseline", help="the name of that build in the report"
    )
    parser.add_argument(
        "--baseline-backends", default="rust", help="backends of that build (default: rust)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    return _defaults(args)


def _defaults(args: argparse.Namespace) -> argparse.Namespace:
    split = lambda text: [item for item in text.split(",") if item and item != "none"]  # noqa: E731
    args.workloads = split(args.workloads or ("seed,atlas" if args.gpu else "seed,pbmc68k,dense"))
    args.backends = split(args.backends or "rust,numba,numpy,gpu")
    args.atlas_backends = split(args.atlas_backends)
    args.baseline_backends = split(args.baseline_backends)
    args.references = split(args.references)
    if args.gpu and args.device is None:
        args.device = "cuda"
    if args.output is None:
        name = "RESULTS_GPU.md" if args.gpu else "RESULTS.md"
        args.output = (
            str(Path(args.work_dir) / "RESULTS_tiny.md") if args.tiny else str(HERE / name)
        )
    for name in args.workloads:
        if name not in ("seed", "pbmc68k", "dense", "atlas", "scores4k"):
            raise SystemExit(f"unknown workload {name!r}")
    for backend in {*args.backends, *args.atlas_backends} - set(BACKENDS):
        raise SystemExit(f"unknown backend {backend!r}; use some of {BACKENDS}")
    for method in set(args.references) - set(REFERENCE_FUNCTIONS):
        raise SystemExit(f"unknown reference {method!r}; use some of {list(REFERENCE_FUNCTIONS)}")
    return args


def kept_sections(report: Path) -> str:
    """The sections that other scripts (``scale.py``, ``ranking.py``) keep in ``report``,
    between their ``<!-- name:start -->`` and ``<!-- name:end -->`` marks, to be kept."""
    text = report.read_text() if report.exists() else ""
    marks = re.finditer(r"<!-- (\w+):start -->.*?<!-- \1:end -->", text, flags=re.DOTALL)
    return "".join(f"\n{mark.group(0)}\n" for mark in marks)


def command_line(argv: Sequence[str]) -> str:
    script = Path(sys.argv[0]).resolve()
    try:
        shown = script.relative_to(REPO)
    except ValueError:
        shown = script
    return shlex.join(["python", str(shown), *argv])


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.child:
        child_main(args.child)
        return
    launcher = Launcher()  # first, while this process is small
    try:
        run_benchmark(args, argv, launcher)
    finally:
        launcher.close()


def run_benchmark(args: argparse.Namespace, argv: Sequence[str], launcher: Launcher) -> None:
    """Every workload in turn; the report is rewritten after each one."""
    if not _importable("geneverse") or args.from_source:
        sys.path.insert(0, str(REPO / "src"))
    import workloads

    work_dir = Path(args.work_dir)
    run_dir = work_dir / datetime.now().strftime("run-%Y%m%d-%H%M%S")
    (run_dir / "logs").mkdir(parents=True)
    env = child_env(args, run_dir)
    machine = machine_info(args)
    title = (
        "geneverse benchmark" + (" (GPU)" if args.gpu else "") + (" — tiny" if args.tiny else "")
    )
    sections: list[str] = []
    everything: list[Result] = []
    for name in args.workloads:
        started = time.perf_counter()
        _say(f"[{name}] preparing the workload")
        adata = workloads.load_workload(name, work_dir / "data", tiny=args.tiny)
        data_path = workloads.workload_path(name, work_dir / "data", tiny=args.tiny)
        _say(f"[{name}] ready in {time.perf_counter() - started:.1f} s: {adata.shape}")
        results = _measure(name, data_path, adata.n_vars, args, run_dir, env, launcher)
        checks = (
            agreement(results, adata.X)
            if adata.n_vars <= MAX_COMPARED_GENES
            else ["- Not compared at this size (geneverse only)."]
        )
        sections.append(render_workload(name, describe(adata, results), results, checks))
        everything += results
        del adata
        machine["load average at end (1, 5, 15 min)"] = ", ".join(
            f"{v:.2f}" for v in os.getloadavg()
        )
        _update_gpu_name(machine, everything)
        summary = render_scores(everything) if args.scores else []
        report = render(
            title, command_line(argv), machine, summary + sections, notes(args, everything)
        )
        Path(args.output).write_text(report + kept_sections(Path(args.output)))
        (run_dir / "results.json").write_text(json.dumps([asdict(r) for r in everything], indent=1))
    _say(f"wrote {args.output} (raw results and logs: {run_dir})")


def _measure(
    name: str,
    data_path: Path,
    n_genes: int,
    args: argparse.Namespace,
    run_dir: Path,
    env: dict[str, str],
    launcher: Launcher,
) -> list[Result]:
    """Run (or skip, with the reason) every measurement of one workload."""
    results = []
    for item in plan_workload(name, data_path, n_genes, args, run_dir):
        if isinstance(item, Result):
            _say(f"[{name}] {item.measurement.label}: skipped ({item.reason})")
            results.append(item)
            continue
        log = run_dir / "logs" / f"{name}-{item.impl}-{item.method}.log"
        _say(f"[{name}] {item.label} …")
        result = run_child(item, launcher, env, log, args.timeout)
        result.info.setdefault("n_genes_full", n_genes)
        _say(
            f"[{name}] {item.label}: {result.status} {result.reason} "
            f"median {result.median} s, first {result.first_s} s, peak {result.peak_rss_mib} MiB"
        )
        results.append(result)
    return results


def describe(adata: Any, results: list[Result]) -> str:
    """One line on the workload: shape, nonzero fraction, bins per gene."""
    from scipy import sparse

    X = adata.X
    nonzero = (X.count_nonzero() if sparse.issparse(X) else np.count_nonzero(X)) / np.prod(X.shape)
    text = (
        f"{adata.n_vars:,} genes × {adata.n_obs:,} cells, {100 * nonzero:.1f} % nonzero "
        f"({'sparse CSR' if sparse.issparse(X) else 'dense'} float32)"
    )
    bins = next(
        (r.info["mean_nonzero_bins"] for r in results if "mean_nonzero_bins" in r.info), None
    )
    if bins is not None:
        text += f", {bins:.1f} nonzero bins per gene on average (at most {N_BINS})"
    return text + "."


def _update_gpu_name(machine: dict[str, str], results: list[Result]) -> None:
    for result in results:
        name = result.info.get("device_name")
        if name and "gpu" not in machine:
            machine["gpu"] = name


def _say(message: str) -> None:
    print(message, flush=True)


if __name__ == "__main__":
    main()
