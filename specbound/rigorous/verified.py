r"""The verified core: rigorous ``sigma_1`` brackets for batches of small matrices at about
the cost of LAPACK (``docs/certify.md``, lemma L10).

For each float64 (or complex128) matrix ``m`` the largest singular value is *computed*
approximately (batched ``eigvalsh`` of its Gram matrix), then *verified* a posteriori by one
floating-point Cholesky factorization of :math:`tI - G` with ``t`` slightly above the
estimate; a completed factorization proves :math:`\sigma_1(m)^2 \le t + \delta + e_G` with
the rounding terms of Demmel's componentwise bound (Higham, *Accuracy and Stability of
Numerical Algorithms*, 2nd ed., Thm 10.3; Rump, *BIT* 46:433--452, 2006), exactly as in L9
(:mod:`specbound.rigorous.cholesky`), here for a dense matrix and a whole batch at once:

* every matrix is scaled by an exact power of two so that its largest entry lies in
  ``[1, 2)``; a complex matrix ``M = Mr + i Mi`` is replaced by the real
  ``R = [[Mr, -Mi], [Mi, Mr]]``, which has the same singular values (each twice); the Gram
  is taken on the smaller side (``R`` or ``R^T``), of order ``n``, inner length ``k``;
* ``G = fl(R^T R)`` (its upper triangle) has ``||G - R^T R||_2 <= e_G = gamma_k ||R||_F^2``
  (plus ``n k 2^-1074`` for underflowing products);
* ``Y`` holds ``-G`` off the diagonal and ``fl(t - G_ii)`` on it, so
  ``tI - G = Y + D`` with ``|D_ii| <= 2u |Y_ii|``;
* the Cholesky factorization of ``Y`` (GEMM, GEMV, correctly rounded division and square
  root only; no LAPACK) either breaks down (a pivot not positive, an entry not finite) or
  completes with ``lambda_min(Y) >= -(gamma_{n+1} beta + tau)``, ``beta >= || |L| ||_2^2``;
* then ``lambda_max(R^T R) <= t + gamma_{n+1} beta + tau + 2u max|Y_ii| + e_G``.

Where the factorization breaks down (the estimate was poor) the matrix is retried once with
a wider margin, then falls back to its Frobenius norm (always valid). Lower bounds come from
the approximate top singular vector, evaluated rigorously
(:func:`~specbound.rigorous.gram.matvec_norm_lower`).
"""

from __future__ import annotations

import math
import time

import torch

from .bracket import MatrixBracket
from .cholesky import UNDERFLOW_UNIT, _float64_gemm, _underflow_term
from .fpenv import one_cpu_thread
from .gram import _gram, matvec_norm_lower
from .rounding import U, frobenius_upper, gamma, pow2_scale

BASE_COLUMNS = 8
"""Column ranges of at most this many columns are factored column by column."""
MARGIN_FLOOR = 8.0
"""The relative margin ``t / estimate - 1`` is at least ``MARGIN_FLOOR (n + 1) n u`` (the size
of the rounding terms), so that the factorization completes on an accurate estimate."""
TIGHT_MARGIN = 1e-12
"""The margin used when ``rel`` allows it: the factorization costs the same whatever the
margin, so the bounds are as tight as the rounding allows (about ``1e-12`` relative)."""
RETRY_FACTOR = 1e4
"""A matrix whose factorization broke down is retried once with this many times the margin."""
CHUNK_ENTRIES = 2**24
"""Float64 entries of Gram matrices held at once (128 MiB)."""
DEADLINE_CHUNK = 32
DEADLINE_ENTRIES = 2**20
"""When a deadline is set, at most ``max(DEADLINE_CHUNK, DEADLINE_ENTRIES / n^2)`` matrices
(Gram order ``n``) are verified between two deadline checks."""


def _peak(m: torch.Tensor) -> torch.Tensor:
    """Largest absolute real or imaginary component per matrix (cheaper than ``abs`` of a
    complex tensor; any power-of-two scale is exact)."""
    if m.is_complex():
        return torch.view_as_real(m.resolve_conj()).abs().amax(dim=(-3, -2, -1))
    return m.abs().amax(dim=(-2, -1))


def _frobenius(m: torch.Tensor) -> torch.Tensor:
    """:func:`frobenius_upper` of a batch, complex ones through their real view (the same
    Frobenius norm and number of squares, without a complex ``abs``)."""
    if m.is_complex():
        return frobenius_upper(torch.view_as_real(m.resolve_conj()).flatten(-2))
    return frobenius_upper(m)


def _frobenius_caps(m: torch.Tensor, error: float) -> torch.Tensor:
    """``||M_i||_F`` bounds (upward) for every exact ``M_i`` within ``error`` of ``m_i``."""
    return ((_frobenius(m) + error) * (1 + 2 * U)).to(torch.float64)


def real_form(m: torch.Tensor) -> torch.Tensor:
    """``[[Mr, -Mi], [Mi, Mr]]`` for a complex batch ``(B, p, q)`` (same singular values, each
    twice; exact); a real batch is returned as it is."""
    if not m.is_complex():
        return m
    top = torch.cat([m.real, -m.imag], dim=-1)
    bottom = torch.cat([m.imag, m.real], dim=-1)
    return torch.cat([top, bottom], dim=-2)


POWER_STEPS = 6
"""Power steps of :func:`_shared_estimates`."""
SHARED_CANDIDATES = 8
SHARED_RATIO = 0.97
"""The matrices whose power estimate is within ``SHARED_RATIO`` of the largest of the chunk and
the level verified so far, above that level, or (first chunk) among the ``SHARED_CANDIDATES``
largest, get their own ``eigvalsh`` estimate."""


def _shared_estimates(
    c: torch.Tensor, s2: torch.Tensor, shared: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimates of ``lambda_max`` of the (scaled) Grams ``c`` for ``shared_level``: a few
    power steps for all (lower estimates), ``eigvalsh`` for the candidates (the largest
    unscaled power estimates, above ``shared`` or near the chunk's top). Returns the
    estimates and the candidates' mask. Heuristic: only the levels depend on it."""
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(c.shape[-1], 1, generator=gen, dtype=torch.float64).to(c)
    v = v.expand(c.shape[0], -1, -1)
    for _ in range(POWER_STEPS):
        v = c @ v
        v = v / torch.clamp(torch.linalg.vector_norm(v, dim=-2, keepdim=True), min=1e-300)
    lam = torch.linalg.vector_norm(c @ v, dim=(-2, -1)).real.clamp(min=0.0)  # <= lambda_max
    unscaled = lam / s2
    top = float(unscaled.max())
    own = unscaled >= SHARED_RATIO * max(top, shared)
    if shared > 0:  # above the level verified so far: would break down there
        own |= unscaled > shared
    else:  # the first chunk: a few candidates for the first shared level
        own[torch.topk(unscaled, min(SHARED_CANDIDATES, unscaled.numel())).indices] = True
    with one_cpu_thread(c.device):
        lam[own] = torch.linalg.eigvalsh(c[own])[..., -1].clamp(min=0.0)
    return lam.to(torch.float64), own


def level_margin(order: int, rel: float) -> float:
    """Relative margin of the tested level over the squared estimate for a Gram of order
    ``order``: ``min(rel, TIGHT_MARGIN)``, never below the rounding floor
    ``MARGIN_FLOOR (order + 1) order u``."""
    return max(MARGIN_FLOOR * (order + 1) * order * U, min(rel, TIGHT_MARGIN))


def _factor_rows(y: torch.Tensor, r0: int, r1: int, bad: torch.Tensor) -> None:
    for j in range(r0, r1):
        if j > r0:  # an inner product of length j - r0, then one subtraction
            y[:, j, j:] -= (y[:, r0:j, j, None] * y[:, r0:j, j:]).sum(dim=1)
        pivot = y[:, j, j]
        bad |= ~(pivot > 0)  # NaN included
        y[:, j, j] = torch.sqrt(torch.where(pivot > 0, pivot, torch.ones_like(pivot)))
        y[:, j, j + 1 :] /= y[:, j, j, None]


def _factor(y: torch.Tensor, r0: int, r1: int, bad: torch.Tensor, base: int) -> None:
    """Recursive Cholesky ``Y = U^T U`` of rows ``r0..r1`` (columns ``r0..n``) of a batch of
    upper triangles already updated by the rows before ``r0``: every entry is
    ``(y - sum of products) / pivot`` or a square root, the sum split into GEMM partial sums
    subtracted one after another (the evaluation-tree argument of L9 (C2) holds)."""
    if r1 - r0 <= base:
        with one_cpu_thread(y.device):  # many small vector operations
            _factor_rows(y, r0, r1, bad)
        return
    mid = r0 + (r1 - r0) // 2
    _factor(y, r0, mid, bad, base)
    y[:, mid:r1, mid:] -= y[:, r0:mid, mid:r1].mT @ y[:, r0:mid, mid:]
    _factor(y, mid, r1, bad, base)


def batched_cholesky(y: torch.Tensor, *, base: int = BASE_COLUMNS) -> torch.Tensor:
    """In-place Cholesky factorization ``Y = U^T U`` of a batch ``(B, n, n)`` of symmetric
    float64 matrices (upper triangles read; the strict lower triangles are zeroed on return,
    leaving ``U``).

    Returns a bool ``(B,)``: True where the factorization completed (every pivot positive,
    every entry finite). Where it is False the contents of ``y[i]`` are meaningless.
    """
    b, n, _ = y.shape
    bad = torch.zeros(b, dtype=torch.bool, device=y.device)
    with _float64_gemm():
        _factor(y, 0, n, bad, base)
    y.triu_()
    # an infinite or NaN entry makes the sum infinite or NaN (an overflowing sum of finite
    # entries only refuses more)
    finite = torch.isfinite(y.sum(dim=(-2, -1)))
    return finite & ~bad


def factor_error_bounds(factor: torch.Tensor) -> torch.Tensor:
    """``beta_i >= || |U_i| ||_2^2`` (upward) for a batch of upper factors ``(B, n, n)``: the
    largest row sum of ``|U|^T (|U| 1)`` (non-negative sums of at most ``n`` terms, twice:
    exact ``<=`` computed ``/ (1 - gamma_{n+1})^2``; ``n 2^-1074`` for underflowing
    products)."""
    n = factor.shape[-1]
    a = factor.abs()
    v = a.sum(dim=-1)  # row sums of |U|
    w = (a.mT @ v[..., None])[..., 0]
    shrink = (1 - gamma(n + 1)) ** 2
    return (w.amax(dim=-1) / shrink + n * UNDERFLOW_UNIT) * (1 + 4 * U)


def gram_lower(r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``G = fl(r^T r)`` for a real batch ``(B, k, n)`` and ``e_G >= ||G - r^T r||_2`` per
    matrix (``gamma_k ||r||_F^2`` plus ``n k 2^-1074``), shape ``(B,)``."""
    k, n = r.shape[-2:]
    with _float64_gemm():
        g = r.mT @ r
    err = (gamma(k) * _trace_upper(g, k) + n * k * UNDERFLOW_UNIT) * (1 + 4 * U)
    return g, err


def _trace_upper(g: torch.Tensor, k: int) -> torch.Tensor:
    """``||r||_F^2 <= `` this, from the diagonal of ``g = fl(r^H r)`` (inner length ``k``, or
    ``2k`` real for a complex ``r``): each ``g_ii`` is a computed sum of ``k`` non-negative
    squares (exact ``<= (g_ii + k 2^-1074) / (1 - gamma_k)``, underflowing squares
    included), and their sum adds ``n`` more terms."""
    n = g.shape[-1]
    diag = torch.diagonal(g, dim1=-2, dim2=-1)
    diag = diag.real if diag.is_complex() else diag
    total = diag.sum(dim=-1) + n * k * UNDERFLOW_UNIT
    return total / ((1 - gamma(k)) * (1 - gamma(n + 1))) * (1 + 4 * U)


def lambda_max_upper(
    g: torch.Tensor, g_error: torch.Tensor, t: torch.Tensor, *, base: int = BASE_COLUMNS
) -> torch.Tensor:
    """Rigorous ``lambda_max(G_exact) <= result`` where ``||G_exact - G||_2 <= g_error`` and
    ``G`` is the symmetric matrix of the upper triangle of ``g`` ``(B, n, n)``, by one
    Cholesky factorization of ``fl(t I - G)`` (L10). ``t`` ``(B,)`` is the level to test;
    the result is ``inf`` where the factorization breaks down (``t`` below or too close to
    ``lambda_max``). ``g`` is not modified."""
    n = g.shape[-1]
    y = torch.neg(g)  # the factorization never reads the strict lower triangle
    diag = torch.diagonal(y, dim1=-2, dim2=-1)  # a view
    diag += t[:, None]  # Y_ii = fl(t - G_ii)
    y_max = diag.abs().amax(dim=-1)
    ok = batched_cholesky(y, base=base)
    beta = factor_error_bounds(y)
    pivots = torch.diagonal(y, dim1=-2, dim2=-1).amax(dim=-1)
    pivot_max = float(pivots[ok].max()) if bool(ok.any()) else 0.0
    tau = _underflow_term(n, pivot_max)  # one bound for the whole batch
    rounding = (gamma(n + 1) * beta * (1 + 4 * U) + 2 * U * y_max * (1 + 4 * U) + tau) * (1 + 4 * U)
    bound = (t + rounding + g_error) * (1 + 4 * U)
    bound = torch.where(ok & torch.isfinite(bound), bound, torch.full_like(bound, math.inf))
    return bound


def hermitian_gram(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gram ``fl(h^H h)`` of a batch ``(B, k, n)`` and ``e_G`` per matrix, such that the
    symmetric matrix of the upper triangle of ``real_form(G)`` is within ``e_G`` in 2-norm of
    ``real_form(h)^T real_form(h)`` (L10): a complex batch is multiplied by real GEMMs of
    inner length ``2k`` (``e_G = 2 gamma_{2k} ||h||_F^2``), a real one directly
    (``gamma_k ||h||_F^2``); ``n k 2^-1074`` more covers underflowing products."""
    if not h.is_complex():
        return gram_lower(h)
    k, n = h.shape[-2:]
    with _float64_gemm():
        g = _gram(h)
    fro_sq = _trace_upper(g, 2 * k)  # Re G_ii sums the 2k squares of column i
    err = (2 * gamma(2 * k) * fro_sq + 4 * n * k * UNDERFLOW_UNIT) * (1 + 4 * U)
    return g, err


def verified_sigma(
    m: torch.Tensor,
    error: float = 0.0,
    rel: float = 1e-8,
    *,
    with_vectors: int = 0,
    skip_above: torch.Tensor | None = None,
    skip_factor: torch.Tensor | None = None,
    shared_level: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Rigorous upper bounds on ``sigma_1`` of every exact matrix ``M_i`` with
    ``||M_i - m_i||_2 <= error``.

    Parameters
    ----------
    m : torch.Tensor
        ``(B, p, q)`` float64 or complex128, finite.
    error : float
        Uniform bound on ``||M_i - m_i||_2``.
    rel : float
        Largest relative margin of the test level over the squared estimate
        (:func:`level_margin`): the upper bounds are about ``sigma_1 (1 + margin / 2)``.
    with_vectors : int
        Also return approximate top right singular vectors of the ``with_vectors`` matrices
        with the largest estimates (``None`` when 0).
    skip_above : torch.Tensor, optional
        ``(B,)``: matrices whose estimate exceeds ``skip_above[i]`` are not verified (their
        upper bound is the Frobenius norm: still valid, cheaper, looser).
    skip_factor : torch.Tensor, optional
        ``(B,)``: as ``skip_above = skip_factor * max(skip_above, largest estimate so far)``
        (a threshold relative to the best estimate, e.g. a cell's shrink over ``1 - rtol``).
    shared_level : bool
        For callers that need only the largest bound (a circulant layer's norm): the
        ``eigvalsh`` estimate is computed only for the matrices that a few power steps rank
        near the top of their chunk, and every other matrix is tested at the largest level
        verified so far (any level that the factorization accepts gives a valid bound; a
        matrix that breaks down at the shared level gets its own estimate and is retested).
        The largest bound is as tight as without it; the others are looser.

    Returns
    -------
    upper : torch.Tensor
        ``(B,)`` rigorous upper bounds (``inf`` only for non-finite input).
    estimate : torch.Tensor
        ``(B,)`` float64 estimates of ``sigma_1(m_i)`` (not rigorous).
    vectors : torch.Tensor or None
        ``(with_vectors, q)`` complex128 vectors, for the matrices ``index``.
    index : torch.Tensor
        ``(with_vectors,)`` indices of those matrices.
    """
    if not (m.is_complex() or m.dtype == torch.float64):
        raise TypeError(f"verified_sigma needs float64 or complex128 matrices, got {m.dtype}")
    if m.dim() != 3:
        raise ValueError(f"m must have shape (B, p, q), got {tuple(m.shape)}")
    if not (isinstance(rel, (int, float)) and 0 < rel < 1):
        raise ValueError(f"rel must be a number in (0, 1), got {rel!r}")
    if not (math.isfinite(error) and error >= 0):
        raise ValueError(f"error must be a finite number >= 0, got {error!r}")
    b = m.shape[0]
    if m.is_complex():
        m = m.to(torch.complex128)
    peak = _peak(m)
    scale = pow2_scale(peak)  # exact powers of two: largest component in [1, 2)
    h = m * scale[:, None, None]
    transposed = h.shape[-2] < h.shape[-1]
    if transposed:
        h = h.mH
    k, n = h.shape[-2:]
    order = 2 * n if h.is_complex() else n
    margin = level_margin(order, rel)
    upper = torch.full((b,), math.inf, dtype=torch.float64, device=m.device)
    estimate = torch.zeros(b, dtype=torch.float64, device=m.device)
    per_chunk = max(1, CHUNK_ENTRIES // max(1, 2 * order * order + 2 * k * n))
    shared = 0.0  # shared_level: the largest verified level so far, unscaled
    for start in range(0, b, per_chunk):
        part = slice(start, min(b, start + per_chunk))
        c, g_err = hermitian_gram(h[part])
        s2 = scale[part] ** 2  # exact: powers of two
        if shared_level:
            lam, own = _shared_estimates(c, s2, shared)
        else:
            with one_cpu_thread(c.device):  # a loop of small LAPACK calls (see SMALL_LAPACK)
                lam = torch.linalg.eigvalsh(c)[..., -1].clamp(min=0.0)
            own = torch.ones_like(lam, dtype=torch.bool)
        estimate[part] = torch.sqrt(lam)
        g = real_form(c)
        del c
        level = torch.clamp(lam * (1 + margin), min=g_err)
        if shared_level:
            shared = max(shared, float(torch.max(level[own] / s2[own])))
            level = torch.where(own, level, torch.clamp(shared * s2, min=g_err))
        # a zero matrix is not tested: its Frobenius norm, 0, is exact (a shared level would
        # give it the batch's absolute rounding floor instead)
        run = peak[part] > 0
        # estimates only choose who is verified (the others keep a valid Frobenius cap)
        if skip_above is not None or skip_factor is not None:
            est = torch.sqrt(lam) / scale[part]
            above = skip_above[part].to(lam) if skip_above is not None else torch.zeros_like(lam)
            if skip_factor is not None:
                best_est = float(torch.max(estimate[: part.stop] / scale[: part.stop]))
                above = skip_factor[part].to(lam) * torch.clamp(above, min=best_est)
            run = run & (est <= above)
        bound = torch.full_like(lam, math.inf)
        if bool(run.all()):
            bound = lambda_max_upper(g, g_err, level)
        elif bool(run.any()):
            bound[run] = lambda_max_upper(g[run], g_err[run], level[run])
        if shared_level:  # a shared level below a matrix's norm: its own estimate, retested
            miss = ~torch.isfinite(bound) & run & ~own
            if bool(miss.any()):
                with one_cpu_thread(g.device):
                    lam_m = torch.linalg.eigvalsh(g[miss])[..., -1].clamp(min=0.0)
                lam[miss] = lam_m
                estimate[part] = torch.sqrt(lam)
                level[miss] = torch.clamp(lam_m * (1 + margin), min=g_err[miss])
                bound[miss] = lambda_max_upper(g[miss], g_err[miss], level[miss])
        retry = ~torch.isfinite(bound) & run
        if bool(retry.any()):
            level2 = level[retry] * (1 + RETRY_FACTOR * margin) + g_err[retry]
            bound[retry] = lambda_max_upper(g[retry], g_err[retry], level2)
        upper[part] = bound
    sigma = torch.sqrt(upper) * (1 + 2 * U)
    broke = ~torch.isfinite(sigma)
    if bool(broke.any()):  # the Frobenius norm where the test broke down (or was skipped)
        sigma[broke] = torch.minimum(sigma[broke], _frobenius(h[broke]))
    sigma = (sigma / scale * (1 + 2 * U) + UNDERFLOW_UNIT) * (1 + 2 * U)
    sigma = ((sigma + error) * (1 + 2 * U)).to(torch.float64)
    sigma = torch.where(torch.isfinite(sigma), sigma, torch.full_like(sigma, math.inf))
    estimate = estimate / scale
    vectors, index = None, torch.zeros(0, dtype=torch.long, device=m.device)
    if with_vectors > 0:
        index = torch.topk(estimate, min(with_vectors, b)).indices
        vectors = top_vectors(m[index])
    return sigma, estimate, vectors, index


def top_vectors(m: torch.Tensor) -> torch.Tensor:
    """Approximate top right singular vectors ``(B, q)`` (complex128, unit norm) of a batch
    ``(B, p, q)``, from ``eigh`` of the Gram on the smaller side of each matrix scaled by a
    power of two (no overflow at extreme scales). Heuristic: for witnesses."""
    m = m.to(torch.complex128)
    h = m * pow2_scale(_peak(m))[:, None, None]
    transposed = h.shape[-2] < h.shape[-1]
    if transposed:
        h = h.mH
    with one_cpu_thread(h.device):
        _, vecs = torch.linalg.eigh(h.mH @ h)
    z = vecs[..., -1]  # (B, n)
    if transposed:  # z holds left vectors u of m: v = m^H u
        z = (m.mH @ z[..., None])[..., 0]
    return z / torch.clamp(torch.linalg.vector_norm(z, dim=-1, keepdim=True), min=1e-300)


def sigma_at_most(m: torch.Tensor, mu: float | torch.Tensor, error: float = 0.0) -> torch.Tensor:
    """Prove ``sigma_1(M_i) <= mu_i`` for every exact ``M_i`` with ``||M_i - m_i||_2 <=
    error``: bool ``(B,)``, True only where it is proved (L10 at the level
    ``t = ((mu - error) s)^2 (1 - 2 MARGIN_FLOOR (n + 1) n u)``, rounded down, accepted when
    the verified bound does not exceed ``((mu - error) s)^2``)."""
    if not (m.is_complex() or m.dtype == torch.float64) or m.dim() != 3:
        raise TypeError("m must be a (B, p, q) float64 or complex128 tensor")
    if isinstance(mu, torch.Tensor) and mu.dtype != torch.float64:
        raise TypeError(f"mu must be a float or a float64 tensor, got {mu.dtype}")
    mu = torch.as_tensor(mu, dtype=torch.float64, device=m.device).expand(m.shape[0])
    if m.is_complex():
        m = m.to(torch.complex128)
    scale = pow2_scale(_peak(m))
    h = m * scale[:, None, None]
    if h.shape[-2] < h.shape[-1]:
        h = h.mH
    n = h.shape[-1]
    order = 2 * n if h.is_complex() else n
    reach = torch.clamp((mu - error) * (1 - 2 * U), min=0.0) * scale * (1 - 2 * U)
    level_max = reach * reach * (1 - 4 * U)  # <= ((mu - error) s)^2
    level = level_max * (1 - 2 * MARGIN_FLOOR * (order + 1) * order * U)
    c, g_err = hermitian_gram(h)
    bound = lambda_max_upper(real_form(c), g_err, level)
    return (bound <= level_max) & (mu > error) & torch.isfinite(mu)


def verified_bracket(
    m: torch.Tensor,
    error: float,
    rtol: float,
    *,
    lower: float = 0.0,
    n_candidates: int = 4,
    deadline: float | None = None,
    threshold: torch.Tensor | None = None,
    lazy: bool = False,
    lazy_factor: torch.Tensor | None = None,
    shared_level: bool = False,
) -> MatrixBracket:
    """Drop-in for :func:`~specbound.rigorous.bracket.bracket_matrices` on the verified core:
    ``upper[i] >= sigma_1(M_i)`` for every exact ``M_i`` with ``||M_i - m_i||_2 <= error``,
    and the best rigorous lower bound ``||M_j v|| / ||v||`` over the approximate top singular
    vectors of the ``n_candidates`` matrices with the largest estimates (one ``eigh`` call
    after all chunks). With ``shared_level``
    (:func:`verified_sigma`) only the largest upper bound is as tight as the rounding allows.

    Matrices whose Frobenius cap is already below their target (``threshold[i]``, or
    ``lower / (1 - rtol)``) keep that cap; the rest are verified (:func:`verified_sigma`)
    with margin ``rtol / 4`` in chunks, checking ``deadline`` between chunks (a matrix not
    reached keeps its Frobenius cap, still valid). With ``lazy`` (and a ``threshold``), a
    matrix whose estimate already exceeds its threshold is not verified either (it cannot
    settle; its Frobenius cap stays): for callers that split such matrices anyway. With
    ``lazy_factor`` the skip threshold is ``lazy_factor[i]`` times the larger of that threshold
    and the best estimate so far (useful before any lower bound is known).
    """
    p, q = m.shape[-2:]
    uncapped = threshold is None and not lower > 0 and min(p, q) > 1
    if uncapped:  # every matrix is verified: the Frobenius caps only for those a deadline leaves
        upper = torch.full((m.shape[0],), math.inf, dtype=torch.float64, device=m.device)
        target = torch.zeros_like(upper)
        active = torch.arange(m.shape[0], device=m.device)
    else:
        upper = _frobenius_caps(m, error)
        target = (
            threshold.to(upper)
            if threshold is not None
            else torch.full_like(upper, lower / (1 - rtol) if lower > 0 else 0.0)
        )
        active = torch.nonzero(upper > target).flatten()
    res = MatrixBracket(upper, lower, 0, None)
    if min(p, q) == 1:  # a row or a column: sigma_1 is its Frobenius norm, already bounded
        top = torch.topk(upper, min(n_candidates, upper.numel())).indices
        mt = m[top].to(torch.complex128)
        v = mt[:, 0, :].conj() if p == 1 else torch.ones_like(mt[:, 0, :])
        v = v / torch.clamp(torch.linalg.vector_norm(v, dim=-1, keepdim=True), min=1e-300)
        lows = matvec_norm_lower(m[top], v, error)
        j = int(torch.argmax(lows))
        if float(lows[j]) > res.lower:
            res.lower, res.argmax, res.vector = float(lows[j]), int(top[j]), v[j]
        return res
    if active.numel() == 0:
        return res
    n = 2 * min(p, q) if m.is_complex() else min(p, q)
    estimate = torch.zeros_like(upper)  # float64 estimates of sigma_1 (0: not reached)
    per_chunk = max(1, CHUNK_ENTRIES // max(1, 4 * n * n))
    if deadline is not None:  # small chunks: the deadline is checked often
        per_chunk = min(per_chunk, max(DEADLINE_CHUNK, DEADLINE_ENTRIES // (n * n)))
    for start in range(0, active.numel(), per_chunk):
        if deadline is not None and time.perf_counter() > deadline:
            if uncapped:
                upper[active[start:]] = _frobenius_caps(m[active[start:]], error)
            res.notes.append("stopped by max_seconds: some matrices keep their Frobenius cap")
            break
        idx = active[start : start + per_chunk]
        sig, est, _, _ = verified_sigma(
            m[idx],
            error,
            max(rtol / 4, 1e-15),
            skip_above=(
                None
                if not lazy or threshold is None
                else torch.full_like(upper[idx], lower)
                if lazy_factor is not None
                else target[idx]
            ),
            skip_factor=(None if lazy_factor is None else lazy_factor.to(upper)[idx]),
            shared_level=shared_level,
        )
        upper[idx] = torch.minimum(upper[idx], sig)
        estimate[idx] = est
    # witnesses: the matrices with the largest estimates over all chunks (eigh once)
    reached = torch.nonzero(estimate > 0).flatten()
    if reached.numel() and n_candidates > 0:
        top = reached[torch.topk(estimate[reached], min(n_candidates, reached.numel())).indices]
        vec = top_vectors(m[top])
        lows = matvec_norm_lower(m[top], vec, error)
        j = int(torch.argmax(lows))
        if float(lows[j]) > res.lower:
            res.lower, res.argmax, res.vector = float(lows[j]), int(top[j]), vec[j]
    return res


__all__ = [
    "batched_cholesky",
    "factor_error_bounds",
    "gram_lower",
    "hermitian_gram",
    "lambda_max_upper",
    "level_margin",
    "real_form",
    "sigma_at_most",
    "top_vectors",
    "verified_bracket",
    "verified_sigma",
]
