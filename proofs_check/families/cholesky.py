"""The verified Cholesky test of certify (L9, :mod:`specbound.rigorous.cholesky`), checked on
the library code against 40-digit ``mpmath`` eigenvalues.

* ``CHOL-PSD`` — :func:`~specbound.rigorous.cholesky.verified_psd` accepts a symmetric float64
  matrix ``X`` only if ``lambda_min(X) >= margin``, on random banded and dense matrices whose
  smallest eigenvalue is placed at ``-1e-6 .. 1e-3`` relative (``-1e-12`` and ``-1e-15``
  included), scaled by ``2^-540 .. 2^500``, with several block sizes, recursion depths and
  shifts;
* ``CHOL-NORM`` — :func:`~specbound.rigorous.cholesky.verified_norm_upper` accepts
  ``mu`` only with ``||A||_2 <= upper``, for small layers of every padding mode at ``mu``
  from ``1e-6`` below the norm to ``1e-3`` above, and with a lower-bound hint that may
  itself be wrong.

:func:`naive_psd_search` is the planted false criterion "a completed floating-point Cholesky
factorization proves ``X >= 0``", which the same instances refute.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import torch

from specbound import ConvSpec
from specbound.operators import ConvLayer
from specbound.rigorous.cholesky import (
    band_from_dense,
    band_layouts,
    verified_norm_upper,
    verified_psd,
)

from ..exact import DPS, mp_layer_norm, relative_margin
from ..harness import Search, describe, run
from ..registry import Mode, Theorem, register
from .common import describe_layer, random_spec

FAMILY = "Verified Cholesky (certify, given sizes)"
SOURCE = (
    "derived in specbound (specbound.rigorous.cholesky module docstring, docs/certify.md L9) "
    "from Demmel's componentwise bound (Higham, Accuracy and Stability of Numerical "
    "Algorithms, 2nd ed., Thm 10.3 and Lemma 8.4) and Rump, Verification of positive "
    "definiteness, BIT 46 (2006) 433-452"
)
RELATIVE_MINIMA = (-1e-6, -1e-12, -1e-15, 0.0, 1e-15, 1e-12, 1e-9, 1e-6, 1e-3)
NOISE_MINIMA = (-3e-16, -1e-16, -1e-17)  # inside the rounding noise of a factorization


def mp_lambda_min(x: np.ndarray) -> mpmath.mpf:
    """Smallest eigenvalue of the symmetric float64 ``x`` taken exactly as stored (40 digits)."""
    with mpmath.workdps(DPS):
        m = mpmath.matrix([[mpmath.mpf(float(v)) for v in row] for row in x])
        return min(mpmath.eigsy(m, eigvals_only=True))


# --------------------------------------------------------------------------- CHOL-PSD
def _banded_symmetric(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    a = rng.standard_normal((n, n))
    if rng.random() < 0.3:  # graded entries
        g = 10.0 ** rng.uniform(-4, 4, n)
        a = a * np.sqrt(np.outer(g, g))
    a = (a + a.T) / 2
    mask = np.abs(np.subtract.outer(np.arange(n), np.arange(n))) <= width
    return a * mask


def _place_minimum(b: np.ndarray, relative: float) -> np.ndarray:
    """``b - (lambda_min(b) - relative ||b||) I``: smallest eigenvalue near ``relative ||b||``
    (the rounding of the diagonal moves it by a few ``u ||b||``; the check uses the exact
    value of the stored matrix)."""
    lam = np.linalg.eigvalsh(b)
    scale = float(np.abs(lam).max()) or 1.0
    return b - (lam[0] - relative * scale) * np.eye(b.shape[0])


def _nearly_singular_pair(rng: np.random.Generator) -> np.ndarray:
    """``[[a, b], [b, c]]`` with ``c`` a few units in the last place from ``b^2/a``: the
    determinant's sign is decided by rounding, which a plain Cholesky cannot see."""
    a, b = float(rng.uniform(0.5, 4)), float(rng.uniform(-2, 2))
    c = b * b / a
    for _ in range(int(rng.integers(0, 4))):
        c = math.nextafter(c, math.inf if rng.random() < 0.5 else -math.inf)
    return np.array([[a, b], [b, c]])


def _psd_random(rng: np.random.Generator, count: int):
    for _ in range(count):
        n = int(rng.integers(1, 13))
        width = int(rng.integers(0, n))
        kind = rng.random()
        if kind < 0.15:  # a nearly singular pair beside a positive definite banded block
            rest = _place_minimum(_banded_symmetric(rng, n, width), 0.5)
            x = np.zeros((n + 2, n + 2))
            x[:2, :2], x[2:, 2:] = _nearly_singular_pair(rng), rest
        elif kind < 0.35:  # rank deficient V V^T: lambda_min of the stored X ~ +-u
            v = rng.standard_normal((n, int(rng.integers(1, n + 1))))
            x = v @ v.T
        else:
            minimum = float(rng.choice(RELATIVE_MINIMA + NOISE_MINIMA))
            x = _place_minimum(_banded_symmetric(rng, n, width), minimum)
        x = x * 2.0 ** int(rng.choice([0, 0, int(rng.integers(-540, 500))]))
        block = int(rng.integers(1, 5))
        base = int(rng.integers(1, 4))
        shift, margin = None, 0.0
        top = float(np.abs(np.diag(x)).max(initial=0.0))
        if rng.random() < 0.4:  # a shift chosen by the caller instead of Rump's a priori one
            shift = top * float(rng.choice([0.0, 1e-15, 1e-13, 1e-9, 1e-3]))
        if rng.random() < 0.3:  # prove a positive lower bound
            margin = top * float(rng.choice([1e-15, 1e-12, 1e-6]))
        yield x, block, base, shift, margin


def _psd_adversarial(mode: Mode):
    tiny = 2.0**-1074
    yield np.eye(4), 2, 1, None, 0.0
    yield np.zeros((3, 3)), 1, 1, None, 0.0
    yield np.diag([1.0, 1.0, -tiny]), 2, 1, None, 0.0  # a negative subnormal eigenvalue
    yield np.diag([1.0, 1.0, -tiny]), 2, 1, 0.0, 0.0
    yield np.array([[1.0, 1.0], [1.0, 1.0 + 2.0**-52]]), 1, 1, None, 0.0  # lambda ~ 2^-53
    yield np.array([[1.0, 1.0], [1.0, 1.0 + 2.0**-52]]), 1, 1, 0.0, 0.0
    yield np.array([[1.0, 1.0], [1.0, 1.0]]), 1, 1, 0.0, 0.0  # singular: lambda_min = 0
    # determinant < 0 by a few ulps, yet a plain floating-point Cholesky completes
    for a, b, c in (
        (2.40268747012898, 1.740289695151073, 1.260508601597874),
        (3.3554874394253624, -1.9890459993194076, 1.1790549238610977),
    ):
        yield np.array([[a, b], [b, c]]), 1, 1, 0.0, 0.0
        yield np.array([[a, b], [b, c]]), 2, 1, None, 0.0
    v = np.array([3.0, -1.0, 2.0, 0.5, 1.0])
    yield np.outer(v, v), 2, 1, 0.0, 0.0  # rank one
    yield np.eye(5) * 2.0**-1070, 2, 1, None, 0.0  # subnormal diagonal
    yield np.eye(5) * 2.0**1000, 3, 2, None, 0.0
    hilbert = 1.0 / (np.arange(8)[:, None] + np.arange(8)[None, :] + 1.0)
    yield hilbert, 3, 1, 0.0, 0.0  # positive definite, condition ~1e10
    yield hilbert, 3, 1, None, 0.0
    rng = np.random.default_rng(5)
    for n in (3, 6, 12):  # rank one and rank deficient: lambda_min of the stored X ~ +-u
        v = rng.standard_normal((n, max(1, n // 3)))
        yield v @ v.T, 2, 1, 0.0, 0.0
        yield v @ v.T, 2, 1, None, 0.0
    for relative in (-1e-12, -1e-15, -1e-16, -1e-17, 0.0, 1e-16, 1e-15):
        for n, width in ((12, 1), (12, 4), (9, 8)):
            x = _place_minimum(_banded_symmetric(rng, n, width), relative)
            yield x, 2, 1, 0.0, 0.0
            yield x, 3, 2, None, 0.0


def _describe_psd(instance) -> str:
    x, block, base, shift, margin = instance
    return f"X = {describe(x)}, block {block}, base {base}, shift {shift}, margin {margin}"


def _psd_margin(counts: dict[str, int]):
    def margin(instance) -> float:
        x, block, base, shift, margin_ = instance
        band, p = band_from_dense(x, block)
        res = verified_psd(band, p, shift=shift, margin=margin_, base=base)
        counts["total"] += 1
        if not res.accepted:
            return 1.0  # refusing is always sound
        counts["accepted"] += 1
        lam = mp_lambda_min(x)
        scale = float(np.abs(x).max())
        if scale == 0.0:
            return 1.0 if lam >= margin_ else -1.0
        counts["tight"] += int(lam <= 1e-9 * scale)
        with mpmath.workdps(DPS):  # >= 0 exactly when the claim holds
            return float((lam - mpmath.mpf(margin_)) / scale)

    return margin


def psd_search(margin=None, key: str = "CHOL-PSD") -> tuple[Search, dict[str, int]]:
    """The ``CHOL-PSD`` search; ``margin`` replaces the criterion (for planted variants)."""
    counts = {"total": 0, "accepted": 0, "tight": 0}
    search = Search(
        margin or _psd_margin(counts),
        random=_psd_random,
        adversarial=_psd_adversarial,
        n_random=(60, 1500),
        n_hypothesis=(20, 400),
        describe=_describe_psd,
        key=key,
    )
    return search, counts


def naive_psd_search() -> Search:
    """Planted false criterion: "torch.linalg.cholesky completes, so X >= 0" (no shift, no
    rounding term). Margin: ``lambda_min(X) / max|X|`` where the factorization completes."""

    def margin(instance) -> float:
        x = instance[0]
        _, info = torch.linalg.cholesky_ex(torch.from_numpy(np.asarray(x, dtype=np.float64)))
        if int(info) != 0:
            return 1.0
        lam = mp_lambda_min(x)
        with mpmath.workdps(DPS):
            return float(lam / max(float(np.abs(x).max()), 1e-300))

    return psd_search(margin, key="CHOL-PSD-naive")[0]


def _psd_check(mode: Mode):
    search, counts = psd_search()
    result = run(search, mode)
    result.notes.append(
        f"{counts['accepted']} of {counts['total']} instances accepted, {counts['tight']} of "
        "them with lambda_min below 1e-9 max|X|"
    )
    return result


register(
    Theorem(
        id="CHOL-PSD",
        title="The verified Cholesky test accepts only positive semidefinite matrices",
        statement="If verified_psd(X, shift, margin) accepts the symmetric float64 matrix X (a "
        "block-banded floating-point Cholesky factorization of fl(X - shift I) runs to "
        "completion and shift >= margin + gamma_{m+1} beta + 2u max|Y_ii| + tau), then "
        "lambda_min(X) >= margin in exact arithmetic.",
        latex=r"\mathrm{fl\text{-}chol}(\mathrm{fl}(X - sI))\ \text{completes},\ "
        r"s \ge \epsilon + \gamma_{m+1}\||\hat L|\|_2^2 + 2u\max_i|Y_{ii}| + \tau"
        r"\ \Longrightarrow\ \lambda_{\min}(X) \ge \epsilon",
        source=SOURCE,
        conditions="symmetric X up to 12 x 12, banded (any half-width) or dense, graded or "
        "not, smallest eigenvalue placed at -1e-6, -1e-12, -1e-15, -3e-16, -1e-16, -1e-17, 0, "
        "1e-15, 1e-12, 1e-9, 1e-6, 1e-3 relative, rank-deficient V V^T (lambda_min ~ +-u), "
        "scaled by 2^-540..2^500 (underflow included); block sizes 1-4 "
        "and column-by-column widths 1-3 (several panels, every recursion path); Rump's a "
        "priori shift or a caller's shift; margins 0 or positive; adversarial: negative "
        "subnormal eigenvalue, singular, rank one, Hilbert, subnormal diagonal; reference: "
        "40-digit mpmath eigenvalues of the stored X",
        relied_on=True,
        check=_psd_check,
        proof="Each computed entry is (y - sum of at most m-1 products)/pivot or a square root, "
        "the sum evaluated by some tree of GEMM/GEMV partial sums; the argument of Lemma 8.4 "
        "for an arbitrary evaluation tree gives "
        "L L^T = Y + dY with |dY| <= gamma_{m+1} |L||L^T| (+ an underflow term tau), so "
        "lambda_min(Y) >= -gamma_{m+1} || |L| ||_2^2 - tau; X = Y + sI + D with |D_ii| <= "
        "u|Y_ii|/(1-u) (Weyl).",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- CHOL-NORM
def _norm_margin(counts: dict[str, int]):
    def margin(instance) -> float:
        kernel, spec, relative, hint = instance
        layer = ConvLayer(kernel, spec)
        exact = mp_layer_norm(kernel, spec, max_dim=24)
        with mpmath.workdps(DPS):
            mu = float(exact * (1 + mpmath.mpf(relative)))
            lower = float(exact * (1 + mpmath.mpf(hint))) if hint is not None else 0.0
        if exact == 0:
            mu = 2.0**-20  # the zero operator: any mu > 0 holds
        worst = math.inf
        for layout in band_layouts(layer, pixels_per_block=int(1 + counts["total"] % 3)):
            res = verified_norm_upper(layer, mu, lower=lower, layout=layout, base=2)
            counts["total"] += 1
            if res.accepted:
                counts["accepted"] += 1
                counts["below"] += int(relative < 0 and exact > 0)
                worst = min(worst, relative_margin(res.upper, exact))
        return 1.0 if worst == math.inf else worst

    return margin


def _norm_random(rng: np.random.Generator, count: int):
    from specbound.testing import family_kernel

    for _ in range(count):
        shape, spec = random_spec(
            rng,
            ("zeros", "zeros", "reflect", "replicate", "circular"),
            max_channels=2,
            max_kernel=3,
            max_size=4,
        )
        family = str(
            rng.choice(["gaussian", "rank_one", "integer", "nonnegative", "tiny", "single_tap"])
        )
        kernel = family_kernel(family, shape, int(rng.integers(2**31)))
        hint = rng.choice([None, -1e-9, 1e-6])  # a lower-bound hint, possibly wrong
        yield kernel, spec, float(rng.choice(RELATIVE_MINIMA)), hint


def _norm_adversarial(mode: Mode):
    from specbound.testing import family_kernel

    specs = (
        ((2, 2, 3, 3), ConvSpec("zeros", "same", (3, 3))),
        ((1, 1, 5, 5), ConvSpec("zeros", "same", (2, 2))),  # input smaller than the kernel
        ((2, 1, 3, 3), ConvSpec("zeros", "full", (2, 3), dilation=2)),
        ((2, 2, 3, 3), ConvSpec("zeros", "same", (4, 4), stride=2)),
        ((2, 1, 3, 3), ConvSpec("reflect", "same", (3, 4))),
        ((2, 2, 3, 2), ConvSpec("replicate", 2, (2, 3))),
        ((4, 1, 3, 3), ConvSpec("zeros", "same", (3, 3), groups=2)),
    )
    families = ("constant", "single_tap", "rank_one", "zero", "orthogonal_center", "checkerboard")
    for i, (shape, spec) in enumerate(specs):
        for j, family in enumerate(families):
            if not mode.thorough and (i + j) % 3:
                continue
            for relative in (-1e-12, -1e-15, 1e-12):
                yield family_kernel(family, shape, 3), spec, relative, -1e-9


def _norm_check(mode: Mode):
    counts = {"total": 0, "accepted": 0, "below": 0}
    result = run(
        Search(
            _norm_margin(counts),
            random=_norm_random,
            adversarial=_norm_adversarial,
            n_random=(12, 200),
            n_hypothesis=(0, 0),
            describe=lambda x: (
                f"{describe_layer((x[0], x[1]))}; mu/norm - 1 = {x[2]}, "
                f"lower hint/norm - 1 = {x[3]}"
            ),
            key="CHOL-NORM",
        ),
        mode,
    )
    result.notes.append(
        f"{counts['accepted']} of {counts['total']} tests (each layout) accepted, "
        f"{counts['below']} of them at mu below the norm"
    )
    return result


register(
    Theorem(
        id="CHOL-NORM",
        title="The verified Cholesky norm test never certifies below the norm",
        statement="If verified_norm_upper(layer, mu) accepts, then ||A||_2 <= its upper value "
        "for the exact operator of the layer (zero, reflect, replicate or circular padding, any "
        "stride, dilation, groups; every band layout; any lower-bound hint).",
        latex=r"\mathrm{verified\_norm\_upper}(A, \mu)\ \text{accepts}\ \Longrightarrow\ "
        r"\|A\|_2 \le \mathrm{up}(\sqrt{\mathrm{fl}(\mu^2)})",
        source=SOURCE,
        conditions="small layers (min(in_dim, out_dim) <= 24) of every padding mode, kernels "
        "gaussian, rank one, integer, non-negative, 1e-150, single tap, constant, zero, "
        "orthogonal centre, checkerboard; mu from 1e-6 below to 1e-3 above the norm "
        "(-1e-12, -1e-15 included); both sides and raster orders, blocks of 1-3 pixels; "
        "reference: 40-digit mpmath norm",
        relied_on=True,
        check=_norm_check,
        proof="CHOL-PSD applied to X = fl(m2 I - G~) with margin e_G + 2u max|X_ii|: the Gram "
        "band's error is at most e_G (every product passes through at most C_hub + terms - 1 "
        "roundings; Schur test on the operator of |K|), so lambda_min(m2 I - A^T A) >= 0 and "
        "||A|| <= sqrt(m2), rounded up.",
        family=FAMILY,
    )
)

__all__ = ["mp_lambda_min", "naive_psd_search", "psd_search"]
