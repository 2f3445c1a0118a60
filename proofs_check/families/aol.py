"""AOL: Almost-Orthogonal Lipschitz layers (Prach & Lampert, ECCV 2022, arXiv 2208.03160).

The library code is :class:`specbound.layers.AOLConv2d` (its forward pass, measured as a dense
Jacobian) and :func:`specbound.layers.aol`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import strategies as st

from specbound import ConvSpec
from specbound.layers import AOLConv2d, aol, rescaling_factors_for
from specbound.operators import conv_matrix
from specbound.testing import (
    MATRIX_FAMILIES,
    adversarial_kernels,
    adversarial_layers,
    conv_specs,
    family_kernel,
    family_matrix,
    lipschitz_specs,
    matrices,
    module_matrix,
)

from ..exact import matrix_norm, norm
from ..harness import Search, Skip, run
from ..registry import Mode, Theorem, register
from .common import (
    PADDED_SPECS,
    SYMBOL_CIRCULAR_SPECS,
    ZERO_SPECS,
    describe_layer,
    random_layers,
    suite,
)

FAMILY = "AOL"
SOURCE = (
    "Prach & Lampert, Almost-Orthogonal Layers for Efficient General-Purpose Lipschitz "
    "Networks, ECCV 2022 (arXiv 2208.03160), Thm. 1, Lemma 1, Lemma 2 and App. A.1"
)
LIP_LAYERS = adversarial_layers(lipschitz_specs(max_size=5, max_kernel=3, max_channels=3))


def aol_module(kernel: np.ndarray, spec: ConvSpec, side: str = "input") -> AOLConv2d:
    """An :class:`AOLConv2d` of the spec's geometry whose free kernel is ``kernel``."""
    c_out, c_in_g = kernel.shape[:2]
    try:
        module = AOLConv2d(
            c_in_g * spec.groups,
            c_out,
            kernel.shape[2:],
            stride=spec.stride,
            padding=spec.pad,
            dilation=spec.dilation,
            groups=spec.groups,
            bias=True,
            padding_mode=spec.padding,
            side=side,
            dtype=torch.float64,
        )
    except ValueError as exc:  # a geometry the layer refuses (e.g. circular pad > d(k-1))
        raise Skip from exc
    with torch.no_grad():
        module.parametrizations.weight.original.copy_(torch.from_numpy(kernel))
        module.bias.normal_()
    return module


# --------------------------------------------------------------------------- AOL1
def _aol1(layer) -> float:
    kernel, spec = layer
    worst = math.inf
    for side in ("input", "output"):
        module = aol_module(kernel, spec, side)
        j = module_matrix(module, (module.in_channels, *spec.input_size))
        worst = min(worst, 1.0 - matrix_norm(j))
    return worst


def _aol1_random(rng: np.random.Generator, count: int):
    return random_layers(
        rng, count, ("gaussian", "rank_one", "constant", "sparse"), max_kernel=3, max_size=5
    )


def _aol1_adversarial(mode: Mode):
    yield from suite(ZERO_SPECS + SYMBOL_CIRCULAR_SPECS + PADDED_SPECS, mode)


register(
    Theorem(
        id="AOL1",
        title="AOL layers are 1-Lipschitz",
        statement="The AOL conv layer (input channels rescaled by d_i = (sum_{j,delta} "
        "|(P^T P * P)[i,j,delta]|)^(-1/2), or the dual output-side form) has ||J|| <= 1 for zero "
        "padding of any amount, circular padding with total pad <= d(k-1), any input size "
        "(including n < k), stride, dilation and groups; with reflect/replicate padding after "
        "division by the exact bound on the padding operator's norm (specbound's compensation).",
        latex=r"\big\|J\big(x \mapsto \mathrm{conv}(\mathrm{pad}(x), P D / c_P)\big)\big\|_2 \le 1,"
        r"\quad D_{ii} = \Big(\sum_{j,\delta}\big|(P^\top P \star P)[i,j,\delta]\big|\Big)^{-1/2}",
        source=SOURCE + "; stride, dilation, groups and the padding compensation derived in "
        "specbound (research/layers.md §1.A)",
        conditions="the forward pass of specbound.layers.AOLConv2d (float64), measured as a dense "
        "Jacobian from basis images; sides input and output; rounding allowance 1e-12",
        relied_on=True,
        check=lambda mode: run(
            Search(
                _aol1,
                tolerance=1e-12,
                random=_aol1_random,
                adversarial=_aol1_adversarial,
                strategy=LIP_LAYERS,
                n_hypothesis=(6, 150),
                describe=describe_layer,
                key="AOL1",
            ),
            mode,
        ),
        proof="Theorem 1 applied to the Jacobian of the maximally padded conv (its Gram entries "
        "are "
        "the self-correlation, the per-pixel Schur factor is at least d_i); any other zero padding "
        "is a crop, circular padding a row selection of the circulant (C6), a stride a row "
        "selection; reflect/replicate: conv o pad = V P with ||P|| <= c_P.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- AOL-DENSE
def _aol_dense(w: np.ndarray) -> float:
    with torch.no_grad():
        worst = 1.0 - matrix_norm(aol(torch.from_numpy(w)).numpy())
        return min(worst, 1.0 - matrix_norm(aol(torch.from_numpy(w), side="output").numpy()))


def _dense_adversarial(mode: Mode):
    for family in MATRIX_FAMILIES:
        for shape in ((1, 1), (3, 7), (7, 3), (6, 6)):
            yield family_matrix(family, shape, seed=4)
    w = np.random.default_rng(0).standard_normal((5, 4))
    w[:, 1] = 0.0  # a zero column: D_jj = 0, no NaN
    yield w


register(
    Theorem(
        id="AOL-DENSE",
        title="AOL for matrices",
        statement="For every matrix P and D_jj = (sum_k |(P^T P)_jk|)^(-1/2) (0 for a zero "
        "column), ||P D|| <= 1; likewise on the rows.",
        latex=r"\|P D\|_2 \le 1,\quad D_{jj} = \Big(\sum_k |(P^\top P)_{jk}|\Big)^{-1/2}",
        source=SOURCE,
        conditions="any real matrix (zero columns included); both sides; tolerance 1e-12",
        relied_on=True,
        check=lambda mode: run(
            Search(
                _aol_dense,
                tolerance=1e-12,
                adversarial=_dense_adversarial,
                strategy=matrices(),
                key="AOL-DENSE",
                random=lambda rng, n: (
                    rng.standard_normal(tuple(int(v) for v in rng.integers(1, 10, size=2)))
                    for _ in range(n)
                ),
            ),
            mode,
        ),
        proof="w^T M w <= sum_jk |M_jk||w_j||w_k| <= sum_j w_j^2 sum_k |M_jk| for M = P^T P; put "
        "w = D v.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- AOL-TIGHT
def _aol_tight(instance) -> float:
    kernel, spec = instance
    with torch.no_grad():
        rescaled = aol(torch.from_numpy(kernel)).numpy()
    worst = -float(np.abs(rescaled - kernel).max())
    sv = np.linalg.svd(conv_matrix(rescaled, spec), compute_uv=False)
    return min(worst, -float(np.abs(sv - 1.0).max()))


def _tight_instances(rng: np.random.Generator, count: int):
    for _ in range(count):
        c_in = int(rng.integers(1, 4))
        c_out = c_in + int(rng.integers(0, 3))
        k = int(rng.integers(1, 5))
        n = int(rng.integers(1, 7))
        mode = str(rng.choice(["zeros", "circular"]))
        kernel = family_kernel("orthogonal_center", (c_out, c_in, k, k), int(rng.integers(2**31)))
        yield kernel, ConvSpec(mode, "same", (n, n))


register(
    Theorem(
        id="AOL-TIGHT",
        title="AOL is exact on orthogonal centre taps",
        statement="If the kernel is zero except at the central tap, where it has orthonormal "
        "columns (c_out >= c_in), then D = I (AOL leaves it unchanged) and the conv is an isometry "
        "(all singular values 1) under 'same' zero or circular padding at stride 1, for every n.",
        latex=r"P = H \otimes \delta_{\mathrm{centre}},\ H^\top H = I \Rightarrow D = I,\ "
        r"J^\top J = I",
        source=SOURCE + " (Thm. 1 tightness; the 'orthogonal centre' initialisation)",
        conditions="c_out >= c_in, odd and even k, zero and circular 'same' padding, stride 1, "
        "n = 1..6; tolerance 1e-12",
        relied_on=False,
        check=lambda mode: run(
            Search(
                _aol_tight,
                tolerance=1e-12,
                random=_tight_instances,
                n_random=(8, 80),
                describe=describe_layer,
                key="AOL-TIGHT",
            ),
            mode,
        ),
        proof="P^T P * P is H^T H = I at delta = 0 and 0 elsewhere; the conv maps pixel i to H "
        "x_i.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- AOL-N1
def aol_uncompensated_search(
    quantifier: str = "exists", modes: tuple[str, ...] = ("reflect", "replicate")
) -> Search:
    """AOL (input side) **without** the padding compensation under reflect/replicate padding.

    ``quantifier="exists"``: search for ``||J|| > 1`` (the non-guarantee, registered as
    AOL-N1). ``quantifier="forall"``: the false statement "AOL is 1-Lipschitz with reflect /
    replicate padding without compensation" (margin ``1 - ||J||``), which must FAIL.
    """

    def value(layer) -> float:
        kernel, spec = layer
        with torch.no_grad():
            rescaled = aol(torch.from_numpy(kernel), groups=spec.groups).numpy()
        return norm(rescaled, spec)

    def margin(layer) -> float:
        v = value(layer)
        return v - 1.0 if quantifier == "exists" else 1.0 - v

    def random(rng: np.random.Generator, count: int):
        return random_layers(
            rng,
            count,
            ("gaussian", "nonnegative", "constant"),
            modes=modes,
            max_kernel=3,
            max_size=5,
            max_stride=1,
        )

    def adversarial(mode: Mode):
        yield from suite([p for p in PADDED_SPECS if p[1].padding in modes], mode)

    strategy = adversarial_layers(conv_specs(modes, max_size=5, max_kernel=3, max_stride=1))
    return Search(
        margin,
        quantifier=quantifier,
        tolerance=1e-9 if quantifier == "exists" else 1e-12,
        random=random,
        adversarial=adversarial,
        strategy=strategy,
        describe=describe_layer,
        key=f"AOL-N1-{quantifier}-{'-'.join(modes)}",
    )


register(
    Theorem(
        id="AOL-N1",
        title="Without compensation AOL is not 1-Lipschitz under reflect/replicate padding",
        statement="There are kernels whose AOL-rescaled conv has ||J|| > 1 with reflect or "
        "replicate padding when the padding operator's norm is not compensated (these pads copy "
        "pixels; the paper's proof needs a 1-Lipschitz padding).",
        latex=r"\exists P:\ \big\|J_{\mathrm{reflect}}(P D)\big\|_2 > 1",
        source=SOURCE + " ('works as long as the padding itself is 1-Lipschitz'); counterexamples "
        "in research/layers.md §1.D (AOL-N1: up to 1.372 reflect, 1.042 replicate)",
        conditions="reflect and replicate padding, stride 1, no compensation; a witness exceeds 1 "
        "by more than 1e-9",
        relied_on=False,
        quantifier="exists",
        check=lambda mode: run(aol_uncompensated_search("exists"), mode),
        proof="Witnessed by computation (exact dense norms).",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- AOL-N2
def _aol_n2(layer) -> float:
    kernel, spec = layer
    c = min(kernel.shape[:2])
    kernel = np.ascontiguousarray(kernel[:c, :c])
    with torch.no_grad():
        d = rescaling_factors_for(torch.from_numpy(kernel), 1, side="input").numpy()[0]
    if not np.all(d > 0):
        raise Skip
    mixed = kernel / d[:, None, None, None]  # input-side factors applied to output channels
    return norm(mixed, spec.replace(groups=1)) - 1.0


register(
    Theorem(
        id="AOL-N2",
        title="Input-side AOL factors applied to output channels are not valid",
        statement="Mixing the axes (computing d from the input side and rescaling the output "
        "channels) can give ||J|| > 1.",
        latex=r"\exists P:\ \big\|\operatorname{diag}(d_{\mathrm{in}})\,P\big\|_2 > 1",
        source="research/layers.md §1.D (AOL-N2: up to 1.485)",
        conditions="square channel counts (c_in = c_out), zero padding; a witness exceeds 1 by "
        "more "
        "than 1e-9",
        relied_on=False,
        quantifier="exists",
        check=lambda mode: run(
            Search(
                _aol_n2,
                quantifier="exists",
                tolerance=1e-9,
                random=lambda rng, n: random_layers(
                    rng,
                    n,
                    ("gaussian", "nonnegative", "sparse"),
                    modes=("zeros",),
                    max_groups=1,
                    max_kernel=3,
                    max_size=5,
                ),
                adversarial=lambda m: iter(
                    [
                        (
                            np.array([[[[0.1]], [[0.0]]], [[[1.0]], [[0.01]]]]),
                            ConvSpec("zeros", "same", (2, 2)),
                        )
                    ]
                ),
                strategy=st.tuples(
                    st.integers(2, 3).flatmap(
                        lambda c: adversarial_kernels(
                            (c, c, 3, 3), ("gaussian", "nonnegative", "integer")
                        )
                    ),
                    st.just(ConvSpec("zeros", "same", (4, 4))),
                ),
                describe=describe_layer,
                key="AOL-N2",
            ),
            mode,
        ),
        proof="Witnessed by computation.",
        family=FAMILY,
    )
)
