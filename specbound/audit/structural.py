"""Lipschitz rules of the structural operators: reshapes, views, indexing, sums, concatenation,
scaling and reductions."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.fx as fx

from .errors import AuditError
from .graph import _bind, _Op

_STRUCT_FUNCS = {
    "flatten",
    "view",
    "reshape",
    "_unsafe_view",
    "contiguous",
    "clone",
    "detach",
    "permute",
    "transpose",
    "t",
    "squeeze",
    "unsqueeze",
    "getitem",
    "to",
    "type",
    "float",
    "double",
    "half",
    "bfloat16",
    "alias",
    "chunk",
    "split",
    "unbind",
    "narrow",
    "slice",
    "select",
    "split_with_sizes",
    "movedim",
    "swapaxes",
    "unflatten",
    "identity",
    "lift_fresh_copy",
    "_to_copy",
    "view_as",
    "reshape_as",
}


class _StructuralRules:
    """Structural rows of :class:`~specbound.audit.analyser._Analyser` (a mixin)."""

    def struct_op(self, node: fx.Node, identity: bool = False) -> _Op:
        if identity:
            return self.unary(
                node, linear=True, lin=lambda x, *a, **k: x, absf=lambda x, *a, **k: x
            )
        return self.unary(node, linear=True)

    def getitem_op(self, node: fx.Node) -> _Op:
        src, index = node.args[0], self.const(node.args[1])
        shape = self.rec.info[src].shape
        is_tensor = isinstance(shape, tuple) and (not shape or isinstance(shape[0], int))
        if is_tensor:
            items = index if isinstance(index, tuple) else (index,)
            ok = all(isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in items)
            if not ok:
                raise AuditError(
                    f"{self.describe(node)} indexes with {index!r}: only ints, slices, None and "
                    "... (which select entries, norm 1) are supported"
                )
        return self.unary(node, linear=True)

    def sum_op(self, node: fx.Node, name: str) -> _Op:
        b = _bind(node, ("input", "other", "alpha"), {"alpha": 1})
        alpha = float(self.const(b.get("alpha", 1)))
        x, y = b["input"], b["other"]
        signs = {"sub": (1.0, -alpha), "rsub": (-alpha, 1.0)}.get(name, (1.0, alpha))
        terms = [(v, s) for v, s in zip((x, y), signs, strict=True) if self.dep(v)]
        out = self.rec.info[node].shape
        for v, _ in terms:
            if self.rec.info[v].shape != out:
                raise AuditError(
                    f"{self.describe(node)} broadcasts {self.describe(v)} from shape "
                    f"{self.rec.info[v].shape} to {out}: repeated entries, no rule"
                )
        op = _Op(node, "sum", list(terms), True, nops=len(terms) + 1)
        op.kind = "sum"
        return op

    def cat_op(self, node: fx.Node) -> _Op:
        tensors = node.args[0] if node.args else node.kwargs.get("tensors")
        op = _Op(node, "rss", [(t, 1.0) for t in tensors if self.dep(t)], True)
        op.kind = "cat"
        return op

    def scale_op(self, node: fx.Node, name: str) -> _Op:
        x, y = node.args[0], node.args[1]
        if self.dep(x) and self.dep(y):
            raise AuditError(
                f"{self.describe(node)} multiplies or divides two input-dependent tensors: not "
                "globally Lipschitz, no rule"
            )
        if not self.dep(x):
            if name != "mul":
                raise AuditError(f"{self.describe(node)} divides by an input-dependent tensor")
            x, y = y, x
        c = self.const(y)
        if self.rec.info[x].shape != self.rec.info[node].shape:
            raise AuditError(
                f"{self.describe(node)} broadcasts the input-dependent operand from shape "
                f"{self.rec.info[x].shape} to {self.rec.info[node].shape}: no rule"
            )
        c_abs = (
            torch.as_tensor(c).detach().abs().double().cpu() if c is not None else torch.tensor(1.0)
        )
        if name == "mul":
            factor = float(c_abs.max()) if c_abs.numel() else 0.0
        else:
            if c_abs.numel() == 0 or float(c_abs.min()) == 0.0:
                raise AuditError(f"{self.describe(node)} divides by zero")
            factor = 1.0 / float(c_abs.min())
        cd = c.detach().double().cpu() if isinstance(c, torch.Tensor) else c
        ca = c.detach().double().cpu().abs() if isinstance(c, torch.Tensor) else abs(c)

        def lin(v: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
            return v * cd if name == "mul" else v / cd

        def absf(v: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
            return v * ca if name == "mul" else v / ca

        op = self.unary(node, linear=True, nops=1, lin=lin, absf=absf)
        what = "factor" if name == "mul" else "divisor"
        op.row = self.exact(node, factor, f"|constant| {what}", linear=True, ops=2)
        return op

    def reduce_op(self, node: fx.Node, name: str) -> _Op:
        b = _bind(node, ("input", "dim", "keepdim"), {"dim": None, "keepdim": False})
        shape = self.rec.info[b["input"]].shape
        dims = self.const(b["dim"])
        if dims is None or dims == []:
            dims = list(range(1, len(shape)))  # one sample (the batch has size 1)
        dims = [dims] if isinstance(dims, int) else list(dims)
        dims = [d % len(shape) for d in dims]
        if 0 in dims:
            raise AuditError(f"{self.describe(node)} reduces over the batch dimension")
        n = math.prod(shape[d] for d in dims)
        value = 1.0 / math.sqrt(n) if name == "mean" else math.sqrt(n)
        op = self.unary(node, linear=True, nops=n + 1)
        rule = "1/sqrt(N)" if name == "mean" else "sqrt(N)"
        op.row = self.exact(node, value, f"{name} over N={n} entries: {rule}", linear=True, ops=3)
        return op
