"""The frequency engine (specbound.operators.frequency) against a direct DFT of the dense
circular operator, in extended precision, one-sided against its entrywise error bound."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import specbound as sb
from specbound.operators import conv_matrix
from specbound.operators.frequency import FrequencyEngine

LD = np.longdouble
PI = LD("3.14159265358979323846264338327950288")
LD_SLACK = 2.0**-58  # relative error of the long-double reference (u = 2^-64), generously


def dense_row_zero(kernel, size, lo, stride, dilation, groups):
    """Row 0 of every output channel of the strided circular layer, by index arithmetic in
    long double: ``A0[o, c_global, t]`` (``t`` over the input grid), collisions summed."""
    c_out, c_in_g = kernel.shape[:2]
    k = kernel.shape[2:]
    a0 = np.zeros((c_out, c_in_g * groups, *size), dtype=LD)
    p = c_out // groups
    for taps in itertools.product(*(range(n) for n in k)):
        t = tuple((d * a - low) % n for a, d, low, n in zip(taps, dilation, lo, size, strict=True))
        for o in range(c_out):
            g = o // p
            for c in range(c_in_g):
                a0[(o, g * c_in_g + c, *t)] += LD(kernel[(o, c, *taps)])
    return a0


def direct_dft(kernel, size, lo, stride, dilation, groups, freqs):
    """``M(u)[g, o, (c, r)] = sum_j A0[o, c, s j + r] exp(-2 pi i u.j / m)`` from the dense
    row: shape ``(F, groups, p, c_in_g * prod(s))``, complex long double."""
    a0 = dense_row_zero(kernel, size, lo, stride, dilation, groups)
    c_out, c_in_g = kernel.shape[:2]
    p, d = c_out // groups, len(size)
    m = [n // s for n, s in zip(size, stride, strict=True)]
    out = np.zeros((len(freqs), groups, p, c_in_g * math.prod(stride)), dtype=np.clongdouble)
    phases = list(itertools.product(*(range(s) for s in stride)))
    for f, u in enumerate(freqs):
        for j in itertools.product(*(range(mm) for mm in m)):
            turns = sum(LD(int(u[ax]) * j[ax] % m[ax]) / LD(m[ax]) for ax in range(d))
            w = np.cos(2 * PI * turns) - 1j * np.sin(2 * PI * turns)
            for ri, r in enumerate(phases):
                t = tuple(s * jj + rr for s, jj, rr in zip(stride, j, r, strict=True))
                for g in range(groups):
                    block = a0[(slice(g * p, (g + 1) * p), slice(g * c_in_g, (g + 1) * c_in_g), *t)]
                    out[f, g, :, ri :: len(phases)] += block * w
    return out


@st.composite
def geometries(draw, d=None):
    """A kernel and a circular geometry with the stride dividing the size, 1 to 3 axes."""
    d = draw(st.integers(1, 3)) if d is None else d
    groups = draw(st.integers(1, 2))
    c_out = groups * draw(st.integers(1, 2))
    c_in_g = draw(st.integers(1, 2))
    k = tuple(draw(st.integers(1, 3)) for _ in range(d))
    stride = tuple(draw(st.integers(1, 2)) for _ in range(d))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(d))
    size = tuple(s * draw(st.integers(1, 4 if d < 3 else 2)) for s in stride)
    lo = tuple(draw(st.integers(0, dd * (kk - 1) + 1)) for dd, kk in zip(dilation, k, strict=True))
    values = st.floats(-4, 4, allow_nan=False, allow_subnormal=False)
    kernel = draw(hnp.arrays(np.float64, (c_out, c_in_g, *k), elements=values))
    return kernel, size, lo, stride, dilation, groups


def engine_of(case):
    kernel, size, lo, stride, dilation, groups = case
    return FrequencyEngine(
        torch.from_numpy(kernel), size, lo=lo, stride=stride, dilation=dilation, groups=groups
    )


def deviation(engine_value: torch.Tensor, exact: np.ndarray) -> np.ndarray:
    """``|engine - exact|`` entrywise, in long double."""
    got = engine_value.numpy().astype(np.clongdouble)
    return np.abs(got - exact)


@given(geometries())
@example(  # wrapped taps (k > n), stride 2, dilation 2, two groups, three axes
    (np.arange(-8.0, 8.0).reshape(2, 1, 2, 2, 2), (2, 2, 2), (1, 0, 2), (2, 1, 2), (2, 2, 1), 2)
)
def test_grid_is_the_dft_of_the_dense_operator_within_the_bound(case):
    kernel, size, lo, stride, dilation, groups = case
    engine = engine_of(case)
    freqs = engine.frequencies(np.arange(engine.n_frequencies(half=False)), half=False)
    exact = direct_dft(kernel, size, lo, stride, dilation, groups, freqs)
    got = engine.on_grid(half=False)  # (F, g, p, q)
    bound = engine.entry_bound().numpy()  # (g, p, q)
    slack = LD_SLACK * (np.abs(kernel).sum() + 1e-300)
    assert np.all(deviation(got, exact) <= bound[None] + slack)
    # the bound is not vacuous: a few hundred units in the last place of the tap sums
    assert np.all(bound <= 1e-13 * engine.abs_matrix().numpy() + 1e-300)


@given(geometries(d=2))
def test_two_dimensional_dense_row_is_conv_matrix(case):
    """The test's own dense operator agrees with specbound's conv_matrix (row 0)."""
    kernel, size, lo, stride, dilation, groups = case
    k = kernel.shape[2:]
    ext = [dd * (kk - 1) for dd, kk in zip(dilation, k, strict=True)]
    if any(lo_ > e for lo_, e in zip(lo, ext, strict=True)):
        return  # ConvSpec wants the low pad within d(k-1) for the circulant
    pad = (lo[1], ext[1] - lo[1], lo[0], ext[0] - lo[0])
    spec = sb.ConvSpec("circular", pad, size, stride, dilation, groups)
    a = conv_matrix(kernel, spec)
    c_out = kernel.shape[0]
    out_pixels = a.shape[0] // c_out
    rows = a[::out_pixels].reshape(c_out, -1, *size)
    ours = dense_row_zero(kernel, size, lo, stride, dilation, groups)
    # equal but for the float64 rounding of taps wrapped onto one pixel (a few ulps)
    assert np.all(np.abs(rows - ours) <= 1e-15 * np.abs(kernel).sum())


@given(geometries())
def test_half_spectrum_chunks_and_fft_agree_with_the_full_grid(case):
    engine = engine_of(case)
    bound = torch.as_tensor(engine.entry_bound())
    full = engine.on_grid(half=False)
    half_index = np.arange(engine.n_frequencies(half=True))
    u = engine.frequencies(half_index, half=True)
    full_index = np.ravel_multi_index(tuple(u.T), engine.grid)
    half = engine.on_grid(half=True)
    assert torch.all((half - full[full_index]).abs() <= 2 * bound)
    chunked = torch.cat([m for _, m in engine.chunks(half=True, chunk=3)])
    assert torch.all((chunked - half).abs() <= 2 * bound)
    starts = [s for s, _ in engine.chunks(half=True, chunk=3)]
    assert starts == list(range(0, len(half_index), 3))
    fft = engine.on_grid_fft(half=True)  # no bound claimed: FFT rounding, O(log F) ulps
    tol = 1e-13 * (np.abs(case[0]).sum() + 1e-300)
    assert torch.all((fft - half).abs() <= tol)


@given(geometries())
def test_points_on_the_grid_are_the_grid_matrices(case):
    engine = engine_of(case)
    index = np.arange(engine.n_frequencies(half=False))
    u = engine.frequencies(index, half=False)
    omega = 2 * np.pi * u / np.array(engine.grid)
    points = engine.at_points(omega)
    # both within the bound of the exact value: within twice the bound of each other (the
    # point angle 2 pi u / m is rounded once more, inside the phase error allowed)
    bound = engine.entry_bound()
    assert torch.all((points - engine.on_grid(half=False)).abs() <= 2 * bound)


@given(geometries(), st.lists(st.floats(-2 * np.pi, 2 * np.pi), min_size=3, max_size=3))
def test_points_are_the_symbol_within_the_bound(case, angles):
    """At stride 1 the matrix at any omega is ``sum_a K_a e^{-i omega.(d a - lo)}``."""
    kernel, size, lo, _, dilation, groups = case
    d = len(size)
    engine = FrequencyEngine(
        torch.from_numpy(kernel), lo=lo, dilation=dilation, groups=groups, ndim=d
    )
    omega = np.array(angles[:d])[None]
    got = engine.at_points(omega)[0]  # (g, p, c_in_g)
    c_out, c_in_g = kernel.shape[:2]
    p = c_out // groups
    exact = np.zeros((groups, p, c_in_g), dtype=np.clongdouble)
    for taps in itertools.product(*(range(n) for n in kernel.shape[2:])):
        angle = sum(LD(omega[0, ax]) * LD(dilation[ax] * taps[ax] - lo[ax]) for ax in range(d))
        w = np.cos(angle) - 1j * np.sin(angle)
        exact += kernel[(slice(None), slice(None), *taps)].reshape(groups, p, c_in_g) * w
    slack = LD_SLACK * (np.abs(kernel).sum() + 1e-300)
    assert np.all(
        np.abs(got.numpy().astype(np.clongdouble) - exact) <= engine.entry_bound().numpy() + slack
    )


def test_error_bound_covers_the_spectral_norm_of_the_entrywise_error():
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3, 2, 3, 3))
    engine = FrequencyEngine(torch.from_numpy(kernel), (6, 4), lo=1, stride=2)
    fro = float(torch.linalg.matrix_norm(engine.entry_bound(), "fro").max())
    assert engine.error_bound() >= fro * (1 - 1e-15)
    assert engine.error_bound() <= 1e-12 * float(np.abs(kernel).sum())


def test_gradients_on_the_grid_and_at_points():
    rng = np.random.default_rng(1)
    kernel = torch.tensor(rng.standard_normal((2, 2, 2, 3)), requires_grad=True)

    def grid(k):
        return torch.view_as_real(FrequencyEngine(k, (4, 6), lo=(1, 0), stride=2).on_grid())

    def points(k):
        omega = torch.tensor([[0.3, -1.2], [2.0, 0.5]], dtype=torch.float64)
        return torch.view_as_real(FrequencyEngine(k, dilation=2).at_points(omega))

    assert torch.autograd.gradcheck(grid, (kernel,))
    assert torch.autograd.gradcheck(points, (kernel,))
    wrapped = FrequencyEngine(kernel, (4, 6), stride=2).wrapped()
    assert torch.autograd.gradcheck(
        lambda k: FrequencyEngine(k, (4, 6), stride=2).wrapped(), (kernel,)
    )
    assert wrapped.shape == (2, 3, 2, 2 * 4)


def test_float32_runs_and_the_bound_is_refused():
    engine = FrequencyEngine(torch.ones(1, 1, 3, dtype=torch.float32), 4, lo=1)
    assert engine.on_grid().dtype == torch.complex64
    with pytest.raises(ValueError, match="float64"):
        engine.error_bound()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": (5, 4), "stride": 2}, "multiples of the stride"),
        ({"size": (4, 4), "groups": 3}, "groups"),
        ({"size": (4, 4, 4)}, "spatial axes"),
        ({"size": (4, 4), "lo": (1, 2, 3)}, "lo must give one int per spatial axis"),
        ({"size": (4, 4), "dilation": 0}, "dilation"),
    ],
)
def test_bad_geometry_is_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FrequencyEngine(torch.ones(2, 1, 3, 3, dtype=torch.float64), **kwargs)


def test_bad_points_and_missing_size_are_refused():
    engine = FrequencyEngine(torch.ones(1, 1, 3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="no size"):
        engine.on_grid()
    with pytest.raises(ValueError, match="omega must have shape"):
        engine.at_points(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="finite"):
        engine.at_points(np.array([[np.nan, 0.0]]))
    with pytest.raises(TypeError, match=r"real torch\.Tensor"):
        FrequencyEngine(np.ones((1, 1, 3)))
