"""sb.audit: whole-network bounds against exact float64 ground truth.

Affine networks: the exact Lipschitz constant is the 2-norm of the network's matrix, built
here from :func:`specbound.operators.conv_matrix`, diagonal BatchNorm matrices and dense
operators of the pooling maps (applied to basis vectors); ``lower <= exact <= upper`` with bare
comparisons. Nonlinear networks: ``upper`` is at least every observed ratio
``||f(x) - f(y)|| / ||x - y||``.
"""

from __future__ import annotations

import copy
import importlib
import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from specbound.models import DigitsCNN, bundled_digits_cnn, bundled_digits_info, resnet18
from specbound.operators import conv_matrix
from specbound.spec import ConvSpec

# the module, not the function: ``specbound.audit`` is re-exported as the function
A = importlib.import_module("specbound.audit")


# ---------------------------------------------------------------------------- helpers
def randomise_bn(bn: nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        bn.weight.copy_(torch.randn(bn.weight.shape, generator=gen) * 2)
        bn.bias.copy_(torch.randn(bn.bias.shape, generator=gen))
        bn.running_mean.copy_(torch.randn(bn.running_mean.shape, generator=gen))
        bn.running_var.copy_(torch.rand(bn.running_var.shape, generator=gen) * 3 + 0.05)


def dense_of(fn, in_shape) -> np.ndarray:
    """The matrix of an affine map's linear part, from basis vectors (float64)."""
    n = math.prod(in_shape)
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    with torch.no_grad():
        out = fn(eye) - fn(torch.zeros(1, *in_shape, dtype=torch.float64))
    return out.reshape(n, -1).T.numpy()


def bn_diag(bn: nn.BatchNorm2d, pixels: int) -> np.ndarray:
    s = (bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)).detach().numpy()
    return np.diag(np.repeat(s, pixels))


def cmat(conv: nn.Conv2d, size) -> np.ndarray:
    return conv_matrix(conv.weight.detach().double(), ConvSpec.from_module(conv, size))


def check_matrix_is_network(net: nn.Module, mat: np.ndarray, in_shape) -> None:
    """The test's own matrix reproduces the float64 network (so it is the right one)."""
    net64 = copy.deepcopy(net).double().eval()
    x = torch.randn(1, *in_shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        diff = (net64(x) - net64(torch.zeros_like(x))).reshape(-1).numpy()
    np.testing.assert_allclose(mat @ x.reshape(-1).numpy(), diff, rtol=1e-10, atol=1e-12)


MEASURE_RTOL = 1e-8
"""The measured ratios below are float64 finite differences: for steps down to 1e-5 their own
rounding is below ``u / 1e-5 ~ 1e-11`` relative; they are compared as ``ratio * (1 -
MEASURE_RTOL) <= upper``. (The bounds themselves are compared bare with exact values.)"""


def empirical_ratios(
    net: nn.Module, in_shape, n: int = 64, seed: int = 0, directions: int = 4
) -> float:
    """Largest ||f(x) - f(y)|| / ||x - y|| over random pairs, close pairs and pairs along a
    power-iterated Jacobian direction (float64), shrunk by its rounding allowance."""
    net64 = copy.deepcopy(net).double().eval()
    gen = torch.Generator().manual_seed(seed)
    best = 0.0
    with torch.no_grad():
        for scale in (1.0, 1e-4):
            x = torch.randn(n, *in_shape, generator=gen, dtype=torch.float64)
            d = torch.randn(n, *in_shape, generator=gen, dtype=torch.float64) * scale
            num = (net64(x + d) - net64(x)).reshape(n, -1).norm(dim=1)
            best = max(best, float((num / d.reshape(n, -1).norm(dim=1)).max()))
    for i in range(directions):
        x = torch.randn(1, *in_shape, generator=gen, dtype=torch.float64)
        v = torch.randn(1, *in_shape, generator=gen, dtype=torch.float64)
        for _ in range(30):
            _, jv = torch.func.jvp(lambda z: net64(z), (x,), (v,))
            _, vjp = torch.func.vjp(lambda z: net64(z), x)
            (v,) = vjp(jv)
            v = v / v.norm()
        eps = 1e-5 * (i + 1)
        with torch.no_grad():
            best = max(best, float((net64(x + eps * v) - net64(x)).norm() / eps))
    return best * (1 - MEASURE_RTOL)


# ---------------------------------------------------------------------------- affine nets
def net_sequential(gen: torch.Generator) -> nn.Sequential:
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=2, padding=1),  # zeros, stride 2
        nn.BatchNorm2d(3),  # folded into the conv
        nn.Conv2d(3, 4, (3, 2), padding=(1, 0), padding_mode="circular"),
        nn.AvgPool2d(2, stride=1),
        nn.Flatten(),
        nn.Linear(4 * 4 * 2, 5),
    ).eval()
    randomise_bn(net[1], gen)
    return net


class ResidualCat(nn.Module):
    """reflect conv, residual sum with a folded conv+BN and a circular conv (scaled by 0.5),
    a strided 1x1 branch, adaptive average pooling, concatenation, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect")
        self.b = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.c = nn.Conv2d(4, 3, 3, padding=1, padding_mode="circular")
        self.d = nn.Conv2d(3, 2, 1, stride=2)
        self.pool = nn.AdaptiveAvgPool2d((2, 3))
        self.fc = nn.Linear(5 * 2 * 3, 4)

    def forward(self, x):
        y = self.a(x)
        z = y + self.c(self.bn(self.b(y))) * 0.5
        w = torch.cat([self.pool(z), self.pool(self.d(x))], dim=1)
        return self.fc(torch.flatten(w, 1))


def test_affine_sequential_bracket_contains_exact_norm():
    gen = torch.Generator().manual_seed(0)
    net = net_sequential(gen)
    conv1, bn, conv2, pool, _, fc = net
    c1 = cmat(conv1, (9, 7))  # -> 3 x 5 x 4
    c2 = cmat(conv2, (5, 4))  # -> 4 x 5 x 3
    p = dense_of(lambda t: pool(t), (4, 5, 3))
    mat = fc.weight.detach().double().numpy() @ p @ c2 @ bn_diag(bn, 20) @ c1
    check_matrix_is_network(net, mat, (2, 9, 7))
    exact = np.linalg.norm(mat, 2)
    rep = A.audit(net, (2, 9, 7), rtol=1e-3)
    assert rep.linear and rep.lower is not None
    assert rep.lower <= exact <= rep.upper, (rep.lower, exact, rep.upper)
    names = [row.name for row in rep.layers]
    assert "0+1" in names  # conv + BatchNorm folded
    assert [row.input_shape for row in rep.layers if row.name == "2"] == [(3, 5, 4)]


def test_affine_residual_concat_bracket_contains_exact_norm():
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(2)
    net = ResidualCat().eval()
    randomise_bn(net.bn, gen)
    a, b, c, d = (
        cmat(net.a, (6, 6)),
        cmat(net.b, (6, 6)),
        cmat(net.c, (6, 6)),
        cmat(net.d, (6, 6)),
    )
    z = (np.eye(108) + 0.5 * c @ bn_diag(net.bn, 36) @ b) @ a
    p1 = dense_of(lambda t: net.pool(t), (3, 6, 6))
    p2 = dense_of(lambda t: net.pool(t), (2, 3, 3))
    mat = net.fc.weight.detach().double().numpy() @ np.vstack([p1 @ z, p2 @ d])
    check_matrix_is_network(net, mat, (3, 6, 6))
    exact = np.linalg.norm(mat, 2)
    rep = A.audit(net, (3, 6, 6))
    assert rep.linear and rep.lower is not None
    assert rep.lower <= exact <= rep.upper, (rep.lower, exact, rep.upper)
    assert rep.composition == {"sums": 1, "concatenations": 1}


def test_affine_conv1d_network():
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv1d(2, 3, 3, stride=2, padding=1), nn.AvgPool1d(2), nn.Flatten(), nn.Linear(3 * 2, 2)
    ).eval()
    conv = net[0]
    k = conv.weight.detach().double()[:, :, None, :]
    c = conv_matrix(k, ConvSpec("zeros", (0, 1), (1, 9), stride=(1, 2)))
    p = dense_of(lambda t: net[1](t), (3, 5))
    mat = net[3].weight.detach().double().numpy() @ p @ c
    check_matrix_is_network(net, mat, (2, 9))
    exact = np.linalg.norm(mat, 2)
    rep = A.audit(net, (2, 9))
    assert rep.lower <= exact <= rep.upper


class Functional(nn.Module):
    """Functional operators with parameters read through get_attr."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(12)
        self.w1 = nn.Parameter(torch.randn(3, 2, 3, 3, generator=g))
        self.w2 = nn.Parameter(torch.randn(4, 3 * 3 * 3, generator=g))

    def forward(self, x):
        y = F.conv2d(F.pad(x, (1, 1, 0, 2), mode="reflect"), self.w1, stride=(2, 1))
        y = y - 0.25 * F.avg_pool2d(y, 3, stride=1, padding=1) / 2.0
        z = F.linear(-y.reshape(y.shape[0], -1), self.w2)
        return torch.cat([z, z.mean(dim=1, keepdim=True)], dim=1)


def test_affine_functional_network_against_its_dense_matrix():
    net = Functional().eval()
    mat = dense_of(net.double(), (2, 5, 3))
    exact = np.linalg.norm(mat, 2)
    rep = A.audit(net.float(), (2, 5, 3))
    assert rep.linear
    assert rep.lower <= exact <= rep.upper, (rep.lower, exact, rep.upper)
    assert rep.composition == {"sums": 1, "concatenations": 1}


def test_stride_is_not_ignored():
    """A stride-2 layer is certified at stride 2: its bracket holds the strided operator's norm,
    and is below the stride-1 norm for this kernel (a bound at stride 1 would also be valid
    but the audit must describe the real layer)."""
    torch.manual_seed(4)
    conv = nn.Conv2d(2, 2, 3, stride=2, padding=1, bias=False)
    rep = A.audit(nn.Sequential(conv), (2, 8, 8))
    strided = np.linalg.norm(cmat(conv, (8, 8)), 2)
    dense1 = np.linalg.norm(
        conv_matrix(conv.weight.detach().double(), ConvSpec("zeros", 1, (8, 8))), 2
    )
    row = rep.layers[0]
    assert row.lower <= strided <= row.upper
    assert row.upper < dense1
    assert row.certificate is not None and row.certificate.spec.stride == (2, 2)


# ---------------------------------------------------------------------------- BatchNorm
def test_batchnorm_folding_reproduces_unfolded_output():
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(5)
    conv = nn.Conv2d(3, 4, 3, padding=1, padding_mode="replicate", stride=(1, 2))
    bn = nn.BatchNorm2d(4)
    randomise_bn(bn, gen)
    lin, bn1 = nn.Linear(4 * 5 * 3, 3), nn.BatchNorm1d(3)
    randomise_bn(bn1, gen)
    net = nn.Sequential(conv, bn, nn.Flatten(), lin, bn1).eval()
    rep = A.audit(net, (3, 5, 6))
    rows = {row.name: row for row in rep.layers}
    assert set(rows) == {"0+1", "3+4"}
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    conv64, bn64 = copy.deepcopy(conv).double(), copy.deepcopy(bn).double()
    lin64, bn164 = copy.deepcopy(lin).double(), copy.deepcopy(bn1).double()
    with torch.no_grad():
        ref = bn64(conv64(x))
        k = torch.from_numpy(rows["0+1"].certificate.kernel)
        s = bn64.weight / torch.sqrt(bn64.running_var + bn64.eps)
        bias = (conv64.bias - bn64.running_mean) * s + bn64.bias
        folded = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, bias, stride=(1, 2))
        torch.testing.assert_close(folded, ref, rtol=1e-12, atol=1e-12)
        h = ref.flatten(1)
        ref1 = bn164(lin64(h))
        w = torch.from_numpy(rows["3+4"].certificate.kernel[:, :, 0, 0])
        s1 = bn164.weight / torch.sqrt(bn164.running_var + bn164.eps)
        bias1 = (lin64.bias - bn164.running_mean) * s1 + bn164.bias
        torch.testing.assert_close(h @ w.T + bias1, ref1, rtol=1e-12, atol=1e-12)


def test_unfolded_batchnorm_uses_abs_gamma_over_sqrt_var_eps():
    """After a ReLU the BatchNorm cannot be folded: its factor is max |gamma| / sqrt(var + eps),
    not gamma / var (gram.md Sec. 6 item 14)."""
    bn = nn.BatchNorm2d(3, eps=0.1)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.5, -3.0, 1.0]))
        bn.running_var.copy_(torch.tensor([4.0, 0.5, 0.01]))
    net = nn.Sequential(nn.ReLU(), bn).eval()
    rep = A.audit(net, (3, 2, 2))
    row = next(r for r in rep.layers if r.type == "BatchNorm2d")
    true = max(abs(g) / math.sqrt(v + 0.1) for g, v in ((0.5, 4.0), (-3.0, 0.5), (1.0, 0.01)))
    wrong = max(g / v for g, v in ((0.5, 4.0), (-3.0, 0.5), (1.0, 0.01)))
    assert row.lower <= true <= row.upper
    assert not row.lower <= wrong <= row.upper
    # the BatchNorm is attained on a positive input of channel 1 (diagonal map)
    x = torch.zeros(1, 3, 2, 2)
    x[0, 1, 0, 0] = 1.0
    with torch.no_grad():
        ratio = float((net(x) - net(torch.zeros_like(x))).norm())
    assert ratio <= rep.upper


def test_no_fold_when_the_conv_output_is_used_twice():
    torch.manual_seed(6)

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    net = Two().eval()
    randomise_bn(net.bn, torch.Generator().manual_seed(6))
    rep = A.audit(net, (2, 4, 4))
    assert {r.type for r in rep.layers} == {"Conv2d", "BatchNorm2d"}
    c = cmat(net.conv, (4, 4))
    mat = bn_diag(net.bn, 16) @ c + c
    exact = np.linalg.norm(mat, 2)
    assert rep.lower <= exact <= rep.upper


# ---------------------------------------------------------------------------- pooling
MAXPOOLS = [
    dict(kernel_size=2, stride=2),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=2, stride=1),
    dict(kernel_size=3, stride=2, padding=1, dilation=2),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0)),
]


@pytest.mark.parametrize("kw", MAXPOOLS)
def test_max_pool_constant_is_sqrt_of_max_window_count(kw):
    shape = (2, 7, 8)
    pool = nn.MaxPool2d(**kw)
    rep = A.audit(nn.Sequential(pool), shape)
    row = rep.layers[0]
    # brute force: a one-hot pixel (others 0, padding -inf) lights exactly its windows
    counts = []
    n = 7 * 8
    for p in range(n):
        e = torch.zeros(1, 1, 7, 8)
        e.view(-1)[p] = 1.0
        counts.append(int(F.max_pool2d(e, **kw).sum()))
    m = max(counts)
    assert row.lower <= math.sqrt(m) <= row.upper
    if kw.get("stride") == kw.get("kernel_size") and not kw.get("padding"):
        assert m == 1
    # attained by t e_p versus 0 at a pixel in m windows
    p = counts.index(m)
    x = torch.zeros(1, *shape, dtype=torch.float64)
    x.view(-1)[p] = 2.5
    with torch.no_grad():
        ratio = float((pool(x) - pool(torch.zeros_like(x))).norm() / 2.5)
    assert abs(ratio - math.sqrt(m)) < 1e-12
    # the linear map selecting the max pattern at a random input has norm <= sqrt(m)
    z = torch.randn(1, *shape, dtype=torch.float64, requires_grad=True)
    jac = torch.autograd.functional.jacobian(lambda t: pool(t).reshape(-1), z).reshape(-1, 2 * n)
    assert np.linalg.norm(jac.numpy(), 2) <= row.upper
    assert empirical_ratios(nn.Sequential(pool), shape, n=32) <= row.upper


AVGPOOLS = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=3, stride=1, padding=1, count_include_pad=False),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), divisor_override=5),
]


@pytest.mark.parametrize("kw", AVGPOOLS)
def test_avg_pool_bracket_contains_dense_norm(kw):
    pool = nn.AvgPool2d(**kw)
    rep = A.audit(nn.Sequential(pool), (2, 7, 6))
    exact = np.linalg.norm(dense_of(pool, (2, 7, 6)), 2)
    row = rep.layers[0]
    assert row.lower <= exact <= row.upper
    assert rep.lower <= exact <= rep.upper


@pytest.mark.parametrize("out", [(1, 1), (3, 2), (5, 4)])
def test_adaptive_avg_pool_bracket_contains_dense_norm(out):
    pool = nn.AdaptiveAvgPool2d(out)
    rep = A.audit(nn.Sequential(pool), (1, 7, 5))
    exact = np.linalg.norm(dense_of(pool, (1, 7, 5)), 2)
    assert rep.layers[0].lower <= exact <= rep.layers[0].upper


def test_adaptive_max_pool_and_mean():
    net = nn.Sequential(nn.AdaptiveMaxPool2d((2, 3)))
    rep = A.audit(net, (1, 5, 7))
    assert empirical_ratios(net, (1, 5, 7)) <= rep.upper

    class Mean(nn.Module):
        def forward(self, x):
            return x.mean((2, 3))

    rep = A.audit(Mean(), (3, 4, 5))
    exact = np.linalg.norm(dense_of(Mean(), (3, 4, 5)), 2)
    assert rep.lower <= exact <= rep.upper


# ---------------------------------------------------------------------------- activations
def sup_abs_derivative(fn, lo=-12.0, hi=12.0, n=400_001) -> float:
    """max |f'| on a grid by PyTorch's float64 autograd, shrunk by 1e-7 relative: some backward
    kernels (Hardsigmoid's) use float32 constants."""
    x = torch.linspace(lo, hi, n, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(fn(x).sum(), x)
    return float(g.abs().max()) * (1 - 1e-7)


@pytest.mark.parametrize(
    "act",
    [
        nn.GELU(),
        nn.GELU(approximate="tanh"),
        nn.SiLU(),
        nn.Sigmoid(),
        nn.Tanh(),
        nn.ELU(2.0),
        nn.LeakyReLU(0.3),
        nn.LeakyReLU(-1.5),
        nn.SELU(),
        nn.Hardswish(),
        nn.Softplus(),
        nn.Hardsigmoid(),
        nn.CELU(0.5),
        nn.ReLU6(),
    ],
)
def test_activation_constants_bracket_the_numeric_sup_slope(act):
    rep = A.audit(nn.Sequential(act), (4,))
    row = rep.layers[0]
    numeric = sup_abs_derivative(act)
    assert row.lower <= row.upper
    assert numeric <= row.upper
    assert row.upper - numeric <= 1e-4 * row.upper  # tight: the grid finds the sup


def test_gelu_closed_form():
    lo, hi = A.gelu_lipschitz()
    assert lo <= hi and hi - lo < 1e-13
    assert 1.12 < lo < 1.13  # sup of Phi(x) + x phi(x), not 1


# ---------------------------------------------------------------------------- nonlinear nets
class Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1, padding_mode="circular")
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding="same", dilation=2)
        self.act = nn.LeakyReLU(0.2)
        self.c3 = nn.Conv2d(4, 2, 1)
        self.fc = nn.Linear(6 * 2 * 2, 3)

    def forward(self, x):
        y = self.pool(F.gelu(self.c1(x)))
        y = y + torch.tanh(self.act(self.c2(y)))
        z = torch.cat([y, torch.sigmoid(self.c3(y))], dim=1)
        z = F.adaptive_avg_pool2d(z, (2, 2))
        return F.silu(self.fc(z.view(z.size(0), -1)))


def test_nonlinear_network_upper_dominates_empirical_ratios():
    torch.manual_seed(7)
    net = Mixed().eval()
    rep = A.audit(net, (2, 7, 7))
    assert not rep.linear and rep.lower is None and "nonlinear" in rep.lower_note
    assert empirical_ratios(net, (2, 7, 7)) <= rep.upper
    types = [r.type for r in rep.layers]
    assert "MaxPool2d" in types and "gelu" in types and "silu" in types


def test_bundled_digits_model_audit():
    pytest.importorskip("sklearn", reason="the digits images come with scikit-learn")
    model = bundled_digits_cnn()
    info = bundled_digits_info()
    assert info["test_accuracy"] > 0.9
    rep = A.audit(model, (1, 8, 8), rtol=0.1)
    assert rep.converged and rep.lower is None
    assert empirical_ratios(model, (1, 8, 8)) <= rep.upper
    from sklearn.datasets import load_digits

    x = torch.from_numpy((load_digits().images[:200] / 16.0).astype(np.float64))[:, None]
    m64 = copy.deepcopy(model).double()
    with torch.no_grad():
        out = m64(x)
    diff = (out[:, None] - out[None]).flatten(2).norm(dim=2)
    dist = (x[:, None] - x[None]).flatten(2).norm(dim=2)
    mask = dist > 0
    assert float((diff[mask] / dist[mask]).max()) <= rep.upper


@pytest.mark.example
def test_training_script_quick(tmp_path):
    """examples/train_digits_cnn.py writes a small state dict that specbound.models loads."""
    import json
    import os
    import subprocess
    from pathlib import Path

    from specbound.models import build

    pytest.importorskip("sklearn")
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [
            sys.executable,
            str(root / "examples" / "train_digits_cnn.py"),
            "--quick",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads((tmp_path / "digits_cnn.json").read_text())
    assert info["epochs"] == 3 and 0.1 < info["test_accuracy"] <= 1.0
    state = torch.load(tmp_path / "digits_cnn.pt", weights_only=True)
    assert isinstance(build("digits_cnn", state), DigitsCNN)
    bundled = root / "specbound" / "data" / "digits_cnn.pt"
    assert (tmp_path / "digits_cnn.pt").stat().st_size < 200_000
    assert bundled.stat().st_size < 200_000


def test_propagated_shapes_equal_a_real_forward():
    model = DigitsCNN(width=4).eval()
    seen: dict[str, list] = {}

    def hook(name):
        def record(mod, inp, out):
            seen.setdefault(name, []).append(tuple(inp[0].shape[1:]))

        return record

    hooks = [m.register_forward_hook(hook(name)) for name, m in model.named_modules() if name]
    with torch.no_grad():
        model(torch.randn(3, 1, 8, 8))
    for h in hooks:
        h.remove()
    rep = A.audit(model, (1, 8, 8), rtol=0.5)
    calls = {name: iter(shapes) for name, shapes in seen.items()}
    for row in rep.layers:  # in graph order, so the k-th row of a module is its k-th call
        assert row.input_shape == next(calls[row.name.split("+")[0]]), row.name
    assert len(rep.layers) == 10


def test_specbound_layers_network_is_about_one_lipschitz():
    from specbound.layers import AOLConv2d, AOLLinear, MaxMin, SLLConv2d

    torch.manual_seed(8)
    net = nn.Sequential(
        AOLConv2d(1, 4, 3), MaxMin(), SLLConv2d(4, 4, 3), nn.Flatten(), AOLLinear(4 * 5 * 5, 4)
    ).eval()
    rep = A.audit(net, (1, 5, 5))
    assert empirical_ratios(net, (1, 5, 5)) <= rep.upper <= 1.05


def test_torchscript_audit_matches_the_module_audit():
    torch.manual_seed(10)
    model = DigitsCNN(width=4).eval()
    for bn in (model.bn1, model.block_bn1, model.block_bn2, model.down_bn):
        randomise_bn(bn, torch.Generator().manual_seed(10))
    rep = A.audit(model, (1, 8, 8), rtol=0.5)
    rep_ts = A.audit(torch.jit.script(model), (1, 8, 8), rtol=0.5)
    assert "ATen" in rep_ts.frontend
    assert abs(rep_ts.upper - rep.upper) <= 1e-12 * rep.upper
    convs = [r.name for r in rep.layers if "Conv" in r.type or "Linear" in r.type]
    assert [r.name for r in rep_ts.layers if "Conv" in r.type or "Linear" in r.type] == convs
    assert len(convs) == 5


def test_exported_graph_module_audit_matches_the_module_audit():
    torch.manual_seed(11)
    model = DigitsCNN(width=4).eval()
    rep = A.audit(model, (1, 8, 8), rtol=0.5)
    exported = torch.export.export(model, (torch.zeros(1, 1, 8, 8),)).module()
    rep_ex = A.audit(exported, (1, 8, 8), rtol=0.5)
    assert abs(rep_ex.upper - rep.upper) <= 1e-12 * rep.upper
    assert [r.name for r in rep_ex.layers if "conv" in r.type or "linear" in r.type] == [
        r.name for r in rep.layers if "Conv" in r.type or "Linear" in r.type
    ]


def test_resnet18_traces_and_composes_at_a_tiny_input():
    torch.manual_seed(9)
    model = resnet18()
    rep = A.audit(model, (3, 4, 4), rtol=0.5, max_seconds_per_layer=0.05)
    convs = [r for r in rep.layers if r.type == "Conv2d+BatchNorm2d"]
    assert len(convs) == 20  # 17 convs + 3 projection shortcuts, each with its BatchNorm
    assert [r.type for r in rep.layers[-2:]] == ["AdaptiveAvgPool2d", "Linear"]
    assert rep.composition["sums"] == 8
    assert empirical_ratios(model, (3, 4, 4), n=16, directions=0) <= rep.upper


# ---------------------------------------------------------------------------- errors
class Gate(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x


class WithGate(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.block = nn.Sequential(nn.ReLU(), Gate())

    def forward(self, x):
        return self.block(self.conv(x))


def test_untraceable_model_names_the_module():
    with pytest.raises(A.AuditError, match=r"block\.1 \(Gate\)"):
        A.audit(WithGate(), (1, 4, 4))


class Sin(nn.Module):
    def forward(self, x):
        return torch.sin(x)


class Square(nn.Module):
    def forward(self, x):
        return x * x


@pytest.mark.parametrize(
    "net,pattern",
    [
        (nn.Sequential(nn.Softmax(dim=1)), "no Lipschitz rule for module '0' \\(Softmax\\)"),
        (Sin(), "no Lipschitz rule for node 'sin'"),
        (Square(), "two input-dependent"),
        (nn.Sequential(nn.BatchNorm2d(2, track_running_stats=False)), "batch statistics"),
        (nn.Sequential(nn.Hardshrink()), "Hardshrink"),
    ],
)
def test_operators_without_a_rule_are_errors(net, pattern):
    with pytest.raises(A.AuditError, match=pattern):
        A.audit(net, (2, 3, 3))


def test_wrong_input_shape_names_the_failing_module():
    with pytest.raises(A.AuditError, match="forward pass fails at module 'fc'"):
        A.audit(DigitsCNN(), (1, 12, 12))
    with pytest.raises(ValueError, match="input_shape"):
        A.audit(DigitsCNN(), (1, 0, 8))


def test_train_flags_are_restored_and_inplace_aliasing_is_refused():
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Dropout(0.5), nn.Flatten(), nn.Linear(8, 2)
    ).train()
    model[4].eval()
    rep = A.audit(model, (1, 4, 4))
    assert rep.linear  # eval Dropout is the identity, eval BatchNorm is affine
    assert model.training and model[1].training and model[2].training and not model[4].training

    class Alias(nn.Module):
        def forward(self, x):
            y = x + 0
            z = torch.relu_(y)
            return z + y

    with pytest.raises(A.AuditError, match="in place"):
        A.audit(Alias(), (3,))

    class DeadMutation(nn.Module):
        def forward(self, x):
            y = x + 0
            y.mul_(100.0)  # no user of its own: the mutation must not be skipped
            return torch.relu(y)

    with pytest.raises(A.AuditError, match="in place"):
        A.audit(DeadMutation(), (3,))


# ---------------------------------------------------------------------------- report
def test_report_outputs_and_progress(capsys):
    rep = A.audit(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), (1, 5, 5), progress=True)
    err = capsys.readouterr().err
    assert err  # a progress bar (tqdm) or one line per certified layer
    d = rep.to_dict()
    assert d["upper"] == rep.upper and len(d["layers"]) == 2
    assert d["layers"][0]["certificate"]["spec"]["input_size"] == [5, 5]
    import json

    assert json.loads(rep.to_json())["upper"] == rep.upper
    md = rep.to_markdown()
    assert "| 1 | `0` | Conv2d | 1x5x5 |" in md and "Lower bound: none" in md
    A.audit(nn.Sequential(nn.Conv2d(1, 2, 3)), (1, 5, 5), progress=False)
    assert capsys.readouterr().err == ""


def test_progress_without_tqdm(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # as if tqdm were not installed
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    A.audit(
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(18, 2)), (1, 5, 5), progress=True
    )
    assert capsys.readouterr().err.splitlines() == ["[1/2] 0", "[2/2] 2"]
