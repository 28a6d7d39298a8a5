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
        a = arguments
        for name in ("signed", "pvals", "cache", "copy"):
            a[name] = check_flag(name, a[name])
        if a["use_raw"] is not None:
            a["use_raw"] = check_flag("use_raw", a["use_raw"])
        if a["layer"] is not None and not isinstance(a["layer"], str):
            raise TypeError(f"layer must be the name of a layer (a string), not {a['layer']!r}.")
        for name, choices in (
            ("method", Method),
            ("estimator", Estimator),
            ("zeros", Zeros),
            ("backend", Backend),
        ):
            check_choice(name, a[name], choices)
        a["n_bins"] = check_whole_number(
            "n_bins", a["n_bins"], minimum=1, maximum=MAX_BINS, what="bins (10 is GeneVector's)"
        )
        if a["top_k"] is not None:
            a["top_k"] = check_whole_number(
                "top_k", a["top_k"], minimum=1, what="partners per gene"
            )
        a["n_permutations"] = check_whole_number(
            "n_permutations", a["n_permutations"], minimum=0, what="permutations"
        )
        a["random_state"] = check_random_state(a["random_state"])
        a["n_jobs"] = check_n_jobs(a["n_jobs"])
        a["key_added"] = check_key("key_added", a["key_added"])
        if a["device"] is not None and not isinstance(a["device"], str):
            raise TypeError(
                f"device must be a torch device name such as 'cuda', not {a['device']!r}."
            )
        return cls(**a)

    @property
    def tests(self) -> bool:
        """Whether pairs get p-values (``pvals``, or a permutation null)."""
        return self.pvals or self.n_permutations > 0

    @property
    def threads(self) -> int:
        """``n_jobs`` as a number of threads."""
        return resolve_n_jobs(self.n_jobs)

    def backend_name(self) -> str:
        """The backend asked for: ``device=`` alone asks for the torch backend."""
        if self.backend == AUTO and self.device is not None:
            return GPU
        return self.backend

    def changed(self, defaults: dict[str, Any]) -> dict[str, Any]:
        """The options set away from their ``defaults``."""
        return {
            field.name: getattr(self, field.name)
            for field in fields(self)
            if not _is_default(getattr(self, field.name), defaults[field.name])
        }


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
