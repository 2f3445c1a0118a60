"""Fantastic Four: Singla & Feizi, "Fantastic Four: Differentiable Bounds on Singular Values of
Convolution Layers", ICLR 2021.

``||A|| <= sqrt(kh*kw) * min(||R||, ||S||, ||T||, ||U||)`` over four reshapings of the kernel,
each norm computed **exactly** (a Hermitian eigensolver on the smaller Gram matrix), never by a
few power iterations (which under-estimate, so the published per-step value is not a bound).

Validity (derived here; the paper's own statement of its domain could not be checked). Write the
layer as ``A = sum_{a,b} K_ab (x) S_a (x) S'_b`` with ``K_ab`` the ``c_out x c_in`` tap matrices
and ``S_a``, ``S'_b`` the per-axis selections of the padding: row ``i`` of ``S_a`` reads input
position ``s*i + d*a - lo``. The proof below needs every ``S_a`` to be a *partial permutation*
(each tap reads each input pixel at most once). That holds for zero padding (any pads, any
stride, any dilation) and for circular padding with at most ``d*(k-1)`` padded in total per axis
(then at most ``n`` outputs per axis, at distinct positions modulo ``n``, also when ``n < k``).
Reflect and replicate padding read edge pixels twice and the bound fails there (FF-N1).

* ``T = K.reshape(c_out, c_in*kh*kw)``: ``A = (T (x) I) P`` with ``P`` the patch extraction,
  ``P^T P = sum_ab S_ab^T S_ab <= kh*kw I``; so ``||A|| <= sqrt(kh kw) ||T||``.
* ``U`` (``c_in x c_out*kh*kw``): the same argument on ``A^T``.
* ``R[(o,a),(i,b)] = K[o,i,a,b]``: ``A = [E_1 .. E_kh] [M_1; ..; M_kh]`` with
  ``E_a = I (x) S_a (x) I`` (``||[E_a]|| <= sqrt(kh)``) and ``M_a = sum_b K_ab (x) I (x) S'_b``,
  whose stack is a 1-D convolution with ``(kh c_out) x c_in`` taps ``R_b``: at most
  ``sqrt(kw) ||R||`` by the ``T`` argument. ``S`` is the same with the axes swapped.

Groups make ``A`` block diagonal: the bound is the **maximum over groups** of the per-group
bound (not a product of group norms, and tighter than the bound of the expanded kernel).
"""

from __future__ import annotations

import math

import torch

from ..operators.conv_layer import ConvLayer
from ._numerics import as_float64, scale_down, scale_up, top_singular_value
from .base import SIZE_NONE, Bound, register
from .embedding import require_symbol_bounded

RESHAPINGS = ("R", "S", "T", "U")


def four_reshapings(kernel: torch.Tensor, groups: int) -> dict[str, torch.Tensor]:
    """The four matrices of each group, batched: name -> ``(groups, rows, cols)``.

    ``R``: rows ``(o, a)``, columns ``(i, b)``; ``S``: rows ``(o, b)``, columns ``(i, a)``;
    ``T``: ``c_out x (c_in kh kw)`` (the ``spectral_norm`` reshape);
    ``U``: ``c_in x (c_out kh kw)``.
    """
    c_out, c_in_g, kh, kw = kernel.shape
    k = kernel.reshape(groups, c_out // groups, c_in_g, kh, kw)
    co = c_out // groups
    return {
        "R": k.permute(0, 1, 3, 2, 4).reshape(groups, co * kh, c_in_g * kw),
        "S": k.permute(0, 1, 4, 2, 3).reshape(groups, co * kw, c_in_g * kh),
        "T": k.reshape(groups, co, c_in_g * kh * kw),
        "U": k.permute(0, 2, 1, 3, 4).reshape(groups, c_in_g, co * kh * kw),
    }


def reshaping_bounds(kernel: torch.Tensor, groups: int) -> torch.Tensor:
    """``sqrt(kh kw) * ||X_g||`` for the four reshapings: shape ``(4, groups)``, exact norms."""
    kh, kw = kernel.shape[-2:]
    scaled, e = scale_down(kernel)
    norms = torch.stack([top_singular_value(m) for m in four_reshapings(scaled, groups).values()])
    return scale_up(norms, e) * math.sqrt(kh * kw)


def fantastic_four_norm(kernel: torch.Tensor, layer: ConvLayer) -> torch.Tensor:
    """``max_g min_X sqrt(kh kw) ||X_g||`` (Singla & Feizi 2021, Thm. 1 form), differentiable."""
    return reshaping_bounds(kernel, layer.groups).min(dim=0).values.max()


@register(
    name="fantastic_four",
    kind="upper",
    reference="Singla & Feizi, Fantastic Four: Differentiable Bounds on Singular Values of "
    "Convolution Layers, ICLR 2021 (each reshaping norm computed exactly)",
    paddings=("zeros", "circular"),
    input_size=SIZE_NONE,
    differentiable=True,
    cost="four exact SVD-class problems of size <= max(c_out, c_in) * max(kh, kw) * ...",
    check=require_symbol_bounded,
    torch_func=fantastic_four_norm,
)
def fantastic_four(layer: ConvLayer) -> Bound:
    """Upper bound at every input size for zero and circular padding (see the module docstring).

    Returns
    -------
    Bound
        ``kind="upper"``; ``details["reshapings"]`` maps ``R, S, T, U`` to
        ``sqrt(kh kw) * max_g ||X_g||`` and ``details["argmin"]`` names, per group, the
        reshaping that attains the minimum.
    """
    with torch.no_grad():
        bounds = reshaping_bounds(as_float64(layer), layer.groups)
        value = bounds.min(dim=0).values.max()
    return Bound(
        value=float(value),
        kind="upper",
        method="fantastic_four",
        details={
            "reshapings": dict(zip(RESHAPINGS, bounds.max(dim=1).values.tolist(), strict=True)),
            "argmin": [RESHAPINGS[i] for i in bounds.argmin(dim=0).tolist()],
        },
    )
