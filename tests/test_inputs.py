"""Issue 12, classes 4, 5, 6 and 10 (Python API): every kernel dtype is certified for its
exact values or refused, bad arguments are refused naming the parameter before heavy work,
and the Krylov steps honour ``max_seconds``."""

import functools
import math
import time

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import specbound as sb
from specbound.bounds.power import lanczos_probabilistic
from specbound.certify import certify
from specbound.operators import ConvLayer, exact_norm
from specbound.rigorous import _routes as routes
from specbound.rigorous import cholesky
from specbound.rigorous.witness import lanczos_direction, operator_lower
from specbound.spec import ConvSpec, as_kernel

SPEC = {"padding": "zeros", "input_size": (5, 5)}
BASE = np.array([[[[1.0, -2.0, 0.5], [0.25, 3.0, -1.0], [0.0, 1.5, 2.0]]]])


# ---------------------------------------------------------------------------- class 4
NUMPY_DTYPES = [np.float16, np.float32, np.float64, np.longdouble, np.int8, np.int64, np.uint8]
TORCH_DTYPES = [
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.int32,
    torch.int64,
]


def _reference(values: np.ndarray) -> sb.Certificate:
    return certify(np.asarray(values, dtype=np.float64), **SPEC)


@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
def test_numpy_dtypes_certify_their_exact_values(dtype):
    values = np.abs(BASE) if np.issubdtype(dtype, np.unsignedinteger) else BASE
    values = np.round(values) if np.issubdtype(dtype, np.integer) else values
    kernel = values.astype(dtype)
    cert = certify(kernel, **SPEC)
    ref = _reference(kernel.astype(np.float64))
    assert (cert.upper, cert.lower) == (ref.upper, ref.lower)
    assert np.array_equal(cert.kernel.astype(np.longdouble), kernel.astype(np.longdouble))
    truth = exact_norm(kernel.astype(np.float64), ConvSpec(**SPEC))
    assert cert.lower <= truth
    assert truth <= cert.upper


@pytest.mark.parametrize("dtype", TORCH_DTYPES)
@pytest.mark.parametrize("layout", ["plain", "grad", "strided"])
def test_torch_dtypes_and_layouts(dtype, layout):
    values = torch.from_numpy(BASE if dtype.is_floating_point else np.round(BASE))
    if layout == "strided":  # a non-contiguous view: every other column of a wider tensor
        wide = torch.zeros(1, 1, 3, 6, dtype=torch.float64)
        wide[..., ::2] = values
        kernel = wide.to(dtype)[..., ::2]
        assert not kernel.is_contiguous()
    else:
        kernel = values.to(dtype)
        if layout == "grad" and dtype.is_floating_point:
            kernel = kernel.clone().requires_grad_(True)
    cert = certify(kernel, **SPEC)
    expected = kernel.detach().to(torch.float64).numpy()
    assert np.array_equal(cert.kernel, expected)
    assert (cert.upper, cert.lower) == (_reference(expected).upper, _reference(expected).lower)


def test_bool_kernels_are_zero_one():
    kernel = BASE > 0.5
    cert = certify(kernel, **SPEC)
    assert np.array_equal(cert.kernel, kernel.astype(np.float64))
    torch_cert = certify(torch.from_numpy(kernel), **SPEC)
    assert torch_cert.upper == cert.upper


@given(
    hnp.arrays(
        st.sampled_from([np.float16, np.float32, np.float64, np.int16, np.int64, np.uint32]),
        hnp.array_shapes(min_dims=4, max_dims=4, min_side=1, max_side=3),
    )
)
@settings(max_examples=60, deadline=None)
def test_as_kernel_keeps_every_value_or_refuses(arr):
    """Either exactly the given values come back as float64, or a named refusal."""
    try:
        out = as_kernel(arr)
    except ValueError as err:
        assert "kernel" in str(err)
        assert not np.isfinite(arr.astype(np.longdouble)).all() or arr.dtype.kind in "iu"
        return
    assert out.dtype == np.float64 and out.flags.c_contiguous
    if arr.dtype.kind in "iu":
        assert [int(v) for v in out.ravel()] == [int(v) for v in arr.ravel()]
    else:
        assert np.array_equal(out, arr.astype(np.float64))


def test_longdouble_values_float64_cannot_hold_are_refused():
    if np.finfo(np.longdouble).nmant <= np.finfo(np.float64).nmant:
        pytest.skip("longdouble is float64 on this platform")
    tiny = np.zeros((1, 1, 1, 1), dtype=np.longdouble)
    tiny[0, 0, 0, 0] = np.longdouble(2) ** -1080  # below 2**-1074: rounded to 0 before
    with pytest.raises(ValueError, match=r"kernel of dtype .* cannot represent exactly"):
        certify(tiny, input_size=3)
    third = np.full((1, 1, 2, 2), np.longdouble(1) / 3)
    with pytest.raises(ValueError, match="kernel"):
        certify(third, input_size=3)
    huge = np.full((1, 1, 1, 1), np.longdouble(2) ** 1100)
    with pytest.raises(ValueError, match="kernel"):
        certify(huge, input_size=3)
    exact = np.full((1, 1, 1, 1), np.longdouble(2) ** -1074)  # a float64 subnormal: kept
    assert certify(exact, input_size=3).upper >= 2.0**-1074


def test_integers_beyond_2_53_must_be_exact():
    k = np.ones((1, 1, 1, 2), dtype=np.int64)
    k[0, 0, 0, 0] = 2**53 + 1
    with pytest.raises(ValueError, match="integers float64 cannot represent"):
        certify(k, input_size=3)
    k[0, 0, 0, 0] = 2**60  # a power of two: exact
    cert = certify(k, input_size=3)
    assert cert.lower <= 2.0**60 + 1 <= cert.upper  # 1x2 kernel [2^60, 1]: norm sqrt(2^120+1)
    big = torch.tensor([[[[2**53 + 1]]]], dtype=torch.int64)
    with pytest.raises(ValueError, match="kernel"):
        certify(big, input_size=3)


@pytest.mark.parametrize(
    "kernel,exc,match",
    [
        (np.ma.masked_array(np.ones((1, 1, 2, 2)), mask=[[[[1, 0], [0, 0]]]]), TypeError, "mask"),
        (torch.ones(1, 1, 2, 2).to_sparse(), TypeError, "kernel must be a dense"),
        (torch.ones(1, 1, 2, 2, device="meta"), ValueError, "kernel is on the meta device"),
        ([[[[1.0, 2.0], [3.0]]]], ValueError, "kernel must be a rectangular"),
        ([[[[2**70]]]], TypeError, "kernel must be a real numeric"),
        (torch.nn.LazyConv2d(2, 3).weight, ValueError, "kernel is an uninitialised"),
        (np.ones((1, 1, 2, 2), dtype=np.complex128), TypeError, "kernel must be a real"),
    ],
)
def test_unusable_kernels_are_refused_naming_kernel(kernel, exc, match):
    with pytest.raises(exc, match=match):
        certify(kernel, input_size=4)


# ---------------------------------------------------------------------------- class 10
@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"max_seconds": "5"}, TypeError, "max_seconds must be a real number"),
        ({"max_seconds": math.nan}, ValueError, "max_seconds must be"),
        ({"max_seconds": 0}, ValueError, "max_seconds must be"),
        ({"rtol": "0.1"}, TypeError, "rtol must be a real number"),
        ({"rtol": True}, TypeError, "rtol must be a real number"),
        ({"rtol": math.nan}, ValueError, "rtol must be"),
        ({"delta": np.float64(1.0)}, ValueError, "delta must be"),
        ({"device": "banana"}, ValueError, "device must be 'cpu' or 'cuda"),
        ({"device": "meta"}, ValueError, "device must be 'cpu' or 'cuda"),
        ({"device": 3}, TypeError, "device must be None, a string"),
        ({"guarantee": ["deterministic"]}, ValueError, "guarantee must be one of"),
        ({"input_size": (2**31, 2**31)}, ValueError, "input_size=.* is too large"),
    ],
)
def test_bad_arguments_are_named_before_heavy_work(kwargs, exc, match):
    t0 = time.perf_counter()
    with pytest.raises(exc, match=match):
        certify(np.ones((2, 2, 3, 3)), **{"input_size": 6, **kwargs})
    assert time.perf_counter() - t0 < 2.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a build or machine without CUDA")
def test_cuda_on_a_cpu_build_says_so():
    with pytest.raises(ValueError, match="asks for CUDA"):
        certify(np.ones((1, 1, 3, 3)), input_size=4, device="cuda")


def test_numpy_scalars_are_accepted():
    cert = certify(
        np.ones((1, 1, 3, 3)),
        input_size=np.int64(6),
        rtol=np.float32(1e-3),
        delta=np.float32(1e-6),
        max_seconds=np.float64(30),
        device=torch.device("cpu"),
    )
    assert cert.rtol == float(np.float32(1e-3))
    truth = exact_norm(np.ones((1, 1, 3, 3)), ConvSpec(input_size=6))
    assert cert.lower <= truth
    assert truth <= cert.upper


def test_infinite_max_seconds_means_no_limit():
    assert certify(np.ones((1, 1, 2, 2)), input_size=4, max_seconds=math.inf).converged


# ---------------------------------------------------------------------------- class 5
def _unread_columns_start(n: int) -> tuple[sb.ConvLayer, np.ndarray]:
    """Stride 2 reads only even rows of the input: a start on the odd rows is in the null
    space of ``A^T A``, which made ARPACK raise "Starting vector is zero"."""
    layer = ConvLayer(np.ones((1, 1, 1, 1)), ConvSpec("zeros", 0, (n, n), stride=2))
    x = np.zeros((1, n, n))
    x[0, 1::2, :] = 1.0
    return layer, x


@pytest.mark.parametrize("n", [2, 8])
def test_lanczos_witness_from_a_null_space_start(n):
    layer, x = _unread_columns_start(n)
    v = lanczos_direction(layer, x)
    assert operator_lower(layer, v) >= 0.99  # ||A|| = 1: a real witness, not zero


def test_certify_with_a_zero_witness_start_on_the_matrix_free_route(monkeypatch):
    """The matrix-free route with input pixels the layer never reads (the dense route off,
    stride 2 with a 1x1 kernel leaves every odd row unread): the witness still reaches the
    norm. (A smoke test: the certify-level path to the null-space start was not reproduced;
    the test above is the regression test of the root cause.)"""
    monkeypatch.setattr(routes, "DENSE_GRAM_LIMIT", 0)
    kernel = np.ones((2, 1, 1, 1))
    cert = certify(kernel, input_size=(6, 6), stride=2, pad=0, rtol=1e-6)
    assert cert.lower <= math.sqrt(2)
    assert math.sqrt(2) <= cert.upper
    assert cert.lower > 0.99 * math.sqrt(2)


# ---------------------------------------------------------------------------- class 6
# reflect padding, Gram 1584 (above the dense route): the probabilistic step runs when the
# verified Cholesky step is off
WIDE = np.random.default_rng(1).standard_normal((11, 11, 3, 3))
WIDE_SPEC = ConvSpec("reflect", "same", (12, 12))


@functools.cache
def _wide_truth() -> float:
    return exact_norm(WIDE, WIDE_SPEC)


def test_probabilistic_lanczos_honours_max_seconds():
    layer = ConvLayer(WIDE, WIDE_SPEC)
    t0 = time.perf_counter()
    bound = lanczos_probabilistic(layer, delta=1e-9, rtol=1e-6, max_seconds=0.3, seed=1)
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.3
    assert bound.details["done"] < bound.details["steps"]
    assert bound.details["lower"] <= _wide_truth()
    assert _wide_truth() <= bound.value  # holds with probability 1 - 1e-9


@pytest.mark.parametrize("max_seconds", [1e-3, 0.5])
def test_probabilistic_certify_returns_in_time(monkeypatch, max_seconds):
    """Before: full-length reorthogonalised Lanczos with an eigensolve per step, minutes."""
    monkeypatch.setattr(cholesky, "MAX_BAND_BYTES", 0)  # the deterministic gap stays open
    t0 = time.perf_counter()
    cert = certify(
        WIDE,
        **WIDE_SPEC.to_dict(),
        rtol=1e-6,
        guarantee="probabilistic",
        max_seconds=max_seconds,
    )
    elapsed = time.perf_counter() - t0
    assert elapsed <= max(1.2 * max_seconds, max_seconds + 1.0)
    assert cert.lower <= _wide_truth()
    assert _wide_truth() <= cert.upper


# ---------------------------------------------------------------------------- class 10 eigsh
@example(seconds=0.05)
@given(seconds=st.floats(0.01, 0.3))
@settings(max_examples=3, deadline=None)
def test_lanczos_witness_stops_at_its_deadline(seconds):
    rng = np.random.default_rng(2)
    layer = ConvLayer(rng.standard_normal((1, 1, 3, 3)), ConvSpec("zeros", "same", (400, 400)))
    t0 = time.perf_counter()
    v = lanczos_direction(layer, None, tol=1e-15, maxiter=10**6, deadline=t0 + seconds)
    assert time.perf_counter() - t0 < seconds + 1.0
    assert operator_lower(layer, v) > 0


# ---------------------------------------------------------------------------- other entry points
@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: sb.operators.conv_matrix(BASE, None), TypeError, "spec must be a specbound"),
        (lambda: sb.operators.exact_norm(BASE, {"padding": "zeros"}), TypeError, "spec must be"),
        (
            lambda: sb.operators.conv_matrix(BASE, ConvSpec(input_size=4), max_bytes="5"),
            TypeError,
            "max_bytes must be None or an int",
        ),
        (
            lambda: sb.operators.conv_operator(BASE, ConvSpec(input_size=4), device="banana"),
            ValueError,
            "device must be",
        ),
        (lambda: sb.bounds.compute("power", BASE, "zeros"), TypeError, "spec must be"),
        (
            lambda: sb.bounds.compute(
                "lanczos_probabilistic", BASE, ConvSpec(input_size=4), max_seconds="1"
            ),
            TypeError,
            "max_seconds must be a real",
        ),
        (
            lambda: sb.operators.conv_matrix(np.ma.masked_array(BASE), ConvSpec(input_size=4)),
            TypeError,
            "kernel is a numpy masked array",
        ),
    ],
)
def test_other_entry_points_name_the_parameter(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
