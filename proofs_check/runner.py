"""Running the registry: one :class:`Outcome` per theorem, and the process exit code."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .registry import CheckResult, Mode, Theorem, theorems


@dataclass
class Outcome:
    """A theorem and what its check found."""

    theorem: Theorem
    result: CheckResult

    @property
    def verdict(self) -> str:
        return self.result.verdict

    @property
    def blocking(self) -> bool:
        """A statement the library relies on did not pass: the run must fail."""
        return self.theorem.relied_on and self.verdict != "PASS"

    @property
    def label(self) -> str:
        """The verdict as reported: PASS, FAIL, ERROR, or FAIL qualified for informative
        statements (``not as stated`` for a published claim found false)."""
        verdict = self.verdict
        if verdict == "PASS" or self.theorem.relied_on:
            return verdict
        if verdict == "FAIL":
            expected = self.theorem.expected == "FAIL"
            return "FAIL (not as stated)" if expected else "FAIL (informative)"
        return f"{verdict} (informative)"

    @property
    def surprising(self) -> bool:
        """The verdict differs from the one expected (e.g. a known-false claim passed)."""
        return self.verdict != self.theorem.expected


def check_one(theorem: Theorem, mode: Mode) -> CheckResult:
    """Run one theorem's check; an exception becomes an ERROR result (never hidden)."""
    start = time.perf_counter()
    try:
        return theorem.check(mode)
    except Exception as exc:  # a crash of a check is reported, not propagated
        detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return CheckResult(
            quantifier=theorem.quantifier,
            instances=0,
            margin=float("nan"),
            seconds=time.perf_counter() - start,
            error=detail,
        )


def run_all(
    mode: Mode | None = None,
    ids: Iterable[str] | None = None,
    progress: Callable[[Outcome, int, int], None] | None = None,
) -> list[Outcome]:
    """Check every registered theorem (or those in ``ids``), in registry order (default: quick
    mode)."""
    mode = Mode() if mode is None else mode
    selected = theorems()
    if ids is not None:
        wanted = list(ids)
        known = {t.id for t in selected}
        unknown = [i for i in wanted if i not in known]
        if unknown:
            raise KeyError(f"unknown theorem ids {unknown}; known: {sorted(known)}")
        selected = [t for t in selected if t.id in wanted]
    outcomes = []
    for i, theorem in enumerate(selected, 1):
        outcome = Outcome(theorem, check_one(theorem, mode))
        outcomes.append(outcome)
        if progress is not None:
            progress(outcome, i, len(selected))
    return outcomes


def exit_code(outcomes: Iterable[Outcome]) -> int:
    """1 if a statement the library relies on failed or errored, else 0."""
    return 1 if any(o.blocking for o in outcomes) else 0
