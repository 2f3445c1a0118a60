"""Gram iteration: guaranteed upper bounds on spectral norms by repeated Gram products.

Three methods and the spectral-rescaling factors built on the same iteration:

* :func:`gram_iteration` and the method ``gram_dense`` — Gram iteration on a matrix
  (Delattre, Barthélemy, Araujo & Allauzen, *Efficient Bound of Lipschitz Constant for
  Convolutional Layers by Gram Iteration*, ICML 2023, arXiv 2305.16173, Algorithm with
  rescaling): :math:`G_0 = W`, :math:`G_{t+1} = G_t^* G_t`,
  :math:`\\beta_t = \\|G_t\\|_F^{2^{-t}} = \\|W\\|_{S_{2^{t+1}}} \\ge \\sigma_1(W)`.
* ``gram_circular`` — the same per frequency matrix of a circular layer (ICML 2023, Sec. 3):
  :math:`\\max_\\omega \\|\\hat K(\\omega)\\|_{S_{2^{T+1}}} \\ge \\sigma_{\\mathrm{circ}}`.
* ``gram_zero`` and :func:`rescaling_factors` — Gram iteration on the kernel itself
  (Delattre, Barthélemy & Allauzen, *Spectral Norm of Convolutional Layers with Circular and
  Zero Paddings*, arXiv 2402.00240, "norm2toep" and spectral rescaling, Sec. 5): the
  iterated self-correlation :math:`K_{t+1} = K_t \\star K_t` and the Schur (row-sum) test on
  :math:`L(K_T) = (L(K) L(K)^*)^{2^{T-1}}`, an upper bound on the symbol supremum
  :math:`S(K)` and hence on the layer for every input size.

Every iteration rescales its iterate at each step and carries the scale in a log accumulator
(``specbound/research/gram.md`` §2.2), so nothing overflows or underflows for kernel scales
between 1e-150 and 1e150, and an all-zero matrix or kernel gives exactly 0 (the normaliser
is replaced by 1 where it vanishes). Normalisers are detached from autograd: the bounds are
positively 1-homogeneous, so this leaves every gradient exact.

The numerical cores are torch functions, shared by the float64 :class:`Bound` path (run
under ``torch.no_grad`` in float64 on CPU) and the differentiable path of
:func:`specbound.spectral_norm` (any device and float dtype).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..operators.circulant import polyphase_spatial_first, polyphase_taps, require_circulant
from ..operators.dense import conv_matrix
from ..spec import Layer
from .base import SIZE_GIVEN, SIZE_NONE, Bound, register

__all__ = [
    "gram_iteration",
    "rescaling_factors",
    "rescaling_factors_dense",
    "rescaling_factors_residual",
]

DIRECT_CORRELATION_MAX_BYTES = 2**26
"""Largest im2col buffer (bytes) for which a self-correlation uses ``F.conv2d`` directly;
above it the FFT route is used (see :func:`_self_correlation`)."""

DIRECT_CORRELATION_MAX_SIZE = 5
"""Largest spatial kernel side for which a self-correlation may use ``F.conv2d`` directly."""


# --------------------------------------------------------------------------- validation
def _check_n_iter(n_iter: Any, minimum: int) -> int:
    if not isinstance(n_iter, numbers.Integral) or isinstance(n_iter, bool):
        raise TypeError(f"n_iter must be an int >= {minimum}, got {n_iter!r}")
    if n_iter < minimum:
        raise ValueError(f"n_iter must be >= {minimum}, got {n_iter}")
    return int(n_iter)


def _check_tensor(x: Any, name: str, min_dim: int) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{name} must be a real or complex floating tensor, got dtype {x.dtype}")
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimensions, got shape {tuple(x.shape)}")
    return x


# --------------------------------------------------------------------------- safe scaling
def _where_positive(r: torch.Tensor) -> torch.Tensor:
    """``r`` where ``r > 0`` and 1 elsewhere: a normaliser that never divides by zero."""
    return torch.where(r > 0, r, torch.ones_like(r))


def _frobenius(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Frobenius norm over the trailing ``dims``, safe from under/overflow (the entries are
    first divided by the largest modulus)."""
    top = _where_positive(torch.amax(x.abs(), dim=dims, keepdim=True))
    norm = torch.linalg.vector_norm(x / top, dim=dims, keepdim=True) * top
    return norm.reshape(x.shape[: x.dim() - len(dims)])


def _normalise(
    x: torch.Tensor, log_scale: torch.Tensor, dims: tuple[int, ...], safe: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Divide ``x`` by its (detached) Frobenius norm ``r`` and return ``2 (log_scale + ln r)``.

    This is one step of the log accumulator :math:`\\Lambda_{t+1} = 2(\\Lambda_t + \\ln r_t)`
    of the rescaled Gram iteration (Delattre et al. 2023, Algorithm with rescaling): after the
    next Gram product, the true iterate is ``exp(Lambda_{t+1})`` times the computed one.
    ``safe`` protects the norm itself from under/overflow (needed on the raw input only).
    """
    with torch.no_grad():
        r = _frobenius(x, dims) if safe else torch.linalg.vector_norm(x, dim=dims)
        r = _where_positive(r)
    shape = r.shape + (1,) * len(dims)
    return x / r.reshape(shape), 2.0 * (log_scale + torch.log(r))


def _root_of_scaled(
    log_value: torch.Tensor, value: torch.Tensor, root: float
) -> torch.Tensor:
    """``(value * exp(log_value)) ** root``, computed as ``exp(root (ln value + log_value))``,
    and exactly 0 (with a zero gradient, not NaN) where ``value == 0``."""
    positive = value > 0
    safe = torch.where(positive, value, torch.ones_like(value))
    out = torch.exp(root * (torch.log(safe) + log_value))
    return torch.where(positive, out, torch.zeros_like(out))


# --------------------------------------------------------------------------- dense Gram iteration
def _gram_side(matrix: torch.Tensor) -> torch.Tensor:
    """``W`` or ``W^*``, whichever has the fewer columns, so ``G_1 = W^* W`` is the smaller Gram.

    Schatten norms are invariant under the conjugate transpose, so the bound is unchanged.
    """
    return matrix.mH if matrix.shape[-1] > matrix.shape[-2] else matrix


def _gram_log_iterate(
    matrix: torch.Tensor, n_iter: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rescaled Gram iteration (Delattre et al. 2023, Algorithm with rescaling).

    Returns ``(G, Lambda)`` with :math:`G_T = e^{\\Lambda} G` for the unnormalised iterate
    :math:`G_0 = W`, :math:`G_{t+1} = G_t^* G_t`. Batched over leading dimensions.
    """
    dims = (-2, -1)
    g = matrix
    log_scale = torch.zeros(matrix.shape[:-2], dtype=_real_dtype(matrix), device=matrix.device)
    for t in range(n_iter):
        g, log_scale = _normalise(g, log_scale, dims, safe=t == 0)
        g = g.mH @ g
    return g, log_scale


def _gram_log_bound(matrix: torch.Tensor, n_iter: int) -> torch.Tensor:
    """:math:`\\ln \\beta_T(W) = 2^{-T}(\\ln\\|G\\|_F + \\Lambda)`, ``-inf`` for a zero matrix.

    Batched over leading dimensions; ``matrix`` should already be on its smaller Gram side.
    """
    g, log_scale = _gram_log_iterate(matrix, n_iter)
    r = _frobenius(g, (-2, -1)) if n_iter == 0 else torch.linalg.vector_norm(g, dim=(-2, -1))
    safe = _where_positive(r)
    out = (torch.log(safe) + log_scale) * 2.0**-n_iter
    return torch.where(r > 0, out, torch.full_like(out, -math.inf))


def _real_dtype(x: torch.Tensor) -> torch.dtype:
    return x.real.dtype if x.is_complex() else x.dtype


def _schatten_gradient(matrix: torch.Tensor, n_iter: int, value: torch.Tensor) -> torch.Tensor:
    """Gradient of :math:`\\beta = \\|W\\|_{S_p}`, :math:`p = 2^{T+1}` (gram.md §2.3):

    .. math:: \\nabla_W \\|W\\|_{S_p} = \\frac{W (W^* W)^{p/2-1}}{\\|W\\|_{S_p}^{p-1}}.

    Computed stably as a direction ``D = W~ P~`` (``W~ = W/||W||_F``, ``P~`` the product of the
    normalised Gram iterates, :math:`(W^*W)^{2^T-1} = \\prod_{t=1}^{T} G_t`) scaled by Euler's
    identity for a 1-homogeneous function, :math:`\\mathrm{Re}\\,\\langle\\nabla, W\\rangle =
    \\beta`. A zero matrix gets a zero (sub)gradient. Batched over leading dimensions.
    """
    dims = (-2, -1)
    w_scale = _where_positive(_frobenius(matrix, dims))[..., None, None].to(matrix.dtype)
    w = matrix / w_scale
    direction = w
    if n_iter > 0:
        g = w.mH @ w
        power = g / _where_positive(torch.linalg.vector_norm(g, dim=dims))[..., None, None]
        g = power
        for _ in range(1, n_iter):
            g = g @ g
            g = g / _where_positive(torch.linalg.vector_norm(g, dim=dims))[..., None, None]
            power = power @ g
            power = power / _where_positive(torch.linalg.vector_norm(power, dim=dims))[
                ..., None, None
            ]
        direction = w @ power
    inner = (direction.conj() * w).real.sum(dim=dims) * w_scale.real[..., 0, 0]
    ok = (inner > 0) & (value > 0)
    factor = torch.where(ok, value / torch.where(ok, inner, torch.ones_like(inner)), 0.0)
    return direction * factor[..., None, None].to(direction.dtype)


class _SchattenNorm(torch.autograd.Function):
    """:math:`\\|W\\|_{S_{2^{T+1}}}` by rescaled Gram iteration, with the closed-form backward.

    The forward value is :math:`\\beta_T(W)`; the backward applies
    :func:`_schatten_gradient` instead of differentiating through the iterations, so it stores
    only ``W``. ``value``, if given, is a precomputed forward value (used when the forward was
    evaluated in a batch and only the maximiser needs a gradient).
    """

    @staticmethod
    def forward(ctx, matrix, n_iter, value=None):  # type: ignore[override]
        if value is None:
            value = torch.exp(_gram_log_bound(matrix, n_iter))
        ctx.n_iter = n_iter
        ctx.save_for_backward(matrix, value)
        return value

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        matrix, value = ctx.saved_tensors
        grad = _schatten_gradient(matrix, ctx.n_iter, value)
        return grad * grad_output[..., None, None].to(grad.dtype), None, None


def gram_iteration(matrix: torch.Tensor, n_iter: int) -> torch.Tensor:
    """Gram iteration upper bound on the spectral norm of a matrix (batched).

    Delattre, Barthélemy, Araujo & Allauzen, ICML 2023 (arXiv 2305.16173), Gram iteration
    with rescaling: :math:`G_0 = W`, :math:`G_{t+1} = G_t^* G_t` and

    .. math:: \\beta_T(W) = \\|G_T\\|_F^{2^{-T}} = \\|W\\|_{S_{2^{T+1}}}
              = \\Big(\\sum_i \\sigma_i^{2^{T+1}}\\Big)^{2^{-(T+1)}} \\ge \\sigma_1(W),

    non-increasing in ``T``, with :math:`\\beta_T \\le \\mathrm{rank}(W)^{2^{-(T+1)}}\\sigma_1`
    (gram.md §2.1). Each step is Frobenius-normalised with a log accumulator (§2.2); the Gram
    product runs on the smaller side (``min(p, q)``). The backward is the closed-form gradient
    of the Schatten norm (§2.3), not a differentiation through the iterations.

    Parameters
    ----------
    matrix : torch.Tensor
        Real or complex, shape ``(..., p, q)``; leading dimensions are a batch.
    n_iter : int
        Number of Gram products ``T >= 0``; ``T = 0`` gives ``||W||_F``.

    Returns
    -------
    torch.Tensor
        Real, shape ``matrix.shape[:-2]``; exactly 0 for an all-zero matrix.
    """
    matrix = _check_tensor(matrix, "matrix", 2)
    n_iter = _check_n_iter(n_iter, 0)
    return _SchattenNorm.apply(_gram_side(matrix), n_iter)


# --------------------------------------------------------------------------- kernel self-correlation
def _correlate_direct(x: torch.Tensor) -> torch.Tensor:
    """Full self-correlation :math:`(X \\star X)[b,i,j,\\delta] = \\sum_{l,a}
    X[b,i,l,a+\\delta] X[b,j,l,a]` by a grouped ``F.conv2d`` (the "padding k-1 trick" of
    Delattre et al. 2024), for ``x`` of shape ``(B, c, c', kh, kw)``."""
    b, c, cp, kh, kw = x.shape
    inputs = x.transpose(0, 1).reshape(c, b * cp, kh, kw)
    out = F.conv2d(inputs, x.reshape(b * c, cp, kh, kw), padding=(kh - 1, kw - 1), groups=b)
    return out.reshape(c, b, c, 2 * kh - 1, 2 * kw - 1).transpose(0, 1)


def _correlate_fft(x: torch.Tensor) -> torch.Tensor:
    """The same full self-correlation through the DFT on a ``(2kh-1) x (2kw-1)`` grid, where it
    is exact (no aliasing): per frequency it is the product :math:`\\hat X \\hat X^*` of the
    ``c x c'`` frequency matrices. Rounding is relative to the largest entry of the result,
    harmless in float64 (about ``c s^2 u`` on a row sum)."""
    b, c, cp, kh, kw = x.shape
    mh, mw = 2 * kh - 1, 2 * kw - 1
    spectrum = torch.fft.rfft2(x, s=(mh, mw))  # (B, c, c', mh, mw//2+1)
    spectrum = spectrum.permute(0, 3, 4, 1, 2)  # (B, mh, mw', c, c')
    product = spectrum @ spectrum.mH  # (B, mh, mw', c, c)
    corr = torch.fft.irfft2(product.permute(0, 3, 4, 1, 2), s=(mh, mw))
    # index delta (mod m) -> position delta + k - 1, as F.conv2d(x, x, padding=k-1) lays it out
    return torch.roll(corr, shifts=(kh - 1, kw - 1), dims=(-2, -1))


def _self_correlation(x: torch.Tensor) -> torch.Tensor:
    """Full self-correlation of a batch of kernels ``(B, c, c', kh, kw)``, cheapest exact route.

    A ``1 x 1`` kernel is a matrix product; small kernels use ``F.conv2d`` directly; larger
    ones the FFT (``F.conv2d`` on CPU can allocate an im2col buffer of
    ``c * c' kh kw * (2kh-1)(2kw-1)`` entries, 150 GB for ``c = 64, k = 5, T = 3``).
    """
    b, c, cp, kh, kw = x.shape
    if kh == kw == 1:
        m = x[..., 0, 0]
        return (m @ m.mT)[..., None, None]
    im2col = x.element_size() * b * c * cp * kh * kw * (2 * kh - 1) * (2 * kw - 1)
    if max(kh, kw) <= DIRECT_CORRELATION_MAX_SIZE and im2col <= DIRECT_CORRELATION_MAX_BYTES:
        return _correlate_direct(x)
    return _correlate_fft(x)


def _kernel_gram_log_iterate(
    kernel: torch.Tensor, n_iter: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Iterated self-correlation with rescaling (Delattre et al. 2024, "norm2toep").

    ``kernel`` has shape ``(B, c, c', kh, kw)``. Returns ``(X, Lambda)`` with
    :math:`K_T = e^{\\Lambda} X` where :math:`K_1 = K \\star K`, :math:`K_{t+1} = K_t \\star
    K_t`, so that :math:`L(K_T) = (L(K) L(K)^*)^{2^{T-1}}` on :math:`\\ell^2(\\mathbb Z^2)`
    (``c x c`` channels, spatial size :math:`2^T(k-1)+1`).
    """
    dims = (-4, -3, -2, -1)
    x = kernel
    log_scale = torch.zeros(kernel.shape[:-4], dtype=kernel.dtype, device=kernel.device)
    for t in range(n_iter):
        x, log_scale = _normalise(x, log_scale, dims, safe=t == 0)
        x = _self_correlation(x)
    return x, log_scale


def _as_batch(kernel: torch.Tensor, groups: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``(..., c_out, c_in_g, kh, kw)`` -> ``(B, c_out_g, c_in_g, kh, kw)`` over batch and groups."""
    lead, (c_out, c_in_g, kh, kw) = kernel.shape[:-4], kernel.shape[-4:]
    if c_out % groups:
        raise ValueError(f"groups={groups} must divide c_out={c_out}")
    return kernel.reshape(-1, c_out // groups, c_in_g, kh, kw), (*lead, groups)


def _row_sums(kernel_t: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """:math:`\\sum_{j,\\delta} |K_T[i,j,\\delta]|\\, q_j` for ``K_T`` of shape
    ``(B, c, c, s, s)``; ``weights`` ``q`` of shape ``(B, c)`` or None."""
    sums = kernel_t.abs().sum(dim=(-2, -1))  # (B, c, c)
    if weights is not None:
        sums = sums * weights[..., None, :]
    return sums.sum(dim=-1)


def _kernel_factors(kernel: torch.Tensor, n_iter: int) -> torch.Tensor:
    """:math:`t_i = (\\sum_{j,\\delta} |K_T[i,j,\\delta]|)^{2^{-T}}` for a batch
    ``(B, c, c', kh, kw)`` (rows ``i`` = the first channel axis), shape ``(B, c)``."""
    x, log_scale = _kernel_gram_log_iterate(kernel, n_iter)
    return _root_of_scaled(log_scale[..., None], _row_sums(x), 2.0**-n_iter)


def rescaling_factors(kernel: torch.Tensor, n_iter: int, *, groups: int = 1) -> torch.Tensor:
    """Spectral-rescaling factors of a conv kernel, one per output channel.

    Delattre, Barthélemy & Allauzen 2024 (arXiv 2402.00240), Sec. 5 (spectral rescaling),
    gram.md §5: with :math:`K_1 = K \\star K` (full spatial self-correlation on the output
    side, ``c_out x c_out`` channels) and :math:`K_{t+1} = K_t \\star K_t`,

    .. math:: t_i = \\Big(\\sum_{j,\\delta} |K_T[i,j,\\delta]|\\Big)^{2^{-T}}.

    Then :math:`\\|\\mathrm{diag}(t)^{-1}\\,\\mathrm{op}(K)\\|_2 \\le 1` for circular padding
    (any size), zero padding (any size and pad), any stride and any dilation (Schur test and
    Löwner–Heinz, gram.md §5), and :math:`\\max_i t_i` is the ``gram_zero`` bound on the
    output side. ``T = 1`` is AOL (Prach & Lampert 2022) on the output side. The factors do
    not depend on the dilation (the self-correlation of a dilated kernel is the dilated
    self-correlation), so pass the undilated kernel.

    Parameters
    ----------
    kernel : torch.Tensor
        ``(..., c_out, c_in // groups, kh, kw)``, real; leading dimensions are a batch.
    n_iter : int
        ``T >= 1`` self-correlations.
    groups : int
        Block-diagonal channel groups, as in ``torch.nn.Conv2d``.

    Returns
    -------
    torch.Tensor
        ``(..., c_out)``, non-negative; ``t_i = 0`` exactly (no NaN) for a zero output channel.
        Differentiable in ``kernel``.
    """
    kernel = _check_tensor(kernel, "kernel", 4)
    n_iter = _check_n_iter(n_iter, 1)
    batch, lead = _as_batch(kernel, groups)
    return _kernel_factors(batch, n_iter).reshape(*lead[:-1], -1)


def rescaling_factors_dense(matrix: torch.Tensor, n_iter: int) -> torch.Tensor:
    """Spectral-rescaling factors of a matrix, one per row (gram.md §5, Delattre et al. 2024).

    With :math:`M = (W W^\\top)^{2^{T-1}}`: :math:`t_i = (\\sum_j |M_{ij}|)^{2^{-T}}` and
    :math:`\\|\\mathrm{diag}(t)^{-1} W\\|_2 \\le 1`. ``T = 1`` is AOL on the rows.

    Parameters
    ----------
    matrix : torch.Tensor
        ``(..., p, q)``, real; leading dimensions are a batch.
    n_iter : int
        ``T >= 1``.

    Returns
    -------
    torch.Tensor
        ``(..., p)``; 0 exactly for a zero row. Differentiable.
    """
    matrix = _check_tensor(matrix, "matrix", 2)
    n_iter = _check_n_iter(n_iter, 1)
    return rescaling_factors(matrix[..., None, None], n_iter)


def rescaling_factors_residual(
    kernel_or_matrix: torch.Tensor, n_iter: int, q: torch.Tensor
) -> torch.Tensor:
    """Residual (SLL-style) rescaling factors with positive weights ``q`` (gram.md §5).

    .. math:: t^{\\mathrm{res}}_i = \\Big(\\sum_{j(,\\delta)} |M_{ij(\\delta)}|\\,
              \\frac{q_j}{q_i}\\Big)^{2^{-(T-1)}},

    with :math:`M = K_T` for a kernel (``(c_out, c_in, kh, kw)``) or
    :math:`M = (W W^\\top)^{2^{T-1}}` for a matrix (``(p, q)``). For every ``q > 0``,
    :math:`W W^\\top \\preceq \\mathrm{diag}(t^{\\mathrm{res}})` (weighted Schur test and
    Löwner–Heinz), the condition of the SLL block :math:`x - 2 W T^{-1}\\sigma(W^\\top x + b)`
    (Araujo et al., ICLR 2023); with ``q = 1``, :math:`t^{\\mathrm{res}} = t^2`. Note the
    exponent: these are *squared* scales.

    Parameters
    ----------
    kernel_or_matrix : torch.Tensor
        A 4-D conv kernel or a 2-D matrix, real.
    n_iter : int
        ``T >= 1``.
    q : torch.Tensor
        Positive weights, shape ``(c_out,)`` (rows of the matrix).

    Returns
    -------
    torch.Tensor
        ``(c_out,)``; 0 for a zero row. Differentiable in both arguments.
    """
    x = _check_tensor(kernel_or_matrix, "kernel_or_matrix", 2)
    n_iter = _check_n_iter(n_iter, 1)
    if x.dim() == 2:
        x = x[..., None, None]
    elif x.dim() != 4:
        raise ValueError(
            "kernel_or_matrix must be a 2-D matrix or a 4-D conv kernel, got shape "
            f"{tuple(kernel_or_matrix.shape)}"
        )
    q = _check_tensor(q, "q", 1)
    if q.shape != (x.shape[0],):
        raise ValueError(f"q must have shape ({x.shape[0]},) (one per row), got {tuple(q.shape)}")
    if not bool((q > 0).all()):
        raise ValueError("q must be positive")
    k_t, log_scale = _kernel_gram_log_iterate(x[None], n_iter)
    q = q.to(x.dtype)
    weighted = _row_sums(k_t, q[None])[0] / q
    return _root_of_scaled(log_scale, weighted, 2.0 ** -(n_iter - 1))
