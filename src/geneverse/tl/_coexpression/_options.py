"""The arguments of :func:`~geneverse.tl.coexpression`, checked, and the one table of
which options combine.

Every option means one thing for every ``method``: the output options (``genes``,
``against``, ``groupby``, ``top_k``, the cache, ``copy``) work for every method, and an
option that cannot apply to a call (:data:`RULES`) is refused when it is set away from
its default, with a message that names it: no argument is ever silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import partial
from typing import Any

from ..._data._genes import GeneSelection
from ..._settings import resolve_n_jobs
from ..._utils import (
    AUTO,
    GPU,
    MAX_BINS,
    MI,
    Backend,
    Estimator,
    Method,
    Zeros,
    check_choice,
    check_flag,
    check_key,
    check_n_jobs,
    check_random_state,
    check_whole_number,
)


@dataclass(frozen=True)
class Options:
    """The arguments of one call, checked one by one (types, ranges, choices)."""

    layer: str | None
    use_raw: bool | None
    genes: GeneSelection
    against: GeneSelection
    groupby: str | None
    top_k: int | None
    n_bins: int
    signed: bool
    method: Method
    estimator: Estimator
    zeros: Zeros
    pvals: bool
    n_permutations: int
    random_state: int | None
    cache: bool
    backend: Backend
    device: str | None
    n_jobs: int | None
    key_added: str
    copy: bool

    @classmethod
    def checked(cls, **arguments: Any) -> Options:
        """Check every argument on its own (their combinations: :func:`check_combinations`)."""
        return cls(**checked_arguments(arguments))

    @property
    def tests(self) -> bool:
        """Whether pairs get p-values (``pvals``, or a permutation null)."""
        return self.pvals or self.n_permutations > 0

    @property
    def threads(self) -> int:
        """``n_jobs`` as a number of threads."""
        return resolve_n_jobs(self.n_jobs)

    def backend_name(self) -> str:
        """The backend asked for (see :func:`backend_asked`)."""
        return backend_asked(self.backend, self.device)

    def changed(self, defaults: dict[str, Any]) -> dict[str, Any]:
        """The options set away from their ``defaults``."""
        return {
            field.name: getattr(self, field.name)
            for field in fields(self)
            if not _is_default(getattr(self, field.name), defaults[field.name])
        }


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else check(value)


def _name_of(what: str) -> Callable[[str, Any], Any]:
    def check(name: str, value: Any) -> Any:
        if not isinstance(value, str):
            raise TypeError(f"{name} must be {what} (a string), not {value!r}.")
        return value

    return check


#: How each argument of the tools is checked on its own, by name: one check per argument,
#: whichever tool takes it.
CHECKS: dict[str, Callable[[Any], Any]] = {
    "layer": _optional(partial(_name_of("the name of a layer"), "layer")),
    "use_raw": _optional(partial(check_flag, "use_raw")),
    "top_k": _optional(partial(check_whole_number, "top_k", minimum=1, what="partners per gene")),
    "n_bins": partial(
        check_whole_number, "n_bins", minimum=1, maximum=MAX_BINS, what="bins (10 is GeneVector's)"
    ),
    "signed": partial(check_flag, "signed"),
    "method": partial(check_choice, "method", choices=Method),
    "estimator": partial(check_choice, "estimator", choices=Estimator),
    "zeros": partial(check_choice, "zeros", choices=Zeros),
    "pvals": partial(check_flag, "pvals"),
    "n_permutations": partial(check_whole_number, "n_permutations", minimum=0, what="permutations"),
    "random_state": check_random_state,
    "cache": partial(check_flag, "cache"),
    "backend": partial(check_choice, "backend", choices=Backend),
    "device": _optional(partial(_name_of("a torch device name such as 'cuda'"), "device")),
    "n_jobs": check_n_jobs,
    "key_added": partial(check_key, "key_added"),
    "copy": partial(check_flag, "copy"),
}


def checked_arguments(arguments: dict[str, Any]) -> dict[str, Any]:
    """The arguments, each checked by :data:`CHECKS` (unknown names pass as they are)."""
    return {
        name: CHECKS[name](value) if name in CHECKS else value for name, value in arguments.items()
    }


def backend_asked(backend: Backend, device: str | None) -> Backend:
    """The backend a call asks for: ``device=`` with ``backend="auto"`` asks for torch."""
    if backend == AUTO and device is not None:
        return GPU
    return backend


def _is_default(value: Any, default: Any) -> bool:
    if value is default:
        return True
    try:
        return type(value) is type(default) and bool(value == default)
    except (TypeError, ValueError):  # arrays, masks: set by the user
        return False


@dataclass(frozen=True)
class Rule:
    """An option that applies only when ``holds`` (of the call, and whether its data is
    read chunk by chunk); ``when`` says so in words, ``instead`` what to do."""

    option: str
    holds: Callable[[Options, bool], bool]
    when: str
    instead: str


#: The options of the MI only.
MI_ONLY = ("n_bins", "signed", "estimator", "zeros", "pvals", "n_permutations", "backend")

#: Which options combine: each option set away from its default must satisfy its rules.
RULES: tuple[Rule, ...] = (
    *(
        Rule(name, lambda o, chunked: o.method == MI, "method='mi'", f"drop {name}= here")
        for name in MI_ONLY
    ),
    Rule(
        "device",
        lambda o, chunked: o.method == MI and o.backend in (AUTO, GPU),
        "method='mi' and backend='gpu'",
        "drop device=, or pass backend='gpu'",
    ),
    Rule(
        "random_state",
        lambda o, chunked: o.n_permutations > 0,
        "n_permutations > 0 (it seeds the permutations)",
        "drop random_state=, or ask for a permutation null with n_permutations=",
    ),
    Rule(
        "n_permutations",
        lambda o, chunked: o.top_k is None and o.against is None and not chunked,
        "the dense result of data in memory",
        "drop top_k= and against= (or load the data with adata.to_memory()), or use "
        "pvals=True, the G-test, which works everywhere",
    ),
)


def check_combinations(options: Options, defaults: dict[str, Any], *, chunked: bool) -> None:
    """Raise for the first option set away from its default that cannot apply to the call
    (``chunked``: its data is read chunk by chunk)."""
    changed = options.changed(defaults)
    for rule in RULES:
        if rule.option in changed and not rule.holds(options, chunked):
            value = changed[rule.option]
            raise ValueError(
                f"{rule.option}={value!r} applies only with {rule.when}; {rule.instead}."
            )
