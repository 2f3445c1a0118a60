"""``certify`` on torch modules: ``Conv1d`` (as a one-row ``Conv2d``), one-sided against the
dense float64 matrix of the module itself (impulse responses), and a clear ``TypeError``
naming ``kernel`` for the modules it does not take (issue 12: they used to get "dtype
object")."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import specbound as sb

SLACK = 1e-12  # float64 LAPACK norm of a matrix with at most ~60 columns: relative error << 1e-12


def module_matrix(module: torch.nn.Module, c_in: int, n: int) -> np.ndarray:
    """The matrix of the (bias-free) module on ``c_in x n`` inputs, column by column."""
    eye = torch.eye(c_in * n, dtype=torch.float64).reshape(-1, c_in, n)
    with torch.no_grad():
        return module(eye).reshape(c_in * n, -1).T.numpy()


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["zeros", "circular", "reflect", "replicate"]),
    st.integers(1, 3),  # kernel length
    st.integers(0, 2),  # pad
    st.integers(1, 2),  # stride
    st.integers(1, 2),  # dilation
    st.sampled_from([(1, 2, 2), (2, 2, 4), (1, 3, 1)]),  # groups, c_in, c_out
    st.integers(1, 9),  # length
    st.data(),
)
def test_conv1d_is_bracketed_by_its_own_matrix(mode, k, pad, stride, dil, gio, n, data):
    groups, c_in, c_out = gio
    if mode == "reflect" and pad >= n:
        pad = n - 1  # PyTorch's reflect needs pad < n
    if mode == "circular" and pad > n:
        pad = n  # and its circular pad wraps at most once
    if dil * (k - 1) + 1 > n + 2 * pad:
        pad = -(-(dil * (k - 1) + 1 - n) // 2)
        if (mode == "reflect" and pad >= n) or (mode == "circular" and pad > n):
            return  # no such layer in PyTorch either
    conv = torch.nn.Conv1d(
        c_in, c_out, k, stride, pad, dil, groups, bias=False, padding_mode=mode
    ).double()
    weight = data.draw(
        arrays(np.float64, tuple(conv.weight.shape), elements=st.floats(-2, 2, width=32))
    )
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(weight))
    truth = np.linalg.norm(module_matrix(conv, c_in, n), 2)
    cert = sb.certify(conv, input_size=n, rtol=1e-6)
    assert cert.lower <= truth * (1 + SLACK) + 1e-300
    assert truth <= cert.upper * (1 + SLACK) + 1e-300
    assert cert.spec.input_size == (1, n) and cert.kernel.shape == (c_out, c_in // groups, 1, k)


def test_conv1d_every_size_and_bad_sizes():
    conv = torch.nn.Conv1d(2, 3, 3, padding=1, bias=False)
    every = sb.certify(conv, rtol=1e-6)
    at_8 = sb.certify(conv, input_size=(8,), rtol=1e-6)
    assert every.spec.input_size is None and at_8.upper <= every.upper * (1 + 1e-9)
    with pytest.raises(ValueError, match="input_size"):
        sb.certify(conv, input_size=(8, 8))


@pytest.mark.parametrize(
    ("module", "exc", "words"),
    [
        (torch.nn.ReLU(), TypeError, "got a ReLU"),
    ],
)
def test_unsupported_modules_are_refused_naming_kernel(module, exc, words):
    with pytest.raises(exc, match="kernel") as err:
        sb.certify(module, input_size=6)
    assert words in str(err.value) and "dtype" not in str(err.value)
