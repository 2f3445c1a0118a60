"""One-sided assertions of bounds against the exact float64 operator norm."""

from __future__ import annotations

from typing import Any

from ..operators import exact_norm
from ..spec import ConvSpec

ROUNDING_RTOL = 1e-12
"""Relative allowance for float64 rounding in the exact ground truth itself (the exact norm is
an eigenvalue computed in float64, accurate to a few units of 1e-16 relative)."""


def _value(bound: Any) -> float:
    return float(getattr(bound, "value", bound))


def assert_upper_bound(
    bound: Any, kernel: Any, spec: ConvSpec, *, rtol: float = ROUNDING_RTOL
) -> float:
    """Assert ``bound * (1 + rtol) >= exact_norm(kernel, spec)``; return the exact norm.

    ``bound`` may be a number or any object with a ``value`` attribute (e.g. a ``Bound``).
    """
    exact = exact_norm(kernel, spec)
    value = _value(bound)
    assert value * (1 + rtol) >= exact, (
        f"upper bound {value!r} is below the exact norm {exact!r} for {spec.describe()}"
    )
    return exact


def assert_lower_bound(
    bound: Any, kernel: Any, spec: ConvSpec, *, rtol: float = ROUNDING_RTOL
) -> float:
    """Assert ``bound * (1 - rtol) <= exact_norm(kernel, spec)``; return the exact norm."""
    exact = exact_norm(kernel, spec)
    value = _value(bound)
    assert value * (1 - rtol) <= exact, (
        f"lower bound {value!r} is above the exact norm {exact!r} for {spec.describe()}"
    )
    return exact
