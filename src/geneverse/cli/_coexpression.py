"""``geneverse coexpression`` and ``geneverse demo``: the signed MI of an ``.h5ad`` file."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._utils import MAX_BINS, MI, Estimator, Method, Zeros, get_literal_vals
from ._common import (
    Failure,
    UsageError,
    add_input_output,
    add_run_options,
    check_input,
    check_outputs,
    configure,
    n_pairs,
    names_from_file,
    number,
    read_h5ad,
    whole_number,
    write_atomically,
    write_h5ad,
)

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData

_DEMO_FILES = ("pbmc68k_gv.h5ad", "mi_heatmap.png", "top_pairs.tsv")
_SHOWN_PAIRS = 10


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``demo`` and ``coexpression`` to the ``geneverse`` command."""
    demo = commands.add_parser(
        "demo",
        help="run on 700 PBMCs that ship with scanpy and write the results to a folder",
        description="Filter genes by entropy, compute their signed MI, and write "
        f"{', '.join(_DEMO_FILES)} to DIR. The data are adata.raw of "
        "scanpy.datasets.pbmc68k_reduced() (700 cells, 765 genes, no download).",
    )
    demo.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        type=Path,
        default=Path("geneverse_demo"),
        help="folder for the results, created if needed (default: ./geneverse_demo)",
    )
    add_run_options(demo)
    demo.set_defaults(run=run_demo)

    command = commands.add_parser(
        "coexpression",
        help="compute the signed MI (or another co-expression measure) of an .h5ad file",
        description="Compute the signed MI between every pair of genes of IN and write IN "
        "with the results (varp['gv_mi'], layers['gv_bins'], var['gv_used'], ...) to OUT. "
        "The options are those of geneverse.tl.coexpression. IN is never changed (unless "
        "OUT is IN and --force is given); OUT is written completely or not at all.",
    )
    add_input_output(command, "the .h5ad file to write")
    _add_data_options(command)
    _add_score_options(command)
    _add_output_options(command)
    add_run_options(command)
    command.set_defaults(run=run_coexpression)


def _add_data_options(command: argparse.ArgumentParser) -> None:
    data = command.add_argument_group("which values, genes and cells")
    data.add_argument("--layer", metavar="L", help="use this layer instead of X")
    data.add_argument(
        "--use-raw",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="use the values of .raw (default: when IN has a .raw and no --layer is given)",
    )
    for option, what in (("genes", "compute on"), ("against", "pair the genes with")):
        choice = data.add_mutually_exclusive_group()
        choice.add_argument(
            f"--{option}",
            metavar="COLUMN",
            help=f"the genes to {what}: those marked True in this boolean var column",
        )
        choice.add_argument(
            f"--{option}-file",
            metavar="FILE",
            type=Path,
            help=f"the genes to {what}: the names in FILE, one per line",
        )
    data.add_argument(
        "--min-entropy",
        metavar="E",
        type=number,
        help="only the genes whose entropy is above E nats (e.g. 1.0); genes are kept in OUT, "
        "with var['entropy'], but only those above E are used",
    )
    data.add_argument(
        "--groupby", metavar="COLUMN", help="one result per category of this obs column"
    )


def _add_score_options(command: argparse.ArgumentParser) -> None:
    score = command.add_argument_group("the score")
    score.add_argument(
        "--method", choices=get_literal_vals(Method), default=MI, help="the measure (default: mi)"
    )
    score.add_argument(
        "--n-bins", metavar="N", type=whole_number("bins", 1, MAX_BINS), default=10,
        help="most bins of a gene's nonzero values, 1 to 255 (default: 10)",
    )  # fmt: skip
    score.add_argument(
        "--signed", action=argparse.BooleanOptionalAction, default=True,
        help="sign each MI by the genes' correlation (default: signed)",
    )  # fmt: skip
    score.add_argument(
        "--estimator", choices=get_literal_vals(Estimator),
        default=get_literal_vals(Estimator)[0], help="the MI estimator (default: plugin)",
    )  # fmt: skip
    score.add_argument(
        "--zeros", choices=get_literal_vals(Zeros), default=get_literal_vals(Zeros)[0],
        help="count the cells where both genes are zero (include: to rank pairs) or not "
        "(exclude: GeneVector's; the default)",
    )  # fmt: skip
    score.add_argument(
        "--pvals", action="store_true", help="G-test p-values and BH q-values of every pair"
    )
    score.add_argument(
        "--n-permutations", metavar="P", type=whole_number("permutations", 0), default=0,
        help="p-values from P permutations instead of the G-test",
    )  # fmt: skip
    score.add_argument(
        "--random-state", metavar="SEED", type=whole_number("a seed", 0), default=0,
        help="seed of the permutations (default: 0)",
    )  # fmt: skip


def _add_output_options(command: argparse.ArgumentParser) -> None:
    output = command.add_argument_group("what is written")
    output.add_argument(
        "--top-k", metavar="K", type=whole_number("partners", 1),
        help="keep each gene's K strongest partners as a sparse matrix (for many genes)",
    )  # fmt: skip
    output.add_argument(
        "--key-added", metavar="KEY", default="gv", help="prefix of the keys written (default: gv)"
    )
    output.add_argument(
        "--cache", action=argparse.BooleanOptionalAction, default=True,
        help="reuse and store results in the cache (see 'geneverse cache info')",
    )  # fmt: skip
    output.add_argument(
        "--heatmap", metavar="PNG", type=Path,
        help="also save the heatmap of the genes with the strongest pairs (.png, .pdf, .svg)",
    )  # fmt: skip
    output.add_argument(
        "--pairs", metavar="TSV", type=Path,
        help="also save the strongest pairs as a table (gene_a, gene_b, mi)",
    )  # fmt: skip
    output.add_argument(
        "--n-pairs", metavar="N", type=n_pairs, default=1000,
        help="pairs in the --pairs table, or 'all' (default: 1000)",
    )  # fmt: skip
    output.add_argument(
        "--gene-symbols", metavar="COLUMN",
        help="var column of gene names for the heatmap labels and the pairs, e.g. "
        "feature_name in CELLxGENE files",
    )  # fmt: skip
    output.add_argument(
        "--force", action="store_true", help="allow OUT to be IN (IN is then replaced)"
    )


# --- the commands -------------------------------------------------------------------------


def run_demo(args: argparse.Namespace) -> None:
    """``geneverse demo``: the whole job on scanpy's pbmc68k_reduced."""
    from .. import _logging as logg
    from .. import pp

    configure(args)
    folder: Path = args.output
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} exists and is not a folder; choose another -o DIR.")
    started = logg.info("loading scanpy.datasets.pbmc68k_reduced() (adata.raw)")
    import scanpy as sc

    adata = sc.datasets.pbmc68k_reduced().raw.to_adata()
    logg.info(f"    {adata.n_obs} cells × {adata.n_vars} genes", since=started)
    pp.filter_entropy(adata, min_entropy=1.0)
    seconds = _run(adata, backend=args.backend, device=args.device, n_jobs=args.n_jobs)

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in _DEMO_FILES]
    write_h5ad(adata, paths[0])
    _write_heatmap(adata, paths[1], key="gv")
    pairs = _write_pairs(adata, paths[2], n=100, key="gv")
    if not args.quiet:
        print(
            f"geneverse demo: 700 PBMCs of scanpy's pbmc68k_reduced, {adata.n_vars} genes "
            "with entropy > 1 nat"
        )
        _print_summary(adata, pairs, seconds, paths, key="gv")


def run_coexpression(args: argparse.Namespace) -> None:
    """``geneverse coexpression IN -o OUT``."""
    configure(args)
    check_input(args.input)
    outputs = {"-o": args.output, "--heatmap": args.heatmap, "--pairs": args.pairs}
    check_outputs(args.input, outputs, force=args.force)
    _check_table_options(args)
    if args.heatmap is not None:
        _check_image_format(args.heatmap)
    adata = read_h5ad(args.input)
    if args.gene_symbols is not None and args.gene_symbols not in adata.var.columns:
        columns = ", ".join(map(str, adata.var.columns)) or "none"
        raise Failure(
            f"--gene-symbols {args.gene_symbols}: {args.input} has no var column "
            f"{args.gene_symbols!r} (its columns: {columns})."
        )
    genes = _genes(adata, args, "genes")
    against = _genes(adata, args, "against")
    seconds = _run(adata, genes=genes, against=against, **_coexpression_options(args))
    write_h5ad(adata, args.output)
    paths = [args.output]
    key = args.key_added
    if args.heatmap is not None:
        _write_heatmap(adata, args.heatmap, key=key, gene_symbols=args.gene_symbols)
        paths.append(args.heatmap)
    if args.pairs is not None:
        _write_pairs(adata, args.pairs, n=args.n_pairs, key=key, gene_symbols=args.gene_symbols)
        paths.append(args.pairs)
    if not args.quiet:
        pairs = _top_pairs(adata, n=_SHOWN_PAIRS, key=key, gene_symbols=args.gene_symbols)
        _print_summary(adata, pairs, seconds, paths, key=key)


def _coexpression_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of ``tl.coexpression`` given on the command line."""
    names = (
        "layer", "use_raw", "groupby", "top_k", "n_bins", "signed", "method", "estimator",
        "zeros", "pvals", "n_permutations", "cache", "backend", "device", "n_jobs", "key_added",
    )  # fmt: skip
    options = {name: getattr(args, name) for name in names}
    if args.n_permutations:
        options["random_state"] = args.random_state
    elif args.random_state != 0:
        raise UsageError("--random-state seeds the permutations: give --n-permutations too.")
    return options


def _check_table_options(args: argparse.Namespace) -> None:
    """The heatmap and the pairs show one MI result."""
    for option, path in (("--heatmap", args.heatmap), ("--pairs", args.pairs)):
        if path is None:
            continue
        if args.method != MI:
            raise UsageError(f"{option} shows MI; drop it with --method {args.method}.")
        if args.groupby is not None:
            raise UsageError(
                f"{option} shows one MI matrix, and --groupby makes one per group; drop one "
                "of them (gv.get.mi_pairs(adata, group=...) reads each group's pairs)."
            )


def _genes(adata: AnnData, args: argparse.Namespace, option: str):
    """``genes=`` / ``against=`` of the command line: a var column, or names from a file;
    with ``--min-entropy``, only the genes above it."""
    column, file = getattr(args, option), getattr(args, f"{option}_file")
    selection: Any = column
    if file is not None:
        selection = names_from_file(file, f"--{option}-file")
    if option == "genes" and args.min_entropy is not None:
        selection = _above_entropy(adata, args, selection)
    return selection


def _above_entropy(adata: AnnData, args: argparse.Namespace, selection: Any):
    """The genes of ``selection`` above ``--min-entropy``; stores ``var['entropy']``."""
    import numpy as np

    from .. import _logging as logg
    from .._data._genes import gene_mask
    from ..pp import filter_entropy

    keep, entropy = filter_entropy(
        adata, args.min_entropy, layer=args.layer, use_raw=args.use_raw, inplace=False
    )
    keep = keep & gene_mask(adata, selection, what="--genes")
    logg.info(f"{int(keep.sum())} genes have entropy > {args.min_entropy} nats")
    if not keep.any():
        raise Failure(
            f"no gene has an entropy above --min-entropy {args.min_entropy}; lower it "
            "(1.0 is GeneVector's default)."
        )
    adata.var["entropy"] = entropy
    return np.asarray(keep, dtype=bool)


def _run(adata: AnnData, **options: Any) -> float:
    """Run :func:`geneverse.tl.coexpression`; the seconds taken."""
    from ..tl import coexpression

    started = time.perf_counter()
    coexpression(adata, **options)
    return time.perf_counter() - started


def _print_summary(adata, pairs: pd.DataFrame | None, seconds: float, paths: list[Path], key: str):
    uns = adata.uns[key]
    method = uns["params"]["method"]
    used = int(adata.var[f"{key}_used"].sum())
    what = f"signed MI of {used} genes × {adata.n_obs} cells with the {uns['backend']!r} backend"
    if method != MI:
        what = f"{method} of {used} genes × {adata.n_obs} cells"
    print(f"{what} in {seconds:.2f} s")
    if pairs is not None:
        print(f"strongest pairs (bits):\n{pairs.head(_SHOWN_PAIRS).to_string(index=False)}")
    print("wrote " + ", ".join(map(str, paths)))


# --- the heatmap and the pairs ---------------------------------------------------------------


def _check_image_format(path: Path) -> None:
    from matplotlib.figure import Figure

    formats = Figure().canvas.get_supported_filetypes()
    if path.suffix.lstrip(".").lower() not in formats:
        raise UsageError(
            f"--heatmap {path}: unknown image format {path.suffix!r}; end the name with "
            ".png, .pdf or .svg."
        )


def _write_heatmap(adata: AnnData, path: Path, *, key: str, gene_symbols: str | None = None):
    import matplotlib.pyplot as plt

    from ..pl import mi_heatmap

    figure = mi_heatmap(adata, key=key, gene_symbols=gene_symbols, return_fig=True)
    try:
        write_atomically(path, lambda tmp: figure.savefig(tmp, dpi=150, format=path.suffix[1:]))
    finally:
        plt.close(figure)


def _write_pairs(
    adata: AnnData, path: Path, *, n: int | None, key: str, gene_symbols: str | None = None
) -> pd.DataFrame:
    pairs = _top_pairs(adata, n=n, key=key, gene_symbols=gene_symbols)
    write_atomically(
        path, lambda tmp: pairs.to_csv(tmp, sep="\t", index=False, float_format="%.7g")
    )
    return pairs


def _top_pairs(adata: AnnData, *, n: int | None, key: str, gene_symbols: str | None):
    """The strongest MI pairs (``None`` for another method or per-group results), with
    ``symbol_a`` and ``symbol_b`` from ``var[gene_symbols]`` when given."""
    from ..get import mi_pairs

    params = adata.uns[key]["params"]
    if params["method"] != MI or params["groupby"] is not None:
        return None
    pairs = mi_pairs(adata, key=key, n=n)
    if gene_symbols is None:
        return pairs
    symbols = adata.var[gene_symbols].astype(str)
    return pairs.assign(
        symbol_a=symbols.loc[pairs["gene_a"]].to_numpy(),
        symbol_b=symbols.loc[pairs["gene_b"]].to_numpy(),
    )
