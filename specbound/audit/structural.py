"""Lipschitz rules of the structural operators: reshapes, views, indexing, sums, concatenation,
scaling and reductions."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.fx as fx

from ._analysis import Analysis
from ._errors import AuditError
from ._graph import _bind, _Op

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


# ---------------------------------------------------------------- rules


def struct_op(an: Analysis, node: fx.Node, identity: bool = False) -> _Op:
    if identity:
        return an.unary(node, linear=True, lin=lambda x, *a, **k: x, absf=lambda x, *a, **k: x)
    return an.unary(node, linear=True)


def getitem_op(an: Analysis, node: fx.Node) -> _Op:
    src, index = node.args[0], an.const(node.args[1])
    shape = an.rec.info[src].shape
    is_tensor = isinstance(shape, tuple) and (not shape or isinstance(shape[0], int))
    if is_tensor:
        items = index if isinstance(index, tuple) else (index,)
        ok = all(isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in items)
        if not ok:
            raise AuditError(
                f"{an.describe(node)} indexes with {index!r}: only ints, slices, None and "
                "... (which select entries, norm 1) are supported"
            )
    return an.unary(node, linear=True)


def sum_op(an: Analysis, node: fx.Node, name: str) -> _Op:
    b = _bind(node, ("input", "other", "alpha"), {"alpha": 1})
    alpha = float(an.const(b.get("alpha", 1)))
    x, y = b["input"], b["other"]
    signs = {"sub": (1.0, -alpha), "rsub": (-alpha, 1.0)}.get(name, (1.0, alpha))
    terms = [(v, s) for v, s in zip((x, y), signs, strict=True) if an.dep(v)]
    op = _Op(node, "sum", list(terms), True, nops=len(terms) + 1)
    op.repeats = [repeat_factor(an, v, node) for v, _ in terms]
    op.kind = "sum"
    return op


def repeat_factor(an: Analysis, src: fx.Node, node: fx.Node) -> int:
    """How many times broadcasting ``src`` to ``node``'s shape repeats each entry."""
    a, b = an.rec.info[src].shape, an.rec.info[node].shape
    if a == b:
        return 1
    na, nb = math.prod(a), math.prod(b)
    if not (isinstance(a, tuple) and isinstance(b, tuple)) or na == 0 or nb % na:
        raise AuditError(
            f"{an.describe(node)} combines {an.describe(src)} of shape {a} into "
            f"shape {b}: not a broadcast, no rule"
        )
    return nb // na


def cat_op(an: Analysis, node: fx.Node) -> _Op:
    tensors = node.args[0] if node.args else node.kwargs.get("tensors")
    op = _Op(node, "rss", [(t, 1.0) for t in tensors if an.dep(t)], True)
    op.kind = "cat"
    return op


def scale_op(an: Analysis, node: fx.Node, name: str) -> _Op:
    x, y = node.args[0], node.args[1]
    if an.dep(x) and an.dep(y):
        what = "multiplies" if name == "mul" else "divides"
        raise AuditError(
            f"{an.describe(node)} {what} two input-dependent tensors (a gate such as "
            "squeeze-excitation, attention weights, or a normalisation by an "
            "input-dependent norm): not globally Lipschitz (its slope grows with the "
            "input), so no bound exists; audit the sub-network before this node, or "
            "replace the operation by a Lipschitz one"
        )
    if not an.dep(x):
        if name != "mul":
            raise AuditError(
                f"{an.describe(node)} divides by an input-dependent tensor: x -> c / x is "
                "not globally Lipschitz near 0; audit the sub-network before this node"
            )
        x, y = y, x
    c = an.const(y)
    c_t = torch.as_tensor(c if c is not None else 1.0).detach().double().cpu()
    if name != "mul":
        if c_t.numel() == 0 or bool((c_t == 0).any()):
            raise AuditError(f"{an.describe(node)} divides by zero")
    factor = _broadcast_factor(an, x, node, c_t, name == "mul")
    cd = c.detach().double().cpu() if isinstance(c, torch.Tensor) else c
    ca = c.detach().double().cpu().abs() if isinstance(c, torch.Tensor) else abs(c)

    def lin(v: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
        return v * cd if name == "mul" else v / cd

    def absf(v: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
        return v * ca if name == "mul" else v / ca

    op = an.unary(node, linear=True, nops=1, lin=lin, absf=absf)
    what = "factor" if name == "mul" else "divisor"
    rule = f"|constant| {what}"
    if an.rec.info[x].shape != an.rec.info[node].shape:
        rule += ", broadcast: sqrt(max over entries of the sum of c^2 over its copies)"
    reps = repeat_factor(an, x, node)
    op.row = an.exact(node, factor, rule, linear=True, ops=reps + 4)
    out = an.rec.info[node].shape
    if name == "mul" and c_t.dim() >= 1 and len(out) >= 2:
        # a per-channel scale (e.g. FrozenBatchNorm2d's x * scale + bias): foldable into
        # the convolution before it, like an eval BatchNorm
        channel = [1] * (len(out) - 1)
        channel[0] = out[1]
        if list(c_t.shape[-(len(out) - 1) :]) == channel and c_t.numel() == out[1]:
            op.kind, op.scale = "chscale", c_t.reshape(-1)
    return op


def _broadcast_factor(an: Analysis, x: fx.Node, node: fx.Node, c: torch.Tensor, mul: bool) -> float:
    """:func:`broadcast_scale_norm` of ``x``'s recorded shape."""
    return broadcast_scale_norm(c if mul else 1.0 / c, an.rec.info[x].shape)


def reduce_op(an: Analysis, node: fx.Node, name: str) -> _Op:
    b = _bind(node, ("input", "dim", "keepdim"), {"dim": None, "keepdim": False})
    shape = an.rec.info[b["input"]].shape
    dims = an.const(b["dim"])
    if dims is None or dims == []:
        dims = list(range(1, len(shape)))  # one sample (the batch has size 1)
    dims = [dims] if isinstance(dims, int) else list(dims)
    dims = [d % len(shape) for d in dims]
    if 0 in dims:
        raise AuditError(f"{an.describe(node)} reduces over the batch dimension")
    n = math.prod(shape[d] for d in dims)
    value = 1.0 / math.sqrt(n) if name == "mean" else math.sqrt(n)
    op = an.unary(node, linear=True, nops=n + 1)
    rule = "1/sqrt(N)" if name == "mean" else "sqrt(N)"
    op.row = an.exact(node, value, f"{name} over N={n} entries: {rule}", linear=True, ops=3)
    return op


def minmax_op(an: Analysis, node: fx.Node, name: str) -> _Op:
    """``max``/``min``/``maximum``/``minimum``/``amax``/``amin`` (theorem ``AUD-MAX``).

    Elementwise of two tensors: ``|max(a, b) - max(a', b')| <= max(|a - a'|, |b - b'|)``,
    so the squared differences add up like a concatenation's (with the broadcast
    repetition of each operand). A reduction over disjoint sets of entries (``max(x)``,
    ``max(x, dim)``, ``amax``) is 1-Lipschitz: ``|max_S x - max_S y| <= ||(x - y)_S||``.
    """
    second = node.args[1] if len(node.args) > 1 else node.kwargs.get("other")
    binary = name in ("maximum", "minimum", "fmax", "fmin") or (
        isinstance(second, fx.Node)
        and (an.dep(second) or isinstance(an.rec.info[second].value, torch.Tensor))
    )
    if binary:
        terms = [a for a in (node.args[0], second) if an.dep(a)]
        op = _Op(node, "rss", [(t, 1.0) for t in terms], False)
        op.repeats = [repeat_factor(an, t, node) for t in terms]
        op.kind = "max"
        return op
    return an.unary(node, linear=False, kind="max")


def expand_op(an: Analysis, node: fx.Node) -> _Op:
    """``expand``/``broadcast_to``/``repeat``/``tile``: every entry copied ``r`` times,
    norm ``sqrt(r)`` exactly (theorem ``AUD-BCAST``)."""
    src = an.dep_inputs(node)
    r = repeat_factor(an, src[0], node) if len(src) == 1 else 0
    out = an.rec.info[node].shape
    if len(src) != 1 or math.prod(out) != r * math.prod(an.rec.info[src[0]].shape):
        raise AuditError(f"{an.describe(node)}: no rule for this repetition")
    op = an.unary(node, linear=True)
    op.row = an.exact(
        node, math.sqrt(r), f"each entry copied r={r} times: sqrt(r)", linear=True, ops=2
    )
    return op


_CASTS = ("to", "type", "float", "double", "half", "bfloat16", "_to_copy")

_DROPOUT_FUNCS = (
    "dropout",
    "feature_dropout",
    "alpha_dropout",
    "dropout1d",
    "dropout2d",
    "native_dropout",
)


def struct_function(an: Analysis, node: fx.Node, name: str) -> _Op:
    """The functions of ``_STRUCT_FUNCS``: indexing, dtype casts (the identity), views."""
    if name == "getitem":
        return getitem_op(an, node)
    if name in _CASTS:
        return struct_op(an, node, identity=True)
    return struct_op(an, node)


def cat_function(an: Analysis, node: fx.Node, name: str) -> _Op:
    """``cat``, ``concat``, ``concatenate``, ``stack``."""
    return cat_op(an, node)


def expand_function(an: Analysis, node: fx.Node, name: str) -> _Op:
    """``expand``, ``expand_as``, ``broadcast_to``, ``repeat``, ``tile``."""
    return expand_op(an, node)


def neg_function(an: Analysis, node: fx.Node, name: str) -> _Op:
    """``-x``: an isometry."""
    return an.unary(node, linear=True, lin=lambda x: -x, absf=lambda x: x)


def dropout_function(an: Analysis, node: fx.Node, name: str) -> _Op:
    """Functional dropout: the identity in eval mode, refused in training mode (random)."""
    b = _bind(node, ("input", "p", "training"), {"training": name == "native_dropout"})
    if bool(an.const(b.get("training", b.get("train", False)))):
        raise AuditError(f"{an.describe(node)} is in training mode (random)")
    return struct_op(an, node, identity=True)


def stochastic_depth_function(an: Analysis, node: fx.Node, name: str) -> _Op:
    """``torchvision.ops.stochastic_depth``: the identity in eval."""
    b = _bind(node, ("input", "p", "mode", "training"), {"training": True})
    if bool(an.const(b["training"])) and float(an.const(b["p"])) > 0:
        raise AuditError(f"{an.describe(node)} is in training mode (random)")
    return struct_op(an, node, identity=True)


def identity_module(an: Analysis, node: fx.Node, mod: torch.nn.Module) -> _Op:
    """``Identity``, ``Flatten``, ``Unflatten``: they keep or rearrange entries."""
    return struct_op(an, node)


def dropout_module(an: Analysis, node: fx.Node, mod: torch.nn.Module) -> _Op:
    """Dropout modules: the identity in eval mode, refused in training mode (random)."""
    if mod.training:
        raise AuditError(f"{an.describe(node)} is in training mode (random)")
    return struct_op(an, node)
