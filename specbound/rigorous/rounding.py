"""Unit roundoff, the gamma constants, and directed rounding by inflation."""

from __future__ import annotations

import math

import numpy as np
import torch

U = 2.0**-53
"""Unit roundoff of IEEE-754 binary64."""

LIBM_ULPS = 8
"""Assumed worst-case error of ``cos``/``sin`` in units in the last place (glibc documents
at most 1-2 ulp on x86-64; we allow 8)."""


def gamma(n: float) -> float:
    """``gamma_n = n u / (1 - n u)`` (Higham, eq. 3.8); ``n`` may be fractional-free large."""
    nu = n * U
    if nu >= 0.5:
        raise ValueError(f"gamma_n is only meaningful for n*u < 1/2, got n={n}")
    return up(nu / (1.0 - nu))


def up(x: float, ops: int = 4) -> float:
    """An upper bound on the exact value of a non-negative quantity computed as ``x`` with at
    most ``ops`` correctly rounded operations: ``x (1 + ops u)`` rounded up once more."""
    if x < 0:
        raise ValueError("up() is for non-negative quantities")
    if math.isinf(x):
        return x
    return math.nextafter(x * (1.0 + (ops + 1) * U), math.inf)


def down(x: float, ops: int = 4) -> float:
    """A lower bound, for a non-negative ``x`` computed with at most ``ops`` operations."""
    if x <= 0:
        return 0.0
    return max(0.0, math.nextafter(x * (1.0 - (ops + 1) * U), 0.0))


def frobenius_upper(x: torch.Tensor, dims: tuple[int, ...] = (-2, -1)) -> torch.Tensor:
    """Upper bounds on the Frobenius norms of ``x`` over ``dims`` (real or complex).

    The computed sum of ``n`` squares satisfies ``s <= s_hat / (1 - gamma_{n+2})`` (the
    squares themselves are rounded too); the square root adds one rounding; a complex entry
    is two squares.
    """
    n = math.prod(x.shape[d] for d in dims) * (2 if x.is_complex() else 1)
    # scale by an exact power of two so the largest entry is in [1, 2): squares of the
    # significant entries neither underflow nor overflow
    s = pow2_scale(x.abs().amax(dim=dims, keepdim=True))
    y = x * s
    sq = (y.real**2 + y.imag**2) if y.is_complex() else y**2
    total = sq.sum(dim=dims)
    factor = (1.0 + 4 * U) / (1.0 - gamma(n + 2))
    # after scaling the exact sum is >= 1; squares that underflow lose < 2^-1074 each, far
    # inside the 4u slack of ``factor`` for any n < 2^1000
    return torch.sqrt(total * factor) * (1.0 + 4 * U) / s.reshape(total.shape)


def pow2_scale(values: torch.Tensor) -> torch.Tensor:
    """Powers of two ``s`` with ``s * values`` in ``[1, 2)`` (``1`` where ``values == 0``).

    Multiplying by a power of two is exact in binary floating point (barring over/underflow),
    so normalising with it adds no rounding error.
    """
    safe = torch.where(values > 0, values, torch.ones_like(values))
    _, exponent = torch.frexp(safe)  # safe = m * 2^e with m in [0.5, 1)
    return torch.ldexp(torch.ones_like(safe), (1 - exponent).to(safe.dtype))


def as_float(x: torch.Tensor | np.ndarray | float) -> float:
    return float(x.item() if hasattr(x, "item") else x)
