"""Composition of the per-operator bounds over the graph into the network's upper bound.

A term that an operation broadcasts (repeats every entry ``r`` times) contributes
``sqrt(r)`` times its bound: ``||B u|| = sqrt(r) ||u||`` for the repetition ``B``
(theorem ``AUD-BCAST``)."""

from __future__ import annotations

import math

import torch.fx as fx

from .graph import _Op
from .outward import _up


def _compose(ops: dict[fx.Node, _Op], output: fx.Node) -> float:
    """Upper bound on the network's Lipschitz constant over the graph (rules in the module
    docstring), every operation rounded upwards."""
    lip: dict[fx.Node, float] = {}
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
    outs = [a for a in output.all_input_nodes if lip.get(a, 0.0) > 0]
    if not outs:
        return 0.0
    if len(outs) == 1:
        return lip[outs[0]]
    total = _up(sum(_up(lip[a] ** 2, 1) for a in outs), len(outs) + 1)
    return _up(math.sqrt(total), 1)
