"""torchvision's model definitions, importable whatever torch build torchvision was built for.

The torchvision wheels on PyPI are built against the CUDA torch: with a CPU torch their ``_C``
extension does not load and ``import torchvision`` fails (``operator torchvision::nms does not
exist``, raised while registering fake kernels for the detection operators). With a matching
torchvision build it imports as usual; otherwise :func:`torchvision_models` declares the
schemas of its C++ operators first (only the schemas: the classification models are pure
Python and never call them) and imports it then. Tests and benchmarks use it to audit real
architectures; install torchvision with ``pip install --no-deps torchvision pillow`` next to a
CPU torch.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

import torch

_TV_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor",
    "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, "
    "int sampling_ratio, bool aligned) -> Tensor",
    "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, int sampling_ratio) -> (Tensor, Tensor)",
    "_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, "
    "float spatial_scale, SymInt pooled_height, SymInt pooled_width, int sampling_ratio, "
    "SymInt batch_size, SymInt channels, SymInt height, SymInt width) -> Tensor",
    "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width) -> (Tensor, Tensor)",
    "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, "
    "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, "
    "SymInt height, SymInt width) -> Tensor",
    "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width) -> (Tensor, Tensor)",
    "_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, "
    "float spatial_scale, SymInt pooled_height, SymInt pooled_width, SymInt batch_size, "
    "SymInt channels, SymInt height, SymInt width) -> Tensor",
    "qroi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor",
    "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, "
    "SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, "
    "SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask) -> Tensor",
    "_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset, "
    "Tensor mask, Tensor bias, SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, "
    "SymInt dilation_h, SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",
)
_STUB_LIBRARY: list = []


def torchvision_models() -> ModuleType:
    """``torchvision.models``, imported even when torchvision was built for another torch.

    Returns
    -------
    types.ModuleType
        ``torchvision.models``.

    Raises
    ------
    ImportError
        if torchvision is not installed.

    References
    ----------
    * torchvision's operator registrations (``torchvision/csrc/ops``): the schemas declared
      here are theirs, so the Python side finds the operators it registers fake kernels for.

    Examples
    --------
    >>> from specbound.testing import torchvision_models
    >>> tvm = torchvision_models()  # doctest: +SKIP
    >>> tvm.resnet18(num_classes=10).fc.out_features  # doctest: +SKIP
    10
    """
    try:
        return importlib.import_module("torchvision.models")
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    lib = torch.library.Library("torchvision", "DEF")
    for schema in _TV_SCHEMAS:
        lib.define(schema)
    _STUB_LIBRARY.append(lib)  # kept alive: the definitions die with the library object
    return importlib.import_module("torchvision.models")


