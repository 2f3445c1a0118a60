"""Fantastic Four (Singla & Feizi, ICLR 2021): properties FF-1..FF-4 and FF-N1 of
research/layers.md §3.D, against dense float64 operators."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, example, given
from hypothesis import strategies as st

from specbound import ConvSpec
from specbound.bounds import compute, get_method
from specbound.operators import ConvLayer
from specbound.testing import ROUNDING_RTOL, dense_norm


def reshaping_norms(kernel: np.ndarray) -> dict[str, float]:
    """sqrt(kh kw) ||X|| for the four matrices, built entry by entry from their definitions
    (layers.md §3.A): R[(o,a),(i,b)], S[(o,b),(i,a)], T[o,(i,a,b)], U[i,(o,a,b)]."""
    co, ci, kh, kw = kernel.shape
    r, s = np.zeros((co * kh, ci * kw)), np.zeros((co * kw, ci * kh))
    t, u = np.zeros((co, ci * kh * kw)), np.zeros((ci, co * kh * kw))
    for o in range(co):
        for i in range(ci):
            for a in range(kh):
                for b in range(kw):
                    v = kernel[o, i, a, b]
                    r[o * kh + a, i * kw + b] = v
                    s[o * kw + b, i * kh + a] = v
                    t[o, (i * kh + a) * kw + b] = v
                    u[i, (o * kh + a) * kw + b] = v
    root = math.sqrt(kh * kw)
    return {name: root * np.linalg.norm(m, 2) for name, m in zip("RSTU", (r, s, t, u), strict=True)}


@st.composite
def ff_layers(draw):
    g = draw(st.sampled_from([1, 2]))
    c_out, c_in = g * draw(st.integers(1, 2)), g * draw(st.integers(1, 2))
    shape = (c_out, c_in // g, draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["gauss", "rank1", "nonneg", "constant"]))
    kernel = rng.standard_normal(shape)
    if kind == "rank1":
        kernel = np.einsum("o,c,a,b->ocab", *(rng.standard_normal(n) for n in shape))
    elif kind == "nonneg":
        kernel = np.abs(kernel)
    elif kind == "constant":
        kernel = np.ones(shape)
    padding = draw(st.sampled_from(["zeros", "circular"]))
    pads = ["same", "valid", (0, 1, 1, 0)] + (["full", (4, 0, 5, 3)] if padding == "zeros" else [])
    spec = ConvSpec(
        padding=padding,
        pad=draw(st.sampled_from(pads)),
        input_size=(draw(st.integers(1, 5)), draw(st.integers(1, 5))),
        stride=draw(st.sampled_from([1, 2, (2, 1)])),
        dilation=draw(st.sampled_from([1, 2])),
        groups=g,
    )
    try:
        get_method("fantastic_four").validate(kernel, spec)
    except ValueError:
        assume(False)
    return kernel * draw(st.sampled_from([1.0, 1e-150, 1e150])), spec


@given(case=ff_layers())
@example(case=(np.zeros((1, 1, 3, 3)), ConvSpec(input_size=3)))
@example(case=(np.ones((2, 1, 5, 5)), ConvSpec("circular", input_size=(2, 3), groups=2)))
def test_ff1_each_reshaping_bounds_the_layer(case):
    kernel, spec = case
    b = compute("fantastic_four", kernel, spec)
    assert b.kind == "upper" and math.isfinite(b.value)
    exact = dense_norm(kernel, spec)
    assert b.value * (1 + ROUNDING_RTOL) >= exact
    g = spec.groups
    per_group = [reshaping_norms(blk) for blk in np.split(kernel, g, axis=0)]
    for name in "RSTU":
        reference = max(p[name] for p in per_group)
        assert abs(b.details["reshapings"][name] - reference) <= 1e-12 * reference + 1e-300
        assert reference * (1 + ROUNDING_RTOL) >= exact  # each reshaping alone is a bound
    expected = max(min(p.values()) for p in per_group)
    assert abs(b.value - expected) <= 1e-12 * expected + 1e-300


@pytest.mark.parametrize("padding", ["zeros", "circular"])
def test_ff2_one_by_one_kernels_are_exact(padding):
    kernel = np.random.default_rng(0).standard_normal((3, 4, 1, 1))
    spec = ConvSpec(padding, input_size=(3, 2))
    w = np.linalg.norm(kernel[:, :, 0, 0], 2)
    assert compute("fantastic_four", kernel, spec).value == pytest.approx(w, rel=1e-13)
    assert dense_norm(kernel, spec) == pytest.approx(w, rel=1e-13)


def test_ff3_constant_kernels_equal_the_circular_norm():
    # K_hat(0) = kh kw ones(c_out, c_in): the circular norm is kh kw sqrt(c_out c_in).
    kernel = np.ones((2, 3, 3, 2))
    value = compute("fantastic_four", kernel, ConvSpec("circular", input_size=None)).value
    expected = 3 * 2 * math.sqrt(2 * 3)
    assert value == pytest.approx(expected, rel=1e-14)
    assert dense_norm(kernel, ConvSpec("circular", input_size=(4, 5))) == pytest.approx(
        expected, rel=1e-13
    )
    assert dense_norm(kernel, ConvSpec("zeros", input_size=(4, 5))) < value * (1 - 1e-3)


def test_ff4_scale_equivariance_and_adjoint_invariance():
    kernel = np.random.default_rng(1).standard_normal((3, 2, 3, 2))
    every = ConvSpec(input_size=None)
    base = compute("fantastic_four", kernel, every).value
    for alpha in (-2.5, 1e-100, 3e120):
        scaled = compute("fantastic_four", alpha * kernel, every).value
        assert abs(scaled - abs(alpha) * base) <= 1e-13 * abs(alpha) * base
    adjoint = np.flip(kernel.transpose(1, 0, 2, 3), axis=(2, 3)).copy()
    assert compute("fantastic_four", adjoint, every).value == pytest.approx(base, rel=1e-13)


# Found by a small random search: the formula fails where padding repeats edge pixels.
FF_N1_REFLECT = np.array([[[[1.69, 0.13, 2.46], [1.52, 0.58, 0.32], [1.75, 0.22, 1.86]]]])
FF_N1_REPLICATE = np.array([[[[2.42, 0.0, 0.08], [0.03, 1.17, 1.08], [0.23, 0.59, 1.61]]]])


@pytest.mark.parametrize(
    ("kernel", "padding", "n"), [(FF_N1_REFLECT, "reflect", 3), (FF_N1_REPLICATE, "replicate", 2)]
)
def test_ffn1_formula_fails_for_reflect_and_replicate_and_is_refused(kernel, padding, n):
    formula = min(reshaping_norms(kernel).values())
    spec = ConvSpec(padding, input_size=n)
    assert dense_norm(kernel, spec) > formula * 1.05
    with pytest.raises(ValueError, match="padding"):
        compute("fantastic_four", kernel, spec)


def test_circular_pads_beyond_the_extent_are_refused_and_would_fail():
    # 1x1 input, all-ones 3x3 kernel, circular pad "full": 9 outputs all equal to 9x, norm 27,
    # while the formula gives 3 * ||ones(9)|| = 9.
    kernel = np.ones((1, 1, 3, 3))
    spec = ConvSpec("circular", pad="full", input_size=1)
    assert dense_norm(kernel, spec) == pytest.approx(27.0, rel=1e-14)
    assert min(reshaping_norms(kernel).values()) == pytest.approx(9.0, rel=1e-14)
    with pytest.raises(ValueError, match="pad"):
        compute("fantastic_four", kernel, spec)


def test_groups_take_the_max_not_the_product():
    # ecosystem.md P1: per-group norms 0.5 and 0.4; the layer norm is 0.5, the product 0.2.
    kernel = np.zeros((2, 1, 1, 1))
    kernel[:, 0, 0, 0] = [0.5, 0.4]
    spec = ConvSpec(input_size=(3, 3), groups=2)
    assert compute("fantastic_four", kernel, spec).value == pytest.approx(0.5, rel=1e-14)
    assert dense_norm(kernel, spec) == pytest.approx(0.5, rel=1e-14)
    rng = np.random.default_rng(2)
    kernel = rng.standard_normal((4, 2, 3, 3))
    spec = ConvSpec(input_size=(4, 4), groups=2)
    layer = ConvLayer(kernel, spec)
    expanded = compute("fantastic_four", layer.dense_channel_taps(), ConvSpec(input_size=(4, 4)))
    grouped = compute("fantastic_four", kernel, spec)
    assert dense_norm(kernel, spec) <= grouped.value * (1 + ROUNDING_RTOL)
    assert grouped.value <= expanded.value * (1 + ROUNDING_RTOL)


def test_exact_norms_not_fifty_power_iterations():
    # gram.md §6 item 9: the reference code takes each reshaping norm from 50 power iterations,
    # which under-estimates. On a 1x1 layer with close top singular values the bound is tight,
    # so 50 iterations land strictly below the conv norm; the exact norms do not.
    w = np.diag([1.0, 0.995])
    kernel = w.reshape(2, 2, 1, 1)
    spec = ConvSpec(input_size=(2, 2))
    exact = dense_norm(kernel, spec)
    x = np.random.default_rng(0).standard_normal(2)
    for _ in range(50):
        x = w.T @ (w @ x)
        x /= np.linalg.norm(x)
    power_estimate = np.linalg.norm(w @ x)
    assert power_estimate < exact * (1 - 1e-6)
    b = compute("fantastic_four", kernel, spec)
    assert b.value * (1 + ROUNDING_RTOL) >= exact
    assert b.value == pytest.approx(exact, rel=1e-13)


def test_gradcheck():
    m = get_method("fantastic_four")
    kernel = np.random.default_rng(3).standard_normal((4, 2, 3, 2))
    layer = m.validate(kernel, ConvSpec(input_size=None, groups=2))
    k = torch.tensor(kernel, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: m.torch_func(x, layer), (k,))
