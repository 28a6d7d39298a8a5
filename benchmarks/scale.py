"""Atlas-scale figures: the `atlas` workload with ``top_k``, and a backed 200,000-cell file.

Run from the repository root::

    python benchmarks/scale.py --output benchmarks/RESULTS.md

Each measurement runs in a fresh subprocess (``python benchmarks/scale.py --child ...``)
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
BACKED_SPEC = {"n_genes": 1_000, "n_cells": 200_000, "nonzero": 0.10, "seed": 20_005}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_atlas(top_k: int, backend: str) -> dict:
    """The ``atlas`` workload with ``top_k``: time and memory of the call."""
    import geneverse as gv
    from workloads import load_workload

    adata = load_workload("atlas", WORK / "data")
    baseline = _peak_rss_mib()
    gv.settings.cache_dir = None
    started = time.perf_counter()
    gv.tl.coexpression(adata, top_k=top_k, backend=backend)
    seconds = time.perf_counter() - started
    mi = adata.varp["gv_mi"]
    return {
        "seconds": seconds,
        "peak_rss_mib": _peak_rss_mib(),
        "baseline_rss_mib": baseline,
        "nnz_x": int(adata.X.nnz),
        "stored_pairs": int(mi.nnz // 2),
        "backend": adata.uns["gv"]["backend"],
    }


def _backed_path() -> Path:
    return WORK / "data" / "backed-200k.h5ad"


def child_write_backed() -> dict:
    """Write the 200,000-cell synthetic file (once)."""
    from workloads import SyntheticSpec, synthetic

    path = _backed_path()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        synthetic(SyntheticSpec(**BACKED_SPEC)).write_h5ad(path)
    return {"bytes": path.stat().st_size}


def child_backed(backend: str) -> dict:
    """coexpression on the file opened with ``backed="r"``; then the in-memory reference."""
    import anndata as ad
    import numpy as np

    import geneverse as gv
    from geneverse._data import _chunked

    gv.settings.cache_dir = None
    adata = ad.read_h5ad(_backed_path(), backed="r")
    baseline = _peak_rss_mib()
    started = time.perf_counter()
    gv.tl.coexpression(adata, backend=backend)
    seconds = time.perf_counter() - started
    peak = _peak_rss_mib()
    n_vars, nnz = adata.n_vars, adata.layers["gv_bins"].nnz
    output_mib = (4 * n_vars * n_vars + 5 * nnz + 4 * (adata.n_obs + 1)) / 2**20
    chunk_mib = _chunked.SLICE_CELLS / adata.n_obs * nnz * 12 / 2**20
    backed_mi = adata.varp["gv_mi"]
    adata.file.close()
    memory = ad.read_h5ad(_backed_path())
    gv.tl.coexpression(memory, backend=backend)
    return {
        "seconds": seconds,
        "peak_rss_mib": peak,
        "baseline_rss_mib": baseline,
        "output_mib": output_mib,
        "chunk_mib": chunk_mib,
        "nnz": int(nnz),
        "equal_to_in_memory": bool(np.array_equal(backed_mi, memory.varp["gv_mi"])),
    }


def _run_child(*args: str, timeout: float = 1800) -> dict:
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    result = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True, text=True, env=env, timeout=timeout, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"{args} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def report(atlas: dict, backed: dict, top_k: int, backend: str) -> str:
    """The markdown section."""
    cpu = platform.processor() or platform.machine()
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    atlas_row = (
        f"| `atlas` (20,000 × 100,000, {atlas['nnz_x']:,} nonzero), `top_k={top_k}`, "
        f"`{atlas['backend']}` | {atlas['seconds']:.1f} | {atlas['peak_rss_mib']:,.0f} | "
        f"{atlas['baseline_rss_mib']:,.0f} | {atlas['stored_pairs']:,} pairs kept |"
    )
    backed_row = (
        f"| backed `.h5ad`, 200,000 cells × 1,000 genes ({backed['nnz']:,} nonzero), "
        f"`{backend}` | {backed['seconds']:.1f} | {backed['peak_rss_mib']:,.0f} | "
        f"{backed['baseline_rss_mib']:,.0f} | chunk ≈ {backed['chunk_mib']:.0f} MiB, output ≈ "
        f"{backed['output_mib']:.0f} MiB (MI + bins layer); equal to in-memory: "
        f"{backed['equal_to_in_memory']} |"
    )
    added = backed["peak_rss_mib"] - backed["baseline_rss_mib"]
    bound = backed["chunk_mib"] + backed["output_mib"] + 1024
    return f"""{START}
## Atlas scale (DESIGN.md §5)

Command: `python benchmarks/scale.py --output benchmarks/RESULTS.md` ({date},
{os.cpu_count()} cores, {cpu}). Each row is one call in a fresh subprocess; peak RSS covers
the whole process.

| run | seconds | peak RSS MiB | RSS before the call MiB | notes |
|---|---|---|---|---|
{atlas_row}
{backed_row}

The backed run adds {added:,.0f} MiB to the process (peak RSS − RSS before the call), against
a bound of chunk + output + 1 GiB = {bound:,.0f} MiB.
{END}
"""


def _replace_section(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else ""
    if START in text and END in text:
        text = text[: text.index(START)] + section.strip() + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text.rstrip() + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--backend", default="rust")
    parser.add_argument(
        "--reuse-atlas", action="store_true", help="reuse the last atlas figures, rerun the rest"
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = {
            "atlas": lambda: child_atlas(int(rest[0]), rest[1]),
            "write-backed": child_write_backed,
            "backed": lambda: child_backed(rest[0]),
        }[kind]()
        print(json.dumps(result))
        return
    saved = WORK / "scale-atlas.json"
    if args.reuse_atlas and saved.exists():
        atlas = json.loads(saved.read_text())
    else:
        atlas = _run_child("atlas", str(args.top_k), args.backend)
        saved.write_text(json.dumps(atlas))
    print("atlas:", atlas, flush=True)
    _run_child("write-backed")
    backed = _run_child("backed", args.backend)
    print("backed:", backed, flush=True)
    _replace_section(args.output, report(atlas, backed, args.top_k, args.backend))


if __name__ == "__main__":
    main()
