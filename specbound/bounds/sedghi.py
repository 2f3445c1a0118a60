"""Sedghi, Gupta & Long's exact norm of a circular layer, and the frequency-grid maximum that
every grid method shares.

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

import torch

from ..operators.circulant import require_circulant
from ..operators.conv_layer import ConvLayer
from ..operators.frequency import FrequencyEngine
from ._numerics import as_float64, safe_sqrt, scale_down, scale_up
from .base import SIZE_GIVEN, Bound, register

CHUNK_BYTES = 2**27
"""Memory for one chunk of complex frequency matrices (128 MiB) in :func:`symbol_grid_max`."""

NORMS = ("spectral", "frobenius")


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
