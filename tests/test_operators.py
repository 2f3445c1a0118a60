"""The exact operators against PyTorch and against each other (float64)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given
from hypothesis import strategies as st

import specbound as sb
from specbound.operators import (
    ConvLayer,
    circulant_spectrum,
    conv_matrix,
    conv_operator,
    conv_sparse,
    exact_norm,
    exact_route,
    symbol,
    symbol_grid_norm,
)
from specbound.testing import conv_specs, kernels, layers

TOL = 1e-12  # float64 rounding of sums of a few dozen products of O(1) numbers
CANCELLATION = 1e-14  # times sum|K|: absolute rounding of the frequency routes when taps cancel


def torch_forward(kernel, spec, x):
    """The layer as PyTorch computes it: F.pad with the mode, then F.conv2d."""
    (top, bottom), (left, right) = spec.pads(kernel.shape[2:])
    xt = torch.from_numpy(x)
    mode = "constant" if spec.padding == "zeros" else spec.padding
    xp = F.pad(xt, (left, right, top, bottom), mode=mode)
    out = F.conv2d(
        xp, torch.from_numpy(kernel), stride=spec.stride, dilation=spec.dilation, groups=spec.groups
    )
    return out.numpy()


def tiled_forward(kernel, spec, x):
    """Circular layer by explicit periodic tiling (independent of the index maps)."""
    (top, bottom), (left, right) = spec.pads(kernel.shape[2:])
    _, _, h, w = x.shape
    reps_h, reps_w = 2 + (top + bottom) // h + 2, 2 + (left + right) // w + 2
    big = np.tile(x, (1, 1, reps_h, reps_w))
    oh, ow = (top // h + 1) * h, (left // w + 1) * w  # origin of a copy inside the tiling
    xp = big[:, :, oh - top : oh + h + bottom, ow - left : ow + w + right]
    out = F.conv2d(
        torch.from_numpy(np.ascontiguousarray(xp)),
        torch.from_numpy(kernel),
        stride=spec.stride,
        dilation=spec.dilation,
        groups=spec.groups,
    )
    return out.numpy()


def scale_of(kernel, x):
    return max(1.0, np.abs(kernel).sum() * np.abs(x).max())


@given(layers(families=("gaussian", "integer", "rank_one")), st.integers(0, 2**31))
@example(  # input smaller than the kernel, circular pad wrapping more than once
    (np.arange(50.0).reshape(2, 1, 5, 5), sb.ConvSpec("circular", "full", (2, 3))), 0
)
@example((np.ones((1, 1, 3, 3)), sb.ConvSpec("replicate", 5, (1, 2))), 1)
@example((np.ones((2, 1, 2, 4)), sb.ConvSpec("reflect", "same", (2, 4), stride=3, groups=2)), 2)
def test_conv_matrix_equals_torch(layer, seed):
    kernel, spec = layer
    rng = np.random.default_rng(seed)
    c_in = kernel.shape[1] * spec.groups
    x = rng.standard_normal((1, c_in, *spec.input_size))
    a = conv_matrix(kernel, spec)
    (top, bottom), (left, right) = spec.pads(kernel.shape[2:])
    h, w = spec.input_size
    wraps_twice = max(top, bottom) > h or max(left, right) > w
    if spec.padding == "circular" and wraps_twice:  # torch refuses to wrap twice: tile
        expected = tiled_forward(kernel, spec, x)
    else:
        expected = torch_forward(kernel, spec, x)
    assert a.shape == (expected.size, x.size)
    err = np.abs(a @ x.ravel() - expected.ravel()).max()
    assert err <= TOL * scale_of(kernel, x)


@given(layers(modes=("circular",), families=("gaussian",)), st.integers(0, 2**31))
def test_circular_matches_periodic_tiling(layer, seed):
    kernel, spec = layer
    x = np.random.default_rng(seed).standard_normal(
        (1, kernel.shape[1] * spec.groups, *spec.input_size)
    )
    got = conv_matrix(kernel, spec) @ x.ravel()
    assert np.abs(got - tiled_forward(kernel, spec, x).ravel()).max() <= TOL * scale_of(kernel, x)


@given(layers(families=("gaussian", "integer")))
def test_sparse_equals_dense(layer):
    kernel, spec = layer
    dense = conv_matrix(kernel, spec)
    sparse = conv_sparse(kernel, spec)
    assert sparse.shape == dense.shape
    assert np.abs(sparse.toarray() - dense).max() <= TOL * max(1.0, np.abs(kernel).max())
    # pixels-first layout: the same operator with (H, W, c) ordering, blocks c_out x c_in
    blocked = conv_sparse(kernel, spec, layout="pixels_first")
    c_out, c_in = kernel.shape[0], kernel.shape[1] * spec.groups
    assert blocked.blocksize == (c_out, c_in)
    n_in = dense.shape[1] // c_in
    n_out = dense.shape[0] // c_out
    perm_in = np.arange(c_in * n_in).reshape(c_in, n_in).T.ravel()
    perm_out = np.arange(c_out * n_out).reshape(c_out, n_out).T.ravel()
    reordered = dense[perm_out][:, perm_in]
    assert np.abs(blocked.toarray() - reordered).max() <= TOL * max(1.0, np.abs(kernel).max())


def test_sparse_structure_is_toeplitz_and_circulant():
    """Stride 1, same pad: the (c_out x c_in) block at pixels (i, j), (p, q) depends only on the
    offset (p - i, q - j) for zeros padding (block Toeplitz) and on it modulo n for circular
    padding (block circulant)."""
    k = np.random.default_rng(3).standard_normal((2, 3, 3, 3))
    n = 5
    for mode in ("zeros", "circular"):
        spec = sb.ConvSpec(mode, "same", (n, n))
        b = conv_sparse(k, spec, layout="pixels_first").toarray().reshape(n, n, 2, n, n, 3)
        seen = {}
        for i, j, p, q in np.ndindex(n, n, n, n):
            offset = (p - i, q - j) if mode == "zeros" else ((p - i) % n, (q - j) % n)
            block = b[i, j, :, p, q, :]
            assert np.array_equal(seen.setdefault(offset, block), block)
        nonzero = sum(bool(np.any(v)) for v in seen.values())
        assert nonzero == 9  # exactly the nine taps of the 3x3 kernel appear as blocks


@given(layers(families=("gaussian",)), st.integers(0, 2**31), st.integers(1, 3))
def test_operator_matvec_and_adjoint(layer, seed, m):
    kernel, spec = layer
    a = conv_matrix(kernel, spec)
    op = conv_operator(kernel, spec)
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal(a.shape[1]), rng.standard_normal(a.shape[0])
    scale = max(1.0, np.abs(kernel).sum())
    assert op.shape == a.shape
    assert np.abs(op.matvec(x) - a @ x).max() <= TOL * scale * np.abs(x).max()
    assert np.abs(op.rmatvec(y) - a.T @ y).max() <= TOL * scale * np.abs(y).max()
    xs = rng.standard_normal((a.shape[1], m))
    assert np.abs(op.matmat(xs) - a @ xs).max() <= TOL * scale * np.abs(xs).max()
    assert np.abs(op.H.matvec(y) - a.T @ y).max() <= TOL * scale * np.abs(y).max()


@given(layers(modes=("circular",), circulant=True, max_size=7))
@example((np.arange(50.0).reshape(2, 1, 5, 5) - 20, sb.ConvSpec("circular", "same", (3, 3))))
@example((np.ones((1, 1, 3, 3)), sb.ConvSpec("circular", "same", (1, 1))))
@example(  # integer taps that cancel exactly on the 3-grid: dense 0, FFT rounding noise
    (np.array([[[[1.0, -2.0, 1.0, 1.0, -2.0, 1.0]]]]), sb.ConvSpec("circular", "same", (1, 3)))
)
def test_circulant_spectrum_equals_dense_svd(layer):
    kernel, spec = layer
    dense = np.linalg.svd(conv_matrix(kernel, spec), compute_uv=False)
    spectrum = circulant_spectrum(kernel, spec)
    assert spectrum.shape == dense.shape
    allowance = 1e-11 * dense[0] + CANCELLATION * np.abs(kernel).sum()
    assert np.abs(spectrum - dense).max() <= allowance
    assert np.all(np.diff(spectrum) <= 0)


@given(layers(max_size=6))
def test_exact_norm_equals_dense_svd(layer):
    kernel, spec = layer
    dense = np.linalg.norm(conv_matrix(kernel, spec), 2)
    value = exact_norm(kernel, spec)
    assert abs(value - dense) <= 1e-11 * dense + CANCELLATION * np.abs(kernel).sum()
    expected_route = "circulant" if ConvLayer(kernel, spec).is_circulant else "dense"
    assert exact_route(kernel, spec) == expected_route


@pytest.mark.parametrize("scale", [1e-150, 1e150])
def test_extreme_scales_are_exact(scale):
    k = np.random.default_rng(5).standard_normal((3, 2, 3, 3))
    for mode in ("zeros", "circular", "reflect"):
        spec = sb.ConvSpec(mode, "same", (5, 5))
        base = exact_norm(k, spec)
        assert abs(exact_norm(k * scale, spec) / scale - base) <= 1e-13 * base


def test_zero_kernel_norm_is_zero():
    for mode in ("zeros", "circular", "replicate"):
        assert exact_norm(np.zeros((2, 2, 3, 3)), sb.ConvSpec(mode, "same", (4, 4))) == 0.0
    assert np.all(
        circulant_spectrum(np.zeros((2, 1, 2, 2)), sb.ConvSpec("circular", "same", 4)) == 0
    )


@given(
    conv_specs(modes=("circular",), circulant=True, max_stride=1, max_groups=2),
    st.integers(0, 2**31),
)
def test_symbol_is_the_plane_wave_eigenvalue(drawn, seed):
    """A e_w v = e^{-i w p} symbol(-w) v e_w for plane waves on the grid (PyTorch correlation)."""
    shape, spec = drawn
    rng = np.random.default_rng(seed)
    kernel = rng.standard_normal(shape)
    h, w = spec.input_size
    u, v = rng.integers(0, h), rng.integers(0, w)
    omega = np.array([2 * np.pi * u / h, 2 * np.pi * v / w])
    c_in = shape[1] * spec.groups
    vec = rng.standard_normal(c_in) + 1j * rng.standard_normal(c_in)
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    wave = np.exp(1j * (omega[0] * ii + omega[1] * jj))
    x = vec[:, None, None] * wave
    (top, _), (left, _) = spec.pads(shape[2:])
    y = conv_matrix(kernel, spec) @ x.ravel()
    k_hat = symbol(kernel, -omega, dilation=spec.dilation, groups=spec.groups)
    phase = np.exp(-1j * (omega[0] * top + omega[1] * left))
    expected = (phase * (k_hat @ vec))[:, None, None] * wave
    assert np.abs(y - expected.ravel()).max() <= 1e-11 * max(1.0, np.abs(kernel).sum())


def test_symbol_grid_norm_is_circular_norm_and_batched_symbol_shape():
    k = np.random.default_rng(7).standard_normal((3, 2, 3, 2))
    spec = sb.ConvSpec("circular", "same", (6, 4))
    assert abs(symbol_grid_norm(k, (6, 4)) - np.linalg.norm(conv_matrix(k, spec), 2)) <= 1e-12 * 10
    omegas = np.random.default_rng(8).uniform(0, 2 * np.pi, size=(4, 5, 2))
    assert symbol(k, omegas).shape == (4, 5, 3, 2)
    with pytest.raises(ValueError, match="omega"):
        symbol(k, np.zeros(3))


def test_size_guard_refuses_before_allocating():
    k = np.ones((64, 64, 3, 3))
    spec = sb.ConvSpec("zeros", "same", (64, 64))
    with pytest.raises(sb.TooLargeError, match="max_bytes"):
        conv_matrix(k, spec)  # 262144^2 * 8 bytes = 512 GiB: must refuse at once
    with pytest.raises(sb.TooLargeError, match="max_bytes"):
        conv_matrix(np.ones((1, 1, 3, 3)), sb.ConvSpec("zeros", "same", (8, 8)), max_bytes=1000)
    with pytest.raises(sb.TooLargeError):
        exact_norm(k, spec)
    # the circulant route needs no dense matrix, so the same size is fine there
    assert exact_norm(np.ones((1, 1, 3, 3)), sb.ConvSpec("circular", "same", (512, 512))) == 9.0


def test_circulant_route_refusals_say_what_works():
    k = np.ones((1, 1, 3, 3))
    with pytest.raises(ValueError, match="padding='circular'"):
        circulant_spectrum(k, sb.ConvSpec("zeros", "same", 4))
    with pytest.raises(ValueError, match="stride"):
        circulant_spectrum(k, sb.ConvSpec("circular", "same", 5, stride=2))
    with pytest.raises(ValueError, match="in total per axis"):
        circulant_spectrum(k, sb.ConvSpec("circular", 0, 5))
    with pytest.raises(ValueError, match="input_size"):
        circulant_spectrum(k, sb.ConvSpec("circular", "same", None))
    with pytest.raises(ValueError, match="input_size"):
        exact_norm(k, sb.ConvSpec("zeros", "same", None))


@given(kernels((2, 3, 3, 3)))
def test_kernel_families_give_finite_exact_norms(kernel):
    value = exact_norm(kernel, sb.ConvSpec("zeros", "same", (4, 4)))
    assert np.isfinite(value) and value >= 0


@pytest.mark.parametrize("scale", [1.0, 1e-300, 1e300, 5e-324])
def test_dense_norm_of_the_testing_helpers(scale):
    """``specbound.testing.dense_norm`` at extreme scales: the all-ones 3x3 circular kernel has
    norm 9 (its DC frequency), so ``scale * ones`` has ``9 * scale``, neither under- nor
    overflowing; the zero kernel has norm 0."""
    from specbound.testing import ROUNDING_RTOL, dense_norm

    spec = sb.ConvSpec("circular", input_size=(5, 4))
    value = dense_norm(np.full((1, 1, 3, 3), scale), spec)
    assert abs(value - 9 * scale) <= ROUNDING_RTOL * 9 * scale
    assert dense_norm(np.zeros((2, 1, 3, 3)), spec) == 0.0
