"""A result cache on disk: a later identical call loads instead of computing.

A result is a set of named arrays stored in one ``.npz`` file per key in a cache
directory. The key (:func:`cache_key`) is the SHA-256 of everything the result depends on:
the data (its arrays, dtype, shape and format), the gene names in order, every parameter
and the package version. Files are written atomically (a temporary file in the same
directory, then :func:`os.replace`), so a reader never sees half a file and concurrent
writers of the same key both succeed, the last one's complete file winning. Files are
read with ``allow_pickle=False``; a file that cannot be read, or that holds another key
than its name says, is ignored with a warning (the caller recomputes and overwrites it).
A cache is an optimisation only: no failure to read or write it is ever an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

#: Version of the file layout; a file of another layout is a mismatch.
_LAYOUT = 1
#: Reserved array names (the key and the layout) inside every file.
_KEY, _LAYOUT_NAME = "__key__", "__layout__"
_SUFFIX = ".npz"


# --------------------------------------------------------------------------------------------
# The key
# --------------------------------------------------------------------------------------------


def cache_key(
    data: np.ndarray | sparse.spmatrix | sparse.sparray,
    gene_names: Sequence[str],
    params: Mapping[str, Any],
    *,
    version: str | None = None,
) -> str:
    """The SHA-256 (hex) of the data, the gene names, the parameters and the version.

    Parameters
    ----------
    data
        The matrix the result is computed from: a scipy sparse matrix or array (its
        format, shape, dtype and every stored array: ``data``, ``indices``, ``indptr``
        for CSR/CSC, ``row``, ``col`` for COO) or a numpy array (its bytes, C order).
        Equal matrices stored differently (CSR and CSC, explicit zeros, unsorted indices)
        get different keys: a miss, never a wrong hit.
    gene_names
        In order (the order of the result's rows and columns).
    params
        Every parameter of the call, JSON-like: ``str``, ``int``, ``float``, ``bool``,
        ``None``, lists, tuples, dicts with ``str`` keys, numpy scalars and arrays (hashed
        by dtype, shape and bytes). Anything else is a :class:`TypeError`, so that no
        parameter is silently left out of the key.
    version
        The package version; default ``geneverse.__version__``.
    """
    if version is None:
        version = _package_version()
    digest = hashlib.sha256()
    _update(digest, "layout", _LAYOUT)
    _update(digest, "version", str(version))
    _update(digest, "genes", [str(name) for name in gene_names])
    _update(digest, "params", _canonical(params))
    _hash_matrix(digest, data)
    return digest.hexdigest()


def _package_version() -> str:
    from ... import __version__

    return __version__


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
            raise TypeError("cache key parameters must be dicts with str keys")
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    raise TypeError(f"cannot put a {type(value).__name__} into a cache key")


def _array_digest(array: np.ndarray) -> str:
    digest = hashlib.sha256()
    _hash_array(digest, "array", array)
    return digest.hexdigest()


def _hash_array(digest: Any, label: str, array: np.ndarray) -> None:
    array = np.asarray(array)
    if array.dtype.hasobject:
        raise TypeError(f"cannot hash an object array ({label}) into a cache key")
    _update(digest, label, [array.dtype.str, list(array.shape)])
    digest.update(memoryview(np.ascontiguousarray(array)).cast("B"))


def _hash_matrix(digest: Any, data: Any) -> None:
    if sparse.issparse(data):
        if data.format not in ("csr", "csc", "coo"):
            raise TypeError(f"cannot hash a {data.format} sparse matrix; convert it to CSR")
        _update(digest, "sparse", [data.format, list(data.shape)])
        parts = ("row", "col", "data") if data.format == "coo" else ("data", "indices", "indptr")
        for part in parts:
            _hash_array(digest, part, getattr(data, part))
    elif isinstance(data, np.ndarray):
        _hash_array(digest, "dense", data)
    else:
        raise TypeError(f"cannot hash data of type {type(data).__name__} into a cache key")


# --------------------------------------------------------------------------------------------
# Saving and loading
# --------------------------------------------------------------------------------------------


def cache_path(key: str, cache_dir: str | os.PathLike) -> Path:
    """The file of ``key`` in ``cache_dir``."""
    if not key or not all(ch in "0123456789abcdef" for ch in key):
        raise ValueError(f"a cache key is a lowercase hex digest, not {key!r}")
    return Path(cache_dir) / f"{key}{_SUFFIX}"


def save(
    key: str, arrays: Mapping[str, np.ndarray], *, cache_dir: str | os.PathLike | None
) -> Path | None:
    """Store ``arrays`` under ``key``, atomically; return the file (``None``: not stored).

    ``cache_dir=None`` disables the cache (nothing is written). Array names must be valid
    identifiers not starting with ``__``; object arrays (which would need pickle) are a
    :class:`TypeError`. Store a sparse matrix with :func:`sparse_arrays`. A directory that
    cannot be written gives a warning and ``None``.
    """
    if cache_dir is None:
        return None
    payload = _payload(key, arrays)
    path = cache_path(key, cache_dir)
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **payload)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        warnings.warn(f"could not write the cache file {path}: {error}", stacklevel=2)
        if temporary is not None and os.path.exists(temporary):
            os.unlink(temporary)
        return None
    return path


def load(key: str, *, cache_dir: str | os.PathLike | None) -> dict[str, np.ndarray] | None:
    """The arrays stored under ``key``, or ``None`` when there are none.

    ``None`` too, with a warning, when the file is corrupt (truncated, not a zip, an
    array that needs pickle) or holds another key or file layout; the caller then
    recomputes and :func:`save` replaces the file. ``cache_dir=None``: always ``None``.
    """
    if cache_dir is None:
        return None
    path = cache_path(key, cache_dir)
    try:
        with np.load(path, allow_pickle=False) as file:
            arrays = {name: file[name] for name in file.files}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        warnings.warn(f"ignoring the unreadable cache file {path}: {error}", stacklevel=2)
        return None
    stored_key, layout = arrays.pop(_KEY, None), arrays.pop(_LAYOUT_NAME, None)
    if stored_key is None or str(stored_key) != key or layout is None or int(layout) != _LAYOUT:
        warnings.warn(f"ignoring the cache file {path}: it holds another result", stacklevel=2)
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
