"""Gene networks: how well ``gv.tl.modules`` recovers the planted programs, and what
``gv.tl.differential_coexpression`` costs next to single-group runs.

Run from the repository root::

    python benchmarks/networks.py --output benchmarks/RESULTS.md

1. Module recovery: on the ``seed`` workload (and the smaller data of
   ``tests/test_modules.py``), the genes detected in at least 5 % of the cells, the
   recommended score (``zeros="include", estimator="miller_madow", pvals=True``) and
   ``gv.tl.modules`` with its defaults. The truth is the generator's: each program's
   co-expressed set and its anti-correlated set are two classes, the background genes a
   third; the genes in no module are one class of the found labels, so that a background
   gene put into a module, or a planted gene left out, counts against the adjusted Rand
   index (ARI, scikit-learn's ``adjusted_rand_score``).
2. Differential cost: ``seed`` split into two random halves of the cells, and
   ``differential_coexpression`` with 100 permutations against the time of
   ``gv.tl.coexpression`` on each half alone, with the same score and the default
   backend, in wall-clock and CPU seconds. The bar: at most 2 × 101 single-group runs
   (1 + 100 runs per group).

The section between ``<!-- networks:start -->`` and ``<!-- networks:end -->`` of the
output file is replaced (added at its end if missing).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

import geneverse as gv
from workloads import SyntheticSpec, load_workload, synthetic

HERE = Path(__file__).resolve().parent
START, END = "<!-- networks:start -->", "<!-- networks:end -->"
RECOMMENDED = {"zeros": "include", "estimator": "miller_madow"}
MIN_DETECTED = 0.05
N_PERMUTATIONS = 100
#: Single-group runs timed before the differential run, and again after it.
REPEATS = 3
#: The data of tests/test_modules.py.
TEST_SPEC = SyntheticSpec(n_genes=400, n_cells=3000, nonzero=0.15, seed=5)


def truth_labels(adata) -> np.ndarray:
    """``P3+``, ``P3-`` (program 3's co-expressed and anti-correlated sets), ``background``."""
    program, sign = adata.var["program"].to_numpy(), adata.var["program_sign"].to_numpy()
    sets = np.char.add(np.char.add("P", program.astype(str)), np.where(sign > 0, "+", "-"))
    return np.where(program >= 0, sets, "background")


def recovery(adata, name: str, **options) -> dict:
    """ARI of the modules (``gv.tl.modules(adata, **options)``) of the detected genes
    against the planted sets, and details."""
    detected = np.asarray((adata.X > 0).mean(axis=0)).ravel() >= MIN_DETECTED
    adata.var["detected"] = detected
    started = time.perf_counter()
    gv.tl.coexpression(adata, genes="detected", pvals=True, **RECOMMENDED)
    mi_seconds = time.perf_counter() - started
    started = time.perf_counter()
    gv.tl.modules(adata, **options)
    module_seconds = time.perf_counter() - started
    truth = truth_labels(adata)[detected]
    found = adata.var["gv_module"].astype(object).fillna("none").to_numpy(dtype=str)[detected]
    planted = truth != "background"
    return {
        "name": name,
        "shape": adata.shape,
        "genes": int(detected.sum()),
        "planted": int(planted.sum()),
        "sets": int(np.unique(truth[planted]).size),
        "modules": int(np.unique(found[found != "none"]).size),
        "ari": adjusted_rand_score(truth, found),
        "ari_planted": adjusted_rand_score(truth[planted], found[planted]),
        "background_in_modules": int(np.count_nonzero(~planted & (found != "none"))),
        "background": int(np.count_nonzero(~planted)),
        "planted_left_out": int(np.count_nonzero(planted & (found == "none"))),
        "mi_seconds": mi_seconds,
        "module_seconds": module_seconds,
        "backend": adata.uns["gv"]["backend"],
    }


def _timed(function) -> tuple[float, float]:
    """Wall-clock and CPU seconds (this process, all its threads) of ``function()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def differential_cost(adata, repeats: int) -> dict:
    """The differential run with 100 permutations against single-group runs, timed
    before and after it (the machine may be shared: medians of both, wall and CPU)."""
    rng = np.random.default_rng(0)
    adata.obs["half"] = np.where(rng.permutation(adata.n_obs) < adata.n_obs // 2, "A", "B")
    subsets = {group: adata[adata.obs["half"] == group].copy() for group in ("A", "B")}
    times: dict[str, list[tuple[float, float]]] = {"A": [], "B": []}

    def singles() -> None:
        for group, subset in subsets.items():
            for _ in range(repeats):
                times[group].append(_timed(lambda s=subset: gv.tl.coexpression(s, **RECOMMENDED)))

    singles()
    wall, cpu = _timed(
        lambda: gv.tl.differential_coexpression(
            adata, "half", group="B", reference="A", n_permutations=N_PERMUTATIONS
        )
    )
    singles()
    single = {
        group: tuple(statistics.median(t[i] for t in runs) for i in (0, 1))
        for group, runs in times.items()
    }
    bar = tuple((N_PERMUTATIONS + 1) * (single["A"][i] + single["B"][i]) for i in (0, 1))
    return {
        "seconds": (wall, cpu),
        "single": single,
        "bar": bar,
        "ratio": (wall / bar[0], cpu / bar[1]),
        "backend": adata.uns["gv_diff"]["backend"],
        "n_cells": list(adata.uns["gv_diff"]["n_cells"]),
        "load": os.getloadavg(),
    }


def section(results: list[dict], cost: dict, elapsed: float) -> str:
    head = (
        f"Command: `python benchmarks/networks.py` ({time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()} cores, {platform.machine()}, backend `{cost['backend']}`, "
        f"{elapsed:.0f} s in all)."
    )
    rows = [
        "| data | genes × cells | detected genes (planted) | planted sets | modules | ARI "
        "| ARI, planted genes only | background genes in modules | planted genes left out "
        "| MI + tests s | modules s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r['name']} | {r['shape'][1]:,} × {r['shape'][0]:,} | {r['genes']:,} "
            f"({r['planted']}) | {r['sets']} | {r['modules']} | {r['ari']:.3f} "
            f"| {r['ari_planted']:.3f} | {r['background_in_modules']} of {r['background']} "
            f"| {r['planted_left_out']} | {r['mi_seconds']:.2f} | {r['module_seconds']:.2f} |"
        )
    (wall, cpu), (bar_wall, bar_cpu) = cost["seconds"], cost["bar"]
    (a_wall, a_cpu), (b_wall, b_cpu) = cost["single"]["A"], cost["single"]["B"]
    ratio_wall, ratio_cpu = cost["ratio"]
    verdict = "within" if ratio_cpu <= 1 else "above"
    load = ", ".join(f"{value:.1f}" for value in cost["load"])
    return "\n".join(
        [
            START,
            "## Gene networks: modules and differential co-expression",
            "",
            head,
            "",
            "**Module recovery.** `gv.tl.modules` with its defaults on the recommended "
            "score (`zeros='include', estimator='miller_madow', pvals=True`) of the genes "
            f"detected in ≥ {MIN_DETECTED:.0%} of the cells. ARI against the generator's "
            "truth: each program's co-expressed set and its anti-correlated set are two "
            "classes and the background genes a third; the genes in no module are one "
            "class of the found labels, so a background gene put into a module or a "
            "planted gene left out counts against it. The second row is the data of "
            "`tests/test_modules.py` (where the ARI must reach 0.9).",
            "",
            *rows,
            "",
            "The last row keeps the edges at a false discovery rate of 5 % instead of "
            "the default 1 %: background genes are tied to every gene through the cells' "
            "library sizes, and enough of their weak edges then pass to form small "
            f"spurious modules (ARI {results[-1]['ari']:.3f}).",
            "",
            f"**Differential cost.** `seed` ({cost['n_cells'][0]:,} + {cost['n_cells'][1]:,} "
            f"cells in two random halves), `differential_coexpression` with "
            f"{N_PERMUTATIONS} permutations, against `gv.tl.coexpression` of each half "
            f"alone with the same score (median of {2 * REPEATS} runs, half before and half "
            "after the differential run). The bar is 2 × "
            f"{N_PERMUTATIONS + 1} single-group runs, {N_PERMUTATIONS + 1} × (A + B). "
            "The measure is CPU time (this process's threads): the machine may be shared, "
            f"and its load (load average {load} during this run) changes the wall-clock "
            "times of the single runs and of the differential run differently, since they "
            "run at different moments; wall-clock times are given for reference.",
            "",
            "| | single run, half A | half B | bar, 101 × (A + B) | differential, 100 "
            "permutations | share of the bar |",
            "|---|---|---|---|---|---|",
            f"| wall-clock s | {a_wall:.3f} | {b_wall:.3f} | {bar_wall:.1f} | {wall:.1f} "
            f"| {ratio_wall:.2f} |",
            f"| CPU s | {a_cpu:.3f} | {b_cpu:.3f} | {bar_cpu:.1f} | {cpu:.1f} | {ratio_cpu:.2f} |",
            "",
            f"The differential run is {verdict} the bar. Each permutation bins and scores both "
            "halves once with the same kernel, as a single run does; reading, validating "
            "and storing happen once, and the Benjamini–Hochberg q-values of the 2 million "
            "pairs, which a single run without tests does not compute, are added once.",
            END,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    gv.settings.cache_dir = None
    gv.settings.verbosity = 0
    started = time.perf_counter()
    seed = load_workload("seed", HERE / "_work" / "data")
    results = [
        recovery(seed.copy(), "`seed`"),
        recovery(synthetic(TEST_SPEC), "test data (seed 5)"),
        recovery(seed, "`seed`, `max_q=0.05`", max_q=0.05),
    ]
    for r in results:
        print(f"{r['name']}: ARI {r['ari']:.3f} ({r['modules']} modules)", flush=True)
    cost = differential_cost(load_workload("seed", HERE / "_work" / "data"), REPEATS)
    print(f"differential: {cost['seconds'][0]:.1f} s, {cost['ratio'][0]:.2f} of the bar (wall), "
          f"{cost['ratio'][1]:.2f} (CPU)", flush=True)  # fmt: skip
    text = section(results, cost, time.perf_counter() - started)
    output = args.output.read_text() if args.output.exists() else ""
    if START in output and END in output:
        output = output[: output.index(START)] + text + output[output.index(END) + len(END) :]
    else:
        output = output.rstrip() + "\n\n" + text + "\n"
    args.output.write_text(output)
    print(text)


if __name__ == "__main__":
    main()
