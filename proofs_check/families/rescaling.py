"""Spectral rescaling (SR1-SR5): ``diag(t)^{-1} W`` with Gram-iteration row sums.

Delattre, Barthélemy & Allauzen 2024 (arXiv 2402.00240), spectral rescaling; the library code
is :func:`specbound.layers.rescale` and :func:`specbound.layers.rescaling_factors_residual`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import strategies as st

from specbound.layers import rescale, rescaling_factors_for, rescaling_factors_residual
from specbound.testing import (
    MATRIX_FAMILIES,
    adversarial_layers,
    family_matrix,
    matrices,
    symbol_bounded_specs,
)

from ..exact import matrix_norm, norm, symbol_sup_lower
from ..harness import Search, Skip, run
from ..registry import Mode, Theorem, register
from .common import (
    SYMBOL_CIRCULAR_SPECS,
    ZERO_SPECS,
    describe_layer,
    random_layers,
    suite,
)
from .kernel_gram import gram_zero

FAMILY = "Spectral rescaling"
SOURCE = (
    "Delattre, Barthélemy & Allauzen, arXiv 2402.00240 (2024), spectral rescaling (the method, "
    "from the published code); theorem and proof derived in specbound (research/gram.md §5)"
)
LAYERS = adversarial_layers(symbol_bounded_specs(max_size=6, max_kernel=3, max_channels=3))


def _random(rng: np.random.Generator, count: int):
    return random_layers(
        rng,
        count,
        ("gaussian", "integer", "rank_one", "sparse"),
        modes=("zeros", "circular"),
        symbol_domain=True,
        max_kernel=3,
        max_size=6,
    )


def _adversarial(mode: Mode):
    yield from suite(ZERO_SPECS, mode)
    yield from suite(SYMBOL_CIRCULAR_SPECS, mode)


def _dense_adversarial(mode: Mode):
    for family in MATRIX_FAMILIES:
        for shape in ((1, 1), (4, 6), (6, 4), (5, 5)):
            yield family_matrix(family, shape, seed=2)


def _rescaled(weight: np.ndarray, t: int, side: str, groups: int = 1) -> np.ndarray:
    with torch.no_grad():
        return rescale(torch.from_numpy(weight), t, side=side, groups=groups).numpy()


# --------------------------------------------------------------------------- SR1
def _sr1(layer) -> float:
    kernel, spec = layer
    worst = math.inf
    for t in (1, 2, 3):
        for side in ("output", "input"):
            worst = min(worst, 1.0 - norm(_rescaled(kernel, t, side, spec.groups), spec))
    return worst


def _sr1_dense(w: np.ndarray) -> float:
    worst = math.inf
    for t in (1, 2, 3, 5):
        for side in ("output", "input"):
            worst = min(worst, 1.0 - matrix_norm(_rescaled(w, t, side)))
    return worst


def _sr1_check(mode: Mode):
    from ..harness import combine

    conv = run(
        Search(
            _sr1,
            tolerance=1e-12,
            random=_random,
            adversarial=_adversarial,
            strategy=LAYERS,
            describe=describe_layer,
            key="SR1",
        ),
        mode,
    )
    dense = run(
        Search(
            _sr1_dense,
            tolerance=1e-12,
            adversarial=_dense_adversarial,
            strategy=matrices(),
            key="SR1-dense",
        ),
        mode,
    )
    return combine([conv, dense])


register(
    Theorem(
        id="SR1",
        title="Spectral rescaling is 1-Lipschitz",
        statement="With t_i = (sum_{j,delta} |K_T[i,j,delta]|)^(2^-T), ||diag(t)^-1 op(K)|| <= 1 "
        "for "
        "zero padding (any pads, size, stride, dilation, groups) and circular padding with total "
        "pad <= d(k-1); likewise ||diag(t)^-1 W|| <= 1 for matrices (t from (W W^T)^(2^(T-1))); "
        "also on the input side (factors of the adjoint kernel). Zero rows stay zero (no NaN).",
        latex=r"\big\|\operatorname{diag}(t)^{-1}\,\mathrm{op}(K)\big\|_2 \le 1,\qquad "
        r"t_i = \Big(\sum_{j,\delta}|K_T[i,j,\delta]|\Big)^{2^{-T}}",
        source=SOURCE,
        conditions="T = 1, 2, 3 (matrices: also 5), both sides; the domain above; float64 with the "
        "rounding allowance 1e-12 (tight cases reach exactly 1)",
        relied_on=True,
        check=_sr1_check,
        proof="Schur test: L(K_T) <= diag(tau) with tau_i = sum |K_T[i]| (x^*Mx <= "
        "sum |M_ij||x_i||x_j| <= sum_i tau_i |x_i|^2); Löwner-Heinz (t -> t^{1/m} operator "
        "monotone): L(K)L(K)^* = "
        "L(K_T)^{1/m} <= diag(t)^2. The diagonal acts per channel and commutes with the window "
        "restriction and the wrapping.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- SR2
def _self_correlation_sums(kernel: np.ndarray) -> np.ndarray:
    """``sum_{j,delta} |(K * K)[i,j,delta]|`` per output channel, by direct float64 loops."""
    c, _, kh, kw = kernel.shape
    sums = np.zeros(c)
    for dh in range(-(kh - 1), kh):
        for dw in range(-(kw - 1), kw):
            a = kernel[:, :, max(0, dh) : kh + min(0, dh), max(0, dw) : kw + min(0, dw)]
            b = kernel[:, :, max(0, -dh) : kh - max(0, dh), max(0, -dw) : kw - max(0, dw)]
            sums += np.abs(np.einsum("ilab,jlab->ij", a, b)).sum(axis=1)
    return sums


def _sr2(layer) -> float:
    kernel, spec = layer
    g = spec.groups
    co = kernel.shape[0] // g
    with torch.no_grad():
        lib = rescaling_factors_for(torch.from_numpy(kernel), 1, side="output", groups=g).numpy()
    ref = np.concatenate(
        [np.sqrt(_self_correlation_sums(kernel[i * co : (i + 1) * co])) for i in range(g)]
    )
    scale = max(float(ref.max(initial=0.0)), 1e-300)
    return -float(np.abs(lib - ref).max(initial=0.0)) / scale


register(
    Theorem(
        id="SR2",
        title="Spectral rescaling with T = 1 is AOL",
        statement="For T = 1 the factors are t_i = sqrt(sum_{j,delta} |(K * K)[i,j,delta]|) (the "
        "AOL factors of Prach & Lampert, on the output side).",
        latex=r"t^{(1)}_i = \Big(\sum_{j,\delta}\big|(K\star K)[i,j,\delta]\big|\Big)^{1/2}",
        source=SOURCE + "; Prach & Lampert, ECCV 2022, Lemma 2",
        conditions="any kernel and groups; reference by direct float64 loops; tolerance 1e-12 "
        "relative to the largest factor",
        relied_on=False,
        check=lambda mode: run(
            Search(
                _sr2,
                tolerance=1e-12,
                random=_random,
                adversarial=_adversarial,
                strategy=LAYERS,
                describe=describe_layer,
                key="SR2",
            ),
            mode,
        ),
        proof="Definition (K_1 = K * K).",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- SR3
def _sr3(layer) -> float:
    kernel, spec = layer
    s_low = symbol_sup_lower(kernel, spec.dilation, spec.groups)
    if s_low == 0.0:
        raise Skip
    worst = math.inf
    g = spec.groups
    for t in (1, 2, 3):
        with torch.no_grad():
            factors = rescaling_factors_for(torch.from_numpy(kernel), t, groups=g).numpy()
        top = float(factors.max())
        worst = min(worst, top / s_low - 1.0)
        if kernel.shape[0] // g <= kernel.shape[1]:  # the side gram_zero uses
            worst = min(worst, -abs(top / gram_zero(kernel, t, 1, g) - 1.0))
    return worst


register(
    Theorem(
        id="SR3",
        title="The largest rescaling factor is the kernel Gram bound",
        statement="max_i t_i >= S(K) >= sigma_1 of every layer in the domain, and max_i t_i equals "
        "beta_T^zero when the output side is the side with fewer channels.",
        latex=r"\max_i t_i = \beta^{\mathrm{zero}}_T \ge S(K)",
        source=SOURCE,
        conditions="any kernel, groups; T = 1..3; S bounded below by a refined grid maximum; "
        "tolerance 1e-12",
        relied_on=False,
        check=lambda mode: run(
            Search(
                _sr3,
                tolerance=1e-12,
                random=_random,
                adversarial=_adversarial,
                strategy=LAYERS,
                describe=describe_layer,
                key="SR3",
            ),
            mode,
        ),
        proof="Z1 (the Schur test on the output side).",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- SR4
def _sr4(w: np.ndarray) -> float:
    if not np.any(w):
        raise Skip
    c = w.shape[0]
    worst = math.inf
    for t in range(1, 9):
        value = matrix_norm(_rescaled(w, t, "output"))
        worst = min(worst, value * c ** (2.0 ** -(t + 1)) - 1.0)
    return worst


def _sr4_notes() -> list[str]:
    w = np.random.default_rng(3).standard_normal((30, 20))
    values = [matrix_norm(_rescaled(w, t, "output")) for t in (1, 2, 3, 5, 8)]
    return [
        "||diag(1/t) W|| for a 30 x 20 gaussian W, T = 1, 2, 3, 5, 8: "
        + ", ".join(f"{v:.4f}" for v in values)
    ]


def _sr4_check(mode: Mode):
    result = run(
        Search(
            _sr4,
            tolerance=1e-12,
            adversarial=_dense_adversarial,
            strategy=matrices(max_rows=12, max_cols=12),
            random=lambda rng, n: (
                rng.standard_normal(tuple(int(v) for v in rng.integers(1, 13, size=2)))
                for _ in range(n)
            ),
            key="SR4",
        ),
        mode,
    )
    result.notes.extend(_sr4_notes())
    return result


register(
    Theorem(
        id="SR4",
        title="Spectral rescaling tends to spectral normalisation",
        statement="For a non-zero matrix W with c rows, every factor satisfies t_i <= "
        "c^(2^-(T+1)) sigma_1(W), hence c^(-2^-(T+1)) <= ||diag(t)^-1 W|| <= 1: the rescaled "
        "norm tends to 1 as T grows (AOL at T = 1, spectral normalisation in the limit).",
        latex=r"c^{-2^{-(T+1)}} \le \big\|\operatorname{diag}(t^{(T)})^{-1} W\big\|_2 \le 1 "
        r"\xrightarrow[T\to\infty]{} 1",
        source=SOURCE
        + "; the 'bridges AOL and spectral normalisation' claim is from a third-party "
        "summary [R]",
        conditions="non-zero real matrices, T = 1..8; tolerance 1e-12",
        relied_on=False,
        check=_sr4_check,
        proof="sum_j |M_ij| <= sqrt(c) ||M_i||_2 <= sqrt(c) ||M|| = sqrt(c) sigma_1^{2^T}; and "
        "||W|| <= max_i t_i ||diag(t)^-1 W|| (zero rows stay zero).",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- SR5
def _sr5(instance) -> float:
    (kernel, spec), q = instance
    q = q[: kernel.shape[0]]
    spec = spec.replace(groups=1)  # the residual factors have no groups: the same kernel, ungrouped
    worst = math.inf
    for t in (1, 2, 3):
        with torch.no_grad():
            tres = rescaling_factors_residual(
                torch.from_numpy(kernel), t, torch.from_numpy(q)
            ).numpy()
            plain = rescaling_factors_residual(
                torch.from_numpy(kernel), t, torch.ones(kernel.shape[0], dtype=torch.float64)
            ).numpy()
            t_out = rescaling_factors_for(torch.from_numpy(kernel), t).numpy()
        inv = np.where(tres > 0, 1.0 / np.sqrt(np.where(tres > 0, tres, 1.0)), 0.0)
        worst = min(worst, 1.0 - norm(kernel * inv[:, None, None, None], spec))
        scale = max(float(plain.max(initial=0.0)), 1e-300)
        worst = min(worst, -float(np.abs(plain - t_out**2).max(initial=0.0)) / scale)
    return worst


def _sr5_random(rng: np.random.Generator, count: int):
    for layer in _random(rng, count):
        yield layer, np.exp(rng.uniform(-3.0, 3.0, size=8))


register(
    Theorem(
        id="SR5",
        title="Residual (SLL) rescaling with weights q",
        statement="For every q > 0, t^res_i = (sum_{j,delta} |K_T[i,j,delta]| q_j/q_i)^(2^-(T-1)) "
        "satisfies L(K)L(K)^* <= diag(t^res), i.e. ||diag(t^res)^(-1/2) op(K)|| <= 1 (the SLL "
        "condition W^T W <= T); with q = 1, t^res = t^2.",
        latex=r"L(K)L(K)^* \preceq \operatorname{diag}(t^{\mathrm{res}}),\quad t^{\mathrm{res}}_i "
        r"= "
        r"\Big(\sum_{j,\delta}|K_T[i,j,\delta]|\tfrac{q_j}{q_i}\Big)^{2^{-(T-1)}},\quad "
        r"q \equiv 1 \Rightarrow t^{\mathrm{res}} = t^2",
        source=SOURCE + "; SLL: Araujo, Havens, Delattre, Allauzen & Hu, A Unified Algebraic "
        "Perspective on Lipschitz Neural Networks, ICLR 2023",
        conditions="zero padding (any pads, stride, dilation) and circular with total pad <= "
        "d(k-1), groups = 1, q in [0.05, 20], T = 1..3; tolerance 1e-12",
        relied_on=True,
        check=lambda mode: run(
            Search(
                _sr5,
                tolerance=1e-12,
                random=_sr5_random,
                strategy=st.tuples(
                    LAYERS, st.lists(st.floats(0.05, 20.0), min_size=8, max_size=8).map(np.array)
                ),
                describe=lambda x: f"{describe_layer(x[0])}; q = {x[1].tolist()}",
                key="SR5",
            ),
            mode,
        ),
        proof="Weighted Schur test: with Q = diag(q), Q^-1 M Q has the same spectrum and its "
        "row sums bound it: M <= diag(sum_j |M_ij| q_j / q_i); then Löwner-Heinz as in SR1.",
        family=FAMILY,
    )
)
