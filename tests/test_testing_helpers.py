"""Tests of ``specbound.testing.torch_conv_matrix`` against matrices built by hand, entry by
entry, from the definition of the (transposed) convolution and of each padding mode."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from specbound import ConvSpec
from specbound.operators import conv_matrix
from specbound.testing import CONV_MODULES, torch_conv_matrix

_FORWARD = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}
_TRANSPOSED = {
    1: torch.nn.ConvTranspose1d,
    2: torch.nn.ConvTranspose2d,
    3: torch.nn.ConvTranspose3d,
}


# ----------------------------------------------------------------------------- hand-built
def _read_index(t: int, n: int, mode: str) -> int | None:
    """The input index that padded position ``t`` (in input coordinates) reads, or None."""
    if 0 <= t < n:
        return t
    if mode == "zeros":
        return None
    if mode == "circular":
        return t % n
    if mode == "replicate":
        return min(max(t, 0), n - 1)
    return -t if t < 0 else 2 * (n - 1) - t  # reflect (without repeating the edge)


def hand_conv(w, stride, pad, dilation, groups, mode, n) -> np.ndarray:
    """``y[o, j] = sum_{c, a} w[o, c, a] x[c0 + c, read(s j - p + d a)]``."""
    c_out, c_in_g, *ks = w.shape
    ell = len(n)
    out = [(n[i] + 2 * pad[i] - dilation[i] * (ks[i] - 1) - 1) // stride[i] + 1 for i in range(ell)]
    c_in, o_g = c_in_g * groups, c_out // groups
    m = np.zeros((c_out * math.prod(out), c_in * math.prod(n)))
    for o, j, c, a in itertools.product(
        range(c_out),
        itertools.product(*map(range, out)),
        range(c_in_g),
        itertools.product(*map(range, ks)),
    ):
        idx = [
            _read_index(stride[i] * j[i] - pad[i] + dilation[i] * a[i], n[i], mode)
            for i in range(ell)
        ]
        if None in idx:
            continue
        row = np.ravel_multi_index((o, *j), (c_out, *out))
        col = np.ravel_multi_index(((o // o_g) * c_in_g + c, *idx), (c_in, *n))
        m[row, col] += w[(o, c, *a)]
    return m


def hand_conv_transpose(w, stride, pad, out_pad, dilation, groups, n) -> np.ndarray:
    """Input pixel ``(o, j)`` adds ``w[o, c, a] u[o, j]`` to output ``(c0 + c, s j - p + d a)``."""
    c_in_t, c_out_g, *ks = w.shape
    ell = len(n)
    size = [
        (n[i] - 1) * stride[i] - 2 * pad[i] + dilation[i] * (ks[i] - 1) + out_pad[i] + 1
        for i in range(ell)
    ]
    c_out, i_g = c_out_g * groups, c_in_t // groups
    m = np.zeros((c_out * math.prod(size), c_in_t * math.prod(n)))
    for o, j, c, a in itertools.product(
        range(c_in_t),
        itertools.product(*map(range, n)),
        range(c_out_g),
        itertools.product(*map(range, ks)),
    ):
        t = [stride[i] * j[i] - pad[i] + dilation[i] * a[i] for i in range(ell)]
        if any(not 0 <= t[i] < size[i] for i in range(ell)):
            continue
        row = np.ravel_multi_index(((o // i_g) * c_out_g + c, *t), (c_out, *size))
        col = np.ravel_multi_index((o, *j), (c_in_t, *n))
        m[row, col] += w[(o, c, *a)]
    return m


# ----------------------------------------------------------------------------- strategies
@st.composite
def forward_layers(draw, axes=(1, 2, 3)):
    ell = draw(st.sampled_from(axes))
    small = ell == 3
    groups = draw(st.integers(1, 2))
    c_in_g, c_out_g = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ks = tuple(draw(st.integers(1, 2 if small else 3)) for _ in range(ell))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(ell))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(ell))
    pad = tuple(draw(st.integers(0, 2)) for _ in range(ell))
    mode = draw(st.sampled_from(["zeros", "reflect", "replicate", "circular"]))
    n = tuple(
        draw(
            st.integers(
                max(pad[i] + 1, dilation[i] * (ks[i] - 1) + 1 - 2 * pad[i], 1),
                (3 if small else 5) + pad[i],
            )
        )
        for i in range(ell)
    )
    w = draw(hnp.arrays(np.int64, (c_out_g * groups, c_in_g, *ks), elements=st.integers(-8, 8)))
    return w.astype(np.float64), stride, pad, dilation, groups, mode, n


@st.composite
def transposed_layers(draw):
    ell = draw(st.integers(1, 3))
    small = ell == 3
    groups = draw(st.integers(1, 2))
    c_in_g, c_out_g = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ks = tuple(draw(st.integers(1, 2 if small else 3)) for _ in range(ell))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(ell))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(ell))
    pad = tuple(draw(st.integers(0, 2)) for _ in range(ell))
    out_pad = tuple(draw(st.integers(0, max(stride[i], dilation[i]) - 1)) for i in range(ell))
    n = []
    for i in range(ell):
        short = max(0, 2 * pad[i] - dilation[i] * (ks[i] - 1) - out_pad[i])
        least = 1 + -(-short // stride[i])  # the output size is then at least 1
        n.append(draw(st.integers(least, least + (1 if small else 3))))
    w = draw(hnp.arrays(np.int64, (c_in_g * groups, c_out_g, *ks), elements=st.integers(-8, 8)))
    return w.astype(np.float64), stride, pad, out_pad, dilation, groups, tuple(n)


def _module(cls, w, groups, **kwargs):
    c_first, c_second = w.shape[0], w.shape[1] * groups
    transposed = cls in _TRANSPOSED.values()
    c_in, c_out = (c_first, c_second) if transposed else (c_second, c_first)
    mod = cls(c_in, c_out, kernel_size=w.shape[2:], groups=groups, dtype=torch.float64, **kwargs)
    with torch.no_grad():
        mod.weight.copy_(torch.from_numpy(w))
        if mod.bias is not None:
            mod.bias.fill_(3.0)  # the bias is not part of the linear map
    return mod


# ----------------------------------------------------------------------------- tests
@settings(max_examples=40, deadline=None)
@given(forward_layers())
@example(
    (np.array([[[1.0, -2.0, 4.0]]]), (1,), (2,), (1,), 1, "reflect", (3,))  # edge read twice
)
def test_forward_modules_match_the_hand_built_matrix(layer):
    w, stride, pad, dilation, groups, mode, n = layer
    mod = _module(
        _FORWARD[len(n)],
        w,
        groups,
        stride=stride,
        padding=pad,
        dilation=dilation,
        padding_mode=mode,
    )
    got = torch_conv_matrix(mod, n)
    want = hand_conv(w, stride, pad, dilation, groups, mode, n)
    assert got.dtype == np.float64
    assert got.shape == want.shape
    assert np.array_equal(got, want)  # integer weights: every sum is exact


@settings(max_examples=40, deadline=None)
@given(transposed_layers())
@example((np.array([[[1.0, -2.0]]]), (1,), (0,), (1,), (2,), 1, (2,)))  # output_padding >= stride
def test_transposed_modules_match_the_hand_built_matrix(layer):
    w, stride, pad, out_pad, dilation, groups, n = layer
    mod = _module(
        _TRANSPOSED[len(n)],
        w,
        groups,
        stride=stride,
        padding=pad,
        output_padding=out_pad,
        dilation=dilation,
    )
    got = torch_conv_matrix(mod, n)
    want = hand_conv_transpose(w, stride, pad, out_pad, dilation, groups, n)
    assert got.shape == want.shape
    assert np.array_equal(got, want)


def test_tiny_cases_written_out():
    # Conv1d [1, 2] with replicate padding 1 on 2 inputs: rows read (x0, x0), (x0, x1), (x1, x1)
    conv = _module(
        torch.nn.Conv1d, np.array([[[1.0, 2.0]]]), 1, padding=1, padding_mode="replicate"
    )
    assert np.array_equal(torch_conv_matrix(conv, 2), [[3.0, 0.0], [1.0, 2.0], [0.0, 3.0]])
    # ConvTranspose1d [1, -2], stride 2, output_padding 1: input j lands at 2j and 2j+1
    up = _module(torch.nn.ConvTranspose1d, np.array([[[1.0, -2.0]]]), 1, stride=2, output_padding=1)
    assert np.array_equal(
        torch_conv_matrix(up, 2),
        [[1.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -2.0], [0.0, 0.0]],
    )


def test_float_weights_agree_within_rounding():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(2, 3, 3, 2, 2))
    mod = _module(torch.nn.Conv3d, w, 1, padding=1, padding_mode="reflect", stride=(2, 1, 1))
    got = torch_conv_matrix(mod, (3, 3, 3))
    want = hand_conv(w, (2, 1, 1), (1, 1, 1), (1, 1, 1), 1, "reflect", (3, 3, 3))
    # an entry sums at most 8 weights (a pixel read by every tap through the reflection)
    err = np.abs(got - want).max()
    assert err <= 16 * np.finfo(np.float64).eps * np.abs(w).sum()


def test_functional_equals_module_and_the_adjoint_identity():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(4, 1, 2, 1, 3))  # ConvTranspose3d: 4 -> 2 channels, groups 2
    mod = _module(
        torch.nn.ConvTranspose3d,
        w,
        2,
        stride=(2, 1, 3),
        padding=(0, 0, 1),
        output_padding=(1, 0, 2),
    )
    wt = torch.from_numpy(w)
    t = torch_conv_matrix(mod, (2, 3, 2))
    fn = torch_conv_matrix(
        lambda x: F.conv_transpose3d(x, wt, None, (2, 1, 3), (0, 0, 1), (1, 0, 2), 2),
        (2, 3, 2),
        in_channels=4,
    )
    assert np.array_equal(t, fn)
    # the forward conv at the output size, weight read as (c_out, c_in/g, *k): T = C^T
    size = mod(torch.zeros(1, 4, 2, 3, 2, dtype=torch.float64)).shape[2:]
    c = torch_conv_matrix(
        lambda x: F.conv3d(x, wt, None, (2, 1, 3), (0, 0, 1), 1, 2), tuple(size), in_channels=2
    )
    assert np.array_equal(t, c.T)


def test_module_is_left_untouched_and_bias_is_dropped():
    mod = torch.nn.Conv2d(2, 3, 3, padding=1)
    before = mod.weight.detach().clone()
    with_bias = torch_conv_matrix(mod, (4, 5))
    assert mod.weight.dtype == torch.float32 and torch.equal(mod.weight, before)
    mod.bias = None
    assert np.array_equal(with_bias, torch_conv_matrix(mod, [4, 5]))
    assert with_bias.shape == (3 * 4 * 5, 2 * 4 * 5)


def test_every_conv_module_type_is_accepted():
    assert set(CONV_MODULES) == set(_FORWARD.values()) | set(_TRANSPOSED.values())
    for ell in (1, 2, 3):
        for cls in (_FORWARD[ell], _TRANSPOSED[ell]):
            assert torch_conv_matrix(cls(1, 1, 1), 2).shape == (2**ell, 2**ell)


@pytest.mark.parametrize(
    ("conv", "size", "kwargs", "error", "match"),
    [
        (torch.nn.Linear(2, 2), 2, {}, TypeError, "conv must be"),
        (3.0, 2, {}, TypeError, "conv must be"),
        (torch.nn.Conv2d(1, 1, 3), (4,), {}, ValueError, "2 entries"),
        (torch.nn.Conv2d(1, 1, 3), (4, 0), {}, ValueError, "positive"),
        (torch.nn.Conv2d(1, 1, 3), (2, 2), {}, ValueError, "rejects input_size"),
        (torch.nn.Conv2d(1, 1, 3), (4.0, 4), {}, TypeError, "ints"),
        (torch.nn.Conv2d(1, 1, 3), True, {}, TypeError, "input_size"),
        (torch.nn.Conv2d(1, 1, 3), 4, {"in_channels": 2}, ValueError, "in_channels"),
        (lambda x: x, (2,), {}, TypeError, "in_channels is required"),
        (lambda x: x, 2, {"in_channels": 1}, TypeError, "sequence"),
        (lambda x: x, (2,), {"in_channels": 0}, ValueError, "at least 1"),
        (torch.nn.Conv1d(1, 1, 1), 20000, {}, ValueError, "2\\*\\*27"),
    ],
)
def test_bad_input_is_refused_clearly(conv, size, kwargs, error, match):
    with pytest.raises(error, match=match):
        torch_conv_matrix(conv, size, **kwargs)


@settings(max_examples=25, deadline=None)
@given(forward_layers(axes=(1, 2)))
def test_conv1d_and_conv2d_agree_with_specbound_operators(layer):
    """The torch ground truth and specbound's own dense operator (for the 1-D and 2-D layers
    it covers) are the same matrix."""
    w, stride, pad, dilation, groups, mode, n = layer
    mod = _module(
        _FORWARD[len(n)],
        w,
        groups,
        stride=stride,
        padding=pad,
        dilation=dilation,
        padding_mode=mode,
    )
    spec = ConvSpec.from_module(mod, n)  # a Conv1d is a 1-D spec, its weight a 1-D kernel
    assert np.array_equal(torch_conv_matrix(mod, n), conv_matrix(w, spec))
