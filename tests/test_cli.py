"""The ``geneverse`` command, run as a shell user would: a subprocess, exit codes, stderr."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _own_cache_folder(tmp_path, monkeypatch):
    """Commands run in a subprocess cache their results in a folder of the test's own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def geneverse(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m geneverse ARGS`` and capture its output."""
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, "-m", "geneverse", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
        check=False,
    )


def in_process(capsys, *args: str | Path) -> subprocess.CompletedProcess:
    """Run ``geneverse ARGS`` through :func:`geneverse.cli.main` (fast: no new interpreter)."""
    from geneverse.cli import main

    capsys.readouterr()
    try:
        status = main([str(arg) for arg in args])
    except SystemExit as exit_:  # argparse's --help, --version and usage errors
        status = exit_.code
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, status, captured.out, captured.err)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_one_line_error(result: subprocess.CompletedProcess, status: int, *fragments: str):
    """A non-zero exit with ``geneverse: error: ...`` as the last stderr line, no traceback."""
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("geneverse: error: "), result.stderr
    for fragment in fragments:
        assert fragment in last, last


@pytest.fixture(scope="module")
def h5ad(tmp_path_factory) -> Path:
    """A small .h5ad of counts: Ensembl-like names, symbols, a layer, a boolean column."""
    rng = np.random.default_rng(0)
    n_genes = 24
    counts = rng.negative_binomial(2, 0.6, size=(80, n_genes)).astype(np.float32)
    adata = ad.AnnData(
        X=sparse.csr_matrix(np.log1p(counts)),
        var=pd.DataFrame(index=[f"ENSG{i:05d}" for i in range(n_genes)]),
    )
    adata.layers["counts"] = sparse.csr_matrix(counts)
    adata.var["feature_name"] = [f"GENE{i}" for i in range(n_genes)]
    adata.var["highly_variable"] = np.arange(n_genes) % 2 == 0
    path = tmp_path_factory.mktemp("input") / "small.h5ad"
    adata.write_h5ad(path)
    return path


@pytest.fixture
def workdir(tmp_path, h5ad) -> Path:
    """A folder with a fresh copy of the input, ``in.h5ad``."""
    (tmp_path / "in.h5ad").write_bytes(h5ad.read_bytes())
    return tmp_path


def test_coexpression_writes_out_and_never_changes_in(workdir):
    source = workdir / "in.h5ad"
    before = digest(source)
    result = geneverse(
        "coexpression", source, "-o", workdir / "out.h5ad", "--layer", "counts",
        "--genes", "highly_variable", "--n-bins", "5", "--backend", "numpy",
        "--heatmap", workdir / "mi.png", "--pairs", workdir / "pairs.tsv",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert digest(source) == before
    out = ad.read_h5ad(workdir / "out.h5ad")
    assert out.varp["gv_mi"].shape == (24, 24)
    assert out.var["gv_used"].tolist() == out.var["highly_variable"].tolist()
    assert out.uns["gv"]["params"]["n_bins"] == 5
    assert out.uns["gv"]["params"]["layer"] == "counts"
    assert (workdir / "mi.png").read_bytes().startswith(PNG_SIGNATURE)
    pairs = pd.read_csv(workdir / "pairs.tsv", sep="\t")
    assert list(pairs.columns) == ["gene_a", "gene_b", "mi"]
    assert len(pairs) == 12 * 11 // 2  # fewer pairs than --n-pairs' default: all of them
    assert "strongest pairs" in result.stdout and "'numpy' backend" in result.stdout
    assert "Traceback" not in result.stderr
    assert not [p.name for p in workdir.iterdir() if p.name.startswith(".")]  # no temp files


def test_min_entropy_keeps_every_gene_and_uses_those_above(workdir):
    result = geneverse(
        "coexpression", workdir / "in.h5ad", "-o", workdir / "out.h5ad", "--layer", "counts",
        "--min-entropy", "1.3", "--gene-symbols", "feature_name", "--pairs",
        workdir / "pairs.tsv", "--n-pairs", "5", "--backend", "numpy",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = ad.read_h5ad(workdir / "out.h5ad")
    assert out.n_vars == 24
    expected = out.var["entropy"] > 1.3
    assert 0 < expected.sum() < 24
    assert out.var["gv_used"].tolist() == expected.tolist()
    pairs = pd.read_csv(workdir / "pairs.tsv", sep="\t")
    assert list(pairs.columns) == ["gene_a", "gene_b", "mi", "symbol_a", "symbol_b"]
    assert len(pairs) == 5
    assert pairs["symbol_a"].str.startswith("GENE").all()


def test_quiet_prints_nothing(workdir):
    result = geneverse(
        "coexpression", workdir / "in.h5ad", "-o", workdir / "out.h5ad", "--quiet",
        "--backend", "numpy",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert (workdir / "out.h5ad").exists()


def test_out_is_in_refused_unless_forced(workdir):
    source = workdir / "in.h5ad"
    before = digest(source)
    refused = geneverse("coexpression", source, "-o", workdir / "." / "in.h5ad")
    assert_one_line_error(refused, 2, "is the input file", "--force")
    assert digest(source) == before

    forced = geneverse("coexpression", source, "-o", source, "--force", "-q", "--backend", "numpy")
    assert forced.returncode == 0, forced.stderr
    assert "gv_mi" in ad.read_h5ad(source).varp


@pytest.mark.parametrize(
    ("make_args", "status", "fragments"),
    [
        (lambda d: ["coexpression", d / "missing.h5ad", "-o", d / "o.h5ad"], 1, ["no such file"]),
        (lambda d: ["coexpression", d / "notes.txt", "-o", d / "o.h5ad"], 1,
         ["notes.txt is not a readable .h5ad file"]),
        (lambda d: ["coexpression", d, "-o", d / "o.h5ad"], 1, ["is not a file"]),
        (lambda d: ["coexpression", d / "in.h5ad", "-o", d / "o.h5ad", "--layer", "spliced"], 1,
         ["layer='spliced' is not in adata.layers", "counts"]),
        (lambda d: ["coexpression", d / "in.h5ad", "-o", d / "o.h5ad", "--use-raw"], 1,
         ["has no .raw"]),
        (lambda d: ["coexpression", d / "in.h5ad", "-o", d / "o.h5ad", "--genes", "hvg"], 1,
         ["genes='hvg' is not a column of adata.var", "highly_variable"]),
        (lambda d: ["coexpression", d / "in.h5ad", "-o", d / "o.h5ad", "--genes",
                    "feature_name"], 1, ["needs a boolean column"]),
        (lambda d: ["coexpression", d / "in.h5ad", "-o", d / "nowhere" / "o.h5ad"], 1,
         ["does not exist"]),
        (lambda d: ["coexpression", d / "in.h5ad", "-o", d / "o.h5ad", "--n-bins", "0"], 2,
         ["--n-bins", "1 to 255"]),
        (lambda d: ["coexpression", d / "in.h5ad", "-o", d / "o.h5ad", "--n-bins", "300"], 2,
         ["--n-bins", "1 to 255"]),
        (lambda d: ["coexpression", d / "in.h5ad", "-o", d / "o.h5ad", "--pairs", d / "o.h5ad"],
         2, ["-o and --pairs are the same file"]),
        (lambda d: ["coexpression", d / "in.h5ad", "-o", d / "o.h5ad", "--method", "pearson",
                    "--zeros", "include"], 1, ["zeros='include' applies only with method='mi'"]),
        (lambda d: ["coexpression", d / "in.h5ad", "-o", d / "o.h5ad", "--random-state", "3"],
         2, ["--random-state", "--n-permutations"]),
        (lambda d: ["coexpression", d / "in.h5ad", "-o", d / "o.h5ad", "--n-bins", "ten"], 2,
         ["--n-bins", "'ten'"]),
        (lambda d: ["coexpression", d / "in.h5ad", "-o", d / "o.h5ad", "--backend", "fast"], 2,
         ["--backend", "'fast'"]),
        (lambda d: ["coexpression", d / "in.h5ad", "-o", d / "o.h5ad", "--heatmap",
                    d / "mi.jpeg2"], 2, ["unknown image format"]),
        (lambda d: ["coexpression", d / "in.h5ad"], 2, ["-o/--output"]),
        (lambda d: ["coexpression", d / "in.h5ad", "-o", d / "o.h5ad", "--min-entropy", "50"],
         1, ["--min-entropy"]),
        (lambda d: ["frobnicate"], 2, ["invalid choice: 'frobnicate'"]),
    ],
    ids=[
        "missing-file", "not-h5ad", "folder", "missing-layer", "no-raw", "missing-column",
        "column-not-bool", "no-out-folder", "n-bins-0", "n-bins-300", "colliding-outputs",
        "mi-only-option", "seed-without-permutations", "n-bins-word",
        "bad-backend", "bad-image-format", "no-output", "entropy-too-high", "unknown-command",
    ],
)  # fmt: skip
def test_bad_input_one_line_error(workdir, capsys, make_args, status, fragments):
    """Every case in-process, and the common ones also as a real process."""
    (workdir / "notes.txt").write_text("gene\tvalue\nCD3E\t1\n")
    before = digest(workdir / "in.h5ad")
    args = make_args(workdir)
    result = in_process(capsys, *args)
    assert_one_line_error(result, status, *fragments)
    if {"missing.h5ad", "notes.txt", "spliced", "0"} & {Path(str(a)).name for a in args}:
        result = geneverse(*args)
    assert_one_line_error(result, status, *fragments)
    assert digest(workdir / "in.h5ad") == before
    assert not (workdir / "o.h5ad").exists()
    assert not [p.name for p in workdir.iterdir() if p.name.startswith(".")]


def test_no_command_prints_help(tmp_path):
    result = geneverse(cwd=tmp_path)
    assert result.returncode == 2
    assert "usage: geneverse" in result.stderr and "coexpression" in result.stderr


@pytest.mark.slow
def test_info():
    result = geneverse("info")
    assert result.returncode == 0, result.stderr
    assert "geneverse" in result.stdout and "numpy" in result.stdout
    assert "geneverse backends" in result.stdout and "usable" in result.stdout


def test_version():
    from geneverse import __version__

    result = geneverse("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"geneverse {__version__}"


@pytest.mark.slow
def test_demo_writes_the_three_files(tmp_path):
    result = geneverse("demo", "--backend", "numpy", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "geneverse_demo"
    assert sorted(p.name for p in folder.iterdir()) == [
        "mi_heatmap.png",
        "pbmc68k_gv.h5ad",
        "top_pairs.tsv",
    ]
    adata = ad.read_h5ad(folder / "pbmc68k_gv.h5ad")
    assert adata.n_obs == 700
    mi = adata.varp["gv_mi"]
    assert mi.shape == (adata.n_vars, adata.n_vars) and np.abs(mi).max() > 0
    pairs = pd.read_csv(folder / "top_pairs.tsv", sep="\t")
    assert list(pairs.columns) == ["gene_a", "gene_b", "mi"]
    assert len(pairs) == 100 and set(pairs["gene_a"]) <= set(adata.var_names)
    assert np.all(np.diff(pairs["mi"].abs()) <= 0)
    assert (folder / "mi_heatmap.png").read_bytes().startswith(PNG_SIGNATURE)
    first = pairs.iloc[0]
    assert f"{first.gene_a}" in result.stdout and "'numpy' backend" in result.stdout


def test_demo_refuses_a_file_as_folder(tmp_path):
    (tmp_path / "taken").write_text("")
    result = geneverse("demo", "-o", tmp_path / "taken")
    assert_one_line_error(result, 2, "is not a folder")


def test_top_k_writes_a_sparse_network(workdir, capsys):
    result = in_process(
        capsys, "coexpression", workdir / "in.h5ad", "-o", workdir / "out.h5ad",
        "--layer", "counts", "--top-k", "3", "--backend", "numpy", "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    mi = ad.read_h5ad(workdir / "out.h5ad").varp["gv_mi"]
    assert sparse.issparse(mi) and 0 < mi.nnz <= 2 * 3 * mi.shape[0]
    bad = in_process(
        capsys, "coexpression", workdir / "in.h5ad", "-o", workdir / "o.h5ad", "--top-k", "0"
    )
    assert_one_line_error(bad, 2, "--top-k", "0 is not a number of partners")
