"""Data read chunk by chunk, and atlas scale: in memory, backed, Dask, side by side.

Run from the repository root::

    python benchmarks/scale.py                      # both sections → benchmarks/RESULTS.md
    python benchmarks/scale.py --sections chunked   # or atlas

* ``chunked``: the ``chunked10k`` workload (10,000 genes × 20,000 cells, 6 % nonzero) with
  ``top_k=50``, in memory, as a backed ``.h5ad`` file, and as a Dask array read lazily from
  that file (``anndata.experimental.read_elem_lazy``) on the threaded scheduler and on a
  2-worker ``dask.distributed`` ``LocalCluster``; every result compared with in memory.
* ``atlas``: the ``atlas`` workload (20,000 genes × 100,000 cells, 5 % nonzero) with
  ``top_k=50``: the default score in memory and backed, and the recommended score.

Each row is one call in a fresh subprocess (``python benchmarks/scale.py --child ...``)
whose peak RSS is read with ``resource.getrusage``; the section between the markers
``<!-- scale:start -->`` and ``<!-- scale:end -->`` of the output file is replaced.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work"
START, END = "<!-- scale:start -->", "<!-- scale:end -->"
RECOMMENDED = {"zeros": "include", "estimator": "miller_madow", "pvals": True}
#: Cells per chunk of the Dask arrays.
DASK_CHUNK_CELLS = 2_000


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------------------
# The child: one call
# --------------------------------------------------------------------------------------


def child(workload: str, mode: str, backend: str, options: dict, save: str | None) -> dict:
    """One ``gv.tl.coexpression`` call on ``workload`` read as ``mode``: time and memory."""
    import anndata as ad
    import numpy as np

    import geneverse as gv
    from workloads import load_workload, workload_path

    gv.settings.cache_dir = None
    gv.settings.verbosity = 1
    load_workload(workload, WORK / "data")  # makes the file once; dropped before measuring
    path = workload_path(workload, WORK / "data")
    client = None
    if mode == "memory":
        adata = ad.read_h5ad(path)
    elif mode == "backed":
        adata = ad.read_h5ad(path, backed="r")
    else:
        adata, client = _lazy(path, cluster=mode == "dask-cluster")
    baseline = _peak_rss_mib()
    started = time.perf_counter()
    gv.tl.coexpression(adata, backend=backend, **options)
    seconds = time.perf_counter() - started
    peak = _peak_rss_mib()
    mi = adata.varp["gv_mi"]
    if save:
        np.savez(save, data=mi.data, indices=mi.indices, indptr=mi.indptr)
    if client is not None:
        client.close()
    return {
        "seconds": seconds,
        "peak_rss_mib": peak,
        "baseline_rss_mib": baseline,
        "nnz_x": int(adata.layers["gv_bins"].nnz),
        "stored_pairs": int(mi.nnz // 2),
        "backend": str(adata.uns["gv"]["backend"]),
    }


def _lazy(path: Path, *, cluster: bool):
    """The workload with X as a Dask array read from the file chunk by chunk (and a client
    of a 2-worker cluster on this machine, with ``cluster``)."""
    import anndata as ad
    import h5py
    from anndata.experimental import read_elem_lazy

    client = None
    if cluster:
        from distributed import Client, LocalCluster

        local = LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        )
        client = Client(local)
    file = h5py.File(path, "r")
    backed = ad.read_h5ad(path, backed="r")
    X = read_elem_lazy(file["X"], chunks=(DASK_CHUNK_CELLS, backed.n_vars))
    adata = ad.AnnData(X=X, obs=backed.obs.copy(), var=backed.var.copy())
    backed.file.close()
    return adata, client


# --------------------------------------------------------------------------------------
# The parent: rows, comparison, report
# --------------------------------------------------------------------------------------


def _run_child(workload, mode, backend, options, save=None, timeout: float = 3600) -> dict:
    env = {**os.environ, "PYTHONPATH": str(HERE), "TQDM_DISABLE": "1"}
    spec = json.dumps([workload, mode, backend, options, save])
    result = subprocess.run(
        [sys.executable, __file__, "--child", spec],
        capture_output=True, text=True, env=env, timeout=timeout, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        return {"failed": result.stderr.strip().splitlines()[-1] if result.stderr else "?"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def _same(a: Path, b: Path) -> bool:
    import numpy as np

    x, y = np.load(a), np.load(b)
    return all(np.array_equal(x[k], y[k]) for k in ("data", "indices", "indptr"))


MODES = {
    "memory": "in memory",
    "backed": "backed `.h5ad`",
    "dask-threads": "Dask array (threaded scheduler)",
    "dask-cluster": "Dask array on a 2-worker `LocalCluster`",
}


def chunked_section(backend: str, top_k: int, repeats: int = 3) -> list[str]:
    """The chunked rows: ``repeats`` rounds of one call per mode, interleaved (so that a
    busy moment of a shared machine slows every mode alike), medians reported."""
    reference = WORK / "scale-chunked-memory.npz"
    results: dict[str, list[dict]] = {mode: [] for mode in MODES}
    for round_ in range(repeats):
        for mode in MODES:
            save = WORK / f"scale-chunked-{mode}.npz"
            print(f"[chunked] {mode}, round {round_ + 1} of {repeats} …", flush=True)
            result = _run_child("chunked10k", mode, backend, {"top_k": top_k}, str(save))
            print(f"[chunked] {mode}: {result}", flush=True)
            if "failed" not in result:
                result["equal"] = mode == "memory" or _same(save, reference)
            results[mode].append(result)
    rows, memory_median = [], None
    for mode, runs in results.items():
        failed = [run["failed"] for run in runs if "failed" in run]
        if failed:
            rows.append(f"| {MODES[mode]} | failed: {failed[0]} | | | | | |")
            continue
        seconds = sorted(run["seconds"] for run in runs)
        median = seconds[len(seconds) // 2]
        memory_median = memory_median or median
        peak = max(run["peak_rss_mib"] for run in runs)
        before = min(run["baseline_rss_mib"] for run in runs)
        equal = "(reference)" if mode == "memory" else str(all(run["equal"] for run in runs))
        rows.append(
            f"| {MODES[mode]} | {median:.1f} | {seconds[0]:.1f}–{seconds[-1]:.1f} | "
            f"{median / memory_median:.2f}× | {peak:,.0f} | {before:,.0f} | {equal} |"
        )
    return [
        "### Chunked data: 10,000 genes × 20,000 cells, `top_k=50`",
        "",
        f"`chunked10k` (6 % nonzero), backend `{backend}`. The Dask arrays are read lazily "
        f"from the same `.h5ad` file in chunks of {DASK_CHUNK_CELLS:,} cells "
        "(`anndata.experimental.read_elem_lazy`); the cluster has 2 worker processes of one "
        "thread on this machine. Each mode ran "
        f"{repeats} times, the modes taking turns; *seconds* is the median, *range* the "
        "fastest and slowest call. *equal* compares the stored top-k matrix with the "
        "in-memory one, element by element, in every call.",
        "",
        "| data | seconds | range | vs in memory | peak RSS MiB | RSS before the call MiB "
        "| equal |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def atlas_section(backend: str, top_k: int) -> list[str]:
    rows, first = [], None
    runs = [
        ("memory", {}, "default score, in memory"),
        ("backed", {}, "default score, backed `.h5ad`"),
        ("memory", RECOMMENDED, "recommended score, in memory"),
    ]
    for mode, score, what in runs:
        print(f"[atlas] {what} …", flush=True)
        result = _run_child("atlas", mode, backend, {"top_k": top_k, **score})
        print(f"[atlas] {what}: {result}", flush=True)
        if "failed" in result:
            rows.append(f"| {what} | failed: {result['failed']} | | | | |")
            continue
        first = first or result["seconds"]
        rows.append(
            f"| {what} | {result['seconds']:.1f} | {result['seconds'] / first:.2f}× | "
            f"{result['peak_rss_mib']:,.0f} | {result['baseline_rss_mib']:,.0f} | "
            f"{result['stored_pairs']:,} |"
        )
    return [
        f"### `atlas`: 20,000 genes × 100,000 cells, `top_k={top_k}`",
        "",
        f'Backend `{backend}`; the recommended score is `zeros="include", '
        'estimator="miller_madow", pvals=True`. Peak RSS covers the whole process, the '
        "loaded input included.",
        "",
        "| run | seconds | vs the first | peak RSS MiB | RSS before the call MiB | pairs kept |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def report(sections: list[str], command: str) -> str:
    cpu = platform.processor() or platform.machine()
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    cores = len(os.sched_getaffinity(0))
    head = [
        START,
        "## Chunked data and atlas scale",
        "",
        f"Command: `{command}` ({date}, {cores} cores, {cpu}). Each row is one call in a "
        "fresh subprocess.",
        "",
    ]
    return "\n".join([*head, *sections, END])


def write_section(output: Path, section: str) -> None:
    text = output.read_text() if output.exists() else ""
    if START in text and END in text:
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1]
        text = before + section + after
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    output.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=str(HERE / "RESULTS.md"))
    parser.add_argument("--backend", default="rust")
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--sections", default="chunked,atlas")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*json.loads(args.child))))
        return
    WORK.mkdir(parents=True, exist_ok=True)
    sections = []
    for name in args.sections.split(","):
        build = {"chunked": chunked_section, "atlas": atlas_section}[name]
        sections += build(args.backend, args.top_k)
    command = "python benchmarks/scale.py" + " ".join(
        f" {a}" for a in sys.argv[1:] if not a.startswith("--output")
    )
    write_section(Path(args.output), report(sections, command))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
