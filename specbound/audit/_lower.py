"""Certified lower bound of affine networks (a float64 power-iteration witness with a
rounding bound)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.fx as fx

from ..rigorous.rounding import U, frobenius_upper, gamma
from ._analysis import Analysis
from ._outward import _down, _up
from .linear import _combine


def _evaluate(an: Analysis, x: torch.Tensor, mode: str) -> torch.Tensor:
    """The network's linear part ``A x`` (``mode="lin"``: biases, BatchNorm means and other
    offsets dropped) or the absolute-value network ``|A| x`` (``mode="abs"``), float64 on CPU;
    the output's tensors flattened into one vector."""
    env: dict[fx.Node, Any] = {}

    def resolve(a: Any) -> Any:
        if isinstance(a, fx.Node):
            if a in env:
                return env[a]
            value = an.rec.info[a].value
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                # a constant block (of a concatenation) is an offset: dropped
                return torch.zeros(value.shape, dtype=torch.float64)
            return value
        if isinstance(a, (list, tuple)):
            return type(a)(resolve(v) for v in a)
        if isinstance(a, dict):
            return {k: resolve(v) for k, v in a.items()}
        return a

    for node, op in an.ops.items():
        if op.compose == "input":
            env[node] = x
            continue
        if op.compose == "sum":
            terms = [(env[src], c if mode == "lin" else abs(c)) for src, c in op.inputs]
            env[node] = _combine(terms)
            continue
        fn = op.lin if mode == "lin" else op.absf
        if op.compose == "unary" and fn is not None:
            env[node] = fn(env[op.inputs[0][0]])
            continue
        args, kwargs = resolve(node.args), resolve(node.kwargs)
        if node.op == "call_module":
            env[node] = an.modules[str(node.target)](*args, **kwargs)
        elif node.op == "call_method":
            env[node] = getattr(args[0], str(node.target))(*args[1:], **kwargs)
        else:
            env[node] = node.target(*args, **kwargs)
    out_node = next(n for n in an.gm.graph.nodes if n.op == "output")
    parts = [env[a] for a in out_node.all_input_nodes if a in env]
    flat = [p.reshape(-1) for p in parts if isinstance(p, torch.Tensor)]
    return torch.cat(flat) if flat else torch.zeros(0, dtype=torch.float64)


def _linear_lower(an: Analysis, in_shape: tuple[int, ...], iters: int = 60) -> tuple[float, str]:
    """Rigorous lower bound on ``||A||`` for an affine network ``x -> A x + b``."""
    gen = torch.Generator().manual_seed(0)
    v = torch.randn((1, *in_shape), generator=gen, dtype=torch.float64)
    v /= v.norm()
    est = 0.0
    for _ in range(iters):
        x = v.clone().requires_grad_(True)
        y = _evaluate(an, x, "lin")
        if not y.requires_grad:  # the output does not depend on the input
            return 0.0, "constant network"
        (g,) = torch.autograd.grad(y, x, y.detach())
        norm = float(g.norm())
        if norm == 0.0:
            break
        prev, est = est, math.sqrt(norm)
        v = (g / norm).detach()
        if abs(est - prev) <= 1e-12 * est:
            break
    with torch.no_grad():
        y = _evaluate(an, v, "lin")
        m = _evaluate(an, v.abs(), "abs")
    n_total = sum(op.nops for op in an.ops.values()) + 1
    if n_total * U >= 0.5:
        return 0.0, "too many operations for the rounding bound"
    g_n = gamma(n_total)
    y_norm = math.sqrt(float((y * y).sum()) * (1 - gamma(y.numel() + 2))) * (1 - 2 * U)
    m_norm = float(frobenius_upper(m.reshape(1, -1))) / (1 - g_n)
    v_norm = float(frobenius_upper(v.reshape(1, -1)))
    lower = _down((y_norm - _up(g_n * m_norm, 2)) / v_norm, 3)
    return max(0.0, lower), f"float64 power-iteration witness, rounding bound gamma_{n_total}"
