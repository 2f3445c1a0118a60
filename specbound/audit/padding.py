"""Lipschitz rules of padding (module and functional forms, every padding mode)."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..rigorous.routes import padding_operator_norm
from .errors import AuditError
from .graph import _bind, _Op


def _pad_module_mode(mod: nn.Module) -> str | None:
    table = (
        ((nn.ZeroPad1d, nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d), "zeros"),
        ((nn.ReflectionPad1d, nn.ReflectionPad2d), "reflect"),
        ((nn.ReplicationPad1d, nn.ReplicationPad2d), "replicate"),
        ((nn.CircularPad1d, nn.CircularPad2d), "circular"),
    )
    for types, mode in table:
        if isinstance(mod, types):
            return mode
    return None


class _PaddingRules:
    """Padding rows of :class:`~specbound.audit.analyser._Analyser` (a mixin)."""

    def pad_op(self, node: fx.Node, pads: tuple[int, ...], mode: str, value: float) -> _Op:
        in_shape = self.in_shape(node)
        if len(pads) % 2 or len(pads) // 2 > len(in_shape):
            raise AuditError(f"{self.describe(node)}: cannot read pads {pads}")
        if min(pads) < 0:
            raise AuditError(f"{self.describe(node)}: negative pads (cropping) are not supported")
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

        op = self.unary(node, linear=True, lin=lin, absf=lin, kind="pad")
        op.padding = (mode, tuple(int(p) for p in pads))
        op.row = self.exact(
            node,
            norm,
            f"padding operator ({mode}): sqrt(max copies of a pixel)",
            linear=True,
            ops=3,
            notes=[f"constant value {value:g} is an offset"] if value else None,
        )
        return op

    def functional_pad(self, node: fx.Node, name: str) -> _Op:
        if name == "pad":
            b = _bind(node, ("input", "pad", "mode", "value"), {"mode": "constant", "value": None})
            mode = self.const(b["mode"])
            value = self.const(b["value"]) or 0.0
        elif name == "constant_pad_nd":
            b = _bind(node, ("input", "pad", "value"), {"value": 0.0})
            mode, value = "constant", self.const(b["value"])
        else:
            b = _bind(node, ("input", "pad"))
            mode = {"reflection": "reflect", "replication": "replicate"}.get(
                name.split("_")[0], "circular"
            )
            value = 0.0
        mode = {"constant": "zeros"}.get(mode, mode)
        return self.pad_op(node, tuple(int(v) for v in self.const(b["pad"])), mode, float(value))
