"""The documentation builds without a single warning, and shows what the tutorial ran."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sphinx")
pytest.importorskip("myst_parser")
pytest.importorskip("sphinx_book_theme")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> Path:
    """``sphinx-build -W -b html`` of a copy of docs/ (the source tree stays untouched)."""
    work = tmp_path_factory.mktemp("docs")
    source = work / "docs"
    shutil.copytree(DOCS, source, ignore=shutil.ignore_patterns("_build", "generated"))
    for included in ("CHANGELOG.md", "benchmarks/RESULTS.md"):  # {include} ../NAME
        (work / included).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / included, work / included)
    out = work / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q",
         str(source), str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    assert result.stderr.strip() == "", result.stderr
    return out


def test_every_page_is_built(html):
    pages = ("index", "installation", "tutorial", "scores", "cli", "api", "backends")
    for page in (*pages, "changelog"):
        assert (html / f"{page}.html").is_file(), page


def test_api_reference_lists_the_public_functions(html):
    for name in (
        "geneverse.pp.filter_entropy",
        "geneverse.tl.coexpression",
        "geneverse.pl.mi_heatmap",
        "geneverse.get.mi_pairs",
        "geneverse.backends",
        "geneverse.settings",
        "geneverse.print_versions",
    ):
        page = html / "generated" / f"{name}.html"
        assert page.is_file(), name
    text = (html / "generated" / "geneverse.pl.mi_heatmap.html").read_text()
    assert "gene_symbols" in text and "return_fig" in text


def test_tutorial_figures_exist_and_are_shown(html):
    text = (html / "tutorial.html").read_text()
    for figure in ("tutorial_heatmap.png", "tutorial_modules.png", "tutorial_umap.png"):
        assert (DOCS / "_static" / figure).is_file(), figure
        assert figure in text, figure
    assert "mi_heatmap" in text and "score_genes" in text  # code from make_figures.py
    assert "CYTL1" in text  # a real printed table, from docs/_static/tutorial_pairs.txt


def test_changelog_and_benchmarks_are_included(html):
    changelog = (ROOT / "CHANGELOG.md").read_text().splitlines()[0].lstrip("# ").strip()
    assert changelog in (html / "changelog.html").read_text()
    assert (html / "backends.html").is_file()
