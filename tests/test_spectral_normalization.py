"""The reshaped-kernel norm of torch.nn.utils.spectral_norm: an estimate of a different
operator (ecosystem.md P8), computed exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from specbound import ConvSpec
from specbound.bounds import compute, get_method
from specbound.operators import conv_matrix
from specbound.testing import ROUNDING_RTOL, kernels


def dense_norm(kernel, spec) -> float:
    return float(np.linalg.norm(conv_matrix(kernel, spec), 2))


@given(
    data=st.data(),
    shape=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3)),
    scale=st.sampled_from([1.0, 1e-150, 1e150, 0.0]),
)
def test_reshape_is_the_exact_matrix_norm(data, shape, scale):
    kernel = data.draw(kernels(shape, ("gaussian",))) * scale
    b = compute("reshape", kernel, ConvSpec(input_size=None))
    reference = np.linalg.norm(kernel.reshape(shape[0], -1), 2)  # numpy SVD
    assert b.kind == "estimate"
    assert abs(b.value - reference) <= 1e-12 * reference
    # relation to the operator: ||A|| <= sqrt(kh kw) ||T|| (Fantastic Four's T reshaping)
    spec = ConvSpec("circular", input_size=(3, 4))
    assert dense_norm(kernel, spec) <= math.sqrt(shape[2] * shape[3]) * b.value * (
        1 + ROUNDING_RTOL
    )


def test_p8_reshape_is_not_the_operator_norm():
    # All-ones c x c x 3 x 3, circular: ||A|| = 9c (frequency 0) while the c x 9c all-ones
    # matrix has norm 3c: exactly one third.
    c = 3
    kernel = np.ones((c, c, 3, 3))
    exact = dense_norm(kernel, ConvSpec("circular", input_size=(4, 4)))
    assert exact == pytest.approx(9 * c, rel=1e-13)
    assert compute("reshape", kernel, ConvSpec("circular")).value == pytest.approx(3 * c, rel=1e-14)
    kernel = np.random.default_rng(0).standard_normal((4, 4, 3, 3))
    spec = ConvSpec("zeros", input_size=(5, 5))
    assert compute("reshape", kernel, spec).value < dense_norm(kernel, spec)


def test_reshape_is_accepted_everywhere_as_an_estimate():
    kernel = np.random.default_rng(1).standard_normal((2, 1, 3, 3))
    for padding in ("zeros", "circular", "reflect", "replicate"):
        b = compute("reshape", kernel, ConvSpec(padding, input_size=4, stride=2, groups=2))
        assert b.kind == "estimate" and b.value > 0


def test_gradcheck():
    m = get_method("reshape")
    kernel = np.random.default_rng(2).standard_normal((3, 2, 3, 2))
    layer = m.validate(kernel, ConvSpec(input_size=None))
    k = torch.tensor(kernel, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: m.torch_func(x, layer), (k,))
