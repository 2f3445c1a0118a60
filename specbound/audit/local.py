"""A local lower *estimate* of a network's Lipschitz constant: the largest Jacobian norm found
by float64 power iteration at a few random inputs.

At a point ``x`` where the network is differentiable, ``||J(x)|| <= Lip``; for a unit ``v``,
``||J(x) v|| <= ||J(x)||``. So the value returned is below the true constant up to float64
rounding (random inputs miss the kinks of ReLU-like activations with probability one). It is an
estimate, not a certificate: it is reported next to the certified upper bound to show how far
the composed bound may be above the true constant, never as a reference for it.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize


def _freeze_parametrizations(m: nn.Module) -> None:
    """Replace the parametrized tensors of ``m`` (a copy) by their current values.

    ``parametrize.remove_parametrizations`` deletes the property from the class, which a deep
    copy shares with the original; here the copy gets the plain base class instead.
    """
    if not parametrize.is_parametrized(m):
        return
    with torch.no_grad():
        values = {name: getattr(m, name).detach().clone() for name in m.parametrizations}
    del m._modules["parametrizations"]
    m.__class__ = type(m).__bases__[0]
    for name, value in values.items():
        if name in m._parameters:
            del m._parameters[name]
        m.register_parameter(name, nn.Parameter(value, requires_grad=False))


def local_lipschitz_estimate(
    model: nn.Module,
    input_shape: Sequence[int],
    n_inputs: int = 20,
    iters: int = 20,
    seed: int = 0,
    max_seconds: float | None = None,
) -> float:
    """Largest ``||J(x) v||`` (unit ``v``) found by power iteration on ``J^T J`` in float64 at
    ``n_inputs`` standard-normal inputs ``x`` (one sample, batch of one).

    Parameters
    ----------
    model : torch.nn.Module
        Copied, its parametrized weights frozen at their current value, converted to float64
        and put in eval mode (the original is not touched).
    input_shape : sequence of int
        One sample's shape without the batch dimension.
    n_inputs, iters : int
        Random inputs, and power iterations at each.
    seed : int
        Seed of the inputs and the starting vectors.
    max_seconds : float, optional
        Stop after this time (at least one iteration runs); the value is still a lower
        estimate, only a weaker one.

    Returns
    -------
    float
        A lower estimate of the local slope (``0.0`` for a constant network).
    """
    shape = tuple(int(v) for v in input_shape)
    if n_inputs < 1 or iters < 1:
        raise ValueError(f"n_inputs and iters must be >= 1, got {n_inputs!r}, {iters!r}")
    net = copy.deepcopy(model)
    for m in list(net.modules()):  # freeze parametrized weights (some force float32)
        _freeze_parametrizations(m)
    net = net.double().eval()

    def f(z: torch.Tensor) -> torch.Tensor:
        out = net(z)
        if isinstance(out, (tuple, list)):
            out = torch.cat([o.reshape(-1) for o in out])
        return out.reshape(-1)

    gen = torch.Generator().manual_seed(seed)
    best = 0.0
    start = time.perf_counter()
    for _ in range(n_inputs):
        if max_seconds is not None and best > 0 and time.perf_counter() - start > max_seconds:
            break
        x = torch.randn((1, *shape), generator=gen, dtype=torch.float64)
        v = torch.randn((1, *shape), generator=gen, dtype=torch.float64)
        v = v / v.norm()
        _, vjp = torch.func.vjp(f, x)
        for _ in range(iters):
            if max_seconds is not None and best > 0 and time.perf_counter() - start > max_seconds:
                break
            _, jv = torch.func.jvp(f, (x,), (v,))
            best = max(best, float(jv.detach().norm()))
            (g,) = vjp(jv)
            norm = float(g.detach().norm())
            if norm == 0.0 or not math.isfinite(norm):
                break
            v = g.detach() / norm
    return best
