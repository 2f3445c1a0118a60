"""Real architectures (issue 14, item 6): torchvision's ResNet-18, VGG11-bn, MobileNetV2,
DenseNet-121, EfficientNet-B0, ConvNeXt-tiny and a ViT at 3x32x32, random init with BatchNorm
statistics set. Each is audited with every layer bounded, or refused naming the first
unsupported node; an audited network's upper bound is never below the largest Jacobian norm
found by float64 power iteration at 20 random inputs.

torchvision on PyPI is built against CUDA torch: with a CPU torch its ``_C`` extension does not
load and ``import torchvision`` fails (``operator torchvision::nms does not exist``, raised while
registering fake kernels for the detection operators). With torchvision's own CPU build
installed it imports as usual; failing that, a PyPI wheel installed with ``--no-deps`` (as CI
does) is imported here after declaring the schemas of its
C++ operators (:func:`import_torchvision`): the models are pure Python and never call them.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

from specbound.testing import assert_upper_dominates_jacobian, torchvision_models

A = importlib.import_module("specbound.audit")

def import_torchvision():
    """``torchvision.models`` (:func:`specbound.testing.torchvision_models`), or skip."""
    try:
        return torchvision_models()
    except ImportError:
        pytest.skip("torchvision is not installed")


@pytest.fixture(scope="module")
def tvm():
    return import_torchvision()


def build(tvm, name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "vit":
        model = tvm.VisionTransformer(
            image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32
        )
    else:
        model = getattr(tvm, name)(num_classes=10)
    if name == "vgg11_bn":  # 25088 x 4096 classifier: replaced by one small Linear (see below)
        model.classifier = nn.Linear(512 * 7 * 7, 10)
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():  # BatchNorm statistics set (not the identity of a fresh BN)
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    return model.eval()


REFUSED = {
    "efficientnet_b0": r"node 'mul' \(mul\) in module 'features\.1\.0\.block\.1' "
    r"\(SqueezeExcitation\) multiplies two input-dependent tensors",
    "vit": r"module 'encoder\.layers\.encoder_layer_0\.self_attention' \(MultiheadAttention\) "
    r"is attention",
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_architectures_refused_at_their_first_unsupported_node(tvm, name):
    with pytest.raises(A.AuditError, match=REFUSED[name]) as err:
        A.audit(build(tvm, name), (3, 32, 32), rtol=1e-2, max_seconds_per_layer=0.2)
    assert "audit the sub-network before" in str(err.value)


def test_resnet18_small_input_is_audited_and_dominates_jacobians(tvm):
    model = build(tvm, "resnet18")
    rep = A.audit(model, (3, 8, 8), rtol=0.5, max_seconds_per_layer=0.05)
    assert sum(r.type == "Conv2d+BatchNorm2d" for r in rep.layers) == 20
    assert_upper_dominates_jacobian(model, (3, 8, 8), rep.upper, n_inputs=20, iters=2)


@pytest.mark.example
@pytest.mark.parametrize(
    "name",
    ["resnet18", "vgg11_bn", "mobilenet_v2", "densenet121", "convnext_tiny"],
)
def test_architecture_at_32x32_is_audited_and_dominates_jacobians(tvm, name):
    model = build(tvm, name)
    rep = A.audit(model, (3, 32, 32), rtol=1e-2, max_seconds_per_layer=0.5)
    assert rep.layers and all(r.upper >= 0 for r in rep.layers)
    assert rep.local_estimate is not None and rep.local_estimate <= rep.upper
    assert_upper_dominates_jacobian(model, (3, 32, 32), rep.upper, n_inputs=20, iters=5)
