"""``geneverse network`` and ``geneverse modules``: gene networks of an ``.h5ad`` file with a
stored score (from ``geneverse coexpression``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import (
    Failure,
    UsageError,
    add_input_output,
    add_stored_score,
    check_input,
    check_outputs,
    configure,
    number,
    read_h5ad,
    whole_number,
    write_atomically,
    write_h5ad,
)

if TYPE_CHECKING:
    import pandas as pd
    from anndata import AnnData

#: Edge-list formats by file suffix: the column separator of each table, or GraphML.
_TABLES = {".tsv": "\t", ".txt": "\t", ".csv": ","}
_GRAPHML = ".graphml"
_SHOWN_GENES = 8


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``network`` and ``modules`` to the ``geneverse`` command."""
    _add_network(commands)
    _add_modules(commands)


def _add_network(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser(
        "network",
        help="write the edges of a stored score as a table (.tsv, .csv) or a graph (.graphml)",
        description="Write the gene pairs of a score stored in IN (by 'geneverse "
        "coexpression', or gv.tl.differential_coexpression) as an edge list: source, "
        "target, the score, and pval, qval when stored; strongest first. OUT ending in "
        ".tsv, .txt or .csv is a table, .graphml a graph for Cytoscape, Gephi, igraph or "
        "networkx. The options are those of geneverse.get.network.",
    )
    add_input_output(command, "the file to write: edges.tsv, edges.csv or graph.graphml")
    add_stored_score(command)
    edges = command.add_argument_group("which edges")
    edges.add_argument(
        "--min-score", metavar="X", type=number, default=0.0,
        help="only pairs with |score| >= X (default: 0, every pair whose score is not 0)",
    )  # fmt: skip
    edges.add_argument(
        "--max-q", metavar="Q", type=number, help="only pairs with q-value <= Q (needs --pvals)"
    )
    edges.add_argument(
        "--top-k", metavar="K", type=whole_number("edges", 1),
        help="only pairs among the K strongest of either of their genes",
    )  # fmt: skip
    edges.add_argument(
        "--module", metavar="M", action="append",
        help="only pairs between genes of module M (repeat for several); see "
        "'geneverse modules'",
    )  # fmt: skip
    edges.add_argument(
        "--module-key", metavar="COLUMN", default="gv_module",
        help="the var column of modules (default: gv_module)",
    )  # fmt: skip
    sign = edges.add_mutually_exclusive_group()
    sign.add_argument("--positive", action="store_true", help="only positive scores")
    sign.add_argument("--negative", action="store_true", help="only negative scores")
    command.add_argument("--force", action="store_true", help="allow OUT to be IN")
    command.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    command.set_defaults(run=run_network)


def _add_modules(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser(
        "modules",
        help="find gene modules in a stored score and write them (var['gv_module'])",
        description="Find gene modules, communities of co-expressed genes in the graph of "
        "a score stored in IN (by 'geneverse coexpression'; rank with --zeros include "
        "--estimator miller_madow --pvals), and write IN with var['gv_module'] (and, with "
        "--scores, each cell's module scores in obsm['gv_module_scores']) to OUT. The "
        "options are those of geneverse.tl.modules.",
    )
    add_input_output(command, "the .h5ad file to write")
    add_stored_score(command)
    graph = command.add_argument_group("the graph and its communities")
    graph.add_argument(
        "--max-q", metavar="Q", type=number,
        help="only edges with q-value <= Q (default: 0.01 when q-values are stored)",
    )  # fmt: skip
    graph.add_argument(
        "--n-neighbors", metavar="K", type=_n_neighbors, default=10,
        help="edges kept per gene, or 'all' (default: 10)",
    )  # fmt: skip
    graph.add_argument(
        "--resolution", metavar="R", type=number, default=1.0,
        help="Leiden's resolution: higher gives more, smaller modules (default: 1.0)",
    )  # fmt: skip
    graph.add_argument(
        "--min-size", metavar="N", type=whole_number("genes", 1), default=5,
        help="the fewest genes of a module (default: 5)",
    )  # fmt: skip
    graph.add_argument(
        "--min-membership", metavar="F", type=number, default=0.2,
        help="a gene stays in its community when its mean edge weight there is at least F "
        "times the community's median (default: 0.2)",
    )  # fmt: skip
    graph.add_argument(
        "--random-state", metavar="SEED", type=whole_number("a seed", 0), default=0,
        help="seed of the Leiden algorithm (default: 0)",
    )  # fmt: skip
    output = command.add_argument_group("what is written")
    output.add_argument(
        "--key-added", metavar="KEY", default="gv_module",
        help="the var column written (default: gv_module)",
    )  # fmt: skip
    output.add_argument(
        "--scores", action="store_true",
        help="also score every cell for each module (obsm['<key-added>_scores'])",
    )  # fmt: skip
    output.add_argument("--force", action="store_true", help="allow OUT to be IN")
    command.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    command.set_defaults(run=run_modules)


def _n_neighbors(text: str) -> int | None:
    return None if text == "all" else whole_number("edges per gene", 1)(text)


# --- the commands -------------------------------------------------------------------------


def run_network(args: argparse.Namespace) -> None:
    """``geneverse network IN -o OUT``."""
    from ..get import network

    configure(args)
    check_input(args.input)
    suffix = args.output.suffix.lower()
    if suffix not in (*_TABLES, _GRAPHML):
        raise UsageError(
            f"-o {args.output}: unknown format {args.output.suffix!r}; end the name with "
            ".tsv, .csv (a table) or .graphml (a graph)."
        )
    check_outputs(args.input, {"-o": args.output}, force=args.force)
    adata = read_h5ad(args.input)
    edges = network(adata, args.key, **_network_options(args))
    if suffix == _GRAPHML:
        _write_graphml(edges, args.output)
    else:
        separator = _TABLES[suffix]
        write_atomically(
            args.output,
            lambda tmp: edges.to_csv(tmp, sep=separator, index=False, float_format="%.7g"),
        )
    if not args.quiet:
        n_genes = len(set(edges["source"]) | set(edges["target"]))
        print(f"wrote {len(edges):,} edges between {n_genes:,} genes to {args.output}")
        if len(edges):
            print(edges.head(10).to_string(index=False))


def _network_options(args: argparse.Namespace) -> dict[str, Any]:
    sign = 1 if args.positive else -1 if args.negative else None
    return {
        "score": args.score,
        "group": args.group,
        "min_score": args.min_score,
        "max_q": args.max_q,
        "top_k": args.top_k,
        "module": args.module,
        "module_key": args.module_key,
        "sign": sign,
    }


def _write_graphml(edges: pd.DataFrame, path: Path) -> None:
    import networkx

    from ..get import to_networkx

    graph = to_networkx(edges)
    write_atomically(path, lambda tmp: networkx.write_graphml(graph, tmp))


def run_modules(args: argparse.Namespace) -> None:
    """``geneverse modules IN -o OUT``."""
    from ..tl import module_scores, modules

    configure(args)
    check_input(args.input)
    check_outputs(args.input, {"-o": args.output}, force=args.force)
    adata = read_h5ad(args.input)
    modules(
        adata,
        args.key,
        score=args.score,
        group=args.group,
        max_q=args.max_q,
        n_neighbors=args.n_neighbors,
        resolution=args.resolution,
        min_size=args.min_size,
        min_membership=args.min_membership,
        random_state=args.random_state,
        key_added=args.key_added,
    )
    found = adata.var[args.key_added].cat.categories
    if args.scores:
        if not len(found):
            raise Failure("no module was found, so there is nothing to score; drop --scores.")
        module_scores(adata, args.key_added, key_added=f"{args.key_added}_scores")
    write_h5ad(adata, args.output)
    if not args.quiet:
        _print_modules(adata, args.key_added, args.output)


def _print_modules(adata: AnnData, key: str, path: Path) -> None:
    column = adata.var[key]
    sizes = column.value_counts(sort=False)
    print(f"{len(sizes)} modules of {int(sizes.sum())} of {adata.n_vars} genes:")
    for name, size in sizes.items():
        genes = list(column.index[column == name][:_SHOWN_GENES])
        more = ", ..." if size > len(genes) else ""
        print(f"  {name} ({size} genes): {', '.join(map(str, genes))}{more}")
    print(f"wrote {path}")
