"""The audit's rules for normalisation, max/min/sort, broadcasts, resampling and rearrangements
(issue 14): each row's bracket against a dense float64 reference, each whole-network bound
against the largest Jacobian norm found by power iteration, refusals and tracing fallbacks."""

from __future__ import annotations

import copy
import importlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn

from proofs_check.families.audit_rules import (
    bcast_search,
    convt_search,
    max_search,
    norm_search,
    perm_search,
    resample_search,
)
from proofs_check.harness import run
from proofs_check.registry import Mode
from specbound.audit.normalization import normalization_lipschitz
from specbound.testing import assert_upper_dominates_jacobian

A = importlib.import_module("specbound.audit")
QUICK = Mode("quick")


def dense_jacobian(fn, x: torch.Tensor) -> np.ndarray:
    jac = torch.autograd.functional.jacobian(lambda z: fn(z).reshape(-1), x)
    return jac.reshape(-1, x.numel()).numpy()


def row(rep, name):
    return next(r for r in rep.layers if r.name == name)


# ---------------------------------------------------------------------------- proofs_check
@pytest.mark.parametrize(
    "search",
    [norm_search, max_search, bcast_search, resample_search, perm_search, convt_search],
)
def test_audit_theorems_pass_and_their_planted_variants_fail(search):
    assert run(search(), QUICK).verdict == "PASS"
    planted = run(search(planted=True), QUICK)
    assert planted.verdict == "FAIL" and planted.margin < 0


# ---------------------------------------------------------------------------- normalisation
finite = st.floats(-4.0, 4.0, allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=25, deadline=None)
@given(
    gamma=hnp.arrays(np.float64, st.integers(2, 6), elements=finite),
    log_eps=st.floats(-6.0, 0.5),
)
@example(gamma=np.array([0.0, 0.0, 3.0]), log_eps=-5.0)
def test_layer_norm_bracket_contains_the_jacobian_norm_at_zero(gamma, log_eps):
    """At x = 0 the Jacobian of LayerNorm is diag(gamma) P / sqrt(eps): the exact constant."""
    eps = 10.0**log_eps
    n = gamma.size
    ln = nn.LayerNorm(n, eps=eps).double()
    ln.weight.data = torch.from_numpy(gamma.copy())
    lo, hi = normalization_lipschitz(gamma, eps, n)
    exact = float(np.linalg.norm(dense_jacobian(ln, torch.zeros(1, n, dtype=torch.float64)), 2))
    assert lo <= exact * (1 + 1e-9)
    assert exact <= hi * (1 + 1e-9)
    for x in torch.randn(5, 1, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0)):
        assert float(np.linalg.norm(dense_jacobian(ln, x), 2)) <= hi * (1 + 1e-9)


class NormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.ln = nn.LayerNorm([4, 4, 4], eps=1e-3)
        self.gn = nn.GroupNorm(2, 4, eps=1e-2)
        self.inorm = nn.InstanceNorm2d(4, affine=True, eps=0.1)
        self.rms = nn.RMSNorm([4], eps=1e-2)
        for m in (self.ln, self.gn, self.inorm, self.rms):
            m.weight.data.uniform_(-2.0, 2.0)

    def forward(self, x):
        y = self.conv(x)
        z = self.ln(y) + self.gn(y) + self.inorm(y)
        return (
            self.rms(z.permute(0, 2, 3, 1))
            + F.layer_norm(z, (4,), eps=1e-2).permute(0, 3, 1, 2).flatten(1).sum()
        )


def test_normalisation_network_upper_dominates_jacobians():
    torch.manual_seed(1)
    net = NormNet()
    rep = A.audit(net, (2, 4, 4), rtol=1e-2)
    ln = row(rep, "ln")
    assert "eps" in ln.upper_method and ln.upper >= 1.0 / math.sqrt(1e-3) * 0.01
    jac = dense_jacobian(lambda z: net.double().ln(z), torch.zeros(1, 4, 4, 4, dtype=torch.float64))
    net.float()
    assert ln.lower <= float(np.linalg.norm(jac, 2)) * (1 + 1e-9) <= ln.upper * (1 + 1e-9)
    assert_upper_dominates_jacobian(net, (2, 4, 4), rep.upper, n_inputs=20, iters=10)


# ---------------------------------------------------------------------------- max / broadcast
class MaxBroadcast(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 3, 3, padding=1)
        self.b = nn.Conv2d(2, 3, 1)
        self.scale = nn.Parameter(torch.randn(3, 1, 1))

    def forward(self, x):
        u, v = self.a(x), self.b(x)
        w = torch.maximum(u, v) + u.mean((2, 3), keepdim=True)  # broadcast add, r = H W
        w = torch.minimum(w, v.amax(1, keepdim=True)) * self.scale  # broadcast of the constant
        w = torch.max(w, dim=1, keepdim=True)[0].expand(-1, 2, -1, -1)
        return torch.cat([w, torch.sort(u, dim=1)[0]], 1)


def test_max_broadcast_network_upper_dominates_jacobians():
    torch.manual_seed(2)
    net = MaxBroadcast()
    rep = A.audit(net, (2, 5, 5), rtol=1e-2)
    expand = next(r for r in rep.layers if r.type == "expand")
    assert expand.lower <= math.sqrt(2) <= expand.upper
    assert_upper_dominates_jacobian(net, (2, 5, 5), rep.upper, n_inputs=20, iters=10)


def test_broadcast_add_counts_the_repetitions():
    class Add(nn.Module):
        def forward(self, x):
            return x + x.mean((2, 3), keepdim=True)

    rep = A.audit(Add(), (1, 3, 4), rtol=1e-2)
    # the mean row is 1/sqrt(12); broadcast to 12 entries: sqrt(12) / sqrt(12) = 1; total 2
    assert 2.0 <= rep.upper <= 2.0 * (1 + 1e-12)
    mat = dense_jacobian(Add(), torch.zeros(1, 1, 3, 4, dtype=torch.float64))
    assert float(np.linalg.norm(mat, 2)) <= rep.upper


# ---------------------------------------------------------------------------- resampling
@pytest.mark.parametrize(
    "layer",
    [
        nn.Upsample(scale_factor=2),
        nn.Upsample(size=(5, 7), mode="bilinear"),
        nn.UpsamplingBilinear2d(scale_factor=1.5),
        nn.Upsample(scale_factor=3, mode="nearest-exact"),
    ],
)
def test_resampling_bracket_contains_the_dense_norm(layer):
    rep = A.audit(nn.Sequential(layer), (2, 3, 4), rtol=1e-2)
    (r,) = rep.layers
    mat = dense_jacobian(layer, torch.zeros(1, 2, 3, 4, dtype=torch.float64))
    exact = float(np.linalg.norm(mat, 2))
    assert r.lower <= exact * (1 + 1e-12)
    assert exact <= r.upper
    assert rep.lower is not None and rep.lower <= exact * (1 + 1e-12)


def test_bicubic_is_refused():
    with pytest.raises(A.AuditError, match="bicubic"):
        A.audit(nn.Sequential(nn.Upsample(scale_factor=2, mode="bicubic")), (1, 3, 3))


# ---------------------------------------------------------------------------- refusals
class SE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))


class Normalise(nn.Module):
    def forward(self, x):
        return x / x.norm(dim=1, keepdim=True)


class Attn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x)[0]


class QK(nn.Module):
    def forward(self, x):
        return torch.softmax(x @ x.transpose(1, 2), -1) @ x


@pytest.mark.parametrize(
    "net,shape,pattern",
    [
        (nn.Sequential(nn.Conv2d(3, 3, 1), SE()), (3, 4, 4), r"in module '1' \(SE\).*two input"),
        (nn.Sequential(nn.Identity(), Normalise()), (3, 4), r"module '1' \(Normalise\).*divides"),
        (Attn(), (3, 4), r"module 'attn' \(MultiheadAttention\).*not globally Lipschitz"),
        (QK(), (3, 4), r"node 'matmul'.*two input-dependent matrices"),
    ],
)
def test_non_lipschitz_operations_are_refused_with_the_module_and_a_way_out(net, shape, pattern):
    with pytest.raises(A.AuditError, match=pattern) as err:
        A.audit(net, shape)
    assert "audit the sub-network before" in str(err.value)


# ---------------------------------------------------------------------------- tracing
class ShapeBranch(nn.Module):
    """torch.fx cannot branch on a traced shape; torch.export can."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        if x.shape[-1] > 2:
            return self.conv(x)
        return x


def test_torch_export_fallback_names_rows_by_module_path():
    torch.manual_seed(3)
    net = ShapeBranch()
    rep = A.audit(net, (2, 4, 4), rtol=1e-3)
    assert rep.frontend.startswith("torch.export")
    assert [r.name for r in rep.layers] == ["conv"]
    plain = A.audit(nn.Sequential(net.conv), (2, 4, 4), rtol=1e-3)
    assert rep.lower <= plain.upper and plain.lower <= rep.upper


class MyConv(nn.Conv2d):
    def forward(self, x):
        return super().forward(x)


class Doubled(nn.Conv2d):
    def forward(self, x):
        return 2 * super().forward(x)


def test_conv_subclasses_are_leaves_only_when_they_are_plain_convs():
    torch.manual_seed(4)
    sub = MyConv(2, 3, 3, padding=1, padding_mode="reflect")
    rep = A.audit(nn.Sequential(sub), (2, 5, 5), rtol=1e-3)
    assert [(r.name, r.type) for r in rep.layers] == [("0", "MyConv")]
    doubled = Doubled(2, 3, 3, padding=1)
    rep2 = A.audit(nn.Sequential(doubled), (2, 5, 5), rtol=1e-3)
    assert [r.type for r in rep2.layers] != ["Doubled"]  # traced through
    assert_upper_dominates_jacobian(nn.Sequential(doubled), (2, 5, 5), rep2.upper, n_inputs=3)


def test_report_describes_the_composition_and_a_local_estimate():
    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 3, padding=1))
    rep = A.audit(net, (2, 4, 4), rtol=1e-2)
    assert rep.local_estimate is not None and 0 < rep.local_estimate <= rep.upper
    text = rep.to_markdown()
    assert "Local lower estimate (not a certificate)" in text
    assert (
        "product of per-layer bounds along the dominant path (3 factors" in text
    )  # conv, ReLU, conv


# ---------------------------------------------------------------------------- padding fold
@pytest.mark.parametrize(
    "pad,mode",
    [
        (nn.ReflectionPad2d((1, 1, 2, 0)), "reflect"),
        (nn.CircularPad2d(1), "circular"),
        (nn.ReplicationPad2d(1), "replicate"),
        (nn.ZeroPad2d((0, 2, 1, 1)), "zeros"),
    ],
)
def test_padding_module_is_folded_into_the_next_conv_and_its_batchnorm(pad, mode):
    from specbound.operators import exact_norm
    from specbound.spec import ConvSpec

    torch.manual_seed(6)
    conv, bn = nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3)
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(-2.0, 2.0)
    net = nn.Sequential(pad, conv, bn).eval()
    rep = A.audit(net, (2, 5, 5), rtol=1e-4)
    (r,) = rep.layers
    assert (r.name, r.type) == ("0+1+2", "Conv2d+BatchNorm2d")
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    kernel = (conv.weight.detach().double() * scale.view(-1, 1, 1, 1)).numpy()
    exact = float(exact_norm(kernel, ConvSpec(mode, tuple(pad.padding), (5, 5))))
    assert r.lower <= exact * (1 + 1e-12)
    assert exact <= r.upper
    separate = (
        A.audit(nn.Sequential(pad), (2, 5, 5)).upper
        * A.audit(
            nn.Sequential(conv, bn).eval(), (2, 5 + sum(pad.padding[2:]), 5 + sum(pad.padding[:2]))
        ).upper
    )
    assert r.upper <= separate * (1 + 1e-9)


class FrozenBN(nn.Module):
    """torchvision.ops.FrozenBatchNorm2d's computation: x * scale + bias from buffers."""

    def __init__(self, n: int) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(7)
        self.register_buffer("weight", torch.rand(n, generator=gen) * 4 - 2)
        self.register_buffer("bias", torch.randn(n, generator=gen))
        self.register_buffer("running_var", torch.rand(n, generator=gen) + 0.1)
        self.register_buffer("running_mean", torch.randn(n, generator=gen))

    def forward(self, x):
        scale = self.weight * (self.running_var + 1e-5).rsqrt()
        bias = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)


def test_frozen_batchnorm_scale_is_folded_into_the_conv():
    torch.manual_seed(8)
    net = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), FrozenBN(3))
    rep = A.audit(net, (2, 5, 5), rtol=1e-4)
    (r,) = rep.layers
    assert r.name == "0+mul" and any("per-channel scale" in n for n in r.notes)
    # the constant scale is the one the float32 forward computes (the audit's semantics: the
    # network's own float32 rounding is not part of the bound)
    fbn = net[1]
    scale = (fbn.weight * (fbn.running_var + 1e-5).rsqrt()).double().reshape(1, -1, 1, 1)
    conv64 = copy.deepcopy(net[0]).double()
    zero = torch.zeros(1, 2, 5, 5, dtype=torch.float64)
    exact = float(np.linalg.norm(dense_jacobian(lambda z: conv64(z) * scale, zero), 2))
    assert r.lower <= exact * (1 + 1e-9) and exact <= r.upper * (1 + 1e-9)


# ---------------------------------------------------------------------------- merging
@pytest.mark.parametrize("groups", [1, 2])
def test_conv_then_1x1_conv_is_merged_into_one_certified_convolution(groups):
    torch.manual_seed(9)
    bn = nn.BatchNorm2d(4)
    bn.running_var.uniform_(0.5, 2.0)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect", groups=groups),
        bn,
        nn.Conv2d(4, 3, 1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3 * 5 * 5, 6),
        nn.Linear(6, 2),
    ).eval()
    rep = A.audit(net, (2, 5, 5), rtol=1e-4)
    assert [r.name for r in rep.layers] == ["0+1+2", "3", "5+6"]
    merged = rep.layers[0]
    assert any("merged" in n for n in merged.notes)
    net64 = copy.deepcopy(net).double()
    zero = torch.zeros(1, 2, 5, 5, dtype=torch.float64)
    exact = float(np.linalg.norm(dense_jacobian(lambda z: net64[:3](z), zero), 2))
    assert merged.lower <= exact * (1 + 1e-12) and exact <= merged.upper
    lin = float(
        np.linalg.norm(net64[6].weight.detach().numpy() @ net64[5].weight.detach().numpy(), 2)
    )
    assert rep.layers[2].lower <= lin * (1 + 1e-12) and lin <= rep.layers[2].upper
    assert_upper_dominates_jacobian(net, (2, 5, 5), rep.upper, n_inputs=20, iters=5)


# ---------------------------------------------------------------------------- transposed
@pytest.mark.parametrize(
    "layer,shape",
    [
        (nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1), (2, 4, 3)),
        (nn.ConvTranspose2d(4, 2, (2, 3), stride=(1, 2), dilation=2, groups=2), (4, 3, 3)),
        (nn.ConvTranspose1d(2, 3, 4, stride=3, padding=2, output_padding=2), (2, 5)),
        # output_padding >= stride (docs/certify.md L12, the cropped adjoint)
        (nn.ConvTranspose1d(2, 3, 3, stride=2, dilation=3, output_padding=2), (2, 5)),
        (nn.ConvTranspose2d(2, 2, 3, dilation=(3, 1), padding=1, output_padding=(2, 0)), (2, 3, 4)),
        (nn.ConvTranspose3d(2, 3, 3, stride=2, padding=1, output_padding=1), (2, 2, 3, 2)),
        (nn.ConvTranspose3d(2, 2, 2, dilation=(3, 1, 1), output_padding=(2, 0, 0)), (2, 2, 2, 3)),
    ],
)
def test_transposed_conv_bracket_contains_the_dense_norm(layer, shape):
    torch.manual_seed(10)
    rep = A.audit(nn.Sequential(layer), shape, rtol=1e-4)
    (r,) = rep.layers
    lay64 = copy.deepcopy(layer).double()
    zero = torch.zeros(1, *shape, dtype=torch.float64)
    exact = float(np.linalg.norm(dense_jacobian(lay64, zero), 2))
    assert r.lower <= exact * (1 + 1e-12) and exact <= r.upper
    assert rep.lower is not None and rep.lower <= exact * (1 + 1e-12)


@pytest.mark.parametrize("mode", ["zeros", "circular", "reflect", "replicate"])
def test_conv3d_bracket_contains_the_dense_norm(mode):
    """``Conv3d`` by the same rule as ``Conv2d`` (AUD-CONV): the row's bracket holds the
    dense Jacobian norm, the network's upper dominates Jacobian power iteration."""
    torch.manual_seed(11)
    layer = nn.Conv3d(2, 3, 3, stride=(1, 2, 1), padding=1, padding_mode=mode)
    net = nn.Sequential(layer, nn.ReLU(), nn.Conv3d(3, 2, 1))
    shape = (2, 3, 4, 3)
    rep = A.audit(net, shape, rtol=1e-4)
    first = rep.layers[0]
    zero = torch.zeros(1, *shape, dtype=torch.float64)
    exact = float(np.linalg.norm(dense_jacobian(copy.deepcopy(layer).double(), zero), 2))
    assert first.lower <= exact * (1 + 1e-12) and exact <= first.upper
    assert_upper_dominates_jacobian(net, shape, rep.upper, n_inputs=20, iters=5)


def test_functional_conv3d_and_conv_transpose3d_are_audited():
    torch.manual_seed(12)
    w1, w2 = torch.randn(3, 2, 2, 3, 2), torch.randn(3, 2, 3, 2, 2)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("w1", w1.clone())
            self.register_buffer("w2", w2.clone())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.conv3d(x, self.w1, padding=1)
            return F.conv_transpose3d(torch.relu(y), self.w2, stride=2, output_padding=1)

    shape = (2, 3, 3, 3)
    rep = A.audit(Net(), shape, rtol=1e-4)
    convs = [r for r in rep.layers if "conv" in r.type]
    assert [r.type for r in convs] == ["conv3d", "conv_transpose3d"]
    zero = torch.zeros(1, *shape, dtype=torch.float64)
    exact = float(
        np.linalg.norm(dense_jacobian(lambda z: F.conv3d(z, w1.double(), padding=1), zero), 2)
    )
    assert convs[0].lower <= exact * (1 + 1e-12) and exact <= convs[0].upper
    mid = torch.zeros(1, 3, 4, 3, 4, dtype=torch.float64)
    exact_t = float(
        np.linalg.norm(
            dense_jacobian(
                lambda z: F.conv_transpose3d(z, w2.double(), stride=2, output_padding=1), mid
            ),
            2,
        )
    )
    assert convs[1].lower <= exact_t * (1 + 1e-12) and exact_t <= convs[1].upper
    assert_upper_dominates_jacobian(Net(), shape, rep.upper, n_inputs=20, iters=5)


# ------------------------------------------------------------------ the type -> rule table
def test_rule_table_points_into_the_concept_modules():
    """Every rule of the dispatch table is a function of a concept module of the audit
    (linear, activations, normalization, pooling, padding, resample, structural), or one of
    the analyser's own few (convolutions read from a module, attention refusals); a torch
    type or a function name maps to the rule that its concept owns."""
    from torch import nn

    an = importlib.import_module("specbound.audit._analyser")
    concept = {
        "specbound.audit.linear",
        "specbound.audit._activations",
        "specbound.audit.normalization",
        "specbound.audit._pooling",
        "specbound.audit._padding",
        "specbound.audit.resample",
        "specbound.audit.structural",
        "specbound.audit._analyser",
    }
    rules = [rule for _, rule in an.MODULE_RULES] + list(an.FUNCTION_RULES.values())
    assert {rule.__module__ for rule in rules} <= concept
    assert an.module_rule(nn.ConvTranspose2d(2, 2, 3)).__module__ == "specbound.audit.linear"
    assert an.module_rule(nn.Conv2d(2, 2, 3)) is an._conv_module
    assert an.module_rule(nn.GELU()).__module__ == "specbound.audit._activations"
    assert an.module_rule(nn.ReflectionPad2d(1)).__module__ == "specbound.audit._padding"
    assert an.module_rule(nn.AvgPool2d(2)).__module__ == "specbound.audit._pooling"
    assert an.module_rule(nn.Bilinear(2, 2, 2)) is None  # no rule: refused, never assumed
    assert an.FUNCTION_RULES["layer_norm"].__module__ == "specbound.audit.normalization"
    assert an.FUNCTION_RULES["conv2d"].__module__ == "specbound.audit.linear"
    with pytest.raises(RuntimeError, match="two rules"):
        an._by_name((("relu",), an.sort_function), (("relu",), an.sort_function))
