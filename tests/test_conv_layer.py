"""ConvLayer: one operator object for 1-, 2- and 3-D convolutions, plain and transposed,
checked against torch's own modules (Jacobians in float64), and the one pad order."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import specbound as sb
from specbound.operators import ConvLayer, exact_norm

MODES = ("zeros", "circular", "reflect", "replicate")
FORWARD = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}
TRANSPOSED = {1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d, 3: torch.nn.ConvTranspose3d}
# products of float64 taps with 0/1 entries are exact; only sums of several taps reading one
# input entry (padding that repeats entries) may round differently from torch's order:
# a few ulps of sum|K| per entry
RTOL = 1e-13


def _entries(dtype=np.float64):
    return st.floats(-4, 4, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def geometries(draw, transposed: bool):
    d = draw(st.sampled_from([1, 2, 3]))
    g = draw(st.sampled_from([1, 2]))
    c_a, c_b = g * draw(st.integers(1, 2)), g * draw(st.integers(1, 2))
    small = 2 if d == 3 else 3
    k = tuple(draw(st.integers(1, small)) for _ in range(d))
    s = tuple(draw(st.integers(1, 2)) for _ in range(d))
    dil = tuple(draw(st.integers(1, 2)) for _ in range(d))
    n = tuple(draw(st.integers(1, 4 if d == 3 else 6)) for _ in range(d))
    if transposed:
        mode = "zeros"
        pad = tuple(draw(st.integers(0, dl * (kk - 1))) for dl, kk in zip(dil, k, strict=True))
        opad = tuple(draw(st.integers(0, max(ss, dl) - 1)) for ss, dl in zip(s, dil, strict=True))
    else:
        mode = draw(st.sampled_from(MODES))
        # torch pads reflect by less than the size, circular by at most the size (specbound
        # wraps any circular pad: compared with torch where torch accepts it)
        most = {"reflect": -1, "circular": 0}
        limit = [
            min(dl * (kk - 1), nn + most[mode] if mode in most else 3)
            for dl, kk, nn in zip(dil, k, n, strict=True)
        ]
        pad = tuple(draw(st.integers(0, lim)) for lim in limit)
        opad = (0,) * d
    kernel = draw(arrays(np.float64, (c_a, c_b // g, *k), elements=_entries()))
    return d, mode, pad, s, dil, g, n, opad, kernel


def _module(d, mode, pad, s, dil, g, opad, kernel, transposed):
    c_a, per = kernel.shape[:2]
    if transposed:
        m = TRANSPOSED[d](
            c_a,
            per * g,
            kernel.shape[2:],
            stride=s,
            padding=pad,
            output_padding=opad,
            dilation=dil,
            groups=g,
            bias=False,
        )
    else:
        m = FORWARD[d](
            per * g,
            c_a,
            kernel.shape[2:],
            stride=s,
            padding=pad,
            dilation=dil,
            groups=g,
            bias=False,
            padding_mode=mode,
        )
    m = m.double()
    with torch.no_grad():
        m.weight.copy_(torch.from_numpy(kernel))
    return m


def _torch_out_size(m, c_in, n):
    try:
        with torch.no_grad():
            return tuple(m(torch.zeros(1, c_in, *n, dtype=torch.float64)).shape[2:])
    except RuntimeError:
        return None


def _check_against_torch(case, transposed):
    d, mode, pad, s, dil, g, n, opad, kernel = case
    m = _module(d, mode, pad, s, dil, g, opad, kernel, transposed)
    spec = sb.ConvSpec.from_module(m, input_size=n)
    c_in = kernel.shape[0] if transposed else kernel.shape[1] * g
    torch_size = _torch_out_size(m, c_in, n)
    if torch_size is None or min(torch_size) < 1:  # torch refuses: so must we
        with pytest.raises(ValueError):
            ConvLayer(kernel, spec)
        return
    layer = ConvLayer(kernel, spec)
    assert layer.out_size == torch_size
    dense = layer.dense()
    jac = torch.autograd.functional.jacobian(
        lambda v: m(v.reshape(1, c_in, *n)).reshape(-1),
        torch.zeros(layer.in_dim, dtype=torch.float64),
    ).numpy()
    assert dense.shape == jac.shape
    scale = np.abs(kernel).sum()
    assert np.abs(dense - jac).max() <= RTOL * scale
    assert np.array_equal(layer.sparse().toarray(), dense)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(layer.in_dim), rng.standard_normal(layer.out_dim)
    ax, aty = layer.matvec(x), layer.rmatvec(y)
    # float64 rounding: relative 1e-12 of the sums of |terms|, plus an absolute 2^-1074 per
    # product for kernels in the subnormal range (where rounding is absolute)
    tiny = dense.size * np.finfo(np.float64).smallest_subnormal
    assert np.abs(ax - dense @ x).max() <= 1e-12 * scale * np.abs(x).sum() + tiny
    assert np.abs(aty - dense.T @ y).max() <= 1e-12 * scale * np.abs(y).sum() + tiny
    # <Ax, y> = <x, A^T y>
    assert abs(ax @ y - x @ aty) <= 1e-12 * scale * np.abs(x).sum() * np.abs(y).sum() + tiny


@settings(max_examples=60, deadline=None)
@given(geometries(transposed=False))
@example((2, "circular", (0, 1), (1, 1), (1, 2), 1, (1, 1), (0, 0), np.zeros((1, 1, 1, 2))))
def test_forward_layers_equal_torch(case):
    _check_against_torch(case, transposed=False)


@settings(max_examples=60, deadline=None)
@given(geometries(transposed=True))
@example((1, "zeros", (2,), (1,), (2,), 1, (3,), (1,), np.ones((1, 1, 2))))  # opad >= stride
@example((1, "zeros", (0,), (2,), (1,), 1, (2,), (1,), np.array([[[5e-324, 1e-323]]])))
def test_transposed_layers_equal_torch(case):
    _check_against_torch(case, transposed=True)


@settings(max_examples=30, deadline=None)
@given(geometries(transposed=True))
@example((1, "zeros", (2,), (1,), (2,), 1, (3,), (1,), np.ones((1, 1, 2))))  # opad >= stride
@example((2, "zeros", (0, 1), (1, 2), (2, 1), 1, (3, 2), (1, 1), np.ones((1, 1, 2, 2))))
@example((1, "zeros", ((1, 0),), (1,), (2,), 1, (1,), (1,), np.ones((1, 1, 1))))  # zero map
def test_transposed_is_adjoint_of_forward_layer(case):
    d, mode, pad, s, dil, g, n, opad, kernel = case
    spec = sb.ConvSpec(mode, pad, n, s, dil, g, ndim=d, transposed=True, output_padding=opad)
    try:
        layer = ConvLayer(kernel, spec)
    except ValueError:
        return
    if any(o >= st_ for o, st_ in zip(opad, s, strict=True)):
        # L12, cropped form: the transposed matrix is the forward one's transpose with
        # max(q - hi, 0) zero rows appended per axis (the zero map when a size is < 1)
        if layer.is_zero_map:
            assert not np.any(layer.dense())
            with pytest.raises(ValueError, match="zero map"):
                layer.forward_layer()
            return
        fwd = layer.forward_layer()
        assert fwd.out_size == layer.input_size
        lead = (slice(None), *(slice(0, n) for n in fwd.input_size))
        full = layer.dense().reshape(layer.c_out, *layer.out_size, -1)
        assert np.array_equal(full[lead].reshape(fwd.in_dim, -1), fwd.dense().T)
        assert not np.any(np.delete(full.reshape(layer.out_dim, -1), _kept(fwd, layer), axis=0))
        return
    fwd = layer.forward_layer()
    assert layer.adjoint() is fwd  # LinearOperator.adjoint(): the forward ConvLayer itself
    assert fwd.input_size == layer.out_size and fwd.out_size == layer.input_size
    assert np.array_equal(fwd.dense().T, layer.dense())
    assert fwd.c_out == layer.c_in and fwd.c_in == layer.c_out


@pytest.mark.parametrize("mode", MODES)
def test_as_2d_has_the_same_matrix(mode):
    rng = np.random.default_rng(1)
    k = rng.standard_normal((4, 1, 3))
    spec = sb.ConvSpec(mode, 1, 7, stride=2, dilation=2, groups=2, ndim=1)
    layer = ConvLayer(k, spec)
    flat = layer.as_2d()
    assert flat.d == 2 and flat.input_size == (1, 7)
    assert np.array_equal(flat.dense(), layer.dense())


def test_exact_norm_in_3d_matches_svd():
    rng = np.random.default_rng(2)
    k = rng.standard_normal((2, 3, 2, 3, 2))
    spec = sb.ConvSpec("replicate", 1, (3, 4, 3), stride=(1, 2, 1))
    dense = ConvLayer(k, spec).dense()
    svd = np.linalg.svd(dense, compute_uv=False)[0]
    got = exact_norm(k, spec)
    assert abs(got - svd) <= 1e-12 * svd


# ------------------------------------------------------------------- pads
@given(
    st.sampled_from([1, 2, 3]),
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=3, max_size=3),
)
def test_pad_formats_round_trip(d, pairs):
    per_axis = tuple(pairs[:d])
    kernel_size = (3,) * d
    # torch.nn.functional.pad order: last axis first
    fpad = tuple(v for lo, hi in reversed(per_axis) for v in (lo, hi))
    assert sb.ConvSpec(pad=fpad, ndim=d).pads(kernel_size) == per_axis
    assert sb.ConvSpec(pad=per_axis).pads(kernel_size) == per_axis
    sym = tuple(lo for lo, _ in per_axis)
    assert sb.ConvSpec(pad=sym, ndim=d).pads(kernel_size) == tuple((p, p) for p in sym)
    assert sb.ConvSpec(pad=2).pads(kernel_size) == ((2, 2),) * d
    # and torch's F.pad agrees with the per-axis reading
    x = torch.randn(1, 1, *([3] * d), dtype=torch.float64)
    padded = F.pad(x, fpad)
    assert padded.shape[2:] == tuple(3 + lo + hi for lo, hi in per_axis)


def test_ndim_rules():
    assert sb.ConvSpec(stride=(1, 2, 2)).ndim == 3
    assert sb.ConvSpec(stride=2).ndim is None
    assert ConvLayer(np.ones((1, 1, 3)), sb.ConvSpec(stride=2)).spec.ndim == 1
    assert ConvLayer(np.ones((1, 1, 3, 3, 3)), sb.ConvSpec(stride=2)).stride == (2, 2, 2)
    with pytest.raises(ValueError, match="kernel must be 4-D"):
        ConvLayer(np.ones((1, 1, 3, 3, 3)), sb.ConvSpec(input_size=(4, 4)))
    one = sb.ConvSpec(pad=(1, 2), ndim=1)
    assert one.pads((3,)) == ((1, 2),)  # F.pad (lo, hi) of a 1-D layer


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("transposed", [False, True])
def test_from_module_reads_all_six(d, transposed):
    kind = (TRANSPOSED if transposed else FORWARD)[d]
    extra = {"output_padding": 1} if transposed else {"padding_mode": "zeros"}
    m = kind(2, 4, 3, stride=2, padding=1, dilation=1, groups=2, **extra)
    spec = sb.ConvSpec.from_module(m, input_size=5)
    assert spec.ndim == d and spec.transposed == transposed
    assert spec.stride == (2,) * d and spec.input_size == (5,) * d and spec.groups == 2
    assert spec.output_padding == ((1,) * d if transposed else (0,) * d)
    layer = ConvLayer(m.weight, spec)
    assert layer.out_size == _torch_out_size(m.double(), 2, (5,) * d)

    class Sub(kind):  # conv subclasses are read by isinstance
        pass

    assert sb.ConvSpec.from_module(Sub(2, 4, 3, stride=2, **extra), input_size=5).ndim == d


def test_every_size_layer_has_no_shape():
    layer = ConvLayer(np.ones((1, 1, 3, 3)), sb.ConvSpec())
    with pytest.raises(ValueError, match="input_size=None"):
        layer.shape  # noqa: B018
    with pytest.raises(ValueError, match="input_size=None"):
        layer.matvec(np.ones(9))


@pytest.mark.parametrize("d", [1, 2])
def test_certify_transposed_and_1d_modules(d):
    torch.manual_seed(d)
    m = TRANSPOSED[d](2, 3, 3, stride=2, padding=1, output_padding=1, bias=False).double()
    n = (4,) * d
    cert = sb.certify(m, input_size=n)
    layer = ConvLayer(m.weight, sb.ConvSpec.from_module(m, input_size=n))
    true = float(np.linalg.svd(layer.dense(), compute_uv=False)[0])
    assert cert.lower <= true
    assert true <= cert.upper
    assert any("adjoint" in note for note in cert.notes)
    conv = torch.nn.Conv1d(2, 3, 3, padding=1, padding_mode="reflect").double()
    c1 = sb.certify(conv, input_size=9)
    dense = ConvLayer(conv.weight, sb.ConvSpec.from_module(conv, input_size=9)).dense()
    true1 = float(np.linalg.svd(dense, compute_uv=False)[0])
    assert c1.lower <= true1
    assert true1 <= c1.upper


def test_certify_3d_names_input_size_with_the_wrong_number_of_axes():
    with pytest.raises(ValueError, match="input_size"):
        sb.certify(torch.nn.Conv3d(1, 1, 3), input_size=(4, 4))
    with pytest.raises(ValueError, match="kernel"):
        sb.certify(np.ones((1, 1, 2, 2)), sb.ConvSpec(input_size=(3, 3, 3)))


def test_cert_convt_theorem_passes_and_its_planted_variant_fails():
    from proofs_check.families.conv_layer import convt_layer_search
    from proofs_check.harness import run
    from proofs_check.registry import Mode

    assert run(convt_layer_search(), Mode("quick")).verdict == "PASS"
    planted = run(convt_layer_search(planted=True), Mode("quick"))
    assert planted.verdict == "FAIL" and planted.margin < 0


def test_replace_keeps_or_redefines_the_number_of_axes():
    one = sb.ConvSpec(stride=2, ndim=1)
    assert one.replace(input_size=8).ndim == 1  # nothing says otherwise: d is kept
    assert one.replace(pad=(1, 2)).pads((3,)) == ((1, 2),)  # (lo, hi) of a 1-D layer
    two = sb.ConvSpec(input_size=(8, 8))
    assert two.replace(stride=2).ndim == 2
    assert two.replace(input_size=(4, 4, 4)).ndim == 3  # a field with 3 axes redefines d
    assert sb.ConvSpec(stride=2).replace(input_size=5).ndim is None  # still undecided


@pytest.mark.parametrize(
    "spec",
    [
        sb.ConvSpec("replicate", (1, 0, 2, 2, 0, 1), (3, 4, 5), stride=(1, 2, 1)),
        sb.ConvSpec("zeros", (1, 2), (6, 7), stride=2, transposed=True, output_padding=(1, 0)),
        sb.ConvSpec("circular", ((0, 1),), 9, dilation=2),
    ],
)
def test_to_dict_round_trips(spec):
    again = sb.ConvSpec(**spec.to_dict())
    assert again == spec
    assert again.pads((2,) * spec.ndim) == spec.pads((2,) * spec.ndim)


def test_bad_transposed_kernels_are_refused_naming_the_channels():
    spec = sb.ConvSpec("zeros", 0, (4, 4), groups=2, transposed=True)
    with pytest.raises(ValueError, match=r"groups=2 must divide the input channels c_in=3"):
        ConvLayer(np.ones((3, 2, 2, 2)), spec)
    with pytest.raises(ValueError, match="output is empty"):
        ConvLayer(np.ones((1, 1, 2, 2)), sb.ConvSpec("zeros", 3, (1, 1), transposed=True))


def _kept(fwd: ConvLayer, layer: ConvLayer) -> np.ndarray:
    """Flat output indices of ``layer`` inside the cropped forward layer's input box."""
    grids = np.meshgrid(
        np.arange(layer.c_out), *(np.arange(n) for n in fwd.input_size), indexing="ij"
    )
    return np.ravel_multi_index(tuple(grids), (layer.c_out, *layer.out_size)).ravel()
