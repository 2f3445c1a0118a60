"""Witness inputs and rigorous lower bounds on the true operator.

* :func:`plane_wave` turns a frequency and a vector of a circulant layer's polyphase symbol
  into a real input image that attains ``||M(w) v|| / ||v||`` exactly.
* :func:`operator_lower` bounds ``||A x|| / ||x||`` from below for the exact operator by one
  float64 application (im2col + GEMM: ``|fl(A x) - A x| <= gamma_T |A||x|`` entrywise with
  ``T = c_in/groups * kh * kw``).
* :func:`power_refine` improves an input by power iteration on ``A^T A`` (heuristic).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import time
import warnings
from collections.abc import Iterator

import numpy as np
import torch

from ..operators.conv_layer import ConvLayer
from .rounding import TINY_UNIT, U, frobenius_upper, gamma


def plane_wave(
    layer: ConvLayer, group: int, freq: tuple[int, ...], vector: torch.Tensor
) -> np.ndarray:
    """Real input ``x`` (``(c_in, *size)``, unit norm) with ``||A x|| = ||M(w) v|| ||x|| / ||v||``.

    On the polyphase grid ``m = n / s`` (per axis) the input
    ``x'_{(c, r)}[j] = Re(v e^{-i w.j})`` is mapped back by ``x[c, s j + r] = x'_{(c, r)}[j]``.
    If ``2w != 0`` on some axis the real part keeps the ratio exactly (the cross terms sum to
    zero over the grid); at the ``2^d`` self-conjugate frequencies ``M(w)`` is real and
    ``v`` is first rotated to be real (docs/certify.md L5, L14).
    """
    size, strides = layer.input_size, layer.spec.stride
    d = len(size)
    m = [n // s for n, s in zip(size, strides, strict=True)]
    c_in_g = layer.kernel.shape[1]
    v = vector.detach().to("cpu", torch.complex128).numpy().reshape(c_in_g, *strides)
    if all((2 * u) % mi == 0 for u, mi in zip(freq, m, strict=True)):
        flat = v.ravel()
        pivot = flat[np.argmax(np.abs(flat))]
        v = (v * np.conj(pivot) / max(abs(pivot), 1e-300)).real.astype(complex)
    grids = np.meshgrid(*(np.arange(mi) for mi in m), indexing="ij")
    phase = sum(u * jj / mi for u, jj, mi in zip(freq, grids, m, strict=True))
    wave = np.exp(-2j * np.pi * phase)
    xp = (v[(...,) + (None,) * d] * wave).real  # (c, r_1..r_d, m_1..m_d)
    order = [0] + [i for ax in range(d) for i in (1 + d + ax, 1 + ax)]  # (c, m_1, r_1, ...)
    block = xp.transpose(order).reshape(c_in_g, *size)  # index s*j + r per axis
    x = np.zeros((layer.c_in, *size))
    x[group * c_in_g : (group + 1) * c_in_g] = block
    norm = np.linalg.norm(x)
    return x / norm if norm > 0 else x


@contextlib.contextmanager
def _plain_convolution():
    """im2col + GEMM convolutions: cuDNN and oneDNN off (their algorithms, e.g. Winograd or
    FFT, do not obey the inner-product error model)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # oneDNN's TF32 notice when toggling
        with torch.backends.mkldnn.flags(enabled=False), torch.backends.cudnn.flags(enabled=False):
            yield


def operator_lower(layer: ConvLayer, x: np.ndarray | torch.Tensor, device=None) -> float:
    """Rigorous lower bound on ``||A x|| / ||x||`` for the exact operator of ``layer``.

    The convolution runs in float64 with cuDNN and oneDNN switched off (im2col + GEMM, whose
    inner products obey the standard error model); ``|A||x|`` is computed the same way and
    bounds the rounding: ``||A x|| >= ||y|| - gamma_T/(1-gamma_T) || |K| * |x| ||``. Under
    gradual underflow each product and each square may carry ``2^-1075`` more; that is
    subtracted too, and the result is moved below any subnormal rounding (a NaN gives 0).
    """
    op = layer.to(device)
    xt = torch.as_tensor(x, dtype=torch.float64, device=op.device).reshape(
        1, layer.c_in, *layer.input_size
    )
    with _plain_convolution():
        y = op.apply(xt)
        abs_op = layer.with_kernel(np.abs(layer.kernel)).to(op.device)
        z = abs_op.apply(xt.abs())
    t = math.prod(layer.kernel.shape[1:])
    g = gamma(t)
    sq = float((y**2).sum()) * (1 - gamma(y.numel() + 2)) - y.numel() * TINY_UNIT
    y_low = math.sqrt(max(sq, 0.0)) * (1 - 2 * U)
    # products that underflow in y: <= 2^-1075 each, t per entry
    y_tiny = t * TINY_UNIT * math.sqrt(y.numel()) * (1 + 4 * U)
    z_up = float(frobenius_upper(z.reshape(1, -1, 1))) / (1 - g)
    x_up = float(frobenius_upper(xt.reshape(1, -1, 1)))
    if not x_up > 0:
        return 0.0
    value = (y_low - y_tiny - g * z_up * (1 + 4 * U)) / x_up * (1 - 4 * U)
    if math.isnan(value) or value <= 0:
        return 0.0
    return max(0.0, value - 4 * TINY_UNIT)  # rounding below 2^-1022 is absolute


_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "witness_deadline", default=None
)


@contextlib.contextmanager
def time_budget(deadline: float | None) -> Iterator[None]:
    """Within this block, :func:`lanczos_direction` and :func:`power_refine` stop at
    ``deadline`` (a :func:`time.perf_counter` value; None: no limit) unless given their own,
    returning the best vector found so far."""
    token = _DEADLINE.set(deadline)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


BASIS_BYTES = 2**28
"""Memory of the Lanczos basis of :func:`lanczos_direction` (256 MiB): the restart length
is cut so that it fits."""


def lanczos_direction(
    layer: ConvLayer,
    x: np.ndarray | None,
    device=None,
    seed: int = 0,
    tol: float = 1e-10,
    maxiter: int = 300,
    ncv: int | None = None,
    deadline: float | None = None,
    target: float | None = None,
) -> np.ndarray:
    """Top right singular vector of ``A`` by Lanczos on ``A^T A`` (matrix-free, in torch on
    the layer's device) from ``x`` (random if None); heuristic, for witnesses.

    Lanczos with full reorthogonalisation (Golub & Van Loan, *Matrix Computations*, 4th ed.,
    Sec. 10.1 and 10.3.1), restarted from the current Ritz vector every ``ncv`` steps (40
    when None; fewer when the basis would exceed :data:`BASIS_BYTES`, at least 3), at most
    ``maxiter`` products with ``A^T A`` in all. It stops once the top Ritz pair's residual is
    at most ``tol`` times its value, once the Ritz value reaches
    ``target^2`` (``target``: a ratio ``||A x|| / ||x||`` good enough for the caller, e.g.
    a fraction of a known upper bound), at an invariant subspace, or at ``deadline``
    (:func:`time.perf_counter`; by default that of the enclosing :func:`time_budget`), and
    returns the Ritz vector. A start with ``A^T A x = 0`` (``x`` only on input pixels the
    layer never reads, e.g. with stride or dilation) is replaced by a random one.
    """
    deadline = _DEADLINE.get() if deadline is None else deadline
    op = layer.to(device)
    shape = (1, layer.c_in, *layer.input_size)
    n = math.prod(shape)
    if n < 8:
        return power_refine(layer, x, 200, device, seed, deadline=deadline)
    reach = math.inf if target is None else target * target
    m = 40 if ncv is None else int(ncv)
    m = max(3, min(n, m, BASIS_BYTES // (8 * n)))

    def gram(v: torch.Tensor) -> torch.Tensor:
        return op.apply_adjoint(op.apply(v.reshape(shape))).reshape(-1)

    gen = torch.Generator().manual_seed(seed)
    if x is None:
        v = torch.randn(n, generator=gen, dtype=torch.float64).to(op.device)
    else:
        v = torch.as_tensor(x, dtype=torch.float64, device=op.device).reshape(-1).clone()
    if not bool(torch.any(gram(v) != 0)):
        v = torch.randn(n, generator=gen, dtype=torch.float64).to(op.device)
        if not bool(torch.any(gram(v) != 0)):  # A^T A vanishes on a random vector: A = 0
            return v.reshape(shape[1:]).cpu().numpy()
    basis = torch.empty(m, n, dtype=torch.float64, device=op.device)
    used = 0
    while True:
        basis[0] = v / torch.linalg.vector_norm(v)
        t = torch.zeros(m, m, dtype=torch.float64)
        for j in range(m):
            w = gram(basis[j])
            used += 1
            t[j, j] = float(basis[j] @ w)
            for _ in range(2):  # full reorthogonalisation, twice
                w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
            b_j = float(torch.linalg.vector_norm(w))
            values, vectors = torch.linalg.eigh(t[: j + 1, : j + 1])
            theta, s = float(values[-1]), vectors[:, -1]
            scale = float(t.diagonal()[: j + 1].abs().max())
            invariant = b_j <= 64 * U * scale or scale == 0.0
            done = (
                invariant
                or theta >= reach
                or b_j * abs(float(s[-1])) <= tol * theta
                or used >= maxiter
                or (deadline is not None and time.perf_counter() > deadline)
            )
            if done or j + 1 == m:
                v = s.to(basis) @ basis[: j + 1]
                break
            t[j, j + 1] = t[j + 1, j] = b_j
            basis[j + 1] = w / b_j
        if done:
            return v.reshape(shape[1:]).cpu().numpy()


def power_refine(
    layer: ConvLayer,
    x: np.ndarray | None,
    n_iter: int,
    device=None,
    seed: int = 0,
    deadline: float | None = None,
) -> np.ndarray:
    """``n_iter`` steps of power iteration on ``A^T A`` from ``x`` (random if None), fewer
    once ``deadline`` (by default that of the enclosing :func:`time_budget`) has passed."""
    deadline = _DEADLINE.get() if deadline is None else deadline
    op = layer.to(device)
    shape = (1, layer.c_in, *layer.input_size)
    if x is None:
        gen = torch.Generator().manual_seed(seed)
        xt = torch.randn(shape, generator=gen, dtype=torch.float64).to(op.device)
    else:
        xt = torch.as_tensor(x, dtype=torch.float64, device=op.device).reshape(shape)
    for it in range(n_iter):
        if deadline is not None and time.perf_counter() > deadline:
            break
        image = op.apply_adjoint(op.apply(xt))
        norm = torch.linalg.vector_norm(image)
        if norm == 0:  # xt in the null space: retry once from a random start, else keep xt
            if it > 0 or x is None:
                break
            gen = torch.Generator().manual_seed(seed)
            xt = torch.randn(shape, generator=gen, dtype=torch.float64).to(op.device)
            continue
        xt = image / norm
    return xt.reshape(shape[1:]).cpu().numpy()
