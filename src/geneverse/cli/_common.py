"""What every ``geneverse`` command shares: its errors, argument types, run options, and
reading and writing files safely."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from .._utils import Backend, get_literal_vals

if TYPE_CHECKING:
    from anndata import AnnData


class UsageError(Exception):
    """A command line that cannot work (exit status 2)."""


class Failure(Exception):
    """A command that could not be carried out (exit status 1)."""


class Parser(argparse.ArgumentParser):
    """argparse, with errors as one line: ``geneverse: error: ...`` and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"geneverse: error: {message} (see '{self.prog} --help')\n")


# --- argument types ------------------------------------------------------------------------


def whole_number(
    what: str, minimum: int | None = None, maximum: int | None = None
) -> Callable[[str], int]:
    """An argparse type: a whole number of ``what`` in ``minimum..maximum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of {what}") from None
        if maximum is not None and not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(
                f"{value} is out of range: use {minimum} to {maximum} {what}"
            )
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(
                f"{value} is not a number of {what} (use {minimum} or more)"
            )
        return value

    return parse


def n_jobs(text: str) -> int:
    """An argparse type: a number of threads, or -1 for all cores."""
    value = whole_number("threads")(text)
    if value < 1 and value != -1:
        raise argparse.ArgumentTypeError(f"{value} is not a number of threads: use 1 or more")
    return value


def number(text: str) -> float:
    """An argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def n_pairs(text: str) -> int | None:
    """An argparse type: a number of pairs, or ``all``."""
    return None if text == "all" else whole_number("pairs", minimum=0)(text)


def add_input_output(command: argparse.ArgumentParser, written: str) -> None:
    """``IN`` and ``-o OUT`` of a command that reads an ``.h5ad`` file; ``written`` says
    what ``OUT`` is."""
    command.add_argument("input", metavar="IN", type=Path, help="the .h5ad file to read")
    command.add_argument(
        "-o", "--output", metavar="OUT", type=Path, required=True,
        help=f"{written} (replaced if it exists)",
    )  # fmt: skip


def add_stored_score(command: argparse.ArgumentParser) -> None:
    """Which stored score a command reads: ``--key``, ``--score``, ``--group``."""
    score = command.add_argument_group("which score")
    score.add_argument("--key", default="gv", help="the key_added of the run (default: gv)")
    score.add_argument("--score", metavar="NAME", help="another score of the key, e.g. pearson")
    score.add_argument("--group", metavar="G", help="the MI of this group of a groupby run")


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """Where the computation runs, and how much it says."""
    parser.add_argument(
        "--backend",
        choices=get_literal_vals(Backend),
        default=get_literal_vals(Backend)[0],
        help="the MI kernel (default: auto, the fastest usable; see 'geneverse info')",
    )
    parser.add_argument("--device", help="the torch device of the gpu backend, such as cuda or cpu")
    parser.add_argument(
        "--n-jobs", metavar="N", type=n_jobs, help="threads (default: all cores; -1: all)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")


def configure(args: argparse.Namespace) -> None:
    """Verbosity, and a plotting backend that needs no display."""
    import matplotlib

    from .._settings import settings

    matplotlib.use("Agg")
    if getattr(args, "quiet", False):
        settings.verbosity = 0


# --- files ----------------------------------------------------------------------------------


def check_input(path: Path) -> None:
    """``path`` must be a readable file."""
    if not path.exists():
        raise Failure(f"{path}: no such file.")
    if not path.is_file():
        raise Failure(f"{path} is not a file; give the path of an .h5ad file.")
    if not os.access(path, os.R_OK):
        raise Failure(f"{path}: permission denied (the file cannot be read).")


def check_outputs(source: Path | None, outputs: dict[str, Path | None], *, force: bool) -> None:
    """The outputs (by option) must be writable files, none the input (unless ``-o`` and
    ``force``), no two the same file."""
    seen: dict[Path, str] = {}
    for option, path in outputs.items():
        if path is None:
            continue
        if source is not None and same_file(path, source) and not (option == "-o" and force):
            extra = ", or pass --force to replace it" if option == "-o" else ""
            raise UsageError(f"{option} {path} is the input file; choose another path{extra}.")
        resolved = path.resolve()
        if resolved in seen:
            raise UsageError(
                f"{seen[resolved]} and {option} are the same file ({path}); one would "
                "replace the other: give each output its own path."
            )
        seen[resolved] = option
        _check_writable(option, path)


def same_file(path: Path, other: Path) -> bool:
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


def read_h5ad(path: Path) -> AnnData:
    """An ``.h5ad`` file, in memory (a file that is not one is a :class:`Failure`)."""
    import anndata as ad

    from .. import _logging as logg

    started = logg.info(f"reading {path}")
    try:
        adata = ad.read_h5ad(path)
    except Exception as error:  # anndata and h5py raise many kinds for a file that is not .h5ad
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise Failure(f"{path} is not a readable .h5ad file ({reason}).") from error
    logg.info(f"    {adata.n_obs} cells × {adata.n_vars} genes", since=started)
    return adata


def write_h5ad(adata: AnnData, path: Path) -> None:
    """``adata`` to ``path``, completely or not at all."""
    from .. import _logging as logg

    started = logg.info(f"writing {path}")
    write_atomically(path, adata.write_h5ad)
    logg.info("    written", since=started)


def write_atomically(path: Path, write: Callable[[Path], Any]) -> None:
    """Write to a new file beside ``path``, then rename it to ``path``: all or nothing."""
    handle, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix
    )
    os.close(handle)
    temporary_path = Path(temporary)
    try:
        write(temporary_path)
        os.chmod(temporary_path, 0o666 & ~_umask())
        os.replace(temporary_path, path)
    except BaseException:
        temporary_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def names_from_file(path: Path, option: str) -> list[str]:
    """Gene names, one per line (blank lines and ``#`` comments skipped)."""
    check_input(path)
    names = [line.strip() for line in path.read_text().splitlines()]
    names = [name for name in names if name and not name.startswith("#")]
    if not names:
        raise Failure(f"{option} {path} lists no gene names (one per line).")
    return names
