"""Model-level export: every specbound layer of a model replaced by plain torch modules.

:func:`export_model` returns a copy of a model in which

* :class:`~specbound.layers.AOLConv2d`, :class:`~specbound.layers.SRConv2d` and
  :class:`~specbound.layers.BCOPConv2d` become an :class:`torch.nn.Conv2d` (behind a padding
  module when the pads are asymmetric), by their ``to_conv2d()``;
* :class:`~specbound.layers.AOLLinear` and :class:`~specbound.layers.SRLinear` become an
  :class:`torch.nn.Linear` (``to_linear()``);
* :class:`~specbound.layers.ConvNorm2d` becomes its ``to_conv2d(input_size)`` modules, at the
  input size the example input gives it;
* a plain ``nn.Conv2d``/``nn.Linear`` carrying an in-place specbound parametrization
  (:func:`~specbound.layers.aol_`, :func:`~specbound.layers.spectral_rescaling_`,
  :func:`~specbound.layers.bcop_`) becomes an unparametrized one with the constrained weight;
* :class:`~specbound.layers.SLLConv2d` (zero padding, symmetric pads) and
  :class:`~specbound.layers.SLLLinear`, which are residual blocks and not one linear map,
  become a :class:`ResidualBlock` of an ``nn.Conv2d``/``nn.Linear``, a ReLU, a fixed scale and
  the adjoint ``nn.ConvTranspose2d``/``nn.Linear``.

The exported weights are fixed: nothing constrains them any more, and they are computed once.
The export runs the model and its copy on an example input and refuses (``ValueError``) if
the outputs differ by more than the stated tolerance.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ._base import CachedTransform, ConstrainedConv2d
from .convnorm import ConvNorm2d
from .rescaling import RescaledLinear
from .sll import SLLConv2d, SLLLinear, _inverse

__all__ = ["ResidualBlock", "export_model"]


class ResidualBlock(nn.Module):
    """``x - adjoint(relu(inner(x)) * scale)``: an exported SLL block, made of plain modules.

    Parameters
    ----------
    inner : torch.nn.Module
        ``C x + b`` (an ``nn.Conv2d``, or an ``nn.Linear``).
    adjoint : torch.nn.Module
        ``C^T`` (an ``nn.ConvTranspose2d`` with the same kernel, or an ``nn.Linear`` with the
        transposed weight), without bias.
    scale : torch.Tensor
        ``2 / t`` per hidden channel (0 where ``t = 0``), broadcast against ``inner(x)``.

    References
    ----------
    * A. Araujo, A. Havens, B. Delattre, A. Allauzen and B. Hu, "A Unified Algebraic
      Perspective on Lipschitz Neural Networks", ICLR 2023, Thm. 3.

    Examples
    --------
    Produced by :func:`export_model` from an :class:`SLLConv2d` or :class:`SLLLinear`:

    >>> import torch
    >>> from specbound import layers
    >>> plain = layers.export_model(layers.SLLLinear(4).eval(), torch.randn(2, 4))
    >>> type(plain).__name__
    'ResidualBlock'
    """

    def __init__(self, inner: nn.Module, adjoint: nn.Module, scale: torch.Tensor) -> None:
        super().__init__()
        self.inner, self.adjoint = inner, adjoint
        self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.adjoint(F.relu(self.inner(x)) * self.scale)


def _plain_conv(module: nn.Conv2d) -> nn.Conv2d:
    w = module.weight.detach()
    conv = nn.Conv2d(
        module.in_channels,
        module.out_channels,
        module.kernel_size,
        stride=module.stride,
        padding=module.padding,
        dilation=module.dilation,
        groups=module.groups,
        bias=module.bias is not None,
        padding_mode=module.padding_mode,
        device=w.device,
        dtype=w.dtype,
    )
    with torch.no_grad():
        conv.weight.copy_(w)
        if module.bias is not None:
            conv.bias.copy_(module.bias.detach())
    return conv


def _plain_linear(module: nn.Linear) -> nn.Linear:
    w = module.weight.detach()
    linear = nn.Linear(
        module.in_features,
        module.out_features,
        module.bias is not None,
        device=w.device,
        dtype=w.dtype,
    )
    with torch.no_grad():
        linear.weight.copy_(w)
        if module.bias is not None:
            linear.bias.copy_(module.bias.detach())
    return linear


def _sll_conv(name: str, block: SLLConv2d) -> ResidualBlock:
    (top, bottom), (left, right) = block.pads
    if block.padding_mode != "zeros" or top != bottom or left != right:
        raise ValueError(
            f"cannot export layer {name!r}: SLLConv2d exports with zero padding and symmetric "
            f"pads only, got padding_mode={block.padding_mode!r}, pads ((top, bottom), "
            f"(left, right))={block.pads}"
        )
    w = block.weight.detach()
    hidden, c_in_per_group = w.shape[:2]
    factory = {"device": w.device, "dtype": w.dtype}
    inner = nn.Conv2d(
        block.channels,
        hidden,
        tuple(w.shape[-2:]),
        padding=(top, left),
        dilation=block.dilation,
        groups=block.groups,
        bias=block.bias is not None,
        **factory,
    )
    adjoint = nn.ConvTranspose2d(
        hidden,
        c_in_per_group * block.groups,
        tuple(w.shape[-2:]),
        padding=(top, left),
        dilation=block.dilation,
        groups=block.groups,
        bias=False,
        **factory,
    )
    with torch.no_grad():
        inner.weight.copy_(w)
        adjoint.weight.copy_(w)
        if block.bias is not None:
            inner.bias.copy_(block.bias.detach())
        scale = 2.0 * _inverse(block.factors().detach())[:, None, None]
    return ResidualBlock(inner, adjoint, scale)


def _sll_linear(block: SLLLinear) -> ResidualBlock:
    w = block.weight.detach()
    hidden, features = w.shape
    factory = {"device": w.device, "dtype": w.dtype}
    inner = nn.Linear(features, hidden, block.bias is not None, **factory)
    adjoint = nn.Linear(hidden, features, False, **factory)
    with torch.no_grad():
        inner.weight.copy_(w)
        adjoint.weight.copy_(w.T)
        if block.bias is not None:
            inner.bias.copy_(block.bias.detach())
        scale = 2.0 * _inverse(block.factors().detach())
    return ResidualBlock(inner, adjoint, scale)


def _has_specbound_parametrization(module: nn.Module) -> bool:
    if not parametrize.is_parametrized(module, "weight"):
        return False
    return any(isinstance(p, CachedTransform) for p in module.parametrizations.weight)


def _input_sizes(model: nn.Module, example_input: torch.Tensor) -> dict[int, tuple[int, int]]:
    """The spatial input size each ConvNorm2d of ``model`` sees on ``example_input``."""
    sizes: dict[int, tuple[int, int]] = {}

    def record(module: nn.Module, args: tuple) -> None:  # returns None: the input is kept
        sizes.setdefault(id(module), tuple(args[0].shape[-2:]))

    hooks = [
        m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, ConvNorm2d)
    ]
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for hook in hooks:
            hook.remove()
    return sizes


def _replacement(
    name: str, module: nn.Module, sizes: dict[int, tuple[int, int]]
) -> nn.Module | None:
    if isinstance(module, ConstrainedConv2d):
        return module.to_conv2d()
    if isinstance(module, RescaledLinear):
        return module.to_linear()
    if isinstance(module, ConvNorm2d):
        if id(module) not in sizes:
            raise ValueError(
                f"cannot export layer {name!r}: ConvNorm2d needs its input size, and the "
                "example input does not reach it"
            )
        return module.to_conv2d(sizes[id(module)])
    if isinstance(module, SLLConv2d):
        return _sll_conv(name, module)
    if isinstance(module, SLLLinear):
        return _sll_linear(module)
    if _has_specbound_parametrization(module):
        if isinstance(module, nn.Conv2d):
            return _plain_conv(module)
        if isinstance(module, nn.Linear):
            return _plain_linear(module)
        raise ValueError(
            f"cannot export layer {name!r}: a specbound parametrization on a "
            f"{type(module).__bases__[0].__name__} (only Conv2d and Linear are exported)"
        )
    return None


def export_model(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> nn.Module:
    """A copy of ``model`` with every specbound layer replaced by plain torch modules.

    Parameters
    ----------
    model : torch.nn.Module
        Any model; it is not modified (the export works on a copy).
    example_input : torch.Tensor
        A batch the model accepts. It gives ConvNorm2d layers their input size, and the
        exported copy must reproduce the model's output on it.
    rtol, atol : float
        The check, elementwise: ``|exported - original| <= atol + rtol * |original|``, both
        models in eval mode. The exported weights are the constrained weights computed once,
        so the outputs differ by rounding only.

    Returns
    -------
    torch.nn.Module
        The copy, in the train/eval mode of ``model``. Modules that are not specbound layers
        are deep copies of the originals.

    Raises
    ------
    TypeError
        If ``model`` is not an ``nn.Module`` or ``example_input`` not a tensor.
    ValueError
        If a layer cannot be exported (named), the tolerances are not finite and >= 0, or the
        outputs differ (the largest difference is given).

    References
    ----------
    * docs/howto/train-1-lipschitz.md (training, certifying and exporting a 1-Lipschitz
      network).

    Examples
    --------
    >>> import torch
    >>> from specbound import layers
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(layers.AOLConv2d(2, 4, 3), layers.MaxMin(),
    ...                             layers.SLLConv2d(4, 4, 3)).eval()
    >>> plain = layers.export_model(model, torch.randn(1, 2, 8, 8))
    >>> [type(m).__name__ for m in plain]
    ['Conv2d', 'MaxMin', 'ResidualBlock']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(example_input, torch.Tensor):
        raise TypeError(f"example_input must be a torch.Tensor, got {type(example_input).__name__}")
    for label, tol in (("rtol", rtol), ("atol", atol)):
        if not (isinstance(tol, (int, float)) and 0 <= tol < float("inf")):
            raise ValueError(f"{label} must be a finite number >= 0, got {tol!r}")
    reference = copy.deepcopy(model)  # a forward may update buffers (ConvNorm2d's running_v)
    reference.eval()
    sizes = _input_sizes(reference, example_input)
    memo: dict[int, Any] = {}  # deepcopy's memo: a replaced module maps to its export
    replaced: list[str] = []
    for name, module in reference.named_modules():
        if any(name.startswith(prefix + ".") for prefix in replaced):
            continue  # inside a replaced layer
        new = _replacement(name or "<model>", module, sizes)
        if new is not None:
            memo[id(module)] = new
            replaced.append(name)
    exported = copy.deepcopy(reference, memo)
    exported.eval()
    with torch.no_grad():
        expected, got = reference(example_input), exported(example_input)
    exported.train(model.training)
    _check_outputs(expected, got, rtol, atol)
    return exported


def _check_outputs(expected: Any, got: Any, rtol: float, atol: float) -> None:
    if not (isinstance(expected, torch.Tensor) and isinstance(got, torch.Tensor)):
        raise ValueError("export_model checks models whose output is one tensor")
    if expected.shape != got.shape:
        raise ValueError(
            f"the exported model's output has shape {tuple(got.shape)}, the model's "
            f"{tuple(expected.shape)}"
        )
    diff = (got - expected).abs()
    allowed = atol + rtol * expected.abs()
    if not bool(torch.all(diff <= allowed)):
        worst = float(torch.nan_to_num(diff, nan=float("inf")).max())
        raise ValueError(
            f"the exported model's output differs from the model's by up to {worst:.3g} "
            f"(allowed: atol={atol:g} + rtol={rtol:g} * |output|)"
        )
