"""The every-size cell cap ``sigma_1(M(c)) >= S cos(rho/2)`` (docs/certify.md L8)."""

import math

import mpmath
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import specbound as sb
from specbound.operators import exact_norm, symbol
from specbound.rigorous._routes import cell_shrink


@given(st.floats(0, 4, allow_nan=False))
@example(math.pi * (1 - 1e-12))
@example(math.pi)
@example(0.0)
def test_cell_shrink_is_below_the_cosine(rho):
    value = float(cell_shrink(np.array([rho]))[0])
    exact = mpmath.cos(mpmath.mpf(rho) / 2)
    if rho >= math.pi:
        assert value == 0.0
    else:
        assert 0.0 <= value <= exact
        if rho < math.pi * (1 - 1e-12):  # the last 1e-12 of [0, pi) gets no cap at all
            assert value >= exact - mpmath.mpf("2e-14")  # not needlessly loose


def test_the_cap_is_sharp_on_the_two_tap_kernel():
    """[1, 1]: sigma_1(M(w)) = 2 cos(w/2) exactly, so the cap divides back to S = 2."""
    kernel = np.ones((1, 1, 1, 2))
    for w in (0.1, 1.0, 2.5):
        value = np.linalg.svd(symbol(kernel, np.array([0.0, w])), compute_uv=False)[0]
        assert value / float(cell_shrink(np.array([w]))[0]) >= 2.0
        assert value / math.cos(w / 4) < 2.0  # a looser factor is false here
    cert = sb.certify(kernel, "zeros", input_size=None, rtol=1e-6)
    assert cert.lower <= 2.0 <= cert.upper and cert.converged


@settings(max_examples=15, deadline=None)
@given(hnp.arrays(np.float64, (2, 3, 3, 3), elements=st.floats(-2, 2, width=64)))
@example(np.ones((2, 3, 3, 3)))
def test_every_size_upper_bounds_large_sizes(kernel):
    cert = sb.certify(kernel, "zeros", input_size=None, rtol=1e-4)
    for n in (8, 16):
        assert exact_norm(kernel, sb.ConvSpec("zeros", "same", (n, n))) <= cert.upper
    cert_c = sb.certify(kernel, "circular", input_size=None, rtol=1e-4)
    for n in (7, 12):
        assert exact_norm(kernel, sb.ConvSpec("circular", "same", (n, n))) <= cert_c.upper
    assert cert.verify() and cert_c.verify()


@pytest.mark.parametrize("dilation", [1, 2])
def test_flat_symbol_converges(dilation):
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((6, 6, 3, 3)) / 9
    cert = sb.certify(kernel, "zeros", input_size=None, dilation=dilation, rtol=1e-4)
    assert cert.converged and cert.rel_gap <= 1e-4
    assert exact_norm(kernel, sb.ConvSpec("zeros", "same", (12, 12), dilation=dilation)) <= (
        cert.upper
    )
