"""export_model: every specbound layer of a model becomes plain torch modules with the same
outputs; the model itself is untouched; a mismatch or an unsupported layer is refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import specbound.layers as L
from specbound.layers import ResidualBlock, export_model

PLAIN = (
    nn.Conv2d,
    nn.ConvTranspose2d,
    nn.Linear,
    nn.BatchNorm2d,
    nn.ZeroPad2d,
    nn.CircularPad2d,
    nn.ReflectionPad2d,
    nn.ReplicationPad2d,
    nn.Sequential,
    nn.Flatten,
    ResidualBlock,
    L.MaxMin,
)


def every_kind() -> nn.Sequential:
    torch.manual_seed(0)
    inplace_aol = nn.Conv2d(4, 4, 1)
    L.aol_(inplace_aol)
    inplace_sr = nn.Linear(10, 10)
    L.spectral_rescaling_(inplace_sr)
    return nn.Sequential(
        L.AOLConv2d(2, 4, 3),
        L.MaxMin(),
        L.SRConv2d(4, 4, 3, padding_mode="reflect"),
        L.BCOPConv2d(4, 4, 3),
        L.AOLConv2d(4, 4, (2, 3), padding="same"),  # asymmetric pads: a padding module
        inplace_aol,
        L.SLLConv2d(4, 6),
        L.ConvNorm2d(4, 4, 3),
        nn.Flatten(),
        L.AOLLinear(144, 10),
        L.SLLLinear(10, 5),
        inplace_sr,
        L.SRLinear(10, 3),
    ).double()


def test_outputs_match_and_only_plain_modules_remain():
    model = every_kind()
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    exported = export_model(model, x, rtol=1e-12, atol=1e-12)
    assert exported.training and model.training  # modes kept
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the model is untouched
    model.eval()
    exported.eval()
    with torch.no_grad():
        diff = (exported(x) - model(x)).abs().max().item()
    assert diff <= 1e-12
    for name, module in exported.named_modules():
        assert isinstance(module, PLAIN), (name, type(module))
        assert not parametrize.is_parametrized(module), name
    kinds = [type(m) for m in exported]
    assert kinds.count(ResidualBlock) == 2 and nn.Linear in kinds and nn.Sequential in kinds


def test_a_wrong_export_is_caught(monkeypatch):
    """The output check can fail: a replacement with a different weight is refused."""
    original = L.AOLConv2d.to_conv2d

    def wrong(self):
        conv = original(self)
        with torch.no_grad():
            conv.weight.mul_(1 + 1e-3)
        return conv

    monkeypatch.setattr(L.AOLConv2d, "to_conv2d", wrong)
    model = nn.Sequential(L.AOLConv2d(2, 3, 3))
    with pytest.raises(ValueError, match="differs from the model's by up to"):
        export_model(model, torch.randn(2, 2, 5, 5))


def test_unsupported_layers_are_named():
    model = nn.Sequential(nn.Identity(), L.SLLConv2d(2, padding_mode="circular"))
    with pytest.raises(ValueError, match=r"cannot export layer '1'.*circular"):
        export_model(model, torch.randn(1, 2, 4, 4))
    unused = nn.ModuleDict({"used": nn.Identity(), "unused": L.ConvNorm2d(2, 2, 3)})
    wrapper = nn.Module()
    wrapper.parts = unused
    wrapper.forward = lambda x: wrapper.parts["used"](x)
    with pytest.raises(ValueError, match=r"parts.unused.*does not reach it"):
        export_model(wrapper, torch.randn(1, 2, 4, 4))


def test_bad_arguments():
    with pytest.raises(TypeError, match="model must be"):
        export_model(lambda x: x, torch.ones(1))
    with pytest.raises(TypeError, match="example_input must be"):
        export_model(nn.Identity(), [1.0])
    with pytest.raises(ValueError, match="rtol"):
        export_model(nn.Identity(), torch.ones(1), rtol=-1.0)
    with pytest.raises(ValueError, match="atol"):
        export_model(nn.Identity(), torch.ones(1), atol=float("nan"))
