"""Exact spectral norms: the float64 ground-truth route, and Sedghi et al.'s per-frequency route.

* ``exact`` calls :func:`specbound.operators.exact_norm` (block-circulant eigenvalues when the
  layer is circular, the dense Gram matrix otherwise) and names the route it took.
* ``sedghi`` is Sedghi, Gupta & Long, "The Singular Values of Convolutional Layers", ICLR 2019,
  Thm. 6: a circular layer is block-diagonalised by the 2-D DFT, so its norm is the largest
  singular value over the frequency matrices of the **wrapped** kernel. Strides dividing the size
  go through the polyphase reshape (Senderovich et al., NeurIPS 2022, Sec. 3). It is written once
  in torch (:func:`symbol_grid_max`), differentiable, and evaluated in float64 for the ``Bound``.

:func:`symbol_grid_max` is the shared core of every grid method (``circular_embedding``,
``bernstein_grid``, ``lipbound``): it evaluates the frequency matrices tap by tap with
per-axis phase tables, a chunk of frequencies at a time, so memory stays bounded for wide
layers and large grids, and it back-propagates through the maximising frequency only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..operators import exact_norm, exact_route
from ..operators.circulant import require_circulant
from ..operators.conv_layer import ConvLayer
from ..spec import Pair
from .base import SIZE_GIVEN, Bound, register

CHUNK_BYTES = 2**27
"""Memory for one chunk of complex frequency matrices (128 MiB) in :func:`symbol_grid_max`."""

NORMS = ("spectral", "frobenius")


# ----------------------------------------------------------------------------- helpers
def binary_exponent(kernel: torch.Tensor | np.ndarray) -> int:
    """``e`` with ``max|K| * 2**-e`` in ``[0.5, 1)``; 0 for a zero kernel (``|e| <= 1000``).

    Scaling a kernel by ``2**-e`` is exact in binary floating point, and every norm here is
    1-homogeneous, so methods work on the scaled kernel and multiply back: no overflow of
    squared quantities at 1e150 and no underflow at 1e-150.
    """
    if isinstance(kernel, torch.Tensor):
        top = float(kernel.detach().abs().max())
    else:
        top = float(np.abs(kernel).max())
    if top == 0.0:
        return 0
    return max(-1000, min(1000, math.frexp(top)[1]))


def scale_down(kernel: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(K * 2**-e, e)`` with ``e = binary_exponent(K)`` (exact; differentiable)."""
    e = binary_exponent(kernel)
    return kernel * 2.0**-e, e


def scale_up(value: torch.Tensor, e: int) -> torch.Tensor:
    """``value * 2**e``: undo :func:`scale_down` on a 1-homogeneous quantity.

    (A python-float power of two, ``|e| <= 1000``, is exact; ``torch.ldexp`` with an integer
    exponent tensor is avoided: its gradient evaluates ``2**-e`` in integers, i.e. 0.)"""
    return value * 2.0**e


def safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(max(x, 0))`` whose gradient is 0 (not NaN) where ``x <= 0``."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), 0 * x)


def top_singular_value(m: torch.Tensor) -> torch.Tensor:
    """Largest singular value of each matrix in a batch ``(..., p, q)``, exactly.

    Computed as the square root of the largest eigenvalue of the smaller Gram matrix (a
    Hermitian eigensolver, no iteration); differentiable through ``torch.linalg.eigvalsh``.
    """
    mh = m.conj().transpose(-1, -2)
    gram = m @ mh if m.shape[-2] <= m.shape[-1] else mh @ m
    return safe_sqrt(torch.linalg.eigvalsh(gram)[..., -1])


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


# ----------------------------------------------------------------------------- the torus
@dataclass(frozen=True)
class Torus:
    """Geometry of a (strided) block-circulant layer on the ``size[0] x size[1]`` torus.

    ``offset`` is ``(top, left)``: input offset ``d*a - top`` is read by tap ``a``. The stride
    must divide the size (polyphase grid ``size / stride``).
    """

    size: Pair
    stride: Pair = (1, 1)
    dilation: Pair = (1, 1)
    offset: Pair = (0, 0)
    groups: int = 1

    @classmethod
    def of_layer(cls, layer: ConvLayer) -> Torus:
        """The torus of a circulant layer; refuses others (``require_circulant``)."""
        require_circulant(layer)
        (top, _), (left, _) = layer.pads
        return cls(
            size=layer.input_size,
            stride=layer.spec.stride,
            dilation=layer.spec.dilation,
            offset=(top, left),
            groups=layer.groups,
        )

    @property
    def grid(self) -> Pair:
        return (self.size[0] // self.stride[0], self.size[1] // self.stride[1])

    @property
    def n_half(self) -> int:
        """Number of frequencies in the half-spectrum (``rfft2`` layout)."""
        return self.grid[0] * (self.grid[1] // 2 + 1)


def axis_phases(
    k: int, n: int, stride: int, dilation: int, offset: int, freqs: torch.Tensor, dtype
) -> torch.Tensor:
    """Per-axis DFT table ``E[f, a, r] = [r_a = r] exp(-2 pi i u_f q_a / (n/s))``.

    Tap ``a`` reads input offset ``d*a - offset = s*q_a + r_a`` (``0 <= r_a < s``): in the
    polyphase picture it sits at position ``q_a`` (wrapped modulo ``n/s``) of phase ``r_a``.
    Products ``u*q`` are reduced modulo ``n/s`` in integers before the angle is formed.
    """
    m = n // stride
    off = dilation * torch.arange(k, device=freqs.device) - offset
    phase = torch.remainder(off, stride)
    q = torch.div(off - phase, stride, rounding_mode="floor")
    turns = torch.remainder(freqs[:, None] * q[None, :], m)
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    angle = (-2 * math.pi / m) * turns.to(real)
    e = torch.polar(torch.ones_like(angle), angle)  # (F, k)
    onehot = torch.nn.functional.one_hot(phase, stride).to(dtype)  # (k, s)
    return e[:, :, None] * onehot[None]


def frequency_blocks(kernel: torch.Tensor, torus: Torus, index: torch.Tensor) -> torch.Tensor:
    """Frequency matrices at half-spectrum indices: shape ``(F, groups, c_out_g, c_in_g*s_h*s_w)``.

    Entry ``[f, g]`` is the matrix of group ``g`` at frequency ``(u, v) = divmod(index[f], V)``
    of the polyphase grid, ``V = W/s_w // 2 + 1`` (Sedghi et al. 2019, Thm. 6; polyphase columns
    ordered ``(c, r_h, r_w)``).
    """
    c_out, c_in_g, kh, kw = kernel.shape
    (sh, sw), (dh, dw), (top, left) = torus.stride, torus.dilation, torus.offset
    cdtype = complex_dtype(kernel.dtype)
    v_count = torus.grid[1] // 2 + 1
    u, v = torch.div(index, v_count, rounding_mode="floor"), torch.remainder(index, v_count)
    ph = axis_phases(kh, torus.size[0], sh, dh, top, u, cdtype)  # (F, kh, sh)
    pw = axis_phases(kw, torus.size[1], sw, dw, left, v, cdtype)  # (F, kw, sw)
    n_f = index.numel()
    phi = (ph[:, :, None, :, None] * pw[:, None, :, None, :]).reshape(n_f, kh * kw, sh * sw)
    taps = kernel.to(cdtype).reshape(c_out * c_in_g, kh * kw)
    blocks = taps @ phi.permute(1, 0, 2).reshape(kh * kw, n_f * sh * sw)
    blocks = blocks.reshape(c_out, c_in_g, n_f, sh * sw).permute(2, 0, 1, 3)
    g = torus.groups
    return blocks.reshape(n_f, g, c_out // g, c_in_g * sh * sw)


def squared_norms(blocks: torch.Tensor, norm: str) -> torch.Tensor:
    """Squared spectral (largest Gram eigenvalue) or Frobenius norm of each block."""
    if norm == "frobenius":
        return (blocks.real**2 + blocks.imag**2).sum(dim=(-1, -2))
    mh = blocks.conj().transpose(-1, -2)
    gram = blocks @ mh if blocks.shape[-2] <= blocks.shape[-1] else mh @ blocks
    return torch.linalg.eigvalsh(gram)[..., -1]


def _chunks(torus: Torus, width: int, device) -> Iterator[torch.Tensor]:
    per = max(1, CHUNK_BYTES // max(1, 48 * width))
    for start in range(0, torus.n_half, per):
        yield torch.arange(start, min(start + per, torus.n_half), device=device)


def symbol_grid_max(
    kernel: torch.Tensor, torus: Torus, norm: str = "spectral"
) -> tuple[torch.Tensor, int]:
    """``max`` over the frequencies of ``torus`` and over groups of ``||K_hat||`` (spectral or
    Frobenius), as a 0-d tensor on the kernel's device and dtype, and the maximising index.

    For ``norm="spectral"`` this is the exact norm of the circular layer on ``torus`` (Sedghi et
    al. 2019, Thm. 6, with wrapping and the polyphase reshape). For real kernels the matrix at
    ``-w`` is the conjugate of that at ``w``, so the half-spectrum suffices.

    Differentiable: a no-grad pass finds the maximising frequency and group, and the value is
    recomputed there with autograd (the gradient of a maximum is that of its maximiser).
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    scaled, e = scale_down(kernel)
    width = kernel.shape[0] * kernel.shape[1] * torus.stride[0] * torus.stride[1]
    best, best_index, best_group = -1.0, 0, 0
    with torch.no_grad():
        for index in _chunks(torus, width, kernel.device):
            values = squared_norms(frequency_blocks(scaled, torus, index), norm)  # (F, g)
            flat = int(torch.argmax(values))
            top = float(values.reshape(-1)[flat])
            if top > best:
                best, best_group = top, flat % torus.groups
                best_index = int(index[flat // torus.groups])
    if torch.is_grad_enabled() and kernel.requires_grad:
        at = torch.tensor([best_index], device=kernel.device)
        block = frequency_blocks(scaled, torus, at)[0, best_group]
        value = squared_norms(block, norm)
    else:
        value = torch.tensor(max(best, 0.0), dtype=kernel.dtype, device=kernel.device)
    return scale_up(safe_sqrt(value), e), best_index


def frequency_of(torus: Torus, index: int) -> Pair:
    """``(u, v)`` on the polyphase grid for a half-spectrum index."""
    return divmod(index, torus.grid[1] // 2 + 1)


def as_float64(layer: ConvLayer) -> torch.Tensor:
    """The layer's validated kernel as a CPU float64 tensor (a copy: ``torch.from_numpy``
    refuses the negative strides numpy may keep on length-1 axes)."""
    return torch.tensor(layer.kernel, dtype=torch.float64)


# ----------------------------------------------------------------------------- methods
@register(
    name="exact",
    kind="exact",
    reference="float64 ground truth: Sedghi, Gupta & Long, ICLR 2019, Thm. 6 (circulant "
    "route); dense Gram matrix eigenvalue otherwise",
    input_size=SIZE_GIVEN,
    cost="circulant: O(HW c^3); dense: O((c H W)^3), refused above max_bytes",
)
def exact(layer: ConvLayer, *, max_bytes: int | None = None) -> Bound:
    """The spectral norm of the layer through :func:`specbound.operators.exact_norm`.

    Parameters
    ----------
    max_bytes : int, optional
        Memory ceiling of the dense route (``TooLargeError``, a ``ValueError``, above it).

    Returns
    -------
    Bound
        ``kind="exact"``; ``details["route"]`` is ``"circulant"`` or ``"dense"``.
    """
    route = exact_route(layer.kernel, layer.spec)
    value = exact_norm(layer.kernel, layer.spec, max_bytes=max_bytes)
    return Bound(value=value, kind="exact", method="exact", details={"route": route})


def sedghi_norm(kernel: torch.Tensor, layer: ConvLayer) -> torch.Tensor:
    """Norm of a circular layer: ``max_w sigma_max(K_hat(w))`` of the wrapped (polyphase) kernel.

    Sedghi, Gupta & Long, ICLR 2019, Thm. 6: the doubly block-circulant matrix is
    block-diagonalised by the 2-D DFT; the per-frequency matrices of the kernel wrapped modulo
    the input size (not cropped) carry every singular value. The largest is found by a Hermitian
    eigensolver on the smaller Gram matrix of each frequency matrix. Differentiable in
    ``kernel`` (torch; any device and dtype).
    """
    value, _ = symbol_grid_max(kernel, Torus.of_layer(layer), "spectral")
    return value


@register(
    name="sedghi",
    kind="exact",
    reference="Sedghi, Gupta & Long, The Singular Values of Convolutional Layers, ICLR 2019, "
    "Thm. 6 (wrapped kernel; polyphase stride: Senderovich et al., NeurIPS 2022)",
    paddings=("circular",),
    input_size=SIZE_GIVEN,
    differentiable=True,
    cost="O(HW c^2 k^2) for the frequency matrices + O(HW min(c_in,c_out)^3) eigenvalues",
    check=require_circulant,
    torch_func=sedghi_norm,
)
def sedghi(layer: ConvLayer) -> Bound:
    """Exact norm of a circular layer by the per-frequency route (see :func:`sedghi_norm`).

    Needs ``dilation*(k-1)`` padded in total per axis and a stride dividing the input size.
    ``details["frequency"]`` is the maximising ``(u, v)`` on the ``H/s_h x W/s_w`` grid.
    """
    torus = Torus.of_layer(layer)
    with torch.no_grad():
        value, index = symbol_grid_max(as_float64(layer), torus, "spectral")
    return Bound(
        value=float(value),
        kind="exact",
        method="sedghi",
        details={"frequency": frequency_of(torus, index), "grid": torus.grid},
    )
