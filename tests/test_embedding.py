"""Exact circular norms (``exact``, ``sedghi``) and the bounds built on them
(``circular_embedding``: gap relation G1; ``bernstein_grid``: G5), against dense operators."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, example, given
from hypothesis import strategies as st

from specbound import ConvSpec
from specbound.bounds import compute, get_method
from specbound.bounds.embedding import bernstein_factor
from specbound.operators import ConvLayer
from specbound.operators.circulant import embedding_size_axis
from specbound.rigorous._routes import embedding_layers
from specbound.testing import (
    ROUNDING_RTOL,
    dense_norm,
    drawn_kernel,
    valid_geometry,
    within_symbol_domain,
)


def circ(kernel, n, dilation=1, groups=1) -> float:
    """sigma_circ(N): dense norm of the stride-1 circular layer on an N_h x N_w torus."""
    spec = ConvSpec(padding="circular", input_size=n, dilation=dilation, groups=groups)
    return dense_norm(kernel, spec)


@st.composite
def kernels(draw, max_c=2, max_k=3):
    g = draw(st.sampled_from([1, 2]))
    c_out, c_in = g * draw(st.integers(1, max_c)), g * draw(st.integers(1, max_c))
    shape = (c_out, c_in // g, draw(st.integers(1, max_k)), draw(st.integers(1, max_k)))
    # vanishing_frequency: the symbol vanishes at frequency 0
    family = draw(st.sampled_from(["gaussian", "rank_one", "nonnegative", "vanishing_frequency"]))
    k = drawn_kernel(draw, family, shape)
    return k * draw(st.sampled_from([1.0, 1e-150, 1e150])), g


# ----------------------------------------------------------------------------- exact, sedghi
@given(
    case=kernels(),
    n=st.tuples(st.integers(1, 5), st.integers(1, 5)),
    stride=st.sampled_from([1, 2, (2, 1)]),
    dilation=st.sampled_from([1, 2]),
    split=st.booleans(),
)
@example(case=(np.zeros((1, 1, 3, 3)), 1), n=(3, 3), stride=1, dilation=1, split=False)
@example(case=(np.ones((2, 2, 5, 5)), 1), n=(2, 3), stride=1, dilation=1, split=False)  # n < k
@example(  # taps that cancel to one ulp when wrapped: both routes are rounding noise there
    case=(np.array([[[[-2.380169760000001e-151, 2.38016976e-151]]]]), 1),
    n=(1, 1),
    stride=1,
    dilation=1,
    split=False,
)
def test_sedghi_and_exact_equal_the_dense_norm(case, n, stride, dilation, split):
    kernel, g = case
    kh, kw = kernel.shape[2:]
    th, tw = dilation * (kh - 1), dilation * (kw - 1)
    pad = (tw, 0, 0, th) if split else "same"  # any split of d*(k-1) is a circular shift
    s = (stride, stride) if isinstance(stride, int) else stride
    n = (n[0] * s[0], n[1] * s[1])
    spec = ConvSpec(
        padding="circular", pad=pad, input_size=n, stride=stride, dilation=dilation, groups=g
    )
    truth = dense_norm(kernel, spec)
    for method in ("sedghi", "exact"):
        b = compute(method, kernel, spec)
        assert b.kind == "exact"
        assert math.isfinite(b.value)
        # the frequency routes carry absolute rounding ~u sum|K| (cancellation), the stated
        # CANCELLATION-type allowance; otherwise relative 1e-12
        assert abs(b.value - truth) <= 1e-12 * truth + 1e-14 * np.abs(kernel).sum()
    assert compute("exact", kernel, spec).details["route"] == "circulant"


def test_exact_names_the_dense_route_for_zero_padding():
    kernel = np.random.default_rng(0).standard_normal((2, 3, 3, 3))
    spec = ConvSpec(padding="replicate", input_size=(4, 5), stride=2)
    b = compute("exact", kernel, spec)
    assert b.details["route"] == "dense"
    assert abs(b.value - dense_norm(kernel, spec)) <= 1e-12 * b.value


def test_sedghi_grouped_norm_is_the_max_over_groups_not_the_product():
    # ecosystem.md P1: a library multiplied the group norms (0.011 vs 0.388 exact).
    kernel = np.zeros((2, 1, 1, 1))
    kernel[:, 0, 0, 0] = [0.5, 0.4]
    spec = ConvSpec(padding="circular", input_size=(3, 3), groups=2)
    assert dense_norm(kernel, spec) == pytest.approx(0.5, rel=1e-14)
    assert compute("sedghi", kernel, spec).value == pytest.approx(0.5, rel=1e-14)
    assert 0.5 * 0.4 < dense_norm(kernel, spec)


@pytest.mark.parametrize(
    ("spec", "word"),
    [
        (ConvSpec(padding="zeros", input_size=4), "padding"),
        (ConvSpec(padding="circular", input_size=5, stride=2), "stride"),
        (ConvSpec(padding="circular", pad="valid", input_size=4), "pad"),
        (ConvSpec(padding="circular", input_size=None), "input_size"),
    ],
)
def test_sedghi_refuses_non_circulant_layers(spec, word):
    with pytest.raises(ValueError, match=word):
        compute("sedghi", np.ones((1, 1, 3, 3)), spec)


# ----------------------------------------------------------------------------- G1 embedding
@st.composite
def zero_padded(draw):
    kernel, g = draw(kernels())
    pads = draw(
        st.one_of(
            st.sampled_from(["same", "valid", "full"]),
            st.tuples(*(st.integers(0, 5) for _ in range(4))),  # also pads > d(k-1)
        )
    )
    spec = ConvSpec(
        padding="zeros",
        pad=pads,
        input_size=(draw(st.integers(1, 5)), draw(st.integers(1, 5))),
        stride=draw(st.sampled_from([1, 2, (1, 3)])),
        dilation=draw(st.sampled_from([1, 2])),
        groups=g,
    )
    assume(valid_geometry(kernel.shape, spec))
    ConvLayer(kernel, spec, need_size=True)
    return kernel, spec


@given(case=zero_padded())
@example(case=(np.ones((1, 1, 3, 3)), ConvSpec(pad=(4, 0, 5, 5), input_size=(2, 2))))
def test_circular_embedding_is_an_upper_bound(case):
    kernel, spec = case
    b = compute("circular_embedding", kernel, spec)
    assert b.kind == "upper"
    assert b.value * (1 + ROUNDING_RTOL) >= dense_norm(kernel, spec)
    layer = ConvLayer(kernel, spec, need_size=True)
    (n_h, n_w), (dh, dw) = layer.input_size, (layer.extent[0] - 1, layer.extent[1] - 1)
    (top, bottom), (left, right) = layer.pads
    n0 = (n_h + max(min(top, dh), min(bottom, dh)), n_w + max(min(left, dw), min(right, dw)))
    used, stride = tuple(b.details["N"]), layer.spec.stride
    assert used[0] >= n0[0] and used[1] >= n0[1]
    assert used[0] % stride[0] == 0 and used[1] % stride[1] == 0


@given(case=zero_padded())
@example(case=(np.ones((1, 1, 3, 3)), ConvSpec(pad=(4, 0, 5, 5), input_size=(2, 2))))
@example(case=(np.ones((1, 1, 1, 2)), ConvSpec(pad=(3, 1, 0, 2), input_size=(2, 3), stride=2)))
def test_the_certified_route_embeds_with_the_one_lemma(case):
    """rigorous._routes.embedding_layers (the certified route) uses the same lemma as the bound
    (operators.circulant.embedding_size_axis), pads above d(k-1) included: every torus it
    returns bounds the zero-padded layer."""
    kernel, spec = case
    layer = ConvLayer(kernel, spec, need_size=True)
    (eh, ew), (sh, sw) = layer.extent, layer.spec.stride
    (top, bottom), (left, right) = layer.pads
    first = (
        embedding_size_axis(layer.input_size[0], top, bottom, sh, eh - 1),
        embedding_size_axis(layer.input_size[1], left, right, sw, ew - 1),
    )
    embeddings = embedding_layers(layer)
    assert embeddings and embeddings[0].input_size == first
    zero = dense_norm(kernel, spec)
    for emb in embeddings:
        assert emb.is_circulant
        assert zero <= dense_norm(kernel, emb.spec) * (1 + ROUNDING_RTOL)


def test_embedding_size_is_sharp_and_refuses_bad_input():
    # one stride smaller than the lemma's size is not enough (G1_SAME: n = 3, P = 1, N = 3)
    assert embedding_size_axis(3, 1, 1, 1, 2) == 4
    layer = ConvLayer(G1_SAME, ConvSpec(padding="zeros", pad="same", input_size=3), need_size=True)
    (emb, *_) = embedding_layers(layer)
    small = emb.spec.replace(input_size=(3, 3))
    assert dense_norm(G1_SAME, layer.spec) > dense_norm(G1_SAME, small) * (1 + 1e-3)
    assert embedding_size_axis(5, 9, 0, 2, 2) == 8  # pads above D count as D; multiple of s
    with pytest.raises(ValueError, match="stride"):
        embedding_size_axis(3, 1, 1, 0, 2)
    with pytest.raises(ValueError, match="lo"):
        embedding_size_axis(3, -1, 1, 1, 2)


@given(case=kernels(), n=st.integers(1, 6), pad=st.integers(0, 2), extra=st.integers(0, 3))
def test_g1_zero_padded_norm_is_below_every_embedding_torus(case, n, pad, extra):
    # Ground truth only (gram.md G1): sigma_zero^(P)(n) <= sigma_circ(N) for N >= n + P, P <= k-1.
    kernel, g = case
    kh, kw = kernel.shape[2:]
    ph, pw = min(pad, kh - 1), min(pad, kw - 1)
    zero = ConvSpec(padding="zeros", pad=(ph, pw), input_size=n, groups=g)
    assume(valid_geometry(kernel.shape, zero))
    ConvLayer(kernel, zero, need_size=True)
    torus = (n + ph + extra, n + pw + extra)
    assert dense_norm(kernel, zero) <= circ(kernel, torus, groups=g) * (1 + ROUNDING_RTOL)


# Found by a small random search (k=3, "same", n=3): N = n + P - 1 = 3 is not enough.
G1_SAME = np.array([[[[-0.7, 0.47, -1.63], [0.27, -1.07, -0.21], [-0.18, 1.43, -0.73]]]])
# "valid" (P=0) on n=4 against N=3, and "full" (P=2) on n=4 against N=5.
G1_VALID = np.array([[[[-0.03, 0.69, -0.27], [0.71, -0.3, 0.46], [-0.44, 0.17, -0.63]]]])
G1_FULL = np.array([[[[1.17, -0.84, 1.08], [-0.7, -0.13, -1.28], [1.72, -0.09, 1.26]]]])


@pytest.mark.parametrize(
    ("kernel", "pad", "n", "torus"),
    [(G1_SAME, "same", 3, 3), (G1_VALID, "valid", 4, 3), (G1_FULL, "full", 4, 5)],
)
def test_g1_is_sharp(kernel, pad, n, torus):
    zero = dense_norm(kernel, ConvSpec(padding="zeros", pad=pad, input_size=n))
    assert zero > circ(kernel, torus) * (1 + 1e-3)  # N = n + P - 1 fails, with margin
    assert zero <= circ(kernel, torus + 1) * (1 + ROUNDING_RTOL)  # N = n + P holds
    with pytest.raises(ValueError, match="sizes"):
        compute(
            "circular_embedding",
            kernel,
            ConvSpec(padding="zeros", pad=pad, input_size=n),
            sizes=[(torus, torus)],
        )


def test_circular_embedding_refuses_other_paddings_and_unknown_sizes():
    with pytest.raises(ValueError, match="padding"):
        compute("circular_embedding", np.ones((1, 1, 3, 3)), ConvSpec("circular", input_size=4))
    with pytest.raises(ValueError, match="input_size"):
        compute("circular_embedding", np.ones((1, 1, 3, 3)), ConvSpec(input_size=None))
    with pytest.raises(ValueError, match="extra"):
        compute("circular_embedding", np.ones((1, 1, 3, 3)), ConvSpec(input_size=4), extra=-1)


# ----------------------------------------------------------------------------- G5 Bernstein
@given(case=kernels(max_k=3), big=st.integers(1, 12), other=st.integers(1, 12))
def test_g5_circular_norms_approach_the_symbol(case, big, other):
    # Ground truth only: sigma_circ(N) >= sigma_circ(M) sqrt(1 - (pi^2/2)(D_h/N + D_w/N)^2)
    # for any M, since sigma_circ(M) <= S(K).
    kernel, g = case
    kh, kw = kernel.shape[2:]
    n = 2 * max(kh, kw) + big
    t = (kh - 1) / n + (kw - 1) / n
    slack = 1 - 0.5 * math.pi**2 * t**2
    assume(slack > 0)
    lhs = circ(kernel, (n, n), groups=g)
    assert lhs * (1 + ROUNDING_RTOL) >= circ(kernel, (other, other + 1), groups=g) * math.sqrt(
        slack
    )


@st.composite
def symbol_bounded_layers(draw):
    kernel, g = draw(kernels())
    padding = draw(st.sampled_from(["zeros", "circular"]))
    pads = ["same", "valid", (1, 0, 0, 0)] + (["full", (3, 0, 4, 4)] if padding == "zeros" else [])
    pad = draw(st.sampled_from(pads))
    spec = ConvSpec(
        padding=padding,
        pad=pad,
        input_size=(draw(st.integers(1, 6)), draw(st.integers(1, 6))),
        stride=draw(st.sampled_from([1, 2])),
        dilation=draw(st.sampled_from([1, 2])),
        groups=g,
    )
    assume(valid_geometry(kernel.shape, spec) and within_symbol_domain(kernel.shape, spec))
    layer = ConvLayer(kernel, spec, need_size=True)
    get_method("bernstein_grid").validate(kernel, spec.replace(input_size=None))
    return kernel, spec, layer


@given(case=symbol_bounded_layers(), n_grid=st.sampled_from([None, 40]))
def test_bernstein_grid_bounds_every_size(case, n_grid):
    kernel, spec, _ = case
    every = spec.replace(input_size=None)
    b = compute("bernstein_grid", kernel, every, N=n_grid)
    assert b.kind == "upper"
    assert b.value * (1 + ROUNDING_RTOL) >= dense_norm(kernel, spec)
    if n_grid is None:
        assert b.details["factor"] <= 1.01


def test_bernstein_factor_matches_the_square_formula_and_refuses_coarse_grids():
    # D_h = D_w = D, N_h = N_w = N: 1/sqrt(1 - 2 pi^2 D^2 / N^2) (gram.md G5).
    assert bernstein_factor((2, 2), (32, 32)) == pytest.approx(
        1 / math.sqrt(1 - 2 * math.pi**2 * 4 / 32**2), rel=1e-15
    )
    with pytest.raises(ValueError, match="N"):
        compute("bernstein_grid", np.ones((1, 1, 3, 3)), ConvSpec(input_size=None), N=8)
    with pytest.raises(ValueError, match="pad"):
        compute("bernstein_grid", np.ones((1, 1, 3, 3)), ConvSpec("circular", pad="full"))
    with pytest.raises(ValueError, match="padding"):
        compute("bernstein_grid", np.ones((1, 1, 3, 3)), ConvSpec("reflect"))


def test_bernstein_tight_case_single_channel_nonnegative():
    # S(K) = sum(K) (frequency 0 is on every grid): the value is sum(K) times the factor.
    kernel = np.abs(np.random.default_rng(4).standard_normal((1, 1, 3, 2)))
    b = compute("bernstein_grid", kernel, ConvSpec(input_size=None))
    assert b.details["sigma_circ"] == pytest.approx(kernel.sum(), rel=1e-14)
    assert b.value == pytest.approx(kernel.sum() * b.details["factor"], rel=1e-14)
    spec = ConvSpec(padding="circular", input_size=(5, 7))
    assert b.value * (1 + ROUNDING_RTOL) >= dense_norm(kernel, spec)


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize(
    ("method", "spec", "options"),
    [
        ("sedghi", ConvSpec("circular", input_size=(6, 4), stride=2, groups=2), {}),
        ("circular_embedding", ConvSpec(input_size=(3, 4), dilation=2, groups=2), {}),
        ("bernstein_grid", ConvSpec(input_size=None, groups=2), {"N": 16}),
    ],
)
def test_torch_cores_pass_gradcheck(method, spec, options):
    m = get_method(method)
    kernel = np.random.default_rng(5).standard_normal((4, 2, 3, 2))
    layer = m.validate(kernel, spec)
    k = torch.tensor(kernel, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: m.torch_func(x, layer, **options), (k,))
    with torch.no_grad():
        value = float(m.torch_func(torch.tensor(kernel), layer, **options))
    assert value == pytest.approx(m(kernel, spec, **options).value, rel=1e-14)
