"""Soundness core of certify (issue 12, classes 1, 2, 3, 7, 8, 9): every bracket is compared
one-sided, with bare comparisons, against the dense float64 operator built from the kernel
scaled by a power of two (exact), so extreme scales neither under- nor overflow the truth."""

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import specbound as sb
from specbound.bounds import compute
from specbound.certify import certify
from specbound.operators import ConvLayer, exact_norm
from specbound.rigorous.fpenv import gradual_underflow, gradual_underflow_guard, one_cpu_thread
from specbound.testing import dense_norm

FEW = settings(max_examples=max(5, settings().max_examples // 4), deadline=None)


def sized(kernel: np.ndarray, mode: str, pad, sizes, **kw) -> list[sb.ConvSpec]:
    """The specs at the given sizes whose output is not empty (smaller ones do not exist)."""
    out = []
    for n in sizes:
        spec = sb.ConvSpec(mode, pad, (n, n + 1), **kw)
        try:
            ConvLayer(kernel, spec)
        except ValueError as err:
            assert "output is empty" in str(err)
            continue
        out.append(spec)
    return out


def check(cert, exact: float) -> None:
    assert not math.isnan(cert.upper) and not math.isnan(cert.lower)
    assert cert.lower <= exact, (cert.lower, exact)
    assert exact <= cert.upper, (exact, cert.upper)
    if cert.converged:
        assert math.isfinite(cert.upper)


# --------------------------------------------------------------------------- class 1
@pytest.mark.parametrize(
    "kernel_size, pad",
    [((1, 1), 1), ((3, 3), "full"), ((3, 3), 2), ((3, 3), (0, 0, 3, 0)), ((2, 3), (0, 0, 1, 1))],
)
def test_every_size_circular_refuses_pads_beyond_the_extent(kernel_size, pad):
    kernel = np.ones((1, 1, *kernel_size))
    with pytest.raises(ValueError, match="input_size=None"):
        certify(kernel, "circular", pad=pad, input_size=None)


def test_why_the_wide_circular_pad_is_refused():
    # the minimal case: [1] with circular pad 1 on a 1x1 input is the 3x3 all-ones matrix
    spec = sb.ConvSpec("circular", 1, (1, 1))
    assert dense_norm(np.ones((1, 1, 1, 1)), spec) >= 3 - 1e-12
    with pytest.raises(ValueError, match="pad"):
        certify(np.ones((1, 1, 1, 1)), "circular", pad=1, input_size=None)


@FEW
@given(
    hnp.arrays(np.float64, (1, 2, 2, 3), elements=st.integers(-3, 3).map(float)),
    st.sampled_from([0, 1, 2, "full", (3, 0, 0, 2), (0, 4, 1, 1)]),
    st.sampled_from([(1, 1), (2, 1)]),
)
@example(np.ones((1, 2, 2, 3)), "full", (1, 1))
def test_every_size_zero_padding_bounds_every_size_and_pad(kernel, pad, dilation):
    # zero padding: every pad keeps the layer a submatrix of the convolution on Z^2
    cert = certify(kernel, "zeros", pad=pad, dilation=dilation, input_size=None, rtol=1e-4)
    for spec in sized(kernel, "zeros", pad, (1, 2, 3, 5), dilation=dilation):
        assert dense_norm(kernel, spec) <= cert.upper


@FEW
@given(
    hnp.arrays(np.float64, (2, 1, 3, 2), elements=st.integers(-3, 3).map(float)),
    st.sampled_from(["same", 0, (1, 0, 0, 0), (0, 1, 2, 0), (1, 0, 1, 1)]),
)
@example(np.ones((2, 1, 3, 2)), (0, 1, 2, 0))
def test_every_size_circular_within_the_extent_bounds_every_size(kernel, pad):
    cert = certify(kernel, "circular", pad=pad, input_size=None, rtol=1e-4)
    specs = sized(kernel, "circular", pad, (1, 2, 3, 4, 6))
    assert specs  # sizes 3 and up always exist
    for spec in specs:
        assert dense_norm(kernel, spec) <= cert.upper


# --------------------------------------------------------------------------- class 2
@given(st.integers(1, 2**52 - 1), st.integers(1, 2**52 - 1))
@example(1, 1)
@example(3, 5)
def test_subnormal_norm_is_rounded_outward(a, b):
    # a 2x1 channel 1x1 kernel (a, b) * 2^-1074: the norm sqrt(a^2 + b^2) 2^-1074 is
    # subnormal and (usually) not a float; the scale-back must round outward
    x, y = a * 2.0**-1074, b * 2.0**-1074
    kernel = np.array([x, y]).reshape(2, 1, 1, 1)
    cert = certify(kernel, "circular", input_size=(1, 1), rtol=1e-3)
    exact_sq = Fraction(x) ** 2 + Fraction(y) ** 2
    assert Fraction(cert.upper) ** 2 >= exact_sq
    assert Fraction(cert.lower) ** 2 <= exact_sq


# --------------------------------------------------------------------------- class 3
def _mixed_groups() -> np.ndarray:
    rng = np.random.default_rng(3)
    k = rng.standard_normal((2, 1, 3, 3))
    k[0] *= 1e200
    k[1] *= 1e-110
    return k


CANCEL = np.array([1.0, -1.0, 1e-310]).reshape(1, 1, 1, 3)  # a subnormal frequency


@pytest.mark.parametrize(
    "kernel, spec",
    [
        (_mixed_groups(), sb.ConvSpec("circular", "same", (6, 6), groups=2)),
        (_mixed_groups(), sb.ConvSpec("zeros", "same", (6, 6), groups=2)),
        (CANCEL, sb.ConvSpec("circular", "same", (1, 3))),
        (CANCEL, sb.ConvSpec("circular", "same", (2, 4))),
        (np.array([[1e200, 0, 0], [0, 1e-110, 0], [0, 0, 0]]).reshape(1, 1, 3, 3), None),
    ],
)
def test_mixed_scales_and_subnormal_frequencies(kernel, spec):
    specs = [spec] if spec else [sb.ConvSpec(m, "same", (4, 5)) for m in ("zeros", "circular")]
    for s in specs:
        cert = certify(kernel, s, rtol=1e-6)
        check(cert, dense_norm(kernel, s))
        assert cert.upper > 0


SCALES = st.sampled_from([0.0, 1.0, -1.0, 1e-310, -3e-320, 1e-110, 1e200, -1e200, 5e-324])


@FEW
@given(
    hnp.arrays(np.float64, (2, 2, 2, 3), elements=SCALES),
    st.sampled_from(["zeros", "circular", "reflect"]),
    st.sampled_from([1, 2]),
)
@example(_mixed_groups().reshape(2, 1, 3, 3)[:, :, :2, :].repeat(2, 1), "circular", 2)
def test_extreme_entries_never_give_a_false_bracket(kernel, mode, groups):
    spec = sb.ConvSpec(mode, "same", (3, 4), groups=groups)
    k = kernel[:, : 2 // groups]
    cert = certify(k, spec, rtol=1e-4)
    check(cert, dense_norm(k, spec))
    assert json.dumps(cert.to_dict(), allow_nan=False)


@FEW
@given(
    hnp.arrays(np.float64, (2, 2, 2, 3), elements=SCALES),
    st.sampled_from(["zeros", "circular", "reflect", "replicate"]),
    st.sampled_from([(1, 1), (2, 1)]),
)
@example(_mixed_groups().reshape(2, 1, 3, 3)[:, :, :2, :].repeat(2, 1), "zeros", (1, 1))
def test_extreme_entries_on_the_large_layer_routes(kernel, mode, stride):
    # the dense route switched off: circulant, embedding + Cholesky, padding-operator routes
    from specbound.rigorous import _routes as routes

    spec = sb.ConvSpec(mode, 1, (4, 5), stride=stride)
    old = routes.DENSE_GRAM_LIMIT
    routes.DENSE_GRAM_LIMIT = 0
    try:
        cert = certify(kernel, spec, rtol=1e-4)
    finally:
        routes.DENSE_GRAM_LIMIT = old
    check(cert, dense_norm(kernel, spec))


def test_every_size_with_subnormal_frequencies():
    kernel = np.array([1.0, -1.0, 1e-310, 0.0]).reshape(1, 1, 2, 2)
    cert = certify(kernel, "zeros", input_size=None, rtol=1e-6)
    for n in (1, 3, 8):
        assert dense_norm(kernel, sb.ConvSpec("zeros", "same", (n, n))) <= cert.upper


# --------------------------------------------------------------------------- class 7
def test_gram_circular_no_nan_on_vanishing_frequencies():
    rng = np.random.default_rng(0)
    signs = np.array([[1.0, -1, 1], [-1, 1, -1], [1, -1, 1]])
    kernel = rng.standard_normal((3, 2, 1, 1)) * signs  # vanishes at most frequencies
    spec = sb.ConvSpec("circular", "same", (5, 5))
    exact = dense_norm(kernel, spec)
    for n_iter in (5, 6, 7, 8):
        value = float(compute("gram_circular", kernel, spec, n_iter=n_iter).value)
        assert value >= exact * (1 - 1e-12), (n_iter, value, exact)


def test_circular_gram_checks_allow_the_rounding_floor():
    # the thorough C1 and C4 counterexamples: an operator that vanishes exactly (C1: any
    # bound >= 0 holds), and a 1x1 grid where the taps cancel (C4: rounding noise only)
    from proofs_check import Skip
    from proofs_check.families.circular_gram import c1_margin, c4_margin

    signs = np.array([[1.0, -1, 1, -1], [-1, 1, -1, 1], [1, -1, 1, -1]])
    weights = np.random.default_rng(2).uniform(0.3, 1.3, (4, 2, 1, 1))
    c1_kernel = weights * signs
    c1_spec = sb.ConvSpec("circular", "same", (4, 2), stride=2, dilation=(1, 2), groups=2)
    assert dense_norm(c1_kernel, c1_spec) == 0.0
    assert c1_margin((c1_kernel, c1_spec)) >= 0.0
    c4_kernel = np.random.default_rng(3).standard_normal((2, 3, 3, 3))
    c4_kernel -= c4_kernel.mean(axis=(2, 3), keepdims=True)
    c4_spec = sb.ConvSpec("circular", "same", (1, 1))
    with pytest.raises(Skip):
        c4_margin((c4_kernel, c4_spec))


# --------------------------------------------------------------------------- class 8
def test_flush_to_zero_is_switched_off_and_restored():
    kernel = np.full((1, 1, 3, 3), 1e-310)
    spec = sb.ConvSpec("circular", "same", (4, 4))
    torch.set_flush_denormal(True)
    try:
        flushing = not gradual_underflow()
        cert = certify(kernel, spec)
        still_flushing = not gradual_underflow()
    finally:
        torch.set_flush_denormal(False)
    if not flushing:
        pytest.skip("this CPU does not support flush-to-zero")
    assert still_flushing  # restored after the call
    check(cert, dense_norm(kernel, spec))
    assert cert.upper > 0
    assert any("flush-to-zero" in n for n in cert.notes)


def test_refuses_when_flush_to_zero_cannot_be_switched_off(monkeypatch):
    from specbound.rigorous import fpenv

    monkeypatch.setattr(fpenv, "gradual_underflow", lambda: False)
    try:
        with pytest.raises(fpenv.FloatingPointEnvironmentError, match="gradual underflow"):
            certify(np.ones((1, 1, 3, 3)), "circular", input_size=(4, 4))
    finally:
        torch.set_flush_denormal(False)  # the guard restores what it found: flushing


def test_guard_is_a_no_op_with_gradual_underflow():
    with gradual_underflow_guard() as switched:
        assert gradual_underflow()
    assert switched is False


# --------------------------------------------------------------------------- attacker
@pytest.mark.parametrize(
    "kernel",
    [
        np.full((1, 2, 3, 3), 1e300),
        np.full((2, 2, 2, 2), 1e-310),
        np.ones((2, 1, 3, 3)),  # exactly tight: every tap equal
        _mixed_groups(),
    ],
)
@pytest.mark.parametrize(
    "kw",
    [
        {"padding": "zeros", "input_size": (2, 2), "stride": 3, "dilation": 3, "pad": 3},
        {"padding": "circular", "input_size": (3, 3), "dilation": 2, "pad": "same"},
        {"padding": "reflect", "input_size": (4, 3), "stride": (2, 3), "pad": 1},
        {"padding": "zeros", "input_size": (5, 5), "max_seconds": 1e-3},
    ],
)
def test_extreme_kernels_with_stride_dilation_and_tiny_budgets(kernel, kw):
    groups = 2 if kernel.shape[:2] == (2, 1) else 1
    spec_kw = {k: v for k, v in kw.items() if k != "max_seconds"}
    spec = sb.ConvSpec(
        spec_kw.pop("padding"),
        spec_kw.pop("pad", "same"),
        spec_kw.pop("input_size"),
        groups=groups,
        **spec_kw,
    )
    cert = certify(kernel, spec, rtol=1e-6, max_seconds=kw.get("max_seconds"))
    check(cert, dense_norm(kernel, spec))
    assert cert.verify()


# --------------------------------------------------------------------------- class 9
def test_overflowing_norm_is_not_a_converged_certificate():
    kernel = np.full((2, 2, 3, 3), 1.5e308)
    cert = certify(kernel, "circular", input_size=(4, 4))
    assert cert.upper == math.inf
    assert not cert.converged
    assert any("not a finite certificate" in n for n in cert.notes)
    data = json.loads(json.dumps(cert.to_dict(), allow_nan=False))
    assert data["upper"] is None and data["converged"] is False


@pytest.mark.parametrize("dilation", [(2, 1), (2, 3)])
@pytest.mark.parametrize("mode", ["zeros", "circular"])
def test_verify_accepts_dilated_every_size_certificates(dilation, mode):
    kernel = np.random.default_rng(0).standard_normal((2, 2, 3, 3))
    cert = certify(kernel, mode, input_size=None, dilation=dilation, rtol=1e-6)
    assert cert.verify()


@pytest.mark.parametrize("scale", [1e-300, 1e-310, 1e300])
@pytest.mark.parametrize("mode", ["zeros", "circular"])
def test_verify_and_exact_norm_at_extreme_scales(scale, mode):
    kernel = np.random.default_rng(0).standard_normal((2, 2, 3, 3)) * scale
    spec = sb.ConvSpec(mode, "same", (5, 5))
    cert = certify(kernel, spec, rtol=1e-6)
    exact = dense_norm(kernel, spec)
    check(cert, exact)
    assert cert.verify()
    assert exact_norm(kernel, spec) == pytest.approx(exact, rel=1e-12, abs=0)
    cert_none = certify(kernel, mode, input_size=None, rtol=1e-6)
    assert cert_none.verify()


def test_one_cpu_thread_restores_the_thread_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with one_cpu_thread("cpu"):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(KeyError), one_cpu_thread(torch.device("cpu")):
            raise KeyError  # restored on an exception too
        assert torch.get_num_threads() == 2
        with one_cpu_thread("cuda"), one_cpu_thread("cpu", active=False):
            assert torch.get_num_threads() == 2  # a CUDA device or active=False: untouched
    finally:
        torch.set_num_threads(before)
