"""gv.get.network (against a brute force), its igraph / networkx graphs, GraphML, the
``geneverse network`` and ``geneverse modules`` commands, and gv.pl.network."""

from __future__ import annotations

import subprocess

import anndata as ad
import igraph
import matplotlib
import networkx as nx
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import geneverse as gv

from conftest import assert_unchanged, snapshot

matplotlib.use("Agg")
import matplotlib.pyplot as plt

N_GENES = 24
UNUSED = [4, 19]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _scores(seed: int = 0) -> ad.AnnData:
    """A stored MI with p- and q-values: symmetric, ties, zeros, two unused genes, and a
    module column."""
    rng = np.random.default_rng(seed)
    upper = np.round(rng.normal(0, 0.5, size=(N_GENES, N_GENES)), 1)
    upper[rng.random(upper.shape) < 0.25] = 0.0
    mi = np.triu(upper, 1)
    mi = (mi + mi.T).astype(np.float32)
    q = np.triu(rng.random((N_GENES, N_GENES)), 1)
    q = (q + q.T).astype(np.float32)
    np.fill_diagonal(q, 1.0)
    used = np.ones(N_GENES, dtype=bool)
    used[UNUSED] = False
    for matrix, fill in ((mi, 0.0), (q, 1.0)):
        matrix[~used] = fill
        matrix[:, ~used] = fill
    adata = ad.AnnData(
        X=np.zeros((3, N_GENES), dtype=np.float32),
        var=pd.DataFrame(index=[f"g{i}" for i in range(N_GENES)]),
    )
    adata.varp["gv_mi"] = mi
    adata.varp["gv_pvals"] = (q / 2).astype(np.float32)
    adata.varp["gv_qvals"] = q
    adata.var["gv_used"] = used
    modules = np.where(np.arange(N_GENES) < 8, "M1", np.where(np.arange(N_GENES) < 14, "M2", None))
    adata.var["gv_module"] = pd.Categorical(modules, categories=["M1", "M2"])
    return adata


def brute_force(adata, *, min_score=0.0, sign=None, max_q=None, top_k=None, module=None):
    """Every pair i < j of used genes, filtered as documented, strongest first."""
    mi, q = np.asarray(adata.varp["gv_mi"]), np.asarray(adata.varp["gv_qvals"])
    p = np.asarray(adata.varp["gv_pvals"])
    used = np.flatnonzero(adata.var["gv_used"])
    chosen = [module] if isinstance(module, str) else module
    members = None if module is None else set(np.flatnonzero(adata.var["gv_module"].isin(chosen)))
    rows = []
    for i in used:
        for j in used:
            value = float(mi[i, j])
            if i >= j or value == 0 or abs(value) < min_score:
                continue
            if (sign is not None and np.sign(value) != sign) or (
                max_q is not None and q[i, j] > max_q
            ):
                continue
            if members is not None and not (i in members and j in members):
                continue
            rows.append((i, j, value))
    if top_k is not None:
        keep = set()
        for gene in {g for r in rows for g in r[:2]}:
            mine = [r for r in rows if gene in r[:2]]
            partner = [r[1] if r[0] == gene else r[0] for r in mine]
            ranked = sorted(zip(mine, partner, strict=True), key=lambda x: (-abs(x[0][2]), x[1]))
            keep |= {r[:2] for r, _ in ranked[:top_k]}
        rows = [r for r in rows if r[:2] in keep]
    rows.sort(key=lambda r: (-abs(r[2]), r[0], r[1]))
    names = adata.var_names
    return pd.DataFrame(
        {
            "source": pd.Series([names[i] for i, _, _ in rows], dtype=object),
            "target": pd.Series([names[j] for _, j, _ in rows], dtype=object),
            "mi": pd.Series([v for _, _, v in rows], dtype=np.float64),
            "pval": pd.Series([float(p[i, j]) for i, j, _ in rows], dtype=np.float64),
            "qval": pd.Series([float(q[i, j]) for i, j, _ in rows], dtype=np.float64),
        }
    )


FILTERS = [
    {},
    {"min_score": 0.45},
    {"sign": 1},
    {"sign": -1, "max_q": 0.5},
    {"top_k": 2},
    {"module": "M1"},
    {"module": ["M1", "M2"], "sign": 1, "top_k": 1},
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: ",".join(f) or "all")
@pytest.mark.parametrize("layout", ["dense", "sparse"])
def test_edges_equal_brute_force(filters, layout):
    adata = _scores()
    expected = brute_force(adata, **filters)
    if layout == "sparse":
        for key in ("gv_mi", "gv_pvals", "gv_qvals"):
            adata.varp[key] = sparse.csr_matrix(adata.varp[key])
    assert len(expected) > 0
    pd.testing.assert_frame_equal(gv.get.network(adata, **filters), expected)


def test_few_rows_at_a_time_give_the_same_edges(monkeypatch):
    adata = _scores(seed=3)
    monkeypatch.setattr("geneverse.get._network._BLOCK_ENTRIES", 30)
    pd.testing.assert_frame_equal(gv.get.network(adata), brute_force(adata))


def test_columns_follow_the_score():
    adata = _scores()
    del adata.varp["gv_pvals"], adata.varp["gv_qvals"]
    assert list(gv.get.network(adata).columns) == ["source", "target", "mi"]
    adata.varp["gvp_pearson"] = adata.varp.pop("gv_mi")
    adata.var["gvp_used"] = adata.var.pop("gv_used")
    adata.uns["gvp"] = {"params": {"method": "pearson"}}
    assert list(gv.get.network(adata, "gvp").columns) == ["source", "target", "pearson"]
    assert list(gv.get.network(adata, "gvp", score="pearson").columns)[2] == "pearson"
    assert list(gv.get.network(adata, score="gvp_pearson").columns)[2] == "gvp_pearson"


def test_pbmc_network_of_a_real_run(pbmc):
    adata = pbmc.raw.to_adata()[:, :60].copy()
    gv.tl.coexpression(adata, zeros="include", estimator="miller_madow", pvals=True)
    edges = gv.get.network(adata, max_q=0.05, sign=1)
    assert len(edges) > 0
    assert (edges["qval"] <= 0.05).all() and (edges["mi"] > 0).all()
    assert edges["mi"].is_monotonic_decreasing
    positions = (
        adata.var_names.get_indexer(edges["source"]),
        adata.var_names.get_indexer(edges["target"]),
    )
    assert (positions[0] < positions[1]).all()  # each unordered pair once, source first
    np.testing.assert_array_equal(edges["mi"], adata.varp["gv_mi"][positions].astype(np.float64))
    np.testing.assert_array_equal(
        edges["qval"], adata.varp["gv_qvals"][positions].astype(np.float64)
    )


@pytest.mark.parametrize("convert", ["igraph", "networkx"])
def test_graphs_have_exactly_the_edges_and_weights(convert):
    adata = _scores()
    edges = gv.get.network(adata, sign=1)
    graph = gv.get.to_igraph(edges) if convert == "igraph" else gv.get.to_networkx(edges)
    expected = {
        frozenset(pair): (mi, pval, qval)
        for *pair, mi, pval, qval in edges.itertuples(index=False, name=None)
    }
    if convert == "igraph":
        assert isinstance(graph, igraph.Graph) and not graph.is_directed()
        names = graph.vs["name"]
        found = {
            frozenset((names[e.source], names[e.target])): (e["mi"], e["pval"], e["qval"])
            for e in graph.es
        }
        weights = dict(zip(found, graph.es["weight"], strict=True))
        assert graph.ecount() == len(edges)
    else:
        assert isinstance(graph, nx.Graph) and not graph.is_directed()
        found = {
            frozenset((a, b)): (d["mi"], d["pval"], d["qval"]) for a, b, d in graph.edges(data=True)
        }
        weights = {frozenset((a, b)): w for a, b, w in graph.edges(data="weight")}
        assert graph.number_of_edges() == len(edges)
    assert found == expected
    assert weights == {pair: values[0] for pair, values in expected.items()}
    genes = set(edges["source"]) | set(edges["target"])
    nodes = set(graph.vs["name"]) if convert == "igraph" else set(graph.nodes)
    assert nodes == genes


def test_graphs_from_the_anndata_and_another_weight():
    adata = _scores()
    graph = gv.get.to_networkx(adata, max_q=0.3, weight="qval")
    edges = gv.get.network(adata, max_q=0.3)
    assert graph.number_of_edges() == len(edges)
    for row in edges.itertuples():
        assert graph.edges[row.source, row.target]["weight"] == row.qval
    assert gv.get.to_igraph(adata, top_k=1).ecount() == len(gv.get.network(adata, top_k=1))


def test_graphml_reads_back(tmp_path):
    adata = _scores()
    edges = gv.get.network(adata)
    path = tmp_path / "network.graphml"
    nx.write_graphml(gv.get.to_networkx(edges), path)
    back = nx.read_graphml(path)
    assert back.number_of_edges() == len(edges)
    for row in edges.itertuples():
        assert back.edges[row.source, row.target]["mi"] == pytest.approx(row.mi)


def test_graph_of_an_edge_list_refuses_repeated_pairs_and_options():
    edges = gv.get.network(_scores())
    twice = pd.concat(
        [edges, edges.iloc[[0]].rename(columns={"source": "target", "target": "source"})]
    )
    for convert in (gv.get.to_igraph, gv.get.to_networkx):
        with pytest.raises(ValueError, match="lists a pair twice"):
            convert(twice)
        with pytest.raises(TypeError, match=r"options of gv\.get\.network"):
            convert(edges, max_q=0.1)
        with pytest.raises(ValueError, match="'source' and 'target'"):
            convert(edges.rename(columns={"source": "from"}))


def test_result_survives_h5ad(tmp_path):
    adata = _scores()
    adata.varp["gv_mi"] = sparse.csr_matrix(adata.varp["gv_mi"])
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    pd.testing.assert_frame_equal(
        gv.get.network(back, module="M2"), gv.get.network(adata, module="M2")
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"key": "nope"}, r"run gv\.tl\.coexpression\(adata, key_added='nope'\)"),
        ({"score": "spearman"}, r"score='spearman' is not stored"),
        ({"max_q": 2.0}, r"max_q=2.0 is not a q-value bound"),
        ({"module": "M9"}, r"\['M9'\] not in adata.var\['gv_module'\]"),
        ({"module": "M1", "module_key": "cluster"}, r"module_key='cluster' is not a column"),
        ({"sign": 0}, r"sign must be 1 .*-1"),
        ({"top_k": 0}, r"top_k=0 is out of range"),
        ({"min_score": -1.0}, r"min_score=-1.0 is a bound on \|score\|"),
        ({"group": "B"}, r"needs a run with groups"),
    ],
)
def test_bad_input_raises_and_changes_nothing(kwargs, match):
    adata = _scores()
    before = snapshot(adata)
    with pytest.raises(ValueError, match=match):
        gv.get.network(adata, **kwargs)
    assert_unchanged(before, adata)


def test_max_q_without_q_values_says_how_to_get_them():
    adata = _scores()
    del adata.varp["gv_qvals"]
    before = snapshot(adata)
    with pytest.raises(ValueError, match=r"needs q-values.*pvals=True"):
        gv.get.network(adata, max_q=0.05)
    with pytest.raises(ValueError, match=r"needs q-values.*pvals=True"):
        gv.tl.modules(adata, max_q=0.05)
    assert_unchanged(before, adata)


# --- the command line ------------------------------------------------------------------------


def _run(capsys, *args) -> subprocess.CompletedProcess:
    from geneverse.cli import main

    capsys.readouterr()
    try:
        status = main([str(arg) for arg in args])
    except SystemExit as exit_:
        status = exit_.code
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, status, captured.out, captured.err)


@pytest.fixture
def scored_h5ad(tmp_path):
    path = tmp_path / "scored.h5ad"
    _scores().write_h5ad(path)
    return path


@pytest.mark.parametrize(("suffix", "separator"), [(".tsv", "\t"), (".csv", ",")])
def test_cli_network_writes_the_table(capsys, scored_h5ad, tmp_path, suffix, separator):
    out = tmp_path / f"edges{suffix}"
    result = _run(capsys, "network", scored_h5ad, "-o", out, "--max-q", "0.5", "--top-k", "2",
                  "--positive")  # fmt: skip
    assert result.returncode == 0, result.stderr
    expected = gv.get.network(_scores(), max_q=0.5, top_k=2, sign=1)
    table = pd.read_csv(out, sep=separator)
    pd.testing.assert_frame_equal(table[["source", "target"]], expected[["source", "target"]])
    np.testing.assert_allclose(table["mi"], expected["mi"], rtol=1e-6)
    assert f"wrote {len(expected)} edges" in result.stdout


def test_cli_network_graphml_reads_back(capsys, scored_h5ad, tmp_path):
    out = tmp_path / "graph.graphml"
    result = _run(capsys, "network", scored_h5ad, "-o", out, "--module", "M1", "--module", "M2")
    assert result.returncode == 0, result.stderr
    back = nx.read_graphml(out)
    expected = gv.get.network(_scores(), module=["M1", "M2"])
    assert back.number_of_edges() == len(expected)
    for row in expected.itertuples():
        assert back.edges[row.source, row.target]["weight"] == pytest.approx(row.mi)


def test_cli_network_errors_are_one_line(capsys, scored_h5ad, tmp_path):
    result = _run(capsys, "network", scored_h5ad, "-o", tmp_path / "edges.xlsx")
    assert result.returncode == 2 and "unknown format '.xlsx'" in result.stderr
    result = _run(capsys, "network", scored_h5ad, "-o", tmp_path / "e.tsv", "--key", "nope")
    assert result.returncode == 1 and "key_added='nope'" in result.stderr
    assert not (tmp_path / "e.tsv").exists()


def test_cli_modules_writes_modules_and_scores(capsys, pbmc, tmp_path):
    adata = pbmc.raw.to_adata()[:, :120].copy()
    gv.tl.coexpression(adata, zeros="include", estimator="miller_madow")
    source, out = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    adata.write_h5ad(source)
    result = _run(capsys, "modules", source, "-o", out, "--scores", "--min-size", "3")
    assert result.returncode == 0, result.stderr
    back = ad.read_h5ad(out)
    gv.tl.modules(adata, min_size=3)
    pd.testing.assert_series_equal(back.var["gv_module"], adata.var["gv_module"])
    scores = back.obsm["gv_module_scores"]
    assert list(scores.columns) == list(adata.var["gv_module"].cat.categories)
    assert "modules of" in result.stdout and "M1 (" in result.stdout


def test_cli_modules_without_a_score(capsys, tmp_path):
    source = tmp_path / "in.h5ad"
    ad.AnnData(X=np.ones((3, 4), dtype=np.float32)).write_h5ad(source)
    result = _run(capsys, "modules", source, "-o", tmp_path / "out.h5ad")
    assert result.returncode == 1 and "gv.tl.coexpression" in result.stderr
    assert not (tmp_path / "out.h5ad").exists()


# --- gv.pl.network ----------------------------------------------------------------------------


def test_plot_draws_the_strongest_edges_of_a_module():
    adata = _scores()
    ax = gv.pl.network(adata, module="M1", n_edges=6, show=False)
    expected = gv.get.network(adata, module="M1").head(6)
    edges = ax.collections[0]  # the edges, then the vertices
    assert len(edges.get_paths()) == len(expected)
    widths = edges.get_linewidths()
    strongest = np.argmax(np.abs(expected["mi"].to_numpy()))
    assert widths[strongest] == max(widths)
    labels = {text.get_text() for text in ax.texts}
    assert labels == set(expected["source"]) | set(expected["target"])
    assert ax.get_title() == "The 6 strongest edges of module M1"


def test_plot_colours_edges_by_sign():
    adata = _scores()
    ax = gv.pl.network(adata, n_edges=10, show=False)
    expected = gv.get.network(adata).head(10)
    colours = ax.collections[0].get_edgecolors()
    reds = colours[:, 0] > colours[:, 2]
    assert set(reds) == {True, False}
    graph = gv.get.to_networkx(expected)
    signs = np.sign([w for _, _, w in graph.edges(data="weight")])
    np.testing.assert_array_equal(reds, signs > 0)


def test_plot_conventions_and_errors():
    adata = _scores()
    _, (_, right) = plt.subplots(1, 2)
    assert gv.pl.network(adata, ax=right, show=False) is right
    assert isinstance(gv.pl.network(adata, return_fig=True), matplotlib.figure.Figure)
    with pytest.raises(ValueError, match="No edge between genes of module 'M2'"):
        gv.pl.network(adata, module="M2", max_q=1e-9, show=False)
