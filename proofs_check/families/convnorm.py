"""ConvNorm (Liu et al., NeurIPS 2021): what its normalisation guarantees and what it does not.

The library code is :class:`specbound.layers.ConvNorm2d` with ``affine=False, bn=False`` and
``track_running_stats=False`` (the normalisation step with the exact ``v`` of its weights),
measured as a dense Jacobian from basis images.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import strategies as st

from specbound import ConvSpec
from specbound.layers import ConvNorm2d
from specbound.testing import adversarial_layers, conv_specs, family_kernel, module_matrix

from ..exact import norm
from ..harness import Search, Skip, run
from ..registry import Mode, Theorem, register
from .common import describe_layer, random_spec

FAMILY = "ConvNorm"
SOURCE = (
    "Liu, Li, Zhai, You, Zhu, Fernandez-Granda & Qu, Convolutional Normalization: "
    "Improving Deep Convolutional Network Robustness and Training, NeurIPS 2021 "
    "(arXiv 2103.00673; only the abstract could be retrieved [A]); the operator is the "
    "reference code's (shengliu66/ConvNorm@aad1043), statements derived in specbound "
    "(research/layers.md §4)"
)
FAMILIES = (
    "gaussian",
    "rank_one",
    "integer",
    "identical_filters",
    "constant",
    "tiny",
    "huge",
    "nonnegative",
)


def convnorm_domain(shape, spec: ConvSpec) -> bool:
    """ConvNorm2d's geometry: zero padding with each pad <= D, circular with total <= D."""
    (top, bottom), (left, right) = spec.pads(shape[2:])
    (dh, dw), (kh, kw) = spec.dilation, shape[2:]
    eh, ew = dh * (kh - 1), dw * (kw - 1)
    if spec.padding == "zeros":
        return max(top, bottom) <= eh and max(left, right) <= ew
    return spec.padding == "circular" and top + bottom <= eh and left + right <= ew


SCALE_RANGE = (1e-140, 1e140)
"""Kernels with ``max |K|`` in this range: ConvNorm2d squares the DFT of the kernel without
rescaling, so its power spectrum underflows or overflows outside it (CN-RANGE)."""


def in_range(kernel: np.ndarray) -> bool:
    top = float(np.abs(kernel).max(initial=0.0))
    return top == 0.0 or SCALE_RANGE[0] <= top <= SCALE_RANGE[1]


def convnorm_jacobian(kernel: np.ndarray, spec: ConvSpec, eps: float = 0.0) -> np.ndarray:
    """Dense Jacobian of the ConvNorm normalisation step with this kernel and geometry."""
    c_out, c_in_g = kernel.shape[:2]
    module = ConvNorm2d(
        c_in_g * spec.groups,
        c_out,
        kernel.shape[2:],
        stride=spec.stride,
        padding=spec.pad,
        dilation=spec.dilation,
        groups=spec.groups,
        bias=False,
        padding_mode=spec.padding,
        affine=False,
        bn=False,
        eps=eps,
        track_running_stats=False,
        dtype=torch.float64,
    )
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(kernel))
    return module_matrix(module, (module.in_channels, *spec.input_size))


def min_power_ratio(kernel: np.ndarray, spec: ConvSpec) -> float:
    """``min_{j, w} sum_i |kappa_ji(w)|^2 / max`` on ConvNorm's grid (0: a vanishing frequency)."""
    (h, w), (dh, dw) = spec.input_size, spec.dilation
    kh, kw = kernel.shape[2:]
    grid = (h, w) if spec.padding == "circular" else (h + dh * (kh - 1), w + dw * (kw - 1))
    wrapped = np.zeros((*kernel.shape[:2], *grid))
    for a in range(kh):
        for b in range(kw):
            wrapped[:, :, (dh * a) % grid[0], (dw * b) % grid[1]] += kernel[:, :, a, b]
    power = (np.abs(np.fft.fft2(wrapped)) ** 2).sum(axis=1)
    top = float(power.max())
    return float(power.min()) / top if top > 0 else 0.0


def _random(rng: np.random.Generator, count: int, torus: bool = False):
    for _ in range(count):
        while True:
            if torus:
                shape, spec = random_spec(rng, circulant=True, max_stride=1, max_size=6)
            else:
                shape, spec = random_spec(rng, ("zeros", "circular"), max_size=6)
            if convnorm_domain(shape, spec):
                break
        family = str(rng.choice(list(FAMILIES)))
        yield family_kernel(family, shape, int(rng.integers(2**31))), spec


SPECS = conv_specs(("zeros", "circular"), max_size=6, max_channels=3).filter(
    lambda x: convnorm_domain(*x)
)
TORUS = conv_specs(("circular",), max_size=6, max_channels=3, max_stride=1, circulant=True)
LAYERS = adversarial_layers(SPECS, FAMILIES)
TORUS_LAYERS = adversarial_layers(TORUS, FAMILIES)


def _blocks(j: np.ndarray, c_out: int) -> list[np.ndarray]:
    rows = j.shape[0] // c_out
    return [j[i * rows : (i + 1) * rows] for i in range(c_out)]


# --------------------------------------------------------------------------- CN1
def _cn1(layer) -> float:
    kernel, spec = layer
    if not in_range(kernel) or min_power_ratio(kernel, spec) < 1e-8:
        raise Skip
    j = convnorm_jacobian(kernel, spec)
    worst = math.inf
    for block in _blocks(j, kernel.shape[0]):
        gram = block @ block.T
        worst = min(worst, -float(np.abs(gram - np.eye(gram.shape[0])).max()))
    return worst


register(
    Theorem(
        id="CN1",
        title="ConvNorm's guarantee: each output channel is a co-isometry on its grid",
        statement="With exact v_j(w) = (sum_i |kappa_ji(w)|^2)^(-1/2) (eps = 0, no vanishing "
        "frequency), output channel j of the normalised torus convolution is a co-isometry: "
        "R_j R_j^T = I.",
        latex=r"R_j = V_j\,[C_{j1}\ \cdots\ C_{jc}],\quad \widehat{V_j}(\omega) = \Big(\sum_i "
        r"|\hat\kappa_{ji}(\omega)|^2\Big)^{-1/2} \Rightarrow R_j R_j^\top = I",
        source=SOURCE + " (abstract: 'channel-wise isometry' [A])",
        conditions="the normalisation step alone on its periodic grid (circular padding with total "
        "pad d(k-1), stride 1, any n, dilation, groups; for zero padding this grid is n + e - 1 "
        "and "
        "the same operator); instances with a vanishing frequency (power < 1e-8 max) are outside; "
        "tolerance 1e-10 on the entries of R_j R_j^T - I; max |K| in [1e-140, 1e140] (outside: "
        "CN-RANGE)",
        relied_on=True,
        check=lambda mode: run(
            Search(
                _cn1,
                tolerance=1e-10,
                random=lambda rng, n: _random(rng, n, torus=True),
                strategy=TORUS_LAYERS,
                describe=describe_layer,
                key="CN1",
            ),
            mode,
        ),
        proof="R_j R_j^T is the circulant with symbol v_j^2 sum_i |kappa_ji|^2 = 1.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- CN2
def _cn2(instance) -> float:
    (kernel, spec), alpha = instance
    if not (in_range(kernel) and in_range(alpha * kernel)) or min_power_ratio(kernel, spec) < 1e-8:
        raise Skip
    a = convnorm_jacobian(kernel, spec, eps=1e-5)
    b = convnorm_jacobian(alpha * kernel, spec, eps=1e-5)
    scale = max(float(np.abs(a).max()), 1e-300)
    return -float(np.abs(b - math.copysign(1.0, alpha) * a).max()) / scale


register(
    Theorem(
        id="CN2",
        title="ConvNorm is scale invariant",
        statement="ConvNorm(alpha K) = sign(alpha) ConvNorm(K) for alpha != 0 (the regulariser eps "
        "is relative to mean power, so this holds for eps >= 0).",
        latex=r"\mathrm{CN}(\alpha K) = \operatorname{sign}(\alpha)\,\mathrm{CN}(K)",
        source=SOURCE,
        conditions="zero padding (pads <= d(k-1)) and circular (total <= d(k-1)), stride, "
        "dilation, "
        "groups; eps = 1e-5; alpha in +-[1e-3, 1e3]; max |K| and max |alpha K| in [1e-140, 1e140] "
        "(outside: CN-RANGE); tolerance 1e-10",
        relied_on=False,
        check=lambda mode: run(
            Search(
                _cn2,
                tolerance=1e-10,
                random=lambda rng, n: (
                    (layer, float(rng.choice([-1, 1]) * 10 ** rng.uniform(-3, 3)))
                    for layer in _random(rng, n)
                ),
                strategy=st.tuples(
                    LAYERS, st.sampled_from([-1e3, -2.0, -1e-3, 1e-3, 0.5, 7.0, 1e3])
                ),
                describe=lambda x: f"{describe_layer(x[0])}; alpha = {x[1]}",
                key="CN2",
            ),
            mode,
        ),
        proof="kappa -> alpha kappa scales the power by alpha^2 and v by 1/|alpha|.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- CN3
def _cn3(instance) -> float:
    (kernel, spec), eps = instance
    if not np.any(kernel) or not in_range(kernel):
        raise Skip
    vanishing = min_power_ratio(kernel, spec) < 1e-8
    if vanishing and eps == 0.0:
        raise Skip
    value = float(np.linalg.norm(convnorm_jacobian(kernel, spec, eps), 2))
    cap = math.sqrt(kernel.shape[0] // spec.groups)
    worst = cap / value - 1.0 if value > 0 else 0.0
    torus = (
        spec.padding == "circular"
        and spec.stride == (1, 1)
        and sum(spec.pads(kernel.shape[2:])[0]) == spec.dilation[0] * (kernel.shape[2] - 1)
        and sum(spec.pads(kernel.shape[2:])[1]) == spec.dilation[1] * (kernel.shape[3] - 1)
    )
    if torus and eps == 0.0:
        worst = min(worst, value - 1.0)
    return worst


register(
    Theorem(
        id="CN3",
        title="ConvNorm's norm window",
        statement="The normalisation step has ||J|| <= sqrt(c_out / groups) (any eps >= 0, after "
        "any crop and stride), and ||J|| >= 1 on its torus (circular, total pad d(k-1), stride 1, "
        "eps = 0); the upper end is attained by identical filters.",
        latex=r"1 \le \|J\|_2 \le \sqrt{c_{\mathrm{out}}/g}",
        source=SOURCE,
        conditions="zero padding (each pad <= d(k-1)) and circular (total <= d(k-1)), stride, "
        "dilation, groups, eps in {0, 1e-5, 0.1}; max |K| in [1e-140, 1e140] (outside: CN-RANGE); "
        "tolerance 1e-10",
        relied_on=True,
        check=lambda mode: run(
            Search(
                _cn3,
                tolerance=1e-10,
                random=lambda rng, n: (
                    (layer, float(rng.choice([0.0, 1e-5, 0.1]))) for layer in _random(rng, n)
                ),
                strategy=st.tuples(LAYERS, st.sampled_from([0.0, 1e-5, 0.1])),
                describe=lambda x: f"{describe_layer(x[0])}; eps = {x[1]}",
                key="CN3",
            ),
            mode,
        ),
        proof="||J||^2 <= sum_j ||R_j||^2 with ||R_j|| <= 1 (symbol v_j^2 sum_i |kappa_ji|^2 <= "
        "1); "
        "crops and strides select rows. On the torus one block row is a co-isometry (CN1).",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- CN-N1
def _cn_n1(layer) -> float:
    kernel, spec = layer
    if not in_range(kernel) or min_power_ratio(kernel, spec) < 1e-8:
        raise Skip
    return float(np.linalg.norm(convnorm_jacobian(kernel, spec), 2)) - 1.0


register(
    Theorem(
        id="CN-N1",
        title="ConvNorm is not 1-Lipschitz",
        statement="The normalisation step can have ||J|| > 1 (up to sqrt(c_out)); the affine "
        "depthwise conv and BatchNorm that follow are unconstrained, so the full ConvNorm block "
        "has "
        "no Lipschitz bound at all.",
        latex=r"\exists K:\ \|J_{\mathrm{CN}}\|_2 > 1",
        source=SOURCE + " (research/layers.md §4.D CN-N1: 1.29-2.10 for random kernels)",
        conditions="c_out >= 2; a witness exceeds 1 by more than 1e-9",
        relied_on=False,
        quantifier="exists",
        check=lambda mode: run(
            Search(
                _cn_n1,
                quantifier="exists",
                tolerance=1e-9,
                random=_random,
                strategy=LAYERS,
                describe=describe_layer,
                key="CN-N1",
            ),
            mode,
        ),
        proof="Witnessed by computation (identical filters reach sqrt(c_out)).",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- CN-CLAIM
def convnorm_reduction_search() -> Search:
    def margin(layer) -> float:
        kernel, spec = layer
        if min_power_ratio(kernel, spec) < 1e-8:
            raise Skip
        normalised = float(np.linalg.norm(convnorm_jacobian(kernel, spec), 2))
        raw = norm(kernel, spec)
        return raw / normalised - 1.0

    def adversarial(mode: Mode):
        rng = np.random.default_rng(1)
        spec = ConvSpec("zeros", 1, (4, 4))
        for scale in (1e-2, 1.0, 1e2):
            yield scale * rng.standard_normal((2, 2, 3, 3)), spec

    return Search(
        margin,
        tolerance=1e-12,
        adversarial=adversarial,
        strategy=LAYERS,
        describe=describe_layer,
        key="CN-CLAIM",
    )


register(
    Theorem(
        id="CN-CLAIM",
        title="'ConvNorm reduces the layerwise spectral norm', read as a universal claim",
        statement="Published claim (abstract): 'ConvNorm can reduce the layerwise spectral norm of "
        "the weight matrices'. Read for every kernel, ||ConvNorm(K)|| <= ||conv(K)||, it is false: "
        "the step is scale invariant, so a small-norm conv is raised to norm >= 1.",
        latex=r"\|J_{\mathrm{CN}}(K)\|_2 \overset{?}{\le} \|\mathrm{conv}(K)\|_2",
        source=SOURCE,
        conditions="zero and circular padding in ConvNorm2d's domain, eps = 0; the same geometry "
        "for the raw conv",
        relied_on=False,
        expected="FAIL",
        check=lambda mode: run(convnorm_reduction_search(), mode),
        proof="Not as stated: ConvNorm(K/100) = ConvNorm(K) has norm >= 1 on its torus while "
        "||conv(K/100)|| = ||conv(K)||/100. It holds only for convs whose norm is already large.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- CN-RANGE
def _cn_range(instance) -> float:
    kernel, spec, scale = instance
    base = _cn1((kernel, spec))  # the guarantee at scale 1
    scaled = kernel * scale
    j = convnorm_jacobian(scaled, spec)
    if not np.isfinite(j).all():
        return -math.inf
    worst = base
    for block in _blocks(j, kernel.shape[0]):
        gram = block @ block.T
        worst = min(worst, -float(np.abs(gram - np.eye(gram.shape[0])).max()))
    return worst


def _range_instances(mode: Mode):
    rng = np.random.default_rng(2)
    spec = ConvSpec("circular", "same", (4, 4))
    for scale in (1e-150, 1e-160, 1e-200, 1e150, 1e160, 1e200):
        yield rng.standard_normal((2, 2, 3, 3)), spec, scale


register(
    Theorem(
        id="CN-RANGE",
        title="ConvNorm2d's normalisation outside [1e-140, 1e140] (under/overflow)",
        statement="CN1 (each output channel a co-isometry) for every finite float64 kernel, "
        "whatever its scale.",
        latex=r"\forall K \in \mathbb F^{c_o\times c_i\times k\times k}:\ R_j R_j^\top = I",
        source=SOURCE + "; specbound.layers.convnorm.convnorm_normalizer",
        conditions="none (informative): the same operator as CN1, kernels scaled by 1e+-150, "
        "1e+-160, "
        "1e+-200",
        relied_on=False,
        expected="FAIL",
        check=lambda mode: run(
            Search(
                _cn_range,
                tolerance=1e-10,
                adversarial=_range_instances,
                describe=lambda x: f"{describe_layer((x[0], x[1]))}; scaled by {x[2]:g}",
                key="CN-RANGE",
            ),
            mode,
        ),
        proof="False in float64: the power spectrum sum_i |kappa_ji|^2 is formed from squares "
        "without rescaling, so it underflows below ~1e-154 (v is clamped at 1/sqrt(tiny): the step "
        "is no longer scale invariant, the channel norm collapses) and overflows above ~1e154. The "
        "operator is scale invariant, so scaling the kernel by a power of two first would remove "
        "the limitation.",
        family=FAMILY,
    )
)
