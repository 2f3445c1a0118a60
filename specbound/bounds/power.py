"""Krylov methods on the true operator: certified lower bounds with a witness, and a
probabilistic upper bound.

All three methods run matrix-free (:class:`~specbound.operators.ConvLayer`) on the exact
layer at its input size, for every padding mode, stride, dilation and groups.

* ``power``: power iteration on ``A^T A`` (von Mises; Golub & Van Loan, *Matrix Computations*,
  4th ed., Sec. 8.2.1).
* ``lanczos``: Lanczos with full reorthogonalisation on the smaller Gram matrix (Golub & Van
  Loan, Sec. 10.1 and 10.3.1); the Ritz vector of the largest Ritz value is the witness.
* ``lanczos_probabilistic``: ``k`` Lanczos steps from a start uniform on the sphere, inflated by
  a factor that holds with probability ``>= 1 - delta`` (Kuczynski & Wozniakowski, SIAM J.
  Matrix Anal. Appl. 13(4), 1992; the inequality used is derived in
  :func:`lanczos_failure_probability`).

Certified value. Whatever the iteration did, the ``lower`` value is recomputed from the final
witness ``w`` alone as ``||A w|| / ||w||`` in float64 and rounded down by a rigorous a posteriori
allowance (:func:`certified_ratio`), so it is ``<= ||A||`` up to the stated floating-point
model. The kernel is first scaled by an exact power of two (no overflow at 1e150, no underflow
at 1e-150) and the result scaled back.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.linalg import eigh_tridiagonal
from scipy.special import betainc

from ..operators.conv_layer import ConvLayer
from ..rigorous.fpenv import one_cpu_thread
from ..rigorous.witness import operator_lower
from ..spec import check_real
from ._numerics import binary_exponent
from .base import SIZE_GIVEN, Bound, register


def certified_ratio(layer: ConvLayer, witness: np.ndarray) -> tuple[float, float]:
    """A float ``r <= ||A w|| / ||w||`` (exactly), and the relative allowance taken off.

    The bound is :func:`specbound.rigorous.witness.operator_lower` (one float64 im2col + GEMM
    convolution with ``|fl(A w) - A w| <= gamma_m |K|*|w|``, ``m = c_in_g kh kw``; Higham,
    *Accuracy and Stability of Numerical Algorithms*, 2nd ed., Sec. 3.1); the allowance is
    its distance to the plainly computed ratio.
    """
    x = witness.ravel()
    n_x = float(np.linalg.norm(x))
    if n_x == 0.0:
        return 0.0, 0.0
    value = operator_lower(layer, witness)
    computed = float(np.linalg.norm(layer.matvec(x))) / n_x
    return value, (1.0 - value / computed) if computed > 0 else 0.0


# ----------------------------------------------------------------------------- set-up
@dataclass(frozen=True)
class Scaled:
    """The layer with its kernel multiplied by ``2**-exponent`` (exact), and ``exponent``."""

    layer: ConvLayer
    exponent: int

    @classmethod
    def of(cls, layer: ConvLayer) -> Scaled:
        j = binary_exponent(layer.kernel)
        return cls(ConvLayer(np.ldexp(layer.kernel, j), layer.spec), -j)

    def unscale(self, value: float) -> float:
        return math.ldexp(value, self.exponent)


def sphere_start(n: int, seed: Any) -> np.ndarray:
    """A vector uniform on the unit sphere of ``R^n`` (normalised Gaussian)."""
    x = np.random.default_rng(seed).standard_normal(n)
    return x / np.linalg.norm(x)


def unit(x: np.ndarray) -> np.ndarray:
    nx = np.linalg.norm(x)
    return x / nx if nx > 0 else x


def lower_bound(
    name: str, scaled: Scaled, witness: np.ndarray, iterations: int, details: dict[str, Any]
) -> Bound:
    """The certified ``lower`` Bound of a unit witness on the true layer."""
    layer = scaled.layer
    w = unit(witness)
    if not w.any():  # A^T y = 0 (zero operator): every unit vector is a witness of 0
        w = np.zeros_like(w)
        w[0] = 1.0
    w = w.reshape(layer.c_in, *layer.input_size)
    value, allowance = certified_ratio(layer, w)
    details = {**details, "allowance": allowance}
    return Bound(
        value=scaled.unscale(value),
        kind="lower",
        method=name,
        iterations=iterations,
        witness=w,
        details=details,
    )


# ----------------------------------------------------------------------------- power
def power_iteration(
    op: ConvLayer, x: np.ndarray, n_iter: int, tol: float
) -> tuple[np.ndarray, int, bool]:
    """Power iteration ``x <- A^T A x / ||A^T A x||``; stops when ``||A x||`` changes by at
    most ``tol`` relative. Returns the last iterate, the iterations done and convergence."""
    sigma_prev = 0.0
    for it in range(1, n_iter + 1):
        image = op.matvec(x)
        sigma = float(np.linalg.norm(image))
        back = op.rmatvec(image)
        norm_back = float(np.linalg.norm(back))
        if norm_back == 0.0:  # A x = 0: x is in the null space (zero kernel); stop
            return x, it, True
        x = back / norm_back
        if abs(sigma - sigma_prev) <= tol * sigma:
            return x, it, True
        sigma_prev = sigma
    return x, n_iter, False


@register(
    name="power",
    kind="lower",
    reference="power iteration on A^T A (Golub & Van Loan, Matrix Computations, 4th ed., "
    "Sec. 8.2.1), certified from the final witness",
    input_size=SIZE_GIVEN,
    cost="2 convolutions per iteration; converges like (sigma_2/sigma_1)^(2t)",
)
def power(
    layer: ConvLayer, *, n_iter: int = 500, tol: float = 1e-10, seed: Any = 0, device: Any = None
) -> Bound:
    """Certified lower bound ``||A w|| / ||w||`` from power iteration on the true operator.

    Parameters
    ----------
    n_iter : int
        Maximum iterations.
    tol : float
        Stop when successive estimates ``||A x||`` agree to ``tol`` relative.
    seed : int or numpy Generator seed
        Random start (Gaussian, normalised).
    device : str or torch.device, optional
        Where torch runs the mat-vecs (the certificate is always computed on CPU).

    Returns
    -------
    Bound
        ``kind="lower"`` with ``witness`` (``(c_in, H, W)``, unit norm);
        ``details["converged"]``, ``details["allowance"]`` (relative rounding taken off).
    """
    scaled = Scaled.of(layer)
    op = scaled.layer.to(device)
    with one_cpu_thread(op.device):  # NumPy norms alternate with torch convolutions
        x, iterations, converged = power_iteration(
            op, sphere_start(op.shape[1], seed), int(n_iter), float(tol)
        )
    return lower_bound("power", scaled, x, iterations, {"converged": converged})


# ----------------------------------------------------------------------------- Lanczos
@dataclass(frozen=True)
class Krylov:
    """Outcome of :func:`lanczos_iteration`: the largest Ritz value ``theta`` and its Ritz
    vector, the Krylov dimension reached, the residual ``||G y - theta y||`` and whether the
    subspace became invariant (breakdown)."""

    theta: float
    vector: np.ndarray
    dimension: int
    residual: float
    invariant: bool


def _top_ritz(alpha: list[float], beta: list[float]) -> tuple[float, np.ndarray]:
    """Largest eigenvalue of the tridiagonal ``T`` and its eigenvector (only that pair)."""
    j = len(alpha) - 1
    values, vectors = eigh_tridiagonal(
        np.array(alpha), np.array(beta), select="i", select_range=(j, j)
    )
    return float(values[-1]), vectors[:, -1]


def lanczos_iteration(
    apply_gram: Any,
    start: np.ndarray,
    n_iter: int,
    tol: float | None,
    deadline: float | None = None,
) -> Krylov:
    """Lanczos on a symmetric PSD ``G`` with full reorthogonalisation (twice per step).

    Builds an orthonormal basis ``V_j`` of the Krylov space ``span{b, G b, ..., G^{j-1} b}`` and
    the tridiagonal ``T_j = V_j^T G V_j``; the largest Ritz value is
    ``max_{y in K_j} y^T G y / y^T y``. Stops after ``n_iter`` steps, at breakdown (an invariant
    subspace: the Ritz values are then eigenvalues), if ``tol`` is given once the residual
    ``beta_j |s_j|`` of the top Ritz pair is at most ``tol * theta``, or after the first step
    that ends past ``deadline`` (a :func:`time.perf_counter` value). Without ``tol`` the top
    Ritz pair is computed once, at the end.
    """
    n = start.size
    k_max = max(1, min(int(n_iter), n))
    basis = np.empty((k_max, n))
    basis[0] = unit(start)
    alpha: list[float] = []
    beta: list[float] = []
    theta, s, residual, invariant = 0.0, np.ones(1), math.inf, False
    for j in range(k_max):
        w = apply_gram(basis[j])
        alpha.append(float(basis[j] @ w))
        w = w - alpha[j] * basis[j] - (beta[j - 1] * basis[j - 1] if j > 0 else 0.0)
        for _ in range(2):
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        b_j = float(np.linalg.norm(w))
        # theta >= max(alpha) for a PSD G, so this scale is at most max(theta, |alpha|)
        scale = max(abs(a) for a in alpha)
        invariant = b_j <= 64 * np.finfo(float).eps * scale or scale == 0.0
        late = deadline is not None and time.perf_counter() > deadline
        if tol is not None:
            theta, s = _top_ritz(alpha, beta)
            residual = b_j * abs(float(s[-1]))
        done = invariant or late or (tol is not None and residual <= tol * theta)
        if done or j + 1 == k_max:
            if tol is None:
                theta, s = _top_ritz(alpha, beta)
                residual = b_j * abs(float(s[-1]))
            return Krylov(theta, s @ basis[: j + 1], j + 1, residual, invariant)
        beta.append(b_j)
        basis[j + 1] = w / b_j
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True)
class GramSide:
    """The smaller Gram matrix of ``A``: ``A^T A`` on the input side when ``in_dim <= out_dim``,
    else ``A A^T`` on the output side, where a unit ``y`` maps to the witness ``A^T y``:
    ``||A A^T y|| / ||A^T y|| >= ||A^T y||`` (Cauchy-Schwarz), so the witness is at least as
    good as ``y``'s Rayleigh quotient."""

    op: ConvLayer

    @property
    def input_side(self) -> bool:
        out_dim, in_dim = self.op.shape
        return in_dim <= out_dim

    @property
    def dim(self) -> int:
        return min(self.op.shape)

    def apply(self, x: np.ndarray) -> np.ndarray:
        if self.input_side:
            return self.op.rmatvec(self.op.matvec(x))
        return self.op.matvec(self.op.rmatvec(x))

    def rayleigh(self, y: np.ndarray) -> float:
        """``y^T G y`` for a unit ``y``: ``||A y||^2`` or ``||A^T y||^2``."""
        image = self.op.matvec(y) if self.input_side else self.op.rmatvec(y)
        return float(np.linalg.norm(image)) ** 2

    def witness(self, y: np.ndarray) -> np.ndarray:
        return y if self.input_side else self.op.rmatvec(y)


@register(
    name="lanczos",
    kind="lower",
    reference="Lanczos with full reorthogonalisation on the Gram matrix (Golub & Van Loan, "
    "Matrix Computations, 4th ed., Sec. 10.1, 10.3.1), certified from the Ritz vector",
    input_size=SIZE_GIVEN,
    cost="2 convolutions + O(n j) reorthogonalisation per step; memory n_iter * n",
)
def lanczos(
    layer: ConvLayer, *, n_iter: int = 100, tol: float = 1e-10, seed: Any = 0, device: Any = None
) -> Bound:
    """Certified lower bound from the top Ritz vector of Lanczos on the true operator.

    Parameters
    ----------
    n_iter : int
        Maximum Krylov dimension.
    tol : float
        Stop once the Ritz residual is at most ``tol`` times the Ritz value.
    seed : int
        Random start (uniform on the sphere).
    device : str or torch.device, optional
        Where torch runs the mat-vecs (the certificate is always computed on CPU).

    Returns
    -------
    Bound
        ``kind="lower"`` with ``witness``; ``details``: ``converged`` (residual test met),
        ``ritz`` (the Ritz estimate of ``||A||``, not certified), ``allowance``.
    """
    scaled = Scaled.of(layer)
    op = scaled.layer.to(device)
    side = GramSide(op)
    with one_cpu_thread(op.device):  # NumPy BLAS alternates with torch convolutions
        krylov = lanczos_iteration(side.apply, sphere_start(side.dim, seed), n_iter, float(tol))
    converged = krylov.invariant or krylov.residual <= tol * krylov.theta
    details = {"converged": converged, "ritz": scaled.unscale(math.sqrt(max(krylov.theta, 0.0)))}
    return lower_bound("lanczos", scaled, side.witness(krylov.vector), krylov.dimension, details)


# ----------------------------------------------------------------------------- probabilistic
LANCZOS_MAX_BYTES = 2**30
"""Memory for the Krylov basis of :func:`lanczos_probabilistic` (1 GiB by default)."""
LANCZOS_MAX_STEPS = 1000
"""Most Lanczos steps :func:`lanczos_probabilistic` takes (each costs O(j n) to
reorthogonalise, so k steps cost O(k^2 n))."""


def log_chebyshev(m: int, x: float) -> float:
    """``log T_m(x)`` for ``x >= 1`` without overflow (``T_m(cosh t) = cosh(m t)``)."""
    t = m * math.acosh(x)
    return t + math.log1p(math.exp(-2 * t)) - math.log(2)


def lanczos_failure_probability(eps: float, k: int, n: int) -> float:
    """``P[xi_k < (1 - eps) lambda_1]`` is at most this, for ``k`` Lanczos steps from a start
    uniform on the sphere of ``R^n`` on any symmetric PSD ``G`` (``xi_k`` the top Ritz value).

    Derivation (the Chebyshev argument of Kuczynski & Wozniakowski 1992, made explicit; their
    closed form is ``1.648 sqrt(n) exp(-sqrt(eps)(2k-1))``, whose theorem number and constant
    could not be checked here, so it is not used). Scale ``lambda_1 = 1`` and let ``beta_i`` be
    the start's coordinates in an eigenbasis. ``K_k`` contains ``p(G) b`` for every polynomial
    of degree ``m = k - 1``; take ``p(x) = T_m(2x/(1-eps) - 1)``, so ``|p| <= 1`` on
    ``[0, 1-eps]`` and ``p(1) = T_m((1+eps)/(1-eps))``. The Rayleigh quotient of ``p(G) b`` is
    ``>= 1 - eps`` iff ``sum_i beta_i^2 p(l_i)^2 (l_i - 1 + eps) >= 0``; the terms with
    ``l_i >= 1 - eps`` add at least ``beta_1^2 p(1)^2 eps`` and the others at least
    ``-(1 - eps)(1 - beta_1^2)``. So ``xi_k >= 1 - eps`` whenever
    ``beta_1^2 >= t = (1 - eps) / (eps p(1)^2 + 1 - eps)``. For a uniform start
    ``beta_1^2 ~ Beta(1/2, (n-1)/2)``, hence the bound ``I_t(1/2, (n-1)/2)`` (regularised
    incomplete beta function), computed exactly. For ``k >= n`` the Krylov space is invariant
    and contains ``b``, whose component on the top eigenspace is almost surely nonzero: 0.
    """
    if k >= n or eps >= 1.0:  # K_n is the whole space (a.s. b has a top-eigenvector part)
        return 0.0
    if eps <= 0.0:
        return 1.0
    log_p = log_chebyshev(k - 1, (1 + eps) / (1 - eps))
    log_t = math.log1p(-eps) - np.logaddexp(math.log(eps) + 2 * log_p, math.log1p(-eps))
    return float(betainc(0.5, (n - 1) / 2, math.exp(log_t)))


def lanczos_epsilon(delta: float, k: int, n: int) -> float:
    """Smallest ``eps`` (to 1e-12 relative, rounded up) with failure probability ``<= delta``."""
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    if lanczos_failure_probability(0.0, k, n) <= delta:
        return 0.0
    lo, hi = 0.0, 1.0
    while hi - lo > 1e-12 * hi:
        mid = 0.5 * (lo + hi)
        if lanczos_failure_probability(mid, k, n) <= delta:
            hi = mid
        else:
            lo = mid
    return hi


def lanczos_steps(delta: float, n: int, rtol: float) -> int:
    """Fewest steps ``k`` with ``1/sqrt(1 - eps) <= 1 + rtol`` at probability ``1 - delta``."""
    if not rtol > 0:
        raise ValueError(f"rtol must be > 0, got {rtol!r}")
    target = 1.0 - (1.0 + rtol) ** -2
    lo, hi = 1, 2
    while lanczos_epsilon(delta, hi, n) > target and hi < n:
        lo, hi = hi, 2 * hi
    hi = min(hi, max(n, 1))
    while lo < hi:
        mid = (lo + hi) // 2
        if lanczos_epsilon(delta, mid, n) <= target:
            hi = mid
        else:
            lo = mid + 1
    return hi


@register(
    name="lanczos_probabilistic",
    kind="estimate",
    reference="Kuczynski & Wozniakowski, Estimating the largest eigenvalue by the power and "
    "Lanczos algorithms with a random start, SIAM J. Matrix Anal. Appl. 13(4), 1992 "
    "(Chebyshev bound with the exact Beta tail, derived in the docstring)",
    input_size=SIZE_GIVEN,
    cost="k Lanczos steps, k ~ log(sqrt(n)/delta) / (2 sqrt(eps))",
)
def lanczos_probabilistic(
    layer: ConvLayer,
    *,
    delta: float = 1e-3,
    n_iter: int | None = None,
    rtol: float = 0.01,
    seed: Any = None,
    device: Any = None,
    max_seconds: float | None = None,
    max_bytes: int | None = None,
) -> Bound:
    """Upper bound ``sqrt(xi_k / (1 - eps))`` holding with probability ``>= 1 - delta``.

    ``xi_k`` is the Rayleigh quotient of the top Ritz vector after ``k`` Lanczos steps on the
    smaller Gram matrix (dimension ``n``) from a start uniform on the sphere, and ``eps`` the
    smallest value with :func:`lanczos_failure_probability` ``<= delta``. The probability is
    over the random start only; the statement is for exact arithmetic (full
    reorthogonalisation keeps the float64 Krylov basis orthonormal to working accuracy, and
    ``xi_k`` is recomputed from the Ritz vector). Not a certificate: ``kind="estimate"``.

    Parameters
    ----------
    delta : float
        Failure probability.
    n_iter : int, optional
        Number of steps ``k``; by default the fewest with ``1/sqrt(1-eps) <= 1 + rtol``.
    seed : int, optional
        Seed of the random start. The guarantee needs it to be unpredictable: leave ``None``
        (fresh entropy) unless reproducing a run.
    device : str or torch.device, optional
        Where torch runs the mat-vecs.
    max_seconds : float, optional
        Stop after the first Lanczos step that ends past this many seconds; ``eps`` is then
        that of the steps actually done (the bound stays valid: the number of steps depends
        on the clock, not on the random start).
    max_bytes : int, optional
        Memory for the Krylov basis (default :data:`LANCZOS_MAX_BYTES`); ``k`` is capped at
        ``max_bytes / (8 n)`` steps, and at :data:`LANCZOS_MAX_STEPS`.

    Returns
    -------
    Bound
        ``kind="estimate"``, ``probability=1-delta``, ``details``: ``bound_type``
        (``"probabilistic upper"``), ``epsilon``, ``steps`` (planned), ``done`` (steps
        done), ``n``, ``lower`` (a certified lower bound from the same Ritz vector).
    """
    start = time.perf_counter()
    if max_seconds is not None:
        max_seconds = check_real(max_seconds, "max_seconds", low=0.0, open_high=False)
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int)):
        raise TypeError(f"max_bytes must be None or an int, got {max_bytes!r}")
    scaled = Scaled.of(layer)
    op = scaled.layer.to(device)
    side = GramSide(op)
    n = side.dim
    k = lanczos_steps(delta, n, rtol) if n_iter is None else int(n_iter)
    if k < 1:
        raise ValueError(f"n_iter must be >= 1, got {n_iter!r}")
    budget = LANCZOS_MAX_BYTES if max_bytes is None else int(max_bytes)
    k = max(1, min(k, LANCZOS_MAX_STEPS, budget // (8 * n)))
    deadline = None if max_seconds is None else start + max_seconds
    with one_cpu_thread(op.device):  # NumPy BLAS alternates with torch convolutions
        krylov = lanczos_iteration(side.apply, sphere_start(n, seed), k, None, deadline)
    # at breakdown K_j = K_k (invariant): the planned k's epsilon holds; else the steps done
    eps = lanczos_epsilon(delta, k if krylov.invariant else krylov.dimension, n)
    y = unit(krylov.vector)
    xi = side.rayleigh(y)
    certified = lower_bound("lanczos_probabilistic", scaled, side.witness(y), krylov.dimension, {})
    return Bound(
        value=scaled.unscale(math.sqrt(xi / (1.0 - eps))),
        kind="estimate",
        method="lanczos_probabilistic",
        iterations=krylov.dimension,
        probability=1.0 - delta,
        details={
            "bound_type": "probabilistic upper",
            "epsilon": eps,
            "steps": k,
            "done": krylov.dimension,
            "n": n,
            "lower": certified.value,
        },
    )
