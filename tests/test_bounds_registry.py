"""Every registered method (whatever modules registered it) obeys its label inside its declared
domain, against the dense float64 operator, and refuses layers outside it."""

from __future__ import annotations

import inspect
import itertools
import math

import numpy as np
import pytest

from specbound import ConvSpec
from specbound.bounds import KINDS, REGISTRY, methods
from specbound.operators import ConvLayer, conv_matrix
from specbound.spec import PADDING_MODES
from specbound.testing import ROUNDING_RTOL, dense_norm

EXACT_RTOL = 1e-9
METHOD_NAMES = sorted(REGISTRY)


def candidate_layers() -> list[tuple[np.ndarray, ConvSpec]]:
    """Small random layers over every padding mode, several pads, strides, dilations, groups
    and kernel families (Gaussian, rank one, nonnegative, zero-sum, all-zero)."""
    rng = np.random.default_rng(20240601)
    grid = itertools.product(
        PADDING_MODES,
        ["same", "valid", (1, 0, 0, 2)],
        [1, 2],  # stride
        [1, 2],  # dilation
        [1, 2],  # groups
    )
    cases = []
    for i, (padding, pad, stride, dilation, groups) in enumerate(grid):
        c_out, c_in = groups * (1 + i % 2), groups * (1 + (i // 2) % 2)
        shape = (c_out, c_in // groups, 1 + i % 3, 1 + (i // 3) % 3)
        family = i % 5
        kernel = rng.standard_normal(shape)
        if family == 1:
            kernel = np.einsum("o,c,a,b->ocab", *(rng.standard_normal(n) for n in shape))
        elif family == 2:
            kernel = np.abs(kernel)
        elif family == 3:
            kernel = kernel - kernel.mean(axis=(2, 3), keepdims=True)
        elif family == 4 and i % 7 == 0:
            kernel = np.zeros(shape)
        size = (2 * stride + i % 4, 2 * stride + (i // 4) % 3)
        spec = ConvSpec(padding, pad, size, stride, dilation, groups)
        try:
            ConvLayer(kernel, spec, need_size=True)
        except ValueError:
            continue
        cases.append((kernel, spec))
    return cases


CASES = candidate_layers()
TRUTH = [dense_norm(k, s) for k, s in CASES]


def in_declared_domain(method, spec: ConvSpec) -> bool:
    return (
        spec.padding in method.paddings
        and (method.stride or spec.stride == (1, 1))
        and (method.dilation or spec.dilation == (1, 1))
        and (method.groups or spec.groups == 1)
    )


def assert_obeys_kind(bound, exact: float, kernel, spec: ConvSpec) -> None:
    assert bound.kind in KINDS
    assert math.isfinite(bound.value) and bound.value >= 0.0
    if bound.kind == "exact":
        assert abs(bound.value - exact) <= EXACT_RTOL * exact + 1e-300
    elif bound.kind == "upper":
        assert bound.value * (1 + ROUNDING_RTOL) >= exact
    elif bound.kind == "lower":
        assert bound.value * (1 - ROUNDING_RTOL) <= exact
        w = bound.witness
        assert w is not None and abs(np.linalg.norm(w) - 1.0) <= 1e-12
        assert bound.value * (1 - ROUNDING_RTOL) <= np.linalg.norm(
            conv_matrix(kernel, spec) @ w.ravel()
        )


def test_every_method_is_labelled():
    assert METHOD_NAMES, "no method registered"
    for m in methods():
        assert m.kind in KINDS
        assert m.reference.strip()
        assert set(m.paddings) <= set(PADDING_MODES) and m.paddings
        assert m.input_size in ("given", "every", "either")
        assert not m.differentiable or callable(m.torch_func)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_method_obeys_its_kind_inside_its_domain(name):
    method = REGISTRY[name]
    ran, refused_by_check = set(), 0
    for (kernel, spec), exact in zip(CASES, TRUTH, strict=True):
        if not in_declared_domain(method, spec):
            continue
        spec_run = spec.replace(input_size=None) if method.input_size == "every" else spec
        try:
            bound = method(kernel, spec_run)
        except ValueError:  # only the method's own domain check may refuse here
            assert method.check is not None, f"{name} refused a layer inside its flags"
            with pytest.raises(ValueError):
                method.check(ConvLayer(kernel, spec_run))
            refused_by_check += 1
            continue
        assert bound.method == name
        assert bound.kind == method.kind
        assert_obeys_kind(bound, exact, kernel, spec)
        if method.input_size == "every":  # one value for every size: check another one
            (h, w) = spec.input_size
            other = spec.replace(input_size=(h + 1, w + 3))
            assert_obeys_kind(bound, dense_norm(kernel, other), kernel, other)
        if method.input_size == "either":  # also valid when asked for every size
            try:
                every = method(kernel, spec.replace(input_size=None))
            except ValueError:
                pass
            else:
                assert_obeys_kind(every, exact, kernel, spec)
        ran.add(spec.padding)
    assert ran == set(method.paddings), (name, ran, refused_by_check)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_method_refuses_outside_its_domain(name):
    method = REGISTRY[name]
    kernel = np.random.default_rng(0).standard_normal((2, 1, 3, 3))
    base = ConvSpec(method.paddings[0], "same", (4, 4), 1, 1, 1)
    for padding in set(PADDING_MODES) - set(method.paddings):
        with pytest.raises(ValueError, match="padding"):
            method(kernel, base.replace(padding=padding))
    for flag, change, value in (
        ("stride", "stride", 2),
        ("dilation", "dilation", 2),
        ("groups", "groups", 2),
    ):
        if not getattr(method, flag):
            with pytest.raises(ValueError, match=change):
                method(kernel, base.replace(**{change: value}))
    if method.input_size == "given":
        with pytest.raises(ValueError, match="input_size"):
            method(kernel, base.replace(input_size=None))


def domain_spec(method) -> ConvSpec:
    """A layer inside every method's declared flags and checks: stride 1, no dilation or
    groups, pad 'same', 4x5 input (given unless the method takes every size)."""
    size = None if method.input_size == "every" else (4, 5)
    return ConvSpec(method.paddings[0], "same", size)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_all_zero_kernel_gives_zero_not_nan(name):
    # ecosystem.md P3 / gram.md §6 item 2: normalising a zero matrix gave NaN.
    method = REGISTRY[name]
    bound = method(np.zeros((2, 3, 3, 3)), domain_spec(method))
    assert bound.value == 0.0


@pytest.mark.parametrize("name", METHOD_NAMES)
@pytest.mark.parametrize("scale", [1e-150, 1e150])
def test_extreme_scales_are_positively_homogeneous(name, scale):
    method = REGISTRY[name]
    spec = domain_spec(method)
    kernel = np.random.default_rng(7).standard_normal((2, 3, 3, 3))
    seeded = {"seed": 0} if "seed" in inspect.signature(method.func).parameters else {}
    base = method(kernel, spec, **seeded).value
    scaled = method(kernel * scale, spec, **seeded).value
    assert math.isfinite(scaled)
    assert abs(scaled / scale - base) <= 1e-9 * base
