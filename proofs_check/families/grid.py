"""Grid bounds on the symbol supremum: Araujo's sampling factor and Bernstein's cell bound.

G5 (the Bernstein grid factor) is in :mod:`proofs_check.families.gaps`; here are the sampled-
symbol bound of Araujo et al. (``lipbound``) and the per-cell inequality that
``certify(..., input_size=None)`` refines (:func:`specbound.rigorous._routes.symbol_sup_route`).
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import strategies as st

from specbound import ConvSpec
from specbound.bounds import compute
from specbound.operators import symbol
from specbound.testing import adversarial_kernels, family_kernel

from ..exact import circ, degree, symbol_sup_lower
from ..harness import Search, Skip, describe, run
from ..registry import Mode, Theorem, register

FAMILY = "Grid bounds"
ARAUJO = (
    "Araujo, Negrevergne, Chevaleyre & Atif, On Lipschitz Regularization of "
    "Convolutional Layers using Toeplitz Matrix Theory, AAAI 2021 (the factor "
    "1/(1 - (k-1)/n_s)); the Bernstein-Szegő proof and the secant factor are derived in "
    "specbound (specbound.bounds.lipbound.axis_factor)"
)


# --------------------------------------------------------------------------- ARAUJO
def _araujo(instance) -> float:
    kernel, dilation, samples, factor, which = instance
    deg = degree(kernel, dilation)
    for d, n in zip(deg, samples, strict=True):
        if d and (n <= d if factor == "secant" else n < 2 * d):
            raise Skip
    s_low = symbol_sup_lower(kernel, dilation)
    if s_low == 0.0:
        raise Skip
    spec = ConvSpec("zeros", "same", None, dilation=dilation)
    value = compute("lipbound", kernel, spec, n_samples=samples, norm=which, factor=factor).value
    return value / s_low - 1.0


def _araujo_random(rng: np.random.Generator, count: int):
    for _ in range(count):
        shape = (
            int(rng.integers(1, 3)),
            int(rng.integers(1, 3)),
            int(rng.integers(1, 5)),
            int(rng.integers(1, 5)),
        )
        dil = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        deg = (dil[0] * (shape[2] - 1), dil[1] * (shape[3] - 1))
        factor = str(rng.choice(["araujo", "secant"]))
        low = 2 if factor == "araujo" else 1
        samples = tuple(
            max(1, low * d + (1 if factor == "secant" else 0)) + int(rng.integers(0, 6))
            for d in deg
        )
        yield (
            family_kernel(
                str(rng.choice(["gaussian", "rank_one", "checkerboard"])),
                shape,
                int(rng.integers(2**31)),
            ),
            dil,
            samples,
            factor,
            str(rng.choice(["spectral", "frobenius"])),
        )


def _araujo_adversarial(mode: Mode):
    diff = np.array([[[[1.0, -1.0]]]])
    for n in (2, 3, 5, 7):
        yield diff, (1, 1), (1, n), "secant", "spectral"
        yield diff, (1, 1), (1, max(2, n)), "araujo", "spectral"
    for n in (5, 9):
        yield np.array([[[[1.0, -1.0], [-1.0, 1.0]]]]), (1, 1), (n, n), "secant", "spectral"
        yield np.array([[[[1.0, -3.0, 0.0, 2.0]]]]), (1, 1), (1, 2 * 3 + n), "araujo", "spectral"


register(
    Theorem(
        id="ARAUJO",
        title="Sampled-symbol bound with Araujo's factor (and the secant factor)",
        statement="S(K) <= c * max_j ||K^(2 pi j / n_s)|| (spectral or Frobenius norm) with, per "
        "axis of degree D = d(k-1), c = sec(pi D / (2 n_s)) for n_s > D, or the paper's "
        "1/(1 - D/n_s) (as 1/sqrt(1 - D/n_s) per axis) for n_s >= 2D; specbound's lipbound value "
        "is "
        ">= S(K).",
        latex=r"S(K) \le \prod_{\text{axes}} \sec\frac{\pi D}{2 n_s}\ \max_j \|\hat K(2\pi j/n_s)\|"
        r"\le \frac{1}{1 - D/n_s}\max_j \|\hat K(2\pi j/n_s)\|\quad (n_s \ge 2D)",
        source=ARAUJO,
        conditions="n_s distinct samples per axis (the reference code's linspace repeats 0 = 2 pi, "
        "research/gram.md §6 item 10), any dilation; S bounded below by a refined grid maximum; "
        "tolerance 1e-12 (K = [1, -1] with odd n_s makes the secant factor exact)",
        relied_on=True,
        check=lambda mode: run(
            Search(
                _araujo,
                tolerance=1e-12,
                random=_araujo_random,
                adversarial=_araujo_adversarial,
                strategy=st.tuples(
                    st.tuples(
                        st.integers(1, 2), st.integers(1, 2), st.integers(1, 4), st.integers(1, 4)
                    ),
                    st.integers(0, 6),
                    st.sampled_from(["araujo", "secant"]),
                    st.sampled_from(["spectral", "frobenius"]),
                ).flatmap(
                    lambda p: st.tuples(
                        adversarial_kernels(
                            p[0], ("gaussian", "rank_one", "checkerboard", "integer")
                        ),
                        st.just((1, 1)),
                        st.just(
                            tuple(
                                (2 if p[2] == "araujo" else 1) * max(k - 1, 1) + 1 + p[1]
                                for k in p[0][2:]
                            )
                        ),
                        st.just(p[2]),
                        st.just(p[3]),
                    )
                ),
                describe=lambda x: (
                    f"K = {describe(x[0])}, dilation {x[1]}, n_s = {x[2]}, {x[3]}, {x[4]}"
                ),
                key="ARAUJO",
            ),
            mode,
        ),
        proof="For M = sup ||P|| attained at x*, pick Q in the dual ball with Re<Q, P(x*)> = M; "
        "psi(y) = Re(e^{iDy}<Q, P(2y)>) is a real trigonometric polynomial of degree D with "
        "psi <= M, psi(x*/2) = M; Bernstein-Szegő (psi'^2 + D^2 psi^2 <= D^2 M^2) gives "
        "psi >= M cos(D |y - x*/2|); the nearest sample is within pi/(2 n_s) in y. And "
        "cos(pi t/2) >= 1 - t, so sec <= 1/(1-t), and sec(pi t/2)^2 <= 1/(1-t) for t <= 1/2.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- ARAUJO-SMALL
def _araujo_small(instance) -> float:
    kernel, samples = instance
    deg = degree(kernel)
    if any(d and not d < n < 2 * d for d, n in zip(deg, samples, strict=True)):
        raise Skip
    factor = 1.0
    for d, n in zip(deg, samples, strict=True):
        factor *= 1.0 if d == 0 else 1.0 / math.sqrt(1.0 - d / n)
    s_low = symbol_sup_lower(kernel)
    if s_low == 0.0:
        raise Skip
    return factor * circ(kernel, samples) / s_low - 1.0


def _small_random(rng: np.random.Generator, count: int):
    for _ in range(count):
        kh, kw = (int(v) for v in rng.integers(3, 6, size=2))
        samples = tuple(int(rng.integers(k, 2 * (k - 1))) for k in (kh, kw))
        yield (
            family_kernel(
                str(rng.choice(["gaussian", "checkerboard", "rank_one"])),
                (int(rng.integers(1, 3)), int(rng.integers(1, 3)), kh, kw),
                int(rng.integers(2**31)),
            ),
            samples,
        )


register(
    Theorem(
        id="ARAUJO-SMALL",
        title="[unverified] Araujo's factor with fewer than 2D samples",
        statement="Conjecture (not proved in specbound): S(K) <= max_j ||K^(2 pi j/n_s)||_2 / "
        "sqrt((1 - D_h/n_h)(1 - D_w/n_w)) also for D < n_s < 2D per axis (specbound's lipbound "
        "refuses this range).",
        latex=r"S(K) \overset{?}{\le} \frac{\sigma_{\mathrm{circ}}(n_s)}{\sqrt{(1 - D_h/n_h)"
        r"(1 - D_w/n_w)}},\quad D < n_s < 2D",
        source=ARAUJO + "; research/gram.md G5 ('never exceeded, not proved for matrix symbols')",
        conditions="kernels 3x3 to 5x5, n_s in (D, 2D) per axis; S bounded below by a refined grid "
        "maximum; tolerance 1e-12",
        relied_on=False,
        check=lambda mode: run(
            Search(
                _araujo_small,
                tolerance=1e-12,
                random=_small_random,
                n_random=(8, 100),
                strategy=st.tuples(st.integers(3, 5), st.integers(3, 5), st.integers(0, 10**6)).map(
                    lambda p: _small_random(np.random.default_rng(p[2]), 1).__next__()
                ),
                describe=lambda x: f"K = {describe(x[0])}, n_s = {x[1]}",
                key="ARAUJO-SMALL",
            ),
            mode,
        ),
        proof="Open: the secant product (proved) exceeds this factor when D/n_s > 1/2, so the "
        "Bernstein-Szegő argument does not cover it.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- G5-CELL
def _cell(instance) -> float:
    base, signs, dilation, offsets = instance
    kernel = (
        base
        * np.outer(
            (-1.0) ** (signs[0] * np.arange(base.shape[2])),
            (-1.0) ** (signs[1] * np.arange(base.shape[3])),
        )[None, None]
    )
    deg = degree(kernel, dilation)
    top = float(np.linalg.svd(base.sum(axis=(2, 3)), compute_uv=False)[0])
    if top == 0.0:
        raise Skip
    # maximisers: d w = pi * signs (mod 2 pi) per axis; the centre c = maximiser + offset
    star = np.array([math.pi * signs[0] / dilation[0], math.pi * signs[1] / dilation[1]])
    centre = star + offsets
    rho = deg[0] * abs(offsets[0]) + deg[1] * abs(offsets[1])
    if rho * rho >= 2.0:
        raise Skip
    value = float(
        np.linalg.svd(symbol(kernel, centre[None], dilation=dilation)[0], compute_uv=False)[0]
    )
    return value / (top * math.sqrt(1.0 - rho * rho / 2.0)) - 1.0


def _cell_random(rng: np.random.Generator, count: int):
    for _ in range(count):
        shape = (
            int(rng.integers(1, 4)),
            int(rng.integers(1, 4)),
            int(rng.integers(1, 5)),
            int(rng.integers(1, 5)),
        )
        base = np.abs(rng.standard_normal(shape))
        dil = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        deg = (dil[0] * (shape[2] - 1), dil[1] * (shape[3] - 1))
        budget = rng.uniform(0, math.sqrt(2.0))
        split = rng.uniform(0, 1)
        offsets = np.array([budget * split / max(deg[0], 1), budget * (1 - split) / max(deg[1], 1)])
        yield (
            base,
            tuple(int(v) for v in rng.integers(0, 2, size=2)),
            dil,
            offsets * rng.choice([-1.0, 1.0], size=2),
        )


register(
    Theorem(
        id="G5-CELL",
        title="Bernstein's cell inequality (the every-size route of certify)",
        statement="If w* maximises sigma_1(K^(w)) (value S), then for every w with rho = "
        "D_h |w_1 - w*_1| + D_w |w_2 - w*_2| < sqrt(2): sigma_1(K^(w)) >= S sqrt(1 - rho^2/2). "
        "(The earlier cell cap of certify(..., input_size=None); it now uses the tighter "
        "G5-COS.)",
        latex=r"\sigma_1(\hat K(\omega)) \ge S\sqrt{1 - \rho^2/2},\quad \rho = D_h|\omega_1 - "
        r"\omega^*_1| + D_w|\omega_2 - \omega^*_2|",
        source="derived in specbound (specbound.rigorous._routes.symbol_sup_route docstring); "
        "Bernstein's inequality for trigonometric polynomials",
        conditions="kernels with a known maximiser: non-negative taps (w* = 0, S = sigma_1(sum_a "
        "K_a) by Perron-Frobenius monotonicity) modulated by (-1)^a and/or (-1)^b (w* = pi), "
        "dilation 1..2; stride 1; tolerance 1e-12",
        relied_on=False,
        check=lambda mode: run(
            Search(
                _cell,
                tolerance=1e-12,
                random=_cell_random,
                n_random=(20, 300),
                strategy=st.integers(0, 2**31 - 1).map(
                    lambda s: next(_cell_random(np.random.default_rng(s), 1))
                ),
                describe=lambda x: (
                    f"|K| = {describe(x[0])}, signs {x[1]}, dilation {x[2]}, offset {x[3].tolist()}"
                ),
                key="G5-CELL",
            ),
            mode,
        ),
        proof="f(w) = |u^* K^(w) v|^2 (top pair at w*) is a real trigonometric polynomial of "
        "degree "
        "D_i per axis with max S^2 at w* and zero gradient there; along the segment to w its "
        "second "
        "derivative is at most (D_h |delta_1| + D_w |delta_2|)^2 S^2 (Bernstein), so "
        "sigma_1(K^(w))^2 >= f(w) >= S^2 (1 - rho^2/2).",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- G5-COS
def _cos_cell(factor):
    """``sigma_1(K^(c)) / (S factor(rho)) - 1`` on the instances of G5-CELL, ``rho < pi``."""

    def margin(instance) -> float:
        base, signs, dilation, offsets = instance
        kernel = (
            base
            * np.outer(
                (-1.0) ** (signs[0] * np.arange(base.shape[2])),
                (-1.0) ** (signs[1] * np.arange(base.shape[3])),
            )[None, None]
        )
        deg = degree(kernel, dilation)
        top = float(np.linalg.svd(base.sum(axis=(2, 3)), compute_uv=False)[0])
        if top == 0.0:
            raise Skip
        star = np.array([math.pi * signs[0] / dilation[0], math.pi * signs[1] / dilation[1]])
        rho = deg[0] * abs(offsets[0]) + deg[1] * abs(offsets[1])
        if rho >= math.pi:
            raise Skip
        value = float(
            np.linalg.svd(
                symbol(kernel, (star + offsets)[None], dilation=dilation)[0], compute_uv=False
            )[0]
        )
        return value / (top * factor(rho)) - 1.0

    return margin


def _cos_random(rng: np.random.Generator, count: int):
    for base, signs, dil, offsets in _cell_random(rng, count):
        deg = (dil[0] * (base.shape[2] - 1), dil[1] * (base.shape[3] - 1))
        rho = deg[0] * abs(offsets[0]) + deg[1] * abs(offsets[1])
        # stretch the offsets from rho < sqrt(2) to rho < pi
        stretch = rng.uniform(0, math.pi / math.sqrt(2.0)) if rho > 0 else 1.0
        yield base, signs, dil, offsets * stretch


def _cos_adversarial(mode):
    # [1, 1]: sigma_1 = 2 cos(w/2) exactly, the cap's equality case
    for t in (0.25, 1.0, 2.0, 3.0):
        yield np.ones((1, 1, 1, 2)), (0, 0), (1, 1), np.array([0.0, t])
        yield np.ones((2, 2, 2, 1)), (1, 0), (1, 1), np.array([-t, 0.0])


for _id, _factor, _relied, _expected, _title in (
    (
        "G5-COS",
        lambda rho: math.cos(rho / 2),
        True,
        "PASS",
        "The Bernstein-Szegő cell inequality (the every-size route of certify)",
    ),
    (
        "G5-COS-QUARTER",
        lambda rho: math.cos(rho / 4),
        False,
        "FAIL",
        "Planted: the cell inequality with cos(rho/4)",
    ),
):
    register(
        Theorem(
            id=_id,
            title=_title,
            statement="If w* maximises sigma_1(K^(w)) (value S), then for every w with rho = "
            "D_h |w_1 - w*_1| + D_w |w_2 - w*_2| < pi: sigma_1(K^(w)) >= S cos(rho/2). "
            "certify(..., input_size=None) caps each cell by its centre value divided by "
            "this factor (specbound.rigorous._routes.cell_shrink)"
            + ("" if _relied else "; planted with cos(rho/4) instead (false: it must FAIL)"),
            latex=r"\sigma_1(\hat K(\omega)) \ge S\cos(\rho/2),\quad \rho = D_h|\omega_1 - "
            r"\omega^*_1| + D_w|\omega_2 - \omega^*_2| < \pi",
            source="derived in specbound (docs/certify.md L8); the Bernstein-Szegő inequality "
            "for functions of exponential type (Duffin and Schaeffer, Trans. AMS 44, 1938)",
            conditions="the instances of G5-CELL with offsets stretched to rho < pi, and the "
            "kernel [1, 1] (equality); tolerance 1e-12",
            relied_on=_relied,
            expected=_expected,
            check=lambda mode, _factor=_factor, _id=_id: run(
                Search(
                    _cos_cell(_factor),
                    tolerance=1e-12,
                    random=_cos_random,
                    adversarial=_cos_adversarial,
                    n_random=(20, 300),
                    strategy=st.integers(0, 2**31 - 1).map(
                        lambda s: next(_cos_random(np.random.default_rng(s), 1))
                    ),
                    describe=lambda x: (
                        f"|K| = {describe(x[0])}, signs {x[1]}, dilation {x[2]}, "
                        f"offset {x[3].tolist()}"
                    ),
                    key=_id,
                ),
                mode,
            ),
            proof="f(w) = |u^* K^(w) v|^2 (top pair at w*) is a real trigonometric polynomial "
            "with 0 <= f <= S^2 and f(w*) = S^2. Along the segment w* + t delta (|delta| = 1), "
            "F = 2f/S^2 - 1 is real, bounded by 1 and of exponential type tau = D_h|delta_1| + "
            "D_w|delta_2|, so F'^2 + tau^2 F^2 <= tau^2 (Duffin-Schaeffer); with F = cos phi, "
            "phi(0) = 0, |phi'| <= tau, so F(t) >= cos(tau t) for tau t <= pi and "
            "sigma_1(K^(w))^2 >= f(w) >= S^2 (1 + cos rho)/2 = S^2 cos^2(rho/2). Equality for "
            "[1, 1]: sigma_1 = 2 cos(w/2).",
            family=FAMILY,
        )
    )
