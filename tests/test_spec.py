"""ConvSpec: normalisation, derived sizes, and a clear error for every bad input."""

import numpy as np
import pytest
import torch
from hypothesis import given

import specbound as sb
from specbound.operators import ConvLayer
from specbound.testing import conv_specs

K = np.ones((4, 2, 3, 3))


def test_pad_forms_and_pytorch_same_split():
    assert sb.ConvSpec(pad=2).pads((3, 3)) == ((2, 2), (2, 2))
    assert sb.ConvSpec(pad=(1, 2)).pads((3, 3)) == ((1, 1), (2, 2))
    assert sb.ConvSpec(pad=(1, 2, 3, 4)).pads((3, 3)) == ((3, 4), (1, 2))  # F.pad order
    assert sb.ConvSpec(pad=((3, 4), (1, 2))).pads((3, 3)) == ((3, 4), (1, 2))  # own order
    assert sb.ConvSpec(pad="valid").pads((5, 2)) == ((0, 0), (0, 0))
    assert sb.ConvSpec(pad="full", dilation=2).pads((3, 2)) == ((4, 4), (2, 2))
    # even kernels: the odd pixel goes to the right/bottom, as torch's padding="same"
    assert sb.ConvSpec(pad="same").pads((2, 4)) == ((0, 1), (1, 2))
    assert sb.ConvSpec(pad="same", dilation=3).pads((2, 2)) == ((1, 2), (1, 2))


@pytest.mark.parametrize("kh,kw,d", [(2, 2, 1), (4, 3, 1), (2, 2, 3), (3, 2, 2)])
def test_same_matches_torch_same_output(kh, kw, d):
    """Our "same" reproduces torch's padding="same" output exactly."""
    rng = np.random.default_rng(0)
    k = rng.standard_normal((2, 3, kh, kw))
    x = rng.standard_normal((1, 3, 6, 7))
    spec = sb.ConvSpec("zeros", "same", (6, 7), dilation=d)
    expected = torch.nn.functional.conv2d(
        torch.from_numpy(x), torch.from_numpy(k), padding="same", dilation=d
    ).numpy()
    got = sb.operators.conv_matrix(k, spec) @ x.ravel()
    assert np.abs(got - expected.ravel()).max() < 1e-12


def test_derived_sizes():
    layer = ConvLayer(K, sb.ConvSpec(
        "zeros", (1, 0, 2, 1), (7, 9), stride=(2, 3), dilation=(1, 2), groups=2
    ))
    assert (layer.c_out, layer.c_in, layer.kernel_size) == (4, 4, (3, 3))
    assert layer.extent == (3, 5)
    # H: 7 + 2 + 1 - 3 = 7 -> 7 // 2 + 1 = 4;  W: 9 + 1 + 0 - 5 = 5 -> 5 // 3 + 1 = 2
    assert layer.out_size == (4, 2)
    assert (layer.in_dim, layer.out_dim) == (4 * 63, 4 * 8)


def test_from_module_reads_every_field():
    conv = torch.nn.Conv2d(
        4,
        6,
        (3, 2),
        stride=(2, 1),
        padding=(1, 0),
        dilation=(1, 2),
        groups=2,
        padding_mode="reflect",
    )
    spec = sb.ConvSpec.from_module(conv, input_size=(8, 9))
    assert spec == sb.ConvSpec("reflect", (1, 0), (8, 9), (2, 1), (1, 2), 2)
    same = sb.ConvSpec.from_module(torch.nn.Conv2d(2, 2, 4, padding="same"), input_size=5)
    assert same.pad == "same" and same.input_size == (5, 5)
    with pytest.raises(TypeError, match=r"conv must be a torch\.nn\.Conv1d, Conv2d"):
        sb.ConvSpec.from_module(torch.nn.Linear(2, 2))


@given(conv_specs())
def test_strategy_specs_are_valid(drawn):
    shape, spec = drawn
    layer = ConvLayer(np.ones(shape), spec, need_size=True)
    assert min(layer.out_size) >= 1


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        ({"padding": "mirror"}, ValueError, "padding must be one of"),
        ({"padding": None}, ValueError, "padding must be one of"),
        ({"pad": "half"}, ValueError, "pad must be one of"),
        ({"pad": -1}, ValueError, "pad must be non-negative"),
        ({"pad": (1, 2, 3, 4, 5)}, TypeError, "pad must be an int, a 2-tuple"),
        ({"pad": (1, 2, 3), "input_size": (4, 4)}, ValueError, "disagree"),
        ({"stride": (1, 2), "ndim": 3}, ValueError, r"stride=\(1, 2\) has 2 axes"),
        ({"ndim": 4}, ValueError, "ndim must be None, 1, 2 or 3"),
        ({"output_padding": 1, "stride": 2}, ValueError, "transposed convolutions only"),
        ({"transposed": True, "pad": 1, "padding": "reflect"}, ValueError, "zeros"),
        ({"transposed": True}, ValueError, "explicit amount"),
        (
            {"transposed": True, "pad": 0, "output_padding": 2, "stride": 2},
            ValueError,
            "smaller than either the stride or the dilation",
        ),
        ({"transposed": 1}, TypeError, "transposed must be a bool"),
        ({"pad": 1.5}, TypeError, "pad must be an int"),
        ({"stride": 0}, ValueError, "stride must be >= 1"),
        ({"stride": (1, 0)}, ValueError, "stride must be >= 1"),
        ({"stride": 1.0}, TypeError, "stride must be an int or a pair"),
        ({"stride": True}, TypeError, "stride must be an int or a pair"),
        ({"dilation": 0}, ValueError, "dilation must be >= 1"),
        ({"groups": 0}, ValueError, "groups must be a positive int"),
        ({"groups": 1.0}, ValueError, "groups must be a positive int"),
        ({"input_size": (4, 4.5)}, TypeError, "input_size must be"),
        ({"input_size": "32"}, TypeError, "input_size must be"),
        ({"input_size": 0}, ValueError, "input_size must be >= 1"),
    ],
)
def test_bad_spec_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        sb.ConvSpec(**kwargs)


@pytest.mark.parametrize(
    "kernel,spec,exc,match",
    [
        (np.ones((4, 2, 3)), sb.ConvSpec(input_size=(5, 5)), ValueError, "kernel must be 4-D"),
        (np.ones((4, 2)), sb.ConvSpec(), ValueError, "kernel must be 3-D, 4-D or 5-D"),
        (np.ones((4, 2, 0, 3)), sb.ConvSpec(), ValueError, "no empty axis"),
        (np.full((1, 1, 3, 3), np.nan), sb.ConvSpec(), ValueError, "kernel must be finite"),
        (np.full((1, 1, 3, 3), np.inf), sb.ConvSpec(), ValueError, "kernel must be finite"),
        (np.ones((1, 1, 3, 3), dtype=complex), sb.ConvSpec(), TypeError, "real numeric"),
        (np.array([[[["a"]]]]), sb.ConvSpec(), TypeError, "real numeric"),
        (torch.ones(1, 1, 3, 3, dtype=torch.complex64), sb.ConvSpec(), TypeError, "real"),
        (np.ones((3, 2, 3, 3)), sb.ConvSpec(groups=2), ValueError, "groups=2 must divide"),
        (K, sb.ConvSpec("reflect", 3, (3, 8)), ValueError, "reflect"),
        (K, sb.ConvSpec("reflect", "same", (1, 8)), ValueError, "smaller than the input"),
        (K, sb.ConvSpec("zeros", "valid", (2, 8)), ValueError, "output is empty"),
        (K, sb.ConvSpec("zeros", 0, (8, 8), dilation=4), ValueError, "output is empty"),
    ],
)
def test_bad_kernels_and_layers(kernel, spec, exc, match):
    with pytest.raises(exc, match=match):
        ConvLayer(kernel, spec)


def test_input_size_none_where_needed():
    with pytest.raises(ValueError, match="input_size=None means every input size"):
        ConvLayer(K, sb.ConvSpec(), need_size=True)
    with pytest.raises(ValueError, match="input_size=None"):
        sb.operators.conv_matrix(K, sb.ConvSpec())
    with pytest.raises(ValueError, match="input_size=None"):
        _ = ConvLayer(K, sb.ConvSpec()).out_size


def test_spec_is_immutable_and_hashable():
    spec = sb.ConvSpec("circular", [1, 2], [4, 5])
    with pytest.raises(AttributeError):
        spec.padding = "zeros"
    assert spec.pad == (1, 2) and spec.input_size == (4, 5)
    assert hash(spec) == hash(sb.ConvSpec("circular", (1, 2), (4, 5)))
    assert spec.replace(stride=2).stride == (2, 2)
    assert spec.to_dict()["input_size"] == [4, 5]


def test_torch_kernel_is_accepted_in_float64():
    k = torch.randn(2, 3, 3, 3, dtype=torch.float32, requires_grad=True)
    layer = ConvLayer(k, sb.ConvSpec(input_size=5))
    assert layer.kernel.dtype == np.float64
    assert np.array_equal(layer.kernel, k.detach().double().numpy())
