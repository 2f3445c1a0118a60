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
(docs/theory/bounds.md, "Gram iteration"), so nothing overflows or underflows for kernel scales
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

from ..operators.circulant import circulant_engine, require_circulant
from ..operators.conv_layer import ConvLayer
from ..operators.dense import conv_matrix
from ..rigorous.fpenv import tf32_disabled
from ..rigorous.rounding import pow2_exponent
from ..spec import check_count, check_tensor
from .base import SIZE_GIVEN, SIZE_NONE, Bound, register

__all__ = [
    "gram_iteration",
    "kernel_gram_row_factors",
]

DIRECT_CORRELATION_MAX_BYTES = 2**26
"""Largest im2col buffer (bytes) for which a self-correlation uses ``F.conv2d`` directly;
above it the FFT route is used (see :func:`_self_correlation`)."""

DIRECT_CORRELATION_MAX_SIZE = 3
"""Largest spatial kernel side for which a self-correlation may use ``F.conv2d`` directly."""


# --------------------------------------------------------------------------- safe scaling
def _where_positive(r: torch.Tensor) -> torch.Tensor:
    """``r`` where ``r > 0`` and 1 elsewhere: a normaliser that never divides by zero."""
    return torch.where(r > 0, r, torch.ones_like(r))


def _as_real(x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, tuple[int, ...]]:
    """A complex ``x`` as its real view (real and imaginary parts on a new last axis) and the
    trailing ``dims`` extended to that axis; a real ``x`` unchanged. Norms and maxima of the
    real view are those of ``x`` and avoid torch's slow complex reductions on the CPU."""
    if not x.is_complex():
        return x, dims
    return torch.view_as_real(x.resolve_conj()), (*(d - 1 for d in dims), -1)


def _fro(x: torch.Tensor, dims: tuple[int, ...] = (-2, -1)) -> torch.Tensor:
    """Frobenius norm over the trailing ``dims`` (no under/overflow protection)."""
    view, view_dims = _as_real(x, dims)
    return torch.linalg.vector_norm(view, dim=view_dims)


def _frobenius(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Frobenius norm over the trailing ``dims``, safe from under/overflow (the entries are
    first divided by the largest modulus)."""
    view, view_dims = _as_real(x, dims)
    top = _where_positive(torch.amax(view.abs(), dim=view_dims, keepdim=True))
    norm = torch.linalg.vector_norm(view / top, dim=view_dims, keepdim=True) * top
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
        r = _frobenius(x, dims) if safe else _fro(x, dims)
        r = _where_positive(r)
    shape = r.shape + (1,) * len(dims)
    return x / r.reshape(shape), 2.0 * (log_scale + torch.log(r))


def _scale_(x: torch.Tensor, factor: torch.Tensor, *, divide: bool = False) -> torch.Tensor:
    """``x *= factor`` (or ``x /= factor``) in place, one real factor per matrix of the batch
    ``(..., p, q)``; a complex ``x`` through its real view (a real operation, not a complex
    one)."""
    if x.is_complex():
        view, factor = torch.view_as_real(x), factor[..., None, None, None]
    else:
        view, factor = x, factor[..., None, None]
    if divide:
        view.div_(factor)
    else:
        view.mul_(factor)
    return x


def _flush_tiny(x: torch.Tensor, *, out: torch.Tensor) -> torch.Tensor:
    """``out`` = ``x`` with every real and imaginary part of modulus at most
    :math:`\\sqrt{\\mathrm{tiny}}` (``2**-63`` in float32, ``2**-511`` in float64) set to 0.
    Then every product of two parts is 0 or at least ``tiny``: none is subnormal."""
    view, view_out = (
        (torch.view_as_real(x), torch.view_as_real(out)) if x.is_complex() else (x, out)
    )
    torch.hardshrink(view, math.sqrt(torch.finfo(view.dtype).tiny), out=view_out)
    return out


def _root_of_scaled(log_value: torch.Tensor, value: torch.Tensor, root: float) -> torch.Tensor:
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


def _gram_powers(
    first: torch.Tensor, log_scale: torch.Tensor, n_iter: int, spare: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Continue a rescaled Gram iteration from the first Gram matrix, in place.

    ``first`` is :math:`e^{-\\Lambda_1} G_1` for :math:`G_1 = W^* W` (Hermitian positive
    semi-definite), ``log_scale`` is :math:`\\Lambda_1`. For :math:`t \\ge 1` the iterate
    :math:`G_t` is Hermitian, so :math:`G_{t+1} = G_t^* G_t = G_t^2`. Each step divides the
    computed iterate by its trace, which for a Hermitian :math:`G_t = H^* H` is
    :math:`\\|H\\|_F^2`, the squared Frobenius rescaling of Delattre et al. 2023 (Algorithm with
    rescaling) read off the diagonal in :math:`O(c)` instead of a pass over the matrix. The
    true iterate is :math:`e^{\\Lambda_t}` times the computed one, with
    :math:`\\Lambda_{t+1} = 2(\\Lambda_t + \\ln \\mathrm{tr}\\,G)`; any positive normaliser gives
    the same bound in exact arithmetic, the trace keeps every entry of the normalised iterate
    in ``[-1, 1]``, so the next product neither overflows nor loses range.

    A trace below the smallest normal number ``tiny`` (a zero matrix, or one whose entries
    are below about the square root of ``tiny`` after the first product) is replaced by
    ``tiny``: the entries of a positive semi-definite matrix are bounded by its trace, so
    they still end in ``[-1, 1]``, and a zero matrix stays exactly zero.

    Before each product, real and imaginary parts below :math:`\\sqrt{\\mathrm{tiny}}` are
    set to zero (:func:`_flush_tiny`), so no elementary product is subnormal: after a few
    steps the iterate spans more decades than the exponent range (its small eigenvalues go
    like :math:`(\\sigma_i/\\sigma_1)^{2^t}`), and subnormal arithmetic is tens of times slower
    on x86 CPUs (5x on a whole 512-channel float32 call). The change is below
    :math:`c\\sqrt{\\mathrm{tiny}}` in Frobenius norm, against :math:`\\|G\\|_F \\ge 1/\\sqrt c`
    (:math:`10^{-17}` relative in float32, :math:`10^{-151}` in float64 at :math:`c = 512`):
    far below the rounding of the product itself. ``first`` is overwritten with the result,
    ``spare`` (same shape, or None) holds the flushed copy that enters each product.
    Returns ``(G, Lambda_T)`` for ``T = n_iter``.
    """
    if n_iter <= 1:
        return first, log_scale
    g = first
    flushed = torch.empty_like(g) if spare is None else spare
    real = log_scale.dtype
    traces = torch.empty((n_iter - 1, *g.shape[:-2]), dtype=real, device=g.device)
    tiny = torch.finfo(real).tiny
    for t in range(n_iter - 1):
        trace = torch.sum(g.diagonal(dim1=-2, dim2=-1).real, dim=-1, out=traces[t])
        _scale_(g, trace.clamp_min_(tiny), divide=True)
        _flush_tiny(g, out=flushed)
        torch.matmul(flushed, flushed, out=g)
    # Lambda_T = 2^(T-1) Lambda_1 + sum_{t=1}^{T-1} 2^(T-t) ln tr_t  (the recursion unrolled)
    weights = torch.logspace(n_iter - 1, 1, n_iter - 1, base=2.0, dtype=real, device=g.device)
    weights = weights.reshape(-1, *(1,) * (traces.dim() - 1))
    return g, torch.sum(traces.log_().mul_(weights), dim=0).add_(
        log_scale, alpha=2.0 ** (n_iter - 1)
    )


def _gram_log_iterate(matrix: torch.Tensor, n_iter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rescaled Gram iteration (Delattre et al. 2023, Algorithm with rescaling).

    Returns ``(G, Lambda)`` with :math:`G_T = e^{\\Lambda} G` for the unnormalised iterate
    :math:`G_0 = W`, :math:`G_{t+1} = G_t^* G_t`. Batched over leading dimensions. The input
    is first scaled by a power of two per matrix (exact) so that its largest entry lies in
    ``[1, 2)``; later steps use the trace normalisation of :func:`_gram_powers`.
    """
    log_scale = torch.zeros(matrix.shape[:-2], dtype=_real_dtype(matrix), device=matrix.device)
    if n_iter == 0:
        return matrix, log_scale
    with torch.no_grad():  # gradients come from the closed form (_schatten_gradient)
        view, view_dims = _as_real(matrix, (-2, -1))
        top = torch.amax(view.abs(), dim=view_dims)
        exponent = -pow2_exponent(top).to(top.dtype)  # top * 2**-exponent in [1, 2)
        w = matrix.resolve_conj() if matrix.is_conj() else matrix.clone()
        w = _scale_(w, torch.exp2(-exponent))
        first = w.mH @ w
        return _gram_powers(first, 2.0 * math.log(2.0) * exponent, n_iter)


def _gram_log_bound(matrix: torch.Tensor, n_iter: int) -> torch.Tensor:
    """:math:`\\ln \\beta_T(W) = 2^{-T}(\\ln\\|G\\|_F + \\Lambda)`, ``-inf`` for a zero matrix.

    Batched over leading dimensions; ``matrix`` should already be on its smaller Gram side.
    """
    g, log_scale = _gram_log_iterate(matrix, n_iter)
    r = _frobenius(g, (-2, -1)) if n_iter == 0 else _fro(g)
    return _log_bound_from(r, log_scale, n_iter)


def _log_bound_from(r: torch.Tensor, log_scale: torch.Tensor, n_iter: int) -> torch.Tensor:
    """:math:`2^{-T}(\\ln r + \\Lambda)`: ``-inf`` where ``r == 0`` (``log_scale`` is finite).
    Not for autograd (the gradient of ``log`` at 0 is not wanted)."""
    return torch.log(r).add_(log_scale).mul_(2.0**-n_iter)


def _real_dtype(x: torch.Tensor) -> torch.dtype:
    return x.real.dtype if x.is_complex() else x.dtype


def _complex_dtype(real: torch.dtype) -> torch.dtype:
    return torch.complex128 if real == torch.float64 else torch.complex64


def _schatten_gradient(matrix: torch.Tensor, n_iter: int, value: torch.Tensor) -> torch.Tensor:
    """Gradient of :math:`\\beta = \\|W\\|_{S_p}`, :math:`p = 2^{T+1}`
    (docs/theory/bounds.md, "Differentiation"):

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
        power = g / _where_positive(_fro(g))[..., None, None]
        g = power
        for _ in range(1, n_iter):
            g = g @ g
            g = g / _where_positive(_fro(g))[..., None, None]
            power = power @ g
            power = power / _where_positive(_fro(power))[..., None, None]
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
        else:
            value = value.clone()  # an output, not the input tensor itself
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
    (docs/proofs.md, GI-UB and GI-RANK). Each step is Frobenius-normalised with a log
    accumulator (docs/theory/bounds.md); the Gram
    product runs on the smaller side (``min(p, q)``). The backward is the closed-form gradient
    of the Schatten norm (GI-SCHATTEN), not a differentiation through the iterations.

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
    matrix = check_tensor(matrix, "matrix", 2)
    n_iter = check_count(n_iter, "n_iter", 0)
    with tf32_disabled():
        return _SchattenNorm.apply(_gram_side(matrix), n_iter)


# ------------------------------------------------------------------ kernel self-correlation
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
    b, c, _, kh, kw = x.shape
    mh, mw = 2 * kh - 1, 2 * kw - 1
    spectrum = torch.fft.rfft2(x, s=(mh, mw))  # (B, c, c', mh, mw//2+1)
    spectrum = spectrum.permute(0, 3, 4, 1, 2)  # (B, mh, mw', c, c')
    product = (spectrum @ spectrum.mH).permute(0, 3, 4, 1, 2)  # (B, c, c, mh, mw')
    # canonical strides: MKL's c2r transform is very slow on the permuted 1-wide layout
    corr = torch.fft.irfft2(product.reshape(-1, *product.shape[-2:]), s=(mh, mw))
    corr = corr.reshape(b, c, c, mh, mw)
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
    return kernel_gram_row_factors(kernel, n_iter, root=2.0**-n_iter)


def kernel_gram_row_factors(
    kernel: torch.Tensor, n_iter: int, *, root: float, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """``(sum_{j, delta} |K_T[i, j, delta]| q_j) ** root`` per row ``i`` of the iterated
    self-correlation :math:`K_T` (Delattre et al. 2024; :func:`_kernel_gram_log_iterate`) of a
    batch ``(B, c, c', kh, kw)``, shape ``(B, c)``; ``q = 1`` when ``weights`` is None.

    The scale of :math:`K_T` is kept as a logarithm until the root is taken, so neither the
    iterates nor the factors overflow; a zero row gives exactly 0 (zero gradient, not NaN).
    Differentiable in ``kernel`` and ``weights``; TF32 off on CUDA.
    """
    with tf32_disabled():
        x, log_scale = _kernel_gram_log_iterate(kernel, n_iter)
    sums = _row_sums(x, weights)
    return _root_of_scaled(log_scale[..., None], sums, root)


# ------------------------------------------------------------------ torch cores of the methods
def _kernel_batch(kernel: torch.Tensor, layer: ConvLayer) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``(..., c_out, c_in_g, kh, kw)`` -> ``(B, c_out, c_in_g, kh, kw)`` and the batch shape."""
    shape = tuple(kernel.shape[-4:])
    if shape != layer.kernel.shape:
        raise ValueError(
            f"kernel has shape {tuple(kernel.shape)}, expected (..., *{layer.kernel.shape})"
        )
    return kernel.reshape(-1, *shape), tuple(kernel.shape[:-4])


def _fewer_channels_side(kernel: torch.Tensor, groups: int) -> torch.Tensor:
    """Kernels ``(B, c_out, c_in_g, kh, kw)`` -> ``(B*groups, c, c', kh, kw)`` with
    ``c = min(c_out_g, c_in_g)`` first: the side whose ``c x c`` Gram is smaller.

    The input side swaps the channel axes without a spatial flip. That is the adjoint
    :math:`L(K)^*` up to the reflection :math:`\\delta \\mapsto -\\delta`, which every iterate
    inherits and which leaves each row sum :math:`\\sum_{j,\\delta}|K_T[i,j,\\delta]|` unchanged.
    """
    b, c_out, c_in_g, kh, kw = kernel.shape
    blocks = kernel.reshape(b * groups, c_out // groups, c_in_g, kh, kw)
    return blocks.transpose(1, 2) if c_in_g < c_out // groups else blocks


def _gram_zero_torch(kernel: torch.Tensor, layer: ConvLayer, *, n_iter: int = 4) -> torch.Tensor:
    """Torch core of ``gram_zero``: :math:`\\max_{\\text{group}, i} t_i` on the smaller side.

    ``kernel`` ``(..., c_out, c_in_g, kh, kw)`` -> shape ``(...)``; differentiable.
    """
    n_iter = check_count(n_iter, "n_iter", 1)
    batch, lead = _kernel_batch(kernel, layer)
    factors = _kernel_factors(_fewer_channels_side(batch, layer.groups), n_iter)
    return factors.reshape(batch.shape[0], -1).amax(dim=-1).reshape(lead)


_gram_zero_torch.supports_batch = True  # type: ignore[attr-defined]


DIRECT_DFT_MAX_TAPS = 64
"""Largest number of kernel taps ``kh * kw`` for which ``gram_circular`` evaluates the
frequency matrices by a direct DFT (one matrix product, frequency-major output, cost
``kh * kw`` complex multiply-adds per matrix entry) instead of ``rfft2`` of the wrapped kernel."""


def _auto_chunk(n_freq: int, per_freq: int, element_size: int, budget: int = 2**30) -> int:
    """Frequencies per chunk so that the working buffers stay under ``budget`` bytes."""
    return max(1, min(n_freq, budget // max(1, per_freq * element_size)))


def _kernel_exponent(kernel: torch.Tensor) -> torch.Tensor:
    """Per kernel of the batch ``(B, ...)``: ``e`` with ``max|K| 2**-e`` in ``[1, 2)``
    (:func:`~specbound.rigorous.rounding.pow2_exponent`), shape ``(B,)``, the kernel's dtype."""
    top = torch.amax(kernel.abs().reshape(kernel.shape[0], -1), dim=1)
    return -pow2_exponent(top).to(top.dtype)


class _CircularSpectrum:
    """The frequency matrices :math:`\\hat K'(\\omega)` of a batch ``(B, c_out, c_in_g, kh,
    kw)`` of circular layers over the ``rfft2`` half-spectrum, from the frequency engine
    (:mod:`specbound.operators.frequency`; Sedghi et al. 2019, Senderovich et al. 2022 for the
    stride): a direct DFT of the taps one chunk at a time or, for kernels with more than
    :data:`DIRECT_DFT_MAX_TAPS` taps, the FFT of the wrapped kernel computed once. The kernel
    is scaled by a power of two per batch element (exact; ``log_scale`` gives the factor
    back)."""

    def __init__(self, kernel: torch.Tensor, layer: ConvLayer) -> None:
        exponent = _kernel_exponent(kernel)
        self.log_scale = math.log(2.0) * exponent
        scaled = kernel * torch.exp2(-exponent).reshape(-1, 1, 1, 1, 1)
        self.engine = circulant_engine(layer, scaled)
        self.shape = (kernel.shape[0], self.engine.groups, *self.engine.shape)
        self.n_freq = self.engine.n_frequencies()
        kh, kw = layer.kernel_size
        self.stored = self.engine.on_grid_fft() if kh * kw > DIRECT_DFT_MAX_TAPS else None

    def matrices(self, start: int, stop: int) -> torch.Tensor:
        """:math:`\\hat K'` at frequencies ``start:stop``: ``(F, B, g, m, n)``."""
        if self.stored is not None:
            return self.stored[start:stop]
        return self.engine.on_grid(np.arange(start, stop))


def _circular_log_bounds(
    spectrum: _CircularSpectrum, n_iter: int, chunk: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:math:`\\max \\ln\\beta_T` over frequencies and groups, per batch element, and the flat
    ``(frequency, group)`` index of the maximiser.

    Per chunk of frequencies: the matrices :math:`W` and their adjoints :math:`W^*`, the
    first Gram matrix on the smaller side (:math:`W^* W` or :math:`W W^*`, same Schatten
    norms) as a product of two plain, non-conjugated operands, then :func:`_gram_powers`.
    The four working buffers are allocated once and reused by every chunk.
    """
    n_freq = spectrum.n_freq
    b, g, m, n = spectrum.shape
    side = min(m, n)
    dtype, dev = spectrum.log_scale.dtype, spectrum.log_scale.device
    complex_dtype = _complex_dtype(dtype)
    per_freq = b * g * (2 * m * n + 2 * side * side)
    step = chunk or _auto_chunk(n_freq, per_freq, 2 * torch.finfo(dtype).bits // 8)
    step = min(step, n_freq)

    def buffer(size: int, needed: bool = True) -> torch.Tensor | None:
        return torch.empty(step * size, dtype=complex_dtype, device=dev) if needed else None

    gram = n_iter > 0
    buffers = (
        None,  # W comes from the engine
        buffer(b * g * m * n, gram),  # W^*
        buffer(b * g * side * side, gram),  # first Gram matrix and every other iterate
        buffer(b * g * side * side, gram and n_iter > 1),  # the other iterates
    )

    def view(i: int, *shape: int) -> torch.Tensor | None:
        flat = buffers[i]
        return None if flat is None else flat[: math.prod(shape)].view(shape)

    log_first = (2.0 * spectrum.log_scale)[None, :, None]  # (1, B, 1)
    for start in range(0, n_freq, step):
        stop = min(start + step, n_freq)
        fc = stop - start
        w = spectrum.matrices(start, stop)
        if n_iter == 0:
            logs = _log_bound_from(_fro(w), log_first / 2, 0)
        else:
            adj = view(1, fc, b, g, n, m).copy_(w.mH)
            first = view(2, fc, b, g, side, side)
            spare = view(3, fc, b, g, side, side)
            torch.matmul(*((adj, w) if n <= m else (w, adj)), out=first)
            gram, log_scale = _gram_powers(first, log_first.expand(fc, b, g), n_iter, spare)
            logs = _log_bound_from(_fro(gram), log_scale, n_iter)  # (Fc, B, g)
        flat = logs.permute(1, 0, 2).reshape(b, -1)
        value, index = flat.max(dim=-1)
        if start == 0:
            best, where = value, index
        else:
            better = value > best
            best = torch.where(better, value, best)
            where = torch.where(better, index + start * g, where)
    return best, where


def _frequency_matrix_at(
    kernel: torch.Tensor, layer: ConvLayer, freq: torch.Tensor, group: torch.Tensor
) -> torch.Tensor:
    """The frequency matrix at half-spectrum index ``freq[b]`` of group ``group[b]`` for each
    kernel of the batch ``(B, c_out, c_in_g, kh, kw)``, from the engine (differentiable):
    shape ``(B, c_out_g, c_in_g*s_h*s_w)``."""
    freq, group = freq.tolist(), group.tolist()
    return torch.stack(
        [
            circulant_engine(layer, k).on_grid([f])[0, g]
            for k, f, g in zip(kernel, freq, group, strict=True)
        ]
    )


def _gram_circular_torch(
    kernel: torch.Tensor, layer: ConvLayer, *, n_iter: int = 6, chunk: int | None = None
) -> torch.Tensor:
    """Torch core of ``gram_circular``: :math:`\\max_{\\omega, \\text{group}}
    \\|\\hat K(\\omega)\\|_{S_{2^{T+1}}}` over the ``rfft2`` half-spectrum.

    ``kernel`` ``(..., c_out, c_in_g, kh, kw)`` -> shape ``(...)``. The forward runs without
    autograd over every frequency (batched matrix products, chunked); the gradient is the
    closed-form Schatten gradient at the maximising frequency (docs/theory/bounds.md),
    chained to the kernel through that frequency's matrix only.

    The value is the Gram iteration of Delattre et al. 2023 (Sec. 3) on every frequency
    matrix of the half-spectrum (:class:`_CircularSpectrum`, :func:`_circular_log_bounds`,
    :func:`_gram_powers`), an upper bound on the exact circular norm in exact arithmetic.
    It runs in the kernel's dtype (complex64 for float32, TF32 off), so a
    float32 value carries float32 rounding: about 1e-7 relative, and once converged it can
    sit that much below the exact norm; the float64 :class:`Bound` path is
    the one the rounding allowances are stated for.
    """
    n_iter = check_count(n_iter, "n_iter", 0)
    if chunk is not None and (not isinstance(chunk, numbers.Integral) or chunk < 1):
        raise ValueError(f"chunk must be None or a positive int, got {chunk!r}")
    require_circulant(layer)
    batch, lead = _kernel_batch(kernel, layer)
    with torch.no_grad(), tf32_disabled():
        spectrum = _CircularSpectrum(batch, layer)
        log_best, where = _circular_log_bounds(spectrum, n_iter, chunk)
        del spectrum
        value = torch.exp(log_best)
    if torch.is_grad_enabled() and batch.requires_grad:
        g = layer.groups
        matrix = _frequency_matrix_at(batch, layer, where // g, where % g)
        value = _SchattenNorm.apply(_gram_side(matrix), n_iter, value)
    return value.reshape(lead)


_gram_circular_torch.supports_batch = True  # type: ignore[attr-defined]


def _dense_operator_torch(kernel: torch.Tensor, layer: ConvLayer) -> torch.Tensor:
    """The dense matrix of the layer built from the taps in torch (differentiable), with the
    index maps of :func:`specbound.operators.conv_matrix`, shape ``(..., out_dim, in_dim)``."""
    from ..operators.indexing import layer_axis_indices
    from ..spec import check_dense_size

    check_dense_size((layer.out_dim, layer.in_dim), "the dense matrix", None)
    idx_h, idx_w = layer_axis_indices(layer)  # (OH, kh), (OW, kw), -1 = zero padding
    (h, w), dev, dt = layer.input_size, kernel.device, kernel.dtype
    sel_h = torch.as_tensor(idx_h.T[:, :, None] == np.arange(h), dtype=dt, device=dev)
    sel_w = torch.as_tensor(idx_w.T[:, :, None] == np.arange(w), dtype=dt, device=dev)
    g = layer.groups
    *lead, c_out, c_in_g, kh, kw = kernel.shape
    blocks = kernel.reshape(*lead, g, c_out // g, c_in_g, kh, kw)
    # (..., g, o, c, OH, OW, H, W) per group, then block-diagonal over groups
    per_group = torch.einsum("...goiab,aph,bqw->...gopqihw", blocks, sel_h, sel_w)
    eye = torch.eye(g, dtype=dt, device=dev)
    full = torch.einsum("...gopqihw,gf->...gopqfihw", per_group, eye)
    return full.reshape(*lead, layer.out_dim, layer.in_dim)


def _gram_dense_torch(kernel: torch.Tensor, layer: ConvLayer, *, n_iter: int = 6) -> torch.Tensor:
    """Torch core of ``gram_dense``: :func:`gram_iteration` on the dense operator matrix."""
    n_iter = check_count(n_iter, "n_iter", 0)
    batch, lead = _kernel_batch(kernel, layer)
    return gram_iteration(_dense_operator_torch(batch, layer), n_iter).reshape(lead)


_gram_dense_torch.supports_batch = True  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- registered methods
def _float64_value(core: Any, layer: ConvLayer, **options: Any) -> float:
    """Run a torch core on the layer's float64 kernel, on CPU, without autograd."""
    kernel = torch.from_numpy(
        layer.kernel.copy()
    )  # as_kernel may keep negative strides (1-wide axes)
    with torch.no_grad():
        return float(core(kernel, layer, **options))


def _check_zero_domain(layer: ConvLayer) -> None:
    """``gram_zero`` bounds :math:`S(K)`: every zero-padded layer (any size, pad and stride) is
    a compression of the convolution on :math:`\\mathbb Z^2`, and so is a circular layer whose
    total pad per axis is at most ``d*(k-1)`` (its outputs are distinct rows of the circulant,
    whose norm is at most ``S(K)``). A larger circular pad repeats rows: refuse it."""
    if layer.spec.padding != "circular":
        return
    (top, bottom), (left, right) = layer.pads
    (eh, ew) = layer.extent
    if top + bottom > eh - 1 or left + right > ew - 1:
        raise ValueError(
            "method 'gram_zero' with padding='circular' needs at most dilation*(k-1) padded in "
            f"total per axis ({eh - 1}, {ew - 1}), got pads ((top, bottom), (left, right))="
            f"{layer.pads}; a larger circular pad repeats output rows. Use pad='same' or "
            "'valid', or gram_dense"
        )


@register(
    name="gram_dense",
    kind="upper",
    reference="Delattre, Barthélemy, Araujo & Allauzen, ICML 2023 (arXiv 2305.16173): Gram "
    "iteration with rescaling on the dense operator matrix",
    input_size=SIZE_GIVEN,
    differentiable=True,
    cost="dense matrix (c_out*OH*OW) x (c_in*H*W) and n_iter Gram products of min side^3: "
    "small layers only",
    torch_func=_gram_dense_torch,
)
def gram_dense(layer: ConvLayer, *, n_iter: int = 6, max_bytes: int | None = None) -> Bound:
    """Gram iteration on the dense operator matrix: :math:`\\|A\\|_{S_{2^{T+1}}} \\ge \\|A\\|_2`.

    Delattre et al., ICML 2023 (arXiv 2305.16173), Gram iteration with rescaling; valid for
    every padding, stride, dilation and groups at the given input size. The matrix is
    :func:`specbound.operators.conv_matrix` (refused above ``max_bytes``).
    """
    n_iter = check_count(n_iter, "n_iter", 0)
    matrix = torch.as_tensor(conv_matrix(layer.kernel, layer.spec, max_bytes=max_bytes))
    with torch.no_grad():
        value = float(gram_iteration(matrix, n_iter))
    return Bound(value=value, kind="upper", method="gram_dense", iterations=n_iter)


@register(
    name="gram_circular",
    kind="upper",
    reference="Delattre, Barthélemy, Araujo & Allauzen, ICML 2023 (arXiv 2305.16173), Sec. 3: "
    "Gram iteration per frequency of the circulant (wrapped kernel, polyphase for stride)",
    paddings=("circular",),
    input_size=SIZE_GIVEN,
    differentiable=True,
    cost="direct DFT of the taps (rfft2 of the wrapped kernel above 64 taps), then n_iter "
    "batched Gram products of min(c_out, c_in s^2)^3 per frequency, H*W/2 frequencies (per "
    "group)",
    check=require_circulant,
    torch_func=_gram_circular_torch,
)
def gram_circular(layer: ConvLayer, *, n_iter: int = 6, chunk: int | None = None) -> Bound:
    """Per-frequency Gram iteration for a circular layer.

    Delattre et al., ICML 2023 (arXiv 2305.16173), Sec. 3: the circulant is block-diagonalised
    by the 2-D DFT (Sedghi et al. 2019), so
    :math:`\\sigma_{\\mathrm{circ}} = \\max_\\omega \\sigma_1(\\hat K(\\omega)) \\le
    \\max_\\omega \\|\\hat K(\\omega)\\|_{S_{2^{T+1}}} \\le \\min(c_o, c_i)^{2^{-(T+1)}}
    \\sigma_{\\mathrm{circ}}` (docs/proofs.md, theorems C1-C2). The kernel is wrapped modulo the
    input size (never cropped); stride through the polyphase reshape (the stride must divide
    the size); dilation places the taps; the bound is the max over groups. ``chunk`` bounds
    the number of frequencies per batched product (memory).
    """
    value = _float64_value(_gram_circular_torch, layer, n_iter=n_iter, chunk=chunk)
    return Bound(value=value, kind="upper", method="gram_circular", iterations=n_iter)


@register(
    name="gram_zero",
    kind="upper",
    reference="Delattre, Barthélemy & Allauzen 2024 (arXiv 2402.00240), 'norm2toep': Gram "
    "iteration on the kernel (iterated self-correlation) and the row-sum test",
    paddings=("zeros", "circular"),
    input_size=SIZE_NONE,
    differentiable=True,
    cost="n_iter self-correlations of a c x c kernel, c = min(c_out, c_in) per group, growing "
    "to size 2^T (k-1)+1: about c^3 (2^T (k-1))^2 flops by FFT; T <= 4 for c >= 256",
    check=_check_zero_domain,
    torch_func=_gram_zero_torch,
)
def gram_zero(layer: ConvLayer, *, n_iter: int = 4) -> Bound:
    """Gram iteration on the kernel: an upper bound on the symbol supremum :math:`S(K)`.

    Delattre, Barthélemy & Allauzen 2024 (arXiv 2402.00240), "norm2toep";
    docs/proofs.md, theorems Z1-Z8. With
    :math:`K_1 = K \\star K` on the side with fewer channels and :math:`K_{t+1} = K_t \\star
    K_t`, :math:`L(K_T) = (L(K)L(K)^*)^{2^{T-1}}` is self-adjoint, so by the Schur test

    .. math:: S(K) \\le \\beta_T = \\max_i \\Big(\\sum_{j,\\delta}|K_T[i,j,\\delta]|\\Big)^{2^{-T}}
              \\le \\big(\\sqrt{c}\\,(2^T(k-1)+1)\\big)^{2^{-T}} S(K).

    :math:`S(K)` bounds every zero-padded layer of the kernel (any input size, pad and stride:
    each is a compression of the convolution on :math:`\\mathbb Z^2`) and every circular one
    (:math:`\\sigma_{\\mathrm{circ}}(N) \\le S(K)`), so the result holds for every input size;
    for small inputs it cannot be tight. Dilation leaves :math:`\\beta_T` unchanged (the
    self-correlation of a dilated kernel is the dilated self-correlation), so it is computed
    on the undilated kernel; with groups it is the max over groups.

    Convergence is only **linear** in the log-error: :math:`\\ln(\\beta_T/S)` shrinks by a
    ratio of about 1/2 per step (the envelope above), not quadratically as the dense Gram
    iteration does. The published code Grams the side with more channels; here the side with
    fewer channels is used (cheaper, and tighter in the measured cases; theorem Z7-T).
    """
    value = _float64_value(_gram_zero_torch, layer, n_iter=n_iter)
    return Bound(value=value, kind="upper", method="gram_zero", iterations=n_iter)
