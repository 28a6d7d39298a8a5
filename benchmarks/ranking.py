"""How well each score ranks the planted module pairs of the `seed` workload above the rest.

Run from the repository root::

    python benchmarks/ranking.py --output benchmarks/RESULTS.md

The truth is the generator's: two genes of the same program (co-expressed or
anti-correlated) are a planted pair; all other pairs are not. The ROC AUC of ``|score|``
over all gene pairs is written between ``<!-- ranking:start -->`` and
``<!-- ranking:end -->`` of the output file.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

import geneverse as gv
from workloads import load_workload

HERE = Path(__file__).resolve().parent
START, END = "<!-- ranking:start -->", "<!-- ranking:end -->"
SCORES = {
    "MI (GeneVector's: zeros excluded, plug-in)": {"method": "mi"},
    "MI, Miller–Madow": {"method": "mi", "estimator": "miller_madow"},
    "MI over all cells (`zeros='include'`)": {"method": "mi", "zeros": "include"},
    "Pearson": {"method": "pearson"},
    "Spearman": {"method": "spearman"},
}


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """Probability that a planted pair scores above a random other pair (ties: half)."""
    ranks = rankdata(scores)
    positives, negatives = truth.sum(), (~truth).sum()
    return float((ranks[truth].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    gv.settings.cache_dir = None
    gv.settings.verbosity = 0
    adata = load_workload("seed", HERE / "_work" / "data")
    program = adata.var["program"].to_numpy()
    upper = np.triu_indices(adata.n_vars, 1)
    truth = ((program[:, None] == program[None, :]) & (program[:, None] >= 0))[upper]
    rows = []
    for name, kwargs in SCORES.items():
        gv.tl.coexpression(adata, key_added="rank", **kwargs)
        score = np.abs(adata.varp[f"rank_{kwargs['method']}"][upper])
        rows.append(f"| {name} | {roc_auc(score, truth):.3f} |")
    section = "\n".join(
        [
            START,
            "## Ranking the planted pairs (`seed`)",
            "",
            f"Command: `python benchmarks/ranking.py` ({time.strftime('%Y-%m-%d')}). ROC AUC "
            f"of `|score|` over all {truth.size:,} gene pairs, {int(truth.sum()):,} of them "
            "planted (two genes of one program).",
            "",
            "| score | ROC AUC |",
            "|---|---|",
            *rows,
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
