"""Every option means one thing for every method, each choice is spelled once, every
message goes through the ``geneverse`` logger, and the public API only grows."""

from __future__ import annotations

import ast
import inspect
import logging
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
from scipy import sparse

import geneverse as gv
from geneverse._utils import Backend, Estimator, Method, Zeros, get_literal_vals
from geneverse.tl._coexpression._options import RULES

SRC = Path(gv.__file__).parent
METHODS = get_literal_vals(Method)


@pytest.fixture(scope="module")
def adata(pbmc) -> ad.AnnData:
    """60 genes of pbmc68k: X scaled (refused), .raw log-normalized, a counts layer."""
    small = pbmc[:, :60].copy()
    small.layers["counts"] = sparse.csr_matrix(np.expm1(small.raw[:, small.var_names].X))
    counts = small.layers["counts"].toarray()
    rolled = np.stack([np.roll(counts[:, g], 7 * g) for g in range(small.n_vars)], axis=1)
    small.layers["other"] = sparse.csr_matrix(rolled)  # each gene's cells moved its own way
    small.obs["half"] = np.where(np.arange(small.n_obs) % 2 == 0, "a", "b")
    small.var["first"] = np.arange(small.n_vars) < 30
    return small


def _stored(result: ad.AnnData) -> dict[str, object]:
    return {f"varp/{k}": v for k, v in result.varp.items()} | {
        f"var/{k}": result.var[k].to_numpy() for k in result.var.columns
    }


def _same(a: dict[str, object], b: dict[str, object]) -> bool:
    if set(a) != set(b):
        return False
    for name, value in a.items():
        other = b[name]
        if sparse.issparse(value) != sparse.issparse(other):
            return False
        if sparse.issparse(value):
            if value.shape != other.shape or (value != other).nnz:
                return False
        elif not np.array_equal(np.asarray(value), np.asarray(other)):
            return False
    return True


#: For each option: a value away from its default, and how it changes the result as its
#: docstring says (``None``: the result is documented to stay the same).
Check = Callable[[dict, dict, ad.AnnData], bool] | None
CHANGES: dict[str, tuple[object, Check]] = {
    "layer": ("other", lambda base, got, r: not _same(base, got)),
    "use_raw": (False, None),  # X is scaled: refused (negative values), named
    "genes": ("first", lambda base, got, r: r.var["gv_used"].sum() == 30),
    "against": (
        [5, 40],
        lambda base, got, r: any(sparse.issparse(v) for v in got.values()),
    ),
    "groupby": ("half", lambda base, got, r: any(k.endswith("_a") for k in got)),
    "top_k": (3, lambda base, got, r: any(sparse.issparse(v) for v in got.values())),
    "n_bins": (4, lambda base, got, r: not _same(base, got)),
    "signed": (False, lambda base, got, r: not _same(base, got)),
    "estimator": ("miller_madow", lambda base, got, r: not _same(base, got)),
    "zeros": ("include", lambda base, got, r: not _same(base, got)),
    "pvals": (True, lambda base, got, r: "varp/gv_pvals" in got and "varp/gv_qvals" in got),
    "n_permutations": (3, lambda base, got, r: "varp/gv_pvals" in got),
    "random_state": (7, None),  # only with n_permutations: refused here, named
    "cache": (False, lambda base, got, r: _same(base, got)),
    "backend": ("numpy", lambda base, got, r: _same(base, got)),
    "device": ("cpu", lambda base, got, r: _same(base, got)),  # the torch kernel on the CPU
    "n_jobs": (1, lambda base, got, r: _same(base, got)),
    "key_added": ("other", lambda base, got, r: any(k.startswith("varp/other_") for k in got)),
    "copy": (False, None),  # returns None and writes into the AnnData: checked apart
}


def test_every_option_has_a_case():
    options = set(inspect.signature(gv.tl.coexpression).parameters) - {"adata", "method"}
    assert set(CHANGES) == options  # the method is the other axis of the walk


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("option", [name for name in CHANGES if name != "copy"])
def test_each_option_changes_the_result_or_is_refused_by_name(adata, method, option):
    value, check = CHANGES[option]
    base = gv.tl.coexpression(adata, method=method, use_raw=True, copy=True)
    before = _stored(adata)
    arguments = {"method": method, "use_raw": True, option: value}
    if option == "layer":
        arguments.pop("use_raw")
    try:
        result = gv.tl.coexpression(adata, copy=True, **arguments)
    except (ValueError, TypeError) as error:
        assert option in str(error), (option, str(error))
        assert _same(before, _stored(adata))
        return
    assert check is not None, f"{option}={value!r} with method={method!r} should be refused"
    assert check(_stored(base), _stored(result), result), (option, method)


@pytest.mark.parametrize("method", METHODS)
def test_copy_false_writes_in_place(adata, method):
    target = adata.copy()
    assert gv.tl.coexpression(target, method=method, use_raw=True) is None
    key = "gv_mi" if method == "mi" else f"gv_{method}"
    assert key in target.varp and "gv" in target.uns


def test_the_rules_name_only_real_options():
    options = set(inspect.signature(gv.tl.coexpression).parameters)
    assert {rule.option for rule in RULES} <= options


# --------------------------------------------------------------------------------------------
# Each choice spelled once; one gene lookup
# --------------------------------------------------------------------------------------------

CHOICES = {
    value for choices in (Backend, Method, Estimator, Zeros) for value in get_literal_vals(choices)
}


#: Where a string that happens to equal a choice is not a choice: arguments of other
#: libraries (``aspect="auto"`` of matplotlib) and the package names of ``print_versions``.
CHOICE_ARGUMENTS = {"backend", "method", "estimator", "zeros"}
NOT_CHOICES = {"_MAIN_PACKAGES"}


def _string_constants(tree: ast.AST) -> list[ast.Constant]:
    """String constants that are not docstrings, nor another library's keyword argument,
    nor package names."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                skipped.add(id(body[0].value))
        if isinstance(node, ast.keyword) and node.arg not in CHOICE_ARGUMENTS:
            skipped.add(id(node.value))
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id in NOT_CHOICES for target in node.targets
        ):
            skipped.update(id(item) for item in ast.walk(node.value))
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in skipped
    ]


def test_each_choice_is_spelled_once_in_src():
    """A backend, method, estimator or zeros choice appears as a string only in the one
    Literal that defines it; everything else uses the constants unpacked from it."""
    stray = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in _string_constants(tree):
            if node.value in CHOICES and path.name != "_utils.py":
                stray.append(f"{path.relative_to(SRC)}:{node.lineno}: {node.value!r}")
    assert not stray, "\n".join(stray)
    spelled = [
        node.value
        for node in _string_constants(ast.parse((SRC / "_utils.py").read_text()))
        if node.value in CHOICES
    ]
    assert sorted(spelled) == sorted(CHOICES)  # and there, once each


def test_one_gene_lookup_serves_tl_pl_get_and_the_cli():
    """User-given gene names are looked up in one module; nothing else indexes var_names."""
    lookups = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text()
        for number, line in enumerate(text.splitlines(), 1):
            if "get_indexer(" in line or "var_names.get_loc(" in line:
                lookups.append(f"{path.relative_to(SRC)}:{number}")
    allowed = {"_data/_genes.py", "_data/_matrix.py"}  # _matrix: var_names of .raw only
    assert {entry.split(":")[0] for entry in lookups} <= allowed, lookups
    for module in ("tl/_coexpression/_plan.py", "pl/_heatmap.py", "get/_pairs.py"):
        assert "_data._genes import" in (SRC / module).read_text(), module


def test_nothing_in_the_product_mentions_the_design_card():
    root = SRC.parent.parent
    found = [
        str(path.relative_to(root))
        for folder in ("src", "src_rust")
        for path in (root / folder).rglob("*")
        if path.is_file() and path.suffix in {".py", ".rs", ".pyi"} and "DESIGN" in path.read_text()
    ]
    assert not found, found


# --------------------------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------------------------


@pytest.fixture
def records():
    """Every record of the ``geneverse`` logger."""
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = Keep()
    logger = logging.getLogger("geneverse")
    logger.addHandler(handler)
    yield seen
    logger.removeHandler(handler)


def test_the_logger_receives_every_message_printed(adata, capsys, records, tmp_path):
    gv.settings.verbosity = "debug"
    gv.settings.cache_dir = tmp_path
    gv.tl.coexpression(adata, use_raw=True, top_k=4)
    gv.tl.coexpression(adata, use_raw=True, top_k=4)  # from the cache
    gv.pp.filter_entropy(adata.copy(), use_raw=False, layer="counts")
    printed = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    logged = [line for record in records for line in record.getMessage().splitlines()]
    assert printed and printed == logged
    assert any("loaded from the cache" in line for line in logged)


def test_verbosity_0_prints_nothing(adata, capsys, tmp_path):
    gv.settings.verbosity = 0
    gv.settings.cache_dir = tmp_path / "not-a-dir"
    (tmp_path / "not-a-dir").write_text("a file where the cache should be")  # a warning
    gv.tl.coexpression(adata, use_raw=True)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_verbosity_sets_the_logger_level():
    logger = logging.getLogger("geneverse")
    for verbosity, level in enumerate(
        (logging.ERROR, logging.WARNING, logging.INFO, logging.INFO - 5, logging.DEBUG)
    ):
        gv.settings.verbosity = verbosity
        assert logger.level == level
    with pytest.raises(ValueError, match="verbosity"):
        gv.settings.verbosity = "loud"


# --------------------------------------------------------------------------------------------
# The public API only grows
# --------------------------------------------------------------------------------------------

#: The public names and parameters of geneverse 0.1 (commit 1d7de96).
SURFACE_0_1 = {
    "": ["__version__", "backends", "get", "pl", "pp", "print_versions", "settings", "tl"],
    "pp.filter_entropy": ["adata", "min_entropy", "layer", "use_raw", "inplace", "key_added"],
    "tl.coexpression": [
        "adata", "layer", "use_raw", "genes", "against", "groupby", "top_k", "n_bins",
        "signed", "method", "estimator", "zeros", "pvals", "n_permutations", "random_state",
        "cache", "backend", "device", "n_jobs", "key_added", "copy",
    ],
    "pl.mi_heatmap": [
        "adata", "genes", "key", "group", "n_genes", "cluster", "gene_symbols", "cmap", "ax",
        "show", "return_fig",
    ],
    "get.mi_pairs": ["adata", "key", "n", "gene", "group"],
    "settings": ["backend", "cache_dir", "n_jobs", "verbosity"],
}  # fmt: skip


def test_no_public_name_of_0_1_changed():
    assert set(SURFACE_0_1[""]) <= set(gv.__all__)
    for path, names in SURFACE_0_1.items():
        if not path:
            continue
        if path == "settings":
            assert set(names) <= set(dir(gv.settings))
            continue
        module, name = path.split(".")
        function = getattr(getattr(gv, module), name)
        assert name in getattr(gv, module).__all__
        parameters = list(inspect.signature(function).parameters)
        assert parameters[: len(names)] == names or set(names) <= set(parameters), path
