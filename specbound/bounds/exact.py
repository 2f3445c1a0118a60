"""Exact spectral norms: the float64 ground-truth route, and Sedghi et al.'s per-frequency route.

* ``exact`` calls :func:`specbound.operators.exact_norm` (block-circulant eigenvalues when the
  layer is circular, the dense Gram matrix otherwise) and names the route it took.
* ``sedghi`` is Sedghi, Gupta & Long, "The Singular Values of Convolutional Layers", ICLR 2019,
  Thm. 6: a circular layer is block-diagonalised by the 2-D DFT, so its norm is the largest
  singular value over the frequency matrices of the **wrapped** kernel. Strides dividing the size
  go through the polyphase reshape (Senderovich et al., NeurIPS 2022, Sec. 3). It is written once
  in torch (:func:`symbol_grid_max`), differentiable, and evaluated in float64 for the ``Bound``.

:func:`symbol_grid_max` is the shared core of every grid method (``circular_embedding``,
``bernstein_grid``, ``lipbound``): it evaluates the frequency matrices with the frequency
engine (:mod:`specbound.operators.frequency`), a chunk of frequencies at a time, so memory
stays bounded for wide layers and large grids, and it back-propagates through the
maximising frequency only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..operators import exact_norm, exact_route
from ..operators.circulant import require_circulant
from ..operators.conv_layer import ConvLayer
from ..operators.frequency import FrequencyEngine
from ..rigorous.rounding import pow2_exponent
from .base import SIZE_GIVEN, Bound, register

CHUNK_BYTES = 2**27
"""Memory for one chunk of complex frequency matrices (128 MiB) in :func:`symbol_grid_max`."""

NORMS = ("spectral", "frobenius")


# ----------------------------------------------------------------------------- helpers
def binary_exponent(kernel: torch.Tensor | np.ndarray) -> int:
    """``j`` with ``max|K| * 2**j`` in ``[1, 2)``; 0 for a zero kernel
    (:func:`~specbound.rigorous.rounding.pow2_exponent`, in the kernel's dtype, so ``2**j``
    is finite there).

    Scaling a kernel by ``2**j`` is exact in binary floating point, and every norm here is
    1-homogeneous, so methods work on the scaled kernel and multiply back: no overflow of
    squared quantities at 1e150 and no underflow at 1e-150.
    """
    if isinstance(kernel, torch.Tensor):
        top = kernel.detach().abs().amax() if kernel.numel() else kernel.new_zeros(())
    else:
        peak = float(np.abs(kernel).max()) if np.size(kernel) else 0.0
        top = torch.tensor(peak, dtype=torch.float64)
    return int(pow2_exponent(top))


def scale_down(kernel: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(K * 2**j, j)`` with ``j = binary_exponent(K)`` (exact; differentiable)."""
    j = binary_exponent(kernel)
    return kernel * 2.0**j, j


def scale_up(value: torch.Tensor, j: int) -> torch.Tensor:
    """``value * 2**-j``: undo :func:`scale_down` on a 1-homogeneous quantity.

    (A python-float power of two is exact; ``torch.ldexp`` with an integer exponent tensor
    is avoided: its gradient evaluates ``2**-j`` in integers, i.e. 0.)"""
    return value * 2.0**-j


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


# ----------------------------------------------------------------------------- the torus
def circular_geometry(layer: ConvLayer) -> dict[str, Any]:
    """The torus geometry of a circulant layer, as keywords of
    :class:`~specbound.operators.frequency.FrequencyEngine`; refuses others."""
    require_circulant(layer)
    (top, _), (left, _) = layer.pads
    spec = layer.spec
    return {
        "size": layer.input_size,
        "lo": (top, left),
        "stride": spec.stride,
        "dilation": spec.dilation,
        "groups": layer.groups,
    }


def squared_norms(blocks: torch.Tensor, norm: str) -> torch.Tensor:
    """Squared spectral (largest Gram eigenvalue) or Frobenius norm of each block."""
    if norm == "frobenius":
        return (blocks.real**2 + blocks.imag**2).sum(dim=(-1, -2))
    mh = blocks.conj().transpose(-1, -2)
    gram = blocks @ mh if blocks.shape[-2] <= blocks.shape[-1] else mh @ blocks
    return torch.linalg.eigvalsh(gram)[..., -1]


def symbol_grid_max(
    kernel: torch.Tensor, norm: str = "spectral", **geometry: Any
) -> tuple[torch.Tensor, FrequencyEngine, int]:
    """``max`` over the torus frequencies and the groups of ``||K_hat||`` (spectral or
    Frobenius), as a 0-d tensor on the kernel's device and dtype, the engine, and the
    maximising half-spectrum index (``engine.frequencies(index)`` gives the frequency).

    ``geometry`` are the keywords of :class:`~specbound.operators.frequency.FrequencyEngine`
    (``size``, ``lo``, ``stride``, ``dilation``, ``groups``). For ``norm="spectral"`` this is
    the exact norm of the circular layer on that torus (Sedghi et al. 2019, Thm. 6, with
    wrapping and the polyphase reshape). For real kernels the matrix at ``-w`` is the
    conjugate of that at ``w``, so the half-spectrum suffices.

    Differentiable: a no-grad pass finds the maximising frequency and group, and the value is
    recomputed there with autograd (the gradient of a maximum is that of its maximiser). A
    NaN in the kernel gives a NaN value.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    scaled, e = scale_down(kernel)
    engine = FrequencyEngine(scaled, **geometry)
    g = engine.groups
    best = torch.full((), -1.0, dtype=kernel.dtype, device=kernel.device)
    best_index, best_group = 0, 0
    chunk = max(1, CHUNK_BYTES // max(1, 48 * g * engine.shape[0] * engine.shape[1]))
    with torch.no_grad():
        for start, blocks in engine.chunks(chunk=chunk):
            values = squared_norms(blocks, norm)  # (F, g)
            flat = int(torch.argmax(values))
            top = values.reshape(-1)[flat]
            if torch.isnan(top) or top > best:
                best, best_group = top, flat % g
                best_index = start + flat // g
            if torch.isnan(best):
                break
    if torch.is_grad_enabled() and kernel.requires_grad:
        block = engine.on_grid([best_index])[0, best_group]
        value = squared_norms(block, norm)
    else:
        value = torch.where(best < 0, torch.zeros_like(best), best)  # NaN stays NaN
    return scale_up(safe_sqrt(value), e), engine, best_index


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
    return symbol_grid_max(kernel, "spectral", **circular_geometry(layer))[0]


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
    with torch.no_grad():
        value, engine, index = symbol_grid_max(
            as_float64(layer), "spectral", **circular_geometry(layer)
        )
    (u, v) = (int(x) for x in engine.frequencies(index)[0])
    return Bound(
        value=float(value),
        kind="exact",
        method="sedghi",
        details={"frequency": (u, v), "grid": engine.grid},
    )
