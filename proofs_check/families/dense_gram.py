"""Gram iteration on a dense matrix (Delattre et al., ICML 2023, arXiv 2305.16173).

``beta_t(W) = ||G_t||_F^{2^-t}`` with ``G_0 = W``, ``G_{t+1} = G_t^* G_t``, as computed by
:func:`specbound.bounds.gram.gram_iteration` (rescaled, log accumulator), against singular values
from LAPACK (float64) or mpmath.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import torch

from specbound.bounds.gram import gram_iteration
from specbound.testing import (
    MATRIX_FAMILIES,
    family_matrix,
    matrices,
    repeated_top_matrices,
    repeated_top_matrix,
)

from ..harness import Search, run
from ..registry import Mode, Theorem, register

FAMILY = "Dense Gram iteration"
T_MAX = 8
SOURCE = (
    "Delattre, Barthélemy, Araujo & Allauzen, Efficient Bound of Lipschitz Constant for "
    "Convolutional Layers by Gram Iteration, ICML 2023 (arXiv 2305.16173), Sec. 3 (the "
    "method); the exact statements here are derived in specbound (research/gram.md §2.1)"
)
SHAPES = ((1, 1), (1, 6), (6, 1), (5, 3), (3, 5), (8, 8))


def betas(w: np.ndarray, t_max: int = T_MAX) -> np.ndarray:
    """``beta_t`` for ``t = 0..t_max`` by the library (one batched call per ``t``)."""
    x = torch.from_numpy(np.ascontiguousarray(w))
    with torch.no_grad():
        return np.array([float(gram_iteration(x, t)) for t in range(t_max + 1)])


def singular_values(w: np.ndarray) -> np.ndarray:
    return np.linalg.svd(w, compute_uv=False) if w.size else np.zeros(0)


def _random_matrices(rng: np.random.Generator, count: int):
    for _ in range(count):
        shape = tuple(int(v) for v in rng.integers(1, 11, size=2))
        yield rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 3)


def _adversarial_matrices(mode: Mode):
    for family in MATRIX_FAMILIES:
        for shape in SHAPES:
            yield family_matrix(family, shape, seed=1)


STRATEGY = matrices(max_rows=10, max_cols=10)


# --------------------------------------------------------------------------- GI-UB
def _ub_margin(w: np.ndarray) -> float:
    b = betas(w)
    s1 = singular_values(w)[0]
    if s1 == 0.0:  # the zero matrix: exactly 0, never NaN
        return 0.0 if np.all(b == 0.0) else -1.0
    return float(np.min(b / s1 - 1.0))


def check_upper(mode: Mode) -> object:
    return run(
        Search(
            _ub_margin,
            tolerance=1e-12,
            random=_random_matrices,
            adversarial=_adversarial_matrices,
            strategy=STRATEGY,
            key="GI-UB",
        ),
        mode,
    )


register(
    Theorem(
        id="GI-UB",
        title="Gram iteration is an upper bound",
        statement="For every matrix W and t >= 0, beta_t(W) = ||G_t||_F^(2^-t) >= sigma_1(W); "
        "an all-zero matrix gives exactly 0 (not NaN).",
        latex=r"\beta_t(W) = \|G_t\|_F^{2^{-t}} \ge \sigma_1(W),\quad G_0 = W,\ "
        r"G_{t+1} = G_t^* G_t",
        source=SOURCE,
        conditions="any real matrix, t = 0..8 checked; float64 with the rounding allowance 1e-12 "
        "(tight cases such as rank one undershoot by an ulp: research/gram.md §8)",
        relied_on=True,
        check=check_upper,
        proof="G_t = (W^*W)^{2^{t-1}} has singular values sigma_i^{2^t}, and the Frobenius norm "
        "dominates the spectral norm: ||G_t||_F >= sigma_1^{2^t}.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- GI-SCHATTEN
def _schatten_margin(w: np.ndarray) -> float:
    b = betas(w)
    s = singular_values(w)
    if s[0] == 0.0:
        return 0.0 if np.all(b == 0.0) else -1.0
    worst = math.inf
    for t in range(T_MAX + 1):
        p = 2.0 ** (t + 1)
        ref = s[0] * float(np.sum((s / s[0]) ** p)) ** (1.0 / p)
        worst = min(worst, -abs(b[t] / ref - 1.0))
    return worst


register(
    Theorem(
        id="GI-SCHATTEN",
        title="Gram iteration computes a Schatten norm",
        statement="beta_t(W) equals the Schatten norm ||W||_{S_p} with p = 2^(t+1).",
        latex=r"\beta_t(W) = \|W\|_{S_{2^{t+1}}} = \Big(\sum_i "
        r"\sigma_i^{2^{t+1}}\Big)^{2^{-(t+1)}}",
        source=SOURCE,
        conditions="any real matrix, t = 0..8; the reference is sigma_1 (sum (sigma_i/sigma_1)^p)^"
        "(1/p) from LAPACK singular values; relative tolerance 1e-10",
        relied_on=True,
        check=lambda mode: run(
            Search(
                _schatten_margin,
                tolerance=1e-10,
                random=_random_matrices,
                adversarial=_adversarial_matrices,
                strategy=STRATEGY,
                key="GI-SCHATTEN",
            ),
            mode,
        ),
        proof="||G_t||_F^2 = sum_i sigma_i(G_t)^2 = sum_i sigma_i^{2^{t+1}}; take the 2^{-(t+1)} "
        "power. The rescaling by Frobenius norms is exact algebra (1-homogeneity).",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- GI-MONO
def _mono_margin(w: np.ndarray) -> float:
    b = betas(w)
    if b[0] == 0.0:
        return 0.0 if np.all(b == 0.0) else -1.0
    return float(np.min(b[:-1] / b[1:] - 1.0))


register(
    Theorem(
        id="GI-MONO",
        title="Gram iteration is monotone",
        statement="beta_{t+1}(W) <= beta_t(W) for every t >= 0.",
        latex=r"\beta_{t+1}(W) \le \beta_t(W)",
        source=SOURCE,
        conditions="any real matrix, t = 0..7; tolerance 1e-12",
        relied_on=False,
        check=lambda mode: run(
            Search(
                _mono_margin,
                tolerance=1e-12,
                random=_random_matrices,
                adversarial=_adversarial_matrices,
                strategy=STRATEGY,
                key="GI-MONO",
            ),
            mode,
        ),
        proof="Schatten-p norms are non-increasing in p (the l^p norms of the singular values).",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- GI-RANK
def _rank_margin(w: np.ndarray) -> float:
    b = betas(w)
    s = singular_values(w)
    if s[0] == 0.0:
        return 0.0 if np.all(b == 0.0) else -1.0
    rank = int(np.sum(s > s[0] * max(w.shape) * np.finfo(float).eps))
    worst = math.inf
    for t in range(T_MAX + 1):
        envelope = rank ** (2.0 ** -(t + 1)) * s[0]
        worst = min(worst, envelope / b[t] - 1.0)
        if rank <= 1:
            worst = min(worst, -abs(b[t] / s[0] - 1.0))
    return worst


register(
    Theorem(
        id="GI-RANK",
        title="Rank envelope of the Gram iteration",
        statement="beta_t(W) <= rank(W)^(2^-(t+1)) sigma_1(W); for rank <= 1, beta_t = sigma_1 "
        "for every t.",
        latex=r"\sigma_1 \le \beta_t(W) \le \operatorname{rank}(W)^{2^{-(t+1)}}\,\sigma_1,"
        r"\qquad \operatorname{rank} W \le 1 \Rightarrow \beta_t = \sigma_1",
        source=SOURCE,
        conditions="any real matrix (numerical rank with LAPACK's threshold), t = 0..8; "
        "tolerance 1e-12",
        relied_on=False,
        check=lambda mode: run(
            Search(
                _rank_margin,
                tolerance=1e-12,
                random=_random_matrices,
                adversarial=_adversarial_matrices,
                strategy=STRATEGY,
                key="GI-RANK",
            ),
            mode,
        ),
        proof="sum_i sigma_i^p <= r sigma_1^p with r non-zero terms; equality iff r <= 1.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- GI-REC
def _recursion_margin(w: np.ndarray) -> float:
    s = singular_values(w)
    if s.size < 2 or s[0] == 0.0 or s[1] == 0.0:
        return 0.0  # a_t = 0 for every t: both inequalities are equalities
    worst = math.inf
    with mpmath.workdps(50):
        x = [mpmath.mpf(float(v)) / mpmath.mpf(float(s[0])) for v in s[1:]]
        a = [mpmath.fsum(v ** (2 ** (t + 1)) for v in x) for t in range(T_MAX + 2)]
        for t in range(T_MAX + 1):
            if a[t] == 0:
                continue
            quad = (a[t] ** 2 - a[t + 1]) / a[t] ** 2
            lin = (x[0] ** (2 ** (t + 1)) * a[t] - a[t + 1]) / (x[0] ** (2 ** (t + 1)) * a[t])
            worst = min(worst, float(quad), float(lin))
    return worst


register(
    Theorem(
        id="GI-REC",
        title="Error recursion of the Gram iteration (its quadratic convergence)",
        statement="With a_t = (beta_t/sigma_1)^(2^(t+1)) - 1 = sum_{i>=2} "
        "(sigma_i/sigma_1)^(2^(t+1)): "
        "a_{t+1} <= a_t^2 and a_{t+1} <= (sigma_2/sigma_1)^(2^(t+1)) a_t.",
        latex=r"a_t := \Big(\tfrac{\beta_t}{\sigma_1}\Big)^{2^{t+1}} - 1 = \sum_{i\ge2}"
        r"\Big(\tfrac{\sigma_i}{\sigma_1}\Big)^{2^{t+1}},\quad a_{t+1} \le a_t^2,\quad "
        r"a_{t+1} \le \Big(\tfrac{\sigma_2}{\sigma_1}\Big)^{2^{t+1}} a_t",
        source=SOURCE + "; [P2] only claims 'superlinear convergence' (abstract)",
        conditions="any real matrix with sigma_1 > 0, t = 0..8, evaluated on the singular values "
        "in "
        "50-digit arithmetic (a_t underflows float64 after a few steps); relative tolerance 1e-12",
        relied_on=False,
        check=lambda mode: run(
            Search(
                _recursion_margin,
                tolerance=1e-12,
                random=_random_matrices,
                adversarial=_adversarial_matrices,
                strategy=STRATEGY,
                key="GI-REC",
            ),
            mode,
        ),
        proof="With x_i = sigma_i/sigma_1 <= 1 and p = 2^{t+1}: sum x_i^{2p} <= (sum x_i^p)^2 (the "
        "cross terms are >= 0) and sum x_i^{2p} <= x_2^p sum x_i^p. The relative error "
        "ln(beta_t/sigma_1) = ln(1 + a_t)/2^{t+1} is therefore quadratic once a_t < 1.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- GI-LIN
def _linear_margin(instance: tuple[np.ndarray, int]) -> float:
    w, m = instance
    b = betas(w)
    s = singular_values(w)
    rank = int(np.sum(s > s[0] * max(w.shape) * np.finfo(float).eps))
    worst = math.inf
    for t in range(T_MAX + 1):
        scaled = 2.0 ** (t + 1) * math.log(b[t] / s[0])  # = ln(1 + a_t), in [ln m, ln r]
        worst = min(worst, scaled / math.log(m) - 1.0, math.log(rank) / scaled - 1.0)
    return worst


def _repeated_random(rng: np.random.Generator, count: int):
    for _ in range(count):
        rows, cols = (int(v) for v in rng.integers(2, 11, size=2))
        m = int(rng.integers(2, min(rows, cols) + 1))
        yield repeated_top_matrix((rows, cols), m, int(rng.integers(2**31))), m


def _repeated_adversarial(mode: Mode):
    for shape in ((2, 2), (6, 4), (4, 6), (8, 8)):
        for m in (2, min(shape)):
            for ratio in (0.0, 0.5, 0.999):
                yield repeated_top_matrix(shape, m, seed=3, ratio=ratio), m


register(
    Theorem(
        id="GI-LIN",
        title="Linear regime when the top singular value repeats",
        statement="If sigma_1 has multiplicity m >= 2, then ln m <= 2^(t+1) ln(beta_t/sigma_1) <= "
        "ln rank(W): the relative error decays only like m^(2^-(t+1)) - 1 (halving its logarithm "
        "per step), with no quadratic phase.",
        latex=r"\ln m \le 2^{t+1}\ln\frac{\beta_t}{\sigma_1} \le \ln \operatorname{rank} W"
        r"\quad (\sigma_1 = \dots = \sigma_m)",
        source=SOURCE,
        conditions="matrices U diag(1,..,1,s_{m+1},..) V^T with s_i <= ratio < 1 (ratio 0 "
        "included: "
        "rank m), t = 0..8; library beta_t; relative tolerance 1e-9 on the scaled log-error",
        relied_on=False,
        check=lambda mode: run(
            Search(
                _linear_margin,
                tolerance=1e-9,
                random=_repeated_random,
                adversarial=_repeated_adversarial,
                strategy=repeated_top_matrices(10, 10),
                describe=lambda x: f"multiplicity {x[1]}, W = {x[0]!r}"[:360],
                key="GI-LIN",
            ),
            mode,
        ),
        proof="ln(1 + a_t) = ln(sum_i (sigma_i/sigma_1)^p) with m terms equal to 1 and at most r "
        "in "
        "all, each <= 1.",
        family=FAMILY,
    )
)

__all__ = ["betas", "singular_values"]
