"""Lipschitz rules of padding (module and functional forms, every padding mode)."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..operators.indexing import padding_operator_norm
from ._analysis import Analysis
from ._errors import AuditError
from ._graph import _bind, _Op

_PAD_MODES = (
    ((nn.ZeroPad1d, nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d), "zeros"),
    ((nn.ReflectionPad1d, nn.ReflectionPad2d), "reflect"),
    ((nn.ReplicationPad1d, nn.ReplicationPad2d), "replicate"),
    ((nn.CircularPad1d, nn.CircularPad2d), "circular"),
)

PAD_MODULES = tuple(t for types, _ in _PAD_MODES for t in types)
"""The padding modules with a rule (:func:`pad_module`)."""


def _pad_module_mode(mod: nn.Module) -> str | None:
    for types, mode in _PAD_MODES:
        if isinstance(mod, types):
            return mode
    return None


# ---------------------------------------------------------------- rules


def pad_op(an: Analysis, node: fx.Node, pads: tuple[int, ...], mode: str, value: float) -> _Op:
    in_shape = an.in_shape(node)
    if len(pads) % 2 or len(pads) // 2 > len(in_shape):
        raise AuditError(f"{an.describe(node)}: cannot read pads {pads}")
    if min(pads) < 0:
        raise AuditError(f"{an.describe(node)}: negative pads (cropping) are not supported")
    norm = 1.0
    if mode != "zeros":
        for j in range(len(pads) // 2):
            n = in_shape[-1 - j]
            norm *= padding_operator_norm(n, pads[2 * j], pads[2 * j + 1], mode)
    torch_mode = {"zeros": "constant"}.get(mode, mode)

    def lin(x: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
        return (
            F.pad(x, list(pads), mode=torch_mode)
            if mode != "zeros"
            else F.pad(x, list(pads), value=0.0)
        )

    op = an.unary(node, linear=True, lin=lin, absf=lin, kind="pad")
    op.padding = (mode, tuple(int(p) for p in pads))
    op.row = an.exact(
        node,
        norm,
        f"padding operator ({mode}): sqrt(max copies of a pixel)",
        linear=True,
        ops=3,
        notes=[f"constant value {value:g} is an offset"] if value else None,
    )
    return op


def functional_pad(an: Analysis, node: fx.Node, name: str) -> _Op:
    if name == "pad":
        b = _bind(node, ("input", "pad", "mode", "value"), {"mode": "constant", "value": None})
        mode = an.const(b["mode"])
        value = an.const(b["value"]) or 0.0
    elif name == "constant_pad_nd":
        b = _bind(node, ("input", "pad", "value"), {"value": 0.0})
        mode, value = "constant", an.const(b["value"])
    else:
        b = _bind(node, ("input", "pad"))
        mode = {"reflection": "reflect", "replication": "replicate"}.get(
            name.split("_")[0], "circular"
        )
        value = 0.0
    mode = {"constant": "zeros"}.get(mode, mode)
    return pad_op(an, node, tuple(int(v) for v in an.const(b["pad"])), mode, float(value))


def pad_module(an: Analysis, node: fx.Node, mod: nn.Module) -> _Op:
    """A padding module of :data:`PAD_MODULES`."""
    mode = _pad_module_mode(mod)
    if mode is None:
        raise an.no_module_rule(node)
    value = float(getattr(mod, "value", 0.0))
    return pad_op(an, node, tuple(mod.padding), mode, value)
