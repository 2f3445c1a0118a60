"""Reference architectures for :func:`specbound.audit`, and the bundled example network.

Every architecture is registered by name in :data:`ARCHITECTURES` (the names the command line's
``--arch`` accepts) with the input shape it expects. A state dict or ``.safetensors`` file is
loaded into ``build(name, state_dict)``, which infers the class count and input channels from
the tensors' shapes.

* ``digits_cnn`` — a small plain CNN for scikit-learn's 8x8 digits (conv + BatchNorm, one
  residual block, a strided conv, average pooling, a linear head). Trained weights ship in
  ``specbound/data/digits_cnn.pt`` (:func:`bundled_digits_cnn`; trained by
  ``examples/train_digits_cnn.py``; test accuracy in ``digits_cnn.json``).
* ``resnet18`` — ResNet-18 (He, Zhang, Ren & Sun, "Deep Residual Learning for Image
  Recognition", CVPR 2016, Table 1, "18-layer", with the option-B projection shortcuts of
  Sec. 3.3) in the CIFAR variant: a 3x3 stride-1 stem without max pooling (as in the paper's
  Sec. 4.2 CIFAR networks), stages of 64/128/256/512 channels at 32/16/8/4 pixels for a 32x32
  input.
* ``resnet18_imagenet`` — the same with the paper's 7x7 stride-2 stem and 3x3 stride-2 max
  pooling. Parameter names follow torchvision's convention (``conv1``, ``bn1``,
  ``layer1.0.conv1``, ``layer1.0.downsample.0``, ``fc``), so a torchvision ResNet-18
  ``state_dict`` loads into it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import torch
from torch import nn

DIGITS_WEIGHTS = "digits_cnn.pt"
DIGITS_INFO = "digits_cnn.json"


# ---------------------------------------------------------------------------- digits CNN
class DigitsCNN(nn.Module):
    """A small CNN for 8x8 single-channel digits.

    ``stem`` conv3x3(1->c)+BN+ReLU, a residual block ``relu(x + bn(conv(relu(bn(conv(x))))))``,
    a strided conv3x3(c->2c, stride 2)+BN+ReLU (8x8 -> 4x4), 2x2 average pooling (-> 2x2), a
    linear head. It exercises every rule of :func:`specbound.audit` that a plain CNN needs:
    BatchNorm folding, a residual sum, stride, average pooling and a dense layer.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        c = width
        self.conv1 = nn.Conv2d(in_channels, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        self.block_conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.block_bn1 = nn.BatchNorm2d(c)
        self.block_conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.block_bn2 = nn.BatchNorm2d(c)
        self.down = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=False)
        self.down_bn = nn.BatchNorm2d(2 * c)
        self.pool = nn.AvgPool2d(2)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(2 * c * 2 * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        h = self.relu(self.block_bn1(self.block_conv1(x)))
        x = self.relu(x + self.block_bn2(self.block_conv2(h)))
        x = self.relu(self.down_bn(self.down(x)))
        return self.fc(self.flatten(self.pool(x)))


def digits_cnn(num_classes: int = 10, in_channels: int = 1, width: int = 16) -> DigitsCNN:
    """The bundled example architecture (untrained); see :func:`bundled_digits_cnn`."""
    return DigitsCNN(num_classes, in_channels, width)


# ---------------------------------------------------------------------------- ResNet-18
class BasicBlock(nn.Module):
    """He et al. 2016, Fig. 2 (left): two 3x3 convs with BatchNorm, identity or projection
    (1x1 conv + BN, "option B", Sec. 3.3) shortcut, ReLU after the sum."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016, Table 1): a stem, four stages of two :class:`BasicBlock`
    each (64, 128, 256, 512 channels; the first block of stages 2-4 has stride 2), global
    average pooling and a linear classifier.

    Parameters
    ----------
    num_classes, in_channels : int
    style : {"cifar", "imagenet"}
        ``"cifar"``: 3x3 stride-1 stem, no max pooling (32x32 inputs); ``"imagenet"``: 7x7
        stride-2 stem and 3x3 stride-2 max pooling (224x224 inputs).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, style: str = "cifar"):
        super().__init__()
        if style not in ("cifar", "imagenet"):
            raise ValueError(f"style must be 'cifar' or 'imagenet', got {style!r}")
        if style == "cifar":
            self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        widths, planes = (64, 128, 256, 512), 64
        for i, width in enumerate(widths, start=1):
            stride = 1 if i == 1 else 2
            stage = nn.Sequential(BasicBlock(planes, width, stride), BasicBlock(width, width))
            self.add_module(f"layer{i}", stage)
            planes = width
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 10, in_channels: int = 3) -> ResNet18:
    """CIFAR-style ResNet-18 (random weights, PyTorch's default initialisation)."""
    return ResNet18(num_classes, in_channels, style="cifar")


def resnet18_imagenet(num_classes: int = 1000, in_channels: int = 3) -> ResNet18:
    """ImageNet-style ResNet-18 (torchvision parameter names; random weights)."""
    return ResNet18(num_classes, in_channels, style="imagenet")


# ---------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Architecture:
    """A registered architecture: its builder, default input shape ``(C, H, W)`` and the
    state-dict keys from which ``num_classes`` (rows) and ``in_channels`` (dim 1) are read."""

    name: str
    builder: Callable[..., nn.Module]
    input_shape: tuple[int, ...]
    classes_key: str
    channels_key: str
    description: str


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture(
            "digits_cnn",
            digits_cnn,
            (1, 8, 8),
            "fc.weight",
            "conv1.weight",
            "small CNN for 8x8 digits (the bundled example)",
        ),
        Architecture(
            "resnet18",
            resnet18,
            (3, 32, 32),
            "fc.weight",
            "conv1.weight",
            "ResNet-18, CIFAR stem (3x3, no max pooling)",
        ),
        Architecture(
            "resnet18_imagenet",
            resnet18_imagenet,
            (3, 224, 224),
            "fc.weight",
            "conv1.weight",
            "ResNet-18, ImageNet stem (torchvision names)",
        ),
    )
}


def architecture(name: str) -> Architecture:
    """The registered :class:`Architecture` called ``name`` (a clear error otherwise)."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ValueError(
            f"unknown architecture {name!r}; registered: {', '.join(sorted(ARCHITECTURES))}"
        ) from None


def build(name: str, state_dict: Mapping[str, Any] | None = None) -> nn.Module:
    """Build architecture ``name``; with ``state_dict``, infer its sizes and load it
    (``strict=True``: a missing or unexpected key is an error naming it). Returns the model
    in eval mode."""
    arch = architecture(name)
    kwargs: dict[str, int] = {}
    if state_dict is not None:
        for key, arg, dim in (
            (arch.classes_key, "num_classes", 0),
            (arch.channels_key, "in_channels", 1),
        ):
            tensor = state_dict.get(key)
            if not isinstance(tensor, torch.Tensor) or tensor.dim() < 2:
                raise ValueError(
                    f"the weights do not fit architecture {name!r}: no 2-D+ tensor {key!r} "
                    f"(keys: {sorted(state_dict)[:12]})"
                )
            kwargs[arg] = int(tensor.shape[dim])
    model = arch.builder(**kwargs)
    if state_dict is not None:
        try:
            model.load_state_dict(dict(state_dict), strict=True)
        except RuntimeError as err:
            raise ValueError(f"the weights do not fit architecture {name!r}: {err}") from None
    return model.eval()


def bundled_digits_cnn() -> DigitsCNN:
    """The bundled trained :class:`DigitsCNN` (``specbound/data/digits_cnn.pt``, loaded with
    ``weights_only=True``), in eval mode."""
    with resources.as_file(resources.files("specbound") / "data" / DIGITS_WEIGHTS) as path:
        state = torch.load(path, map_location="cpu", weights_only=True)
    model = build("digits_cnn", state)
    assert isinstance(model, DigitsCNN)
    return model


def bundled_digits_info() -> dict[str, Any]:
    """What ``examples/train_digits_cnn.py`` recorded with the bundled weights (accuracy,
    seed, epochs, torch version)."""
    text = (resources.files("specbound") / "data" / DIGITS_INFO).read_text()
    return json.loads(text)


__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "BasicBlock",
    "DigitsCNN",
    "ResNet18",
    "architecture",
    "build",
    "bundled_digits_cnn",
    "bundled_digits_info",
    "digits_cnn",
    "resnet18",
    "resnet18_imagenet",
]
