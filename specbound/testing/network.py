"""Whole-network check: a certified Lipschitz upper bound is never below the largest Jacobian
norm found by float64 power iteration at random inputs.

Example
-------
>>> import importlib, torch
>>> from specbound.testing import assert_upper_dominates_jacobian
>>> audit = importlib.import_module("specbound.audit")
>>> net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.LayerNorm([3, 4, 4]))
>>> report = audit.audit(net, (2, 4, 4), rtol=1e-2)
>>> found = assert_upper_dominates_jacobian(net, (2, 4, 4), report.upper, n_inputs=3)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..audit import local_lipschitz_estimate

JACOBIAN_RTOL = 1e-9
"""Float64 allowance of the power-iteration estimate (``||J v||`` computed with rounding)."""


def assert_upper_dominates_jacobian(
    model: torch.nn.Module,
    input_shape: Sequence[int],
    upper: float,
    *,
    n_inputs: int = 20,
    iters: int = 20,
    seed: int = 0,
) -> float:
    """Assert ``||J(x) v|| <= upper (1 + JACOBIAN_RTOL)`` at ``n_inputs`` random inputs.

    ``||J(x) v||`` for a unit ``v`` never exceeds ``||J(x)||``, which never exceeds the
    Lipschitz constant where the network is differentiable (almost every random input), so a
    failure means that ``upper`` is not an upper bound.

    Returns
    -------
    float
        The largest Jacobian norm found (:func:`specbound.audit.local_lipschitz_estimate`).
    """
    found = local_lipschitz_estimate(model, input_shape, n_inputs=n_inputs, iters=iters, seed=seed)
    if not found <= upper * (1.0 + JACOBIAN_RTOL):
        raise AssertionError(
            f"the Jacobian norm {found!r} found at a random input exceeds the certified upper "
            f"bound {upper!r}: the bound is false"
        )
    return found
