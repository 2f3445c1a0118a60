"""Witness directions (specbound.rigorous.witness.lanczos_direction): heuristic, but the
routes' lower bounds and their speed depend on them; checked against the dense float64
operator."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from specbound.operators import ConvLayer, exact_norm
from specbound.rigorous.witness import lanczos_direction, operator_lower
from specbound.spec import ConvSpec

ENTRIES = st.floats(-2, 2, allow_nan=False, allow_subnormal=False)
SPEC = ConvSpec("zeros", "same", (6, 6))


@settings(max_examples=25, deadline=None)
@given(arrays(np.float64, (3, 2, 3, 3), elements=ENTRIES))
@example(np.zeros((3, 2, 3, 3)))
@example(np.ones((3, 2, 3, 3)))  # a rank-one channel mixing: a highly degenerate spectrum
def test_lanczos_reaches_the_dense_norm(kernel):
    layer = ConvLayer(kernel, SPEC)
    exact = exact_norm(kernel, SPEC)
    v = lanczos_direction(layer, None, tol=1e-12)
    ratio = np.linalg.norm(layer.matvec(v.ravel())) / np.linalg.norm(v)
    assert ratio <= exact * (1 + 1e-12) + 1e-300
    assert ratio >= exact * (1 - 1e-8)


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.999])
def test_lanczos_stops_at_the_target(fraction, monkeypatch):
    """With ``target`` the run stops as soon as its Ritz value reaches ``target^2``: fewer
    products than the converged run, and a witness that still reaches the target."""
    kernel = np.random.default_rng(1).standard_normal((16, 16, 3, 3))
    spec = ConvSpec("zeros", "same", (12, 12))
    layer = ConvLayer(kernel, spec)
    exact = exact_norm(kernel, spec)
    calls = {"n": 0}
    apply = ConvLayer.apply

    def counting(self, x):
        calls["n"] += 1
        return apply(self, x)

    monkeypatch.setattr(ConvLayer, "apply", counting)
    full = lanczos_direction(layer, None, tol=1e-12)
    n_full, calls["n"] = calls["n"], 0
    v = lanczos_direction(layer, None, tol=1e-12, target=fraction * exact)
    assert 0 < calls["n"] < n_full
    monkeypatch.undo()
    assert operator_lower(layer, v) >= fraction * exact * (1 - 1e-9)
    assert operator_lower(layer, full) >= exact * (1 - 1e-8)


def test_lanczos_without_target_or_tolerance_stops_at_maxiter():
    kernel = np.random.default_rng(2).standard_normal((4, 4, 3, 3))
    layer = ConvLayer(kernel, ConvSpec("zeros", "same", (10, 10)))
    t0 = time.perf_counter()
    v = lanczos_direction(layer, None, tol=0.0, maxiter=7)
    assert time.perf_counter() - t0 < 30
    assert operator_lower(layer, v) > 0


def test_lanczos_with_a_basis_cut_by_memory_still_reaches_the_norm(monkeypatch):
    """A restart length cut to the minimum (3 vectors) by the memory cap: slower, same answer."""
    from specbound.rigorous import witness

    kernel = np.random.default_rng(3).standard_normal((4, 4, 3, 3))
    spec = ConvSpec("zeros", "same", (8, 8))
    layer = ConvLayer(kernel, spec)
    monkeypatch.setattr(witness, "BASIS_BYTES", 8)
    v = lanczos_direction(layer, None, tol=1e-12, maxiter=5000)
    assert operator_lower(layer, v) >= exact_norm(kernel, spec) * (1 - 1e-6)
