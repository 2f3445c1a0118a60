"""1-Lipschitz layers that verify themselves, and ConvNorm (which is not 1-Lipschitz).

Guarantees hold up to the float64 allowance :data:`ROUNDING_ALLOWANCE`.

* :class:`AOLConv2d`, :class:`AOLLinear`, :func:`aol_` — Prach & Lampert, ECCV 2022:
  ``||J|| <= 1``.
* :class:`SRConv2d`, :class:`SRLinear`, :func:`spectral_rescaling_` — Delattre et al., arXiv
  2402.00240: ``||J|| <= 1``; ``n_iter=1`` is AOL.
* :class:`SLLConv2d`, :class:`SLLLinear` — Araujo et al., ICLR 2023: the residual block is
  1-Lipschitz.
* :class:`BCOPConv2d`, :func:`bcop_` — Li et al., NeurIPS 2019: ``||J|| <= 1`` at every Björck
  count; orthogonal (circular) when converged.
* :class:`ConvNorm2d` — Liu et al., NeurIPS 2021: **not** 1-Lipschitz; a channel-wise isometry
  with norm in ``[1, sqrt(c_out / groups)]``.
* :class:`MaxMin` — Anil et al., ICML 2019: a 1-Lipschitz activation.

Domain of the conv guarantees: zero padding of any amount; circular padding with a total pad
``<= dilation*(k-1)`` per axis (more is refused); reflect/replicate padding with the kernel
divided by the exact bound on the padding operator's norm (``module.padding_norm``); any input
size, stride, dilation and groups (BCOP: stride by space-to-depth). Every layer has
``certify(input_size=...)`` (:func:`specbound.certify`); :func:`export_model` replaces every
specbound layer of a model by plain torch modules and checks that the outputs match.
"""

from ._base import ROUNDING_ALLOWANCE, CachedTransform, ConstrainedConv2d
from .activations import MaxMin
from .aol import AOLConv2d, AOLLinear, aol, aol_
from .bcop import BCOPConv2d, BCOPKernel, bcop_, bcop_kernel, bjorck, norm_upper_bound
from .convnorm import ConvNorm2d, convnorm_normalizer
from .export import ResidualBlock, export_model
from .padding import pad2d, pad2d_adjoint, padding_norm, padding_norm_bound
from .rescaling import (
    RescaledLinear,
    Rescaling,
    SRConv2d,
    SRLinear,
    rescale,
    rescaling_factors,
    rescaling_factors_dense,
    rescaling_factors_for,
    rescaling_factors_residual,
    spectral_rescaling_,
)
from .sll import SLLConv2d, SLLLinear, sll_factors

__all__ = [
    "ROUNDING_ALLOWANCE",
    "AOLConv2d",
    "AOLLinear",
    "BCOPConv2d",
    "BCOPKernel",
    "CachedTransform",
    "ConstrainedConv2d",
    "ConvNorm2d",
    "MaxMin",
    "RescaledLinear",
    "Rescaling",
    "ResidualBlock",
    "SLLConv2d",
    "SLLLinear",
    "SRConv2d",
    "SRLinear",
    "aol",
    "aol_",
    "bcop_",
    "bcop_kernel",
    "bjorck",
    "convnorm_normalizer",
    "export_model",
    "norm_upper_bound",
    "pad2d",
    "pad2d_adjoint",
    "padding_norm",
    "padding_norm_bound",
    "rescale",
    "rescaling_factors",
    "rescaling_factors_dense",
    "rescaling_factors_for",
    "rescaling_factors_residual",
    "sll_factors",
    "spectral_rescaling_",
]
