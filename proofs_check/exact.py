"""Ground truth for the checks: float64 exact operators and higher-precision references.

Float64 (``specbound.operators``, accurate to a few units of 1e-16 relative):

* :func:`norm`, :func:`circ` — exact norms of a layer / of the stride-1 circular layer on a grid;
* :func:`symbol_sup_lower` — a lower bound on ``S(K) = sup_w sigma_max(K^(w))``: the grid
  maximum refined by a local search (every value is ``sigma_max`` at some point, so ``<= S``);
* :func:`symbol_sup_upper` — an upper bound on ``S(K)`` from a fine grid and the Bernstein
  factor (relies on G5, which is checked separately).

Higher precision (``mpmath``, 40 significant digits; ``fractions`` for exact sums), for the
floating-point soundness checks, where float64 ground truth would be as inexact as the code
under test:

* :func:`mp_sigma_max` — the largest singular value of a float64 matrix taken exactly as
  stored;
* :func:`exact_taps_matrix` / :func:`mp_norm` — the dense operator with exactly summed taps;
* :func:`mp_circ_norm` — a circular layer's norm from exact frequency matrices at the
  frequencies that float64 screening leaves in contention;
* :func:`exact_apply` — ``A x`` in exact rational arithmetic.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import mpmath
import numpy as np
from scipy.optimize import minimize

from specbound import ConvSpec
from specbound.operators import ConvLayer, exact_norm, frequency_matrices, symbol
from specbound.operators.circulant import circulant_engine
from specbound.operators.indexing import layer_axis_indices

from .harness import Skip

DPS = 40
"""Decimal digits of the mpmath references."""


# ----------------------------------------------------------------------------- float64
def norm(kernel: np.ndarray, spec: ConvSpec) -> float:
    """Exact float64 spectral norm of the layer (``specbound.operators.exact_norm``)."""
    return exact_norm(kernel, spec)


def matrix_norm(a: np.ndarray) -> float:
    """Spectral norm of a dense float64 matrix (0 for an empty one), by LAPACK's SVD."""
    return float(np.linalg.norm(a, 2)) if a.size else 0.0


def circ(kernel: np.ndarray, size: Any, dilation: Any = 1, groups: int = 1) -> float:
    """``sigma_circ(N)``: the stride-1 circular layer (total pad ``d(k-1)``) on ``size``."""
    return exact_norm(kernel, ConvSpec("circular", "same", size, dilation=dilation, groups=groups))


def degree(kernel: np.ndarray, dilation: Any = 1) -> tuple[int, int]:
    """``D = d(k-1)`` per axis: the degree of the symbol."""
    d = (dilation, dilation) if isinstance(dilation, int) else tuple(dilation)
    return (d[0] * (kernel.shape[2] - 1), d[1] * (kernel.shape[3] - 1))


def _sigma_at(kernel: np.ndarray, omega: np.ndarray, dilation: Any, groups: int) -> np.ndarray:
    mats = symbol(kernel, omega, dilation=dilation, groups=groups)
    return np.linalg.svd(mats, compute_uv=False)[..., 0]


def symbol_sup_lower(
    kernel: np.ndarray, dilation: Any = 1, groups: int = 1, grid: int | None = None
) -> float:
    """A lower bound on ``S(K)``: grid maximum, then a local search from the best points.

    Every value returned is ``sigma_max(K^(w))`` at an explicit frequency, hence ``<= S``
    (up to the float64 rounding of one symbol evaluation).
    """
    dh, dw = degree(kernel, dilation)
    n = grid or int(min(96, max(16, 12 * max(dh, dw, 1))))
    u = 2 * np.pi * np.arange(n) / n
    omega = np.stack(np.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    values = _sigma_at(kernel, omega, dilation, groups)
    best = float(values.max())
    if max(dh, dw) == 0 or best == 0.0:
        return best
    for start in omega[np.argsort(values)[-3:]]:

        def negative(w: np.ndarray) -> float:
            return -float(_sigma_at(kernel, w[None], dilation, groups)[0])

        res = minimize(
            negative,
            start,
            method="Nelder-Mead",
            options={"xatol": 1e-12, "fatol": 1e-15 * best, "maxiter": 400},
        )
        best = max(best, -float(res.fun))
    return best


def bernstein_factor(deg: tuple[int, int], grid: tuple[int, int]) -> float:
    """``1/sqrt(1 - (pi^2/2)(D_h/N_h + D_w/N_w)^2)`` (G5), ``inf`` where it does not apply."""
    t = deg[0] / grid[0] + deg[1] / grid[1]
    slack = 1.0 - 0.5 * math.pi**2 * t**2
    return math.inf if slack <= 0 else 1.0 / math.sqrt(slack)


def symbol_sup_upper(kernel: np.ndarray, dilation: Any = 1, groups: int = 1) -> float:
    """An upper bound on ``S(K)``: ``sigma_circ(N) * bernstein_factor`` on the grid
    ``N = 32 D`` per axis (factor below ``1.01``; relies on G5)."""
    dh, dw = degree(kernel, dilation)
    grid = (max(1, 32 * dh), max(1, 32 * dw))
    return circ(kernel, grid, dilation, groups) * bernstein_factor((dh, dw), grid)


# ----------------------------------------------------------------------------- exact / mp
def mp_sigma_max(matrix: Any, dps: int = DPS) -> mpmath.mpf:
    """Largest singular value of a real or complex float64 matrix, its stored values taken
    exactly, to ``dps`` digits (eigenvalue of the smaller Gram matrix in mpmath)."""
    a = np.asarray(matrix)
    if a.size == 0 or not np.any(a):
        return mpmath.mpf(0)
    with mpmath.workdps(dps):
        if np.iscomplexobj(a):
            m = mpmath.matrix(
                [[mpmath.mpc(float(z.real), float(z.imag)) for z in row] for row in a]
            )
            g = m * m.H if a.shape[0] <= a.shape[1] else m.H * m
            top = max(mpmath.re(e) for e in mpmath.eighe(g, eigvals_only=True))
        else:
            m = mpmath.matrix(a.tolist())
            g = m * m.T if a.shape[0] <= a.shape[1] else m.T * m
            top = max(mpmath.eigsy(g, eigvals_only=True))
        return mpmath.sqrt(max(top, mpmath.mpf(0)))


def exact_taps_matrix(kernel: np.ndarray, spec: ConvSpec) -> list[list[Fraction]]:
    """The dense operator with every entry the exact (rational) sum of the taps reading that
    pixel, assembled from the padding index maps (independently of ``conv_matrix``)."""
    layer = ConvLayer(kernel, spec, need_size=True)
    taps = layer.dense_channel_taps()
    idx_h, idx_w = layer_axis_indices(layer)
    (h, w), (oh, ow) = layer.input_size, layer.out_size
    rows = [[Fraction(0)] * layer.in_dim for _ in range(layer.out_dim)]
    kh, kw = layer.kernel_size
    for o in range(layer.c_out):
        for i in range(oh):
            for j in range(ow):
                row = rows[(o * oh + i) * ow + j]
                for c in range(layer.c_in):
                    for a in range(kh):
                        src_h = idx_h[i, a]
                        if src_h < 0:
                            continue
                        for b in range(kw):
                            src_w = idx_w[j, b]
                            value = taps[o, c, a, b]
                            if src_w < 0 or value == 0.0:
                                continue
                            row[(c * h + src_h) * w + src_w] += Fraction(float(value))
    return rows


def mp_norm(kernel: np.ndarray, spec: ConvSpec, dps: int = DPS) -> mpmath.mpf:
    """The layer's norm to ``dps`` digits from :func:`exact_taps_matrix` (small layers)."""
    rows = exact_taps_matrix(kernel, spec)
    with mpmath.workdps(dps):
        m = mpmath.matrix([[mpmath.mpf(v.numerator) / v.denominator for v in r] for r in rows])
        g = m * m.T if m.rows <= m.cols else m.T * m
        top = max(mpmath.eigsy(g, eigvals_only=True))
        return mpmath.sqrt(max(top, mpmath.mpf(0)))


def mp_layer_norm(kernel: np.ndarray, spec: ConvSpec, max_dim: int) -> mpmath.mpf:
    """The layer's norm to :data:`DPS` digits: the circulant route where it applies, else the
    dense route when the smaller side has at most ``max_dim`` rows; above that the instance
    is skipped (:class:`~proofs_check.harness.Skip`)."""
    layer = ConvLayer(kernel, spec)
    if layer.is_circulant:
        return mp_circ_norm(kernel, spec)
    if min(layer.in_dim, layer.out_dim) > max_dim:
        raise Skip
    return mp_norm(kernel, spec)


def mp_circ_norm(
    kernel: np.ndarray, spec: ConvSpec, dps: int = DPS, screen: float = 1e-8
) -> mpmath.mpf:
    """Norm of a block-circulant circular layer to ``dps`` digits.

    Float64 per-frequency norms (accurate to ~1e-15) select every frequency within
    ``screen`` of the maximum; their matrices are recomputed exactly from the taps
    (``sum K e^{-2 pi i (u q_a / m_1 + v q_b / m_2)}`` in mpmath) and their top singular values
    taken in mpmath.
    """
    layer = ConvLayer(kernel, spec, need_size=True)
    blocks = next(frequency_matrices(layer))  # (g, F, p, q)
    sig = np.linalg.svd(blocks, compute_uv=False)[..., 0]  # (g, F)
    top = float(sig.max())
    if top == 0.0:
        return mpmath.mpf(0)
    (h, w), (sh, sw) = layer.input_size, layer.spec.stride
    m1, m2 = h // sh, w // sw
    engine = circulant_engine(layer)
    (ph, pw), (qh, qw) = engine.phases, engine.positions
    g = layer.groups
    co, ci = layer.c_out // g, layer.kernel.shape[1]
    best = mpmath.mpf(0)
    with mpmath.workdps(dps):
        two_pi = 2 * mpmath.pi
        for gi, f in zip(*np.nonzero(sig >= top * (1 - screen)), strict=True):
            u, v = divmod(int(f), m2)
            mat = mpmath.matrix(co, ci * sh * sw)
            for a in range(len(qh)):
                for b in range(len(qw)):
                    phase = mpmath.expj(
                        -two_pi
                        * (mpmath.mpf(u * int(qh[a])) / m1 + mpmath.mpf(v * int(qw[b])) / m2)
                    )
                    col0 = int(ph[a]) * sw + int(pw[b])
                    for o in range(co):
                        for c in range(ci):
                            value = float(layer.kernel[gi * co + o, c, a, b])
                            if value:
                                mat[o, c * sh * sw + col0] += value * phase
            gram = mat * mat.H if mat.rows <= mat.cols else mat.H * mat
            s = mpmath.sqrt(
                max(max(mpmath.re(e) for e in mpmath.eighe(gram, eigvals_only=True)), mpmath.mpf(0))
            )
            best = max(best, s)
    return best


def exact_apply(kernel: np.ndarray, spec: ConvSpec, x: np.ndarray) -> list[Fraction]:
    """``A x`` in exact rational arithmetic (``x`` of shape ``(c_in, H, W)``)."""
    rows = exact_taps_matrix(kernel, spec)
    xs = [Fraction(float(v)) for v in np.asarray(x, dtype=np.float64).ravel()]
    return [sum((a * b for a, b in zip(r, xs, strict=True) if a), Fraction(0)) for r in rows]


def fraction_sq_norm(values: Any) -> Fraction:
    """``sum v^2`` exactly (float64 values or Fractions)."""
    return sum((Fraction(v) ** 2 for v in values), Fraction(0))


def relative_margin(numerator: Any, denominator: Any) -> float:
    """``numerator / denominator - 1`` computed exactly (Fractions, floats) or to ``DPS``
    digits (when an mpf is involved), rounded to a float at the end; ``+inf`` when the
    denominator is 0 and the numerator positive, 0 when both vanish."""
    values = (numerator, denominator)
    if any(isinstance(v, mpmath.mpf) for v in values):
        with mpmath.workdps(DPS):
            num, den = (_to_mpf(v) for v in values)
            if den == 0:
                return 0.0 if num == 0 else (math.inf if num > 0 else -math.inf)
            return float(num / den - 1)
    num, den = (Fraction(v) if isinstance(v, Fraction) else Fraction(float(v)) for v in values)
    if den == 0:
        return 0.0 if num == 0 else (math.inf if num > 0 else -math.inf)
    return float(num / den - 1)


def _to_mpf(v: Any) -> mpmath.mpf:
    if isinstance(v, Fraction):
        return mpmath.mpf(v.numerator) / v.denominator
    return mpmath.mpf(v)


# ----------------------------------------------------------------------------- exact K_T
def exact_self_correlation(kernel: np.ndarray) -> np.ndarray:
    """Full spatial self-correlation in exact integer (or Fraction) arithmetic.

    ``out[i, j, delta] = sum_{l, a} K[i, l, a + delta] K[j, l, a]``, laid out as
    ``torch.nn.functional.conv2d(K, K, padding=k - 1)``: index ``delta + k - 1``. ``kernel`` is
    an object array ``(c, c', kh, kw)`` of Python ints or Fractions.
    """
    c, _, kh, kw = kernel.shape
    out = np.empty((c, c, 2 * kh - 1, 2 * kw - 1), dtype=object)
    for dh in range(-(kh - 1), kh):
        ah = slice(max(0, -dh), min(kh, kh - dh))
        sh = slice(max(0, -dh) + dh, min(kh, kh - dh) + dh)
        for dw in range(-(kw - 1), kw):
            aw = slice(max(0, -dw), min(kw, kw - dw))
            sw = slice(max(0, -dw) + dw, min(kw, kw - dw) + dw)
            shifted = kernel[:, :, sh, sw]
            base = kernel[:, :, ah, aw]
            out[:, :, dh + kh - 1, dw + kw - 1] = np.tensordot(
                shifted, base, axes=([1, 2, 3], [1, 2, 3])
            )
    return out


def exact_kernel_gram(kernel: np.ndarray, n_iter: int) -> np.ndarray:
    """``K_T`` (``K_1 = K * K``, ``K_{t+1} = K_t * K_t``) exactly, for an integer-valued kernel
    (given as floats or ints); returns an object array of Python ints."""
    k = np.vectorize(lambda v: int(v), otypes=[object])(np.asarray(kernel))
    if not np.array_equal(k.astype(np.float64), np.asarray(kernel, dtype=np.float64)):
        raise ValueError("exact_kernel_gram needs an integer-valued kernel")
    for _ in range(n_iter):
        k = exact_self_correlation(k)
    return k


def exact_row_factors(kernel_t: np.ndarray, n_iter: int) -> list[mpmath.mpf]:
    """``t_i = (sum_{j, delta} |K_T[i, j, delta]|)^{2^-T}`` to ``DPS`` digits."""
    with mpmath.workdps(DPS):
        return [
            mpmath.root(mpmath.mpf(int(sum(abs(v) for v in kernel_t[i].ravel()))), 2**n_iter)
            for i in range(kernel_t.shape[0])
        ]
