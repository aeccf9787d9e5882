"""Validation of the solvers' settings, which are static: checked when a weighting is built."""

from __future__ import annotations

from typing import Any, NamedTuple


def check_solver(
    solver: Any, expected: type[NamedTuple], *, positive: tuple[str, ...] = ()
) -> None:
    """Raises a clear error unless ``solver`` is an ``expected`` of valid counts.

    Every integer field must be a Python int, at least 1 if named in ``positive`` and at least 0
    otherwise; a field whose default is None may be None. Other fields are the caller's to check.
    """
    if not isinstance(solver, expected):
        raise TypeError(f"`solver` must be a {expected.__name__}; got {type(solver).__name__}.")
    defaults: dict[str, Any] = getattr(expected, "_field_defaults", {})
    for name, value in solver._asdict().items():
        default = defaults.get(name)
        if value is None and default is None and name in defaults:
            continue
        if not isinstance(default, int) or isinstance(default, bool):
            continue
        least = 1 if name in positive else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            kind = "a positive" if least else "a non-negative"
            raise ValueError(
                f"`solver.{name}` must be {kind} Python int (a static count); got {value!r}."
            )
