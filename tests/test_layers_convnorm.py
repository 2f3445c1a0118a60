"""ConvNorm (Liu et al. 2021): CN-1..CN-3 and the documented non-guarantees CN-N1/CN-N2
(research/layers.md Sec. 4.D), the running estimate, export and refusals.

Ground truth: the dense Jacobian of the normalisation step from the identity basis (float64),
cross-checked against ``specbound.operators.conv_matrix`` of the exported kernel.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from specbound import ConvSpec
from specbound.layers import ConvNorm2d, convnorm_normalizer
from specbound.operators import conv_matrix, exact_norm
from specbound.testing import ROUNDING_RTOL, kernels

F64 = torch.float64


def jacobian(layer: ConvNorm2d, size) -> np.ndarray:
    """Dense matrix of the normalisation step (no bias/affine/BN) from the identity basis."""
    c = layer.in_channels
    n = c * size[0] * size[1]
    basis = torch.eye(n, dtype=F64).reshape(n, c, *size)
    with torch.no_grad():
        out = layer.normalized_conv(basis)
    return out.reshape(n, -1).T.numpy()


def bare(c_in, c_out, k, **kw) -> ConvNorm2d:
    kw.setdefault("eps", 0.0)
    return ConvNorm2d(
        c_in, c_out, k, affine=False, bn=False, track_running_stats=False, dtype=F64, **kw
    )


def set_weight(layer: ConvNorm2d, w: torch.Tensor) -> None:
    with torch.no_grad():
        layer.weight.copy_(w)


def min_power_ratio(weight: torch.Tensor, grid, dilation=1) -> float:
    """min over (j, omega) of sum_i |hat kappa_ji|^2 / mean, computed with numpy's FFT."""
    w = weight.numpy()
    d = (dilation, dilation) if isinstance(dilation, int) else dilation
    kappa = np.zeros((*w.shape[:2], *grid))
    for a in range(w.shape[2]):
        for b in range(w.shape[3]):
            kappa[:, :, (d[0] * a) % grid[0], (d[1] * b) % grid[1]] += w[:, :, a, b]
    power = (np.abs(np.fft.fft2(kappa)) ** 2).sum(axis=1)
    with np.errstate(invalid="ignore"):  # an all-zero filter: 0/0, NaN, never "> tol"
        return float((power.min(axis=(1, 2)) / power.mean(axis=(1, 2))).min())


@st.composite
def torus_cases(draw):
    """Circular 'same' padding: the normalisation acts on the whole n-torus."""
    groups = draw(st.integers(1, 2))
    c_in = groups * draw(st.integers(1, 3))
    c_out = groups * draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = draw(st.integers(1, 2))
    size = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    weight = draw(kernels((c_out, c_in // groups, *kernel), ("gaussian",)))  # shrinks
    return c_in, c_out, kernel, dilation, groups, size, weight


# ---------------------------------------------------------------------- CN-1
@given(torus_cases())
def test_channelwise_isometry_on_the_full_grid(case):
    """CN-1: every output channel's row block R_j satisfies R_j R_j^T = I on the torus."""
    c_in, c_out, kernel, dilation, groups, size, weight = case
    layer = bare(
        c_in,
        c_out,
        kernel,
        padding="same",
        padding_mode="circular",
        dilation=dilation,
        groups=groups,
    )
    set_weight(
        layer,
        torch.from_numpy(weight),
    )
    assume(min_power_ratio(layer.weight.detach(), size, dilation) > 1e-3)
    a = jacobian(layer, size)
    blocks = a.reshape(c_out, size[0] * size[1], -1)
    for block in blocks:
        assert np.abs(block @ block.T - np.eye(block.shape[0])).max() <= 1e-9


def test_zero_padding_normalises_on_the_full_grid():
    """With zero padding the operator is the torus operator on N = n + e - 1 applied to the
    zero-embedded input: with pad 'full' it equals the circular layer on the N-grid restricted
    to the embedded columns."""
    torch.manual_seed(0)
    z = bare(2, 3, 3, padding="full")
    c = bare(2, 3, 3, padding="same", padding_mode="circular")
    set_weight(c, z.weight.detach())
    n, big = (3, 4), (5, 6)
    a_zero = jacobian(z, n)
    a_circ = jacobian(c, big).reshape(3, 5, 6, 2, 5, 6)
    # 'full' output i reads torus row i - 2, circular 'same' output i' reads row i' - 1 (mod N):
    # i' = i - 1. Columns: the embedded input pixels.
    rolled = np.roll(a_circ, shift=(1, 1), axis=(1, 2))[:, :, :, :, :3, :4]
    assert np.abs(a_zero - rolled.reshape(a_zero.shape)).max() <= 1e-12


# ---------------------------------------------------------------------- CN-2
@given(torus_cases(), st.sampled_from([-5.0, -1e-3, 1e-6, 3.0, 1e5]), st.sampled_from([0.0, 1e-3]))
def test_scale_invariance(case, alpha, eps):
    """CN-2: ConvNorm(alpha K) = sign(alpha) ConvNorm(K) (eps relative, so for eps > 0 too)."""
    c_in, c_out, kernel, dilation, groups, size, weight = case
    layer = bare(
        c_in,
        c_out,
        kernel,
        padding="same",
        padding_mode="circular",
        dilation=dilation,
        groups=groups,
        eps=eps,
    )
    w = torch.from_numpy(weight)
    if eps == 0:
        assume(min_power_ratio(w, size, dilation) > 1e-3)
    x = torch.randn(2, c_in, *size, dtype=F64)
    set_weight(layer, w)
    y = layer.normalized_conv(x)
    set_weight(layer, alpha * w)
    assert torch.allclose(
        layer.normalized_conv(x), math.copysign(1, alpha) * y, rtol=1e-9, atol=1e-11
    )


# ---------------------------------------------------------------------- CN-3
@given(torus_cases(), st.sampled_from([0.0, 1e-2]))
def test_norm_window_on_the_torus(case, eps):
    """CN-3: 1 <= ||J|| <= sqrt(c_out/groups) on the torus (eps = 0); the upper end for any eps."""
    c_in, c_out, kernel, dilation, groups, size, weight = case
    layer = bare(
        c_in,
        c_out,
        kernel,
        padding="same",
        padding_mode="circular",
        dilation=dilation,
        groups=groups,
        eps=eps,
    )
    set_weight(
        layer,
        torch.from_numpy(weight),
    )
    norm = np.linalg.norm(jacobian(layer, size), 2)
    assert norm <= math.sqrt(c_out // groups) * (1 + ROUNDING_RTOL)
    if eps == 0:
        assume(min_power_ratio(layer.weight.detach(), size, dilation) > 1e-3)
        assert norm >= 1 - 1e-9


@given(
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 2),
    st.integers(1, 3),
    st.sampled_from(["same", "valid", "full", (0, 1), (1, 0, 0, 2)]),
    st.sampled_from(["zeros", "circular"]),
    st.data(),
)
def test_norm_upper_bound_after_crop_and_stride(
    c_in, c_out, k, dilation, stride, padding, mode, data
):
    """CN-3 after the crop and the stride: ||J|| <= sqrt(c_out); and the exported plain conv
    reproduces the operator (checked against specbound.operators.conv_matrix)."""
    options = {"padding": padding, "padding_mode": mode, "dilation": dilation, "stride": stride}
    (top, bottom), (left, right) = ConvSpec(pad=padding, dilation=dilation).pads((k, k))
    most = dilation * (k - 1)  # zeros: each side within the full grid; circular: each axis
    if mode == "zeros":
        accepted = max(top, bottom, left, right) <= most
    else:
        accepted = top + bottom <= most and left + right <= most
    if not accepted:
        with pytest.raises(ValueError, match="needs"):
            bare(c_in, c_out, k, eps=1e-6, **options)
        return
    layer = bare(c_in, c_out, k, eps=1e-6, **options)
    set_weight(
        layer, torch.from_numpy(data.draw(kernels(tuple(layer.weight.shape), ("gaussian",))))
    )
    size = (4, 5)
    assume(min(layer.out_size(size)) >= 1)
    a = jacobian(layer, size)
    assert np.linalg.norm(a, 2) <= math.sqrt(c_out) * (1 + ROUNDING_RTOL)
    kernel, pads = layer.normalized_kernel(size)
    spec = ConvSpec(mode, pads, size, stride)
    assert np.abs(conv_matrix(kernel, spec) - a).max() <= 1e-12


def test_upper_end_attained_by_identical_filters():
    """CN-3: c_out identical filters: the c_out row blocks coincide, J^T J = c_out R^T R with
    R a co-isometry, so ||J|| = sqrt(c_out) exactly."""
    torch.manual_seed(1)
    layer = bare(3, 4, 3, padding="same", padding_mode="circular")
    set_weight(layer, torch.randn(1, 3, 3, 3, dtype=F64).repeat(4, 1, 1, 1))
    assert np.linalg.norm(jacobian(layer, (5, 5)), 2) == pytest.approx(2.0, rel=1e-10)


# ---------------------------------------------------------------------- CN-N1, CN-N2
def test_not_one_lipschitz():
    """CN-N1: with one input channel each output channel is an all-pass filter (|v kappa| = 1),
    so J^T J = c_out I: ||J|| = sqrt(2) > 1 for two output channels, whatever the kernel."""
    layer = bare(1, 2, 3, padding="same", padding_mode="circular")
    set_weight(
        layer, torch.randn(2, 1, 3, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    )
    a = jacobian(layer, (4, 4))
    assert np.abs(a.T @ a - 2 * np.eye(16)).max() <= 1e-9
    assert np.linalg.norm(a, 2) > 1.4


def test_raises_the_norm_of_a_small_conv():
    """CN-N2: a conv of norm 1e-3 is normalised to norm >= 1 (scale invariance + CN-3):
    ConvNorm is not a norm reduction."""
    w = torch.randn(3, 2, 3, 3, dtype=F64, generator=torch.Generator().manual_seed(3))
    w = 1e-3 * w / exact_norm(w, ConvSpec("circular", "same", (5, 5)))
    assert exact_norm(w, ConvSpec("circular", "same", (5, 5))) == pytest.approx(1e-3)
    layer = bare(2, 3, 3, padding="same", padding_mode="circular")
    set_weight(layer, w)
    assert np.linalg.norm(jacobian(layer, (5, 5)), 2) >= 1 - 1e-9


# ------------------------------------------------------------------ normaliser, running estimate
def test_normalizer_formula():
    """v_j(omega) = (sum_i |hat kappa_ji|^2 + eps mean)^{-1/2}, checked with numpy's FFT."""
    w = torch.randn(3, 2, 2, 3, dtype=F64, generator=torch.Generator().manual_seed(4))
    grid = (4, 6)
    v = convnorm_normalizer(w, grid, eps=0.1).numpy()
    kappa = np.zeros((3, 2, *grid))
    kappa[:, :, :2, :3] = w.numpy()
    power = (np.abs(np.fft.fft2(kappa)) ** 2).sum(axis=1)
    expected = 1 / np.sqrt(power + 0.1 * power.mean(axis=(1, 2), keepdims=True))
    np.testing.assert_allclose(v, expected[:, :, : grid[1] // 2 + 1], rtol=1e-12, atol=0)


def test_running_estimate():
    torch.manual_seed(5)
    layer = ConvNorm2d(2, 3, 3, padding=1, affine=False, bn=False, momentum=0.5, dtype=F64)
    assert layer.running_v.numel() == 0
    x = torch.randn(2, 2, 6, 6, dtype=F64)
    layer.train()
    layer(x)
    v1 = layer.exact_normalizer(layer.grid((6, 6))).detach()
    torch.testing.assert_close(layer.running_v, v1, rtol=1e-14, atol=0)
    with torch.no_grad():
        layer.weight.mul_(1.5).add_(0.1)
    layer(x)
    v2 = layer.exact_normalizer(layer.grid((6, 6))).detach()
    torch.testing.assert_close(layer.running_v, 0.5 * v1 + 0.5 * v2, rtol=1e-14, atol=0)
    assert int(layer.num_batches_tracked) == 2
    layer.eval()
    y_eval = layer(x)
    torch.testing.assert_close(
        y_eval, layer.normalized_conv(x, layer.running_v), rtol=1e-13, atol=0
    )
    drift = (y_eval - layer.normalized_conv(x, v2)).abs().max()
    assert drift > 1e-3 * y_eval.abs().max()  # CN-E1: eval drift
    with pytest.raises(ValueError, match="track_running_stats"):
        layer(torch.randn(1, 2, 5, 5, dtype=F64))
    # state_dict round trip, including the grid-shaped running estimate
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    other = ConvNorm2d(2, 3, 3, padding=1, affine=False, bn=False, dtype=F64)
    other.load_state_dict(torch.load(buffer))
    other.eval()
    assert torch.equal(other(x), y_eval)


def test_eval_without_running_stats_uses_exact_normalizer():
    torch.manual_seed(6)
    layer = ConvNorm2d(
        2, 3, 3, padding=1, track_running_stats=False, affine=False, bn=False, dtype=F64
    )
    x = torch.randn(1, 2, 5, 7, dtype=F64)
    y_train = layer(x)
    layer.eval()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), y_train, rtol=1e-13, atol=1e-14)
        assert layer(torch.randn(1, 2, 4, 4, dtype=F64)).shape == (1, 3, 4, 4)  # any size


def test_fresh_eval_initialises_running_estimate():
    layer = ConvNorm2d(2, 3, 3, padding=1, affine=False, bn=False, dtype=F64)
    layer.eval()
    x = torch.randn(1, 2, 5, 5, dtype=F64)
    y = layer(x)
    assert y.abs().max() > 0  # the reference code outputs zeros here
    torch.testing.assert_close(
        layer.running_v, layer.exact_normalizer(layer.grid((5, 5))), rtol=1e-14, atol=0
    )


def test_gradient_through_normalizer_optional():
    torch.manual_seed(7)
    x = torch.randn(2, 2, 5, 5, dtype=F64)
    grads = []
    for detach in (True, False):
        torch.manual_seed(8)
        layer = ConvNorm2d(
            2, 3, 3, padding=1, detach_normalizer=detach, affine=False, bn=False, dtype=F64
        )
        layer(x).square().sum().backward()
        grads.append(layer.weight.grad.clone())
    assert torch.isfinite(grads[1]).all() and not torch.allclose(grads[0], grads[1])
    # the normalised output is scale invariant: its true gradient is orthogonal to the weight
    layer = ConvNorm2d(
        2, 3, 3, padding=1, detach_normalizer=False, affine=False, bn=False, dtype=F64
    )
    layer(x).square().sum().backward()
    assert abs(float((layer.weight.grad * layer.weight).sum())) <= 1e-9 * float(
        layer.weight.grad.norm()
    )


# ---------------------------------------------------------------------- export, refusals
@pytest.mark.parametrize(
    "kwargs",
    [
        {"padding": 1},
        {"padding": "same", "padding_mode": "circular", "stride": 2},
        {"padding": (0, 1), "stride": (2, 1), "dilation": 2, "groups": 2, "bias": True},
        {"padding": "full", "kernel_size": (2, 3)},
    ],
)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_export_reproduces_output(kwargs, mode):
    torch.manual_seed(9)
    kwargs = dict(kwargs)
    k = kwargs.pop("kernel_size", 3)
    layer = ConvNorm2d(4, 4, k, dtype=F64, **kwargs)
    with torch.no_grad():
        layer.affine_weight.normal_()
        layer.affine_bias.normal_()
        if layer.bias is not None:
            layer.bias.normal_()
    x = torch.randn(3, 4, 6, 6, dtype=F64)
    layer.train()
    layer(x)  # BN statistics and the running estimate
    getattr(layer, mode)()
    plain = layer.to_conv2d((6, 6))
    plain.train(layer.training)
    expected = layer(x)
    torch.testing.assert_close(plain(x), expected, rtol=1e-12, atol=1e-11)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"padding_mode": "reflect"}, "padding_mode"),
        ({"padding": 3}, "pad"),
        ({"padding": 2, "padding_mode": "circular"}, "pad"),
        ({"eps": -1.0}, "eps"),
        ({"momentum": 0.0}, "momentum"),
        ({"groups": 4}, "groups"),
    ],
)
def test_refusals(kwargs, word):
    with pytest.raises(ValueError, match=word):
        ConvNorm2d(2, 2, 3, **kwargs)


def test_certify_normalisation_step():
    torch.manual_seed(10)
    layer = bare(2, 3, 3, padding="same", padding_mode="circular")
    cert = layer.certify((4, 4))
    exact = np.linalg.norm(jacobian(layer, (4, 4)), 2)
    assert cert.lower <= exact * (1 + 1e-9) and exact <= cert.upper * (1 + 1e-9)
    assert cert.upper >= 1 - 1e-9  # CN-N1 seen by the certificate: not 1-Lipschitz
