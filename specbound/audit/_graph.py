"""Graph-analysis helpers: operator names, argument binding, the per-node record :class:`_Op`
and small module-table helpers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx

from ._report import LayerBound


def _op_name(node: fx.Node) -> tuple[str, bool]:
    """Canonical operator name and whether it is in place, for call_function/call_method."""
    if node.op == "call_method":
        name = str(node.target)
    elif node.op == "call_function":
        t = node.target
        if isinstance(t, torch._ops.OpOverload):
            name = t._schema.name.split("::")[-1]
        elif isinstance(t, torch._ops.OpOverloadPacket):
            name = t._qualified_op_name.split("::")[-1]
        else:
            name = getattr(t, "__name__", repr(t))
    else:
        return node.op, False
    inplace_ops = {"iadd": "add", "isub": "sub", "imul": "mul", "itruediv": "truediv"}
    if name in inplace_ops:
        return inplace_ops[name], True
    if name.endswith("_") and not name.endswith("__") and len(name) > 1:
        return name[:-1], True
    return name, False


def _bind(
    node: fx.Node, names: Sequence[str], defaults: dict[str, Any] | None = None, first: int = 0
) -> dict[str, Any]:
    out = dict(defaults or {})
    for key, value in zip(names, node.args[first:], strict=False):
        out[key] = value
    out.update(node.kwargs)
    return out


@dataclass
class _Op:
    """One input-dependent node: how its bound composes, its row, and its float64 linear and
    absolute-value evaluations (for the lower bound of affine networks)."""

    node: fx.Node
    compose: str  # "unary" | "sum" | "rss" | "input"
    inputs: list[tuple[fx.Node, float]]
    linear: bool
    nops: int = 0
    row: LayerBound | None = None
    task: Callable[[], None] | None = None
    lin: Callable[..., Any] | None = None
    absf: Callable[..., Any] | None = None
    # for BatchNorm folding
    kind: str = ""
    weight: torch.Tensor | None = None
    conv: dict[str, Any] | None = None
    scale: torch.Tensor | None = None
    folded_into: _Op | None = None
    fold: _Op | None = None
    # how many times each input's entries are repeated by broadcasting (sum and rss nodes):
    # the term's bound is multiplied by sqrt(repeat); None means 1 for every input
    repeats: list[int] | None = None
    # a padding node: (mode, pads in F.pad order); a conv with a padding folded into it: the
    # padding's op (the conv is then certified at the padding's input size with its mode)
    padding: tuple[str, tuple[int, ...]] | None = None
    pre_pad: _Op | None = None
    # a linear operator merged into this one (its first factor) and the Frobenius bound of
    # the merge's float64 rounding, per unit of the padding operator's norm
    merged: _Op | None = None
    merge_error: float = 0.0


def _type_name(mod: Any) -> str:
    if mod is None:
        return "?"
    return type(mod).__name__.removeprefix("Parametrized")


def _tuple(value: Any, n: int) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        vals = tuple(int(v) for v in value)
        return vals * n if len(vals) == 1 else vals
    return (int(value),) * n
