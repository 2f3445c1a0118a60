"""Running one statement over random instances, adversarial families and a Hypothesis search.

A :class:`Search` describes how to evaluate a statement: a margin function (positive or zero
where a universal claim holds; positive where an instance witnesses an existence claim) and
three sources of instances. :func:`run` evaluates them in order (fixed random sample,
adversarial families, Hypothesis search guided by :func:`hypothesis.target` towards the worst
margin) and returns a :class:`~proofs_check.registry.CheckResult`. A universal claim stops at
its first counterexample source; an existence claim stops at its first witness.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, Verbosity, given, reject, settings, target
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from .registry import CheckResult, Mode

SOURCES = ("random", "adversarial", "hypothesis")


class Skip(Exception):
    """Raised by a margin function for an instance outside the statement's conditions."""


class _Decided(Exception):
    """Internal: stops a Hypothesis search once the verdict is known."""


def describe(x: Any, limit: int = 360) -> str:
    """A short, reproducible repr of an instance (arrays with full float64 precision)."""
    text = _describe(x)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(x: Any) -> str:
    if isinstance(x, np.ndarray):
        if x.size <= 40:
            body = np.array2string(
                x, precision=17, separator=",", threshold=64, max_line_width=10**6
            )
            return f"array({' '.join(body.split())}, shape={x.shape})"
        return f"array(shape={x.shape}, min={x.min():.6g}, max={x.max():.6g})"
    if hasattr(x, "describe") and callable(x.describe):
        return x.describe()
    if isinstance(x, dict):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in x.items()) + "}"
    if isinstance(x, (tuple, list)):
        return "(" + ", ".join(_describe(v) for v in x) + ")"
    if isinstance(x, float):
        return repr(x)
    return repr(x)


@dataclass
class Search:
    """How to check one statement.

    Attributes
    ----------
    margin : callable
        ``margin(instance) -> float``; may raise :class:`Skip`.
    quantifier : {"forall", "exists"}
    tolerance : float
        Rounding allowance of the margin (see :class:`~proofs_check.registry.CheckResult`).
    random : callable, optional
        ``random(rng, count) -> iterable of instances``: the fixed random sample.
    adversarial : callable, optional
        ``adversarial(mode) -> iterable of instances``: the adversarial families and stored
        cases (quick mode may use a covering subset).
    strategy : hypothesis strategy, optional
        Instances for the Hypothesis search; default: seeds of ``random`` (as many as the
        random sample), so every check with a generator also gets a Hypothesis search.
    n_random, n_hypothesis : (quick, thorough)
        Counts per mode.
    describe : callable
        Short text of an instance (for counterexamples and witnesses).
    key : str
        Seeds the random sample and the Hypothesis search (use the theorem id).
    """

    margin: Callable[[Any], float]
    quantifier: str = "forall"
    tolerance: float = 0.0
    random: Callable[[np.random.Generator, int], Iterable[Any]] | None = None
    adversarial: Callable[[Mode], Iterable[Any]] | None = None
    strategy: st.SearchStrategy | None = None
    n_random: tuple[int, int] = (10, 100)
    n_hypothesis: tuple[int, int] = (12, 300)
    describe: Callable[[Any], str] = describe
    key: str = ""
    notes: list[str] = field(default_factory=list)


class _Tracker:
    def __init__(self, search: Search) -> None:
        self.search = search
        self.forall = search.quantifier == "forall"
        self.margin = math.inf if self.forall else -math.inf
        self.example: Any = None
        self.counts = dict.fromkeys(SOURCES, 0)
        self.skipped = 0
        self.nan = 0

    def record(self, x: Any, source: str) -> float:
        m = float(self.search.margin(x))
        self.counts[source] += 1
        if math.isnan(m):  # a NaN where a number is claimed is a failure of the claim
            self.nan += 1
            m = -math.inf if self.forall else m
        if (self.forall and m < self.margin) or (not self.forall and m > self.margin):
            self.margin, self.example = m, x
        return m

    def decided(self) -> bool:
        tol = self.search.tolerance
        if self.forall:
            return self.margin < -tol
        return self.margin > tol


def _seed(mode: Mode, key: str) -> int:
    return (mode.seed * 1_000_003 + zlib.crc32(key.encode())) % 2**32


def seeded(random: Callable[[np.random.Generator, int], Iterable[Any]]) -> st.SearchStrategy:
    """A strategy drawing one instance of a random generator from a Hypothesis-chosen seed (the
    search of checks whose instances have no structured strategy)."""
    return st.integers(0, 2**32 - 1).map(lambda s: next(iter(random(np.random.default_rng(s), 1))))


def _run_hypothesis(search: Search, mode: Mode, tracker: _Tracker) -> None:
    n = mode.pick(*search.n_hypothesis)
    strategy = search.strategy
    if strategy is None and search.random is not None:
        strategy = seeded(search.random)
        n = min(n, mode.pick(*search.n_random))
    if strategy is None or n <= 0:
        return
    phases = [Phase.explicit, Phase.generate, Phase.target]
    if mode.thorough:
        phases.append(Phase.shrink)
    config = settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=not mode.thorough,
        phases=phases,
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        print_blob=False,
    )
    sign = -1.0 if tracker.forall else 1.0

    def body(x: Any) -> None:
        try:
            m = tracker.record(x, "hypothesis")
        except Skip:
            tracker.skipped += 1
            reject()
        if math.isfinite(m):
            target(sign * max(-1e300, min(1e300, m)))
        if tracker.decided():
            raise _Decided

    probe = config(given(strategy)(body))
    if mode.thorough:
        probe = hypothesis_seed(_seed(mode, search.key))(probe)
    try:
        probe()
    except Unsatisfiable:
        search.notes.append("the Hypothesis strategy drew no instance within the conditions")
    except Exception as exc:  # the search ends by raising once the verdict is decided
        if not tracker.decided() or not _is_decided(exc):
            raise


def _is_decided(exc: BaseException) -> bool:
    if isinstance(exc, _Decided):
        return True
    inner = getattr(exc, "exceptions", ())
    return bool(inner) and all(_is_decided(e) for e in inner)


def run(search: Search, mode: Mode) -> CheckResult:
    """Evaluate ``search`` in ``mode`` and return its :class:`CheckResult`."""
    start = time.perf_counter()
    tracker = _Tracker(search)
    error = None
    try:
        if search.random is not None:
            rng = np.random.default_rng(_seed(mode, search.key))
            for x in search.random(rng, mode.pick(*search.n_random)):
                try:
                    tracker.record(x, "random")
                except Skip:
                    tracker.skipped += 1
                if tracker.decided():
                    break
        if search.adversarial is not None and not tracker.decided():
            for x in search.adversarial(mode):
                try:
                    tracker.record(x, "adversarial")
                except Skip:
                    tracker.skipped += 1
                if tracker.decided():
                    break
        if not tracker.decided():
            _run_hypothesis(search, mode, tracker)
    except Exception as exc:  # a bug in a check (or in the library) is reported as ERROR
        error = f"{type(exc).__name__}: {exc}"
    notes = list(search.notes)
    if tracker.skipped:
        notes.append(f"{tracker.skipped} drawn instances were outside the conditions (skipped)")
    if tracker.nan:
        notes.append(f"{tracker.nan} instances produced NaN")
    return CheckResult(
        quantifier=search.quantifier,
        instances=sum(tracker.counts.values()),
        margin=tracker.margin,
        example=None if tracker.example is None else search.describe(tracker.example),
        tolerance=search.tolerance,
        by_source={k: v for k, v in tracker.counts.items() if v},
        notes=notes,
        seconds=time.perf_counter() - start,
        error=error,
    )


def combine(results: Iterable[CheckResult], quantifier: str = "forall") -> CheckResult:
    """Merge the results of several searches of one statement (sub-claims of a theorem).

    ``forall``: every part must hold; the worst part decides. ``exists``: the best part
    decides.
    """
    results = list(results)
    if not results:
        raise ValueError("combine needs at least one result")
    errors = [r.error for r in results if r.error]
    by_source: dict[str, int] = {}
    for r in results:
        for k, v in r.by_source.items():
            by_source[k] = by_source.get(k, 0) + v

    def score(r: CheckResult) -> float:
        return r.margin + r.tolerance if quantifier == "forall" else r.margin - r.tolerance

    key = min if quantifier == "forall" else max
    decisive = key(results, key=score)
    return CheckResult(
        quantifier=quantifier,
        instances=sum(r.instances for r in results),
        margin=decisive.margin,
        example=decisive.example,
        tolerance=decisive.tolerance,
        by_source=by_source,
        notes=[n for r in results for n in r.notes],
        seconds=sum(r.seconds for r in results),
        error="; ".join(errors) if errors else None,
    )
