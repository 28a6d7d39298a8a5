"""A bounded result cache on disk: a later identical call loads instead of computing.

A result is a set of named arrays stored in one ``.npz`` file per key in the cache
directory. The key (:func:`cache_key`) is the SHA-256 of everything the result depends on:
the digest of the values, the genes, cells, groups and parameters, and the package
version. The cache holds at most ``max_bytes`` of results: a result larger than a quarter
of that is not stored, and storing one first removes the results used least recently
(loading a result counts as a use) until it fits. Files are written to a temporary file
and moved into place under a lock shared by every process, so concurrent writers never
let the cache exceed its bound and a reader never sees half a file. Files are read with
``allow_pickle=False``; a file that cannot be read, or that holds another key than its
name says, is ignored with a warning (the caller recomputes and replaces it). A cache is
an optimisation only: no failure to read or write it is ever an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout
from scipy import sparse

from ... import _logging as logg
from ..._utils import package_version

#: Version of the file layout; a file of another layout is a mismatch.
_LAYOUT = 2
#: Reserved array names (the key and the layout) inside every file.
_KEY, _LAYOUT_NAME = "__key__", "__layout__"
_SUFFIX = ".npz"
#: A result larger than this share of the bound is not stored.
MAX_SHARE = 0.25
#: Seconds to wait for another process's write before giving up on storing a result.
_LOCK_SECONDS = 60
_INCOMING = ".incoming"


# --------------------------------------------------------------------------------------------
# The key
# --------------------------------------------------------------------------------------------


def cache_key(data_digest: str, parts: Mapping[str, Any], *, version: str | None = None) -> str:
    """The SHA-256 (hex) of the values' digest, the other parts and the version.

    Parameters
    ----------
    data_digest
        The digest of the values the result is computed from
        (:func:`geneverse._data._matrix.matrix_digest`).
    parts
        Everything else that determines the result, JSON-like: ``str``, ``int``,
        ``float``, ``bool``, ``None``, lists, tuples, dicts with ``str`` keys, numpy
        scalars and arrays (hashed by dtype, shape and bytes). Anything else is a
        :class:`TypeError`, so that no part is silently left out of the key.
    version
        The package version; default ``geneverse.__version__``.
    """
    if version is None:
        version = package_version()
    digest = hashlib.sha256()
    _update(digest, "layout", _LAYOUT)
    _update(digest, "version", str(version))
    _update(digest, "data", str(data_digest))
    _update(digest, "parts", _canonical(parts))
    return digest.hexdigest()


def _update(digest: Any, label: str, value: Any) -> None:
    """Feed one labelled, length-prefixed JSON value to the digest (no ambiguous joins)."""
    text = json.dumps([label, value], sort_keys=True, allow_nan=True).encode()
    digest.update(len(text).to_bytes(8, "little") + text)


def _canonical(value: Any) -> Any:
    """``value`` as plain JSON types, numpy arrays replaced by their digest."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, np.generic):
        return _canonical(value.item())
    if isinstance(value, np.ndarray):
        return {"ndarray": _array_digest(value)}
    if isinstance(value, Mapping):
        if not all(isinstance(key, str) for key in value):
            raise TypeError("cache key parts must be dicts with str keys")
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    raise TypeError(f"cannot put a {type(value).__name__} into a cache key")


def _array_digest(array: np.ndarray) -> str:
    if array.dtype.hasobject:
        raise TypeError("cannot hash an object array into a cache key")
    digest = hashlib.sha256()
    _update(digest, "array", [array.dtype.str, list(array.shape)])
    digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Saving and loading
# --------------------------------------------------------------------------------------------


def cache_path(key: str, cache_dir: str | os.PathLike) -> Path:
    """The file of ``key`` in ``cache_dir``."""
    if not key or not all(ch in "0123456789abcdef" for ch in key):
        raise ValueError(f"a cache key is a lowercase hex digest, not {key!r}")
    return Path(cache_dir) / f"{key}{_SUFFIX}"


def save(
    key: str,
    arrays: Mapping[str, np.ndarray],
    *,
    cache_dir: str | os.PathLike | None,
    max_bytes: int,
) -> Path | None:
    """Store ``arrays`` under ``key``; return the file (``None``: not stored).

    ``cache_dir=None`` disables the cache. A result larger than ``MAX_SHARE * max_bytes``
    is not stored; otherwise the results used least recently are removed until it fits
    in ``max_bytes``. Array names must be valid identifiers not starting with ``__``;
    object arrays (which would need pickle) are a :class:`TypeError`. Store a sparse
    matrix with :func:`sparse_arrays`. A directory that cannot be written gives a
    warning and ``None``.
    """
    if cache_dir is None:
        return None
    payload = _payload(key, arrays)
    path = cache_path(key, cache_dir)
    temporary: Path | None = None
    try:
        temporary = _written(payload, Path(cache_dir))
        size = temporary.stat().st_size
        if size > MAX_SHARE * max_bytes:
            logg.info(
                f"    not cached: the result ({_mebibytes(size)}) is larger than "
                f"{MAX_SHARE:.0%} of gv.settings.cache_max_bytes ({_mebibytes(max_bytes)})"
            )
            return None
        with FileLock(Path(cache_dir) / ".lock", timeout=_LOCK_SECONDS):
            _make_room(Path(cache_dir), size, max_bytes, replacing=path)
            os.replace(temporary, path)
            temporary = None
    except (OSError, Timeout) as error:
        logg.warning(f"could not write the cache file {path}: {error}")
        return None
    finally:
        if temporary is not None:
            temporary.unlink(missing_ok=True)
    return path


def _written(payload: Mapping[str, np.ndarray], cache_dir: Path) -> Path:
    """The payload in a new temporary file beside the cache (not counted in it)."""
    incoming = cache_dir / _INCOMING
    incoming.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(suffix=".tmp", dir=incoming)
    with os.fdopen(handle, "wb") as file:
        np.savez(file, **payload)
        file.flush()
        os.fsync(file.fileno())
    return Path(name)


def _make_room(cache_dir: Path, size: int, max_bytes: int, *, replacing: Path) -> None:
    """Remove the results used least recently until ``size`` more bytes fit (under the lock)."""
    results = [entry for entry in stored_results(cache_dir) if entry.path != replacing]
    total = sum(entry.size for entry in results)
    for entry in sorted(results, key=lambda entry: entry.used):
        if total + size <= max_bytes:
            break
        entry.path.unlink(missing_ok=True)
        total -= entry.size


def load(key: str, *, cache_dir: str | os.PathLike | None) -> dict[str, np.ndarray] | None:
    """The arrays stored under ``key``, or ``None`` when there are none.

    ``None`` too, with a warning, when the file is corrupt (truncated, not a zip, an
    array that needs pickle) or holds another key or file layout; the caller then
    recomputes and :func:`save` replaces the file. A load counts as a use of the result.
    ``cache_dir=None``: always ``None``.
    """
    if cache_dir is None:
        return None
    path = cache_path(key, cache_dir)
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as file:
            arrays = {name: file[name] for name in file.files}
        os.utime(path)  # the least recently used results go first
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        logg.warning(f"ignoring the unreadable cache file {path}: {error}")
        return None
    stored_key, layout = arrays.pop(_KEY, None), arrays.pop(_LAYOUT_NAME, None)
    if stored_key is None or str(stored_key) != key or layout is None or int(layout) != _LAYOUT:
        logg.warning(f"ignoring the cache file {path}: it holds another result")
        return None
    return arrays


def _payload(key: str, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    payload = {_KEY: np.array(key), _LAYOUT_NAME: np.array(_LAYOUT)}
    for name, array in arrays.items():
        if not name.isidentifier() or name.startswith("__"):
            raise ValueError(f"{name!r} cannot name a cached array")
        array = np.asarray(array)
        if array.dtype.hasobject:
            raise TypeError(f"cannot cache the object array {name!r} (it would need pickle)")
        payload[name] = array
    return payload


# --------------------------------------------------------------------------------------------
# What is stored: ``geneverse cache info`` and ``clear``
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredResult:
    """One stored result: its file, its size in bytes and when it was last used."""

    path: Path
    size: int
    used: float


def stored_results(cache_dir: str | os.PathLike) -> list[StoredResult]:
    """The results stored in ``cache_dir`` (none when it does not exist)."""
    found = []
    for path in Path(cache_dir).glob(f"*{_SUFFIX}"):
        try:
            status = path.stat()
        except FileNotFoundError:  # removed meanwhile
            continue
        found.append(StoredResult(path, status.st_size, status.st_mtime))
    return found


def clear(cache_dir: str | os.PathLike) -> int:
    """Remove every stored result (and unfinished writes); the number of results removed."""
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        return 0
    with FileLock(cache_dir / ".lock", timeout=_LOCK_SECONDS):
        results = stored_results(cache_dir)
        for entry in results:
            entry.path.unlink(missing_ok=True)
        for leftover in (cache_dir / _INCOMING).glob("*.tmp"):
            leftover.unlink(missing_ok=True)
    return len(results)


def _mebibytes(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:,.1f} MiB"


# --------------------------------------------------------------------------------------------
# Sparse matrices as plain arrays
# --------------------------------------------------------------------------------------------


def sparse_arrays(name: str, matrix: sparse.spmatrix | sparse.sparray) -> dict[str, np.ndarray]:
    """A CSR or CSC matrix as plain arrays ``{name}_data``, ``_indices``, ``_indptr``,
    ``_shape`` and ``_format`` (0 CSR, 1 CSC), for :func:`save`."""
    if matrix.format not in ("csr", "csc"):
        matrix = matrix.tocsr()
    return {
        f"{name}_data": matrix.data,
        f"{name}_indices": matrix.indices,
        f"{name}_indptr": matrix.indptr,
        f"{name}_shape": np.asarray(matrix.shape, dtype=np.int64),
        f"{name}_format": np.asarray(0 if matrix.format == "csr" else 1),
    }


def sparse_from_arrays(
    name: str, arrays: Mapping[str, np.ndarray]
) -> sparse.csr_matrix | sparse.csc_matrix:
    """The matrix that :func:`sparse_arrays` stored under ``name`` (CSR or CSC, as saved)."""
    kind = sparse.csr_matrix if int(arrays[f"{name}_format"]) == 0 else sparse.csc_matrix
    parts = (arrays[f"{name}_data"], arrays[f"{name}_indices"], arrays[f"{name}_indptr"])
    return kind(parts, shape=tuple(int(n) for n in arrays[f"{name}_shape"]))
