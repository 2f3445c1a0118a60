"""1x1 convolutions and Linear layers on the weight matrix (docs/certify.md L11): one-sided
against the dense float64 operator, every padding mode, stride, groups; chunking and the
Lanczos estimate on larger matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import specbound as sb
from specbound.operators import exact_norm
from specbound.rigorous import matrix


@st.composite
def pointwise_layers(draw):
    groups = draw(st.sampled_from([1, 2]))
    c_out = groups * draw(st.integers(1, 3))
    c_in_g = draw(st.integers(1, 3))
    exponent = draw(st.sampled_from([0, -700, 700, 5]))
    kernel = draw(arrays(np.float64, (c_out, c_in_g, 1, 1), elements=st.floats(-3, 3, width=64)))
    mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    size = (draw(st.integers(2, 5)), draw(st.integers(2, 5)))
    pad = draw(st.integers(0, 1))
    stride = draw(st.integers(1, 3))
    return np.ldexp(kernel, exponent), mode, size, pad, stride, groups


@settings(max_examples=60, deadline=None)
@given(pointwise_layers())
@example((np.ones((2, 2, 1, 1)), "replicate", (3, 3), 1, 1, 1))
@example((np.zeros((1, 1, 1, 1)), "zeros", (2, 2), 0, 1, 1))
@example((np.full((1, 1, 1, 1), 5.2601359e210), "zeros", (2, 2), 0, 2, 1))
@example((np.full((1, 1, 1, 1), 1.90109157e-211), "zeros", (2, 2), 0, 1, 1))
def test_pointwise_bracket_one_sided(case):
    kernel, mode, size, pad, stride, groups = case
    cert = sb.certify(
        kernel, mode, input_size=size, pad=pad, stride=stride, groups=groups, rtol=1e-6
    )
    # float64 ground truth at a moderate scale (powers of two are exact both ways)
    peak = float(np.abs(kernel).max())
    e = 0 if peak == 0 else int(np.frexp(peak)[1])
    spec = sb.ConvSpec(mode, pad, size, stride=stride, groups=groups)
    exact = float(np.ldexp(exact_norm(np.ldexp(kernel, -e), spec), e))
    assert cert.upper_method == "weight_matrix_verified"
    assert cert.lower <= exact * (1 + 1e-12)  # float64 ground truth carries its own rounding
    assert cert.upper >= exact * (1 - 1e-12)
    if abs(e) < 100:  # verify() recomputes in float64 at the kernel's own scale
        assert cert.verify()


def test_replicate_copies_count():
    """Replicate pad 1 at stride 1: the corner pixel is read 2 x 2 times, so the norm is
    twice the weight's (the exact operator agrees)."""
    w = np.array([[3.0, 4.0]]).reshape(1, 2, 1, 1)  # ||W|| = 5
    cert = sb.certify(w, "replicate", input_size=(4, 4), pad=1, rtol=1e-9)
    assert cert.lower <= 10.0 <= cert.upper
    assert cert.upper - 10.0 <= 1e-8


def test_every_size_is_the_weight_norm():
    rng = np.random.default_rng(0)
    k = rng.standard_normal((5, 3, 1, 1))
    cert = sb.certify(k, "zeros", input_size=None, rtol=1e-6)
    exact = np.linalg.norm(k[:, :, 0, 0], 2)
    assert cert.lower <= exact * (1 + 1e-12) and cert.upper >= exact * (1 - 1e-12)
    assert cert.converged and cert.verify()


def test_linear_layer(monkeypatch):
    """Chunked Gram (tiny chunks) and the Lanczos estimate (order above EIGH_LIMIT)."""
    monkeypatch.setattr(matrix, "CHUNK_BYTES", 8 * 1100 * 37)
    monkeypatch.setattr(matrix, "EIGH_LIMIT", 64)
    torch.manual_seed(0)
    lin = torch.nn.Linear(300, 180)
    cert = sb.certify(lin, rtol=1e-4)
    exact = float(np.linalg.norm(lin.weight.detach().double().numpy(), 2))
    assert cert.lower <= exact * (1 + 1e-12) and cert.upper >= exact * (1 - 1e-12)
    assert cert.converged
    assert cert.witness["input"].shape == (300, 1, 1)
    assert cert.verify()


def test_linear_input_size_refused():
    with pytest.raises(ValueError, match="input_size must be None or"):
        sb.certify(torch.nn.Linear(3, 2), input_size=(4, 4))


def test_zero_weight_is_converged_at_zero():
    cert = sb.certify(np.zeros((2, 3, 1, 1)), "reflect", input_size=(5, 7), pad=1, rtol=1e-4)
    assert cert.upper == 0.0 and cert.lower == 0.0 and cert.converged
