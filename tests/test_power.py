"""Power iteration and Lanczos: certified lower bounds with witnesses on the true operator, and
the probabilistic Lanczos upper bound (Kuczynski & Wozniakowski 1992)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st
from scipy.special import betainc

from specbound import ConvSpec
from specbound.bounds import compute
from specbound.bounds.power import (
    lanczos_epsilon,
    lanczos_failure_probability,
    lanczos_iteration,
    lanczos_steps,
)
from specbound.operators import ConvLayer, conv_matrix, exact_norm
from specbound.testing import ROUNDING_RTOL, drawn_kernel, valid_geometry

LOWER_METHODS = ("power", "lanczos")


@st.composite
def small_layers(draw):
    """A kernel and a spec with a small dense matrix, any padding mode, stride, dilation."""
    g = draw(st.sampled_from([1, 2]))
    c_out, c_in = g * draw(st.integers(1, 2)), g * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padding = draw(st.sampled_from(["zeros", "circular", "reflect", "replicate"]))
    pad = draw(st.sampled_from(["same", "valid", "full", (1, 0, 2, 1)]))
    spec_args = {
        "padding": padding,
        "pad": pad,
        "input_size": (draw(st.integers(1, 5)), draw(st.integers(1, 5))),
        "stride": draw(st.sampled_from([1, 2, (1, 2)])),
        "dilation": draw(st.sampled_from([1, 2])),
        "groups": g,
    }
    family = draw(st.sampled_from(["gaussian", "rank_one", "nonnegative", "zero"]))
    shape = (c_out, c_in // g, kh, kw)
    kernel = drawn_kernel(draw, family, shape)
    scale = draw(st.sampled_from([1.0, 1e-150, 1e150]))
    spec = ConvSpec(**spec_args)
    assume(valid_geometry(shape, spec))  # empty output or reflect pad >= input: not a layer
    ConvLayer(kernel, spec, need_size=True)
    return kernel * scale, spec


def assert_certified_lower(bound, kernel, spec):
    """value <= exact, witness of shape (c_in, H, W), unit norm, reproducing the value."""
    exact = exact_norm(kernel, spec)
    assert bound.kind == "lower"
    assert math.isfinite(bound.value) and bound.value >= 0.0
    assert bound.value * (1 - ROUNDING_RTOL) <= exact
    w = bound.witness
    layer = ConvLayer(kernel, spec, need_size=True)
    assert w.shape == (layer.c_in, *layer.input_size)
    assert abs(np.linalg.norm(w) - 1.0) <= 1e-12
    image = np.linalg.norm(conv_matrix(kernel, spec) @ w.ravel())
    assert bound.value * (1 - ROUNDING_RTOL) <= image
    assert image <= bound.value * (1 + 1e-9) + 1e-300  # the allowance is small
    return exact


@pytest.mark.parametrize("method", LOWER_METHODS)
@given(case=small_layers())
@example(case=(np.zeros((1, 1, 3, 3)), ConvSpec(input_size=(2, 2))))
@example(case=(np.ones((2, 1, 5, 5)), ConvSpec(input_size=(1, 1), groups=2)))  # n < k
@example(case=(1e150 * np.ones((1, 1, 3, 3)), ConvSpec(padding="circular", input_size=4)))
def test_lower_bound_is_certified_with_its_witness(method, case):
    kernel, spec = case
    bound = compute(method, kernel, spec, n_iter=60, seed=3)
    assert_certified_lower(bound, kernel, spec)


@given(case=small_layers())
def test_lanczos_reaches_the_exact_norm_when_the_krylov_space_is_full(case):
    kernel, spec = case
    layer = ConvLayer(kernel, spec, need_size=True)
    bound = compute("lanczos", kernel, spec, n_iter=min(layer.in_dim, layer.out_dim) + 1)
    exact = assert_certified_lower(bound, kernel, spec)
    assert bound.value >= exact * (1 - 1e-9)


def test_all_zero_kernel_gives_zero_not_nan():
    spec = ConvSpec(padding="reflect", input_size=(4, 3))
    for method in (*LOWER_METHODS, "lanczos_probabilistic"):
        bound = compute(method, np.zeros((2, 3, 3, 3)), spec, seed=0)
        assert bound.value == 0.0
        if bound.witness is not None:
            assert np.isfinite(bound.witness).all()


@pytest.mark.parametrize("scale", [1e-150, 1e150])
def test_extreme_scales_are_homogeneous(scale):
    kernel = np.random.default_rng(0).standard_normal((3, 2, 3, 3))
    spec = ConvSpec(padding="replicate", input_size=(5, 4), stride=2)
    base = compute("lanczos", kernel, spec).value
    scaled = compute("lanczos", kernel * scale, spec)
    assert math.isfinite(scaled.value)
    assert abs(scaled.value / scale - base) <= 1e-10 * base
    assert scaled.value * (1 - ROUNDING_RTOL) <= exact_norm(kernel * scale, spec)


def test_tight_single_channel_nonnegative_kernel_circular():
    # ||A|| = sum(K) at frequency 0, attained by the constant image: Lanczos finds it.
    kernel = np.abs(np.random.default_rng(1).standard_normal((1, 1, 3, 3)))
    spec = ConvSpec(padding="circular", input_size=(6, 6))
    bound = compute("lanczos", kernel, spec)
    assert bound.value * (1 - ROUNDING_RTOL) <= kernel.sum()
    assert bound.value >= kernel.sum() * (1 - 1e-9)


def test_power_iteration_below_the_norm_is_labelled_lower():
    # ecosystem.md P6: a power-type estimate is below the norm until it converges, so it must
    # never be reported as an upper bound. diag(1, 0.999) converges like 0.999^(2t).
    kernel = np.diag([1.0, 0.999]).reshape(2, 2, 1, 1)
    spec = ConvSpec(input_size=(1, 1))
    bound = compute("power", kernel, spec, n_iter=50, seed=0)
    assert bound.kind == "lower"
    assert not bound.details["converged"]
    assert bound.value < 1.0 * (1 - 1e-6)  # strictly below the exact norm 1


def test_true_same_padding_not_ryus_hard_coded_pad_one():
    # gram.md §6 item 8: ryu2019 hard-codes pad=(1,1,1,1), "same" only for k=3. For a 5x5
    # all-ones kernel on 3x3 inputs, pad 1 gives one output pixel summing all 9 inputs
    # (norm exactly 3); true "same" padding keeps 3x3 outputs and has a larger norm.
    kernel = np.ones((1, 1, 5, 5))
    same = ConvSpec(pad="same", input_size=(3, 3))
    pad_one = ConvSpec(pad=(1, 1, 1, 1), input_size=(3, 3))
    assert exact_norm(kernel, pad_one) == pytest.approx(3.0, rel=1e-14)
    bound = compute("power", kernel, same, seed=0)
    exact = assert_certified_lower(bound, kernel, same)
    assert bound.value >= exact * (1 - 1e-9)
    assert bound.value > 3.0 * 1.5


# ----------------------------------------------------------------------------- probabilistic
def test_failure_probability_is_monotone_and_vanishes_on_full_krylov_spaces():
    n = 500
    eps = np.linspace(0.001, 0.9, 40)
    for k in (1, 3, 10):
        probs = [lanczos_failure_probability(e, k, n) for e in eps]
        assert all(a >= b for a, b in itertools.pairwise(probs))
        assert all(0.0 <= p <= 1.0 for p in probs)
    assert lanczos_failure_probability(0.01, 7, 7) == 0.0
    assert lanczos_failure_probability(0.01, 9, 500) <= lanczos_failure_probability(0.01, 8, 500)


def test_epsilon_meets_delta():
    for n, delta, k in ((1000, 1e-3, 20), (10**6, 1e-6, 60), (50, 0.3, 2)):
        eps = lanczos_epsilon(delta, k, n)
        assert 0.0 < eps < 1.0
        assert lanczos_failure_probability(eps, k, n) <= delta
        assert lanczos_failure_probability(eps * (1 - 1e-6), k, n) > delta * (1 - 1e-3)
    k = lanczos_steps(1e-3, 10**5, 0.01)
    assert 1.0 / math.sqrt(1 - lanczos_epsilon(1e-3, k, 10**5)) <= 1.01
    assert 1.0 / math.sqrt(1 - lanczos_epsilon(1e-3, k - 1, 10**5)) > 1.01


def test_one_step_failure_probability_is_the_beta_tail_exactly():
    # k = 1, G = diag(1, 0, ..., 0): xi_1 = beta_1^2 and the failure event is exactly
    # {beta_1^2 < 1 - eps}, whose probability is I_{1-eps}(1/2, (n-1)/2): the bound is tight.
    n, eps, trials = 20, 0.9, 4000
    predicted = lanczos_failure_probability(eps, 1, n)
    assert predicted == pytest.approx(betainc(0.5, (n - 1) / 2, 1 - eps), rel=1e-12)
    diag = np.zeros(n)
    diag[0] = 1.0
    rng = np.random.default_rng(0)
    fails = 0
    for _ in range(trials):
        b = rng.standard_normal(n)
        krylov = lanczos_iteration(lambda x: diag * x, b, 1, None)
        fails += krylov.theta < 1 - eps
    sd = math.sqrt(predicted * (1 - predicted) / trials)
    assert abs(fails / trials - predicted) <= 5 * sd


def test_lanczos_failure_rate_stays_below_delta_on_a_hard_spectrum():
    # Eigenvalues at the Chebyshev extrema of [0, 1 - 2 eps] plus one at 1: few steps struggle.
    n, k, delta, trials = 200, 4, 0.2, 300
    eps = lanczos_epsilon(delta, k, n)
    spectrum = (1 - 2 * eps) * (1 + np.cos(np.pi * np.arange(n - 1) / (n - 2))) / 2
    diag = np.concatenate([[1.0], spectrum])
    rng = np.random.default_rng(1)
    fails = sum(
        lanczos_iteration(lambda x: diag * x, rng.standard_normal(n), k, None).theta < 1 - eps
        for _ in range(trials)
    )
    assert fails / trials <= delta / 2


def test_probabilistic_upper_bound_on_a_conv_layer_fails_rarely():
    kernel = np.random.default_rng(2).standard_normal((3, 2, 3, 3))
    spec = ConvSpec(padding="zeros", input_size=(6, 5), stride=(1, 2))
    exact = exact_norm(kernel, spec)
    delta, trials = 0.25, 60
    values = [
        compute("lanczos_probabilistic", kernel, spec, delta=delta, n_iter=3, seed=s)
        for s in range(trials)
    ]
    failures = sum(b.value < exact for b in values)
    assert failures / trials <= delta / 2
    b = values[0]
    assert b.kind == "estimate" and b.probability == 1 - delta
    assert b.details["bound_type"] == "probabilistic upper"
    assert b.details["lower"] * (1 - ROUNDING_RTOL) <= exact
    assert b.details["lower"] <= b.value


def test_probabilistic_default_steps_reach_the_target_factor():
    kernel = np.random.default_rng(3).standard_normal((2, 2, 3, 3))
    spec = ConvSpec(padding="circular", input_size=(6, 6))
    b = compute("lanczos_probabilistic", kernel, spec, delta=1e-3, seed=0)
    exact = exact_norm(kernel, spec)
    assert exact <= b.value <= exact * 1.01 * (1 + ROUNDING_RTOL)
    assert 1 / math.sqrt(1 - b.details["epsilon"]) <= 1.01


@pytest.mark.parametrize(
    ("method", "spec", "word"),
    [
        ("power", ConvSpec(input_size=None), "input_size"),
        ("lanczos", ConvSpec(input_size=None), "input_size"),
        ("lanczos_probabilistic", ConvSpec(input_size=None), "input_size"),
    ],
)
def test_refuses_without_an_input_size(method, spec, word):
    with pytest.raises(ValueError, match=word):
        compute(method, np.ones((1, 1, 3, 3)), spec)


def test_probabilistic_refuses_bad_delta():
    with pytest.raises(ValueError, match="delta"):
        compute("lanczos_probabilistic", np.ones((1, 1, 3, 3)), ConvSpec(input_size=4), delta=0)
