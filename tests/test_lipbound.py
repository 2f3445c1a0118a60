"""LipBound (Araujo et al., AAAI 2021): a sampled symbol times a proved correction factor,
against dense operators; regressions for the published code (ecosystem.md P7, gram.md §6.10)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, example, given
from hypothesis import strategies as st

from specbound import ConvSpec
from specbound.bounds import compute, get_method
from specbound.bounds.lipbound import frobenius_grid_max
from specbound.bounds.sedghi import symbol_grid_max
from specbound.operators import ConvLayer, conv_matrix
from specbound.testing import ROUNDING_RTOL, drawn_kernel, kernels, valid_geometry

EVERY = ConvSpec(input_size=None)


def dense_norm(kernel, spec) -> float:
    return float(np.linalg.norm(conv_matrix(kernel, spec), 2))


@st.composite
def layers(draw):
    g = draw(st.sampled_from([1, 2]))
    c_out, c_in = g * draw(st.integers(1, 2)), g * draw(st.integers(1, 2))
    shape = (c_out, c_in // g, draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    kernel = drawn_kernel(draw, draw(st.sampled_from(["gaussian", "nonnegative"])), shape)
    padding = draw(st.sampled_from(["zeros", "circular"]))
    pads = ["same", "valid"] + (["full", (0, 3, 2, 2)] if padding == "zeros" else [])
    spec = ConvSpec(
        padding=padding,
        pad=draw(st.sampled_from(pads)),
        input_size=(draw(st.integers(1, 6)), draw(st.integers(1, 6))),
        stride=draw(st.sampled_from([1, 2])),
        dilation=draw(st.sampled_from([1, (2, 1)])),
        groups=g,
    )
    assume(valid_geometry(shape, spec))
    ConvLayer(kernel, spec, need_size=True)
    return kernel * draw(st.sampled_from([1.0, 1e-150, 1e150])), spec


@given(
    case=layers(),
    norm=st.sampled_from(["frobenius", "spectral"]),
    factor=st.sampled_from(["araujo", "secant"]),
    extra=st.sampled_from([None, 0, 1, 3]),
)
@example(
    case=(np.zeros((1, 1, 3, 3)), ConvSpec(input_size=2)), norm="spectral", factor="araujo", extra=0
)
@example(
    case=(np.ones((1, 1, 1, 1)), ConvSpec(input_size=1)), norm="frobenius", factor="araujo", extra=0
)
def test_lipbound_bounds_the_layer(case, norm, factor, extra):
    kernel, spec = case
    layer = ConvLayer(kernel, spec, need_size=True)
    degree = max(layer.extent) - 1
    smallest = max(1, 2 * degree) if factor == "araujo" else degree + 1
    n_samples = None if extra is None else smallest + extra
    b = compute("lipbound", kernel, spec, n_samples=n_samples, norm=norm, factor=factor)
    assert b.kind == "upper" and math.isfinite(b.value)
    assert b.value * (1 + ROUNDING_RTOL) >= dense_norm(kernel, spec)
    every = compute(
        "lipbound",
        kernel,
        spec.replace(input_size=None),
        n_samples=n_samples,
        norm=norm,
        factor=factor,
    )
    assert every.value == b.value


@given(case=layers(), n_s=st.integers(1, 9))
def test_frobenius_autocorrelation_route_equals_the_frequency_matrices(case, n_s):
    # ||K_hat(w)||_F^2 = sum_delta R[delta] e^{-i w delta} (Parseval) against the per-frequency
    # matrices of the Sedghi route, on the same n_s x (n_s + 1) grid.
    kernel, spec = case
    layer = ConvLayer(kernel, spec)
    k = torch.tensor(kernel)
    grid = (n_s, n_s + 1)
    direct = float(
        symbol_grid_max(k, "frobenius", size=grid, dilation=spec.dilation, groups=spec.groups)[0]
    )
    fast = float(frobenius_grid_max(k, layer, grid))
    assert abs(fast - direct) <= 1e-12 * direct + 1e-300


def test_spectral_is_below_frobenius_and_secant_below_araujo():
    kernel = np.random.default_rng(0).standard_normal((3, 4, 3, 3))
    values = {
        (norm, factor): compute("lipbound", kernel, EVERY, n_samples=9, norm=norm, factor=factor)
        for norm in ("frobenius", "spectral")
        for factor in ("araujo", "secant")
    }
    for factor in ("araujo", "secant"):
        assert values["spectral", factor].value <= values["frobenius", factor].value
    for norm in ("frobenius", "spectral"):
        assert values[norm, "secant"].value <= values[norm, "araujo"].value
    # square kernel, equal samples: the per-axis Araujo factor is the paper's 1/(1-(k-1)/n_s)
    assert values["spectral", "araujo"].details["factor"] == pytest.approx(1 / (1 - 2 / 9))


def test_secant_factor_is_sharp_on_a_two_tap_kernel():
    # K = (1, -1): |K_hat(x)| = 2|sin(x/2)|, S = 2 at x = pi. On an odd grid the nearest
    # sample is pi/n_s away: grid maximum 2 cos(pi/(2 n_s)); the secant factor restores 2.
    kernel = np.array([[[[1.0, -1.0]]]])
    n_s = 7
    b = compute("lipbound", kernel, EVERY, n_samples=n_s, norm="spectral", factor="secant")
    assert b.details["grid_max"] == pytest.approx(2 * math.cos(math.pi / (2 * n_s)), rel=1e-14)
    assert b.value == pytest.approx(2.0, rel=1e-14)
    assert b.value * (1 + ROUNDING_RTOL) >= dense_norm(
        kernel, ConvSpec("circular", input_size=(3, 8))
    )


def test_p7_the_correction_factor_is_applied():
    # ecosystem.md P7: the default torch path of the reference code returns the grid maximum
    # without the correction. For K = (1, -1) on 5 samples that is 2 sin(2 pi/5) < 2 = ||A||
    # of the circular layer on even widths: not a bound.
    kernel = np.array([[[[1.0, -1.0]]]])
    exact = dense_norm(kernel, ConvSpec("circular", input_size=(2, 8)))
    assert exact == pytest.approx(2.0, rel=1e-14)
    b = compute("lipbound", kernel, EVERY, n_samples=5)
    assert b.details["grid_max"] == pytest.approx(2 * math.sin(2 * math.pi / 5), rel=1e-14)
    assert b.details["grid_max"] < exact
    assert b.value * (1 + ROUNDING_RTOL) >= exact


def test_linspace_endpoints_regression_uses_n_distinct_samples():
    # gram.md §6 item 10: np.linspace(0, 2 pi, n_s) repeats 0 = 2 pi. With n_s = 4 the distinct
    # grid {0, pi/2, pi, 3pi/2} holds the peak pi of |1 - e^{-ix}|; the linspace grid
    # {0, 2pi/3, 4pi/3} does not (maximum sqrt(3)).
    kernel = np.array([[[[1.0, -1.0]]]])
    b = compute("lipbound", kernel, EVERY, n_samples=4, norm="spectral")
    assert b.details["grid_max"] == pytest.approx(2.0, rel=1e-14)
    published = np.linspace(0, 2 * np.pi, 4)
    assert np.abs(1 - np.exp(-1j * published)).max() == pytest.approx(math.sqrt(3), rel=1e-12)


@given(data=st.data(), k=st.integers(2, 4), extra=st.integers(0, 2))
def test_correction_covers_the_symbol_supremum(data, k, extra):
    # Ground truth: sigma_circ(M) <= S(K) for every M; the sampled bound must dominate it,
    # on the smallest grids where each factor is proved (n_s = 2D Araujo, D + 1 secant).
    kernel = data.draw(kernels((2, 2, k, k), ("gaussian",)))
    d = k - 1
    truth = max(dense_norm(kernel, ConvSpec("circular", input_size=m)) for m in (7, 8, 9))
    for factor, n_s in (("araujo", 2 * d + extra), ("secant", d + 1 + extra)):
        b = compute("lipbound", kernel, EVERY, n_samples=n_s, norm="spectral", factor=factor)
        assert b.value * (1 + ROUNDING_RTOL) >= truth


def test_rectangular_and_dilated_kernels_use_the_per_axis_degree():
    kernel = np.random.default_rng(1).standard_normal((2, 3, 1, 3))
    spec = ConvSpec(input_size=None, dilation=(3, 2))
    b = compute("lipbound", kernel, spec, n_samples=(2, 8))  # D = (0, 4): no factor on axis 0
    assert b.details["factor"] == pytest.approx(1 / math.sqrt(1 - 4 / 8), rel=1e-15)
    for n in ((1, 9), (4, 5)):
        assert b.value * (1 + ROUNDING_RTOL) >= dense_norm(kernel, spec.replace(input_size=n))
    assert compute("lipbound", kernel, spec).details["n_samples"] == (50, 50)


@pytest.mark.parametrize(
    ("spec", "options", "word"),
    [
        (ConvSpec("reflect"), {}, "padding"),
        (ConvSpec("replicate", input_size=4), {}, "padding"),
        (ConvSpec("circular", pad="full"), {}, "pad"),
        (EVERY, {"n_samples": 3}, "n_samples"),  # Araujo needs n_s >= 2 D = 4
        (EVERY, {"n_samples": 2, "factor": "secant"}, "n_samples"),  # secant needs n_s > 2
        (EVERY, {"norm": "nuclear"}, "norm"),
        (EVERY, {"factor": "none"}, "factor"),
    ],
)
def test_refusals(spec, options, word):
    with pytest.raises(ValueError, match=word):
        compute("lipbound", np.ones((1, 1, 3, 3)), spec, **options)


@pytest.mark.parametrize("norm", ["frobenius", "spectral"])
def test_gradcheck(norm):
    m = get_method("lipbound")
    kernel = np.random.default_rng(2).standard_normal((4, 2, 3, 2))
    layer = m.validate(kernel, ConvSpec(input_size=None, groups=2))
    k = torch.tensor(kernel, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: m.torch_func(x, layer, n_samples=9, norm=norm), (k,))
