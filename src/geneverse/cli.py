"""The ``geneverse`` command: signed MI of every gene pair of an .h5ad file, from the shell.

``geneverse demo`` runs on a small real dataset that ships with scanpy,
``geneverse coexpression IN.h5ad -o OUT.h5ad`` on yours, ``geneverse info`` prints
versions and backends. Errors are one line on stderr and a non-zero exit status:
2 for a wrong command line, 1 for a failure (unreadable file, missing layer, ...).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData

_BACKENDS = ("auto", "gpu", "rust", "numba", "numpy")
_DEMO_FILES = ("pbmc68k_gv.h5ad", "mi_heatmap.png", "top_pairs.tsv")
_SHOWN_PAIRS = 10


class UsageError(Exception):
    """A command line that cannot work (exit status 2)."""


class Failure(Exception):
    """A command that could not be carried out (exit status 1)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with errors as one line: ``geneverse: error: ...`` and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"geneverse: error: {message} (see '{self.prog} --help')\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``geneverse`` command with ``argv`` (default: ``sys.argv[1:]``); the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        args.run(args)
    except UsageError as error:
        return _error(str(error), 2)
    except (Failure, ValueError, TypeError, OSError) as error:
        return _error(str(error), 1)
    except MemoryError as error:
        return _error(
            str(error) or "not enough memory; select fewer genes (--genes) or use --top-k.", 1
        )
    except KeyboardInterrupt:
        return _error("interrupted.", 130)
    return 0


def _error(message: str, status: int) -> int:
    one_line = " ".join(message.split())
    print(f"geneverse: error: {one_line}", file=sys.stderr)
    return status


# --- the command line ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The parser of the ``geneverse`` command and its subcommands."""
    from . import __version__

    parser = _Parser(
        prog="geneverse",
        description="Exact signed mutual information (MI) between every pair of genes.",
        epilog="Run 'geneverse COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"geneverse {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

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
    _add_run_options(demo)
    demo.set_defaults(run=run_demo)

    coexpression = commands.add_parser(
        "coexpression",
        help="compute the signed MI of the genes of an .h5ad file",
        description="Compute the signed MI between every pair of genes of IN and write IN "
        "with the results (varp['gv_mi'], layers['gv_bins'], var['gv_used'], ...) to OUT. "
        "IN is never changed (unless OUT is IN and --force is given); OUT is written "
        "completely or not at all.",
    )
    coexpression.add_argument("input", metavar="IN", type=Path, help="the .h5ad file to read")
    coexpression.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        type=Path,
        required=True,
        help="the .h5ad file to write (replaced if it exists)",
    )
    coexpression.add_argument(
        "--layer", metavar="L", help="use the values of this layer instead of X"
    )
    coexpression.add_argument(
        "--use-raw",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="use the values of .raw (default: when IN has a .raw and no --layer is given)",
    )
    coexpression.add_argument(
        "--genes",
        metavar="COLUMN",
        help="only the genes marked True in this boolean column of var, e.g. highly_variable",
    )
    coexpression.add_argument(
        "--n-bins",
        metavar="N",
        type=_n_bins,
        default=10,
        help="most bins of a gene's nonzero values, 1 to 255 (default: 10)",
    )
    coexpression.add_argument(
        "--top-k",
        metavar="K",
        type=_top_k,
        help="keep each gene's K strongest partners as a sparse matrix (for many genes)",
    )
    coexpression.add_argument(
        "--min-entropy",
        metavar="E",
        type=_number,
        help="only the genes whose entropy is above E nats (e.g. 1.0); genes are kept in OUT, "
        "with var['entropy'], but only those above E are used",
    )
    coexpression.add_argument(
        "--heatmap",
        metavar="PNG",
        type=Path,
        help="also save the heatmap of the genes with the strongest pairs (.png, .pdf, .svg)",
    )
    coexpression.add_argument(
        "--gene-symbols",
        metavar="COLUMN",
        help="var column of gene names for the heatmap labels and the pairs, e.g. "
        "feature_name in CELLxGENE files",
    )
    coexpression.add_argument(
        "--pairs",
        metavar="TSV",
        type=Path,
        help="also save the strongest pairs as a table (gene_a, gene_b, mi)",
    )
    coexpression.add_argument(
        "--n-pairs",
        metavar="N",
        type=_n_pairs,
        default=1000,
        help="pairs in the --pairs table, or 'all' (default: 1000)",
    )
    coexpression.add_argument(
        "--force", action="store_true", help="allow OUT to be IN (IN is then replaced)"
    )
    _add_run_options(coexpression)
    coexpression.set_defaults(run=run_coexpression)

    info = commands.add_parser(
        "info",
        help="print the versions of geneverse and its dependencies, and the usable backends",
        description="Print what to paste into a bug report: versions and usable backends.",
    )
    info.set_defaults(run=run_info)
    return parser


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backend",
        choices=_BACKENDS,
        default="auto",
        help="the MI kernel (default: auto, the fastest usable; see 'geneverse info')",
    )
    parser.add_argument(
        "--device", help="with --backend gpu: the torch device, such as cuda or cpu"
    )
    parser.add_argument(
        "--n-jobs", metavar="N", type=_n_jobs, help="threads (default: all cores; -1: all)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")


def _n_bins(text: str) -> int:
    value = _whole_number(text, "a whole number of bins from 1 to 255")
    if not 1 <= value <= 255:
        raise argparse.ArgumentTypeError(f"{value} is out of range: use 1 to 255 bins")
    return value


def _n_jobs(text: str) -> int:
    value = _whole_number(text, "a number of threads (or -1 for all cores)")
    if value < 1 and value != -1:
        raise argparse.ArgumentTypeError(f"{value} is not a number of threads: use 1 or more")
    return value


def _top_k(text: str) -> int:
    value = _whole_number(text, "a number of partners")
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number of partners")
    return value


def _n_pairs(text: str) -> int | None:
    if text == "all":
        return None
    value = _whole_number(text, "a number of pairs or 'all'")
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is not a number of pairs")
    return value


def _whole_number(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value:  # NaN
        raise argparse.ArgumentTypeError("NaN is not a threshold")
    return value


# --- the commands -------------------------------------------------------------------------


def run_info(args: argparse.Namespace) -> None:
    """``geneverse info``."""
    from ._versions import print_versions

    print_versions()


def run_demo(args: argparse.Namespace) -> None:
    """``geneverse demo``: the whole job on scanpy's pbmc68k_reduced."""
    from . import _logging as logg
    from . import pp

    _configure(args)
    folder: Path = args.output
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} exists and is not a folder; choose another -o DIR.")
    started = logg.info("loading scanpy.datasets.pbmc68k_reduced() (adata.raw)")
    import scanpy as sc

    adata = sc.datasets.pbmc68k_reduced().raw.to_adata()
    logg.info(f"    {adata.n_obs} cells × {adata.n_vars} genes", since=started)
    pp.filter_entropy(adata, min_entropy=1.0)
    seconds = _coexpression(adata, args)

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / name for name in _DEMO_FILES]
    _write_h5ad(adata, paths[0])
    _write_heatmap(adata, paths[1])
    pairs = _write_pairs(adata, paths[2], n=100)
    if not args.quiet:
        print(
            f"geneverse demo: 700 PBMCs of scanpy's pbmc68k_reduced, {adata.n_vars} genes "
            "with entropy > 1 nat"
        )
        _print_summary(adata, pairs, seconds, paths)


def run_coexpression(args: argparse.Namespace) -> None:
    """``geneverse coexpression IN -o OUT``."""
    _configure(args)
    _check_paths(args)
    adata = _read_h5ad(args.input)
    genes = _gene_selection(adata, args)
    seconds = _coexpression(adata, args, genes=genes)
    _write_h5ad(adata, args.output)
    paths = [args.output]
    if args.heatmap is not None:
        _write_heatmap(adata, args.heatmap, gene_symbols=args.gene_symbols)
        paths.append(args.heatmap)
    if args.pairs is not None:
        _write_pairs(adata, args.pairs, n=args.n_pairs, gene_symbols=args.gene_symbols)
        paths.append(args.pairs)
    if not args.quiet:
        from .get import mi_pairs

        pairs = _with_symbols(adata, mi_pairs(adata, n=_SHOWN_PAIRS), args.gene_symbols)
        _print_summary(adata, pairs, seconds, paths)


def _configure(args: argparse.Namespace) -> None:
    """Verbosity, and a plotting backend that needs no display."""
    import matplotlib

    from ._settings import settings

    matplotlib.use("Agg")
    if args.quiet:
        settings.verbosity = 0


def _coexpression(adata: AnnData, args: argparse.Namespace, *, genes=None) -> float:
    """Run :func:`geneverse.tl.coexpression` with the command's options; the seconds taken."""
    from .tl import coexpression

    started = time.perf_counter()
    coexpression(
        adata,
        layer=getattr(args, "layer", None),
        use_raw=getattr(args, "use_raw", None),
        genes=genes,
        n_bins=getattr(args, "n_bins", 10),
        top_k=getattr(args, "top_k", None),
        backend=args.backend,
        device=args.device,
        n_jobs=args.n_jobs,
    )
    return time.perf_counter() - started


def _print_summary(adata: AnnData, pairs: pd.DataFrame, seconds: float, paths: list[Path]):
    used = int(adata.var["gv_used"].sum())
    print(
        f"signed MI of {used} genes × {adata.n_obs} cells with the "
        f"{adata.uns['gv']['backend']!r} backend in {seconds:.2f} s"
    )
    print(f"strongest pairs (bits):\n{pairs.head(_SHOWN_PAIRS).to_string(index=False)}")
    print("wrote " + ", ".join(map(str, paths)))


# --- reading and checking -----------------------------------------------------------------


def _check_paths(args: argparse.Namespace) -> None:
    """Everything about the paths that can be checked before reading IN."""
    source: Path = args.input
    if not source.exists():
        raise Failure(f"{source}: no such file.")
    if not source.is_file():
        raise Failure(f"{source} is not a file; give the path of an .h5ad file.")
    if not os.access(source, os.R_OK):
        raise Failure(f"{source}: permission denied (the file cannot be read).")
    outputs = {"-o": args.output, "--heatmap": args.heatmap, "--pairs": args.pairs}
    for option, path in outputs.items():
        if path is None:
            continue
        if _same_file(path, source) and not (option == "-o" and args.force):
            extra = "" if option != "-o" else ", or pass --force to replace it"
            raise UsageError(f"{option} {path} is the input file; choose another path{extra}.")
        _check_writable(option, path)
    if args.heatmap is not None:
        _check_image_format(args.heatmap)


def _same_file(path: Path, other: Path) -> bool:
    if path.exists() and other.exists():
        return os.path.samefile(path, other)
    return path.resolve() == other.resolve()


def _check_writable(option: str, path: Path) -> None:
    folder = path.parent
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder; give a file name.")
    if not folder.is_dir():
        raise Failure(f"{option} {path}: the folder {folder} does not exist; create it first.")
    if not os.access(folder, os.W_OK):
        raise Failure(f"{option} {path}: the folder {folder} is not writable.")


def _check_image_format(path: Path) -> None:
    from matplotlib.figure import Figure

    formats = Figure().canvas.get_supported_filetypes()
    if path.suffix.lstrip(".").lower() not in formats:
        raise UsageError(
            f"--heatmap {path}: unknown image format {path.suffix!r}; end the name with "
            ".png, .pdf or .svg."
        )


def _read_h5ad(path: Path) -> AnnData:
    import anndata as ad

    from . import _logging as logg

    started = logg.info(f"reading {path}")
    try:
        adata = ad.read_h5ad(path)
    except Exception as error:  # anndata and h5py raise many kinds for a file that is not .h5ad
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise Failure(f"{path} is not a readable .h5ad file ({reason}).") from error
    logg.info(f"    {adata.n_obs} cells × {adata.n_vars} genes", since=started)
    return adata


def _gene_selection(adata: AnnData, args: argparse.Namespace):
    """Check --layer, --use-raw and --genes against IN; the genes to use (``genes=``)."""
    if args.layer is not None and args.layer not in adata.layers:
        layers = ", ".join(adata.layers) or "none"
        raise Failure(
            f"{args.input} has no layer {args.layer!r} (its layers: {layers}); name one of "
            "those with --layer, or leave --layer out to use X."
        )
    if args.use_raw and adata.raw is None:
        raise Failure(f"--use-raw: {args.input} has no .raw; leave --use-raw out to use X.")
    if args.genes is not None:
        _check_gene_column(adata, args)
    if args.gene_symbols is not None and args.gene_symbols not in adata.var.columns:
        columns = ", ".join(map(str, adata.var.columns)) or "none"
        raise Failure(
            f"--gene-symbols {args.gene_symbols}: {args.input} has no var column "
            f"{args.gene_symbols!r} (its columns: {columns})."
        )
    if args.min_entropy is None:
        return args.genes
    return _entropy_selection(adata, args)


def _check_gene_column(adata: AnnData, args: argparse.Namespace) -> None:
    column = args.genes
    if column not in adata.var.columns:
        columns = ", ".join(map(str, adata.var.columns)) or "none"
        raise Failure(
            f"--genes {column}: {args.input} has no var column {column!r} (its columns: "
            f"{columns}); name a boolean column such as highly_variable."
        )
    if adata.var[column].dtype != bool:
        raise Failure(
            f"--genes {column}: var[{column!r}] holds {adata.var[column].dtype} values, not "
            "True/False; name a boolean column such as highly_variable."
        )


def _entropy_selection(adata: AnnData, args: argparse.Namespace):
    """The genes above ``--min-entropy`` (and in ``--genes``); stores ``var['entropy']``."""
    import numpy as np

    from . import _logging as logg
    from .pp import filter_entropy

    keep, entropy = filter_entropy(
        adata, args.min_entropy, layer=args.layer, use_raw=args.use_raw, inplace=False
    )
    if args.genes is not None:
        keep = keep & adata.var[args.genes].to_numpy(dtype=bool)
    logg.info(f"{int(keep.sum())} genes have entropy > {args.min_entropy} nats")
    if not keep.any():
        raise Failure(
            f"no gene has an entropy above --min-entropy {args.min_entropy}; lower it "
            "(1.0 is GeneVector's default)."
        )
    adata.var["entropy"] = entropy
    return np.asarray(keep, dtype=bool)


# --- writing ------------------------------------------------------------------------------


def _write_h5ad(adata: AnnData, path: Path) -> None:
    from . import _logging as logg

    started = logg.info(f"writing {path}")
    _write_atomically(path, adata.write_h5ad)
    logg.info("    written", since=started)


def _write_heatmap(adata: AnnData, path: Path, *, gene_symbols: str | None = None) -> None:
    import matplotlib.pyplot as plt

    from .pl import mi_heatmap

    figure = mi_heatmap(adata, gene_symbols=gene_symbols, return_fig=True)
    try:
        _write_atomically(path, lambda tmp: figure.savefig(tmp, dpi=150))
    finally:
        plt.close(figure)


def _write_pairs(
    adata: AnnData, path: Path, *, n: int | None, gene_symbols: str | None = None
) -> pd.DataFrame:
    from .get import mi_pairs

    pairs = _with_symbols(adata, mi_pairs(adata, n=n), gene_symbols)
    _write_atomically(
        path, lambda tmp: pairs.to_csv(tmp, sep="\t", index=False, float_format="%.7g")
    )
    return pairs


def _with_symbols(adata: AnnData, pairs: pd.DataFrame, gene_symbols: str | None):
    """Add ``symbol_a`` and ``symbol_b`` from ``var[gene_symbols]`` (when given)."""
    if gene_symbols is None:
        return pairs
    symbols = adata.var[gene_symbols].astype(str)
    return pairs.assign(
        symbol_a=symbols.loc[pairs["gene_a"]].to_numpy(),
        symbol_b=symbols.loc[pairs["gene_b"]].to_numpy(),
    )


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Write to a new file beside ``path``, then rename it to ``path``: all or nothing."""
    handle, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix
    )
    os.close(handle)
    temporary = Path(temporary)
    try:
        write(temporary)
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
