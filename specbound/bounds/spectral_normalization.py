"""The reshaped-kernel matrix norm used by ``torch.nn.utils.spectral_norm`` (Miyato et al.,
"Spectral Normalization for Generative Adversarial Networks", ICLR 2018).

``||K.reshape(c_out, -1)||_2`` is the norm of a *different* operator: the map from one input
patch to one output pixel. It is not the convolution's norm: it is at least
``||A|| / sqrt(kh kw)`` (Fantastic Four's ``T`` bound) and can be far below ``||A||`` (about
0.27 to 0.66 of it on common layers; exactly ``1/3`` for an all-ones 3x3 kernel under circular
padding). It is reported as an ``estimate`` with no guarantee in either direction.
"""

from __future__ import annotations

import torch

from ..operators.conv_layer import ConvLayer
from ._numerics import as_float64, scale_down, scale_up, top_singular_value
from .base import Bound, register


def reshaped_norm(kernel: torch.Tensor, layer: ConvLayer) -> torch.Tensor:
    """``sigma_max(K.reshape(c_out, -1))``, exactly (eigenvalue of the smaller Gram matrix).

    Groups are ignored, as ``torch.nn.utils.spectral_norm`` ignores them. Differentiable.
    """
    scaled, e = scale_down(kernel)
    return scale_up(top_singular_value(scaled.reshape(kernel.shape[0], -1)), e)


@register(
    name="reshape",
    kind="estimate",
    reference="Miyato, Kataoka, Koyama & Yoshida, Spectral Normalization for GANs, ICLR 2018 "
    "(torch.nn.utils.spectral_norm's matrix; not the convolution's norm)",
    differentiable=True,
    cost="one eigenvalue problem of size min(c_out, c_in kh kw)",
    torch_func=reshaped_norm,
)
def reshape(layer: ConvLayer) -> Bound:
    """``||K.reshape(c_out, -1)||_2`` as an ``estimate`` (see the module docstring)."""
    with torch.no_grad():
        value = reshaped_norm(as_float64(layer), layer)
    return Bound(value=float(value), kind="estimate", method="reshape")
