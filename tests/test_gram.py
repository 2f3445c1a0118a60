"""Gram iteration (dense, circular, zero padding) and spectral-rescaling factors.

Properties P1-P8 (dense), C1-C7 (circular) and Z1-Z8 (kernel / zero padding) are those of
``research/gram.md`` §9; S1-S7 are the spectral-rescaling ones. Ground truth is the float64
exact operator norm (``specbound.operators``) or numpy's SVD, never this module's own output.
Every upper bound is checked one-sided with a bare ``>=`` after the float64 rounding allowance
:data:`ROUNDING_RTOL`.
"""

from __future__ import annotations

import math
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given
from hypothesis import strategies as st

from specbound import ConvSpec
from specbound.bounds import compute, get_method
from specbound.bounds import gram as gram_module
from specbound.bounds.gram import (
    DIRECT_DFT_MAX_TAPS,
    _CircularSpectrum,
    _kernel_gram_log_iterate,
    _self_correlation,
    gram_iteration,
)
from specbound.layers import (
    rescaling_factors,
    rescaling_factors_dense,
    rescaling_factors_residual,
)
from specbound.operators import (
    ConvLayer,
    conv_matrix,
    exact_norm,
    frequency_matrices,
    polyphase_kernel,
)
from specbound.operators.circulant import polyphase_kernel_torch
from specbound.testing import ROUNDING_RTOL, dense_norm, kernels, layers

EQUAL = 1e-10
"""Relative tolerance of the *identities* checked below (two implementations of one number)."""

CANCELLATION = 1e-14
"""Absolute allowance per unit of the kernel's l1 norm. Where taps cancel (a kernel wrapped on
a small grid, a symbol vanishing on the grid) the float64 values of the bound *and* of the
exact norm are rounding noise of size ~u * sum|K| (gram.md §8 item 3), which no relative
allowance covers. ``sum|K|`` bounds every frequency matrix's norm."""


def noise(kernel) -> float:
    return CANCELLATION * float(np.abs(np.asarray(kernel)).sum())


def upper(bound: float, exact: float, kernel=None) -> bool:
    slack = 0.0 if kernel is None else noise(kernel)
    return bound * (1 + ROUNDING_RTOL) + slack >= exact


def close(a: float, b: float, kernel) -> bool:
    """Equal up to EQUAL relative and the cancellation noise of ``kernel``."""
    return abs(a - b) <= EQUAL * max(abs(a), abs(b)) + noise(kernel)


def t64(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


def svdvals(matrix: np.ndarray) -> np.ndarray:
    return np.linalg.svd(matrix, compute_uv=False)


def schatten(matrix: np.ndarray, p: float) -> float:
    """:math:`\\|W\\|_{S_p}` from numpy's SVD, computed stably as
    :math:`\\sigma_1 (\\sum (\\sigma_i/\\sigma_1)^p)^{1/p}` (gram.md §9 P2)."""
    s = svdvals(matrix)
    if s[0] == 0:
        return 0.0
    return float(s[0] * np.sum((s / s[0]) ** p) ** (1 / p))


# ----------------------------------------------------------------------------------- strategies
@st.composite
def matrices(draw, max_side: int = 6) -> np.ndarray:
    """Adversarial matrices: gaussian, rank one, zero rows, repeated top singular value,
    complex, and scaled by 1e-150 / 1e150."""
    p, q = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["gauss", "rank1", "zero_row", "repeated", "complex"]))
    w = rng.standard_normal((p, q))
    if kind == "rank1":
        w = np.outer(rng.standard_normal(p), rng.standard_normal(q))
    elif kind == "zero_row":
        w[0] = 0.0
    elif kind == "repeated":
        u, _, vt = np.linalg.svd(w, full_matrices=False)
        s = np.ones(min(p, q))
        s[len(s) // 2 :] = 0.5
        w = (u * s) @ vt
    elif kind == "complex":
        w = w + 1j * rng.standard_normal((p, q))
    return w * draw(st.sampled_from([1.0, 1e-150, 1e150]))


# ======================================================================== dense Gram iteration
@given(matrices(), st.integers(0, 7))
def test_p1_p2_dense_equals_schatten_and_bounds_sigma1(w, n_iter):
    """P2: beta_t = ||W||_{S_{2^{t+1}}} (numpy SVD); P1: beta_t >= sigma_1."""
    beta = float(gram_iteration(torch.as_tensor(w), n_iter))
    assert math.isfinite(beta)
    expected = schatten(w, 2.0 ** (n_iter + 1))
    assert beta == pytest.approx(expected, rel=EQUAL, abs=0.0)
    assert upper(beta, svdvals(w)[0])


@given(matrices(), st.integers(0, 6))
def test_p3_p4_monotone_and_rank_envelope(w, n_iter):
    """P3: beta_{t+1} <= beta_t; P4: beta_t <= rank^{2^{-(t+1)}} sigma_1 (equality at rank 1)."""
    x = torch.as_tensor(w)
    b0, b1 = float(gram_iteration(x, n_iter)), float(gram_iteration(x, n_iter + 1))
    assert b1 <= b0 * (1 + ROUNDING_RTOL)
    s = svdvals(w)
    rank = int(np.sum(s > s[0] * 1e-13)) if s[0] > 0 else 0
    assert b0 <= max(rank, 1) ** 2.0 ** -(n_iter + 1) * s[0] * (1 + ROUNDING_RTOL)


@given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**32 - 1), st.integers(0, 8))
def test_p4_rank_one_is_exact(p, q, seed, n_iter):
    rng = np.random.default_rng(seed)
    u, v = rng.standard_normal(p), rng.standard_normal(q)
    w = np.outer(u, v)
    sigma = np.linalg.norm(u) * np.linalg.norm(v)
    beta = float(gram_iteration(t64(w), n_iter))
    assert abs(beta / sigma - 1) <= 1e-13 * (n_iter + 2)


@given(st.integers(0, 2**32 - 1))
def test_p5_quadratic_error_recursion(seed):
    """P5: a_t = (beta_t/sigma_1)^{2^{t+1}} - 1 satisfies a_{t+1} <= a_t^2 and
    a_{t+1} <= (sigma_2/sigma_1)^{2^{t+1}} a_t, checked in log space while a_t >> rounding."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((8, 6))
    s = svdvals(w)
    x = t64(w)
    a = []
    for t in range(8):
        log_ratio = math.log(float(gram_iteration(x, t)) / s[0])
        a.append(math.expm1(2 ** (t + 1) * log_ratio))
    for t in range(7):
        if a[t] < 1e-6:  # below this a_{t+1} is rounding noise (2^{t+2} u relative)
            break
        tol = 2 ** (t + 3) * 1e-14
        assert a[t + 1] <= a[t] ** 2 + tol
        assert a[t + 1] <= (s[1] / s[0]) ** (2 ** (t + 1)) * a[t] + tol


@given(matrices(max_side=5), st.integers(0, 5), st.integers(0, 2**32 - 1))
def test_p6_scale_unitary_transpose_invariance(w, n_iter, seed):
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.standard_normal((w.shape[0],) * 2))[0]
    v = np.linalg.qr(rng.standard_normal((w.shape[1],) * 2))[0]
    base = float(gram_iteration(torch.as_tensor(w), n_iter))
    moved = float(gram_iteration(torch.as_tensor(-3.0 * u @ w @ v), n_iter))
    transposed = float(gram_iteration(torch.as_tensor(w.T), n_iter))
    assert moved == pytest.approx(3.0 * base, rel=EQUAL, abs=0.0)
    assert transposed == pytest.approx(base, rel=EQUAL, abs=0.0)


def naive_gram_iteration(w: torch.Tensor, n_iter: int) -> torch.Tensor:
    """The unrescaled iteration ||G_T||_F^{2^-T}, G_{t+1} = G_t^* G_t (overflows for large T)."""
    g = w
    for _ in range(n_iter):
        g = g.mH @ g
    return torch.linalg.matrix_norm(g) ** 2.0**-n_iter


@given(matrices(max_side=5), st.integers(0, 5))
def test_p7_rescaled_equals_unrescaled(w, n_iter):
    w = w / np.max(np.abs(w)) if np.any(w) else w  # keep the naive iteration in range
    x = torch.as_tensor(w)
    assert float(gram_iteration(x, n_iter)) == pytest.approx(
        float(naive_gram_iteration(x, n_iter)), rel=EQUAL, abs=0.0
    )


@pytest.mark.parametrize("n_iter", [0, 1, 4])
def test_p8_zero_matrix_gives_zero_and_zero_gradient(n_iter):
    """Regression (gram.md §6 item 2): the published code returns NaN."""
    w = torch.zeros(3, 5, dtype=torch.float64, requires_grad=True)
    value = gram_iteration(w, n_iter)
    assert value.item() == 0.0
    value.backward()
    assert torch.equal(w.grad, torch.zeros_like(w))


@pytest.mark.parametrize("scale", [1e-150, 1e150, 1e-300, 1e300])
def test_dense_no_overflow_at_extreme_scales(scale):
    w = np.random.default_rng(1).standard_normal((6, 4))
    beta = float(gram_iteration(t64(w * scale), 6))
    assert beta == pytest.approx(scale * schatten(w, 2.0**7), rel=EQUAL, abs=0.0)


def test_dense_n_iter_zero_is_frobenius():
    """Regression (gram.md §6 item 5): n_iter=0 crashed in the published code."""
    w = np.random.default_rng(2).standard_normal((4, 7)) + 1j
    assert float(gram_iteration(torch.as_tensor(w), 0)) == pytest.approx(
        np.linalg.norm(w), rel=EQUAL
    )


def test_dense_runs_all_iterations():
    """Regression (gram.md §6 item 4): the published dense backward variant returned after one
    Gram step (the Schatten-4 norm). After 10 steps beta is within rank^{2^-11} of sigma_1 and
    well below the Schatten-4 norm."""
    w = np.random.default_rng(3).standard_normal((30, 20))
    s = svdvals(w)
    beta = float(gram_iteration(t64(w), 10))
    assert upper(beta, s[0])
    assert beta <= 20**2.0**-11 * s[0] * (1 + ROUNDING_RTOL)
    assert beta < schatten(w, 4.0) * 0.99


def test_dense_grams_the_smaller_side(monkeypatch):
    """The first Gram product is min(p, q) x min(p, q)."""
    shapes = []
    original = torch.Tensor.__matmul__

    def spy(a, b):
        out = original(a, b)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(torch.Tensor, "__matmul__", spy)
    gram_iteration(torch.randn(9, 2, dtype=torch.float64), 2)
    gram_iteration(torch.randn(2, 9, dtype=torch.float64), 2)
    assert shapes and all(s == (2, 2) for s in shapes)


def test_dense_batched_equals_loop():
    w = torch.randn(3, 2, 4, 5, dtype=torch.float64)
    batched = gram_iteration(w, 3)
    assert batched.shape == (3, 2)
    for i in range(3):
        for j in range(2):
            assert float(batched[i, j]) == pytest.approx(
                float(gram_iteration(w[i, j], 3)), rel=1e-14
            )


@pytest.mark.parametrize("n_iter", [0, 1, 3, 5])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_dense_custom_backward_gradcheck(n_iter, dtype):
    w = torch.randn(2, 4, 3, dtype=dtype, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: gram_iteration(x, n_iter), (w,))


@pytest.mark.parametrize("n_iter", [0, 2, 5])
def test_dense_custom_backward_equals_autograd_of_schatten_formula(n_iter):
    """The closed-form gradient equals autograd through (sum sigma_i^p)^{1/p} (torch SVD)."""
    w = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(gram_iteration(w, n_iter), w)
    p = 2.0 ** (n_iter + 1)
    (ref,) = torch.autograd.grad(torch.linalg.svdvals(w).pow(p).sum().pow(1 / p), w)
    assert torch.allclose(grad, ref, rtol=1e-9, atol=1e-12)


def test_gram_iteration_refuses_bad_arguments():
    with pytest.raises(ValueError, match="n_iter"):
        gram_iteration(torch.ones(2, 2), -1)
    with pytest.raises(TypeError, match="n_iter"):
        gram_iteration(torch.ones(2, 2), 1.5)
    with pytest.raises(TypeError, match="matrix"):
        gram_iteration(np.ones((2, 2)), 1)
    with pytest.raises(ValueError, match="matrix"):
        gram_iteration(torch.ones(3), 1)


# ===================================================================== gram_dense (conv method)
@given(layers(max_channels=2, max_kernel=3, max_size=5, max_stride=2, max_dilation=2))
def test_gram_dense_is_an_upper_bound_for_every_layer(layer):
    kernel, spec = layer
    bound = compute("gram_dense", kernel, spec, n_iter=4)
    assert bound.kind == "upper"
    assert upper(bound.value, dense_norm(kernel, spec), kernel)
    assert close(bound.value, schatten(conv_matrix(kernel, spec), 2.0**5), kernel)


def test_dense_operator_torch_equals_conv_matrix():
    from specbound.bounds.gram import _dense_operator_torch

    rng = np.random.default_rng(4)
    for spec in [
        ConvSpec("zeros", (0, 1, 2, 0), (5, 4), stride=(2, 1), dilation=(1, 2), groups=2),
        ConvSpec("reflect", "same", (5, 6), stride=2),
        ConvSpec("circular", "full", (3, 3), dilation=2, groups=2),
        ConvSpec("replicate", 1, (4, 4)),
    ]:
        kernel = rng.standard_normal((4, 1, 3, 2))
        layer = ConvLayer(kernel, spec)
        ours, truth = _dense_operator_torch(t64(kernel), layer).numpy(), conv_matrix(kernel, spec)
        # equal up to the order in which taps reading one pixel (replicate edges) are summed
        assert np.max(np.abs(ours - truth)) <= 4e-16 * np.max(np.abs(kernel))


# ============================================================================ gram_circular
CIRCULANT = {"modes": ("circular",), "circulant": True, "max_channels": 3, "max_kernel": 4}


@given(layers(**CIRCULANT, max_size=7), st.integers(0, 7))
@example(layer=(np.array([[[[1.0, -2.0, 1.0], [0, 0, 0], [0, 0, 0]]]]),
                ConvSpec("circular", "same", (4, 4))), n_iter=6)  # fmt: skip
def test_c1_c2_circular_upper_bound_and_envelope(layer, n_iter):
    """C1: beta >= sigma_circ (wrapped kernel, n < k included, stride, dilation, groups);
    C2: beta <= min(c_o, c_i')^{2^{-(T+1)}} sigma_circ, equal when min = 1."""
    kernel, spec = layer
    value = compute("gram_circular", kernel, spec, n_iter=n_iter).value
    exact = exact_norm(kernel, spec)
    assert math.isfinite(value)
    assert upper(value, exact, kernel)
    c_out_g = kernel.shape[0] // spec.groups
    c_in_poly = kernel.shape[1] * spec.stride[0] * spec.stride[1]
    side = min(c_out_g, c_in_poly)
    assert value <= side**2.0 ** -(n_iter + 1) * exact * (1 + ROUNDING_RTOL) + noise(kernel)


@given(layers(**CIRCULANT, max_size=5))
def test_c1_against_dense_svd(layer):
    """C1 and C4 at once: the bound dominates numpy's SVD of the dense circular operator."""
    kernel, spec = layer
    value = compute("gram_circular", kernel, spec, n_iter=3).value
    assert upper(value, dense_norm(kernel, spec), kernel)


@given(layers(**CIRCULANT, max_size=6), st.integers(0, 5))
def test_c2_monotone_in_n_iter(layer, n_iter):
    kernel, spec = layer
    b0 = compute("gram_circular", kernel, spec, n_iter=n_iter).value
    b1 = compute("gram_circular", kernel, spec, n_iter=n_iter + 1).value
    assert b1 <= b0 * (1 + ROUNDING_RTOL) + noise(kernel)


@given(layers(**CIRCULANT, max_size=6), st.integers(0, 4))
def test_c3_half_spectrum_equals_full_spectrum_schatten(layer, n_iter):
    """C3: the rfft2 half-spectrum maximum equals the full-spectrum maximum of the per-frequency
    Schatten norms (numpy SVD of operators.frequency_matrices)."""
    kernel, spec = layer
    p = 2.0 ** (n_iter + 1)
    (blocks,) = frequency_matrices(ConvLayer(kernel, spec))
    expected = max(schatten(m, p) for m in blocks.reshape(-1, *blocks.shape[-2:]))
    value = compute("gram_circular", kernel, spec, n_iter=n_iter).value
    assert close(value, expected, kernel)


@given(layers(**CIRCULANT, max_size=6, max_groups=1, max_stride=1, max_dilation=1))
@example(layer=(np.array([[[[0.12573022]]]]), ConvSpec("circular", "same", 1)))  # 1x1 flip:
# negative strides on 1-wide axes; and taps that cancel on the wrapped grid, where the value
# is rounding noise that depends on the summation order (0.1 + 0.2 - 0.3 != -0.3 + 0.2 + 0.1)
@example(layer=(np.array([[[[0.1, 0.2, -0.3]]]]), ConvSpec("circular", "same", 1)))
def test_c5_flip_transpose_sign_invariance(layer):
    kernel, spec = layer
    base = compute("gram_circular", kernel, spec, n_iter=4).value
    for moved in (kernel[:, :, ::-1, ::-1], kernel.transpose(1, 0, 2, 3), -kernel):
        value = compute("gram_circular", np.ascontiguousarray(moved), spec, n_iter=4).value
        assert close(value, base, kernel)


@given(kernels((2, 3, 3, 2)), st.integers(1, 4), st.integers(2, 3))
def test_c5_dilation_equals_coarser_grid(kernel, m, d):
    """sigma_circ(dN; K dilated by d) = sigma_circ(N; K), and so does beta (same matrices)."""
    dilated = compute("gram_circular", kernel, ConvSpec("circular", "same", d * m, dilation=d))
    coarse = compute("gram_circular", kernel, ConvSpec("circular", "same", m))
    assert close(dilated.value, coarse.value, kernel)


def test_c7_vanishing_frequency_is_finite_and_exact():
    """C7 / regression (gram.md §6 item 2): [[1,-2,1],[0,0,0],[0,0,0]] has symbol
    (1 - e^{-iw})^2, zero at w = 0, modulus 4 sin^2(w/2), so sigma_circ(N) = 4 for even N."""
    kernel = np.array([[[[1.0, -2.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]])
    for n in (2, 4, 6, 8):
        spec = ConvSpec("circular", "same", n)
        value = compute("gram_circular", kernel, spec, n_iter=6).value
        assert abs(value - 4.0) <= 4.0 * 1e-14
        assert upper(value, dense_norm(kernel, spec))


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_circular_wraps_never_crops(n):
    """Regression (gram.md §6 item 1): for n < k the published code crops the kernel. An
    all-ones 5x5 kernel wrapped on n x n is non-negative with sum 25, so sigma_circ(n) = 25;
    cropping would give min(n, 5)^2."""
    kernel = np.ones((1, 1, 5, 5))
    spec = ConvSpec("circular", "same", n)
    value = compute("gram_circular", kernel, spec, n_iter=3).value
    assert abs(value - 25.0) <= 25.0 * 1e-14
    assert upper(value, dense_norm(kernel, spec))


@pytest.mark.parametrize("scale", [0.0, 1e-150, 1e150])
def test_circular_zero_and_extreme_scales(scale):
    kernel = np.random.default_rng(5).standard_normal((3, 2, 3, 3))
    spec = ConvSpec("circular", "same", 5)
    value = compute("gram_circular", kernel * scale, spec, n_iter=6).value
    if scale == 0.0:
        assert value == 0.0
    else:
        unit = compute("gram_circular", kernel, spec, n_iter=6).value
        assert value == pytest.approx(scale * unit, rel=EQUAL, abs=0.0)
        assert upper(value, exact_norm(kernel * scale, spec))


@given(layers(**CIRCULANT, max_size=6), st.integers(1, 7))
def test_circular_chunking_does_not_change_the_value(layer, chunk):
    kernel, spec = layer
    whole = compute("gram_circular", kernel, spec, n_iter=3).value
    parts = compute("gram_circular", kernel, spec, n_iter=3, chunk=chunk).value
    assert close(parts, whole, kernel)


@given(layers(**CIRCULANT, max_size=7))
def test_circular_dft_and_fft_routes_give_the_frequency_matrices(layer):
    """Both evaluations of the half-spectrum (direct DFT of the taps, rfft2 of the wrapped
    polyphase kernel) equal operators.frequency_matrices, and their adjoints its conjugate
    transpose; the power-of-two kernel scale is given back exactly by ``log_scale``."""
    kernel, spec = layer
    lay = ConvLayer(kernel, spec)
    (blocks,) = frequency_matrices(lay, half=True)  # (groups, F, m, n)
    expected = np.moveaxis(blocks, 0, 1)[:, None]  # (F, 1, groups, m, n)
    for taps in (DIRECT_DFT_MAX_TAPS, 0):  # the direct DFT, then the FFT of the wrapped kernel
        with mock.patch.object(gram_module, "DIRECT_DFT_MAX_TAPS", taps):
            spectrum = _CircularSpectrum(t64(kernel)[None], lay)
        assert (spectrum.stored is None) == (taps == DIRECT_DFT_MAX_TAPS)
        f = spectrum.n_freq
        assert f == expected.shape[0]
        scale = 2.0 ** round(float(spectrum.log_scale[0]) / math.log(2.0))  # exact
        got = spectrum.matrices(0, f).numpy() * scale
        assert np.max(np.abs(got - expected), initial=0.0) <= noise(kernel)


@given(layers(**CIRCULANT, max_size=6), st.integers(0, 6))
def test_circular_fft_route_is_the_same_bound(layer, n_iter):
    """Kernels with more than DIRECT_DFT_MAX_TAPS taps take the rfft2 route: same bound."""
    kernel, spec = layer
    direct = compute("gram_circular", kernel, spec, n_iter=n_iter).value
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gram_module, "DIRECT_DFT_MAX_TAPS", 0)
        fft = compute("gram_circular", kernel, spec, n_iter=n_iter).value
    assert close(fft, direct, kernel)
    assert upper(fft, exact_norm(kernel, spec), kernel)


@pytest.mark.parametrize("n", [4, 9, 12])
def test_circular_large_kernel_takes_the_fft_route(n):
    """A 9 x 9 kernel (81 taps) on grids smaller and larger than the kernel."""
    kernel = np.random.default_rng(11).standard_normal((2, 3, 9, 9))
    spec = ConvSpec("circular", "same", n)
    value = compute("gram_circular", kernel, spec, n_iter=6).value
    exact = exact_norm(kernel, spec)
    assert upper(value, exact, kernel)
    assert value <= 2 ** (2.0**-7) * exact * (1 + ROUNDING_RTOL) + noise(kernel)


@pytest.mark.parametrize("n_iter", [0, 1, 6])
def test_circular_float32_matches_float64(n_iter):
    """The float32 core agrees with float64 to float32 rounding (no TF32, no complex128)."""
    torch_func = get_method("gram_circular").torch_func
    generator = torch.Generator().manual_seed(3)
    kernel = torch.randn(8, 5, 3, 3, dtype=torch.float64, generator=generator)
    for spec in (ConvSpec("circular", "same", 8), ConvSpec("circular", "same", 8, stride=2)):
        layer = ConvLayer(kernel, spec)
        with torch.no_grad():
            v64 = float(torch_func(kernel, layer, n_iter=n_iter))
            v32 = torch_func(kernel.float(), layer, n_iter=n_iter)
        assert v32.dtype == torch.float32
        assert abs(float(v32) - v64) <= 1e-5 * v64


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_flush_of_tiny_parts_keeps_the_schatten_norm(dtype):
    """Iterates spanning more decades than the exponent range (eigenvalues 1 and 1e-3, so
    1e-3^(2^t) after t steps) are flushed below sqrt(tiny) before each product: the value is
    still the Schatten norm, to the dtype's rounding, and no product sees a subnormal."""
    from specbound.bounds.gram import _flush_tiny

    tiny = torch.finfo(dtype).tiny
    x = torch.tensor([1.0, -(tiny**0.5), 2 * tiny**0.5, tiny, 0.0], dtype=dtype)
    out = _flush_tiny(x, out=torch.empty_like(x))
    assert out.tolist() == [1.0, 0.0, 2 * tiny**0.5, 0.0, 0.0]
    s = np.array([1.0, 0.5, 1e-3])
    rng = np.random.default_rng(12)
    u, _ = np.linalg.qr(rng.standard_normal((3, 3)) + 1j * rng.standard_normal((3, 3)))
    v, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    w = (u * s) @ v.T
    complex_dtype = torch.complex64 if dtype == torch.float32 else torch.complex128
    for n_iter in (1, 4, 8, 12):
        value = float(gram_iteration(torch.as_tensor(w, dtype=complex_dtype), n_iter))
        p = 2.0 ** (n_iter + 1)
        expected = float(np.sum(s**p) ** (1 / p))
        assert abs(value - expected) <= (1e-5 if dtype == torch.float32 else 1e-13) * expected


def test_circular_refusals_name_the_parameter():
    kernel = np.ones((2, 2, 3, 3))
    method = get_method("gram_circular")
    with pytest.raises(ValueError, match="padding"):
        method(kernel, ConvSpec("zeros", "same", 6))
    with pytest.raises(ValueError, match="stride"):
        method(kernel, ConvSpec("circular", "same", 5, stride=2))
    with pytest.raises(ValueError, match="input_size"):
        method(kernel, ConvSpec("circular", "same", None))
    with pytest.raises(ValueError, match="pad"):
        method(kernel, ConvSpec("circular", "full", 6))
    with pytest.raises(ValueError, match="chunk"):
        method(kernel, ConvSpec("circular", "same", 6), chunk=0)


def test_polyphase_torch_equals_numpy():
    rng = np.random.default_rng(6)
    for spec, shape in [
        (
            ConvSpec("circular", "same", (6, 4), stride=(2, 2), dilation=(1, 2), groups=2),
            (4, 3, 3, 2),
        ),
        (ConvSpec("circular", (1, 0, 3, 1), (3, 2), stride=(3, 1)), (2, 2, 5, 2)),
        (ConvSpec("circular", "same", 2), (1, 1, 5, 5)),
    ]:
        kernel = rng.standard_normal(shape)
        layer = ConvLayer(kernel, spec)
        ours = polyphase_kernel_torch(t64(kernel), layer).numpy()
        assert np.array_equal(ours, polyphase_kernel(layer))


@pytest.mark.parametrize(
    "spec",
    [
        ConvSpec("circular", "same", 5),
        ConvSpec("circular", "same", 4, stride=2, groups=2),
        ConvSpec("circular", "same", (4, 6), dilation=(2, 3)),
        ConvSpec("circular", "same", 2),
    ],
)
@pytest.mark.parametrize("n_iter", [0, 3])
def test_circular_custom_backward_gradcheck(spec, n_iter):
    torch_func = get_method("gram_circular").torch_func
    kernel = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    layer = ConvLayer(kernel, spec)
    assert torch.autograd.gradcheck(lambda k: torch_func(k, layer, n_iter=n_iter), (kernel,))


# =============================================================== gram_zero (kernel Gram iteration)
def zero_layers_of(kernel: np.ndarray, dilation: int, stride: int) -> list[ConvSpec]:
    """Zero-padded layers of several sizes and pads (per side 0..d(k-1) and beyond), and
    circular ones, that :func:`gram_zero` must bound."""
    kh, kw = kernel.shape[2:]
    eh, ew = dilation * (kh - 1), dilation * (kw - 1)
    out = []
    for n in (1, 2, 3, 5, 7):
        for pad in ("same", "valid", "full", (0, eh + 1, ew, 0)):
            spec = ConvSpec("zeros", pad, n, stride, dilation)
            (top, bottom), (left, right) = spec.pads((kh, kw))
            if n + top + bottom > eh and n + left + right > ew:
                out.append(spec)
        out.append(ConvSpec("circular", "same", n, 1, dilation))
    return out


@given(
    kernels((2, 2, 3, 3)) | kernels((1, 3, 2, 3)) | kernels((3, 1, 3, 1)),
    st.integers(1, 4),
    st.integers(1, 2),
    st.integers(1, 2),
)
def test_z1_zero_bound_dominates_every_size_pad_stride(kernel, n_iter, dilation, stride):
    """Z1: beta_zero >= sigma_zero^{(P)}(n) for every n, pad, stride, and >= sigma_circ(N)."""
    value = None
    for spec in zero_layers_of(kernel, dilation, stride):
        bound = compute("gram_zero", kernel, spec, n_iter=n_iter).value
        value = bound if value is None else value
        assert bound == value  # n-free: the same number for every layer
        assert upper(bound, exact_norm(kernel, spec), kernel)


@given(layers(modes=("zeros",), max_channels=3, max_kernel=3, max_size=6, need_size=False))
def test_z1_on_drawn_layers(layer):
    kernel, spec = layer
    bound = compute("gram_zero", kernel, spec, n_iter=3).value
    assert math.isfinite(bound)
    if spec.input_size is not None:
        assert upper(bound, exact_norm(kernel, spec), kernel)


@given(kernels((3, 2, 3, 3)), st.integers(1, 5))
def test_z2_monotone_in_n_iter(kernel, n_iter):
    spec = ConvSpec("zeros")
    b0 = compute("gram_zero", kernel, spec, n_iter=n_iter).value
    b1 = compute("gram_zero", kernel, spec, n_iter=n_iter + 1).value
    assert b1 <= b0 * (1 + ROUNDING_RTOL) + noise(kernel)


@given(kernels((2, 3, 3, 3), families=("gaussian", "rank_one", "integer")), st.integers(1, 4))
def test_z3_envelope(kernel, n_iter):
    """Z3: beta_T <= (sqrt(c)(2^T(k-1)+1))^{2^-T} sigma_circ(N) / sqrt(1 - 2 pi^2 (k-1)^2/N^2),
    c = the Gram side (min channels), N = 64 > sqrt(2) pi (k-1)."""
    n, k, c = 64, 3, 2
    sigma = exact_norm(kernel, ConvSpec("circular", "same", n))
    cap = sigma / math.sqrt(1 - 2 * math.pi**2 * (k - 1) ** 2 / n**2)
    envelope = (math.sqrt(c) * (2**n_iter * (k - 1) + 1)) ** 2.0**-n_iter
    value = compute("gram_zero", kernel, ConvSpec("zeros"), n_iter=n_iter).value
    assert value <= envelope * cap * (1 + ROUNDING_RTOL)


@given(kernels((3, 2, 3, 2)) | kernels((2, 4, 2, 3)))
def test_z4_first_step_is_the_conv2d_row_sum(kernel):
    """Z4: beta_1 = max_i sqrt(sum |conv2d(K, K, padding=k-1)|_{i, ., .}) on the smaller side."""
    x = t64(kernel)
    if x.shape[1] < x.shape[0]:
        x = x.transpose(0, 1).contiguous()
    kh, kw = x.shape[2:]
    rows = F.conv2d(x, x, padding=(kh - 1, kw - 1)).abs().sum(dim=(1, 2, 3))
    expected = float(rows.max().sqrt())
    value = compute("gram_zero", kernel, ConvSpec("zeros"), n_iter=1).value
    assert close(value, expected, kernel)


@pytest.mark.parametrize("shape", [(3, 2, 3, 3), (2, 2, 2, 4), (2, 3, 1, 1), (2, 1, 7, 5)])
@pytest.mark.parametrize("n_iter", [1, 2, 3])
def test_z5_self_correlation_size_and_symmetry(shape, n_iter):
    kernel = torch.randn(1, *shape, dtype=torch.float64)
    x, _ = _kernel_gram_log_iterate(kernel, n_iter)
    kh, kw = shape[2:]
    assert x.shape == (1, shape[0], shape[0], 2**n_iter * (kh - 1) + 1, 2**n_iter * (kw - 1) + 1)
    mirrored = x.transpose(1, 2).flip(-2, -1)
    assert torch.allclose(x, mirrored, rtol=0, atol=1e-13 * float(x.abs().max()))


@pytest.mark.parametrize("shape", [(3, 2, 3, 3), (2, 3, 5, 4), (4, 4, 7, 7)])
def test_self_correlation_routes_agree(shape):
    """Direct conv2d and FFT routes compute the same full correlation (FFT rounding is relative
    to the largest entry)."""
    from specbound.bounds.gram import _correlate_direct, _correlate_fft

    x = torch.randn(2, *shape, dtype=torch.float64)
    direct, fft = _correlate_direct(x), _correlate_fft(x)
    assert torch.allclose(fft, direct, rtol=0, atol=1e-13 * float(direct.abs().max()))
    one = x[:, :, :, :1, :1]
    direct = _correlate_direct(one)
    assert torch.allclose(
        _self_correlation(one), direct, rtol=0, atol=1e-15 * float(direct.abs().max())
    )


@given(kernels((2, 2, 3, 2)), st.integers(1, 3), st.integers(2, 3))
def test_z6_dilation_invariance_and_bound(kernel, n_iter, d):
    plain = compute("gram_zero", kernel, ConvSpec("zeros"), n_iter=n_iter).value
    spec = ConvSpec("zeros", "same", 5, dilation=d)
    dilated = compute("gram_zero", kernel, spec, n_iter=n_iter).value
    assert dilated == plain
    assert upper(dilated, exact_norm(kernel, spec), kernel)


@given(kernels((3, 2, 3, 3)), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_z7_scale_flip_permutation_invariance(kernel, n_iter, seed):
    rng = np.random.default_rng(seed)
    spec = ConvSpec("zeros")
    base = compute("gram_zero", kernel, spec, n_iter=n_iter).value
    moved = [
        -2.5 * kernel,
        kernel[:, :, ::-1, ::-1],
        kernel[rng.permutation(3)],
        kernel[:, rng.permutation(2)],
    ]
    factors = [2.5, 1.0, 1.0, 1.0]
    for m, f in zip(moved, factors, strict=True):
        value = compute("gram_zero", np.ascontiguousarray(m), spec, n_iter=n_iter).value
        assert close(value, f * base, m)


@given(st.integers(1, 4), st.integers(1, 4), st.integers(0, 2**32 - 1), st.integers(1, 5))
def test_z8_tight_canary_single_channel_nonnegative(kh, kw, seed, n_iter):
    """Z8: c_i = c_o = 1 and K >= 0: beta_T = sum K = S = sigma_circ(N) for every N."""
    kernel = np.abs(np.random.default_rng(seed).standard_normal((1, 1, kh, kw)))
    total = float(kernel.sum())
    value = compute("gram_zero", kernel, ConvSpec("zeros"), n_iter=n_iter).value
    assert abs(value / total - 1) <= 1e-13 * (n_iter + 1)
    for n in (1, 3, 8):
        assert upper(value, exact_norm(kernel, ConvSpec("circular", "same", n)))


def test_zero_bound_uses_the_side_with_fewer_channels():
    """Regression (gram.md §6 item 6): the published code Grams the side with more channels.
    beta must equal max t_i computed on the input side (K^T) when c_in < c_out, and the
    output-side value must be a (looser here) bound too."""
    kernel = np.random.default_rng(7).standard_normal((6, 2, 3, 3))
    x = t64(kernel)
    value = compute("gram_zero", kernel, ConvSpec("zeros"), n_iter=2).value
    input_side = float(rescaling_factors(x.transpose(0, 1), 2).max())
    output_side = float(rescaling_factors(x, 2).max())
    assert value == pytest.approx(input_side, rel=EQUAL, abs=0.0)
    assert value != pytest.approx(output_side, rel=1e-6)


def test_zero_bound_groups_is_max_over_groups():
    rng = np.random.default_rng(8)
    kernel = rng.standard_normal((4, 3, 3, 3))
    kernel[2:] *= 3.0
    grouped = compute("gram_zero", kernel, ConvSpec("zeros", groups=2), n_iter=3).value
    blocks = [
        compute("gram_zero", kernel[i : i + 2], ConvSpec("zeros"), n_iter=3).value for i in (0, 2)
    ]
    assert grouped == max(blocks)
    spec = ConvSpec("zeros", "same", 4, groups=2)
    assert upper(grouped, exact_norm(kernel, spec))


@pytest.mark.parametrize("scale", [0.0, 1e-150, 1e150])
def test_zero_bound_zero_kernel_and_scales(scale):
    kernel = np.random.default_rng(9).standard_normal((2, 3, 3, 3))
    value = compute("gram_zero", kernel * scale, ConvSpec("zeros"), n_iter=4).value
    if scale == 0.0:
        assert value == 0.0
    else:
        unit = compute("gram_zero", kernel, ConvSpec("zeros"), n_iter=4).value
        assert value == pytest.approx(scale * unit, rel=EQUAL, abs=0.0)


def test_zero_refusals_name_the_parameter():
    kernel = np.ones((2, 2, 3, 3))
    method = get_method("gram_zero")
    for mode in ("reflect", "replicate"):
        with pytest.raises(ValueError, match="padding"):
            method(kernel, ConvSpec(mode, "same", 6))
    with pytest.raises(ValueError, match="pad"):
        method(kernel, ConvSpec("circular", "full", 6))
    with pytest.raises(ValueError, match="n_iter"):
        method(kernel, ConvSpec("zeros"), n_iter=0)


@pytest.mark.parametrize("groups,shape", [(1, (3, 2, 3, 3)), (2, (4, 1, 2, 3)), (1, (2, 3, 1, 1))])
def test_zero_gradcheck(groups, shape):
    torch_func = get_method("gram_zero").torch_func
    kernel = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    layer = ConvLayer(kernel, ConvSpec("zeros", groups=groups))
    assert torch.autograd.gradcheck(lambda k: torch_func(k, layer, n_iter=3), (kernel,))


# ======================================================================= spectral rescaling
@given(
    kernels((3, 2, 3, 3)) | kernels((2, 3, 2, 3)) | kernels((1, 2, 1, 1)),
    st.integers(1, 3),
)
def test_s1_rescaled_conv_is_1_lipschitz(kernel, n_iter):
    """S1: ||diag(t)^{-1} op(K)|| <= 1 for circular (any N), zero padding, stride, dilation."""
    t = rescaling_factors(t64(kernel), n_iter).numpy()
    assert np.all(np.isfinite(t)) and np.all(t >= 0)
    live = t > 0
    rescaled = np.zeros_like(kernel)
    rescaled[live] = kernel[live] / t[live, None, None, None]
    for spec in (
        ConvSpec("circular", "same", 1),
        ConvSpec("circular", "same", 4, stride=2),
        ConvSpec("zeros", "same", 5, dilation=2),
        ConvSpec("zeros", "full", 3, stride=2),
    ):
        assert exact_norm(rescaled, spec) <= 1 + ROUNDING_RTOL


@given(matrices(max_side=6).filter(lambda w: np.isrealobj(w)), st.integers(1, 5))
def test_s1_s3_dense_rescaling(w, n_iter):
    t = rescaling_factors_dense(t64(w), n_iter).numpy()
    live = t > 0
    assert np.array_equal(live, np.any(w != 0, axis=1))  # S7: t_i = 0 iff row i is zero
    scaled = np.zeros_like(w)
    scaled[live] = w[live] / t[live, None]
    assert svdvals(scaled)[0] <= 1 + ROUNDING_RTOL
    assert upper(float(t.max()), svdvals(w)[0])  # S3


@given(kernels((3, 2, 3, 2)))
def test_s2_one_step_is_aol(kernel):
    """S2: T = 1 is AOL on the output side: t_i = sqrt(sum_{j,delta} |conv2d(K,K,pad=k-1)|)."""
    x = t64(kernel)
    aol = F.conv2d(x, x, padding=(2, 1)).abs().sum(dim=(1, 2, 3)).sqrt()
    t = rescaling_factors(x, 1)
    assert torch.allclose(t, aol, rtol=EQUAL, atol=0)


def test_s3_max_factor_is_the_zero_bound_on_the_output_side():
    kernel = np.random.default_rng(10).standard_normal((2, 5, 3, 3))  # c_out < c_in
    t = rescaling_factors(t64(kernel), 3)
    value = compute("gram_zero", kernel, ConvSpec("zeros"), n_iter=3).value
    assert float(t.max()) == pytest.approx(value, rel=EQUAL, abs=0.0)


@given(kernels((3, 2, 3, 3)) | kernels((3, 2, 1, 1)), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_s5_residual_variant(kernel, n_iter, seed):
    """S5: q = 1 gives t^2; for any q > 0, ||diag(t_res)^{-1/2} op(K)|| <= 1."""
    x = t64(kernel)
    ones = rescaling_factors_residual(x, n_iter, torch.ones(3, dtype=torch.float64))
    assert torch.allclose(ones, rescaling_factors(x, n_iter) ** 2, rtol=EQUAL, atol=0)
    q = t64(np.random.default_rng(seed).uniform(0.1, 10.0, 3))
    t_res = rescaling_factors_residual(x, n_iter, q).numpy()
    live = t_res > 0
    scaled = np.zeros_like(kernel)
    scaled[live] = kernel[live] / np.sqrt(t_res[live])[:, None, None, None]
    for spec in (ConvSpec("circular", "same", 3), ConvSpec("zeros", "same", 4)):
        assert exact_norm(scaled, spec) <= 1 + ROUNDING_RTOL


def test_s5_residual_dense_matrix():
    w = np.random.default_rng(11).standard_normal((4, 6))
    q = t64([0.5, 1.0, 2.0, 4.0])
    t_res = rescaling_factors_residual(t64(w), 3, q).numpy()
    assert svdvals(w / np.sqrt(t_res)[:, None])[0] <= 1 + ROUNDING_RTOL


@given(matrices(max_side=5).filter(lambda w: np.isrealobj(w)), st.integers(0, 2**32 - 1))
def test_s6_equivariance(w, seed):
    """S6: t(P W) = P t(W); t(W V) = t(W) for orthogonal V."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(w.shape[0])
    v = np.linalg.qr(rng.standard_normal((w.shape[1],) * 2))[0]
    t = rescaling_factors_dense(t64(w), 2)
    assert torch.allclose(rescaling_factors_dense(t64(w[perm]), 2), t[perm], rtol=1e-12, atol=0)
    rotated = rescaling_factors_dense(t64(w @ v), 2)
    assert torch.allclose(rotated, t, rtol=1e-9, atol=1e-9 * float(t.max()))


def test_s7_zero_channel_no_nan_and_finite_gradient():
    kernel = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    kernel[1] = 0.0
    kernel.requires_grad_(True)
    t = rescaling_factors(kernel, 3)
    assert t[1].item() == 0.0 and bool((t[[0, 2]] > 0).all())
    t.sum().backward()
    assert bool(torch.isfinite(kernel.grad).all())
    zero = torch.zeros(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.equal(rescaling_factors(zero, 2), torch.zeros(2, dtype=torch.float64))
    rescaling_factors(zero, 2).sum().backward()
    assert torch.equal(zero.grad, torch.zeros_like(zero))


def test_rescaling_groups_and_batch():
    kernel = torch.randn(2, 4, 3, 3, 3, dtype=torch.float64)
    t = rescaling_factors(kernel, 2, groups=2)
    assert t.shape == (2, 4)
    for b in range(2):
        for g in range(2):
            block = kernel[b, 2 * g : 2 * g + 2]
            assert torch.allclose(t[b, 2 * g : 2 * g + 2], rescaling_factors(block, 2), rtol=1e-13)


def test_rescaling_gradcheck():
    kernel = torch.randn(3, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    q = torch.rand(3, dtype=torch.float64) + 0.5
    q.requires_grad_(True)
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda k: rescaling_factors(k, 3), (kernel,))
    assert torch.autograd.gradcheck(lambda m: rescaling_factors_dense(m, 2), (w,))
    assert torch.autograd.gradcheck(lambda k, qq: rescaling_factors_residual(k, 2, qq), (kernel, q))


def test_rescaling_refusals():
    kernel = torch.ones(2, 2, 3, 3)
    with pytest.raises(ValueError, match="n_iter"):
        rescaling_factors(kernel, 0)
    with pytest.raises(ValueError, match="groups"):
        rescaling_factors(torch.ones(3, 2, 3, 3), 1, groups=2)
    with pytest.raises(ValueError, match="q"):
        rescaling_factors_residual(kernel, 2, torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="q"):
        rescaling_factors_residual(kernel, 2, torch.ones(3))
    with pytest.raises(ValueError, match="kernel_or_matrix"):
        rescaling_factors_residual(torch.ones(2, 2, 2), 2, torch.ones(2))
