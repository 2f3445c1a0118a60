"""Gram iteration on the kernel for zero padding (Z1-Z8), its linear convergence, and the
published "quadratic convergence" claim.

``beta_T^zero = max_i (sum_{j,delta} |K_T[i,j,delta]|)^{2^-T}`` with ``K_1 = K * K`` (full
spatial self-correlation) and ``K_{t+1} = K_t * K_t``: ``specbound``'s ``gram_zero`` method
(Delattre, Barthélemy & Allauzen 2024, arXiv 2402.00240, "norm2toep"), computed on the side
with fewer channels.
"""

from __future__ import annotations

import itertools
import math

import mpmath
import numpy as np
import torch
from hypothesis import strategies as st

from specbound import ConvSpec
from specbound.bounds import compute
from specbound.layers import rescaling_factors
from specbound.operators import symbol
from specbound.testing import adversarial_kernels, adversarial_layers, symbol_bounded_specs

from ..exact import (
    DPS,
    circ,
    exact_kernel_gram,
    exact_row_factors,
    norm,
    symbol_sup_lower,
    symbol_sup_upper,
)
from ..harness import Search, Skip, describe, run
from ..registry import Mode, Theorem, register
from .common import (
    NON_ZERO_FAMILIES,
    SYMBOL_CIRCULAR_SPECS,
    ZERO_SPECS,
    describe_layer,
    random_layers,
    suite,
)

FAMILY = "Kernel Gram iteration (zero padding)"
SOURCE = (
    "Delattre, Barthélemy & Allauzen, Spectral Norm of Convolutional Layers with Circular and "
    "Zero Paddings, arXiv 2402.00240 (2024), 'norm2toep' (the method, from the published code "
    "lip4conv@7d11545); statements and proofs derived in specbound (research/gram.md §4.1, Z1-Z8)"
)
STEPS = (1, 2, 3, 4)
EVERY = ConvSpec("zeros", "same", None)


def gram_zero(kernel: np.ndarray, n_iter: int, dilation=1, groups: int = 1) -> float:
    spec = EVERY.replace(dilation=dilation, groups=groups)
    return float(compute("gram_zero", kernel, spec, n_iter=n_iter).value)


def _every(layer):
    kernel, spec = layer
    return kernel, spec.dilation, spec.groups


LAYERS = adversarial_layers(symbol_bounded_specs(max_size=6, max_kernel=3, max_channels=3))


def _random(rng: np.random.Generator, count: int):
    return random_layers(
        rng,
        count,
        ("gaussian", "integer", "rank_one"),
        modes=("zeros", "circular"),
        symbol_domain=True,
        max_kernel=3,
        max_size=6,
    )


def _adversarial(mode: Mode):
    yield from suite(ZERO_SPECS, mode)
    yield from suite(SYMBOL_CIRCULAR_SPECS[-3:], mode, NON_ZERO_FAMILIES[:4])


# --------------------------------------------------------------------------- Z1
def _z1(layer) -> float:
    kernel, spec = layer
    exact = norm(kernel, spec)
    values = [gram_zero(kernel, t, spec.dilation, spec.groups) for t in STEPS]
    if exact == 0.0:
        return 0.0 if all(v >= 0.0 for v in values) else -1.0
    return min(v / exact - 1.0 for v in values)


register(
    Theorem(
        id="Z1",
        title="The kernel Gram iteration bounds every zero-padded and circular layer",
        statement="For every T >= 1, beta_T^zero(K) >= S(K) >= the norm of every zero-padded "
        "layer of K (any input size, any pads, any stride) and of every circular layer with at "
        "most d(k-1) padded in total per axis.",
        latex=r"\beta^{\mathrm{zero}}_T(K) = \max_i\Big(\sum_{j,\delta}|K_T[i,j,\delta]|\Big)^"
        r"{2^{-T}} \ge S(K) \ge \max\big(\sigma^{(P)}_{\mathrm{zero}}(n),\ "
        r"\sigma_{\mathrm{circ}}(N)\big)",
        source=SOURCE,
        conditions="zero padding (any pad, stride, dilation, groups, n >= 1); circular with total "
        "pad <= d(k-1); T = 1..4; relative tolerance 1e-12",
        relied_on=True,
        check=lambda mode: run(
            Search(
                _z1,
                tolerance=1e-12,
                random=_random,
                adversarial=_adversarial,
                strategy=LAYERS,
                describe=describe_layer,
                key="Z1",
            ),
            mode,
        ),
        proof="On l2(Z^2), L(K)L(K)^* = L(K * K), so L(K_T) = (L(K)L(K)^*)^{2^{T-1}} is "
        "self-adjoint and S^{2^T} = ||L(K_T)||_2 <= ||L(K_T)||_{inf->inf} (max row l1 norm, the "
        "Schur "
        "test). Zero-padded layers are compressions of L(K) (and a stride selects rows); circular "
        "layers in the domain are row selections of circulants of norm <= S (C6).",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- Z2
def _z2(instance) -> float:
    kernel, dilation, groups = instance
    values = [gram_zero(kernel, t, dilation, groups) for t in (1, 2, 3, 4, 5)]
    if values[0] == 0.0:
        return 0.0 if all(v == 0.0 for v in values) else -1.0
    return min(a / b - 1.0 for a, b in itertools.pairwise(values))


def _every_random(rng, count):
    return (_every(x) for x in _random(rng, count))


def _every_adversarial(mode):
    return (_every(x) for x in suite(ZERO_SPECS, mode))


EVERY_STRATEGY = LAYERS.map(_every)

register(
    Theorem(
        id="Z2",
        title="The kernel Gram bound is monotone in T",
        statement="beta_{T+1}^zero <= beta_T^zero (the maximum over rows; single rows t_i need not "
        "be monotone).",
        latex=r"\beta^{\mathrm{zero}}_{T+1}(K) \le \beta^{\mathrm{zero}}_T(K)",
        source=SOURCE,
        conditions="any real kernel; T = 1..5; relative tolerance 1e-12",
        relied_on=False,
        check=lambda mode: run(
            Search(
                _z2,
                tolerance=1e-12,
                random=_every_random,
                adversarial=_every_adversarial,
                strategy=EVERY_STRATEGY,
                key="Z2",
            ),
            mode,
        ),
        proof="The infinity-to-infinity norm is submultiplicative: ||B^2||_inf <= ||B||_inf^2 for "
        "B = L(K_T), and L(K_{T+1}) = L(K_T)^2.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- Z3 (linear rate)
def gram_channels(kernel: np.ndarray, groups: int) -> int:
    """Channels of the Gram side ``gram_zero`` uses: ``min(c_out, c_in) / groups``."""
    return min(kernel.shape[0] // groups, kernel.shape[1])


def _z3(instance) -> float:
    kernel, dilation, groups = instance
    sup = symbol_sup_upper(kernel, dilation, groups)
    if sup == 0.0:
        raise Skip
    c = gram_channels(kernel, groups)
    kh, kw = kernel.shape[2:]
    worst = math.inf
    for t in STEPS:
        support = (2**t * (kh - 1) + 1) * (2**t * (kw - 1) + 1)
        envelope = (c * support) ** (2.0 ** -(t + 1))
        worst = min(worst, envelope * sup / gram_zero(kernel, t, dilation, groups) - 1.0)
    return worst


def _z3_notes(mode: Mode) -> list[str]:
    """Observed log-error ratios ln(beta_{T+1}/S) / ln(beta_T/S) on gaussian kernels."""
    rng = np.random.default_rng(5)
    ratios = []
    for _ in range(mode.pick(3, 12)):
        k = rng.standard_normal((2, 2, 3, 3))
        s = symbol_sup_lower(k)
        logs = [math.log(gram_zero(k, t) / s) for t in (1, 2, 3, 4, 5)]
        ratios.append([b / a for a, b in itertools.pairwise(logs)])
    med = np.median(np.array(ratios), axis=0)
    return [
        "observed ln(beta_{T+1}/S)/ln(beta_T/S) for T = 1..4 (median, gaussian 2x2x3x3): "
        + ", ".join(f"{v:.3f}" for v in med)
        + " (tends to 1/2: linear, not quadratic)"
    ]


def _z3_check(mode: Mode):
    result = run(
        Search(
            _z3,
            tolerance=1e-12,
            random=_every_random,
            adversarial=_every_adversarial,
            strategy=EVERY_STRATEGY,
            key="Z3",
        ),
        mode,
    )
    result.notes.extend(_z3_notes(mode))
    return result


register(
    Theorem(
        id="Z3",
        title="Linear convergence of the kernel Gram iteration",
        statement="beta_T^zero <= (c s_h s_w)^(2^-(T+1)) S(K) with s = 2^T (k-1) + 1 per axis and "
        "c the channels of the Gram side: ln(beta_T^zero / S) <= 2^-(T+1) ln(c s_h s_w), which "
        "tends to 0 with ratio 1/2 per step (linear convergence of the log-error).",
        latex=r"S \le \beta^{\mathrm{zero}}_T \le \big(c\, s_h s_w\big)^{2^{-(T+1)}} S,\quad "
        r"s = 2^T(k-1)+1,\qquad \ln\frac{\beta^{\mathrm{zero}}_T}{S} = O\big(T\,2^{-T}\big)",
        source=SOURCE,
        conditions="any real kernel, dilation, groups; c = min(c_out, c_in) per group (the side "
        "specbound uses); T = 1..4; S bounded above by sigma_circ(32 D) times the G5 factor (so a "
        "failure is real, a pass relies on G5); relative tolerance 1e-12",
        relied_on=False,
        check=_z3_check,
        proof="Each row of L(K_T) has at most c s_h s_w non-zeros and l2 norm <= ||L(K_T)||_2 = "
        "S^{2^T}; Cauchy-Schwarz: l1 <= sqrt(support) l2. Take the 2^-T power.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- Z4
def _z4(instance) -> float:
    kernel, groups, steps = instance
    worst = math.inf
    g = groups
    co, ci = kernel.shape[0] // g, kernel.shape[1]
    for t in range(1, steps + 1):
        lib = rescaling_factors(torch.from_numpy(kernel), t, groups=g).numpy()
        best_side = 0.0
        for gi in range(g):
            block = kernel[gi * co : (gi + 1) * co]
            exact = exact_row_factors(exact_kernel_gram(block, t), t)
            for i, v in enumerate(exact):
                worst = min(worst, _rel(lib[gi * co + i], v))
            side = block if ci >= co else np.swapaxes(block, 0, 1)
            best_side = max(
                best_side, *(float(v) for v in exact_row_factors(exact_kernel_gram(side, t), t))
            )
        worst = min(worst, _rel(gram_zero(kernel, t, 1, g), best_side))
    return worst


def _rel(value: float, exact) -> float:
    with mpmath.workdps(DPS):
        exact = mpmath.mpf(exact)
        if exact == 0:
            return 0.0 if value == 0.0 else -1.0
        return -abs(float(mpmath.mpf(float(value)) / exact - 1))


def _int_kernel(rng, shape):
    return rng.integers(-2, 3, size=shape).astype(np.float64)


def _z4_random(rng: np.random.Generator, count: int):
    for _ in range(count):
        g = int(rng.integers(1, 3))
        shape = (
            g * int(rng.integers(1, 3)),
            int(rng.integers(1, 3)),
            int(rng.integers(1, 4)),
            int(rng.integers(1, 4)),
        )
        yield _int_kernel(rng, shape), g, 3 if max(shape[2:]) <= 2 else 2


def _z4_adversarial(mode: Mode):
    yield np.zeros((2, 2, 3, 3)), 1, 2
    yield np.ones((1, 1, 3, 3)), 1, 3
    yield np.array([[[[1.0, -3.0, 0.0, 2.0]]]]), 1, 3
    yield np.array([[[[1.0, -3.0, 0.0], [-3.0, 1.0, -1.0], [3.0, -1.0, 2.0]]]]), 1, 2
    rng = np.random.default_rng(11)
    yield _int_kernel(rng, (2, 3, 2, 3)), 1, 2
    yield _int_kernel(rng, (3, 2, 3, 1)), 1, 3
    yield _int_kernel(rng, (4, 1, 2, 2)), 2, 2


register(
    Theorem(
        id="Z4",
        title="specbound's rescaling factors and gram_zero equal the exact row sums",
        statement="specbound's rescaling_factors(K, T) equals (sum_{j,delta} "
        "|K_T[i,j,delta]|)^(2^-T) "
        "with K_T computed in exact integer arithmetic, and gram_zero equals their maximum on the "
        "side with fewer channels; T = 1 is the AOL quantity sqrt(sum |conv2d(K, K, pad=k-1)|).",
        latex=r"t_i = \Big(\sum_{j,\delta}|K_T[i,j,\delta]|\Big)^{2^{-T}},\quad "
        r"t_i^{(1)} = "
        r"\Big(\sum_{j,\delta}\big|\mathrm{conv2d}(K,K,\mathrm{pad}=k-1)\big|_{i,j,\delta}"
        r"\Big)^{1/2},\quad \beta^{\mathrm{zero}}_T = \max_i t_i",
        source=SOURCE + "; AOL: Prach & Lampert, ECCV 2022, Lemma 2",
        conditions="integer-valued kernels (so that K_T is exact), groups, T <= 3; relative "
        "tolerance 1e-12",
        relied_on=True,
        check=lambda mode: run(
            Search(
                _z4,
                tolerance=1e-12,
                random=_z4_random,
                adversarial=_z4_adversarial,
                n_random=(4, 30),
                key="Z4",
                describe=lambda x: f"groups={x[1]}, T<={x[2]}, kernel {describe(x[0])}",
            ),
            mode,
        ),
        proof="Definition; the rescaled iteration only multiplies K_T by exp(Lambda) (exact "
        "algebra).",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- Z5
def _z5(instance) -> float:
    kernel, steps, omega = instance
    kh, kw = kernel.shape[2:]
    worst = math.inf
    base = symbol(kernel, omega)
    gram = base @ base.conj().T
    for t in range(1, steps + 1):
        kt = exact_kernel_gram(kernel, t)
        size_ok = kt.shape[2:] == (2**t * (kh - 1) + 1, 2**t * (kw - 1) + 1)
        sym_ok = np.array_equal(kt, np.swapaxes(kt, 0, 1)[:, :, ::-1, ::-1])
        if not (size_ok and sym_ok):
            return -1.0
        # symbol of K_T (centred) equals (K^ K^*)^(2^(T-1)) at omega
        s = kt.shape[2] // 2, kt.shape[3] // 2
        phase = np.exp(1j * (omega[0] * s[0] + omega[1] * s[1]))
        lhs = symbol(kt.astype(np.float64), omega) * phase
        rhs = np.linalg.matrix_power(gram, 2 ** (t - 1))
        # float64 evaluation of the symbol of K_T errs relative to the l1 norm of its taps
        scale = max(float(np.abs(kt.astype(np.float64)).sum()), 1e-300)
        worst = min(worst, -float(np.abs(lhs - rhs).max()) / scale)
    return worst


def _z5_random(rng: np.random.Generator, count: int):
    for _ in range(count):
        shape = (
            int(rng.integers(1, 4)),
            int(rng.integers(1, 4)),
            int(rng.integers(1, 4)),
            int(rng.integers(1, 4)),
        )
        yield _int_kernel(rng, shape), 2, rng.uniform(0, 2 * np.pi, size=2)


register(
    Theorem(
        id="Z5",
        title="Structure of the iterated self-correlation",
        statement="K_T has spatial size 2^T (k-1) + 1 per axis, is symmetric (K_T[j,i,-delta] = "
        "K_T[i,j,delta]), and its (centred) symbol is (K^(w) K^(w)^*)^(2^(T-1)): L(K_T) = "
        "(L(K) L(K)^*)^(2^(T-1)).",
        latex=r"K_T \in \mathbb R^{c\times c\times s\times s},\ s = 2^T(k-1)+1,\quad "
        r"K_T[j,i,-\delta] = K_T[i,j,\delta],\quad \widehat{K_T}(\omega) = "
        r"\big(\hat K(\omega)\hat K(\omega)^*\big)^{2^{T-1}}",
        source=SOURCE,
        conditions="integer-valued kernels (exact K_T), T = 1..2, random frequencies; the symbol "
        "identity to 1e-12 relative to sum |K_T| (float64 evaluation of the symbols)",
        relied_on=True,
        check=lambda mode: run(
            Search(
                _z5,
                tolerance=1e-12,
                random=_z5_random,
                n_random=(6, 60),
                strategy=st.tuples(
                    st.tuples(
                        st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)
                    ).flatmap(lambda s: adversarial_kernels(s, ("integer", "zero", "constant"))),
                    st.just(2),
                    st.tuples(st.floats(0, 6.3), st.floats(0, 6.3)).map(np.array),
                ),
                key="Z5",
            ),
            mode,
        ),
        proof="(K * K)^(w) = K^(w) K^(w)^* up to the centring phase (correlation theorem); "
        "induction. Symmetry: the Gram of a self-adjoint operator is self-adjoint.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- Z6
def _z6(instance) -> float:
    kernel, dilation, groups = instance
    dh, dw = dilation
    c_out, c_in, kh, kw = kernel.shape
    explicit = np.zeros((c_out, c_in, dh * (kh - 1) + 1, dw * (kw - 1) + 1))
    explicit[:, :, ::dh, ::dw] = kernel
    worst = math.inf
    for t in (1, 2, 3):
        a = gram_zero(kernel, t, dilation, groups)
        b = gram_zero(explicit, t, 1, groups)
        if b == 0.0:
            worst = min(worst, 0.0 if a == 0.0 else -1.0)
        else:
            worst = min(worst, -abs(a / b - 1.0))
    return worst


def _z6_random(rng, count):
    for kernel, spec in _random(rng, count):
        d = tuple(int(v) for v in rng.integers(1, 4, size=2))
        yield kernel, d, spec.groups


register(
    Theorem(
        id="Z6",
        title="Dilation leaves the kernel Gram bound unchanged",
        statement="beta_T^zero of a dilated kernel (computed by specbound on the undilated taps) "
        "equals beta_T^zero of the explicitly dilated kernel (zeros inserted).",
        latex=r"\beta^{\mathrm{zero}}_T(K_{\uparrow d}) = \beta^{\mathrm{zero}}_T(K)",
        source=SOURCE,
        conditions="any kernel, dilation 1..3 per axis, groups; T = 1..3; relative tolerance 1e-12",
        relied_on=True,
        check=lambda mode: run(
            Search(
                _z6,
                tolerance=1e-12,
                random=_z6_random,
                strategy=st.tuples(
                    EVERY_STRATEGY.map(lambda x: x[0]),
                    st.tuples(st.integers(1, 3), st.integers(1, 3)),
                    st.just(1),
                ),
                key="Z6",
            ),
            mode,
        ),
        proof="The self-correlation of a dilated kernel is the dilated self-correlation; dilation "
        "does not change the multiset of entries, hence the row sums.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- Z7
def _z7(instance) -> float:
    kernel, dilation, groups = instance
    rng = np.random.default_rng(0)
    co = kernel.shape[0] // groups
    perm_out = np.concatenate([gi * co + rng.permutation(co) for gi in range(groups)])
    variants = [
        -2.5 * kernel,
        np.ascontiguousarray(kernel[:, :, ::-1, ::-1]),
        np.ascontiguousarray(kernel[perm_out]),
        np.ascontiguousarray(kernel[:, rng.permutation(kernel.shape[1])]),
    ]
    worst = math.inf
    for t in (1, 2, 3):
        base = gram_zero(kernel, t, dilation, groups)
        for i, v in enumerate(variants):
            ref = base * (2.5 if i == 0 else 1.0)
            value = gram_zero(v, t, dilation, groups)
            worst = min(worst, 0.0 if ref == value == 0.0 else -abs(value / ref - 1.0))
    return worst


register(
    Theorem(
        id="Z7",
        title="Invariances of the kernel Gram bound",
        statement="beta_T^zero(lambda K) = |lambda| beta_T^zero(K); beta_T^zero is invariant under "
        "a "
        "spatial flip and under permutations of the output or input channels (within groups).",
        latex=r"\beta^{\mathrm{zero}}_T(\lambda K) = |\lambda|\beta^{\mathrm{zero}}_T(K),\quad "
        r"\beta^{\mathrm{zero}}_T(K_{\leftrightarrow}) = \beta^{\mathrm{zero}}_T(P K Q) = "
        r"\beta^{\mathrm{zero}}_T(K)",
        source=SOURCE + " (research/gram.md §9 Z7)",
        conditions="any kernel, groups; T = 1..3; relative tolerance 1e-12",
        relied_on=False,
        check=lambda mode: run(
            Search(
                _z7,
                tolerance=1e-12,
                random=_every_random,
                adversarial=_every_adversarial,
                strategy=EVERY_STRATEGY,
                key="Z7",
            ),
            mode,
        ),
        proof="Row sums of |K_T| scale by lambda^{2^T}; a flip reflects delta; permutations "
        "permute "
        "rows and columns of every iterate.",
        family=FAMILY,
    )
)


def _z7t(instance) -> float:
    kernel, _, _ = instance
    if kernel.shape[0] != kernel.shape[1] or not np.any(kernel):
        raise Skip
    transposed = np.ascontiguousarray(np.swapaxes(kernel, 0, 1))
    a, b = gram_zero(kernel, 2), gram_zero(transposed, 2)
    return abs(a / b - 1.0)


def _square(layer):
    kernel, _ = layer
    c = min(kernel.shape[:2])
    return np.ascontiguousarray(kernel[:c, :c]), (1, 1), 1


register(
    Theorem(
        id="Z7-T",
        title="The kernel Gram bound depends on the Gram side (not transpose-invariant)",
        statement="There are square kernels with beta_T^zero(K^T) != beta_T^zero(K) (K^T: channels "
        "swapped, no flip): the side of the Gram matters, so the API fixes it.",
        latex=r"\exists K:\ \beta^{\mathrm{zero}}_T(K^\top) \ne \beta^{\mathrm{zero}}_T(K)",
        source="research/gram.md §9 Z7 and §6 item 6 (the published code Grams the larger side)",
        conditions="c_in = c_out >= 2, T = 2; a witness differs by more than 1e-6 relative",
        relied_on=False,
        quantifier="exists",
        check=lambda mode: run(
            Search(
                _z7t,
                quantifier="exists",
                tolerance=1e-6,
                random=lambda rng, n: (_square(x) for x in _random(rng, n)),
                strategy=LAYERS.map(_square),
                key="Z7-T",
            ),
            mode,
        ),
        proof="Witnessed by computation (the row sums of |K K^T|-type iterates differ from those "
        "of |K^T K|).",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- Z8
def _z8(instance) -> float:
    kernel, sizes = instance
    total = math.fsum(kernel.ravel())
    if total == 0.0:
        raise Skip
    worst = math.inf
    for t in (1, 2, 3, 4, 5):
        worst = min(worst, -abs(gram_zero(kernel, t) / total - 1.0))
    for n in sizes:
        worst = min(worst, -abs(circ(kernel, n) / total - 1.0))
    return worst


def _z8_random(rng, count):
    for _ in range(count):
        shape = (1, 1, int(rng.integers(1, 6)), int(rng.integers(1, 6)))
        yield np.abs(rng.standard_normal(shape)), [(1, 1), (2, 3), (7, 5)]


register(
    Theorem(
        id="Z8",
        title="Single-channel non-negative kernels are a tight case",
        statement="For c_in = c_out = 1 and K >= 0 entrywise: beta_T^zero = sum(K) = S(K) = "
        "sigma_circ(N) for every T and every N.",
        latex=r"c_i = c_o = 1,\ K \ge 0:\quad \beta^{\mathrm{zero}}_T = \textstyle\sum K = S(K) "
        r"= \sigma_{\mathrm{circ}}(N)",
        source="derived in specbound (research/gram.md §9 Z8: the rounding canary)",
        conditions="single-channel non-negative kernels up to 5 x 5, T = 1..5, N in {1, 2x3, 7x5}; "
        "relative tolerance 1e-12",
        relied_on=False,
        check=lambda mode: run(
            Search(
                _z8,
                tolerance=1e-12,
                random=_z8_random,
                strategy=st.tuples(
                    st.tuples(st.just(1), st.just(1), st.integers(1, 5), st.integers(1, 5))
                    .flatmap(
                        lambda s: adversarial_kernels(s, ("nonnegative", "constant", "single_tap"))
                    )
                    .map(np.abs),
                    st.just([(1, 1), (4, 4)]),
                ),
                key="Z8",
            ),
            mode,
        ),
        proof="K_T >= 0 entrywise, so sum |K_T| = sum K_T = K_T^(0) = (sum K)^{2^T}; the symbol "
        "|K^(w)| <= sum K with equality at w = 0, which is on every grid.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- KGI-QUAD
def sup_1d(taps: list[int]) -> mpmath.mpf:
    """``max_w |sum_a k_a e^{-i w a}|`` to ``DPS`` digits (grid, then Newton on f')."""
    w = np.linspace(0.0, 2 * np.pi, 4096, endpoint=False)
    values = np.abs(np.polyval(np.array(taps[::-1], dtype=float), np.exp(-1j * w)))
    n = len(taps)
    with mpmath.workdps(DPS):

        def f(x):
            return mpmath.fsum(
                taps[a] * taps[b] * mpmath.cos(x * (a - b)) for a in range(n) for b in range(n)
            )

        def df(x):
            return -mpmath.fsum(
                taps[a] * taps[b] * (a - b) * mpmath.sin(x * (a - b))
                for a in range(n)
                for b in range(n)
            )

        best = mpmath.mpf(0)
        for start in w[np.argsort(values)[-2:]]:
            x0 = mpmath.mpf(float(start))
            try:
                x = mpmath.findroot(df, x0)
            except (ValueError, ZeroDivisionError):
                x = x0
            best = max(best, f(x), f(x0))
        return mpmath.sqrt(best)


def iterate_1d(taps: list[int], n_iter: int) -> list[int]:
    """The 1-D iterated self-correlation ``k_T`` in exact integer arithmetic."""
    k = [int(v) for v in taps]
    for _ in range(n_iter):
        m = len(k)
        k = [
            sum(k[a + d] * k[a] for a in range(max(0, -d), min(m, m - d)))
            for d in range(-(m - 1), m)
        ]
    return k


def quadratic_errors(taps_h: list[int], taps_w: list[int], steps: int = 6):
    """``(a_T, eps_T)`` for T = 1..steps of the separable kernel ``taps_h (x) taps_w``, exact:
    ``a_T = sum|K_T| / S^{2^T} - 1`` and ``eps_T = beta_T / S - 1``.

    For ``K = h (x) g`` the iterates separate, ``K_T = h_T (x) g_T``, and ``S = S_h S_g``.
    """
    s = sup_1d(taps_h) * sup_1d(taps_w)
    a, eps = [], []
    with mpmath.workdps(DPS):
        for t in range(1, steps + 1):
            total = mpmath.mpf(
                sum(abs(v) for v in iterate_1d(taps_h, t))
                * sum(abs(v) for v in iterate_1d(taps_w, t))
            )
            a.append(total / s ** (2**t) - 1)
            eps.append(mpmath.root(total, 2**t) / s - 1)
    return a, eps


def _quad(instance) -> float:
    taps_h, taps_w = instance
    if not any(taps_h) or not any(taps_w):
        raise Skip
    a, _ = quadratic_errors(list(taps_h), list(taps_w), 5)
    worst = math.inf
    with mpmath.workdps(DPS):
        for t in range(len(a) - 1):
            if a[t] > mpmath.mpf(10) ** -30:
                worst = min(worst, float((a[t] ** 2 - a[t + 1]) / a[t] ** 2))
    if worst == math.inf:
        raise Skip
    return worst


def _quad_notes() -> list[str]:
    a, eps = quadratic_errors([1, -3, 0, 2], [1], 7)
    return [
        "K = [[1, -3, 0, 2]] (exact): a_T = "
        + ", ".join(mpmath.nstr(v, 4) for v in a)
        + " (does not tend to 0)",
        "eps_{T+1}/eps_T = "
        + ", ".join(mpmath.nstr(eps[i + 1] / eps[i], 3) for i in range(len(eps) - 1))
        + " (-> 1/2: linear); eps_{T+1}/eps_T^2 = "
        + ", ".join(mpmath.nstr(eps[i + 1] / eps[i] ** 2, 3) for i in range(len(eps) - 1))
        + " (unbounded: no C with eps_{T+1} <= C eps_T^2)",
        "what holds instead: Z2 (monotone) and Z3 (log-error <= 2^-(T+1) ln(c s_T^2), ratio "
        "1/2); the dense and per-frequency Gram iterations do satisfy the quadratic "
        "recursion (GI-REC), which may be what the paper's claim refers to [U]",
    ]


def _quad_check(mode: Mode):
    taps = st.lists(st.integers(-3, 3), min_size=1, max_size=5)
    result = run(
        Search(
            _quad,
            tolerance=1e-12,
            adversarial=lambda m: iter(
                [([1, -3, 0, 2], [1]), ([1, 0, -1, 1], [1]), ([1, 2, -1], [1, -3, 0, 2])]
            ),
            strategy=st.tuples(taps, taps),
            n_hypothesis=(6, 100),
            key="KGI-QUAD",
            describe=lambda x: f"K = outer({list(x[0])}, {list(x[1])})",
        ),
        mode,
    )
    result.notes.extend(_quad_notes())
    return result


register(
    Theorem(
        id="KGI-QUAD",
        title="'Quadratic convergence' of the kernel Gram iteration, read as the dense-GI "
        "recursion",
        statement="Published claim (arXiv 2402.00240, abstract: the Gram iteration generalised to "
        "zero padding, 'and prove its quadratic convergence'), tested in the form that makes the "
        "dense Gram iteration quadratic: a_{T+1} <= a_T^2 with a_T = (beta_T^zero / S)^(2^T) - 1 "
        "(beta_T^zero: the row-sum bound that the published code computes).",
        latex=r"a_T := \Big(\frac{\beta^{\mathrm{zero}}_T}{S}\Big)^{2^T} - 1,\qquad "
        r"a_{T+1} \overset{?}{\le} a_T^2",
        source="Delattre, Barthélemy & Allauzen, arXiv 2402.00240, abstract (the paper's exact "
        "statement could not be retrieved [U]); the counterexample is computed in specbound",
        conditions="single-channel separable integer kernels (exact K_T in integer arithmetic, S "
        "to 40 digits), T = 1..5, wherever a_T > 1e-30",
        relied_on=False,
        expected="FAIL",
        check=_quad_check,
        proof="Not as stated: for K = [[1, -3, 0, 2]], a_T stays near 0.27-0.29 (no decay), so "
        "a_{T+1} > a_T^2. Heuristically the Fourier coefficients of |K^|^{2^T} concentrate like a "
        "Gaussian of width ~2^{T/2} around the maximiser, so sum|K_T| / S^{2^T} tends to a "
        "constant >= 1: ln(beta_T/S) ~ const / 2^T.",
        family=FAMILY,
    )
)
