"""The result cache: keys, hits, misses, corrupt files, its bound and concurrent writers."""

from __future__ import annotations

import logging
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

import geneverse as gv
from geneverse._data._matrix import matrix_digest, used_columns
from geneverse.cli import main
from geneverse.tl._coexpression import _cache

BIG = 1 << 40  # a bound that never evicts
PARTS = {"n_bins": 10, "signed": True, "estimator": "plugin", "genes": None, "tol": 0.5}


def _data() -> sparse.csr_matrix:
    return sparse.random(50, 4, density=0.3, format="csr", random_state=0, dtype=np.float32)


def _digest(data=None) -> str:
    data = _data() if data is None else data
    return matrix_digest(used_columns(data, np.arange(data.shape[1])))


def _key(data=None, parts=PARTS, version="1.0.0") -> str:
    return _cache.cache_key(_digest(data), parts, version=version)


def _result(seed: int = 0, size: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mi = rng.random((size, size)).astype(np.float32)
    return {"mi": mi + mi.T, "n_bins": np.arange(size, dtype=np.int32), "used": np.ones(size, bool)}


def _assert_same(loaded: dict[str, np.ndarray], saved: dict[str, np.ndarray]) -> None:
    assert loaded is not None and set(loaded) == set(saved)
    for name, array in saved.items():
        array = np.asarray(array)
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape, name
        np.testing.assert_array_equal(loaded[name], array, strict=True)


def _stored_bytes(folder: Path) -> int:
    return sum(entry.size for entry in _cache.stored_results(folder))


@pytest.fixture
def warnings_seen(caplog):
    """The warnings logged by geneverse (its logger does not propagate: attach to it)."""
    logger = logging.getLogger("geneverse")
    logger.addHandler(caplog.handler)
    gv.settings.verbosity = "warning"
    yield lambda: [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    logger.removeHandler(caplog.handler)


# --------------------------------------------------------------------------------------------
# Hits, misses, round trips
# --------------------------------------------------------------------------------------------


def test_hit_returns_exactly_what_was_saved(tmp_path):
    key = _key()
    assert _cache.load(key, cache_dir=tmp_path) is None  # a miss before
    saved = _result()
    path = _cache.save(key, saved, cache_dir=tmp_path, max_bytes=BIG)
    assert path == _cache.cache_path(key, tmp_path) and path.exists()
    _assert_same(_cache.load(key, cache_dir=tmp_path), saved)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_sparse_matrices_round_trip(tmp_path, fmt):
    matrix = sparse.random(30, 30, density=0.1, format=fmt, random_state=1, dtype=np.float32)
    key = _key()
    _cache.save(key, _cache.sparse_arrays("top", matrix), cache_dir=tmp_path, max_bytes=BIG)
    back = _cache.sparse_from_arrays("top", _cache.load(key, cache_dir=tmp_path))
    assert back.format == (fmt if fmt != "coo" else "csr")
    assert back.dtype == matrix.dtype and back.shape == matrix.shape
    assert (back != matrix).nnz == 0


def _with_duplicates() -> sparse.coo_matrix:
    """The same matrix as ``_data()``, one entry split into two halves plus explicit zeros."""
    coo = _data().tocoo()
    rows = np.concatenate([coo.row, coo.row[:1], coo.row[1:3]])
    cols = np.concatenate([coo.col, coo.col[:1], coo.col[1:3]])
    values = np.concatenate([coo.data, coo.data[:1], [0, 0]]).astype(np.float32)
    values[0] /= 2
    values[coo.nnz] = values[0]
    return sparse.coo_matrix((values, (rows, cols)), shape=coo.shape)


def test_equal_matrices_stored_differently_share_a_key():
    """The key is made of the matrix as scipy defines it: duplicates, order and explicit
    zeros do not change it, nor does the format."""
    messy = _with_duplicates()
    assert (messy.tocsr() != _data()).nnz == 0 and messy.nnz > _data().nnz
    for same in (messy, _data().tocsc(), sparse.csr_array(_data()), _data().toarray()):
        assert _key(data=same) == _key()


def _changed_values():
    data = _data()
    data.data[3] += 1e-6
    return data


MISSES = {
    "a changed value": lambda: _key(data=_changed_values()),
    "another dtype": lambda: _key(data=_data().astype(np.float64)),
    "another shape": lambda: _key(data=sparse.vstack([_data(), sparse.csr_matrix((1, 4))])),
    "a changed part": lambda: _key(parts=PARTS | {"n_bins": 5}),
    "a changed float": lambda: _key(parts=PARTS | {"tol": 0.5000000001}),
    "an int for a bool": lambda: _key(parts=PARTS | {"signed": 1}),
    "an added part": lambda: _key(parts=PARTS | {"zeros": "include"}),
    "a removed part": lambda: _key(parts={k: v for k, v in PARTS.items() if k != "tol"}),
    "a gene mask": lambda: _key(parts=PARTS | {"genes": np.array([True, False, True, True])}),
    "a new version": lambda: _key(version="1.0.1"),
}


@pytest.mark.parametrize("change", list(MISSES))
def test_any_change_misses(change, tmp_path, warnings_seen):
    _cache.save(_key(), _result(), cache_dir=tmp_path, max_bytes=BIG)
    other = MISSES[change]()
    assert other != _key()
    assert _cache.load(other, cache_dir=tmp_path) is None
    assert warnings_seen() == []  # a plain miss is silent


def test_default_version_is_the_package_version():
    assert _key(version=None) == _key(version=gv.__version__)


def test_parts_that_cannot_be_keyed_are_errors():
    for bad in ({"f": object()}, {"f": {1: 2}}, {"f": np.array([object()])}):
        with pytest.raises(TypeError):
            _key(parts=bad)
    with pytest.raises(TypeError, match="pickle"):
        _cache.save(_key(), {"genes": np.array(["a"], dtype=object)}, cache_dir=".", max_bytes=BIG)
    with pytest.raises(ValueError, match="cannot name"):
        _cache.save(_key(), {"__key__": np.zeros(1)}, cache_dir=".", max_bytes=BIG)
    with pytest.raises(ValueError, match="hex"):
        _cache.load("../../etc/passwd", cache_dir=".")


def test_disabled_cache_does_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _cache.save(_key(), _result(), cache_dir=None, max_bytes=BIG) is None
    assert _cache.load(_key(), cache_dir=None) is None
    assert list(tmp_path.iterdir()) == []


def test_default_cache_dir():
    from geneverse._settings import default_cache_dir

    assert default_cache_dir().name == "geneverse"


# --------------------------------------------------------------------------------------------
# The bound: least recently used results go first, large results are not stored
# --------------------------------------------------------------------------------------------


def test_the_cache_never_exceeds_its_bound(tmp_path):
    size = _cache.save(_key(), _result(size=40), cache_dir=tmp_path, max_bytes=BIG).stat().st_size
    bound = 5 * size
    for seed in range(30):
        key = _key(parts=PARTS | {"seed": seed})
        assert _cache.save(key, _result(seed, size=40), cache_dir=tmp_path, max_bytes=bound)
        assert _stored_bytes(tmp_path) <= bound
    assert len(_cache.stored_results(tmp_path)) == 5


def test_the_least_recently_used_result_goes_first(tmp_path):
    size = _cache.save(_key(), _result(size=40), cache_dir=tmp_path, max_bytes=BIG).stat().st_size
    bound = 4 * size  # four results fit (each within a quarter of the bound)
    keys = [_key(parts=PARTS | {"seed": seed}) for seed in range(5)]
    for seed, key in enumerate(keys[:4]):
        _cache.save(key, _result(seed, size=40), cache_dir=tmp_path, max_bytes=bound)
    assert _cache.load(keys[0], cache_dir=tmp_path) is not None  # now the most recent use
    _cache.save(keys[4], _result(4, size=40), cache_dir=tmp_path, max_bytes=bound)
    kept = [_cache.load(key, cache_dir=tmp_path) is not None for key in keys]
    assert kept == [True, False, True, True, True]


def test_a_result_larger_than_its_share_is_not_stored(tmp_path):
    path = _cache.save(_key(), _result(size=100), cache_dir=tmp_path, max_bytes=BIG)
    size = path.stat().st_size
    path.unlink()
    bound = int(size / _cache.MAX_SHARE) - 1
    assert _cache.save(_key(), _result(size=100), cache_dir=tmp_path, max_bytes=bound) is None
    assert _stored_bytes(tmp_path) == 0


def test_coexpression_respects_the_bound(tmp_path, pbmc):
    """Many calls of tl.coexpression with a small bound: never more than the bound."""
    gv.settings.cache_dir = tmp_path
    gv.settings.cache_max_bytes = 400_000
    adata = pbmc[:, :60].copy()
    for n_bins in range(2, 12):
        gv.tl.coexpression(adata, n_bins=n_bins, backend="numpy")
        assert 0 < _stored_bytes(tmp_path) <= gv.settings.cache_max_bytes
    gv.settings.cache_max_bytes = gv._settings.DEFAULT_CACHE_MAX_BYTES


def test_cache_commands_show_and_empty_it(tmp_path, capsys, pbmc):
    gv.settings.cache_dir = tmp_path
    gv.tl.coexpression(pbmc[:, :30].copy(), backend="numpy")
    assert main(["cache", "info"]) == 0
    assert "results:      1," in capsys.readouterr().out
    assert main(["cache", "clear"]) == 0
    assert "removed 1 cached results" in capsys.readouterr().out
    assert _cache.stored_results(tmp_path) == []
    gv.settings.cache_dir = None
    assert main(["cache", "info"]) == 2


# --------------------------------------------------------------------------------------------
# Corrupt and mismatched files
# --------------------------------------------------------------------------------------------


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flipped(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # inside an array: the zip CRC no longer matches
    path.write_bytes(bytes(raw))


def _pickled(path: Path) -> None:
    np.savez(path, __key__=np.array(path.stem), genes=np.array(["a"], dtype=object))


def _other_key(path: Path) -> None:
    np.savez(path, __key__=np.array("0" * 64), __layout__=np.array(2), mi=np.zeros(3))


def _no_key(path: Path) -> None:
    np.savez(path, mi=np.zeros(3))


def _other_layout(path: Path) -> None:
    np.savez(path, __key__=np.array(path.stem), __layout__=np.array(99), mi=np.zeros(3))


CORRUPTIONS = {
    "truncated": _truncated,
    "flipped byte": _flipped,
    "empty": lambda path: path.write_bytes(b""),
    "garbage": lambda path: path.write_bytes(b"not a zip file at all" * 10),
    "needs pickle": _pickled,
    "another key": _other_key,
    "no key": _no_key,
    "another layout": _other_layout,
    "a directory": lambda path: (path.unlink(), path.mkdir()),
}


@pytest.mark.filterwarnings("error::ResourceWarning")
@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupt_file_warns_and_recomputes(corruption, tmp_path, warnings_seen):
    key = _key()
    path = _cache.save(key, _result(), cache_dir=tmp_path, max_bytes=BIG)
    CORRUPTIONS[corruption](path)
    assert _cache.load(key, cache_dir=tmp_path) is None
    assert any("cache file" in message for message in warnings_seen())
    if path.is_dir():
        return  # a directory in the way: save warns too, the call goes on without cache
    assert _cache.save(key, _result(), cache_dir=tmp_path, max_bytes=BIG) == path
    _assert_same(_cache.load(key, cache_dir=tmp_path), _result())


def test_unwritable_directory_warns(tmp_path, warnings_seen):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the directory should be")
    assert _cache.save(_key(), _result(), cache_dir=blocker / "cache", max_bytes=BIG) is None
    assert any("could not write" in message for message in warnings_seen())


# --------------------------------------------------------------------------------------------
# Concurrent writers
# --------------------------------------------------------------------------------------------


def _payload(writer: int, round_: int) -> dict[str, np.ndarray]:
    """About 0.5 MB, different per writer and round, so that a torn file would show."""
    return {
        "mi": np.full((250, 250), writer * 1000 + round_, np.float64),
        "writer": np.array(writer),
    }


def _write_many(directory: str, writer: int, barrier, rounds: int, bound: int) -> None:
    barrier.wait()
    for round_ in range(rounds):
        key = _key(parts=PARTS | {"writer": writer, "round": round_ % 7})
        _cache.save(key, _payload(writer, round_), cache_dir=directory, max_bytes=bound)


def test_concurrent_writers_stay_within_the_bound(tmp_path):
    """Two processes write many results while this one reads: no torn file, and the
    stored results never exceed the bound (checked between every read)."""
    bound = 4 * 520_000
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(3)
    writers = [
        context.Process(target=_write_many, args=(str(tmp_path), writer, barrier, 30, bound))
        for writer in (1, 2)
    ]
    for process in writers:
        process.start()
    barrier.wait()
    while any(process.is_alive() for process in writers):
        assert _stored_bytes(tmp_path) <= bound
        for entry in _cache.stored_results(tmp_path):
            loaded = _cache.load(entry.path.stem, cache_dir=tmp_path)
            if loaded is not None:  # never a mix of two payloads, never torn
                value = loaded["mi"].flat[0]
                assert (loaded["mi"] == value).all() and value // 1000 == int(loaded["writer"])
    for process in writers:
        process.join(timeout=120)
        assert process.exitcode == 0
    assert 0 < _stored_bytes(tmp_path) <= bound
