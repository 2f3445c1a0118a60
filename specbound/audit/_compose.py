"""Composition of the per-operator bounds over the graph into the network's upper bound.

A term that an operation broadcasts (repeats every entry ``r`` times) contributes
``sqrt(r)`` times its bound: ``||B u|| = sqrt(r) ||u||`` for the repetition ``B``
(theorem ``AUD-BCAST``)."""

from __future__ import annotations

import math

import torch.fx as fx

from ._graph import _Op
from ._outward import _up


def _lipschitz_table(ops: dict[fx.Node, _Op]) -> dict[fx.Node, float]:
    lip: dict[fx.Node, float] = {}
    _compose(ops, None, lip)
    return lip


def _compose(
    ops: dict[fx.Node, _Op], output: fx.Node | None, lip: dict[fx.Node, float] | None = None
) -> float:
    """Upper bound on the network's Lipschitz constant over the graph (rules in the module
    docstring), every operation rounded upwards."""
    lip = {} if lip is None else lip
    for node, op in ops.items():
        if op.compose == "input":
            lip[node] = 1.0
            continue
        reps = op.repeats or [1] * len(op.inputs)
        vals = [
            (lip.get(src, 0.0), abs(c) if r == 1 else _up(abs(c) * math.sqrt(r), 2))
            for (src, c), r in zip(op.inputs, reps, strict=True)
        ]
        if all(v == 0.0 for v, _ in vals):  # exactly constant
            lip[node] = 0.0
        elif op.compose == "unary":
            factor = 1.0
            if op.row is not None and op.folded_into is None:
                factor = op.row.upper
            lip[node] = _up(factor * vals[0][0], 1)
        elif op.compose == "sum":
            lip[node] = _up(sum(_up(c * v, 1) for v, c in vals), len(vals) + 1)
        else:  # rss
            total = _up(sum(_up(_up(v * c, 1) ** 2, 1) for v, c in vals), len(vals) + 1)
            lip[node] = _up(math.sqrt(total), 1)
    if output is None:
        return 0.0
    outs = [a for a in output.all_input_nodes if lip.get(a, 0.0) > 0]
    if not outs:
        return 0.0
    if len(outs) == 1:
        return lip[outs[0]]
    total = _up(sum(_up(lip[a] ** 2, 1) for a in outs), len(outs) + 1)
    return _up(math.sqrt(total), 1)


def composition_note(ops: dict[fx.Node, _Op], output: fx.Node, upper: float) -> str:
    """How the whole-network bound is composed, with the numbers: the per-layer factors along
    the dominant path (at each sum or concatenation, the input with the largest bound) and
    how many residual sums and concatenations add branches on the way."""
    lip = _lipschitz_table(ops)
    outs = [a for a in output.all_input_nodes if lip.get(a, 0.0) > 0]
    if not outs:
        return "the network is constant: its Lipschitz constant is 0"
    node = max(outs, key=lambda a: lip[a])
    factors: list[str] = []
    product = 1.0
    sums = cats = 0
    while node in ops and ops[node].compose != "input":
        op = ops[node]
        if op.compose == "sum" and len(op.inputs) > 1:
            sums += 1
        elif op.compose == "rss" and len(op.inputs) > 1:
            cats += 1
        if op.compose == "unary" and op.row is not None and op.folded_into is None:
            factors.append(f"{op.row.name} {op.row.upper:.4g}")
            product *= op.row.upper
        srcs = [src for src, _ in op.inputs if lip.get(src, 0.0) > 0]
        if not srcs:
            break
        node = max(srcs, key=lambda a: lip[a])
    factors.reverse()
    shown = factors if len(factors) <= 12 else [*factors[:6], "...", *factors[-5:]]
    return (
        f"the upper bound {upper:.4g} is composed as a product of per-layer bounds along the "
        f"dominant path ({len(factors)} factors, product {product:.4g}: "
        + " x ".join(shown)
        + f"), with {sums} residual sums (L(u) + L(v)) and {cats} concatenations or "
        "max/min (root-sum-square) on it; a product of worst cases can be far above the "
        "network's true Lipschitz constant, since the worst directions of consecutive layers "
        "rarely align"
    )
