"""How well each score ranks the planted module pairs of the `seed` workload above the rest.

Run from the repository root::

    python benchmarks/ranking.py --output benchmarks/RESULTS.md

The truth is the generator's: two genes of the same program (co-expressed or
anti-correlated) are a planted pair; all other pairs are not. For each score and each
gene set (all genes, then the genes detected in at least 1 %, 2 % and 5 % of the cells,
as ``sc.pp.filter_genes(min_cells=...)`` keeps them), the ROC AUC of ``|score|`` over
all pairs of the set is written between ``<!-- ranking:start -->`` and
``<!-- ranking:end -->`` of the output file.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.stats import rankdata

import geneverse as gv
from workloads import load_workload

HERE = Path(__file__).resolve().parent
START, END = "<!-- ranking:start -->", "<!-- ranking:end -->"
SCORES = {
    "MI, GeneVector's (zeros excluded; the default), plug-in": {"method": "mi"},
    "MI, GeneVector's, Miller–Madow": {"method": "mi", "estimator": "miller_madow"},
    "MI over all cells (`zeros='include'`), plug-in": {"method": "mi", "zeros": "include"},
    "MI over all cells, Miller–Madow": {
        "method": "mi",
        "zeros": "include",
        "estimator": "miller_madow",
    },
    "Pearson": {"method": "pearson"},
    "Spearman": {"method": "spearman"},
}
#: Gene sets: the genes detected (value > 0) in at least this fraction of the cells.
MIN_FRACTIONS = (0.0, 0.01, 0.02, 0.05)


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Probability that a planted pair scores above a random other pair (ties: half)."""
    ranks = rankdata(scores)
    positives, negatives = truth.sum(), (~truth).sum()
    return float((ranks[truth].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def detected_cells(adata) -> np.ndarray:
    """Number of cells with a value > 0, per gene (scanpy's ``filter_genes`` count)."""
    X = adata.X
    if sparse.issparse(X):
        return np.asarray((X > 0).sum(axis=0)).ravel()
    return np.count_nonzero(np.asarray(X) > 0, axis=0)


def column_label(fraction: float) -> str:
    return "all genes" if fraction == 0 else f"detected in ≥ {fraction:.0%} of cells"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    gv.settings.cache_dir = None
    gv.settings.verbosity = 0
    full = load_workload("seed", HERE / "_work" / "data")
    cells = detected_cells(full)
    aucs: dict[str, list[float]] = {name: [] for name in SCORES}
    counts = []
    started = time.perf_counter()
    for fraction in MIN_FRACTIONS:
        min_cells = math.ceil(fraction * full.n_obs)
        adata = full[:, cells >= min_cells].copy()
        program = adata.var["program"].to_numpy()
        upper = np.triu_indices(adata.n_vars, 1)
        truth = ((program[:, None] == program[None, :]) & (program[:, None] >= 0))[upper]
        counts.append((min_cells, adata.n_vars, truth.size, int(truth.sum())))
        for name, kwargs in SCORES.items():
            gv.tl.coexpression(adata, key_added="rank", **kwargs)
            score = np.abs(adata.varp[f"rank_{kwargs['method']}"][upper])
            aucs[name].append(roc_auc(score, truth))
            print(f"{column_label(fraction)}: {name}: {aucs[name][-1]:.3f}", flush=True)
    elapsed = time.perf_counter() - started
    in_program = full.var["program"].to_numpy() >= 0
    planted = int(in_program.sum())
    rare = [int(np.count_nonzero(in_program & (cells < c[0]))) for c in counts[1:]]
    last = [values[-1] for name, values in aucs.items() if "GeneVector" not in name]
    low, high = min(last), max(last)

    header = "| score | " + " | ".join(column_label(f) for f in MIN_FRACTIONS) + " |"
    rows = [
        header,
        "|---" * (len(MIN_FRACTIONS) + 1) + "|",
        "| min cells | " + " | ".join(f"{c[0]:,}" for c in counts) + " |",
        "| genes | " + " | ".join(f"{c[1]:,}" for c in counts) + " |",
        "| pairs (planted) | " + " | ".join(f"{c[2]:,} ({c[3]:,})" for c in counts) + " |",
        *(
            f"| {name} | " + " | ".join(f"{auc:.3f}" for auc in values) + " |"
            for name, values in aucs.items()
        ),
    ]
    section = "\n".join(
        [
            START,
            "## Ranking the planted pairs (`seed`)",
            "",
            f"Command: `python benchmarks/ranking.py` ({time.strftime('%Y-%m-%d')}, "
            f"{elapsed:.0f} s for all {len(SCORES) * len(MIN_FRACTIONS)} calls). ROC AUC of "
            "`|score|` over all gene pairs of each gene set: the probability that a planted "
            "pair (two genes of one program of the generator, co-expressed or "
            "anti-correlated) scores above a pair that is not (ties count half). A gene set "
            "keeps the genes detected (value > 0) in at least *min cells* of the "
            f"{full.n_obs:,} cells, as `sc.pp.filter_genes(adata, min_cells=...)`.",
            "",
            *rows,
            "",
            "GeneVector's MI ranks at chance: it counts only the cells where at least one "
            'gene of the pair is nonzero, i.e. it conditions on "A > 0 or B > 0". For two '
            "independent genes, each expressed in 10 % of the cells, exactly one of the two "
            "is expressed in 95 % of the counted cells, so one is zero almost exactly when "
            "the other is not: the pair gets about 0.75 bits, and more co-expression (more "
            "cells expressing both) *lowers* that MI. Over all cells (`zeros='include'`) "
            "the MI ranks as well as Pearson and Spearman. None of them reaches 1 on all "
            "genes because a planted gene detected in only a few cells carries too little "
            f"signal for any score ({rare[0]} of the {planted} planted genes are detected "
            f"in under 1 % of the cells, {rare[-1]} in under 5 %); on the genes detected "
            f"in ≥ 5 % of the cells the all-cell scores reach {low:.3f}–{high:.3f}. To "
            "rank pairs or build a network, use `zeros='include'` (with "
            "`estimator='miller_madow'`, and `pvals=True` for significance); keep the "
            "default for parity with GeneVector's training targets.",
            END,
        ]
    )
    text = args.output.read_text()
    if START in text:
        text = text[: text.index(START)] + section + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    args.output.write_text(text)
    print(section)


if __name__ == "__main__":
    main()
