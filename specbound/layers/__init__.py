"""1-Lipschitz layers that verify themselves, and ConvNorm (which is not 1-Lipschitz).

=====================  =====================================  ====================================
layer / function       reference                              guarantee (float64 allowance
                                                              :data:`ROUNDING_ALLOWANCE`)
=====================  =====================================  ====================================
:class:`AOLConv2d`,    Prach & Lampert, ECCV 2022             ``||J|| <= 1``
:class:`AOLLinear`,
:func:`aol_`
:class:`SRConv2d`,     Delattre et al. 2024, arXiv 2402.00240 ``||J|| <= 1``; ``n_iter=1`` is AOL
:class:`SRLinear`,
:func:`spectral_rescaling_`
:class:`SLLConv2d`,    Araujo et al., ICLR 2023               residual block 1-Lipschitz
:class:`SLLLinear`
:class:`BCOPConv2d`,   Li et al., NeurIPS 2019                ``||J|| <= 1`` at every Björck count;
:func:`bcop_`                                                 orthogonal (circular) when converged
:class:`ConvNorm2d`    Liu et al., NeurIPS 2021               **not** 1-Lipschitz: channel-wise
                                                              isometry, norm in
                                                              ``[1, sqrt(c_out / groups)]``
:class:`MaxMin`        Anil et al., ICML 2019                 1-Lipschitz activation
=====================  =====================================  ====================================

Domain of the conv guarantees: zero padding of any amount; circular padding with a total pad
``<= dilation*(k-1)`` per axis (more is refused); reflect/replicate padding with the kernel
divided by the exact bound on the padding operator's norm (``module.padding_norm``); any input
size, stride, dilation and groups (BCOP: stride by space-to-depth). Every layer has
``certify(input_size=...)`` (:func:`specbound.certify`) and an export to plain torch modules.
"""

from ._base import ROUNDING_ALLOWANCE, CachedTransform, ConstrainedConv2d
from .activations import MaxMin
from .aol import AOLConv2d, AOLLinear
from .bcop import BCOPConv2d, BCOPKernel, bcop_, bcop_kernel, bjorck, norm_upper_bound
from .convnorm import ConvNorm2d, convnorm_normalizer
from .padding import pad2d, pad2d_adjoint, padding_norm, padding_norm_bound
from .rescaling import (
    RescaledLinear,
    Rescaling,
    SRConv2d,
    SRLinear,
    aol,
    aol_,
    rescale,
    rescaling_factors_for,
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
    "norm_upper_bound",
    "pad2d",
    "pad2d_adjoint",
    "padding_norm",
    "padding_norm_bound",
    "rescale",
    "rescaling_factors_for",
    "sll_factors",
    "spectral_rescaling_",
]
