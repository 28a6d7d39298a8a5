"""The result cache: keys, hits, misses, corrupt files and concurrent writers."""

from __future__ import annotations

import multiprocessing
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from geneverse.tl._coexpression import _cache

GENES = ["CD3E", "MS4A1", "LYZ", "NKG7"]
PARAMS = {"n_bins": 10, "signed": True, "estimator": "plugin", "genes": None, "tol": 0.5}


def _data() -> sparse.csr_matrix:
    return sparse.random(50, 4, density=0.3, format="csr", random_state=0, dtype=np.float32)


def _key(data=None, genes=GENES, params=PARAMS, version="1.0.0") -> str:
    return _cache.cache_key(_data() if data is None else data, genes, params, version=version)


def _result() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    mi = rng.random((4, 4)).astype(np.float32)
    return {"mi": mi + mi.T, "n_bins": np.array([3, 4, 11, 2], np.int32), "used": np.ones(4, bool)}


def _assert_same(loaded: dict[str, np.ndarray], saved: dict[str, np.ndarray]) -> None:
    assert loaded is not None and set(loaded) == set(saved)
    for name, array in saved.items():
        array = np.asarray(array)
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape, name
        np.testing.assert_array_equal(loaded[name], array, strict=True)


# --------------------------------------------------------------------------------------------
# Hits, misses, round trips
# --------------------------------------------------------------------------------------------


def test_hit_returns_exactly_what_was_saved(tmp_path):
    key = _key()
    assert _cache.load(key, cache_dir=tmp_path) is None  # a miss before
    saved = _result() | {
        "names": np.array(GENES),  # a unicode array, no pickle
        "scalar": np.array(0.1, np.float64),
        "empty": np.zeros((0, 3), np.int64),
        "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        "nan": np.array([np.nan, -0.0, np.inf], np.float32),
    }
    path = _cache.save(key, saved, cache_dir=tmp_path)
    assert path == _cache.cache_path(key, tmp_path) and path.exists()
    assert _key(data=_data().copy(), params=dict(reversed(PARAMS.items()))) == key  # same call
    _assert_same(_cache.load(key, cache_dir=tmp_path), saved)


def test_sparse_matrices_round_trip(tmp_path):
    for matrix in (_data(), _data().tocsc(), sparse.coo_matrix(_data())):
        key = _key(data=matrix)
        _cache.save(key, _cache.sparse_arrays("top", matrix), cache_dir=tmp_path)
        back = _cache.sparse_from_arrays("top", _cache.load(key, cache_dir=tmp_path))
        assert back.format == (matrix.format if matrix.format != "coo" else "csr")
        assert back.dtype == matrix.dtype and back.shape == matrix.shape
        assert (back != matrix).nnz == 0


def _changed_values():
    data = _data()
    data.data[3] += 1e-6
    return data


MISSES = {
    "a changed value": lambda: _key(data=_changed_values()),
    "another dtype": lambda: _key(data=_data().astype(np.float64)),
    "another format": lambda: _key(data=_data().tocsc()),
    "another shape": lambda: _key(data=sparse.vstack([_data(), sparse.csr_matrix((1, 4))])),
    "dense data": lambda: _key(data=_data().toarray()),
    "a renamed gene": lambda: _key(genes=[*GENES[:-1], "GNLY"]),
    "genes in another order": lambda: _key(genes=GENES[::-1]),
    "a changed parameter": lambda: _key(params=PARAMS | {"n_bins": 5}),
    "a changed float": lambda: _key(params=PARAMS | {"tol": 0.5000000001}),
    "an int for a bool": lambda: _key(params=PARAMS | {"signed": 1}),
    "an added parameter": lambda: _key(params=PARAMS | {"zeros": "include"}),
    "a removed parameter": lambda: _key(params={k: v for k, v in PARAMS.items() if k != "tol"}),
    "a gene mask": lambda: _key(params=PARAMS | {"genes": np.array([True, False, True, True])}),
    "a new version": lambda: _key(version="1.0.1"),
}


@pytest.mark.parametrize("change", list(MISSES))
def test_any_change_misses(change, tmp_path):
    _cache.save(_key(), _result(), cache_dir=tmp_path)
    other = MISSES[change]()
    assert other != _key()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a plain miss is silent
        assert _cache.load(other, cache_dir=tmp_path) is None


def test_default_version_is_the_package_version():
    import geneverse

    assert _key(version=None) == _key(version=geneverse.__version__)


def test_parameters_that_cannot_be_keyed_are_errors():
    for bad in ({"f": object()}, {"f": {1: 2}}, {"f": np.array([object()])}):
        with pytest.raises(TypeError):
            _key(params=bad)
    with pytest.raises(TypeError):
        _key(data=sparse.lil_matrix((3, 3)))
    with pytest.raises(TypeError, match="pickle"):
        _cache.save(_key(), {"genes": np.array(GENES, dtype=object)}, cache_dir=".")
    with pytest.raises(ValueError, match="cannot name"):
        _cache.save(_key(), {"__key__": np.zeros(1)}, cache_dir=".")
    with pytest.raises(ValueError, match="hex"):
        _cache.load("../../etc/passwd", cache_dir=".")


def test_disabled_cache_does_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _cache.save(_key(), _result(), cache_dir=None) is None
    assert _cache.load(_key(), cache_dir=None) is None
    assert list(tmp_path.iterdir()) == []


def test_default_cache_dir():
    from geneverse._settings import default_cache_dir

    assert default_cache_dir().name == "geneverse"


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
    np.savez(path, __key__=np.array(path.stem), genes=np.array(GENES, dtype=object))


def _other_key(path: Path) -> None:
    np.savez(path, __key__=np.array("0" * 64), __layout__=np.array(1), mi=np.zeros(3))


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


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupt_file_warns_and_recomputes(corruption, tmp_path):
    key = _key()
    path = _cache.save(key, _result(), cache_dir=tmp_path)
    CORRUPTIONS[corruption](path)
    with pytest.warns(UserWarning, match="cache file"):
        assert _cache.load(key, cache_dir=tmp_path) is None
    if path.is_dir():
        return  # a directory in the way: save warns too, the call goes on without cache
    assert _cache.save(key, _result(), cache_dir=tmp_path) == path  # the recomputed result
    _assert_same(_cache.load(key, cache_dir=tmp_path), _result())


def test_unwritable_directory_warns(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the directory should be")
    with pytest.warns(UserWarning, match="could not write"):
        assert _cache.save(_key(), _result(), cache_dir=blocker / "cache") is None


# --------------------------------------------------------------------------------------------
# Concurrent writers
# --------------------------------------------------------------------------------------------


def _payload(writer: int) -> dict[str, np.ndarray]:
    """A few MB, different per writer, so that a torn file would show."""
    return {"mi": np.full((600, 600), writer, np.float64), "writer": np.array(writer)}


def _write_many(directory: str, key: str, writer: int, barrier, rounds: int) -> None:
    payload = _payload(writer)
    barrier.wait()
    for _ in range(rounds):
        assert _cache.save(key, payload, cache_dir=directory) is not None


def test_concurrent_writers(tmp_path):
    key = _key()
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(3)
    writers = [
        context.Process(target=_write_many, args=(str(tmp_path), key, writer, barrier, 40))
        for writer in (1, 2)
    ]
    for process in writers:
        process.start()
    barrier.wait()
    seen = set()
    while any(process.is_alive() for process in writers):  # read while they write
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            loaded = _cache.load(key, cache_dir=tmp_path)
        if loaded is not None:
            writer = int(loaded["writer"])
            _assert_same(loaded, _payload(writer))  # never a mix, never torn
            seen.add(writer)
    for process in writers:
        process.join(timeout=60)
        assert process.exitcode == 0
    loaded = _cache.load(key, cache_dir=tmp_path)
    _assert_same(loaded, _payload(int(loaded["writer"])))
    assert [path.name for path in tmp_path.iterdir()] == [f"{key}.npz"]  # no temporary left
