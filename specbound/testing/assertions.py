"""The float64 ground truth and one-sided assertions of bounds against it."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..operators import conv_matrix, exact_norm
from ..spec import ConvSpec

ROUNDING_RTOL = 1e-12
"""The one rounding allowance of the tests: relative room for float64 rounding in a ground
truth (an exact norm is a singular value or eigenvalue computed in float64, accurate to a few
units of 1e-16 relative) and in a 1-Lipschitz guarantee (a tight layer, e.g. an orthogonal
kernel, can exceed 1 by a few units in the last place; the value of
``specbound.layers.ROUNDING_ALLOWANCE``)."""


def dense_norm(kernel: Any, spec: ConvSpec) -> float:
    """``||A||_2`` from the SVD of the dense float64 matrix (independent of every circulant
    or symbol route of :func:`~specbound.operators.exact_norm`).

    The kernel is first scaled by an exact power of two (largest entry in ``[1, 2)``) and the
    norm scaled back, so kernels at 1e-300 or 1e+300 neither underflow nor overflow; an empty
    operator has norm 0.

    Parameters
    ----------
    kernel : array_like
        ``(c_out, c_in // groups, kh, kw)``.
    spec : ConvSpec
        The layer; it needs an ``input_size`` (the matrix is built with the size guard of
        :func:`~specbound.operators.conv_matrix`).

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> from specbound import ConvSpec
    >>> from specbound.testing import dense_norm
    >>> round(dense_norm(np.ones((1, 1, 3, 3)), ConvSpec("circular", input_size=(6, 6))), 12)
    9.0
    """
    k = np.asarray(getattr(kernel, "detach", lambda: kernel)(), dtype=np.float64)
    peak = float(np.abs(k).max()) if k.size else 0.0
    if peak == 0.0:
        return 0.0
    j = 1 - math.frexp(peak)[1]
    a = conv_matrix(np.ldexp(k, j), spec)
    if a.size == 0:
        return 0.0
    return math.ldexp(float(np.linalg.norm(a, 2)), -j)


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
