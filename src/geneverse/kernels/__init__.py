"""The kernels (one module per backend) and the dispatch between them."""

from __future__ import annotations

import importlib

import pandas as pd

from .._data._binned import BinnedGenes
from .._utils import AUTO, GPU, NUMBA, NUMPY, RUST, Backend, check_choice
from ._base import SIGN_TOLERANCE, Kernel, PairScores, Scoring

#: ``backend="auto"`` tries these in order; the value is the module and class of each.
_REGISTRY: dict[str, tuple[str, str]] = {
    GPU: ("._torch", "TorchKernel"),
    RUST: ("._rust", "RustKernel"),
    NUMBA: ("._numba", "NumbaKernel"),
    NUMPY: ("._numpy", "NumpyKernel"),
}

__all__ = [
    "SIGN_TOLERANCE",
    "BinnedGenes",
    "Kernel",
    "PairScores",
    "Scoring",
    "backends",
    "resolve_backend",
]


def _load(name: str) -> tuple[type[Kernel] | None, str | None]:
    """The kernel class of backend ``name``, or why it cannot be loaded."""
    module_name, class_name = _REGISTRY[name]
    try:
        module = importlib.import_module(module_name, __name__)
    except ImportError as error:
        return None, f"its module could not be imported ({error})"
    return getattr(module, class_name), None


def unavailable_reason(name: str, device: str | None = None) -> str | None:
    """Why backend ``name`` cannot run here (on ``device``), or ``None``."""
    kernel, reason = _load(name)
    return reason if kernel is None else kernel.unavailable_reason(device)


def resolve_backend(backend: Backend, device: str | None = None) -> type[Kernel]:
    """The kernel class for ``backend`` (``"auto"``: the first usable one, in order).

    Raises
    ------
    ValueError
        If ``backend`` is unknown or cannot run here; the message says why.
    """
    check_choice("backend", backend, Backend)
    if backend == AUTO:
        for name in _REGISTRY:
            if unavailable_reason(name) is None:
                return _load(name)[0]
        raise AssertionError("the numpy backend is always available")
    if device is not None and backend != GPU:
        raise ValueError(
            f"device={device!r} applies to backend='gpu' only; drop it for backend={backend!r}."
        )
    reason = unavailable_reason(backend, device)
    if reason is not None:
        raise ValueError(f"The {backend!r} backend cannot run here: {reason}")
    return _load(backend)[0]


def backends() -> pd.DataFrame:
    """Which MI backends are usable here, and why not.

    Returns
    -------
    A DataFrame indexed by backend name, in the order ``backend="auto"`` tries them, with
    columns ``usable`` (bool) and ``reason`` (why not, empty when usable).

    Examples
    --------
    >>> import geneverse as gv
    >>> gv.backends().loc["numpy", "usable"]
    np.True_
    """
    rows = {name: unavailable_reason(name) for name in _REGISTRY}
    return pd.DataFrame(
        {
            "usable": [reason is None for reason in rows.values()],
            "reason": [reason or "" for reason in rows.values()],
        },
        index=pd.Index(list(rows), name="backend"),
    )
