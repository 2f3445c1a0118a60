"""SLL residual blocks with residual spectral rescaling (Araujo et al. 2023; gram.md S5):
the condition ||T^{-1/2} C|| <= 1 on the exact operator, 1-Lipschitz Jacobians, the exact
adjoint, refusals and serialisation."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch.func import jacrev

from specbound import ConvSpec
from specbound.layers import SLLConv2d, SLLLinear
from specbound.operators import exact_norm
from specbound.testing import ROUNDING_RTOL
from specbound.testing.families import ENTRIES

F64 = torch.float64


@st.composite
def sll_convs(draw):
    groups = draw(st.integers(1, 2))
    channels = groups * draw(st.integers(1, 2))
    hidden = groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = draw(st.integers(1, 2))
    mode = draw(st.sampled_from(["zeros", "circular"]))
    padding = draw(st.sampled_from(["same", "valid"] + (["full", 1] if mode == "zeros" else [])))
    n_iter = draw(st.integers(1, 2))
    block = SLLConv2d(  # every drawn configuration is valid: no refusal to filter
        channels,
        hidden,
        kernel,
        padding,
        dilation,
        groups,
        True,
        mode,
        n_iter=n_iter,
        dtype=F64,
    )

    def entries(shape):
        return torch.from_numpy(draw(hnp.arrays(np.float64, shape, elements=ENTRIES)))

    with torch.no_grad():  # drawn entry by entry, so that failures shrink
        block.weight.copy_(entries(tuple(block.weight.shape)))
        block.log_q.copy_(entries(tuple(block.log_q.shape)))
        block.bias.copy_(entries(tuple(block.bias.shape)))
    size = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    (top, bottom), (left, right) = block.pads
    eh, ew = dilation * (kernel[0] - 1) + 1, dilation * (kernel[1] - 1) + 1
    assume(size[0] + top + bottom >= eh and size[1] + left + right >= ew)
    return block, size


@given(sll_convs())
def test_condition_on_exact_operator(case):
    """S5 (conv): ||T^{-1/2} C||_2 <= 1 for learnable q, zero/circular padding, groups."""
    block, size = case
    t = block.factors().detach()
    scaled = (
        block.weight.detach()
        / torch.where(t > 0, t, torch.ones_like(t)).sqrt()[:, None, None, None]
    )
    (top, bottom), (left, right) = block.pads
    spec = ConvSpec(
        block.padding_mode, (left, right, top, bottom), size, 1, block.dilation, block.groups
    )
    assert exact_norm(scaled, spec) <= 1 + ROUNDING_RTOL


@given(sll_convs())
def test_block_jacobian_is_a_contraction(case):
    """The block is 1-Lipschitz: ||dh/dx|| <= 1 at random points (Thm. 3 of Araujo et al.)."""
    block, size = case
    x = torch.randn(1, block.channels, *size, dtype=F64)
    n = x.numel()
    jac = jacrev(lambda z: block(z.reshape(x.shape)).reshape(-1))(x.reshape(-1))
    assert torch.linalg.matrix_norm(jac.reshape(n, n), 2) <= 1 + ROUNDING_RTOL


@given(sll_convs())
def test_adjoint_is_exact(case):
    block, size = case
    x = torch.randn(2, block.channels, *size, dtype=F64)
    cx = block.conv(x)
    y = torch.randn_like(cx)
    lhs = float((cx * y).sum())
    rhs = float((x * block.conv_adjoint(y, size)).sum())
    assert abs(lhs - rhs) <= 1e-11 * (1 + abs(lhs))


@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 3), st.data())
def test_linear_block(features, hidden, n_iter, data):
    def entries(shape):  # drawn entry by entry, so that failures shrink
        return torch.from_numpy(data.draw(hnp.arrays(np.float64, shape, elements=ENTRIES)))

    block = SLLLinear(features, hidden, n_iter=n_iter, dtype=F64)
    with torch.no_grad():
        block.weight.copy_(entries((hidden, features)))
        block.log_q.copy_(entries((hidden,)))
        block.bias.copy_(entries((hidden,)))
    t = block.factors().detach()
    t = torch.where(t > 0, t, torch.ones_like(t))  # a zero row of W stays zero
    w = block.weight.detach().numpy() / np.sqrt(t.numpy())[:, None]
    assert np.linalg.norm(w, 2) <= 1 + ROUNDING_RTOL
    x = entries((features,))
    assert torch.linalg.matrix_norm(jacrev(block)(x), 2) <= 1 + ROUNDING_RTOL
    a, b = entries((2, features))
    assert (block(a) - block(b)).norm() <= (a - b).norm() * (1 + ROUNDING_RTOL)


def test_zero_hidden_channel_is_safe():
    block = SLLConv2d(2, 3, 3, dtype=F64)
    with torch.no_grad():
        block.weight[1] = 0
    x = torch.randn(1, 2, 4, 4, dtype=F64, requires_grad=True)
    y = block(x)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(block.weight.grad).all()
    assert torch.isfinite(block.log_q.grad).all()


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"padding_mode": "reflect"}, "padding_mode"),
        ({"padding_mode": "circular", "padding": "full"}, "padding"),
        ({"n_iter": 0}, "n_iter"),
        ({"groups": 3}, "groups"),
    ],
)
def test_refusals(kwargs, word):
    with pytest.raises(ValueError, match=word):
        SLLConv2d(4, 4, 3, **kwargs)


def test_state_dict_round_trip():
    torch.manual_seed(0)
    a = SLLConv2d(3, 5, 3, n_iter=2)
    with torch.no_grad():
        a.log_q.normal_()
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = SLLConv2d(3, 5, 3, n_iter=2)
    b.load_state_dict(torch.load(buffer))
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(a(x), b(x))
    assert set(a.state_dict()) == {"weight", "bias", "log_q"}


def test_certify():
    torch.manual_seed(1)
    block = SLLConv2d(2, 3, 3, n_iter=2, dtype=F64)
    cert = block.certify(input_size=(5, 5))
    assert cert.lower <= 1 + ROUNDING_RTOL
    lin = SLLLinear(4, 6, dtype=F64)
    assert lin.certify().lower <= 1 + ROUNDING_RTOL
