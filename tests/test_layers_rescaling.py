"""AOL and spectral rescaling (SR): properties AOL-1..AOL-7, AOL-N1/N2 (research/layers.md
Sec. 1.D) and S1-S7 (research/gram.md Sec. 9), against exact float64 dense operators.

Bounds are one-sided: ``exact <= 1 + ROUNDING_ALLOWANCE``.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.signal import correlate2d
from torch import nn
from torch.nn.utils import parametrize

from specbound import ConvSpec
from specbound.layers import (
    AOLConv2d,
    AOLLinear,
    SRConv2d,
    SRLinear,
    aol,
    aol_,
    bcop_,
    rescale,
    rescaling_factors_for,
    spectral_rescaling_,
)
from specbound.operators import ConvLayer, conv_matrix, exact_norm
from specbound.testing import ROUNDING_RTOL, conv_specs, kernels
from specbound.testing.families import ENTRIES, NONZERO_ENTRIES


def drawn(data, shape, elements=ENTRIES) -> torch.Tensor:
    """A float64 tensor drawn entry by entry (so that failures shrink)."""
    return t64(data.draw(hnp.arrays(np.float64, shape, elements=elements)))


FAMILIES = ("gaussian", "rank_one", "vanishing_frequency", "zero", "tiny", "huge", "nonnegative")


def t64(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float64)


def circular_ok(shape, spec) -> bool:
    """The layers' circular domain: total pad <= dilation*(k-1) per axis."""
    if spec.padding != "circular":
        return True
    (top, bottom), (left, right) = spec.pads(shape[2:])
    (dh, dw) = spec.dilation
    return top + bottom <= dh * (shape[2] - 1) and left + right <= dw * (shape[3] - 1)


@st.composite
def rescaling_layers(draw, modes=("zeros", "circular")):
    shape, spec = draw(
        conv_specs(modes, max_channels=3, max_kernel=4, max_size=6, max_stride=3, max_dilation=2)
    )
    assume(circular_ok(shape, spec))
    return t64(draw(kernels(shape, FAMILIES))), spec


def set_original(module: nn.Module, value: torch.Tensor) -> None:
    with torch.no_grad():
        module.parametrizations.weight.original.copy_(value)


# ---------------------------------------------------------------------- AOL-1, AOL-7, S1
@given(rescaling_layers(), st.integers(1, 3), st.sampled_from(["input", "output"]))
def test_rescaled_conv_norm_at_most_one(layer, n_iter, side):
    """AOL-1 (side=input, n_iter=1), AOL-7 (side=output), S1 (n_iter > 1): zero padding (pads
    up to "full"), circular (total <= d(k-1)), any size incl. n < k, stride, dilation, groups."""
    kernel, spec = layer
    w = rescale(kernel, n_iter, side=side, groups=spec.groups)
    assert torch.isfinite(w).all()
    assert exact_norm(w, spec) <= 1 + ROUNDING_RTOL


@given(
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.tuples(*[st.integers(0, 5)] * 4),
    st.integers(1, 5),
    st.integers(1, 2),
    st.data(),
)
def test_rescaled_conv_zero_padding_beyond_full(c_out, c_in, kh, kw, pads, n, stride, data):
    """Zero pads larger than dilation*(k-1) (outputs reading only zeros) keep the bound."""
    left, right, top, bottom = pads
    assume(n + top + bottom >= kh and n + 1 + left + right >= kw)  # non-empty output
    kernel = torch.from_numpy(data.draw(kernels((c_out, c_in, kh, kw), ("gaussian",))))
    spec = ConvSpec("zeros", pads, (n, n + 1), stride)
    for side in ("input", "output"):
        assert exact_norm(aol(kernel, side=side), spec) <= 1 + ROUNDING_RTOL


@given(
    st.integers(1, 6),
    st.integers(1, 6),
    st.sampled_from(["gaussian", "rank_one", "zero_rows", "tiny", "huge"]),
    st.integers(1, 4),
    st.sampled_from(["input", "output"]),
    st.data(),
)
def test_rescaled_matrix_norm_at_most_one(p, q, family, n_iter, side, data):
    """AOL-2 / S1 (dense): ||diag(1/t) W|| <= 1 and ||W diag(1/t)|| <= 1."""

    def entries(shape):  # drawn entry by entry, so that failures shrink
        return data.draw(hnp.arrays(np.float64, shape, elements=ENTRIES))

    w = entries((p, q))
    if family == "rank_one":
        w = np.outer(entries(p), entries(q))
    elif family == "zero_rows":
        w[data.draw(hnp.arrays(np.bool_, p))] = 0.0
    w *= {"tiny": 1e-150, "huge": 1e150}.get(family, 1.0)
    r = rescale(t64(w), n_iter, side=side).numpy()
    assert np.isfinite(r).all()
    assert np.linalg.norm(r, 2) <= 1 + ROUNDING_RTOL


# ---------------------------------------------------------------------- AOL-3
@given(st.integers(1, 4), st.integers(0, 3), st.integers(1, 3), st.data())
def test_aol_tight_on_orthogonal_center(c_in, extra, k, data):
    """AOL-3: a centre-only kernel with orthonormal columns is left unchanged, and the conv is
    an isometry (J^T J = I) under "same" zero padding and circular padding at stride 1."""
    c_out = c_in + extra
    q, _ = torch.linalg.qr(drawn(data, (c_out, c_in)))
    kernel = torch.zeros(c_out, c_in, 2 * k - 1, 2 * k - 1, dtype=torch.float64)
    kernel[:, :, k - 1, k - 1] = q
    w = aol(kernel)
    assert torch.allclose(w, kernel, rtol=0, atol=1e-14)
    for mode in ("zeros", "circular"):
        a = conv_matrix(w, ConvSpec(mode, "same", (3, 4)))
        assert np.abs(a.T @ a - np.eye(a.shape[1])).max() <= 1e-12


# ---------------------------------------------------------------------- AOL-4, S2
@given(st.integers(1, 5), st.integers(1, 5), st.integers(1, 3), st.data())
def test_one_by_one_conv_equals_dense(c_out, c_in, n_iter, data):
    """AOL-4: a 1x1 conv's factors are the dense factors of W[:, :, 0, 0] (both sides)."""
    w = drawn(data, (c_out, c_in))
    for side in ("input", "output"):
        conv = rescaling_factors_for(w[:, :, None, None], n_iter, side=side).reshape(-1)
        dense = rescaling_factors_for(w, n_iter, side=side)
        assert torch.allclose(conv, dense, rtol=1e-12, atol=0)


@given(
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.data(),
)
def test_aol_factors_match_the_paper_formula(c_out, c_in, kh, kw, data):
    """S2 / Lemma 2: t_j = sqrt(sum_{i, delta} |G[j, i, delta]|) with the self-correlation
    G computed independently (scipy correlate2d, full mode), input side and output side."""
    k = drawn(data, (c_out, c_in, kh, kw)).numpy()
    g_in = np.zeros((c_in, c_in))
    # G[i, j, delta] = sum_o corr(k[o, i], k[o, j])[delta]: sum the correlations, then |.|
    for i in range(c_in):
        for j in range(c_in):
            g_in[i, j] = np.abs(
                sum(correlate2d(k[o, i], k[o, j], "full") for o in range(c_out))
            ).sum()
    g_out = np.array(
        [
            [
                np.abs(sum(correlate2d(k[i, c], k[j, c], "full") for c in range(c_in))).sum()
                for j in range(c_out)
            ]
            for i in range(c_out)
        ]
    )
    t_in = rescaling_factors_for(t64(k), 1, side="input").reshape(-1).numpy()
    t_out = rescaling_factors_for(t64(k), 1, side="output").numpy()
    assert np.allclose(t_in, np.sqrt(g_in.sum(axis=1)), rtol=1e-12, atol=0)
    assert np.allclose(t_out, np.sqrt(g_out.sum(axis=1)), rtol=1e-12, atol=0)


def test_aol_layer_equals_sr_with_one_iteration():
    """S2 at module level: AOLConv2d(side) and SRConv2d(n_iter=1, side) give the same kernel."""
    torch.manual_seed(0)
    k = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    for side in ("input", "output"):
        a = AOLConv2d(3, 4, 3, side=side, dtype=torch.float64)
        s = SRConv2d(3, 4, 3, n_iter=1, side=side, dtype=torch.float64)
        set_original(a, k)
        set_original(s, k)
        assert torch.equal(a.weight, s.weight)


# ---------------------------------------------------------------------- AOL-5, AOL-6
@given(
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.sampled_from([-3.0, -1e-80, 1e-80, 7.5, 1e90]),
    st.integers(1, 2),
    st.data(),
)
def test_scale_invariance(c_out, c_in, k, alpha, n_iter, data):
    """AOL-5: rescale(alpha K) = sign(alpha) rescale(K) (eps = 0), any n_iter, both sides."""
    kernel = torch.from_numpy(data.draw(kernels((c_out, c_in, k, k), ("gaussian",))))
    for side in ("input", "output"):
        a = rescale(alpha * kernel, n_iter, side=side)
        b = math.copysign(1.0, alpha) * rescale(kernel, n_iter, side=side)
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)


def test_weight_independent_of_input_size():
    """AOL-6: the layer's kernel depends only on the parameters; every input size uses it."""
    torch.manual_seed(1)
    layer = AOLConv2d(2, 3, 3, dtype=torch.float64)
    set_original(layer, torch.randn(3, 2, 3, 3, dtype=torch.float64))
    w = layer.weight.detach().clone()
    for size in [(1, 1), (2, 5), (7, 4)]:
        x = torch.randn(2, 2, *size, dtype=torch.float64)
        assert torch.allclose(layer(x), F.conv2d(x, w, layer.bias, padding=1), atol=1e-13)
    assert torch.equal(layer.weight, w)


# ---------------------------------------------------------------------- AOL-N1, AOL-N2
def test_reflect_padding_breaks_aol_without_compensation():
    """AOL-N1 (reflect): kernel [1 1 1] has t = 3 (self-correlation [1 2 3 2 1] sums to 9).
    With reflect padding on n = 3, x = (1, 2, 1) gives J x = (5, 4, 5)/3, so
    ||J||^2 >= 66/54 > 1. The compensated layer divides by ||P|| = sqrt(3) and is <= 1."""
    kernel = torch.ones(1, 1, 1, 3, dtype=torch.float64)
    w = aol(kernel)
    assert torch.allclose(w, kernel / 3, rtol=1e-14)
    spec = ConvSpec("reflect", "same", (1, 3))
    assert exact_norm(w, spec) ** 2 >= 66 / 54 - 1e-12
    layer = AOLConv2d(1, 1, (1, 3), padding_mode="reflect", bias=False, dtype=torch.float64)
    set_original(layer, kernel)
    assert layer.padding_norm == pytest.approx(math.sqrt(3))
    for n in range(2, 9):
        assert exact_norm(layer.weight, ConvSpec("reflect", "same", (1, n))) <= 1 + ROUNDING_RTOL


def test_replicate_padding_breaks_aol_without_compensation():
    """AOL-N1 (replicate): kernel [0 1 1] -> [0 1/2 1/2]; replicate on n = 2 gives
    J = [[1/2, 1/2], [0, 1]], ||J||^2 = (3 + sqrt 5)/4 > 1 (by hand)."""
    kernel = torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64).reshape(1, 1, 1, 3)
    w = aol(kernel)
    assert torch.allclose(w.reshape(-1), torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64))
    norm2 = exact_norm(w, ConvSpec("replicate", "same", (1, 2))) ** 2
    assert abs(norm2 - (3 + math.sqrt(5)) / 4) <= 1e-12
    assert norm2 > 1


def test_input_factors_on_output_channels_are_invalid():
    """AOL-N2: W = [[1, 1], [0, 1]] has input-side factors (sqrt 2, sqrt 3) (column sums of
    |W^T W| = [[1, 1], [1, 2]]); applying them to the rows gives
    ||.||^2 = (4 + sqrt 10)/6 > 1, while the correct column scaling is <= 1."""
    w = torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    t = rescaling_factors_for(w, 1, side="input")
    assert torch.allclose(t, torch.tensor([2.0, 3.0], dtype=torch.float64).sqrt(), rtol=1e-15)
    wrong = torch.linalg.matrix_norm(w / t[:, None], 2).item() ** 2
    assert abs(wrong - (4 + math.sqrt(10)) / 6) <= 1e-12
    assert torch.linalg.matrix_norm(w / t[None, :], 2).item() <= 1 + ROUNDING_RTOL


# ---------------------------------------------------------------------- S3, S4
@given(rescaling_layers(), st.integers(1, 3))
def test_largest_factor_bounds_the_norm(layer, n_iter):
    """S3: max_i t_i >= ||op(K)|| for every size, padding (zero, circular), stride."""
    kernel, spec = layer
    t = rescaling_factors_for(kernel, n_iter, side="output", groups=spec.groups)
    assert float(t.max()) * (1 + ROUNDING_RTOL) >= exact_norm(kernel, spec)


@given(st.integers(2, 8), st.integers(1, 8), st.integers(1, 6), st.data())
def test_rescaled_norm_tends_to_one(p, q, n_iter, data):
    """S4 with a proven rate: t_i <= p^{2^-(T+1)} sigma_1 (row l1 <= sqrt(p) row l2 on
    (W W^T)^{2^{T-1}}), so p^{-2^-(T+1)} <= ||diag(1/t) W|| <= 1."""
    w = drawn(data, (p, q), NONZERO_ENTRIES).numpy()
    r = rescale(t64(w), n_iter).numpy()
    norm = np.linalg.norm(r, 2)
    assert norm >= p ** (-(2.0 ** -(n_iter + 1))) * (1 - ROUNDING_RTOL)
    assert norm <= 1 + ROUNDING_RTOL


# ---------------------------------------------- S5 (dense; the conv case is in test_layers_sll)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 3), st.data())
def test_residual_factors(p, q, n_iter, data):
    """S5: ||diag(t_res)^{-1/2} W|| <= 1 for random q > 0; t_res(q = 1) = t^2."""
    from specbound.layers import rescaling_factors_residual

    w = drawn(data, (p, q), NONZERO_ENTRIES)
    weights = drawn(data, (p,)).exp()
    t_res = rescaling_factors_residual(w, n_iter, weights)
    assert np.linalg.norm((w / t_res.sqrt()[:, None]).numpy(), 2) <= 1 + ROUNDING_RTOL
    t = rescaling_factors_for(w, n_iter)
    assert torch.allclose(
        rescaling_factors_residual(w, n_iter, torch.ones(p, dtype=torch.float64)), t**2, rtol=1e-12
    )


# ---------------------------------------------------------------------- S6
@given(
    st.integers(1, 4),
    st.integers(1, 4),
    st.integers(1, 3),
    st.integers(1, 2),
    st.data(),
)
def test_equivariances(c_out, c_in, k, n_iter, data):
    """S6: output permutations permute t; orthogonal mixing of the input channels and a spatial
    flip leave the output-side factors unchanged."""
    kernel = drawn(data, (c_out, c_in, k, k))
    t = rescaling_factors_for(kernel, n_iter)
    perm = torch.tensor(data.draw(st.permutations(range(c_out))))
    assert torch.allclose(rescaling_factors_for(kernel[perm], n_iter), t[perm], rtol=1e-12)
    v, _ = torch.linalg.qr(drawn(data, (c_in, c_in)))
    mixed = torch.einsum("oiab,ij->ojab", kernel, v)
    assert torch.allclose(rescaling_factors_for(mixed, n_iter), t, rtol=1e-10)
    assert torch.allclose(rescaling_factors_for(kernel.flip(-2, -1), n_iter), t, rtol=1e-12)


# ---------------------------------------------------------------------- S7
def test_zero_channels_are_safe():
    """S7: t_i = 0 exactly for a zero output (resp. input) channel, the rescaled kernel keeps it
    zero, nothing is NaN, and the gradient is finite."""
    kernel = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    kernel[1] = 0
    kernel[:, 2] = 0
    kernel.requires_grad_(True)
    for side, zero in (("output", (1,)), ("input", (2,))):
        for n_iter in (1, 2, 3):
            t = rescaling_factors_for(kernel, n_iter, side=side).reshape(-1)
            assert [int(i) for i in torch.nonzero(t == 0)] == list(zero)
            w = rescale(kernel, n_iter, side=side)
            (grad,) = torch.autograd.grad(w.square().sum() + w.sum(), kernel)
            assert torch.isfinite(w).all() and torch.isfinite(grad).all()
            assert w[1].abs().max() == 0 and w[:, 2].abs().max() == 0
    assert torch.equal(rescale(torch.zeros(2, 2, 3, 3), 2), torch.zeros(2, 2, 3, 3))


def test_eps_clamp_only_shrinks():
    """S7: eps replaces t_i by max(t_i, eps), never increasing the norm."""
    kernel = 1e-3 * torch.randn(3, 2, 3, 3, dtype=torch.float64)
    spec = ConvSpec("zeros", "same", (4, 4))
    plain = exact_norm(rescale(kernel, 2), spec)
    clamped = exact_norm(rescale(kernel, 2, eps=1.0), spec)
    assert clamped <= plain + ROUNDING_RTOL
    assert clamped < 0.1  # the factors (~1e-3) were replaced by 1


# ---------------------------------------------------------------------- modules
@given(
    st.sampled_from(["aol", "sr"]),
    st.sampled_from(["zeros", "circular", "reflect", "replicate"]),
    st.sampled_from(["same", "valid", 1, (1, 0), (0, 1, 1, 0)]),
    st.integers(1, 2),
    st.integers(1, 2),
    st.sampled_from([1, 2]),
    st.sampled_from(["input", "output"]),
    st.data(),
)
def test_modules_norm_at_most_one(kind, mode, padding, stride, dilation, groups, side, data):
    """Every module configuration that constructs is <= 1 on the exact operator, including
    reflect/replicate with the padding compensation, at all admissible sizes 1..6."""
    cls = AOLConv2d if kind == "aol" else SRConv2d
    extra = {} if kind == "aol" else {"n_iter": 2}
    try:
        layer = cls(
            2,
            4,
            3,
            stride,
            padding,
            dilation,
            groups,
            False,
            mode,
            side=side,
            dtype=torch.float64,
            **extra,
        )
    except ValueError:
        assume(False)
    set_original(layer, drawn(data, (4, 2 // groups, 3, 3)))
    (top, bottom), (left, right) = layer.pads
    w = layer.weight.detach()
    for n in (1, 2, 3, 5):
        spec = ConvSpec(mode, (left, right, top, bottom), (n, n + 1), stride, dilation, groups)
        if mode == "reflect" and max(max(p) for p in layer.pads) >= n:
            continue  # PyTorch's reflect needs each pad below the size
        try:
            ConvLayer(w.numpy(), spec, need_size=True)
        except ValueError:
            continue  # empty output
        assert exact_norm(w, spec) <= 1 + ROUNDING_RTOL
        x = torch.randn(1, 2, n, n + 1, dtype=torch.float64)
        expected = conv_matrix(w, spec) @ x.reshape(-1).numpy()
        assert np.allclose(layer(x).detach().reshape(-1).numpy(), expected, atol=1e-12)


def test_min_input_size_tightens_and_is_enforced():
    layer = AOLConv2d(1, 2, 3, padding_mode="replicate", dtype=torch.float64)
    tight = AOLConv2d(1, 2, 3, padding_mode="replicate", min_input_size=(2, 2), dtype=torch.float64)
    assert layer.padding_norm == pytest.approx(3.0)  # sqrt(3) per axis (n = 1)
    assert tight.padding_norm == pytest.approx(2.0)  # sqrt(2) per axis (n >= 2)
    set_original(tight, torch.randn(2, 1, 3, 3, dtype=torch.float64))
    for n in range(2, 7):
        assert exact_norm(tight.weight, ConvSpec("replicate", "same", (n, n))) <= 1 + ROUNDING_RTOL
    with pytest.raises(ValueError, match="min_input_size"):
        tight(torch.zeros(1, 1, 1, 5, dtype=torch.float64))


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"padding_mode": "circular", "padding": 2}, "padding"),
        ({"padding_mode": "circular", "padding": "full"}, "padding"),
        ({"padding_mode": "mirror"}, "padding"),
        ({"n_iter": 0}, "n_iter"),
        ({"side": "left"}, "side"),
        ({"eps": -1.0}, "eps"),
        ({"groups": 3}, "groups"),
        ({"min_input_size": 4}, "min_input_size"),
        ({"stride": 0}, "stride"),
        ({"dilation": 0}, "dilation"),
        ({"padding": -1}, "pad"),
    ],
)
def test_refusals_name_the_parameter(kwargs, word):
    with pytest.raises(ValueError, match=word):
        SRConv2d(4, 6, 3, **kwargs)


def test_forward_refuses_wrong_input():
    layer = AOLConv2d(2, 3, 3)
    with pytest.raises(ValueError, match="input channels"):
        layer(torch.zeros(1, 3, 4, 4))


@pytest.mark.parametrize("mode", ["zeros", "circular", "reflect", "replicate"])
@pytest.mark.parametrize("padding", ["same", 1, (0, 1), (1, 0, 0, 1)])
def test_export_reproduces_output(mode, padding):
    torch.manual_seed(2)
    for layer in (
        AOLConv2d(
            3, 4, (3, 4), padding=padding, padding_mode=mode, stride=(1, 2), dtype=torch.float64
        ),
        SRConv2d(4, 4, 3, padding=padding, padding_mode=mode, groups=2, dtype=torch.float64),
    ):
        set_original(layer, torch.randn_like(layer.parametrizations.weight.original))
        with torch.no_grad():
            layer.bias.normal_()
        plain = layer.to_conv2d()
        assert not any(parametrize.is_parametrized(m) for m in plain.modules())
        x = torch.randn(2, layer.in_channels, 5, 6, dtype=torch.float64)
        assert torch.allclose(plain(x), layer(x), atol=1e-13)


@pytest.mark.parametrize("cls", [AOLLinear, SRLinear])
def test_linear_layers(cls):
    torch.manual_seed(3)
    layer = cls(7, 5, dtype=torch.float64)
    set_original(layer, torch.randn(5, 7, dtype=torch.float64))
    assert np.linalg.norm(layer.weight.detach().numpy(), 2) <= 1 + ROUNDING_RTOL
    x = torch.randn(3, 7, dtype=torch.float64)
    assert torch.allclose(layer.to_linear()(x), layer(x), atol=1e-14)
    default_side = "input" if cls is AOLLinear else "output"
    assert torch.equal(
        layer.weight,
        rescale(
            layer.parametrizations.weight.original,
            layer.parametrizations.weight[0].n_iter,
            side=default_side,
        ),
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: AOLConv2d(2, 4, 3, padding_mode="circular"),
        lambda: SRConv2d(2, 4, 3, n_iter=2, padding_mode="reflect", min_input_size=3),
        lambda: AOLLinear(5, 3),
        lambda: SRLinear(5, 3, n_iter=2),
    ],
)
def test_state_dict_round_trip(make):
    torch.manual_seed(4)
    a = make()
    with torch.no_grad():
        a.parametrizations.weight.original.normal_()
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(5)
    b = make()
    assert not torch.equal(a.weight, b.weight)
    b.load_state_dict(torch.load(buffer))
    assert "parametrizations.weight.original" in a.state_dict()
    x = torch.randn(2, 2, 4, 4) if isinstance(a, (AOLConv2d, SRConv2d)) else torch.randn(2, 5)
    assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("fn", ["aol", "sr"])
@pytest.mark.parametrize("mode", ["zeros", "circular", "reflect"])
def test_parametrization_round_trip_conv(fn, mode):
    """aol_ / spectral_rescaling_ on an existing nn.Conv2d: the original is the old weight, the
    new weight is the rescaled one (compensated for reflect), norm <= 1, and removal keeps it."""
    torch.manual_seed(6)
    conv = nn.Conv2d(3, 4, 3, padding=1, padding_mode=mode, dtype=torch.float64)
    old = conv.weight.detach().clone()
    (aol_(conv) if fn == "aol" else spectral_rescaling_(conv, n_iter=2))
    assert torch.equal(conv.parametrizations.weight.original, old)
    expected = aol(old) if fn == "aol" else rescale(old, 2)
    norm = conv.parametrizations.weight[0].padding_norm
    assert norm == pytest.approx(3.0 if mode == "reflect" else 1.0)  # sqrt(3) per axis (n = 3)
    assert torch.allclose(conv.weight, expected / norm, rtol=1e-14)
    for n in range(2, 6):
        assert exact_norm(conv.weight, ConvSpec(mode, 1, (n, n))) <= 1 + ROUNDING_RTOL
    # assignment goes through the (identity) right inverse: original = assigned value
    new = torch.randn_like(old)
    conv.weight = new
    assert torch.equal(conv.parametrizations.weight.original, new)
    # state_dict round trip into another parametrized conv
    other = nn.Conv2d(3, 4, 3, padding=1, padding_mode=mode, dtype=torch.float64)
    (aol_(other) if fn == "aol" else spectral_rescaling_(other, n_iter=2))
    other.load_state_dict(conv.state_dict())
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    assert torch.equal(other(x), conv(x))
    kept = conv.weight.detach().clone()
    parametrize.remove_parametrizations(conv, "weight", leave_parametrized=True)
    assert torch.equal(conv.weight, kept) and not parametrize.is_parametrized(conv)


def test_parametrization_linear_and_refusals():
    lin = nn.Linear(6, 4, dtype=torch.float64)
    aol_(lin)
    assert np.linalg.norm(lin.weight.detach().numpy(), 2) <= 1 + ROUNDING_RTOL
    with pytest.raises(TypeError, match=r"Conv2d or torch\.nn\.Linear"):
        aol_(nn.Conv1d(2, 2, 3))
    with pytest.raises(ValueError, match="padding"):
        spectral_rescaling_(nn.Conv2d(2, 2, 3, padding=2, padding_mode="circular"))
    with pytest.raises(ValueError, match="n_iter"):
        spectral_rescaling_(nn.Conv2d(2, 2, 3), n_iter=0)


class TwoKernels(nn.Conv2d):
    """A conv with a second kernel of the same geometry (``other``), to parametrize by name."""

    def __init__(self) -> None:
        super().__init__(2, 3, 3, padding=1, dtype=torch.float64)
        self.other = nn.Parameter(torch.randn(3, 2, 3, 3, dtype=torch.float64))


@pytest.mark.parametrize("fn", ["aol", "sr", "bcop"])
def test_parametrizations_share_one_call_style(fn):
    """``name_(module, tensor_name="weight", **options)`` for aol_, spectral_rescaling_ and
    bcop_: a named tensor of the weight's shape is constrained (its norm <= 1 as a kernel of
    the layer's geometry) and the weight left alone; a name that is not a tensor of that shape
    is refused before anything is registered."""
    torch.manual_seed(8)
    apply = {
        "aol": lambda m, name: aol_(m, name, side="output"),
        "sr": lambda m, name: spectral_rescaling_(m, name, n_iter=2),
        "bcop": lambda m, name: bcop_(m, name, bjorck_iters=30),
    }[fn]
    module = TwoKernels()
    weight = module.weight.detach().clone()
    apply(module, "other")
    assert parametrize.is_parametrized(module, "other")
    assert not parametrize.is_parametrized(module, "weight")
    assert torch.equal(module.weight, weight)
    spec = ConvSpec("zeros", 1, (5, 5))
    assert exact_norm(module.other.detach(), spec) <= 1 + ROUNDING_RTOL
    with pytest.raises(ValueError, match=r"tensor_name='bias'.*shape"):
        apply(TwoKernels(), "bias")
    with pytest.raises(ValueError, match="tensor_name='nothing'"):
        apply(TwoKernels(), "nothing")
    with pytest.raises(TypeError, match="tensor_name must be a str"):
        apply(TwoKernels(), 3.0)


def test_spectral_rescaling_positional_n_iter_is_deprecated():
    torch.manual_seed(9)
    old, new = (nn.Conv2d(2, 3, 3, padding=1, dtype=torch.float64) for _ in range(2))
    new.load_state_dict(old.state_dict())
    with pytest.warns(DeprecationWarning, match="n_iter=2"):
        spectral_rescaling_(old, 2)
    spectral_rescaling_(new, n_iter=2)
    assert torch.equal(old.weight, new.weight)
    assert old.parametrizations.weight[0].n_iter == 2


def test_weight_cache_in_eval_mode():
    torch.manual_seed(7)
    layer = SRConv2d(2, 3, 3, n_iter=2)
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer.train()
    assert layer.weight is not layer.weight  # recomputed in training mode
    layer.eval()
    with torch.no_grad():
        w1 = layer.weight
        assert layer.weight is w1  # cached
    layer.train()
    layer(torch.randn(1, 2, 4, 4)).square().sum().backward()
    opt.step()  # in-place update: the cache must be invalidated
    layer.eval()
    with torch.no_grad():
        w2 = layer.weight
    assert w2 is not w1 and not torch.equal(w1, w2)
    assert torch.equal(w2, rescale(layer.parametrizations.weight.original.detach(), 2))
    # eval with grad enabled: a gradient still reaches the parameters
    layer.zero_grad()
    layer(torch.randn(1, 2, 4, 4)).sum().backward()
    assert layer.parametrizations.weight.original.grad.abs().sum() > 0


def test_certify_brackets_the_layer():
    torch.manual_seed(8)
    layer = AOLConv2d(2, 3, 3, padding_mode="circular", dtype=torch.float64)
    set_original(layer, torch.randn(3, 2, 3, 3, dtype=torch.float64))
    cert = layer.certify(input_size=(6, 6))
    exact = exact_norm(layer.weight, ConvSpec("circular", "same", (6, 6)))
    assert cert.lower <= exact * (1 + 1e-9) and cert.upper >= exact * (1 - 1e-9)
    assert cert.lower <= 1 + ROUNDING_RTOL
    lin = AOLLinear(4, 3, dtype=torch.float64)
    c = lin.certify()
    assert (
        c.lower
        <= np.linalg.norm(lin.weight.detach().numpy(), 2) * (1 + 1e-9)
        <= c.upper * (1 + 2e-9)
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: AOLConv2d(8, 8, 3, padding_mode="circular"),
        lambda: SRConv2d(8, 16, 3, n_iter=3, stride=2),
        lambda: AOLLinear(32, 16),
    ],
)
def test_float32_layers_within_float32_allowance(make):
    """float32 kernels: the exact (float64) norm of the float32 weight is <= 1 + 1e-5."""
    torch.manual_seed(9)
    layer = make()
    with torch.no_grad():
        layer.parametrizations.weight.original.normal_()
    w = layer.weight.detach().double()
    assert layer.weight.dtype == torch.float32
    if w.dim() == 2:
        norm = np.linalg.norm(w.numpy(), 2)
    else:
        (top, bottom), (left, right) = layer.pads
        norm = exact_norm(
            w, ConvSpec(layer.padding_mode, (left, right, top, bottom), (6, 6), layer.stride)
        )
    assert norm <= 1 + 1e-5


@given(
    st.integers(1, 3),
    st.integers(0, 2),
    st.integers(1, 3),
    st.integers(1, 3),
    st.data(),
)
def test_largest_factor_is_the_gram_zero_bound(c_out, extra, k, n_iter, data):
    """S3: max_i t_i (output side, c_out <= c_in) is the registered gram_zero bound."""
    from specbound.bounds import compute

    kernel = drawn(data, (c_out, c_out + extra, k, k))
    t = rescaling_factors_for(kernel, n_iter)
    bound = compute("gram_zero", kernel, ConvSpec("zeros", "same"), n_iter=n_iter).value
    assert bound == pytest.approx(float(t.max()), rel=1e-9)
