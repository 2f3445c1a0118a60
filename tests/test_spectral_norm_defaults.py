"""``spectral_norm`` and ``certify`` describe the same layer by default, and a refusal of the
``"gram"`` alias names the method it resolved to."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import specbound as sb
from specbound.operators import exact_norm

KERNELS = arrays(
    np.float64,
    st.tuples(
        st.integers(1, 3), st.integers(1, 3), st.sampled_from([1, 3]), st.sampled_from([1, 3])
    ),
    elements=st.floats(-2, 2, allow_nan=False, width=64),
)


def test_default_padding_agrees_with_certify():
    default = inspect.signature(sb.certify).parameters["padding"].default
    assert inspect.signature(sb.spectral_norm).parameters["padding"].default == default
    assert default == "zeros"


@given(kernel=KERNELS, size=st.integers(1, 6))
def test_default_bound_holds_for_the_zero_padded_layer(kernel, size):
    """Without a padding argument the result bounds the layer certify() describes by default
    (zeros, pad same) at every input size; the circular value would not (see the example)."""
    bound = sb.spectral_norm(torch.from_numpy(kernel)).item()
    truth = exact_norm(kernel, sb.ConvSpec("zeros", "same", (size, size)))
    assert bound >= truth * (1 - 1e-12)


def test_circular_value_is_not_a_bound_for_zeros():
    """Why the default matters: a kernel whose circular norm is below its zero-padded norm."""
    kernel = np.array([[[[1.0, 0.0, -1.0]]]])  # the taps cancel on a circle of length 2
    circular = exact_norm(kernel, sb.ConvSpec("circular", "same", (1, 2)))
    zeros = exact_norm(kernel, sb.ConvSpec("zeros", "same", (1, 2)))
    assert circular < 0.5 < zeros
    assert sb.spectral_norm(torch.from_numpy(kernel), input_size=(1, 2)).item() >= zeros


def test_gram_alias_refusal_names_the_resolved_method():
    kernel = torch.ones(2, 2, 3, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"method='gram' resolved to 'gram_zero'.*reflect"):
        sb.spectral_norm(kernel, padding="reflect", input_size=(8, 8))
    with pytest.raises(ValueError, match=r"^method 'gram_zero'"):  # a named method: as before
        sb.spectral_norm(kernel, method="gram_zero", padding="reflect", input_size=(8, 8))
