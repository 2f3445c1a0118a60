"""``certify`` on 3-D and transposed convolutions (docs/certify.md L12-L17), one-sided
against dense float64 matrices: torch's own (:func:`specbound.testing.torch_conv_matrix`)
and :meth:`ConvLayer.dense`, the exact norm by SVD.

Every check is a bare ``<=``/``>=`` with the SVD's own relative error (``SLACK``, far below
1e-12 for matrices of at most a few thousand entries per side) as the only allowance.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import specbound as sb
from specbound.certify import VerificationError
from specbound.operators import ConvLayer
from specbound.testing import torch_conv_matrix

SLACK = 1e-12
MODES = ("zeros", "circular", "reflect", "replicate")
CONV = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}
CONV_T = {1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d, 3: torch.nn.ConvTranspose3d}
CHANNELS = st.sampled_from([(1, 1, 1), (1, 2, 1), (2, 2, 2), (2, 2, 4)])  # groups, c_in, c_out


def _norm(a: np.ndarray) -> float:
    return float(np.linalg.svd(a, compute_uv=False)[0]) if a.size else 0.0


def _set_weight(module: torch.nn.Module, weight: np.ndarray) -> torch.nn.Module:
    module = module.double()
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(weight))
    return module


def _assert_bracket(cert: sb.Certificate, exact: float) -> None:
    assert cert.lower <= exact * (1 + SLACK)
    # a false certificate just below the exact norm is refused
    assert cert.upper >= exact * (1 - SLACK)


@st.composite
def conv3d_cases(draw: st.DrawFn) -> tuple[torch.nn.Module, tuple[int, ...]]:
    """A small ``Conv3d`` that PyTorch accepts, any padding mode, with a drawn kernel."""
    mode = draw(st.sampled_from(MODES))
    groups, c_in, c_out = draw(CHANNELS)
    k = draw(st.tuples(*[st.integers(1, 3)] * 3))
    stride = draw(st.tuples(*[st.integers(1, 2)] * 3))
    dil = draw(st.tuples(*[st.integers(1, 2)] * 3))
    pad = draw(st.tuples(*[st.integers(0, 2)] * 3))
    size = list(draw(st.tuples(*[st.integers(1, 4)] * 3)))
    for ax in range(3):
        extent = dil[ax] * (k[ax] - 1) + 1
        size[ax] = max(size[ax], extent - 2 * pad[ax], pad[ax] + (mode == "reflect"))
    conv = torch.nn.Conv3d(c_in, c_out, k, stride, pad, dil, groups, bias=False, padding_mode=mode)
    weight = draw(arrays(np.float64, tuple(conv.weight.shape), elements=st.floats(-2, 2, width=32)))
    return _set_weight(conv, weight), tuple(size)


@st.composite
def transposed_cases(
    draw: st.DrawFn, d: int | None = None
) -> tuple[torch.nn.Module, tuple[int, ...]]:
    """A small ``ConvTranspose{d}d``, ``output_padding`` up to ``max(stride, dilation) - 1``
    (so ``>= stride`` whenever the dilation allows it)."""
    d = draw(st.integers(1, 3)) if d is None else d
    groups, c_in, c_out = draw(CHANNELS)
    top = 3 if d < 3 else 2
    k = draw(st.tuples(*[st.integers(1, top)] * d))
    stride = draw(st.tuples(*[st.integers(1, top)] * d))
    dil = draw(st.tuples(*[st.integers(1, 3)] * d))
    pad = draw(st.tuples(*[st.integers(0, 2)] * d))
    opad = tuple(draw(st.integers(0, max(s, dl) - 1)) for s, dl in zip(stride, dil, strict=True))
    size = list(draw(st.tuples(*[st.integers(1, 4 if d < 3 else 2)] * d)))
    for ax in range(d):  # PyTorch needs a non-empty output
        extent = dil[ax] * (k[ax] - 1) + 1
        while (size[ax] - 1) * stride[ax] - 2 * pad[ax] + extent + opad[ax] < 1:
            size[ax] += 1
    conv = CONV_T[d](c_in, c_out, k, stride, pad, opad, groups, bias=False, dilation=dil)
    weight = draw(arrays(np.float64, tuple(conv.weight.shape), elements=st.floats(-2, 2, width=32)))
    return _set_weight(conv, weight), tuple(size)


def _cases_example(module: torch.nn.Module, size: tuple[int, ...], seed: int = 0):
    torch.manual_seed(seed)
    return (module.double(), size)


@settings(max_examples=25, deadline=None)
@given(conv3d_cases())
@example(_cases_example(torch.nn.Conv3d(1, 1, 3, padding=1, padding_mode="reflect"), (2, 3, 2)))
@example(
    _cases_example(
        torch.nn.Conv3d(2, 4, 2, 2, padding=2, groups=2, padding_mode="circular"), (2, 2, 3)
    )
)
@example(  # block circulant with strides: the 3-D circulant route and its plane wave
    _cases_example(
        torch.nn.Conv3d(2, 2, (3, 1, 3), (2, 1, 2), (1, 0, 1), padding_mode="circular"),
        (4, 3, 2),
    )
)
def test_conv3d_bracket_holds_against_torch_and_dense(case):
    conv, size = case
    cert = sb.certify(conv, input_size=size, rtol=1e-6)
    torch_exact = _norm(torch_conv_matrix(conv, size))
    layer = ConvLayer(conv.weight, sb.ConvSpec.from_module(conv, input_size=size))
    dense_exact = _norm(layer.dense())
    _assert_bracket(cert, torch_exact)
    _assert_bracket(cert, dense_exact)
    assert cert.spec.ndim == 3
    assert cert.verify()  # the witness (a 3-D plane wave on the circulant route) re-evaluated


@settings(max_examples=30, deadline=None)
@given(transposed_cases())
@example(_cases_example(torch.nn.ConvTranspose1d(1, 1, 2, 1, 0, 1, dilation=2), (3,)))
@example(
    _cases_example(torch.nn.ConvTranspose2d(2, 2, 2, (1, 2), 0, (1, 1), dilation=(2, 1)), (3, 2))
)
@example(
    _cases_example(
        torch.nn.ConvTranspose3d(1, 2, 2, 2, 1, (2, 1, 0), dilation=(3, 1, 1)), (2, 1, 2)
    )
)
@example(_cases_example(torch.nn.ConvTranspose1d(1, 1, 1, 1, 1, 2, dilation=3), (1,)))  # zero
# found: a 1x1 transposed layer went to the weight-matrix route and lost the adjoint note
@example(_cases_example(torch.nn.ConvTranspose1d(1, 1, 1), (1,)))
def test_transposed_bracket_holds_against_torch_and_dense(case):
    """``output_padding`` below and at or above the stride (L12's cropped form), every d."""
    conv, size = case
    cert = sb.certify(conv, input_size=size, rtol=1e-6)
    torch_exact = _norm(torch_conv_matrix(conv, size))
    layer = ConvLayer(conv.weight, sb.ConvSpec.from_module(conv, input_size=size))
    dense_exact = _norm(layer.dense())
    _assert_bracket(cert, torch_exact)
    _assert_bracket(cert, dense_exact)
    assert any("adjoint" in n or "zero map" in n for n in cert.notes)
    assert cert.verify()


@settings(max_examples=15, deadline=None)
@given(transposed_cases())
@example(_cases_example(torch.nn.ConvTranspose1d(1, 1, 3, 2, 1, 1), (3,)))
@example(_cases_example(torch.nn.ConvTranspose2d(1, 2, 2, 2, 0, (1, 0), dilation=(1, 3)), (2, 2)))
# found: sizes at which PyTorch's output is empty must be skipped, not evaluated
@example(_cases_example(torch.nn.ConvTranspose1d(1, 1, 1, padding=1), (3,)))
def test_transposed_every_size_upper_holds_at_several_sizes(case):
    """L13: the every-size bracket (any stride) is above the dense norm at every size."""
    conv, _ = case
    cert = sb.certify(conv, rtol=1e-4)
    assert cert.spec.input_size is None
    d = conv.weight.ndim - 2
    for n in (1, 2, 3, 5) if d < 3 else (1, 2, 3):
        size = (n,) * d
        if not _nonempty(conv, size):  # PyTorch refuses a size with an empty output
            continue
        assert _norm(torch_conv_matrix(conv, size)) <= cert.upper * (1 + SLACK)


def _nonempty(conv: torch.nn.Module, size: tuple[int, ...]) -> bool:
    return all(
        (n - 1) * s - 2 * p + dl * (k - 1) + q + 1 >= 1
        for n, s, p, dl, k, q in zip(
            size,
            conv.stride,
            conv.padding,
            conv.dilation,
            conv.kernel_size,
            conv.output_padding,
            strict=True,
        )
    )


@pytest.mark.parametrize(
    "conv",
    [
        torch.nn.ConvTranspose1d(2, 3, 3, stride=2, padding=1, output_padding=1),
        torch.nn.ConvTranspose1d(1, 2, 2, stride=3, dilation=4, output_padding=3),
        torch.nn.ConvTranspose2d(2, 2, 3, stride=2, padding=0, output_padding=1),
    ],
)
def test_transposed_every_size_lower_is_approached_by_dense_norms(conv):
    """The lower end is at most the supremum ``S``: zero-padded norms grow with the size
    towards ``S`` (L13), so at a large size they come within the ``O(1/L^2)`` gap of it and
    above ``lower`` up to that gap; the upper end stays above all of them."""
    torch.manual_seed(3)
    conv = conv.double()
    cert = sb.certify(conv, rtol=1e-4)
    d = conv.weight.ndim - 2
    sizes = (8, 32, 96) if d == 1 else (4, 8, 14)
    norms = [_norm(torch_conv_matrix(conv, (n,) * d)) for n in sizes]
    assert norms == sorted(norms)  # monotone in the size (L13.1)
    assert norms[-1] <= cert.upper * (1 + SLACK)
    gap = 2e-3 if d == 1 else 3e-2
    assert cert.lower <= norms[-1] * (1 + gap)


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("transposed", [False, True])
def test_certify_accepts_all_six_module_types(d, transposed):
    torch.manual_seed(d)
    if transposed:
        conv = CONV_T[d](2, 2, 3, stride=2, padding=1, output_padding=1, bias=False)
    else:
        conv = CONV[d](2, 2, 3, padding=1, padding_mode="replicate", bias=False)
    conv = conv.double()
    size = (3,) * d
    exact = _norm(torch_conv_matrix(conv, size))
    cert = sb.certify(conv, input_size=size, rtol=1e-6)
    _assert_bracket(cert, exact)
    assert cert.converged


@pytest.mark.parametrize("mode", MODES)
def test_conv3d_every_size_and_larger_sizes(mode):
    """Past the dense limit: embedding (zeros), padded route (reflect/replicate),
    circulant (circular); the every-size bracket for zeros and circular."""
    torch.manual_seed(7)
    conv = torch.nn.Conv3d(2, 2, 3, padding=1, padding_mode=mode, bias=False).double()
    size = (10, 10, 10)  # 2000 x 2000: above the dense Gram limit
    cert = sb.certify(conv, input_size=size, rtol=1e-3)
    exact = _norm(ConvLayer(conv.weight, sb.ConvSpec.from_module(conv, input_size=size)).dense())
    _assert_bracket(cert, exact)
    if mode in ("zeros", "reflect", "replicate") and not cert.converged:
        assert any("2-D only" in n for n in cert.notes)
    if mode in ("zeros", "circular"):
        every = sb.certify(conv, rtol=1e-3)
        for n in (2, 4, 6):
            small = (n, n, n)
            dense = ConvLayer(conv.weight, sb.ConvSpec.from_module(conv, input_size=small))
            assert _norm(dense.dense()) <= every.upper * (1 + SLACK)
        assert every.converged


def test_conv3d_1x1_on_the_weight_matrix():
    torch.manual_seed(2)
    conv = torch.nn.Conv3d(3, 4, 1, stride=2, padding=1, padding_mode="reflect", bias=False)
    conv = conv.double()
    size = (3, 4, 2)
    cert = sb.certify(conv, input_size=size, rtol=1e-9)
    assert cert.upper_method == "weight_matrix_verified"
    _assert_bracket(cert, _norm(torch_conv_matrix(conv, size)))
    every = sb.certify(torch.nn.Conv3d(3, 4, 1, bias=False).double())
    assert every.upper_method == "weight_matrix_verified"


def test_max_seconds_is_honoured_for_a_3d_layer():
    """16 channels, every size, rtol 1e-9: about 9 s unbounded on one CPU thread (measured);
    with ``max_seconds=1`` the Bernstein refinement stops and the bracket stays rigorous."""
    torch.manual_seed(5)
    conv = torch.nn.Conv3d(16, 16, 3, padding=1, bias=False).double()
    start = time.perf_counter()
    cert = sb.certify(conv, rtol=1e-9, max_seconds=1.0)
    assert time.perf_counter() - start < 1.0 + 4.0
    assert cert.lower <= cert.upper
    if not cert.converged:
        assert any("max_seconds" in n for n in cert.notes)
    small = ConvLayer(conv.weight, sb.ConvSpec.from_module(conv, input_size=(3, 3, 3)))
    assert _norm(small.dense()) <= cert.upper * (1 + SLACK)
    reflect = torch.nn.Conv3d(4, 4, 3, padding=1, padding_mode="reflect", bias=False).double()
    start = time.perf_counter()
    given_size = sb.certify(reflect, input_size=(14, 14, 14), max_seconds=0.5)
    assert time.perf_counter() - start < 0.5 + 4.0
    assert given_size.lower <= given_size.upper


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: sb.certify(torch.nn.Conv3d(1, 1, 3), input_size=(4, 4)), "input_size"),
        (lambda: sb.certify(torch.nn.ConvTranspose3d(1, 1, 3), input_size=(4, 4)), "input_size"),
        (lambda: sb.certify(np.ones((1, 1, 2, 2, 2)), input_size=(3, 3)), "kernel"),
        (lambda: sb.certify(np.ones((1, 1, 2, 2, 2)), sb.ConvSpec(input_size=(3, 3))), "kernel"),
        (
            lambda: sb.certify(np.ones((1, 1, 2, 2, 2)), padding="reflect"),
            r"input_size=\(D, H, W\)",
        ),
    ],
)
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_every_size_3d_circular_pad_beyond_the_degree_is_refused():
    kernel = np.ones((1, 1, 2, 2, 2))
    with pytest.raises(ValueError, match=r"input_size=\(D, H, W\)"):
        sb.certify(kernel, sb.ConvSpec("circular", (1, 1, 1), None, ndim=3))


def test_input_size_with_too_many_axes_names_it():
    with pytest.raises(TypeError, match="input_size"):
        sb.certify(torch.nn.ConvTranspose3d(1, 1, 3), input_size=(4, 4, 4, 4))


@pytest.mark.parametrize("size", [None, (4, 4, 4)])
def test_verify_checks_3d_witnesses(size):
    """``Certificate.verify`` re-evaluates a 3-D witness (the plane wave at a given size,
    the 3-frequency symbol for every size) and refuses a lower end raised above it."""
    torch.manual_seed(4)
    conv = torch.nn.Conv3d(2, 2, 3, padding=1, padding_mode="circular", bias=False).double()
    cert = sb.certify(conv, input_size=size, rtol=1e-6)
    assert cert.verify()
    assert len(cert.witness["frequency"]) == 3
    forged = dataclasses.replace(cert, lower=cert.lower * 1.01, upper=cert.upper * 1.02)
    with pytest.raises(VerificationError, match="witness"):
        forged.verify()
