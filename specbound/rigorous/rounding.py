"""Unit roundoff, the gamma constants, and directed rounding by inflation."""

from __future__ import annotations

import math
import sys

import numpy as np
import torch

U = 2.0**-53
"""Unit roundoff of IEEE-754 binary64."""

TINY = 2.0**-1022
"""Smallest positive normal binary64 number; below it results are subnormal."""

TINY_UNIT = 2.0**-1074
"""Smallest positive subnormal: under gradual underflow (checked at run time by
:func:`specbound.rigorous.fpenv.gradual_underflow`), a product or quotient that underflows
carries an absolute error of at most half of it, and additions stay exact."""

MAX_EXPONENT = 1023
"""``2^1023`` is the largest finite power of two."""

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
    is two squares. Under gradual underflow a square that underflows carries an absolute
    error ``<= 2^-1075``, so ``n 2^-1074`` is added to the sum of a non-zero block; the final
    division by the power-of-two scale is rounded up when its result may be subnormal (it is
    exact otherwise). Blocks whose entries are all subnormal or zero are handled too
    (:func:`pow2_scale` never overflows).
    """
    n = math.prod(x.shape[d] for d in dims) * (2 if x.is_complex() else 1)
    # scale by an exact power of two so the largest entry is in [1, 2) (at least 2^-51
    # when it is subnormal): squares of the significant entries neither underflow nor
    # overflow
    top = x.abs().amax(dim=dims, keepdim=True)
    s = pow2_scale(top)
    y = x * s
    sq = (y.real**2 + y.imag**2) if y.is_complex() else y**2
    total = sq.sum(dim=dims)
    underflow = torch.where(top.reshape(total.shape) > 0, n * TINY_UNIT, 0.0)
    factor = (1.0 + 4 * U) / (1.0 - gamma(n + 2))
    out = torch.sqrt((total + underflow) * factor) * (1.0 + 4 * U) / s.reshape(total.shape)
    return round_up_if_subnormal(out)


def round_up_if_subnormal(x: torch.Tensor) -> torch.Tensor:
    """``x`` with every entry below ``4 * tiny`` moved one ulp up: the last operation that
    produced it (a division or product by a power of two, correctly rounded) is exact for a
    normal result and off by at most half an ulp of ``2^-1074`` for a subnormal one."""
    return torch.where(x < 4 * TINY, torch.nextafter(x, torch.full_like(x, math.inf)), x)


def round_down_if_subnormal(x: torch.Tensor) -> torch.Tensor:
    """The lower-bound counterpart of :func:`round_up_if_subnormal` (never below 0)."""
    moved = torch.clamp(torch.nextafter(x, torch.zeros_like(x)), min=0.0)
    return torch.where(x < 4 * TINY, moved, x)


def pow2_exponent(values: torch.Tensor) -> torch.Tensor:
    """Integers ``j`` (int64) with ``values * 2^j`` in ``[1, 2)``: the one target range of
    every power-of-two prescaling in the package.

    ``j = 0`` where ``values`` is 0, NaN or infinite (the caller's result stays NaN/inf).
    ``2^j`` is capped at the largest finite power of two of the dtype (``2^1023`` in float64,
    ``2^127`` in float32), so a subnormal ``values`` (below ``2^-1022`` in float64) is scaled
    to ``[2^-51, 1)`` instead of overflowing: the product is still exact (a subnormal is a
    multiple of ``2^-1074``) and finite. No lower cap is needed: ``values <= max`` gives
    ``j >= -1023`` (``-127``).
    """
    safe = torch.where((values > 0) & torch.isfinite(values), values, torch.ones_like(values))
    _, exponent = torch.frexp(safe)  # safe = m * 2^e with m in [0.5, 1)
    top = math.frexp(torch.finfo(values.dtype).max)[1] - 1  # 1023 in float64, 127 float32
    return torch.clamp(1 - exponent.to(torch.int64), max=top)


def pow2_scale(values: torch.Tensor) -> torch.Tensor:
    """Powers of two ``s = 2^j`` with ``s * values`` in ``[1, 2)`` (``1`` where ``values`` is
    0, NaN or infinite), ``j`` of :func:`pow2_exponent`, in the dtype of ``values``.

    Multiplying by a power of two is exact in binary floating point unless the product
    under- or overflows; see :func:`pow2_exponent` for subnormal ``values``.
    """
    power = pow2_exponent(values).to(values.dtype)
    return torch.ldexp(torch.ones_like(values), power)


def prescale(kernel: np.ndarray) -> tuple[np.ndarray, int, float]:
    """``(K 2^j, j, err)`` with ``max|K| 2^j`` in ``[1, 2)`` (:func:`pow2_exponent`).

    The scaling is exact unless entries become subnormal, whose rounding (``<= 2^-1075``
    each) is returned as the Frobenius bound ``err``; a zero kernel gives ``(K, 0, 0.0)``.
    Undo it on a bound with :func:`scale_back_outward`.
    """
    peak = float(np.abs(kernel).max()) if kernel.size else 0.0
    if peak == 0.0:
        return kernel, 0, 0.0
    j = int(pow2_exponent(torch.tensor(peak, dtype=torch.float64)))
    scaled = np.ldexp(kernel, j)
    tiny = np.abs(scaled) < sys.float_info.min
    err = math.sqrt(int(tiny.sum())) * 2.0**-1074 if tiny.any() else 0.0
    return scaled, j, err


def scale_back_outward(value: float, j: int, *, upward: bool) -> float:
    """``value * 2^-j`` rounded outward: up for an upper bound, down for a lower one.

    The product is exact unless it overflows (then ``inf`` for an upper bound, the largest
    float for a lower one) or is subnormal: ``math.ldexp`` rounds to nearest there, so the
    result is scaled back (exact: a multiple of ``2^-1074`` times a power of two, near
    ``value``) and moved one ulp outward when it landed on the wrong side of ``value``. A NaN
    upper bound becomes ``inf``, a NaN lower bound 0.
    """
    if math.isnan(value):
        return math.inf if upward else 0.0
    try:
        out = math.ldexp(value, -j)
    except OverflowError:
        return math.inf if upward else sys.float_info.max
    back = math.ldexp(out, j)
    if upward and back < value:
        out = math.nextafter(out, math.inf)
    elif not upward and back > value:
        out = math.nextafter(out, 0.0)
    return out
