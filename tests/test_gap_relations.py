"""Gap relations between zero-padded, circular and bi-infinite convolutions (gram.md §4.2),
and the invariances of the exact norm, all on exact float64 operators."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import specbound as sb
from specbound.operators import ConvLayer, exact_norm
from specbound.testing import ROUNDING_RTOL, conv_specs, kernels, layers


def circ(kernel, size, dilation=(1, 1), groups=1):
    return exact_norm(
        kernel, sb.ConvSpec("circular", "same", size, dilation=dilation, groups=groups)
    )


def bernstein_factor(extent, n):
    """sqrt(1 - 2 pi^2 (e-1)^2 / N^2) with the largest per-axis (e-1)/N."""
    r = max((e - 1) / m for e, m in zip(extent, n, strict=True))
    return np.sqrt(1 - 2 * np.pi**2 * r**2)


@given(
    layers(modes=("zeros",), families=("gaussian", "integer", "rank_one")),
    st.integers(0, 4),
    st.integers(0, 4),
)
def test_G1_zero_padding_embeds_in_circular(layer, dh, dw):
    """sigma_zero(n) <= sigma_circ(N) for every N >= n + max(P_lo, P_hi) per axis."""
    kernel, spec = layer
    (top, bottom), (left, right) = spec.pads(kernel.shape[2:])
    h, w = spec.input_size
    big = (h + max(top, bottom) + dh, w + max(left, right) + dw)
    zero = exact_norm(kernel, spec)
    assert zero <= circ(kernel, big, spec.dilation, spec.groups) * (1 + ROUNDING_RTOL)


# Found by a search over integer 3x3 kernels: with pad P = 1 ("same") and n = 3 >= k,
# N = n + P - 1 = 3 is not enough.
G1_COUNTEREXAMPLE = np.array([[[[1.0, -3.0, 0.0], [-3.0, 1.0, -1.0], [3.0, -1.0, 2.0]]]])


def test_G1_is_sharp_stored_counterexample():
    zero = exact_norm(G1_COUNTEREXAMPLE, sb.ConvSpec("zeros", "same", (3, 3)))
    assert zero > 1.3 * circ(G1_COUNTEREXAMPLE, (3, 3))  # N = n + P - 1 fails, by 40%
    assert zero <= circ(G1_COUNTEREXAMPLE, (4, 4)) * (1 + ROUNDING_RTOL)  # N = n + P works


@given(layers(modes=("zeros",), families=("gaussian", "nonnegative")), st.booleans())
def test_G2_zero_padded_norm_is_monotone_in_the_size(layer, along_height):
    kernel, spec = layer
    h, w = spec.input_size
    bigger = spec.replace(input_size=(h + 1, w) if along_height else (h, w + 1))
    assert exact_norm(kernel, spec) <= exact_norm(kernel, bigger) * (1 + ROUNDING_RTOL)


@given(conv_specs(modes=("zeros",), max_stride=1, max_size=9), st.data())
def test_G3_zero_padded_norm_is_close_to_the_symbol(drawn, data):
    """(interior fraction)^(1/2) * S <= sigma_zero(n); S replaced by a grid value <= S."""
    shape, spec = drawn
    kernel = data.draw(kernels(shape, ("gaussian",)))
    layer = ConvLayer(kernel, spec)
    (eh, ew), (h, w) = layer.extent, spec.input_size
    if h < eh or w < ew:
        return
    s_grid = circ(kernel, (4 * eh, 4 * ew), spec.dilation, spec.groups)  # <= S(K)
    fraction = np.sqrt((h - eh + 1) * (w - ew + 1) / (h * w))
    assert fraction * s_grid <= exact_norm(kernel, spec) * (1 + ROUNDING_RTOL)


@given(kernels((2, 2, 3, 3), ("gaussian", "rank_one")), st.integers(1, 6), st.integers(2, 3))
def test_G4_nested_grids(kernel, n, m):
    """sigma_circ(N) <= sigma_circ(mN): the grid of N is contained in the grid of mN."""
    assert circ(kernel, (n, n)) <= circ(kernel, (m * n, m * n)) * (1 + ROUNDING_RTOL)


@given(
    kernels((2, 3, 3, 2), ("gaussian", "rank_one", "vanishing_frequency")),
    st.integers(9, 24),
    st.integers(1, 40),
)
def test_G5_bernstein_circular_approaches_the_symbol(kernel, n, m):
    """sigma_circ(N) >= S sqrt(1 - 2 pi^2 (k-1)^2 / N^2) >= sigma_circ(M) sqrt(...)."""
    factor = bernstein_factor((3, 2), (n, n))
    assert circ(kernel, (m, m)) * factor <= circ(kernel, (n, n)) * (1 + ROUNDING_RTOL)


def test_G5_and_G4_bracket_the_symbol_supremum():
    """Non-monotonicity of sigma_circ(N) in N is real (G4), but Bernstein caps the spread."""
    # K = [1, -1]: |K^(w)| = 2|sin(w/2)|, peak 2 at w = pi, on the grid of N = 2 but not N = 3
    diff = np.array([[[[1.0, -1.0]]]])
    assert abs(circ(diff, (1, 2)) - 2.0) <= 1e-15 * 2
    assert abs(circ(diff, (1, 3)) - np.sqrt(3.0)) <= 1e-15 * 2  # smaller: not monotone in N
    k = np.random.default_rng(11).standard_normal((2, 2, 3, 3))
    values = [circ(k, (n, n)) for n in range(10, 40)]
    cap = min(
        v / bernstein_factor((3, 3), (n, n)) for n, v in zip(range(10, 40), values, strict=True)
    )
    assert max(values) <= cap * (1 + ROUNDING_RTOL)


@given(
    layers(
        modes=("zeros", "circular"), families=("gaussian", "integer"), max_stride=1, circulant=False
    )
)
def test_strided_is_at_most_unstrided(layer):
    kernel, spec = layer
    for stride in ((2, 1), (1, 3), (2, 2)):
        strided = spec.replace(stride=stride)
        try:
            ConvLayer(kernel, strided)
        except ValueError:
            continue
        assert exact_norm(kernel, strided) <= exact_norm(kernel, spec) * (1 + ROUNDING_RTOL)


@given(
    kernels((2, 2, 3, 2), ("gaussian", "integer")),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 4),
    st.integers(1, 4),
)
def test_dilation_identity_circular(kernel, dh, dw, mh, mw):
    """sigma_circ(N; K dilated by d) = sigma_circ(N/d; K) for d | N."""
    lhs = circ(kernel, (dh * mh, dw * mw), dilation=(dh, dw))
    rhs = circ(kernel, (mh, mw))
    assert abs(lhs - rhs) <= 1e-12 * max(lhs, 1.0)


@given(
    layers(
        modes=("zeros", "reflect", "replicate", "circular"), families=("gaussian",), max_dilation=3
    )
)
def test_dilation_equals_explicitly_dilated_kernel(layer):
    kernel, spec = layer
    dh, dw = spec.dilation
    c_out, c_in, kh, kw = kernel.shape
    explicit = np.zeros((c_out, c_in, dh * (kh - 1) + 1, dw * (kw - 1) + 1))
    explicit[:, :, ::dh, ::dw] = kernel
    (top, bottom), (left, right) = spec.pads((kh, kw))
    undilated = spec.replace(dilation=1, pad=(left, right, top, bottom))
    a = sb.operators.conv_matrix(kernel, spec)
    b = sb.operators.conv_matrix(explicit, undilated)
    assert np.array_equal(a, b)


@given(layers(families=("gaussian",), max_groups=1))
def test_invariances_sign_and_channel_permutations(layer):
    kernel, spec = layer
    value = exact_norm(kernel, spec)
    rng = np.random.default_rng(0)
    permuted = kernel[rng.permutation(kernel.shape[0])][:, rng.permutation(kernel.shape[1])]
    for other in (-kernel, permuted):
        assert abs(exact_norm(other, spec) - value) <= 1e-12 * max(value, 1.0)


@given(layers(modes=("zeros", "circular"), families=("gaussian",), max_stride=1, max_groups=1))
def test_adjoint_kernel_flip_and_transpose(layer):
    """The adjoint of a stride-1 layer with pads (P_lo, P_hi) is the layer of the flipped,
    channel-transposed kernel with pads (e-1-P_lo, e-1-P_hi) on the output grid: same norm.
    """
    kernel, spec = layer
    lay = ConvLayer(kernel, spec)
    (top, bottom), (left, right) = lay.pads
    (eh, ew) = lay.extent
    if spec.padding == "circular" and not lay.is_circulant:
        return  # row selections of a circulant are not closed under adjoints at equal size
    if max(top, bottom) > eh - 1 or max(left, right) > ew - 1:
        return
    flipped = np.ascontiguousarray(np.swapaxes(kernel[:, :, ::-1, ::-1], 0, 1))
    adjoint_spec = sb.ConvSpec(
        spec.padding,
        (ew - 1 - left, ew - 1 - right, eh - 1 - top, eh - 1 - bottom),
        lay.out_size,
        dilation=spec.dilation,
    )
    a = sb.operators.conv_matrix(kernel, spec)
    b = sb.operators.conv_matrix(flipped, adjoint_spec)
    assert np.abs(a.T - b).max() <= 1e-13 * max(1.0, np.abs(kernel).max())


@pytest.mark.parametrize("mode", ["zeros", "circular"])
def test_tight_single_channel_nonnegative(mode):
    """c_in = c_out = 1, K >= 0: the symbol peaks at w = 0 with value sum(K), and a circular
    layer attains it exactly (constant input)."""
    k = np.abs(np.random.default_rng(2).standard_normal((1, 1, 3, 4)))
    c = exact_norm(k, sb.ConvSpec("circular", "same", (6, 8)))
    assert abs(c - k.sum()) <= 1e-13 * k.sum()
    if mode == "zeros":
        assert exact_norm(k, sb.ConvSpec("zeros", "same", (6, 8))) <= k.sum() * (1 + ROUNDING_RTOL)
