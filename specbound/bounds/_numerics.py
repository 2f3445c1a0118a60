"""Numerical helpers shared by the bound methods: exact power-of-two scaling of a kernel (so
squared quantities neither overflow at 1e150 nor underflow at 1e-150), a NaN-preserving square
root, the top singular value of a batch of matrices, and the float64 copy of a validated
kernel.
"""

from __future__ import annotations

import numpy as np
import torch

from ..operators.conv_layer import ConvLayer
from ..rigorous.rounding import pow2_exponent


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
def as_float64(layer: ConvLayer) -> torch.Tensor:
    """The layer's validated kernel as a CPU float64 tensor (a copy: ``torch.from_numpy``
    refuses the negative strides numpy may keep on length-1 axes)."""
    return torch.tensor(layer.kernel, dtype=torch.float64)
