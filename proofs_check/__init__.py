"""proofs_check: every theorem specbound relies on, checked by code.

Each :class:`Theorem` of the registry has an id, a statement (plain text and LaTeX), its source,
its exact conditions, whether specbound relies on it, and a ``check(mode)`` that evaluates the
statement on exact operators over a fixed random sample, adversarial families and a Hypothesis
search for counterexamples, reporting the instances checked, the worst margin and any
counterexample (:class:`CheckResult`).

Run ``python -m proofs_check`` (quick mode, under two minutes on two CPU cores) or
``python -m proofs_check --thorough``; it prints a table and writes ``docs/proofs.md``. The
process exits non-zero only when a statement the library relies on fails.

>>> from proofs_check import get, Mode
>>> result = get("G1").check(Mode("quick"))
>>> result.verdict
'PASS'
"""

from .harness import Search, Skip, combine, run
from .registry import CheckResult, Mode, Theorem, get, register, theorems
from .runner import Outcome, exit_code, run_all

__all__ = [
    "CheckResult",
    "Mode",
    "Outcome",
    "Search",
    "Skip",
    "Theorem",
    "combine",
    "exit_code",
    "get",
    "register",
    "run",
    "run_all",
    "theorems",
]
