"""The differentiable entry point :func:`specbound.spectral_norm.spectral_norm`.

Values are checked against the float64 registered methods (same core) and one-sided against
the exact float64 operator norm; gradients against finite differences (``gradcheck``) and
against autograd through an independent formula (torch SVD of the maximising frequency).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from specbound import ConvSpec
from specbound.bounds import base, compute
from specbound.operators import ConvLayer, exact_norm, frequency_matrices
from specbound.spectral_norm import spectral_norm, spectral_norm_batched
from specbound.testing import ROUNDING_RTOL, layers

CANCELLATION = 1e-14
"""Absolute allowance per unit of ``sum|K|``: where taps cancel, both the bound and the exact
norm are float64 rounding noise of that size (see tests/test_gram.py)."""

FLOAT32 = 1e-5
"""Relative distance allowed between a float32 result (TF32 off) and the float64 one:
about ``sqrt(c) * n_iter`` units of 6e-8 for the small layers used here (gram.md §9 N2)."""


def kernel64(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.as_tensor(np.random.default_rng(seed).standard_normal(shape))


# ----------------------------------------------------------------------------------- values
@given(layers(modes=("circular",), circulant=True, max_channels=3, max_size=6), st.integers(0, 6))
def test_gram_circular_matches_float64_method_and_bounds_exact(layer, n_iter):
    kernel, spec = layer
    value = spectral_norm(torch.as_tensor(kernel), spec, n_iter=n_iter)
    assert value.shape == () and value.dtype == torch.float64
    assert float(value) == compute("gram_circular", kernel, spec, n_iter=n_iter).value
    slack = CANCELLATION * np.abs(kernel).sum()
    assert float(value) * (1 + ROUNDING_RTOL) + slack >= exact_norm(kernel, spec)


@given(layers(modes=("zeros",), max_channels=3, max_kernel=3, max_size=6), st.integers(1, 3))
def test_gram_zero_matches_float64_method_and_bounds_exact(layer, n_iter):
    kernel, spec = layer
    value = spectral_norm(torch.as_tensor(kernel), spec, n_iter=n_iter)
    assert float(value) == compute("gram_zero", kernel, spec, n_iter=n_iter).value
    slack = CANCELLATION * np.abs(kernel).sum()
    assert float(value) * (1 + ROUNDING_RTOL) + slack >= exact_norm(kernel, spec)


def test_gram_alias_resolution():
    """ "gram" = gram_circular for circular padding with a size, gram_zero otherwise."""
    kernel = kernel64(3, 2, 3, 3)
    k = kernel.numpy()
    circ = spectral_norm(kernel, padding="circular", input_size=6, n_iter=3)
    assert (
        float(circ) == compute("gram_circular", k, ConvSpec("circular", "same", 6), n_iter=3).value
    )
    for padding, size in (("circular", None), ("zeros", None), ("zeros", 6)):
        value = spectral_norm(kernel, padding=padding, input_size=size, n_iter=3)
        expected = compute("gram_zero", k, ConvSpec(padding, "same", size), n_iter=3).value
        assert float(value) == expected


def test_named_method_dispatch():
    kernel = kernel64(2, 2, 3, 3)
    spec = ConvSpec("reflect", "same", 4)
    value = spectral_norm(kernel, method="gram_dense", padding="reflect", input_size=4, n_iter=5)
    assert float(value) == pytest.approx(
        compute("gram_dense", kernel.numpy(), spec, n_iter=5).value, rel=1e-12
    )
    assert float(value) * (1 + ROUNDING_RTOL) >= exact_norm(kernel.numpy(), spec)


@pytest.mark.parametrize("padding,size", [("circular", 8), ("zeros", None)])
def test_float32_result_on_kernel_dtype_and_close_to_float64(padding, size):
    kernel = kernel64(4, 3, 3, 3, seed=1)
    v64 = spectral_norm(kernel, padding=padding, input_size=size, n_iter=4)
    v32 = spectral_norm(kernel.float(), padding=padding, input_size=size, n_iter=4)
    assert v32.dtype == torch.float32 and v32.device == kernel.device
    assert abs(float(v32) / float(v64) - 1) <= FLOAT32


def test_tight_and_degenerate_kernels():
    """Zero kernel -> 0; a vanishing frequency -> finite (C7); one channel -> exact (C2)."""
    zero = torch.zeros(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    for padding, size in (("circular", 5), ("zeros", None)):
        value = spectral_norm(zero, padding=padding, input_size=size)
        assert float(value) == 0.0
        (grad,) = torch.autograd.grad(value, zero)
        assert torch.equal(grad, torch.zeros_like(zero))
    second_difference = torch.tensor(
        [[[[1.0, -2.0, 1.0], [0, 0, 0], [0, 0, 0]]]], dtype=torch.float64
    )
    assert (
        abs(float(spectral_norm(second_difference, padding="circular", input_size=8)) - 4.0)
        <= 4e-14
    )


# ----------------------------------------------------------------------------------- gradients
GRAD_CASES = [
    ("gram", {"input_size": 5}),
    ("gram", {"input_size": 6, "stride": 2}),
    ("gram", {"input_size": (4, 6), "dilation": (2, 1), "groups": 2}),
    ("gram", {"input_size": 2}),  # n < k: wrapped
    ("gram", {"padding": "zeros"}),
    ("gram", {"padding": "zeros", "groups": 2, "dilation": 2}),
    ("gram_dense", {"padding": "zeros", "input_size": 3, "stride": 2}),
]


@pytest.mark.parametrize("method,layer", GRAD_CASES)
def test_gradcheck(method, layer):
    kernel = kernel64(4, 1, 3, 3, seed=2).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda k: spectral_norm(k, method=method, n_iter=3, **layer), (kernel,)
    )


@pytest.mark.parametrize("n_iter", [0, 2, 5])
def test_circular_gradient_equals_autograd_of_schatten_at_argmax(n_iter):
    """The custom backward equals autograd through ||K^(w*)||_{S_p} computed with torch's SVD
    at the maximising frequency (an independent formula)."""
    spec = ConvSpec("circular", "same", 4)
    kernel = kernel64(3, 2, 3, 3, seed=3).requires_grad_(True)
    (grad,) = torch.autograd.grad(
        spectral_norm(kernel, padding="circular", input_size=4, n_iter=n_iter), kernel
    )

    p = 2.0 ** (n_iter + 1)
    (blocks,) = frequency_matrices(ConvLayer(kernel.detach().numpy(), spec))
    schatten = [np.sum(np.linalg.svd(m, compute_uv=False) ** p) for m in blocks[0]]
    u, v = divmod(int(np.argmax(schatten)), 4)
    phase = torch.exp(
        -2j
        * math.pi
        * (
            u * torch.arange(3, dtype=torch.float64)[:, None]
            + v * torch.arange(3, dtype=torch.float64)[None, :]
        )
        / 4
    )
    (top, _), (left, _) = spec.pads((3, 3))
    phase = phase * np.exp(2j * math.pi * (u * top + v * left) / 4)  # origin of the window
    matrix = torch.einsum("ocab,ab->oc", kernel.to(torch.complex128), phase)
    ref_value = torch.linalg.svdvals(matrix).pow(p).sum().pow(1 / p)
    (ref,) = torch.autograd.grad(ref_value, kernel)
    assert torch.allclose(grad, ref, rtol=1e-9, atol=1e-12)


def test_gradient_memory_does_not_grow_with_n_iter():
    """The circular backward saves one frequency matrix, not the iterates: the autograd graph
    holds the same tensors for 2 and 12 iterations."""

    def saved_bytes(n_iter: int) -> int:
        kernel = kernel64(8, 8, 3, 3).requires_grad_(True)
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            spectral_norm(kernel, padding="circular", input_size=16, n_iter=n_iter)
        return total

    assert saved_bytes(12) == saved_bytes(2)


# ----------------------------------------------------------------------------------- batched
@pytest.mark.parametrize(
    "layer",
    [
        {"input_size": 5},
        {"input_size": 4, "stride": 2, "groups": 2},
        {"padding": "zeros", "n_iter": 3},
        {"padding": "zeros", "input_size": 3, "n_iter": 3, "groups": 2},
    ],
)
def test_batched_equals_loop(layer):
    kernels = torch.stack([kernel64(4, 1, 3, 3, seed=s) for s in range(3)])
    kernels[1] = 0.0
    kernels.requires_grad_(True)
    batched = spectral_norm_batched(kernels, **layer)
    assert batched.shape == (3,)
    looped = torch.stack([spectral_norm(k, **layer) for k in kernels])
    assert torch.allclose(batched, looped, rtol=1e-13, atol=0)
    (g_batched,) = torch.autograd.grad(batched.sum(), kernels)
    (g_looped,) = torch.autograd.grad(looped.sum(), kernels)
    assert torch.allclose(g_batched, g_looped, rtol=1e-11, atol=1e-13)


def test_batched_loops_methods_without_batch_support(monkeypatch):
    calls = []

    def frobenius(kernel, layer, *, n_iter=6):
        calls.append(kernel.shape)
        return torch.linalg.vector_norm(kernel)

    probe = base.Method(
        name="probe", func=None, kind="upper", reference="test", torch_func=frobenius
    )
    monkeypatch.setitem(base.REGISTRY, "probe", probe)
    kernels = torch.randn(3, 2, 2, 3, 3, dtype=torch.float64)
    out = spectral_norm_batched(kernels, method="probe", padding="zeros")
    assert calls == [(2, 2, 3, 3)] * 3
    assert torch.equal(out, torch.linalg.vector_norm(kernels.flatten(1), dim=1))


# ----------------------------------------------------------------------------------- TF32, dispatch
def test_tf32_off_inside_and_restored(monkeypatch):
    seen = []

    def probe_func(kernel, layer, *, n_iter=6):
        seen.append(
            (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, n_iter)
        )
        if n_iter == 99:
            raise RuntimeError("boom")
        return kernel.sum()

    probe = base.Method(
        name="probe", func=None, kind="upper", reference="test", torch_func=probe_func
    )
    monkeypatch.setitem(base.REGISTRY, "probe", probe)
    # the flags are served by a module __getattr__: save and restore them by hand (pytest's
    # monkeypatch would delattr them on undo, as they are not in the module's __dict__)
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    try:
        kernel = torch.ones(1, 1, 1, 1)
        spectral_norm(kernel, method="probe", n_iter=4)
        assert seen == [(False, False, 4)]
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        with pytest.raises(RuntimeError, match="boom"):
            spectral_norm(kernel, method="probe", n_iter=99)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_n_iter_only_passed_to_methods_that_take_it(monkeypatch):
    probe = base.Method(
        name="probe", func=None, kind="upper", reference="test", torch_func=lambda k, layer: k.sum()
    )
    monkeypatch.setitem(base.REGISTRY, "probe", probe)
    kernel = torch.ones(1, 1, 2, 2)
    assert float(spectral_norm(kernel, method="probe")) == 4.0
    with pytest.raises(TypeError, match="n_iter"):
        spectral_norm(kernel, method="probe", n_iter=3)


def test_refusals(monkeypatch):
    kernel = torch.ones(2, 2, 3, 3)
    with pytest.raises(ValueError, match="padding"):
        spectral_norm(kernel, padding="reflect")
    with pytest.raises(ValueError, match="stride"):
        spectral_norm(kernel, padding="circular", input_size=5, stride=2)
    with pytest.raises(ValueError, match="unknown method"):
        spectral_norm(kernel, method="nope")
    monkeypatch.setitem(
        base.REGISTRY, "plain", base.Method(name="plain", func=None, kind="upper", reference="x")
    )
    with pytest.raises(ValueError, match="not differentiable"):
        spectral_norm(kernel, method="plain")
    with pytest.raises(TypeError, match="kernel"):
        spectral_norm(np.ones((2, 2, 3, 3)))
    with pytest.raises(TypeError, match="float32 or float64"):
        spectral_norm(kernel.half())
    with pytest.raises(ValueError, match="4-D"):
        spectral_norm(torch.ones(2, 3, 3))
    with pytest.raises(ValueError, match="finite"):
        spectral_norm(torch.full((1, 1, 2, 2), math.nan))
    with pytest.raises(ValueError, match="kernels"):
        spectral_norm_batched(torch.ones(0, 1, 1, 2, 2))
    with pytest.raises(ValueError, match="5-D"):
        spectral_norm_batched(kernel)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("padding,size", [("circular", 8), ("zeros", None)])
def test_cuda_matches_cpu(padding, size):
    kernel = kernel64(4, 3, 3, 3, seed=4)
    cpu = spectral_norm(kernel, padding=padding, input_size=size, n_iter=4)
    gpu = spectral_norm(
        kernel.cuda().requires_grad_(True), padding=padding, input_size=size, n_iter=4
    )
    assert gpu.device.type == "cuda"
    assert float(gpu) == pytest.approx(float(cpu), rel=1e-12)
    gpu.backward()


# ------------------------------------------------------------------ (kernel, spec) call form
SPEC_FORMS = [
    {"padding": "circular", "input_size": (6, 4), "stride": 2},
    {"padding": "zeros", "pad": 1, "dilation": 2},
    {"padding": "circular", "input_size": 4, "groups": 2},
]


@pytest.mark.parametrize("fields", SPEC_FORMS)
def test_spec_form_equals_keyword_form(fields):
    """``spectral_norm(kernel, spec)``, the batched form and ``compute(name, kernel, spec)``
    give the same value as the keyword form of the same layer, and differ from the value of
    another layer (so the spec is not ignored)."""
    kernel = kernel64(4, 2, 3, 3, seed=7)
    spec = ConvSpec(**fields)
    by_spec = spectral_norm(kernel, spec, n_iter=3)
    by_keywords = spectral_norm(kernel, n_iter=3, **fields)
    assert by_spec.item() == by_keywords.item()
    other = spectral_norm(kernel, ConvSpec("circular", input_size=3), n_iter=3)
    assert other.item() != by_spec.item()
    batch = torch.stack([kernel, 2 * kernel])
    assert spectral_norm_batched(batch, spec, n_iter=3)[0].item() == by_spec.item()
    name = "gram_circular" if fields["padding"] == "circular" else "gram_zero"
    fixed = compute(name, kernel.numpy(), spec, n_iter=3).value
    assert fixed == compute(name, kernel.numpy(), n_iter=3, **fields).value


def test_spec_and_keywords_together_refused():
    kernel = kernel64(2, 2, 3, 3)
    spec = ConvSpec("circular", input_size=5)
    with pytest.raises(TypeError, match=r"either a ConvSpec or the keyword fields.*input_size"):
        spectral_norm(kernel, spec, input_size=6)
    with pytest.raises(TypeError, match=r"either a ConvSpec or the keyword fields.*stride"):
        spectral_norm_batched(kernel[None], spec, stride=2)
    with pytest.raises(TypeError, match=r"either a ConvSpec or the keyword fields.*padding"):
        compute("sedghi", kernel.numpy(), spec, padding="reflect")
    with pytest.raises(TypeError, match=r"spec must be a specbound.ConvSpec"):
        compute("sedghi", kernel.numpy(), {"padding": "circular"})
    with pytest.raises(TypeError, match=r"spec must be a specbound.ConvSpec"):
        spectral_norm(kernel, 3)


def test_method_in_second_position_is_deprecated():
    kernel = kernel64(2, 2, 3, 3)
    with pytest.warns(DeprecationWarning, match="method='gram_zero'"):
        old = spectral_norm(kernel, "gram_zero", n_iter=2)
    assert old.item() == spectral_norm(kernel, method="gram_zero", n_iter=2).item()
    with pytest.raises(TypeError, match="method given twice"):
        spectral_norm(kernel, "gram_zero", method="gram_dense")
