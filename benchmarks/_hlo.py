"""Sequential kernel launches and while loops of a jitted function, read from its compiled HLO.

After XLA's optimisation every instruction of a computation that does work (a fusion, a
custom call such as a LAPACK or cuSOLVER routine, a dot) is one kernel launch on a GPU or TPU,
run one after another. A ``while`` multiplies its body by its trip count (XLA records
``known_trip_count`` for ``fori_loop``/``scan``; an unknown count is taken as 1), a
``conditional`` counts its costliest branch (and, for ``fewest_launches``, its cheapest) and a
``call`` its callee. The count is an estimate of the launches per call on the backend that
compiled the program (on CPU, of the thunks XLA:CPU runs), not a measurement; it is what makes
a solver with thousands of tiny iterations slow on an accelerator however cheap each iteration
is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax

#: Instructions that move no data and launch nothing.
_FREE = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all"}
_HEADER = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')


def _opcode(line: str) -> str:
    """The opcode of one HLO instruction line (``%x = <shape> opcode(operands), ...``)."""
    rhs = line.split(" = ", 1)[1].lstrip()
    if rhs.startswith("("):  # a tuple shape: skip its balanced parentheses
        depth = 0
        for i, char in enumerate(rhs):
            depth += {"(": 1, ")": -1}.get(char, 0)
            if depth == 0:
                rhs = rhs[i + 1 :].lstrip()
                break
    else:
        rhs = rhs.split(" ", 1)[1] if " " in rhs else rhs
    return rhs.split("(", 1)[0].strip()


def _computations(text: str) -> tuple[dict[str, list[str]], str]:
    """Instruction lines per computation name, and the entry computation's name."""
    comps: dict[str, list[str]] = {}
    entry, current = "", None
    for line in text.splitlines():
        header = _HEADER.match(line)
        if header and not line.startswith(" "):
            current = header.group(1)
            comps[current] = []
            if line.startswith("ENTRY"):
                entry = current
        elif current is not None and line.strip() == "}":
            current = None
        elif current is not None and " = " in line:
            comps[current].append(line)
    return comps, entry


def _callees(line: str, key: str) -> list[str]:
    match = re.search(key + r"=\{?([^}]*?)\}?(?:,\s*\w+=|$)", line)
    return [name.strip().lstrip("%") for name in match.group(1).split(",")] if match else []


def launch_counts(text: str) -> dict[str, int]:
    """``{"launches", "fewest_launches", "while_loops"}`` of an optimised HLO module's text.

    ``launches`` counts each conditional's costliest branch, ``fewest_launches`` its cheapest:
    the path of a step on which no rare branch (an overflow-safe rescaling, a kink's
    projection) is taken.
    """
    comps, entry = _computations(text)

    def count(pick: Callable[[list[int]], int]) -> int:
        memo: dict[str, int] = {}

        def launches(name: str) -> int:
            if name not in memo:
                memo[name] = 0  # guards against recursion
                total = 0
                for line in comps.get(name, []):
                    op = _opcode(line)
                    if op in _FREE:
                        continue
                    if op == "while":
                        trip = _TRIP.search(line)
                        body = _callees(line, "body") + _callees(line, "condition")
                        total += (int(trip.group(1)) if trip else 1) * sum(map(launches, body))
                    elif op == "conditional":
                        branches = _callees(line, "branch_computations")
                        total += pick([launches(b) for b in branches]) if branches else 1
                    elif op == "call":
                        total += sum(map(launches, _callees(line, "to_apply")))
                    else:
                        total += 1
                memo[name] = total
            return memo[name]

        return launches(entry)

    return {
        "launches": count(max),
        "fewest_launches": count(min),
        "while_loops": text.count(" while("),
    }


def compiled_counts(fn: Callable[..., Any], *args: Any) -> dict[str, int]:
    """:func:`launch_counts` of ``jax.jit(fn)`` compiled for ``args`` on the default backend."""
    return launch_counts(jax.jit(fn).lower(*args).compile().as_text())
