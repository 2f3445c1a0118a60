"""Gram iteration with a rigorous floating-point upper bound, for batches of matrices.

Gram iteration (Delattre et al., ICML 2023, arXiv 2305.16173, Sec. 3) bounds ``sigma_1(X)`` by
``||G_T||_F^{2^-T}`` with ``G_{t+1} = G_t^* G_t``. In floating point each product carries an
error; here every step is accounted for:

* the iterate is normalised by an exact power of two ``s_t`` (:func:`pow2_scale`), so
  ``H_t = s_t G_t`` is exact and every ``G_t`` stays of order one (no logs, no overflow;
  an iterate whose entries are all subnormal is scaled by ``2^1023``, still exactly);
* ``G_{t+1} = fl(H_t^* H_t)`` is computed by real GEMMs of inner length ``2m`` (the complex
  product written out), so ``|G_{t+1} - H_t^* H_t| <= sqrt(2) gamma_{2m} |H_t|^T |H_t|``
  entrywise, plus ``2^-1075`` per product that underflows (gradual underflow; additions
  of subnormals are exact), so ``||E_t||_2 <= e_t := sqrt(2) gamma_{2m} ||H_t||_F^2 +
  2 m r 2^-1074`` (``r`` the Gram size);
* by Weyl's inequality ``sigma_1(H_t)^2 = lambda_max(H_t^* H_t) <= sigma_1(G_{t+1}) + e_t``,
  hence ``sigma_1(G_t) <= sqrt(sigma_1(G_{t+1}) + e_t) / s_t``; starting from
  ``sigma_1(G_T) <= ||G_T||_F`` and unwinding with upward rounding gives a bound on
  ``sigma_1(G_0)``, valid for every ``T``.

The relative cost of rounding is at most about ``sqrt(2) gamma_{2m} r`` (``r`` the Gram size),
``~1e-10`` for 512 channels.
"""

from __future__ import annotations

import math

import torch

from .rounding import (
    TINY_UNIT,
    U,
    frobenius_upper,
    gamma,
    pow2_scale,
    round_down_if_subnormal,
    round_up_if_subnormal,
)

SQRT2 = math.sqrt(2.0)


def _gram(h: torch.Tensor) -> torch.Tensor:
    """``fl(H^* H)`` through real GEMMs of inner length ``2m`` (``H`` complex ``(B, m, r)``)."""
    y = torch.cat([h.real, h.imag], dim=-2)
    z = torch.cat([h.imag, -h.real], dim=-2)
    yt = y.transpose(-1, -2)
    return torch.complex(yt @ y, yt @ z)


class RigorousGram:
    """State of a batched, rigorously bounded Gram iteration.

    After ``k`` calls of :meth:`step`, :meth:`bound` returns for each matrix a number that is
    ``>= sigma_1(x)`` in exact arithmetic about the stored floating-point ``x``.

    Parameters
    ----------
    x : torch.Tensor
        ``(B, p, q)`` complex128 (or float64) matrices. The Gram is taken on the smaller side.
    """

    def __init__(self, x: torch.Tensor):
        if not (x.is_complex() or x.dtype == torch.float64):
            raise TypeError(f"RigorousGram needs float64 or complex128, got {x.dtype}")
        self.transposed = x.shape[-2] < x.shape[-1]
        if self.transposed:
            x = x.mH
        self.current = x  # G_t (G_0 = x)
        self.inner = x.shape[-2]  # inner length of the next product
        self.scales: list[torch.Tensor] = []
        self.errors: list[torch.Tensor] = []

    @property
    def steps(self) -> int:
        return len(self.scales)

    def step(self) -> None:
        g = self.current
        # any positive scale works (s is an exact power of two); the largest entry cannot
        # under- or overflow where a norm of the matrix could
        s = pow2_scale(g.abs().amax(dim=(-2, -1)))
        h = g * s[:, None, None]
        # products that underflow: <= 2^-1075 each, 2m per entry of an r x r result
        tiny = 2 * self.inner * h.shape[-1] * TINY_UNIT
        if h.is_complex():  # written as real GEMMs of inner length 2m
            e = SQRT2 * gamma(2 * self.inner) * frobenius_upper(h) ** 2 * (1 + 4 * U) + tiny
            self.current = _gram(h)
        else:
            e = gamma(self.inner) * frobenius_upper(h) ** 2 * (1 + 4 * U) + tiny
            self.current = h.mT @ h
        self.inner = self.current.shape[-1]
        self.scales.append(s)
        self.errors.append(e)

    def bound(self) -> torch.Tensor:
        """Rigorous upper bound on ``sigma_1(G_0)`` for each matrix, shape ``(B,)``."""
        b = frobenius_upper(self.current)
        for s, e in zip(reversed(self.scales), reversed(self.errors), strict=True):
            b = round_up_if_subnormal(torch.sqrt((b + e) * (1 + 2 * U)) * (1 + 2 * U) / s)
        return torch.where(torch.isnan(b), torch.full_like(b, float("inf")), b)

    def top_vectors(self) -> torch.Tensor:
        """Approximate top right singular vectors of the original matrices (columns of the
        current iterate with the largest norm), shape ``(B, r)``; for witnesses only."""
        g = self.current
        col = torch.linalg.vector_norm(g, dim=-2).argmax(dim=-1)
        return g[torch.arange(g.shape[0], device=g.device), :, col]

    def select(self, keep: torch.Tensor) -> None:
        """Keep only the matrices where ``keep`` (bool ``(B,)``) is True."""
        self.current = self.current[keep]
        self.scales = [s[keep] for s in self.scales]
        self.errors = [e[keep] for e in self.errors]


def matvec_norm_lower(m: torch.Tensor, v: torch.Tensor, matrix_error: float) -> torch.Tensor:
    """Rigorous lower bounds on ``||M v|| / ||v||`` for the exact matrices ``M`` with
    ``||M - m||_2 <= matrix_error`` (``m`` ``(B, p, q)``, ``v`` ``(B, q)``).

    ``y = fl(m v)`` has ``|y - m v| <= sqrt(2) gamma_{2q} |m||v|``, so
    ``||M v|| >= ||y|| - sqrt(2) gamma_{2q} ||m||_F ||v|| - matrix_error ||v||``. Under
    gradual underflow each product of ``y`` and each square of ``||y||^2`` may carry
    ``2^-1075`` more (subtracted), and the result is moved down past any subnormal rounding.
    A NaN (from non-finite input) gives 0.

    Each ``m`` is first scaled up by a power of two ``s >= 1`` (largest entry in ``[1, 2)``;
    exact, since nothing can under- or overflow) and the bound for ``s M`` (matrix error
    ``s * matrix_error``) divided by ``s``, moved down past subnormal rounding: tiny matrices
    keep a tight lower bound instead of losing it to squares that underflow.
    """
    scale = torch.clamp(pow2_scale(m.abs().amax(dim=(-2, -1))), min=1.0)
    m = m * scale[..., None, None].to(m.dtype)
    if not m.is_complex():
        m = m.to(torch.complex128)
    v = v.to(m.dtype)
    y = (m @ v[..., None])[..., 0]
    n_y = 2 * y.shape[-1]
    sq = (y.real**2 + y.imag**2).sum(-1) * (1 - gamma(n_y + 2)) - n_y * TINY_UNIT
    y_norm = torch.sqrt(torch.clamp(sq, min=0.0)) * (1 - 2 * U)
    v_up = frobenius_upper(v[..., None])
    # each entry of y: 2q products that may underflow
    y_tiny = 2 * m.shape[-1] * TINY_UNIT * (n_y**0.5) * (1 + 4 * U)
    error = matrix_error * scale  # exact (a power of two) or inf: then the bound is 0
    slack = (SQRT2 * gamma(2 * m.shape[-1] + 2) * frobenius_upper(m) + error) * v_up
    safe_v = torch.where(v_up > 0, v_up, torch.ones_like(v_up))
    lower = (y_norm - y_tiny - slack * (1 + 4 * U)) * (1 - 2 * U) / safe_v * (1 - 2 * U)
    lower = round_down_if_subnormal(torch.clamp(lower, min=0.0))
    lower = round_down_if_subnormal(round_down_if_subnormal(lower / scale))
    ok = (v_up > 0) & ~torch.isnan(lower)
    return torch.where(ok, lower, torch.zeros_like(lower))


def power_vectors(m: torch.Tensor, n_iter: int = 30, seed: int = 0) -> torch.Tensor:
    """Approximate top right singular vectors of a batch by power iteration on ``m^* m``
    (heuristic, for witnesses; no guarantee attaches to the vectors themselves)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(m.shape[0], m.shape[-1], 2, generator=gen, dtype=torch.float64)
    v = torch.complex(v[..., 0], v[..., 1]).to(
        m.device, m.dtype if m.is_complex() else torch.complex128
    )
    mc = m.to(v.dtype)
    for _ in range(n_iter):
        v = (mc.mH @ (mc @ v[..., None]))[..., 0]
        v = v / torch.clamp(torch.linalg.vector_norm(v, dim=-1, keepdim=True), min=1e-300)
    return v
