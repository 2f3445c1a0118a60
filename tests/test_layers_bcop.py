"""BCOP (Li et al. 2019): properties BCOP-1..BCOP-6 (research/layers.md Sec. 2.D), the Björck
polynomial, stride by space-to-depth, gradients of every parameter matrix, export and refusals.

Ground truth: ``specbound.operators.conv_matrix`` (dense float64) and its SVD.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn
from torch.nn.utils import parametrize

from specbound import ConvSpec
from specbound.layers import (
    BCOPConv2d,
    bcop_,
    bcop_kernel,
    bjorck,
    norm_upper_bound,
)
from specbound.layers.bcop import expand_stride, num_matrices
from specbound.operators import ConvLayer, conv_matrix, exact_norm
from specbound.testing import ROUNDING_RTOL, valid_geometry
from specbound.testing.families import ENTRIES, NONZERO_ENTRIES

F64 = torch.float64


def layer_spec(layer: BCOPConv2d, size, mode=None) -> ConvSpec:
    (top, bottom), (left, right) = layer.pads
    return ConvSpec(
        mode or layer.padding_mode,
        (left, right, top, bottom),
        size,
        layer.stride,
        layer.dilation,
        layer.groups,
    )


def perturb(layer: BCOPConv2d, scale: float, seed: int) -> None:
    """Orthogonal initialisation plus a Gaussian perturbation (well-conditioned matrices)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        orig = layer.parametrizations.weight.original
        orig.add_(scale * torch.randn(orig.shape, generator=g, dtype=orig.dtype))


def drawn(data, shape, elements=ENTRIES) -> torch.Tensor:
    """A float64 tensor drawn entry by entry (so that failures shrink)."""
    return torch.from_numpy(data.draw(hnp.arrays(np.float64, shape, elements=elements)))


def perturb_drawn(layer: BCOPConv2d, scale: float, data) -> None:
    """``perturb`` with the perturbation drawn entry by entry instead of from a seed."""
    with torch.no_grad():
        orig = layer.parametrizations.weight.original
        orig.add_(scale * drawn(data, tuple(orig.shape)))


@st.composite
def bcop_configs(draw):
    groups = draw(st.integers(1, 2))
    c_in = groups * draw(st.integers(1, 3))
    c_out = groups * draw(st.integers(1, 3))
    stride = draw(st.sampled_from([1, 1, 2]))
    if stride == 1:
        kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
        dilation = draw(st.integers(1, 2))
    else:
        kernel = (2 * draw(st.integers(1, 2)), 2 * draw(st.integers(1, 2)))
        dilation = 1
    h = stride * draw(st.integers(1, 3))
    w = stride * draw(st.integers(1, 3))
    return c_in, c_out, kernel, stride, dilation, groups, (h, w)


# ---------------------------------------------------------------------- BCOP-1, BCOP-2
@given(bcop_configs(), st.data())
def test_orthogonal_under_circular_padding(config, data):
    """BCOP-1/2: all singular values equal 1 under circular "same" padding, for every input
    size (incl. n < k), even and rectangular kernels, stride (space-to-depth), dilation, groups.
    With c_in != c_out (after space-to-depth) J^T J = I or J J^T = I."""
    c_in, c_out, kernel, stride, dilation, groups, size = config
    layer = BCOPConv2d(
        c_in, c_out, kernel, stride, "same", dilation, groups, bjorck_iters=40, dtype=F64
    )
    perturb_drawn(layer, 0.2, data)
    a = conv_matrix(layer.weight, layer_spec(layer, size))
    gram = a.T @ a if a.shape[0] >= a.shape[1] else a @ a.T
    assert np.abs(gram - np.eye(gram.shape[0])).max() <= 1e-10


# ---------------------------------------------------------------------- BCOP-3, BCOP-4
@given(
    bcop_configs(),
    st.integers(0, 4),
    st.sampled_from(["gaussian", "rank_one", "zero", "huge"]),
    st.sampled_from(["circular", "zeros"]),
    st.sampled_from(["same", "valid", "full"]),
    st.data(),
)
def test_norm_at_most_one_at_every_bjorck_count(config, iters, family, mode, padding, data):
    """BCOP-3/4: ||J|| <= 1 after any number (0..4) of Björck steps from arbitrary matrices
    (Gaussian, rank one, zero, 1e150-scaled), circular or zero padding, any size."""
    c_in, c_out, kernel, stride, dilation, groups, size = config
    if stride > 1 and padding == "full":
        padding = "same"
    if mode == "circular" and padding == "full":
        padding = "valid"
    layer = BCOPConv2d(
        c_in,
        c_out,
        kernel,
        stride,
        padding,
        dilation,
        groups,
        padding_mode=mode,
        bjorck_iters=iters,
        dtype=F64,
    )
    shape = tuple(layer.parametrizations.weight.original.shape)
    raw = drawn(data, shape)
    if family == "rank_one":
        raw = raw[..., :1] @ raw[..., :1, :]
    elif family == "zero":
        raw = torch.zeros(shape, dtype=F64)
    elif family == "huge":
        raw = raw * 1e150
    with torch.no_grad():
        layer.parametrizations.weight.original.copy_(raw)
    w = layer.weight
    assert torch.isfinite(w).all()
    spec = layer_spec(layer, size)
    assume(valid_geometry(tuple(w.shape), spec))  # an empty output is not a layer
    ConvLayer(w.detach().numpy(), spec, need_size=True)
    assert exact_norm(w, spec) <= 1 + ROUNDING_RTOL


def test_zero_padding_is_not_orthogonal():
    """BCOP-4: with one channel the projectors have rank 0 and the kernel is a shift; under
    "same" zero padding a row of the output reads only padding, so sigma_min = 0 (and 1 under
    circular padding)."""
    layer = BCOPConv2d(1, 1, 3, padding_mode="zeros", dtype=F64)
    assert layer.parametrizations.weight.original.shape == (1, 1, 1, 1)
    w = layer.weight.detach().abs().reshape(3, 3)
    assert w[2, 2] == pytest.approx(1.0) and w.sum() == pytest.approx(1.0)
    s = np.linalg.svd(conv_matrix(layer.weight, layer_spec(layer, (4, 4))), compute_uv=False)
    assert s.max() <= 1 + ROUNDING_RTOL and s.min() <= 1e-12
    s_circ = np.linalg.svd(
        conv_matrix(layer.weight, layer_spec(layer, (4, 4), "circular")), compute_uv=False
    )
    assert np.abs(s_circ - 1).max() <= 1e-12


# ---------------------------------------------------------------------- Björck and the pre-scale
@given(
    st.integers(1, 6),
    st.sampled_from(["gaussian", "rank_one", "tiny", "huge", "orthogonal"]),
    st.sampled_from(["gram", "frobenius"]),
    st.data(),
)
def test_bjorck_keeps_singular_values_in_unit_interval(m, family, prescale, data):
    """1 - f(s) = (s-1)^2 (s+2)/2 >= 0 and f increasing on [0, 1]: from a true upper bound the
    singular values stay <= 1 at every step and never decrease (sorted)."""
    a = drawn(data, (3, m, m))
    if family == "rank_one":
        a = a[..., :1] @ a[..., :1, :]
    elif family == "orthogonal":
        a = torch.linalg.qr(a)[0]
    a = a * {"tiny": 1e-150, "huge": 1e150}.get(family, 1.0)
    previous = None
    for k in range(8):
        s = torch.linalg.svdvals(bjorck(a, k, prescale=prescale))
        assert s.max() <= 1 + ROUNDING_RTOL
        if previous is not None:
            assert (s >= previous - 1e-13).all()
        previous = s


@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 4), st.data())
def test_norm_upper_bound(p, q, n_iter, data):
    """Gram-iteration pre-scale: sigma_1 <= bound <= ||A||_F (a true upper bound)."""
    a = drawn(data, (p, q), NONZERO_ENTRIES)  # a zero matrix gets a tiny positive bound, by design
    bound = float(norm_upper_bound(a, n_iter))
    assert bound >= float(torch.linalg.matrix_norm(a, 2)) * (1 - ROUNDING_RTOL)
    assert bound <= float(torch.linalg.matrix_norm(a)) * (1 + ROUNDING_RTOL)


def test_bjorck_converges_to_orthogonal():
    a = torch.randn(5, 5, dtype=F64, generator=torch.Generator().manual_seed(0))
    o = bjorck(a, 60)
    assert (o.T @ o - torch.eye(5, dtype=F64)).abs().max() <= 1e-12


# ---------------------------------------------------------------------- BCOP-5
@pytest.mark.parametrize(("c_in", "c_out", "kernel"), [(3, 3, 3), (2, 5, (2, 4)), (4, 1, (3, 1))])
def test_structure(c_in, c_out, kernel):
    """BCOP-5: 1 + (kh-1) + (kw-1) matrices of size m = max(c_in, c_out); each projector is
    symmetric, idempotent, of rank floor(m/2) (converged Björck); kernel shape."""
    layer = BCOPConv2d(c_in, c_out, kernel, bjorck_iters=40, dtype=F64)
    kh, kw = layer.kernel_size
    m = max(c_in, c_out)
    assert layer.parametrizations.weight.original.shape == (1, 1 + (kh - 1) + (kw - 1), m, m)
    assert layer.weight.shape == (c_out, c_in, kh, kw)
    ortho = bjorck(layer.parametrizations.weight.original.detach(), 40)[0]
    r = m // 2
    for o in ortho[1:]:
        p = o[:, :r] @ o[:, :r].T
        assert torch.allclose(p, p.T, atol=1e-13)
        assert torch.allclose(p @ p, p, atol=1e-12)
        assert torch.linalg.matrix_rank(p) == r


# ---------------------------------------------------------------------- BCOP-6
@pytest.mark.parametrize(
    ("c_in", "c_out", "kernel", "stride", "groups"),
    [(4, 4, 3, 1, 1), (3, 5, 5, 1, 1), (4, 4, (2, 4), 1, 2), (2, 6, 4, 2, 1), (2, 2, 6, 2, 2)],
)
def test_every_matrix_receives_a_gradient(c_in, c_out, kernel, stride, groups):
    """BCOP-6 (LConvNet issue #1): the loop must use every projector; each of the
    (groups, 2k-1) free matrices gets a non-zero gradient."""
    torch.manual_seed(0)
    layer = BCOPConv2d(c_in, c_out, kernel, stride, groups=groups, dtype=F64)
    x = torch.randn(2, c_in, 8, 8, dtype=F64)
    (layer(x) * torch.randn_like(layer(x))).sum().backward()
    grad = layer.parametrizations.weight.original.grad
    per_matrix = grad.flatten(2).norm(dim=-1)
    assert per_matrix.shape[1] == num_matrices(
        layer.parametrizations.weight[0].inner_kernel, layer.parametrizations.weight[0].m
    )
    assert (per_matrix > 1e-10).all(), per_matrix


# ---------------------------------------------------------------------- stride
@given(
    st.integers(1, 3),
    st.integers(1, 3),
    st.sampled_from([(2, 2), (4, 2), (3, 3)]),
    st.data(),
)
def test_stride_is_space_to_depth(c_in, c_out, kernel, data):
    """A stride-s BCOP conv equals pixel_unshuffle(s) then the inner BCOP conv (kernel k/s)."""
    s = 2 if kernel != (3, 3) else 3
    layer = BCOPConv2d(c_in, c_out, kernel, s, padding_mode="zeros", dtype=F64)
    perturb_drawn(layer, 0.3, data)
    t = layer.parametrizations.weight[0]
    inner = bcop_kernel(
        layer.parametrizations.weight.original,
        c_out,
        t.inner_in,
        t.inner_kernel,
        bjorck_iters=t.bjorck_iters,
    )
    assert torch.equal(expand_stride(inner, (s, s)), layer.weight)
    x = drawn(data, (2, c_in, 3 * s, 2 * s))
    kh, kw = t.inner_kernel
    lo_h, lo_w = (kh - 1) // 2, (kw - 1) // 2
    u = F.pad(F.pixel_unshuffle(x, s), (lo_w, kw - 1 - lo_w, lo_h, kh - 1 - lo_h))
    assert torch.allclose(layer(x), F.conv2d(u, inner, layer.bias), atol=1e-13)


def test_stride_with_zero_padding_any_size():
    """Zero padding: also 1-Lipschitz when the size is not a multiple of the stride."""
    layer = BCOPConv2d(2, 3, 4, 2, padding_mode="zeros", dtype=F64)
    perturb(layer, 0.5, 1)
    for size in [(3, 5), (5, 5), (7, 2)]:
        assert exact_norm(layer.weight, layer_spec(layer, size)) <= 1 + ROUNDING_RTOL


# ---------------------------------------------------------------------- reflect / replicate
@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_reflect_replicate_compensated(mode):
    layer = BCOPConv2d(2, 2, 3, padding_mode=mode, dtype=F64)
    perturb(layer, 0.3, 2)
    assert layer.padding_norm > 1
    for n in range(2, 7):
        assert exact_norm(layer.weight, layer_spec(layer, (n, n))) <= 1 + ROUNDING_RTOL
    # without the compensation the same orthogonal kernel exceeds 1 at some size
    raw = layer.weight.detach() * layer.padding_norm
    assert max(exact_norm(raw, layer_spec(layer, (n, n))) for n in range(2, 7)) > 1 + 1e-6


# ---------------------------------------------------------------------- module API
@pytest.mark.parametrize(
    ("args", "kwargs", "word"),
    [
        ((2, 2, 3, 2), {}, "kernel_size"),
        ((2, 2, 4, 2), {"dilation": 2}, "dilation"),
        ((2, 2, 4, 2), {"padding": 1}, "padding"),
        ((2, 2, 3), {"bjorck_iters": -1}, "bjorck_iters"),
        ((2, 2, 3), {"prescale": "power"}, "prescale"),
        ((2, 2, 3), {"padding": 2}, "padding"),
        ((2, 2, 3), {"groups": 2, "padding_mode": "mirror"}, "padding"),
    ],
)
def test_refusals(args, kwargs, word):
    with pytest.raises(ValueError, match=word):
        BCOPConv2d(*args, **kwargs)


def test_circular_stride_needs_divisible_size():
    layer = BCOPConv2d(2, 2, 4, 2)
    with pytest.raises(ValueError, match="divisible by the stride"):
        layer(torch.zeros(1, 2, 5, 4))


@pytest.mark.parametrize(
    ("kernel", "stride", "mode"), [(3, 1, "circular"), (4, 2, "zeros"), ((2, 3), 1, "reflect")]
)
def test_export_and_state_dict(kernel, stride, mode):
    torch.manual_seed(3)
    layer = BCOPConv2d(3, 4, kernel, stride, padding_mode=mode, dtype=F64)
    perturb(layer, 0.3, 3)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 3, 6, 8, dtype=F64)
    plain = layer.to_conv2d()
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())
    assert torch.allclose(plain(x), layer(x), atol=1e-13)
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    other = BCOPConv2d(3, 4, kernel, stride, padding_mode=mode, dtype=F64)
    other.load_state_dict(torch.load(buffer))
    assert torch.equal(other(x), layer(x))


def test_weight_cache_and_bjorck_setter():
    layer = BCOPConv2d(2, 2, 3, bjorck_iters=3, dtype=F64)
    layer.eval()
    with torch.no_grad():
        w = layer.weight
        assert layer.weight is w
        layer.bjorck_iters = 30
        w30 = layer.weight
    assert w30 is not w
    assert torch.equal(
        w30, bcop_kernel(layer.parametrizations.weight.original, 2, 2, (3, 3), bjorck_iters=30)
    )
    with pytest.raises(ValueError, match="bjorck_iters"):
        layer.bjorck_iters = -2


def test_parametrization_round_trip():
    """bcop_ on an nn.Conv2d: the matrices live at parametrizations.weight.original, the
    weight is an orthogonal kernel (circular) whose H is the polar factor of the summed taps."""
    torch.manual_seed(4)
    conv = nn.Conv2d(3, 3, 3, padding=1, padding_mode="circular", bias=False, dtype=F64)
    taps = conv.weight.detach().sum(dim=(-2, -1))
    bcop_(conv, bjorck_iters=40)
    mats = conv.parametrizations.weight.original
    assert mats.shape == (1, 5, 3, 3)
    u, _, vh = torch.linalg.svd(taps)
    assert torch.allclose(mats[0, 0], u @ vh, atol=1e-12)
    a = conv_matrix(conv.weight, ConvSpec("circular", 1, (5, 5)))
    assert np.abs(a.T @ a - np.eye(a.shape[1])).max() <= 1e-10
    other = bcop_(
        nn.Conv2d(3, 3, 3, padding=1, padding_mode="circular", bias=False, dtype=F64),
        bjorck_iters=40,
    )
    other.load_state_dict(conv.state_dict())
    x = torch.randn(1, 3, 5, 5, dtype=F64)
    assert torch.equal(other(x), conv(x))
    with pytest.raises(ValueError, match="stride"):
        bcop_(nn.Conv2d(2, 2, 2, stride=2))
    with pytest.raises(TypeError, match="Conv2d"):
        bcop_(nn.Linear(2, 2))


def test_certify():
    layer = BCOPConv2d(2, 4, 4, 2, bjorck_iters=40, dtype=F64)
    cert = layer.certify(input_size=(6, 6))
    assert cert.lower <= 1 + 1e-9 <= cert.upper + 2e-9  # orthogonal: the norm is 1


def test_float32_within_float32_allowance():
    """float32, 20 Björck steps: the exact norm of the float32 kernel is <= 1 + 1e-5."""
    torch.manual_seed(5)
    layer = BCOPConv2d(16, 16, 3)
    assert layer.weight.dtype == torch.float32
    a = exact_norm(layer.weight.detach().double(), layer_spec(layer, (6, 6)))
    assert a <= 1 + 1e-5
