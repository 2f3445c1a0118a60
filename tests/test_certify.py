"""certify(): lower <= ||A|| <= upper with bare comparisons against exact float64 operators."""

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import specbound as sb
from specbound.certify import Certificate, certify
from specbound.operators import ConvLayer, exact_norm
from specbound.rigorous import _routes as routes
from specbound.rigorous import cholesky
from specbound.testing import kernels, layers

# slow properties run a quarter of the profile's examples (the thorough profile scales them)
FEW = settings(max_examples=max(5, settings().max_examples // 4))


def check_bracket(cert: Certificate, exact: float) -> None:
    assert cert.lower <= exact, (cert.lower, exact)
    assert exact <= cert.upper, (exact, cert.upper)
    if cert.converged:
        assert cert.rel_gap <= cert.rtol
    assert cert.verify()


@given(layers(max_channels=3, max_size=6), st.sampled_from([1e-2, 1e-4, 1e-8]))
@example(
    (np.arange(50.0).reshape(2, 1, 5, 5) - 20, sb.ConvSpec("circular", "same", (3, 3))), 1e-8
)  # input smaller than the kernel (wrapped)
@example((np.ones((1, 1, 3, 3)), sb.ConvSpec("zeros", "same", (4, 4))), 1e-8)
@example((np.ones((1, 1, 3, 3)), sb.ConvSpec("circular", "same", (4, 4))), 1e-8)  # tight
@example((np.ones((2, 2, 3, 3)), sb.ConvSpec("replicate", 2, (1, 3), stride=2)), 1e-8)
def test_bracket_contains_exact_norm(layer, rtol):
    kernel, spec = layer
    cert = certify(kernel, spec, rtol=rtol)
    check_bracket(cert, exact_norm(kernel, spec))


@pytest.mark.parametrize("mode", ["zeros", "circular", "reflect", "replicate"])
@pytest.mark.parametrize("scale", [1e-150, 1e150])
def test_extreme_scales(mode, scale):
    k = np.random.default_rng(1).standard_normal((3, 2, 3, 3)) * scale
    spec = sb.ConvSpec(mode, "same", (5, 6))
    cert = certify(k, spec, rtol=1e-6)
    check_bracket(cert, exact_norm(k, spec))
    assert cert.converged and np.isfinite(cert.upper) and cert.lower > 0


@FEW
@given(
    kernels((2, 3, 3, 3), ("rank_one", "vanishing_frequency", "zero", "integer")),
    st.sampled_from(["zeros", "circular"]),
)
def test_adversarial_kernels(kernel, mode):
    spec = sb.ConvSpec(mode, "same", (6, 6))
    cert = certify(kernel, spec, rtol=1e-6)
    check_bracket(cert, exact_norm(kernel, spec))


def test_tight_single_channel_nonnegative_is_exact():
    """c_in = c_out = 1, K >= 0: the circular norm is sum(K) (constant input), a tight case."""
    k = np.abs(np.random.default_rng(3).standard_normal((1, 1, 3, 3)))
    cert = certify(k, "circular", input_size=(8, 8), rtol=1e-12)
    assert cert.lower <= k.sum() <= cert.upper
    assert cert.rel_gap <= 1e-12


@FEW
@given(
    kernels((2, 3, 3, 2), ("gaussian", "rank_one", "nonnegative")),
    st.sampled_from(["zeros", "circular"]),
    st.sampled_from([1, 2]),
)
@example(  # a single tap: a constant-norm symbol that the Bernstein cells could not settle
    kernel=np.pad(np.ones((1, 1, 1, 1)), ((0, 1), (0, 2), (0, 2), (0, 1))),
    mode="zeros",
    stride=1,
)
@example(  # two single taps in unconnected channel pairs: two exact blocks, not one flat symbol
    kernel=np.stack(
        [
            np.pad(np.ones((1, 1, 1)), ((0, 2), (0, 2), (0, 1))),
            np.pad(np.ones((1, 1, 1)), ((1, 1), (2, 0), (1, 0))),
        ]
    ),
    mode="zeros",
    stride=1,
)
def test_every_size_bounds_all_sizes(kernel, mode, stride):
    cert = certify(kernel, mode, input_size=None, stride=stride, rtol=1e-4)
    assert cert.converged or stride > 1
    for n in (1, 2, 3, 5, 8, 13):
        size_spec = sb.ConvSpec(mode, "same", (n, n + 1), stride=stride)
        try:
            ConvLayer(kernel, size_spec)
            exact = exact_norm(kernel, size_spec)
        except ValueError:
            continue
        assert exact <= cert.upper
    # the lower end is below S: below every Bernstein cap sigma_circ(N)/sqrt(1-2pi^2/N^2)
    if stride == 1:
        n = 40
        cap = exact_norm(kernel, sb.ConvSpec("circular", "same", (n, n)))
        cap /= np.sqrt(1 - 2 * np.pi**2 * 2**2 / n**2)
        assert cert.lower <= cap
    assert cert.verify()


def test_every_size_dilation_and_groups():
    k = np.random.default_rng(4).standard_normal((4, 2, 3, 3))
    cert = certify(k, "zeros", input_size=None, dilation=2, groups=2, rtol=1e-5)
    assert cert.converged
    for n in (3, 7, 12):
        assert (
            exact_norm(k, sb.ConvSpec("zeros", "same", (n, n), dilation=2, groups=2)) <= cert.upper
        )


def test_conv_module_input_and_float():
    conv = torch.nn.Conv2d(3, 4, 3, padding=1, stride=2, padding_mode="circular")
    cert = certify(conv, input_size=(8, 8), rtol=1e-8)
    spec = sb.ConvSpec.from_module(conv, input_size=(8, 8))
    check_bracket(cert, exact_norm(conv.weight, spec))
    assert float(cert) == cert.upper
    assert cert.spec == spec
    d = json.loads(json.dumps(cert.to_dict()))
    assert d["converged"] and d["witness"]["input_shape"] == [3, 8, 8]


def test_not_converged_says_why(monkeypatch):
    k = np.random.default_rng(5).standard_normal((24, 24, 3, 3))
    spec = sb.ConvSpec("zeros", "same", (10, 10))  # Gram 2400 > the dense route's limit
    # the verified Cholesky step reaches 1e-9 here; with no memory for it, the embedding stays
    monkeypatch.setattr(cholesky, "MAX_BAND_BYTES", 0)
    cert = certify(k, spec, rtol=1e-9)
    assert cert.upper_method == "circulant_verified_core"
    assert not cert.converged
    assert cert.rel_gap > 1e-9 and any("rtol" in n for n in cert.notes)
    assert any("MAX_BAND_BYTES" in n for n in cert.notes)
    check_bracket(cert, exact_norm(k, spec))
    monkeypatch.undo()
    closed = certify(k, spec, rtol=1e-9)
    assert closed.converged and closed.upper_method == "verified_cholesky"
    assert closed.upper <= cert.upper
    check_bracket(closed, exact_norm(k, spec))


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate"])
def test_given_size_beyond_the_dense_route_reaches_rtol(mode):
    """Gram 1600 > 1536: embedding (or padding-operator) bracket, then the verified Cholesky
    step closes it."""
    k = np.random.default_rng(13).standard_normal((16, 16, 3, 3))
    spec = sb.ConvSpec(mode, "same", (10, 10))
    cert = certify(k, spec, rtol=1e-6)
    assert cert.converged and cert.upper_method == "verified_cholesky"
    check_bracket(cert, exact_norm(k, spec))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"guarantee": "sure"}, "guarantee must be one of"),
        ({"rtol": 0}, "rtol must be"),
        ({"rtol": 1.5}, "rtol must be"),
        ({"delta": 0}, "delta must be"),
        ({"max_seconds": -1}, "max_seconds"),
        ({"padding": "reflect", "input_size": None}, "input_size=None cannot be certified"),
        ({"padding": "mirror"}, "padding must be one of"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        certify(np.ones((1, 1, 3, 3)), **kwargs)


def test_nan_kernel_refused():
    with pytest.raises(ValueError, match="finite"):
        certify(np.full((1, 1, 3, 3), np.nan), input_size=4)


def test_probabilistic_guarantee_is_labelled_and_contains_exact(monkeypatch):
    # the deterministic bracket must miss rtol: no memory for the verified Cholesky step
    monkeypatch.setattr(cholesky, "MAX_BAND_BYTES", 0)
    wide = np.random.default_rng(6).standard_normal((20, 20, 3, 3))
    wide_spec = sb.ConvSpec("reflect", "same", (9, 9))  # Gram 1620: above the dense route
    det = certify(wide, wide_spec, rtol=1e-3)
    prob = certify(wide, wide_spec, rtol=1e-3, guarantee="probabilistic", delta=1e-6)
    exact = exact_norm(wide, wide_spec)
    assert det.lower <= exact <= det.upper  # deterministic: always
    assert prob.lower <= exact and prob.guarantee == "probabilistic"
    assert prob.upper < det.upper and prob.upper_method.startswith("lanczos_probabilistic")
    assert any("probability" in n for n in prob.notes)
    # holds with probability >= 1 - 1e-6: a failure here would be a 1-in-a-million event
    assert exact <= prob.upper
    small = np.random.default_rng(7).standard_normal((4, 4, 3, 3))
    converged = certify(small, "reflect", input_size=(6, 6), rtol=1e-3, guarantee="probabilistic")
    assert converged.upper_method == "dense_verified_core"  # deterministic already enough


@pytest.mark.parametrize("stop_after", [2, 3, 5])
def test_every_size_stopped_inside_a_level_stays_rigorous(monkeypatch, stop_after):
    """Cells of a refinement level are processed in chunks; when time runs out between
    chunks, the cells not reached keep their enclosing cell's cap, so the bracket stays an
    upper bound on S(K)."""
    from specbound.testing import assert_every_size_upper_bound

    calls = {"n": 0}

    def out_of_time(self):
        calls["n"] += 1
        return calls["n"] > stop_after

    monkeypatch.setattr(routes, "CHUNK_ENTRIES", 4 * 9)  # 4 cells of 3x3 matrices per chunk
    monkeypatch.setattr(routes.Context, "out_of_time", out_of_time)
    kernel = np.random.default_rng(7).standard_normal((3, 3, 3, 3))
    cert = sb.certify(kernel, "zeros", input_size=None, rtol=1e-8)
    assert not cert.converged
    assert any("max_seconds" in n for n in cert.notes)
    assert math.isfinite(cert.upper)
    assert cert.lower <= cert.upper
    assert_every_size_upper_bound(cert.upper, kernel, sb.ConvSpec("zeros", "same", (8, 8)))


@FEW
@given(
    arrays(np.float64, (2, 2, 1, 1), elements=st.floats(-4, 4, allow_subnormal=False)),
    st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2), st.integers(0, 2)),
    st.sampled_from(["zeros", "circular"]),
)
def test_every_size_of_a_kernel_padded_with_zero_taps_is_its_matrix_norm(w, border, mode):
    """Zero tap rows/columns around a 1x1 kernel only shift the symbol by a unimodular
    scalar: every size is bounded by ``||W||_2`` (attained), certified to rtol 1e-10."""
    top, bottom, left, right = border
    kernel = np.pad(w, ((0, 0), (0, 0), (top, bottom), (left, right)))
    norm = np.linalg.norm(w[:, :, 0, 0], 2)
    cert = certify(kernel, mode, input_size=None, pad=0, rtol=1e-10)
    assert cert.lower <= norm * (1 + 1e-13) and norm <= cert.upper * (1 + 1e-13)
    assert cert.converged


def test_the_spec_form_equals_the_keyword_form_and_refuses_both():
    """``certify(kernel, spec)`` certifies the same layer as ``certify(kernel, **fields)``;
    a ConvSpec together with keyword geometry, or with a module, is ambiguous and refused."""
    kernel = np.arange(1.0, 19.0).reshape(3, 2, 1, 3) - 9.5
    spec = sb.ConvSpec("reflect", 1, (6, 7), stride=2)
    a = certify(kernel, spec, rtol=1e-6)
    b = certify(kernel, **spec.to_dict(), rtol=1e-6)
    assert a.spec == spec == b.spec and (a.lower, a.upper) == (b.lower, b.upper)
    with pytest.raises(TypeError, match="not both: got a ConvSpec and stride"):
        certify(kernel, spec, stride=2)
    with pytest.raises(TypeError, match="module carries its own geometry"):
        certify(torch.nn.Conv2d(2, 3, 3), spec)


@FEW
@given(
    arrays(np.float64, (3, 3, 2, 2), elements=st.floats(-4, 4, allow_subnormal=False)),
    arrays(np.bool_, (3, 3)),
    st.sampled_from(["zeros", "circular"]),
)
def test_every_size_by_channel_blocks_bounds_all_sizes(values, pairs, mode):
    """Channel pairs switched off at random split the symbol into blocks bounded separately;
    the bound still holds at every size (one-sided against dense float64)."""
    kernel = values * pairs[:, :, None, None]
    cert = certify(kernel, mode, input_size=None, rtol=1e-6)
    for n in (1, 2, 3, 5):
        exact = exact_norm(kernel, sb.ConvSpec(mode, "same", (n, n + 1)))
        assert exact <= cert.upper * (1 + 1e-12) + 1e-300
    assert cert.verify()
