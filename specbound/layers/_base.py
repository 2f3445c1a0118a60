"""Shared machinery of the 1-Lipschitz layers: geometry, domain checks, caching, export.

Every constrained conv layer of :mod:`specbound.layers` computes

.. math::

    y = \\mathrm{conv}(\\mathrm{pad}(x), W) + b,\\qquad W = \\phi(\\theta) / c_P,

where :math:`\\phi` is the layer's constraint (AOL, spectral rescaling, BCOP), :math:`\\theta` its
free parameters (``module.parametrizations.weight.original``), and :math:`c_P\\ge\\|P\\|` a bound
on the norm of the padding operator (:mod:`specbound.layers.padding`): 1 for zero and circular
padding, the exact supremum of :math:`\\|P\\|` over the admissible input sizes for reflect and
replicate padding.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..certify import Certificate, certify
from ..operators.conv_layer import ConvLayer
from ..spec import AxisPads, ConvSpec
from .padding import pad2d, padding_norm_bound

ROUNDING_ALLOWANCE = 1e-12
"""Rounding allowance of the float64 guarantee ``||layer|| <= 1 + ROUNDING_ALLOWANCE``.

The theorems behind the layers give ``||J|| <= 1`` in exact arithmetic; the kernel is computed
in floating point, which can push a tight case (for example an orthogonal BCOP kernel, or an AOL
kernel with orthogonal columns, whose exact norm is 1) above 1 by a few units in the last
place. ``1e-12`` is the float64 allowance used by the tests (measured excess <= 1e-14 on the
test configurations). In float32 the analogous allowance is about ``1e-5`` (relative)."""

Pads = AxisPads


def _pair(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (int(value), int(value))
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) for v in value)
    ):
        return (int(value[0]), int(value[1]))
    raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")


def module_geometry(module: nn.Conv2d) -> tuple[ConvSpec, tuple[int, int], AxisPads]:
    """``(spec, kernel size, pads)`` of a ``torch.nn.Conv2d``, its geometry read by
    :meth:`ConvSpec.from_module` (the one reader of a torch convolution's geometry)."""
    spec = ConvSpec.from_module(module)
    ks = (int(module.weight.shape[2]), int(module.weight.shape[3]))
    return spec, ks, spec.pads(ks)


def resolve_geometry(
    in_channels: int,
    out_channels: int,
    kernel_size: Any,
    *,
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: int,
    padding_mode: str,
) -> tuple[ConvSpec, tuple[int, int], Pads]:
    """Validate a conv geometry (through :class:`~specbound.spec.ConvSpec`) and resolve pads.

    Returns ``(spec, kernel_size, pads)`` with ``pads = ((top, bottom), (left, right))``.
    """
    ks = _pair(kernel_size, "kernel_size")
    if min(ks) < 1:
        raise ValueError(f"kernel_size must be >= 1, got {kernel_size!r}")
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    spec = ConvSpec(
        padding=padding_mode, pad=padding, stride=stride, dilation=dilation, groups=groups
    )
    if in_channels % spec.groups or out_channels % spec.groups:
        raise ValueError(
            f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}"
        )
    # validates the rest
    ConvLayer(torch.zeros(out_channels, in_channels // spec.groups, *ks), spec)
    return spec, ks, spec.pads(ks)


def padding_compensation(
    spec: ConvSpec,
    kernel_size: tuple[int, int],
    pads: Pads,
    min_input_size: Any = None,
) -> float:
    """The factor ``c_P`` that keeps a rescaled kernel 1-Lipschitz with this padding.

    * ``"zeros"``: 1 for any pad. The layer is a row selection (output window, stride) of the
      convolution on the plane applied to the zero-extended input (an isometric embedding).
    * ``"circular"``: 1 when at most ``dilation*(k-1)`` is padded in total per axis. The layer
      is then a row selection of the circulant on the ``n``-torus, whose norm is the maximum of
      the symbol over the DFT grid, at most its supremum over all frequencies. The selected rows
      are distinct: output ``i`` reads torus row ``s*i - lo (mod n)`` and
      ``s*(n_out - 1) <= n - 1``. A larger pad repeats rows (norm up to ``sqrt(repeats)``):
      refused.
    * ``"reflect"``, ``"replicate"``: the exact supremum of ``||P||`` over the admissible input
      sizes ``>= min_input_size`` (:func:`~specbound.layers.padding.padding_norm_bound`).

    Raises
    ------
    ValueError
        circular padding above ``dilation*(k-1)`` per axis, or ``min_input_size`` given for a
        mode that does not need it.
    """
    mode = spec.padding
    (top, bottom), (left, right) = pads
    (kh, kw), (dh, dw) = kernel_size, spec.dilation
    if mode in ("zeros", "circular") and min_input_size is not None:
        raise ValueError(
            f"min_input_size only applies to padding_mode 'reflect' or 'replicate' (it tightens "
            f"the padding compensation); got padding_mode={mode!r}"
        )
    if mode == "circular" and (top + bottom > dh * (kh - 1) or left + right > dw * (kw - 1)):
        raise ValueError(
            f"padding={spec.pad!r} with padding_mode='circular' pads ((top, bottom), "
            f"(left, right))={pads}, more than dilation*(kernel_size-1)="
            f"({dh * (kh - 1)}, {dw * (kw - 1)}) in "
            "total per axis: output rows of the circulant repeat and the norm can exceed 1; "
            "use padding='same' or less"
        )
    if mode in ("zeros", "circular"):
        return 1.0
    size = None if min_input_size is None else _pair(min_input_size, "min_input_size")
    return padding_norm_bound(pads, mode, size)


class CachedTransform(nn.Module):
    """A parametrization ``original -> weight`` whose result is cached in eval mode.

    The transform is recomputed in training mode, whenever a gradient is needed (grad enabled
    and a parameter requires it) and under ``torch.inference_mode`` (never cached there).
    Otherwise, in eval mode, the weight is computed once and reused until the original tensor
    (or one of this module's own parameters) changes: the cache key holds each tensor's storage
    pointer, version counter (bumped by in-place updates such as ``optimizer.step()`` and
    ``load_state_dict``), dtype, device and shape.

    References
    ----------
    * PyTorch, ``torch.nn.utils.parametrize.register_parametrization`` (the
      parametrization protocol this class implements).

    Examples
    --------
    The layers' constrained weights are ``CachedTransform`` parametrizations:

    >>> import torch
    >>> from specbound import layers
    >>> layer = layers.AOLConv2d(2, 3, 3).eval()
    >>> transform = layer.parametrizations.weight[0]
    >>> isinstance(transform, layers.CachedTransform)
    True
    >>> with torch.no_grad():
    ...     layer.weight is layer.weight  # computed once in eval mode, then reused
    True
    """

    def __init__(self) -> None:
        super().__init__()
        self._cache: torch.Tensor | None = None
        self._cache_key: tuple | None = None

    def transform(self, original: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _key(self, original: torch.Tensor) -> tuple:
        tensors = [original, *self.parameters()]
        return tuple(
            (t.data_ptr(), t._version, t.dtype, str(t.device), tuple(t.shape)) for t in tensors
        )

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        params = [original, *self.parameters()]
        needs_grad = torch.is_grad_enabled() and any(p.requires_grad for p in params)
        if self.training or needs_grad:
            self._cache, self._cache_key = None, None
            return self.transform(original)
        if torch.is_inference_mode_enabled():  # never cache an inference tensor
            return self.transform(original)
        key = self._key(original)
        if self._cache is None or self._cache_key != key:
            with torch.no_grad():
                self._cache = self.transform(original)
            self._cache_key = key
        return self._cache


class ConstrainedConv2d(nn.Module):
    """Base class: a conv layer whose ``weight`` is a parametrized, constrained kernel.

    Subclasses register a :class:`CachedTransform` on ``weight`` (``self._init_weight``); the
    forward pass, export and certification are shared.

    References
    ----------
    * docs/howto/train-1-lipschitz.md; the constraint of each subclass cites its paper.

    Examples
    --------
    >>> from specbound import layers
    >>> layer = layers.SRConv2d(2, 3, 3)
    >>> isinstance(layer, layers.ConstrainedConv2d), layer.padding_mode
    (True, 'zeros')
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = "same",
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        min_input_size: Any = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.spec, ks, self.pads = resolve_geometry(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            padding_mode=padding_mode,
        )
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, ks
        self.stride, self.dilation = self.spec.stride, self.spec.dilation
        self.groups, self.padding_mode, self.padding = self.spec.groups, padding_mode, padding
        self.min_input_size = (
            None if min_input_size is None else _pair(min_input_size, "min_input_size")
        )
        self.padding_norm = padding_compensation(self.spec, ks, self.pads, min_input_size)
        factory = {"device": device, "dtype": dtype}
        self.bias = nn.Parameter(torch.zeros(out_channels, **factory)) if bias else None

    # ------------------------------------------------------------------ forward
    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() not in (3, 4):
            raise ValueError(
                f"expected a 3-D or 4-D input (N, C, H, W), got shape {tuple(x.shape)}"
            )
        if x.shape[-3] != self.in_channels:
            raise ValueError(
                f"expected {self.in_channels} input channels, got input shape {tuple(x.shape)}"
            )
        if self.min_input_size is not None:
            h, w = x.shape[-2:]
            if h < self.min_input_size[0] or w < self.min_input_size[1]:
                raise ValueError(
                    f"the padding compensation of this layer holds for inputs of at least "
                    f"min_input_size={self.min_input_size}, got input size {(h, w)}"
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return F.conv2d(
            pad2d(x, self.pads, self.padding_mode),
            self.weight,
            self.bias,
            self.stride,
            0,
            self.dilation,
            self.groups,
        )

    # ------------------------------------------------------------------ export / certify
    def to_conv2d(self) -> nn.Module:
        """A plain :class:`torch.nn.Conv2d` (behind a padding module when the pads are
        asymmetric) with the current constrained kernel, reproducing this layer's output.

        Circular padding is exported as ``padding_mode="circular"``, which PyTorch supports for
        pads up to the input size only (this layer wraps any pad).
        """
        w = self.weight.detach().clone()
        (top, bottom), (left, right) = self.pads
        symmetric = top == bottom and left == right
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            tuple(w.shape[-2:]),
            stride=self.stride,
            padding=(top, left) if symmetric else 0,
            dilation=self.dilation,
            groups=self.groups,
            bias=self.bias is not None,
            padding_mode=self.padding_mode,
            device=w.device,
            dtype=w.dtype,
        )
        with torch.no_grad():
            conv.weight.copy_(w)
            if self.bias is not None:
                conv.bias.copy_(self.bias.detach())
        if symmetric:
            return conv
        return nn.Sequential(pad_module(self.pads, self.padding_mode), conv)

    def certify(self, input_size: Any = None, *, rtol: float = 1e-3) -> Certificate:
        """Certified bracket on this layer's spectral norm, by :func:`specbound.certify`.

        Parameters
        ----------
        input_size : (H, W), int or None
            ``None`` certifies every input size.
        rtol : float
            Target relative gap of the bracket.
        """
        return certify(
            self.weight.detach(),
            self.padding_mode,
            input_size=input_size,
            pad=self.pads,
            stride=self.stride,
            dilation=self.dilation,
            groups=self.groups,
            rtol=rtol,
        )

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding!r}, dilation={self.dilation}, "
            f"groups={self.groups}, bias={self.bias is not None}, "
            f"padding_mode={self.padding_mode!r}"
        )
        if self.padding_norm != 1.0:
            s += f", padding_norm={self.padding_norm:.6g}"
        return s


def pad_module(pads: Pads, mode: str) -> nn.Module:
    """The built-in padding module for ``((top, bottom), (left, right))`` and ``mode``."""
    (top, bottom), (left, right) = pads
    cls = {
        "zeros": nn.ZeroPad2d,
        "circular": nn.CircularPad2d,
        "reflect": nn.ReflectionPad2d,
        "replicate": nn.ReplicationPad2d,
    }[mode]
    return cls((left, right, top, bottom))


def linear_certify(weight: torch.Tensor, rtol: float) -> Certificate:
    """Certify a dense matrix ``W`` (``out x in``) as the 1x1 conv on a 1x1 input."""
    return certify(
        weight.detach()[:, :, None, None], "zeros", input_size=(1, 1), pad="valid", rtol=rtol
    )


def check_tensor_name(module: nn.Module, tensor_name: str) -> None:
    """Refuse a ``tensor_name`` that is not a str naming a parameter of ``module`` with the
    shape of its ``weight`` (the conv or linear geometry the constraint is built for)."""
    if not isinstance(tensor_name, str):
        raise TypeError(f"tensor_name must be a str, got {type(tensor_name).__name__}")
    tensor = getattr(module, tensor_name, None)
    weight = getattr(module, "weight", None)
    if not isinstance(tensor, torch.Tensor) or not isinstance(weight, torch.Tensor):
        raise ValueError(
            f"tensor_name={tensor_name!r} names no tensor of this {type(module).__name__}"
        )
    if tensor.shape != weight.shape:
        raise ValueError(
            f"tensor_name={tensor_name!r} has shape {tuple(tensor.shape)}, not the weight's "
            f"{tuple(weight.shape)}: the constraint is built for the layer's kernel geometry"
        )
