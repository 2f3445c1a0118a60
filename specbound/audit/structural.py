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


def broadcast_scale_norm(c: torch.Tensor | float, in_shape: tuple[int, ...]) -> float:
    """Norm of ``u -> c * B u`` where ``B`` broadcasts ``u`` (shape ``in_shape``) against ``c``.

    Every output entry copies one entry of ``u``, so the columns of the map are orthogonal and
    its norm is ``sqrt(max_j sum_{k copies j} c_k^2)`` (theorem ``AUD-BCAST``); one backward
    pass sums ``c^2`` over the copies. With ``c = 1`` it is ``sqrt(r)``, ``r`` the repetition
    factor. Computed in float64 (the caller rounds it outwards).
    """
    c2 = torch.as_tensor(c, dtype=torch.float64).detach().cpu().abs() ** 2
    if not c2.numel():
        return 0.0
    z = torch.ones(tuple(in_shape), dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad((z * c2).sum(), z)
    return math.sqrt(float(g.max())) if g.numel() else 0.0


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
        op = _Op(node, "sum", list(terms), True, nops=len(terms) + 1)
        op.repeats = [self.repeat_factor(v, node) for v, _ in terms]
        op.kind = "sum"
        return op

    def repeat_factor(self, src: fx.Node, node: fx.Node) -> int:
        """How many times broadcasting ``src`` to ``node``'s shape repeats each entry."""
        a, b = self.rec.info[src].shape, self.rec.info[node].shape
        if a == b:
            return 1
        na, nb = math.prod(a), math.prod(b)
        if not (isinstance(a, tuple) and isinstance(b, tuple)) or na == 0 or nb % na:
            raise AuditError(
                f"{self.describe(node)} combines {self.describe(src)} of shape {a} into "
                f"shape {b}: not a broadcast, no rule"
            )
        return nb // na

    def cat_op(self, node: fx.Node) -> _Op:
        tensors = node.args[0] if node.args else node.kwargs.get("tensors")
        op = _Op(node, "rss", [(t, 1.0) for t in tensors if self.dep(t)], True)
        op.kind = "cat"
        return op

    def scale_op(self, node: fx.Node, name: str) -> _Op:
        x, y = node.args[0], node.args[1]
        if self.dep(x) and self.dep(y):
            what = "multiplies" if name == "mul" else "divides"
            raise AuditError(
                f"{self.describe(node)} {what} two input-dependent tensors (a gate such as "
                "squeeze-excitation, attention weights, or a normalisation by an "
                "input-dependent norm): not globally Lipschitz (its slope grows with the "
                "input), so no bound exists; audit the sub-network before this node, or "
                "replace the operation by a Lipschitz one"
            )
        if not self.dep(x):
            if name != "mul":
                raise AuditError(
                    f"{self.describe(node)} divides by an input-dependent tensor: x -> c / x is "
                    "not globally Lipschitz near 0; audit the sub-network before this node"
                )
            x, y = y, x
        c = self.const(y)
        c_t = torch.as_tensor(c if c is not None else 1.0).detach().double().cpu()
        if name != "mul":
            if c_t.numel() == 0 or bool((c_t == 0).any()):
                raise AuditError(f"{self.describe(node)} divides by zero")
        factor = self.broadcast_scale_norm(x, node, c_t, name == "mul")
        cd = c.detach().double().cpu() if isinstance(c, torch.Tensor) else c
        ca = c.detach().double().cpu().abs() if isinstance(c, torch.Tensor) else abs(c)

        def lin(v: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
            return v * cd if name == "mul" else v / cd

        def absf(v: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
            return v * ca if name == "mul" else v / ca

        op = self.unary(node, linear=True, nops=1, lin=lin, absf=absf)
        what = "factor" if name == "mul" else "divisor"
        rule = f"|constant| {what}"
        if self.rec.info[x].shape != self.rec.info[node].shape:
            rule += ", broadcast: sqrt(max over entries of the sum of c^2 over its copies)"
        reps = self.repeat_factor(x, node)
        op.row = self.exact(node, factor, rule, linear=True, ops=reps + 4)
        out = self.rec.info[node].shape
        if name == "mul" and c_t.dim() >= 1 and len(out) >= 2:
            # a per-channel scale (e.g. FrozenBatchNorm2d's x * scale + bias): foldable into
            # the convolution before it, like an eval BatchNorm
            channel = [1] * (len(out) - 1)
            channel[0] = out[1]
            if list(c_t.shape[-(len(out) - 1) :]) == channel and c_t.numel() == out[1]:
                op.kind, op.scale = "chscale", c_t.reshape(-1)
        return op

    def broadcast_scale_norm(self, x: fx.Node, node: fx.Node, c: torch.Tensor, mul: bool) -> float:
        """:func:`broadcast_scale_norm` of ``x``'s recorded shape."""
        return broadcast_scale_norm(c if mul else 1.0 / c, self.rec.info[x].shape)

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

    def minmax_op(self, node: fx.Node, name: str) -> _Op:
        """``max``/``min``/``maximum``/``minimum``/``amax``/``amin`` (theorem ``AUD-MAX``).

        Elementwise of two tensors: ``|max(a, b) - max(a', b')| <= max(|a - a'|, |b - b'|)``,
        so the squared differences add up like a concatenation's (with the broadcast
        repetition of each operand). A reduction over disjoint sets of entries (``max(x)``,
        ``max(x, dim)``, ``amax``) is 1-Lipschitz: ``|max_S x - max_S y| <= ||(x - y)_S||``.
        """
        second = node.args[1] if len(node.args) > 1 else node.kwargs.get("other")
        binary = name in ("maximum", "minimum", "fmax", "fmin") or (
            isinstance(second, fx.Node)
            and (self.dep(second) or isinstance(self.rec.info[second].value, torch.Tensor))
        )
        if binary:
            terms = [a for a in (node.args[0], second) if self.dep(a)]
            op = _Op(node, "rss", [(t, 1.0) for t in terms], False)
            op.repeats = [self.repeat_factor(t, node) for t in terms]
            op.kind = "max"
            return op
        return self.unary(node, linear=False, kind="max")

    def expand_op(self, node: fx.Node) -> _Op:
        """``expand``/``broadcast_to``/``repeat``/``tile``: every entry copied ``r`` times,
        norm ``sqrt(r)`` exactly (theorem ``AUD-BCAST``)."""
        src = self.dep_inputs(node)
        r = self.repeat_factor(src[0], node) if len(src) == 1 else 0
        out = self.rec.info[node].shape
        if len(src) != 1 or math.prod(out) != r * math.prod(self.rec.info[src[0]].shape):
            raise AuditError(f"{self.describe(node)}: no rule for this repetition")
        op = self.unary(node, linear=True)
        op.row = self.exact(
            node, math.sqrt(r), f"each entry copied r={r} times: sqrt(r)", linear=True, ops=2
        )
        return op
