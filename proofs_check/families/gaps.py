"""Gap relations between zero-padded, circular and bi-infinite convolutions (G1-G6).

Ground truth only: exact norms of zero-padded layers (dense), of circular layers (per
frequency), and lower / upper estimates of ``S(K) = sup_w sigma_max(K^(w))`` chosen so that a
reported counterexample is always genuine (research/gram.md §4.2).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from hypothesis import strategies as st

from specbound import ConvSpec
from specbound.bounds import compute
from specbound.operators import ConvLayer
from specbound.rigorous._routes import embedding_layers
from specbound.testing import adversarial_kernels, adversarial_layers, conv_specs, layers

from ..exact import (
    bernstein_factor,
    circ,
    degree,
    norm,
    symbol_sup_lower,
    symbol_sup_upper,
)
from ..harness import Search, Skip, describe, run
from ..registry import Mode, Theorem, register
from .common import (
    FLOOR_NOTE,
    NON_ZERO_FAMILIES,
    ZERO_SPECS,
    describe_layer,
    negligible,
    random_layers,
    suite,
)

FAMILY = "Circular / zero-padding gap relations"
SOURCE = (
    "Delattre, Barthélemy & Allauzen, arXiv 2402.00240 (the paper's exact inequalities could "
    "not be retrieved [U]); statements, proofs and sharpness derived in specbound "
    "(research/gram.md §4.2)"
)
G1_COUNTEREXAMPLE = np.array([[[[1.0, -3.0, 0.0], [-3.0, 1.0, -1.0], [3.0, -1.0, 2.0]]]])
"""Stored sharpness example of G1: same padding (P = 1), n = 3, N = n + P - 1 = 3 fails."""

ZERO_LAYERS = layers(
    ("zeros",), ("gaussian", "integer", "rank_one", "nonnegative"), max_size=6, max_channels=2
)
ZERO_ADVERSARIAL = adversarial_layers(
    conv_specs(("zeros",), max_size=6, max_channels=2), NON_ZERO_FAMILIES
)


def _zero_random(rng: np.random.Generator, count: int):
    return random_layers(
        rng,
        count,
        ("gaussian", "integer", "rank_one"),
        modes=("zeros",),
        max_size=6,
        max_channels=2,
    )


def embedding_offsets(kernel: np.ndarray, spec: ConvSpec) -> tuple[int, int]:
    """``max(min(P_lo, D), min(P_hi, D))`` per axis: G1's threshold is ``N >= n + this``."""
    (top, bottom), (left, right) = spec.pads(kernel.shape[2:])
    dh, dw = degree(kernel, spec.dilation)
    return max(min(top, dh), min(bottom, dh)), max(min(left, dw), min(right, dw))


# --------------------------------------------------------------------------- G1
def g1_search(offset: int = 0) -> Search:
    """The G1 check on the library's embeddings: every circulant of
    ``rigorous._routes.embedding_layers`` (sizes from ``embedding_size_axis``, the lemma L6),
    moved by ``offset`` strides per axis.

    ``offset = 0`` is the lemma as the library uses it; ``offset = -1`` is the planted false
    statement (the embedding one size too small; the stored counterexample refutes it).
    """

    def margin(layer) -> float:
        kernel, spec = layer
        zero = norm(kernel, spec)
        if negligible(zero, kernel):
            raise Skip
        (sh, sw) = spec.stride
        worst = math.inf
        for emb in embedding_layers(ConvLayer(kernel, spec, need_size=True)):
            (n1, n2) = emb.input_size
            grid = (n1 + offset * sh, n2 + offset * sw)
            if min(grid) < 1:
                continue
            c = norm(kernel, emb.spec.replace(input_size=grid))
            worst = min(worst, 0.0 if zero == 0.0 else c / zero - 1.0)
        if worst == math.inf:
            raise Skip
        return worst

    def adversarial(mode: Mode):
        yield G1_COUNTEREXAMPLE, ConvSpec("zeros", "same", (3, 3))
        yield from suite(ZERO_SPECS, mode)

    return Search(
        margin,
        tolerance=1e-12,
        random=_zero_random,
        adversarial=adversarial,
        strategy=ZERO_LAYERS,
        describe=describe_layer,
        key=f"G1{offset:+d}",
    )


register(
    Theorem(
        id="G1",
        title="A zero-padded layer embeds in a circular one (N >= n + P)",
        statement="sigma_zero^(P)(n) <= sigma_circ(N) for every N >= n + P per axis, where "
        "P = max(min(P_lo, D), min(P_hi, D)) and D = d(k-1) (symmetric pads P <= D: N >= n + P; "
        "'same': n + ceil(D/2); 'valid': n; 'full': n + D); any stride, dilation, groups.",
        latex=r"\sigma^{(P)}_{\mathrm{zero}}(n) \le \sigma_{\mathrm{circ}}(N)\quad \forall N \ge "
        r"n + \max\big(\min(P_{lo}, D), \min(P_{hi}, D)\big)",
        source=SOURCE + "; specbound.operators.circulant.embedding_size_axis (proof)",
        conditions="zero padding, any pads (pads beyond D only add zero rows), n >= 1, any stride, "
        "dilation, groups; the four tori of rigorous._routes.embedding_layers (N0 + j s, N0 from "
        "operators.circulant.embedding_size_axis); relative tolerance 1e-12"
        + FLOOR_NOTE,
        relied_on=True,
        check=lambda mode: run(g1_search(0), mode),
        proof="Zero-extend x to the torus Z_N. If N >= n + P_lo the reads at -P_lo..-1 wrap to "
        "N-P_lo..N-1, outside the support [0, n); if N >= n + P_hi the reads at n..n+P_hi-1 stay "
        "outside it. So every read of the zero-padded layer equals the same read of the circular "
        "one, and the <= N output rows are distinct rows of C_N: Z = S C_N E with S a row "
        "selection and E an isometry.",
        family=FAMILY,
    )
)


register(
    Theorem(
        id="G1-SMALL",
        title="Planted: the embedding one stride smaller (N0 - s) still embeds",
        statement="False variant of G1: sigma_zero(n) <= sigma_circ(N0 - s + j s) for the "
        "library's embedding size N0; refuted by the stored counterexample (same padding, "
        "n = 3, N = 3).",
        latex=r"\sigma_{\mathrm{zero}}(n) \overset{?}{\le} \sigma_{\mathrm{circ}}(N_0 - s)",
        source=SOURCE,
        conditions="as G1, every torus one stride smaller",
        relied_on=False,
        expected="FAIL",
        check=lambda mode: run(g1_search(-1), mode),
        proof="Not as stated: G1-SHARP's kernel exceeds sigma_circ(n + P - 1) by 40%.",
        family=FAMILY,
    )
)


def _sharp(layer) -> float:
    kernel, spec = layer
    (h, w), (ph, pw) = spec.input_size, embedding_offsets(kernel, spec)
    grid = (h + ph - 1, w + pw - 1)
    if min(ph, pw) < 1 or min(grid) < 1:
        raise Skip
    c = circ(kernel, grid, spec.dilation, spec.groups)
    zero = norm(kernel, spec)
    return zero / c - 1.0 if c > 0 else (math.inf if zero > 0 else 0.0)


register(
    Theorem(
        id="G1-SHARP",
        title="G1 is sharp: N = n + P - 1 is not enough",
        statement="There are kernels with sigma_zero^(P)(n) > sigma_circ(n + P - 1), also with "
        "n >= k; e.g. K = [[1,-3,0],[-3,1,-1],[3,-1,2]], same padding, n = 3, N = 3.",
        latex=r"\exists K:\ \sigma^{(P)}_{\mathrm{zero}}(n) > \sigma_{\mathrm{circ}}(n + P - 1)",
        source=SOURCE + "; counterexample stored in tests/test_gap_relations.py",
        conditions="zero padding with P >= 1 on both axes; a witness exceeds by more than 1e-9",
        relied_on=False,
        quantifier="exists",
        check=lambda mode: run(
            Search(
                _sharp,
                quantifier="exists",
                tolerance=1e-9,
                adversarial=lambda m: iter(
                    [(G1_COUNTEREXAMPLE, ConvSpec("zeros", "same", (3, 3)))]
                ),
                strategy=ZERO_LAYERS,
                describe=describe_layer,
                key="G1-SHARP",
            ),
            mode,
        ),
        proof="Witnessed by computation (exact dense and circulant norms).",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- G2
def _g2(layer) -> float:
    kernel, spec = layer
    (h, w) = spec.input_size
    base = norm(kernel, spec)
    taller = norm(kernel, spec.replace(input_size=(h + 1, w)))
    wider = norm(kernel, spec.replace(input_size=(h, w + 1)))
    both = norm(kernel, spec.replace(input_size=(h + 1, w + 1)))
    sup = symbol_sup_upper(kernel, spec.dilation, spec.groups)
    if sup == 0.0:
        return 0.0 if max(base, both) == 0.0 else -1.0
    return min(taller - base, wider - base, both - taller, sup - both) / sup


register(
    Theorem(
        id="G2",
        title="Zero-padded norms increase with the size, up to S(K)",
        statement="For fixed pads, stride, dilation and groups: sigma_zero(n) <= sigma_zero(n + 1) "
        "(per axis) <= S(K); hence sup_n sigma_zero(n) <= S(K), which every-size bounds rely on.",
        latex=r"\sigma^{(P)}_{\mathrm{zero}}(n) \le \sigma^{(P)}_{\mathrm{zero}}(n+1) \le S(K)",
        source=SOURCE,
        conditions="zero padding, any fixed pads (P_lo, P_hi), stride, dilation, groups; S bounded "
        "above by sigma_circ(32 D) times the G5 factor (a failure of the S part would be real only "
        "if G5 holds); tolerance 1e-12 relative to S",
        relied_on=True,
        check=lambda mode: run(
            Search(
                _g2,
                tolerance=1e-12,
                random=_zero_random,
                adversarial=lambda m: suite(ZERO_SPECS, m),
                strategy=ZERO_ADVERSARIAL,
                describe=describe_layer,
                key="G2",
            ),
            mode,
        ),
        proof="The layer at size n is a compression of the layer at size n + 1 (input window and "
        "output rows nested); both are compressions of L(K), whose norm is S(K).",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- G3
def _interior_fraction(kernel: np.ndarray, spec: ConvSpec) -> float:
    (h, w), (dh, dw) = spec.input_size, degree(kernel, spec.dilation)
    if h <= dh or w <= dw:
        raise Skip
    return math.sqrt((h - dh) * (w - dw) / (h * w))


def _g3(layer) -> float:
    kernel, spec = layer
    if spec.stride != (1, 1):
        raise Skip
    frac = _interior_fraction(kernel, spec)
    s_low = symbol_sup_lower(kernel, spec.dilation, spec.groups)
    if s_low == 0.0 or negligible(s_low, kernel):
        raise Skip
    return norm(kernel, spec) / (frac * s_low) - 1.0


def _stride_one(layer):
    kernel, spec = layer
    return kernel, spec.replace(stride=1)


register(
    Theorem(
        id="G3",
        title="Zero-padded norms approach S(K) from below",
        statement="For stride 1, any pads and n > D = d(k-1) per axis: sigma_zero^(P)(n) >= "
        "sqrt((n_h - D_h)(n_w - D_w) / (n_h n_w)) S(K), i.e. (1 - D/n) S for square sizes.",
        latex=r"\Big(1 - \frac{D}{n}\Big) S(K) \le \sigma^{(P)}_{\mathrm{zero}}(n) \le S(K)",
        source=SOURCE,
        conditions="zero padding, stride 1, any pads, dilation, groups, n > D per axis; S bounded "
        "below by a refined grid maximum (so a failure is genuine); tolerance 1e-12" + FLOOR_NOTE,
        relied_on=False,
        check=lambda mode: run(
            Search(
                _g3,
                tolerance=1e-12,
                random=lambda rng, n: (_stride_one(x) for x in _zero_random(rng, n)),
                strategy=ZERO_ADVERSARIAL.map(_stride_one),
                describe=describe_layer,
                key="G3",
            ),
            mode,
        ),
        proof="Test the layer on the plane wave x_j = v e^{i w*.j} on the window (v, w* a top "
        "singular pair of the symbol's maximiser): the (n_h - D_h)(n_w - D_w) outputs whose "
        "receptive field lies inside the window have modulus S |v|.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- G4
def _g4(instance) -> float:
    kernel, n = instance
    return circ(kernel, (1, n)) / max(circ(kernel, (1, n + 1)), 1e-300) - 1.0


register(
    Theorem(
        id="G4",
        title="Circular norms are not monotone in N",
        statement="sigma_circ(N) is not monotone in N in general (only along multiples: "
        "sigma_circ(N) <= sigma_circ(mN), C6); e.g. K = [1, -1]: sigma_circ(2) = 2 > "
        "sigma_circ(3) = sqrt(3).",
        latex=r"\exists K, N:\ \sigma_{\mathrm{circ}}(N+1) < \sigma_{\mathrm{circ}}(N)",
        source=SOURCE,
        conditions="single-row kernels on 1 x N grids; a witness decreases by more than 1e-9",
        relied_on=False,
        quantifier="exists",
        check=lambda mode: run(
            Search(
                _g4,
                quantifier="exists",
                tolerance=1e-9,
                adversarial=lambda m: iter([(np.array([[[[1.0, -1.0]]]]), 2)]),
                strategy=st.tuples(
                    st.integers(2, 4).flatmap(lambda k: adversarial_kernels((1, 1, 1, k))),
                    st.integers(1, 8),
                ),
                describe=lambda x: f"K = {describe(x[0])}, N = {x[1]}",
                key="G4",
            ),
            mode,
        ),
        proof="K^(w) = 1 - e^{-iw} peaks at w = pi, a point of the grid of N only for even N.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- G5
def bernstein_slack(deg: tuple[int, int], grid: tuple[int, int]) -> float:
    """``sqrt(1 - (pi^2/2)(D_h/N_h + D_w/N_w)^2)`` (G5); Skip where it is not positive."""
    factor = bernstein_factor(deg, grid)
    if math.isinf(factor):
        raise Skip
    return 1.0 / factor


def g5_search(
    slack: Callable[[tuple[int, int], tuple[int, int]], float] = bernstein_slack,
    library: bool = True,
    key: str = "G5",
) -> Search:
    """The G5 check for a claimed factor: ``S(K) * slack(D, N) <= sigma_circ(N)``.

    ``library``: also check that specbound's ``bernstein_grid`` bound is ``>= S``.
    """

    def margin(instance) -> float:
        kernel, grid, dilation = instance
        deg = degree(kernel, dilation)
        s_low = symbol_sup_lower(kernel, dilation)
        if s_low == 0.0:
            raise Skip
        c = circ(kernel, grid, dilation)
        worst = c / (slack(deg, grid) * s_low) - 1.0
        if library:
            spec = ConvSpec("zeros", "same", None, dilation=dilation)
            value = compute("bernstein_grid", kernel, spec, N=grid).value
            worst = min(worst, value / s_low - 1.0)
        return worst

    def random(rng: np.random.Generator, count: int):
        for _ in range(count):
            shape = (
                int(rng.integers(1, 3)),
                int(rng.integers(1, 3)),
                int(rng.integers(1, 4)),
                int(rng.integers(1, 4)),
            )
            deg = (shape[2] - 1, shape[3] - 1)
            grid = tuple(math.ceil(4.5 * max(d, 1)) + int(rng.integers(0, 12)) for d in deg)
            yield rng.standard_normal(shape), grid, 1

    def adversarial(mode: Mode):
        diff = np.array([[[[1.0, -1.0]]]])
        for n in (5, 7, 9, 11, 13, 25):
            yield diff, (1, n), 1
            yield np.ascontiguousarray(np.swapaxes(diff, 2, 3)), (n, 1), 1
        for n in (9, 11, 15):
            yield np.array([[[[1.0, -1.0], [-1.0, 1.0]]]]), (n, n), 1
            yield np.array([[[[1.0, -3.0, 0.0, 2.0]]]]), (1, 3 * n), 1
            yield np.array([[[[1.0, -1.0]]]]), (1, 2 * n + 1), 2

    def strategy():
        shapes = st.tuples(
            st.integers(1, 2), st.integers(1, 2), st.integers(1, 3), st.integers(1, 3)
        )
        return shapes.flatmap(
            lambda s: st.tuples(
                adversarial_kernels(
                    s, ("gaussian", "rank_one", "checkerboard", "vanishing_frequency", "integer")
                ),
                st.tuples(
                    st.integers(max(1, 5 * (s[2] - 1)), 5 * max(s[2] - 1, 1) + 20),
                    st.integers(max(1, 5 * (s[3] - 1)), 5 * max(s[3] - 1, 1) + 20),
                ),
                st.just(1),
            )
        )

    return Search(
        margin,
        tolerance=1e-12,
        random=random,
        adversarial=adversarial,
        strategy=strategy(),
        key=key,
        describe=lambda x: f"K = {describe(x[0])}, N = {x[1]}, dilation {x[2]}",
    )


register(
    Theorem(
        id="G5",
        title="Bernstein: the circular norm on a grid approaches S(K)",
        statement="sigma_circ(N) >= S(K) sqrt(1 - (pi^2/2)(D_h/N_h + D_w/N_w)^2) whenever the "
        "square root is real; for square grids sqrt(1 - 2 pi^2 D^2/N^2), N > sqrt(2) pi D. "
        "specbound's bernstein_grid bound is >= S(K).",
        latex=r"\sigma_{\mathrm{circ}}(N) \ge S(K)\sqrt{1 - \tfrac{\pi^2}{2}"
        r"\big(\tfrac{D_h}{N_h} + \tfrac{D_w}{N_w}\big)^2}",
        source=SOURCE + "; specbound.bounds.embedding.bernstein_factor (proof)",
        conditions="any kernel, dilation (D = d(k-1)), groups; S bounded below by a refined grid "
        "maximum, so a failure is genuine; tolerance 1e-12; the tight case K = [1, -1] with odd N "
        "(ratio sec(pi/(2N))) is included",
        relied_on=True,
        check=lambda mode: run(g5_search(), mode),
        proof="With (u, v) the top singular pair at a maximiser w*, f(w) = |u^* K^(w) v|^2 is a "
        "real "
        "trigonometric polynomial of degree D per axis, 0 <= f <= S^2, f(w*) = S^2, grad f(w*) = "
        "0; "
        "Bernstein bounds its second derivatives by D_i D_j S^2; the nearest grid point is within "
        "pi/N_i per axis: f(w_g) >= S^2 (1 - (1/2)(pi D_h/N_h + pi D_w/N_w)^2).",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- G6
def _g6(instance) -> float:
    (kernel, spec), grid = instance
    zero = norm(kernel, spec)
    deg = degree(kernel, spec.dilation)
    c = circ(kernel, grid, spec.dilation, spec.groups)
    if negligible(zero, kernel) or negligible(c, kernel):
        raise Skip
    worst = math.inf
    try:
        worst = min(worst, 0.0 if zero == 0.0 else c / (bernstein_slack(deg, grid) * zero) - 1.0)
    except Skip:
        pass
    if spec.stride == (1, 1):
        try:
            frac = _interior_fraction(kernel, spec)
            worst = min(worst, 0.0 if c == 0.0 else zero / (frac * c) - 1.0)
        except Skip:
            pass
    if worst == math.inf:
        raise Skip
    return worst


def _g6_random(rng: np.random.Generator, count: int):
    for layer in _zero_random(rng, count):
        d = degree(layer[0], layer[1].dilation)
        yield layer, tuple(int(5 * max(v, 1) + rng.integers(0, 10)) for v in d)


register(
    Theorem(
        id="G6",
        title="Two-sided comparison of zero-padded and circular norms",
        statement="sigma_zero^(P)(n) <= sigma_circ(N) / sqrt(1 - (pi^2/2)(D_h/N_h + D_w/N_w)^2) "
        "for "
        "any n and any N where the root is real; and, for stride 1 and n > D, sigma_circ(N) <= "
        "sigma_zero^(P)(n) / sqrt((1 - D_h/n_h)(1 - D_w/n_w)) for any N.",
        latex=r"\sigma^{(P)}_{\mathrm{zero}}(n) \le \frac{\sigma_{\mathrm{circ}}(N)}{\sqrt{1 - "
        r"2\pi^2 D^2/N^2}},\qquad \sigma_{\mathrm{circ}}(N) \le \frac{\sigma^{(P)}_{\mathrm{zero}}"
        r"(n)}{1 - D/n}",
        source=SOURCE,
        conditions="zero padding (any pads, stride, dilation, groups) against stride-1 circular "
        "layers on any grid; tolerance 1e-12" + FLOOR_NOTE,
        relied_on=False,
        check=lambda mode: run(
            Search(
                _g6,
                tolerance=1e-12,
                random=_g6_random,
                strategy=st.tuples(ZERO_LAYERS, st.tuples(st.integers(1, 40), st.integers(1, 40))),
                describe=lambda x: f"{describe_layer(x[0])}; N = {x[1]}",
                key="G6",
            ),
            mode,
        ),
        proof="G2 + G5 for the first; G3 + C6 (sigma_circ <= S) for the second.",
        family=FAMILY,
    )
)
