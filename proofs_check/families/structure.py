"""Stride, dilation and the polyphase identity, on exact operators."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

from specbound.operators import circulant_spectrum, conv_matrix, symbol
from specbound.testing import adversarial_layers, circulant_specs, conv_specs, layers

from ..exact import circ, norm
from ..harness import Search, Skip, run
from ..registry import Mode, Theorem, register
from .common import (
    CIRCULANT_SPECS,
    FLOOR_NOTE,
    PADDED_SPECS,
    SYMBOL_CIRCULAR_SPECS,
    ZERO_SPECS,
    describe_layer,
    negligible,
    random_layers,
    suite,
)

FAMILY = "Stride, dilation, polyphase"


# --------------------------------------------------------------------------- ST-STRIDE
def _stride(layer) -> float:
    kernel, spec = layer
    if spec.stride == (1, 1):
        raise Skip
    strided = norm(kernel, spec)
    unstrided = norm(kernel, spec.replace(stride=1))
    if negligible(strided, kernel) or negligible(unstrided, kernel):
        raise Skip
    if unstrided == 0.0:
        return 0.0 if strided == 0.0 else -1.0
    return unstrided / strided - 1.0 if strided > 0 else 0.0


def _stride_adversarial(mode: Mode):
    specs = [
        (shape, spec.replace(stride=2))
        for shape, spec in ZERO_SPECS + SYMBOL_CIRCULAR_SPECS + PADDED_SPECS
    ]
    return suite(specs, mode)


register(
    Theorem(
        id="ST-STRIDE",
        title="A stride never increases the norm",
        statement="For every padding mode, pads, dilation and groups, the strided layer is a row "
        "selection of the stride-1 layer with the same pads: ||A_s|| <= ||A_1||.",
        latex=r"\|D_s A\| \le \|A\|",
        source="derived in specbound (research/gram.md §4.2 'Stride'; layers.md §3.A)",
        conditions="all four padding modes, strides up to 3, any pads, dilation, groups; relative "
        "tolerance 1e-12" + FLOOR_NOTE,
        relied_on=True,
        check=lambda mode: run(
            Search(
                _stride,
                tolerance=1e-12,
                random=lambda rng, n: random_layers(rng, n, ("gaussian", "integer"), max_stride=3),
                adversarial=_stride_adversarial,
                strategy=adversarial_layers(conv_specs(max_stride=3, max_size=6)),
                describe=describe_layer,
                key="ST-STRIDE",
            ),
            mode,
        ),
        proof="Output i of the strided layer is output s*i of the stride-1 layer (same padded "
        "input); selecting rows is a contraction.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- ST-POLY
def _poly(layer) -> float:
    kernel, spec = layer
    if spec.stride == (1, 1):
        raise Skip
    dense = np.linalg.svd(conv_matrix(kernel, spec), compute_uv=False)
    fast = circulant_spectrum(kernel, spec)
    if dense.shape != fast.shape:
        return -1.0
    if negligible(float(dense.max(initial=0.0)), kernel):
        raise Skip  # taps that cancel exactly: a zero operator, up to the dense sum's rounding
    top = max(float(dense.max(initial=0.0)), 1e-300)
    return -float(np.abs(np.sort(dense) - np.sort(fast)).max(initial=0.0)) / top


register(
    Theorem(
        id="ST-POLY",
        title="Polyphase identity for strided circular layers",
        statement="A c_in -> c_out circular layer with stride s dividing N is unitarily equivalent "
        "to a stride-1 circular layer on (N/s)^2 with c_in s_h s_w input channels (the polyphase "
        "reshape of the kernel): their singular values coincide.",
        latex=r"\operatorname{sv}\big(D_s C_N(K)\big) = \operatorname{sv}\big(C_{N/s}(K')\big),"
        r"\quad K'_{o,(c,r)}[q] = \sum_{a:\ d a - P = s q + r} K_{o,c}[a]",
        source="Senderovich, Zhelavskaya & Bronstein, Towards Practical Control of Singular Values "
        "of Convolutional Layers, NeurIPS 2022, Sec. 3; wrapping for N/s < k derived in specbound",
        conditions="circular padding with d(k-1) padded in total, strides 2..3 dividing N, any "
        "dilation and groups; absolute tolerance 1e-12 sigma_1 on every singular value"
        + FLOOR_NOTE,
        relied_on=True,
        check=lambda mode: run(
            Search(
                _poly,
                tolerance=1e-12,
                random=lambda rng, n: random_layers(
                    rng, n, ("gaussian", "integer"), circulant=True, max_stride=3
                ),
                adversarial=lambda m: suite(
                    [(sh, sp.replace(stride=2, input_size=(6, 6))) for sh, sp in CIRCULANT_SPECS], m
                ),
                strategy=adversarial_layers(circulant_specs(max_stride=3, max_size=9)),
                describe=describe_layer,
                key="ST-POLY",
            ),
            mode,
        ),
        proof="Input pixel s*u + r becomes pixel u of channel (c, r): a permutation of the input "
        "coordinates; the strided circulant becomes a stride-1 block circulant on the coarse grid.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- ST-DIL
def _dilation(instance) -> float:
    kernel, spec, (mh, mw), omega = instance
    dh, dw = spec.dilation
    c_out, c_in, kh, kw = kernel.shape
    explicit = np.zeros((c_out, c_in, dh * (kh - 1) + 1, dw * (kw - 1) + 1))
    explicit[:, :, ::dh, ::dw] = kernel
    (top, bottom), (left, right) = spec.pads((kh, kw))
    undilated = spec.replace(dilation=1, pad=(left, right, top, bottom))
    a = conv_matrix(kernel, spec)
    b = conv_matrix(explicit, undilated)
    if a.shape != b.shape:
        return -1.0
    # every value compared is a sum of taps computed in two orders: equal up to 1e-12 relative
    # plus the absolute rounding of such sums, 64 u sum|K| (which dominates when taps cancel)
    total = float(np.abs(kernel).sum())
    slack = 64 * 2.0**-53 * total

    def rel(diff: float, size: float) -> float:
        return -max(0.0, diff - slack) / max(size, 1e-300)

    worst = rel(float(np.abs(a - b).max(initial=0.0)), float(np.abs(kernel).max()))
    lhs = circ(kernel, (dh * mh, dw * mw), (dh, dw), spec.groups)
    rhs = circ(kernel, (mh, mw), 1, spec.groups)
    worst = min(worst, rel(abs(lhs - rhs), rhs))
    s1 = symbol(explicit, omega, groups=spec.groups)
    s2 = symbol(kernel, omega * np.array([dh, dw]), groups=spec.groups)
    worst = min(worst, rel(float(np.abs(s1 - s2).max()), float(np.abs(s2).max())))
    return worst


def _dil_random(rng: np.random.Generator, count: int):
    for kernel, spec in random_layers(rng, count, ("gaussian", "integer"), max_dilation=3):
        yield (
            kernel,
            spec,
            tuple(int(v) for v in rng.integers(1, 5, size=2)),
            rng.uniform(-math.pi, math.pi, size=2),
        )


register(
    Theorem(
        id="ST-DIL",
        title="Dilation identities",
        statement="A dilated layer equals the undilated layer of the explicitly dilated kernel "
        "(zeros inserted) with the same pads; its symbol is K^(d w), so S(K_d) = S(K); and "
        "sigma_circ(N; K_d) = sigma_circ(N/d; K) for d | N.",
        latex=r"\widehat{K_{\uparrow d}}(\omega) = \hat K(d\omega),\quad S(K_{\uparrow d}) = S(K),"
        r"\quad \sigma_{\mathrm{circ}}(N; K_{\uparrow d}) = \sigma_{\mathrm{circ}}(N/d; K)",
        source="derived in specbound (research/gram.md §1 and §4.2 'Dilation')",
        conditions="all padding modes for the matrix identity; circular stride 1 for the grid "
        "identity; dilation 1..3; every value (matrix entries, norms, symbol values) equal to "
        "1e-12 relative plus 64 u sum|K|, the absolute rounding of a sum of taps in another "
        "order (it dominates when taps cancel)",
        relied_on=True,
        check=lambda mode: run(
            Search(
                _dilation,
                tolerance=1e-12,
                random=_dil_random,
                strategy=st.tuples(
                    layers(max_dilation=3, max_size=6),
                    st.tuples(st.integers(1, 4), st.integers(1, 4)),
                    st.tuples(st.floats(-3.2, 3.2), st.floats(-3.2, 3.2)).map(np.array),
                ).map(lambda x: (x[0][0], x[0][1], x[1], x[2])),
                describe=lambda x: f"{describe_layer((x[0], x[1]))}; M = {x[2]}",
                key="ST-DIL",
            ),
            mode,
        ),
        proof="Tap a sits at offset d*a: the same reads as tap d*a of the dilated kernel. On the "
        "torus of N = d m the DFT frequencies 2 pi u/N map to d w = 2 pi u/m, covering the grid of "
        "m d times.",
        family=FAMILY,
    )
)
