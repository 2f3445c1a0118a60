"""Circular layers: the exact per-frequency norm and the per-frequency Gram iteration (C1-C7).

``sigma_circ`` is the norm of a block-circulant circular layer (kernel wrapped modulo the size,
polyphase reshape for the stride); ``beta_T^circ`` is ``specbound``'s ``gram_circular`` method
(Delattre et al., ICML 2023, Sec. 3).
"""

from __future__ import annotations

import math

import numpy as np

from specbound import ConvSpec
from specbound.bounds import compute
from specbound.operators import ConvLayer, circulant_spectrum, conv_matrix, frequency_matrices
from specbound.testing import adversarial_layers, circulant_specs, symbol_bounded_specs

from ..exact import circ, norm, symbol_sup_upper
from ..harness import Search, Skip, run
from ..registry import Mode, Theorem, register
from .common import (
    CIRCULANT_SPECS,
    FLOOR_NOTE,
    NEGLIGIBLE,
    NON_ZERO_FAMILIES,
    SYMBOL_CIRCULAR_SPECS,
    describe_layer,
    negligible,
    random_layers,
    suite,
)

FAMILY = "Circular Gram iteration"
STEPS = (0, 1, 2, 4, 6)
SOURCE = (
    "Delattre, Barthélemy, Araujo & Allauzen, ICML 2023 (arXiv 2305.16173), Sec. 3; "
    "Sedghi, Gupta & Long, The Singular Values of Convolutional Layers, ICLR 2019, Thm. 6; "
    "statements as in research/gram.md §3 and §9 (C1-C7), derived in specbound"
)
CIRC = circulant_specs(
    max_channels=3, max_kernel=4, max_size=8, max_stride=2, max_dilation=2, max_groups=2
)
STRATEGY = adversarial_layers(CIRC)


def _random(rng: np.random.Generator, count: int):
    return random_layers(
        rng, count, families=("gaussian", "integer", "rank_one"), circulant=True, max_size=8
    )


def _adversarial(mode: Mode):
    return suite(CIRCULANT_SPECS, mode)


def gram_circular(kernel: np.ndarray, spec: ConvSpec, n_iter: int) -> float:
    return float(compute("gram_circular", kernel, spec, n_iter=n_iter).value)


def _sides(kernel: np.ndarray, spec: ConvSpec) -> tuple[int, int]:
    """``(p, q)``: the frequency-matrix shape per group (polyphase: ``q = c_in_g s_h s_w``)."""
    g = spec.groups
    return kernel.shape[0] // g, kernel.shape[1] * spec.stride[0] * spec.stride[1]


def _search(
    margin,
    key: str,
    tol: float = 1e-12,
    strategy=STRATEGY,
    adversarial=_adversarial,
    random=_random,
) -> Search:
    return Search(
        margin,
        tolerance=tol,
        random=random,
        adversarial=adversarial,
        strategy=strategy,
        describe=describe_layer,
        key=key,
    )


# --------------------------------------------------------------------------- C1
def c1_margin(layer) -> float:
    kernel, spec = layer
    exact = norm(kernel, spec)
    if negligible(exact, kernel):
        raise Skip
    values = [gram_circular(kernel, spec, t) for t in STEPS]
    if any(math.isnan(v) for v in values):
        return -1.0
    if exact == 0.0:  # any v >= 0 bounds a zero norm (rounding noise is not a violation)
        return 0.0 if all(v >= 0.0 for v in values) else -1.0
    return min(v / exact - 1.0 for v in values)


register(
    Theorem(
        id="C1",
        title="Per-frequency Gram iteration bounds the circular norm",
        statement="For a block-circulant circular layer on an N_h x N_w grid (kernel wrapped when "
        "N < k; polyphase for a stride dividing N), beta_T^circ = max_w ||K'(w)||_{S_{2^(T+1)}} >= "
        "sigma_circ(N) for every T >= 0.",
        latex=r"\beta^{\mathrm{circ}}_T(K, N) = \max_{\omega \in \frac{2\pi}{N}\mathbb Z^2} "
        r"\|\hat K'(\omega)\|_{S_{2^{T+1}}} \ge \sigma_{\mathrm{circ}}(N)",
        source=SOURCE,
        conditions="circular padding with d(k-1) padded in total per axis, stride dividing the "
        "size, any dilation and groups, every N >= 1; T in {0, 1, 2, 4, 6}; tolerance 1e-12"
        + FLOOR_NOTE,
        relied_on=True,
        check=lambda mode: run(_search(c1_margin, "C1"), mode),
        proof="The DFT block-diagonalises the circulant (Sedghi et al. 2019, Thm. 6; polyphase: "
        "Senderovich et al. 2022), so sigma_circ = max_w sigma_1(K'(w)); apply GI-UB per "
        "frequency.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- C2
def _c2(layer) -> float:
    kernel, spec = layer
    exact = norm(kernel, spec)
    if negligible(exact, kernel):
        raise Skip
    values = [gram_circular(kernel, spec, t) for t in range(7)]
    if exact == 0.0:
        return 0.0 if all(v == 0.0 for v in values) else -1.0
    r = min(_sides(kernel, spec))
    worst = math.inf
    for t, v in enumerate(values):
        worst = min(worst, r ** (2.0 ** -(t + 1)) * exact / v - 1.0)
        if r == 1:
            worst = min(worst, -abs(v / exact - 1.0))
        if t:
            worst = min(worst, values[t - 1] / v - 1.0)
    return worst


register(
    Theorem(
        id="C2",
        title="Envelope, monotonicity and exactness of the circular Gram iteration",
        statement="beta_T^circ <= min(p, q)^(2^-(T+1)) sigma_circ(N) (p x q: the frequency-matrix "
        "shape per group), beta_T^circ is non-increasing in T, and equals sigma_circ for every T "
        "when min(p, q) = 1.",
        latex=r"\beta^{\mathrm{circ}}_T \le \min(p, q)^{2^{-(T+1)}}\sigma_{\mathrm{circ}}(N),\quad "
        r"\beta^{\mathrm{circ}}_{T+1} \le \beta^{\mathrm{circ}}_T,\quad \min(p,q) = 1 \Rightarrow "
        r"\beta^{\mathrm{circ}}_T = \sigma_{\mathrm{circ}}",
        source=SOURCE,
        conditions="as C1; T = 0..6; tolerance 1e-12" + FLOOR_NOTE,
        relied_on=False,
        check=lambda mode: run(_search(_c2, "C2"), mode),
        proof="GI-RANK and GI-MONO per frequency; the max over frequencies preserves both.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- C3
def _c3(layer) -> float:
    kernel, spec = layer
    lay = ConvLayer(kernel, spec, need_size=True)
    full = max(
        float(np.linalg.svd(b, compute_uv=False).max(initial=0.0)) for b in frequency_matrices(lay)
    )
    half = max(
        float(np.linalg.svd(b, compute_uv=False).max(initial=0.0))
        for b in frequency_matrices(lay, half=True)
    )
    if full == 0.0:
        return 0.0 if half == 0.0 else -1.0
    return -abs(half / full - 1.0)


register(
    Theorem(
        id="C3",
        title="The rfft half-spectrum gives the full maximum",
        statement="For a real kernel the frequency matrix at -w is the complex conjugate of the "
        "one "
        "at w, so the maximum of sigma_1 over the rfft2 half-spectrum equals the maximum over the "
        "full DFT grid.",
        latex=r"\hat K(-\omega) = \overline{\hat K(\omega)} \Rightarrow \max_{\omega\in H}"
        r"\sigma_1(\hat K(\omega)) = \max_{\omega}\sigma_1(\hat K(\omega))",
        source="derived in specbound (research/gram.md §3, 'rfft vs fft')",
        conditions="real kernels, block-circulant circular layers (any stride, dilation, groups); "
        "tolerance 1e-13",
        relied_on=True,
        check=lambda mode: run(_search(_c3, "C3", tol=1e-13), mode),
        proof="Real taps: sum K_a e^{+i w a} = conj(sum K_a e^{-i w a}); conjugation keeps "
        "singular "
        "values, and the half-spectrum contains one of each pair {w, -w}.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- C4
def c4_margin(layer) -> float:
    kernel, spec = layer
    dense = np.linalg.svd(conv_matrix(kernel, spec), compute_uv=False)
    if negligible(float(dense.max(initial=0.0)), kernel):
        raise Skip  # the whole spectrum is rounding noise (taps that cancel on a tiny grid)
    fast = circulant_spectrum(kernel, spec)
    top = max(float(dense.max(initial=0.0)), 1e-300)
    if dense.shape != fast.shape:
        return -1.0
    worst = -float(np.abs(np.sort(dense) - np.sort(fast)).max(initial=0.0)) / top
    return min(worst, -abs(norm(kernel, spec) - float(dense.max(initial=0.0))) / top)


register(
    Theorem(
        id="C4",
        title="Sedghi's per-frequency spectrum equals the dense spectrum",
        statement="The singular values of a block-circulant circular layer are the union over "
        "frequencies (and groups) of the singular values of the frequency matrices of the wrapped "
        "(polyphase) kernel; specbound's circulant spectrum and exact norm equal the dense SVD.",
        latex=r"\operatorname{sv}(C_N(K)) = \biguplus_{\omega \in \frac{2\pi}{N}\mathbb Z^2}"
        r"\operatorname{sv}\big(\hat K'(\omega)\big)",
        source="Sedghi, Gupta & Long, ICLR 2019, Thm. 6 (stride 1); Senderovich et al., NeurIPS "
        "2022, Sec. 3 (polyphase); the wrapping for N < k is derived in specbound",
        conditions="circular padding with d(k-1) padded in total per axis, stride dividing the "
        "size, any N >= 1 (wrapped, not cropped), dilation, groups; absolute tolerance 1e-12 "
        "sigma_1 on every singular value" + FLOOR_NOTE,
        relied_on=True,
        check=lambda mode: run(_search(c4_margin, "C4"), mode),
        proof="The 2-D DFT (times the identity on channels) block-diagonalises a block-circulant "
        "matrix with circulant blocks; taps at positions equal modulo N add up (wrapping).",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- C5
def _c5(layer) -> float:
    kernel, spec = layer
    base = norm(kernel, spec)
    if spec.stride != (1, 1) or base < NEGLIGIBLE * float(np.abs(kernel).sum()):
        # stated for stride 1; a norm at the rounding floor (taps that cancel on a small
        # grid), an exact 0 included, is compared with a variant's rounding noise otherwise
        raise Skip
    b2 = gram_circular(kernel, spec, 2)
    g = spec.groups
    co = kernel.shape[0] // g
    transposed = np.concatenate(
        [np.swapaxes(kernel[i * co : (i + 1) * co], 0, 1) for i in range(g)], axis=0
    )
    (kh, kw), (dh, dw) = kernel.shape[2:], spec.dilation
    variants = [
        (np.ascontiguousarray(kernel[:, :, ::-1, ::-1]), spec),
        (-kernel, spec),
        (transposed, spec),
        (kernel, spec.replace(pad=(dw * (kw - 1), 0, 0, dh * (kh - 1)))),
    ]
    scale = max(base, 1e-300)
    worst = math.inf
    for k2, s2 in variants:
        worst = min(worst, -abs(norm(k2, s2) - base) / scale)
        worst = min(worst, -abs(gram_circular(k2, s2, 2) - b2) / max(b2, 1e-300))
    return worst


def _c5_strategy_adjust(layer):
    kernel, spec = layer
    return kernel, spec.replace(stride=1)


register(
    Theorem(
        id="C5",
        title="Invariances of the circular norm and of its Gram bound",
        statement="sigma_circ(N) and beta_T^circ are unchanged by a spatial flip of the kernel, a "
        "global sign, a channel transpose (per group) and a circular shift of the kernel origin "
        "(another split of the pad).",
        latex=r"\sigma_{\mathrm{circ}}(K) = \sigma_{\mathrm{circ}}(K_{\leftrightarrow}) = "
        r"\sigma_{\mathrm{circ}}(-K) = \sigma_{\mathrm{circ}}(K^\top) = "
        r"\sigma_{\mathrm{circ}}(\tau_s K)",
        source="derived in specbound (research/gram.md §9, C5)",
        conditions="block-circulant circular layers, stride 1 (c_in = c_out per group for the "
        "transpose to keep the shape: otherwise the transposed kernel is a different layer shape, "
        "still checked); T = 2; tolerance 1e-12" + FLOOR_NOTE,
        relied_on=False,
        check=lambda mode: run(
            _search(_c5, "C5", strategy=STRATEGY.map(_c5_strategy_adjust)), mode
        ),
        proof="Each operation multiplies the symbol by a unimodular scalar, conjugates it, or "
        "transposes it: singular values are unchanged at every frequency.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- C6
def _c6(layer) -> float:
    kernel, spec = layer
    exact = norm(kernel, spec)
    size = spec.input_size
    stride1 = circ(kernel, size, spec.dilation, spec.groups)
    doubled = circ(kernel, (2 * size[0], 3 * size[1]), spec.dilation, spec.groups)
    sup = symbol_sup_upper(kernel, spec.dilation, spec.groups)
    scale = max(sup, 1e-300)
    return min((stride1 - exact) / scale, (doubled - stride1) / scale, (sup - doubled) / scale)


def _c6_adversarial(mode: Mode):
    return suite(SYMBOL_CIRCULAR_SPECS, mode, NON_ZERO_FAMILIES)


register(
    Theorem(
        id="C6",
        title="Circular layers are bounded by the symbol supremum",
        statement="A circular layer with at most d(k-1) padded in total per axis (any split, any "
        "stride, any n, including n < k) has norm <= sigma_circ(n) (its stride-1 circulant); and "
        "sigma_circ(N) <= sigma_circ(mN) <= S(K) for integers m.",
        latex=r"\|A\| \le \sigma_{\mathrm{circ}}(n) \le \sigma_{\mathrm{circ}}(mn) \le "
        r"S(K) = \sup_\omega \sigma_1(\hat K(\omega))",
        source="derived in specbound (research/gram.md G4 and §9 C6; specbound.bounds.embedding "
        "module docstring)",
        conditions="zeros excluded; circular with total pad <= d(k-1) per axis; m = (2, 3) per "
        "axis; S bounded above by sigma_circ(32 D) times the G5 factor (so this check relies on "
        "G5); relative tolerance 1e-12",
        relied_on=True,
        check=lambda mode: run(
            _search(
                _c6,
                "C6",
                strategy=adversarial_layers(
                    symbol_bounded_specs(("circular",), max_size=7), NON_ZERO_FAMILIES
                ),
                adversarial=_c6_adversarial,
                random=lambda rng, n: random_layers(
                    rng, n, ("gaussian", "rank_one"), modes=("circular",), symbol_domain=True
                ),
            ),
            mode,
        ),
        proof="The outputs read distinct rows s*i - lo (mod n) of the stride-1 circulant: a row "
        "selection. The grid of N is a subset of the grid of mN, and of the torus.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- C7
def _c7(layer) -> float:
    kernel, spec = layer
    exact = norm(kernel, spec)
    if negligible(exact, kernel):
        raise Skip
    worst = math.inf
    for t in STEPS:
        v = gram_circular(kernel, spec, t)
        if not math.isfinite(v):
            return -math.inf
        if exact == 0.0:  # a vanishing operator: v must be 0 up to the rounding floor
            floor = NEGLIGIBLE * float(np.abs(kernel).sum())
            worst = min(worst, 0.0 if 0.0 <= v <= floor else -1.0)
        else:
            worst = min(worst, -abs(v / exact - 1.0))
    return worst


def _c7_adversarial(mode: Mode):
    diff = np.array([[[[1.0, -2.0, 1.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]])
    for size in ((1, 3), (3, 3), (4, 4), (6, 5)):
        yield diff, ConvSpec("circular", "same", size)
        yield np.zeros((1, 1, 3, 3)), ConvSpec("circular", "same", size)
    for layer in suite(CIRCULANT_SPECS, mode, ("vanishing_frequency", "zero", "tiny", "huge")):
        yield _single_channel(layer)


def _single_channel(layer):
    kernel, spec = layer
    return kernel[:1, :1], spec.replace(groups=1)


register(
    Theorem(
        id="C7",
        title="Vanishing frequencies and zero kernels give finite, exact values",
        statement="With one channel on either side (every frequency matrix has rank <= 1), "
        "beta_T^circ = sigma_circ exactly, also when the symbol vanishes at some frequencies "
        "(zero-sum kernels) or everywhere (the zero kernel gives 0, not NaN).",
        latex=r"\min(p, q) = 1:\ \beta^{\mathrm{circ}}_T = \sigma_{\mathrm{circ}}(N) \in "
        r"[0, \infty),\ \text{also when } \hat K(\omega_0) = 0",
        source="derived in specbound (research/gram.md §9 C7; the reference code returns NaN, "
        "§6 item 2)",
        conditions="single-channel kernels (a rank-one frequency matrix everywhere), zero-sum and "
        "zero kernels, every N; T in {0, 1, 2, 4, 6}; tolerance 1e-12" + FLOOR_NOTE,
        relied_on=True,
        check=lambda mode: run(
            _search(
                _c7,
                "C7",
                strategy=STRATEGY.map(_single_channel),
                adversarial=_c7_adversarial,
                random=lambda rng, n: (_single_channel(x) for x in _random(rng, n)),
            ),
            mode,
        ),
        proof="The rescaled iteration replaces a vanishing normaliser by 1 (0/0 avoided), so a "
        "zero "
        "frequency matrix stays 0; rank-one matrices have beta_T = sigma_1 (GI-RANK).",
        family=FAMILY,
    )
)
