"""The theorem registry: what a theorem entry holds, what a check returns, and the run modes.

A :class:`Theorem` is a statement the library relies on (``relied_on=True``: a guarantee of
``specbound`` depends on it) or an informative one (a property, a sharpness example, a
non-guarantee, or a published claim that specbound does not rely on). Its ``check`` evaluates
the statement on exact operators and returns a :class:`CheckResult`.

Two kinds of statement:

* ``"forall"`` — a universal claim. Each instance gets a *margin* (positive or zero: the claim
  holds there, e.g. ``upper / exact - 1`` for an upper bound); the verdict is ``PASS`` when the
  worst margin is ``>= -tolerance`` and ``FAIL`` with the worst instance as counterexample
  otherwise.
* ``"exists"`` — an existence claim (a sharpness example, a non-guarantee such as "AOL is not
  1-Lipschitz under reflect padding without compensation"). The margin measures how strongly an
  instance witnesses it; the verdict is ``PASS`` when a witness with margin ``> tolerance`` is
  found, ``FAIL`` otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

QUANTIFIERS = ("forall", "exists")
MODES = ("quick", "thorough")


@dataclass(frozen=True)
class Mode:
    """How hard a check searches.

    Attributes
    ----------
    name : {"quick", "thorough"}
        ``quick`` keeps the whole registry under two minutes on two CPU cores (CI);
        ``thorough`` draws many more random and Hypothesis instances.
    seed : int
        Base seed of the random samples (each theorem offsets it by a hash of its id).
    """

    name: str = "quick"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.name!r}")

    @property
    def thorough(self) -> bool:
        return self.name == "thorough"

    def pick(self, quick: int, thorough: int) -> int:
        """``quick`` in quick mode, ``thorough`` in thorough mode."""
        return thorough if self.thorough else quick


@dataclass
class CheckResult:
    """What a check found.

    Attributes
    ----------
    quantifier : {"forall", "exists"}
    instances : int
        Instances evaluated (all sources together).
    margin : float
        ``forall``: the worst (smallest) margin; ``exists``: the best (largest) one.
    example : str or None
        ``forall``: the counterexample (the worst instance) when the verdict is FAIL;
        ``exists``: the witness when one was found.
    tolerance : float
        Margins ``>= -tolerance`` (``forall``) count as holding; ``exists`` needs a margin
        ``> tolerance``.
    by_source : dict
        Instances per source: ``random``, ``adversarial``, ``hypothesis``.
    notes : list of str
        Evidence worth reporting (rates, observed constants, skipped instances).
    seconds : float
    error : str or None
        The check itself raised: reported as ERROR.
    """

    quantifier: str
    instances: int
    margin: float
    example: str | None = None
    tolerance: float = 0.0
    by_source: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    @property
    def verdict(self) -> str:
        """``PASS``, ``FAIL`` or ``ERROR``."""
        if self.error is not None:
            return "ERROR"
        if self.instances == 0 or math.isnan(self.margin):
            return "FAIL"
        if self.quantifier == "forall":
            return "PASS" if self.margin >= -self.tolerance else "FAIL"
        return "PASS" if self.margin > self.tolerance else "FAIL"

    @property
    def counterexample(self) -> str | None:
        """The counterexample of a failed universal claim (None otherwise)."""
        return self.example if self.quantifier == "forall" and self.verdict == "FAIL" else None

    def to_dict(self) -> dict:
        return {
            "quantifier": self.quantifier,
            "verdict": self.verdict,
            "instances": self.instances,
            "margin": self.margin,
            "example": self.example,
            "tolerance": self.tolerance,
            "by_source": dict(self.by_source),
            "notes": list(self.notes),
            "seconds": self.seconds,
            "error": self.error,
        }


@dataclass(frozen=True)
class Theorem:
    """One statement, where it comes from, when it holds, and its executable check.

    Attributes
    ----------
    id : str
        Short identifier (``"G1"``, ``"Z3"``, ``"FP-GRAM"``, ...).
    title : str
    statement : str
        Plain text.
    latex : str
        The statement in LaTeX (MathJax; without the ``$`` delimiters).
    source : str
        Paper and section, or ``"derived in specbound"``.
    conditions : str
        The exact hypotheses under which it is claimed.
    relied_on : bool
        True when a guarantee of the library depends on it: a FAIL then makes
        ``python -m proofs_check`` exit non-zero.
    check : callable
        ``check(mode) -> CheckResult``.
    proof : str
        Proof sketch (for statements derived in specbound).
    quantifier : {"forall", "exists"}
    expected : {"PASS", "FAIL"}
        ``FAIL`` for a published claim known to be false as stated (reported, never hidden).
    family : str
        Group of theorems (set by the module that registers it).
    """

    id: str
    title: str
    statement: str
    latex: str
    source: str
    conditions: str
    relied_on: bool
    check: Callable[[Mode], CheckResult]
    proof: str = ""
    quantifier: str = "forall"
    expected: str = "PASS"
    family: str = ""

    def __post_init__(self) -> None:
        if self.quantifier not in QUANTIFIERS:
            raise ValueError(f"quantifier must be one of {QUANTIFIERS}, got {self.quantifier!r}")
        if self.expected not in ("PASS", "FAIL"):
            raise ValueError(f"expected must be PASS or FAIL, got {self.expected!r}")


REGISTRY: dict[str, Theorem] = {}


def register(theorem: Theorem) -> Theorem:
    """Add a theorem to the registry (ids are unique)."""
    if theorem.id in REGISTRY:
        raise RuntimeError(f"theorem {theorem.id!r} registered twice")
    REGISTRY[theorem.id] = theorem
    return theorem


def theorems() -> list[Theorem]:
    """Every registered theorem, in registration order (importing the families first)."""
    from . import families  # noqa: F401  (registers)

    return list(REGISTRY.values())


def get(theorem_id: str) -> Theorem:
    """The theorem with this id."""
    theorems()
    try:
        return REGISTRY[theorem_id]
    except KeyError:
        raise KeyError(f"unknown theorem {theorem_id!r}; known: {sorted(REGISTRY)}") from None
