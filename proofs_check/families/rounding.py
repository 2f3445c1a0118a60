"""The floating-point soundness argument of ``certify`` (specbound.rigorous), checked on the
library code against exact rational arithmetic (``fractions``) or 40-digit ``mpmath``.

Each statement is the contract a function of :mod:`specbound.rigorous` documents; the domain
conditions are those of the standard model of floating-point arithmetic (no underflow or
overflow), which ``certify`` establishes by scaling the kernel by a power of two first. The
``-RANGE`` entries show what happens outside that domain (informative).
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import mpmath
import numpy as np
import torch
from hypothesis import strategies as st

from specbound import ConvSpec, certify
from specbound.operators import ConvLayer
from specbound.operators.frequency import FrequencyEngine
from specbound.rigorous.gram import RigorousGram, matvec_norm_lower
from specbound.rigorous.rounding import down, frobenius_upper, gamma, up
from specbound.rigorous.symbol import PolyphaseSymbol
from specbound.rigorous.witness import operator_lower
from specbound.testing import (
    MATRIX_FAMILIES,
    adversarial_kernels,
    family_kernel,
    family_matrix,
    matrices,
)

from ..exact import (
    DPS,
    exact_apply,
    fraction_sq_norm,
    mp_layer_norm,
    mp_sigma_max,
    relative_margin,
    symbol_sup_upper,
)
from ..harness import Search, Skip, combine, describe, run
from ..registry import Mode, Theorem, register
from .common import describe_layer, random_spec

FAMILY = "Floating-point soundness (certify)"
SOURCE = (
    "derived in specbound (specbound.rigorous module docstrings); the error model is "
    "Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., §2.2, Lemma 3.1, "
    "§3.5"
)


def _fr(x: float) -> Fraction:
    return Fraction(float(x))


# --------------------------------------------------------------------------- FP-GAMMA
def _gamma(instance) -> float:
    x, y = instance
    n = x.shape[-1]
    computed = (torch.from_numpy(x)[None] @ torch.from_numpy(y)[None].T)[0, 0].item()
    batched = torch.from_numpy(x)[None, None] @ torch.from_numpy(y)[None, :, None]
    values = {computed, float(batched.reshape(-1)[0])}
    exact = sum((_fr(a) * _fr(b) for a, b in zip(x, y, strict=True)), Fraction(0))
    allowance = _fr(gamma(n)) * sum(
        (abs(_fr(a) * _fr(b)) for a, b in zip(x, y, strict=True)), Fraction(0)
    )
    worst = math.inf
    for value in values:
        err = abs(_fr(value) - exact)
        if allowance == 0:
            worst = min(worst, 0.0 if err == 0 else -math.inf)
        else:
            worst = min(worst, float(1 - err / allowance))
    return worst


def _gamma_random(rng: np.random.Generator, count: int):
    for _ in range(count):
        n = int(rng.choice([1, 2, 3, 16, 100, 1000, 4097]))
        x = rng.standard_normal(n) * 10.0 ** rng.uniform(-50, 50, n)
        yield x, rng.standard_normal(n) * 10.0 ** rng.uniform(-50, 50, n)


def _gamma_adversarial(mode: Mode):
    rng = np.random.default_rng(0)
    for n in (2, 10, 1000, 4097):
        x = rng.standard_normal(n)
        yield x, -x * (1 + 1e-15 * rng.standard_normal(n))  # heavy cancellation
        yield np.full(n, 1.0 / 3.0), np.full(n, 3.0)
        yield np.concatenate([[1e100], np.ones(n - 1)]), np.concatenate([[1e-100], np.ones(n - 1)])


register(
    Theorem(
        id="FP-GAMMA",
        title="Inner products obey the standard error model",
        statement="A float64 inner product of length n computed by torch's GEMM (as RigorousGram, "
        "matvec_norm_lower and operator_lower use it) satisfies |fl(x^T y) - x^T y| <= gamma_n "
        "|x|^T |y| with gamma_n = n u / (1 - n u), u = 2^-53.",
        latex=r"\big|\mathrm{fl}(x^\top y) - x^\top y\big| \le \gamma_n\,|x|^\top|y|,\quad "
        r"\gamma_n = \frac{nu}{1 - nu}",
        source=SOURCE,
        conditions="float64, no underflow or overflow of the products (|x_i y_i| in [1e-100, "
        "1e100] or 0), n up to 4097, matrix-vector and batched products; exact reference by "
        "fractions; margin 1 - error/allowance",
        relied_on=True,
        check=lambda mode: run(
            Search(
                _gamma,
                random=_gamma_random,
                adversarial=_gamma_adversarial,
                n_random=(6, 60),
                strategy=st.integers(1, 300).flatmap(
                    lambda n: st.tuples(
                        st.lists(st.floats(-1e6, 1e6), min_size=n, max_size=n).map(np.array),
                        st.lists(st.floats(-1e6, 1e6), min_size=n, max_size=n).map(np.array),
                    )
                ),
                n_hypothesis=(8, 200),
                key="FP-GAMMA",
                describe=lambda x: f"n = {x[0].size}, x = {describe(x[0])}, y = {describe(x[1])}",
            ),
            mode,
        ),
        proof="Each of the n - 1 additions and n multiplications is correctly rounded (relative "
        "error <= u); any summation order accumulates at most n factors (1 + delta) per term "
        "(Higham, Lemma 3.1). This check confirms the BLAS in use honours the model.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- FP-UPDOWN
def _updown(instance) -> float:
    values, ops_kinds = instance
    exact = _fr(values[0])
    computed = float(values[0])
    for v, kind in zip(values[1:], ops_kinds, strict=False):
        if kind == "+":
            exact, computed = exact + _fr(v), computed + float(v)
        elif kind == "*":
            exact, computed = exact * _fr(v), computed * float(v)
        else:
            exact, computed = exact / _fr(v), computed / float(v)
    ops = len(ops_kinds)
    hi, lo = up(computed, ops), down(computed, ops)
    return min(float(_fr(hi) / exact - 1), float(exact / _fr(lo) - 1) if lo > 0 else 0.0)


def _updown_random(rng: np.random.Generator, count: int):
    for _ in range(count):
        ops = int(rng.integers(1, 9))
        values = list(np.exp(rng.uniform(-20, 20, ops + 1)))
        yield values, [str(rng.choice(["+", "*", "/"])) for _ in range(ops)]


register(
    Theorem(
        id="FP-UPDOWN",
        title="Directed rounding by inflation",
        statement="For a positive quantity computed with at most `ops` correctly rounded "
        "operations (+, *, / of positive numbers), up(x, ops) >= exact >= down(x, ops).",
        latex=r"\mathrm{down}(\hat x, m) \le x \le \mathrm{up}(\hat x, m),\quad \mathrm{up}(\hat "
        r"x, m)"
        r" = \mathrm{next}\big(\hat x(1 + (m+1)u)\big)",
        source=SOURCE + "; specbound.rigorous.rounding.up / down",
        conditions="positive operands in [e^-20, e^20], chains of 1..8 operations; exact reference "
        "by fractions",
        relied_on=True,
        check=lambda mode: run(
            Search(
                _updown,
                random=_updown_random,
                n_random=(60, 2000),
                strategy=st.integers(1, 8).flatmap(
                    lambda m: st.tuples(
                        st.lists(st.floats(1e-8, 1e8), min_size=m + 1, max_size=m + 1),
                        st.lists(st.sampled_from(["+", "*", "/"]), min_size=m, max_size=m),
                    )
                ),
                n_hypothesis=(30, 500),
                key="FP-UPDOWN",
            ),
            mode,
        ),
        proof="Positive operands: each operation multiplies the relative error by at most (1 + u); "
        "(1 + u)^m <= 1 + (m + 1) u for m u small; one more rounding of the inflation is covered "
        "by nextafter.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- FP-FROB
FROB_LOW, FROB_HIGH = 2.0**-500, 2.0**500


def frob_search(domain: bool = True) -> Search:
    """``frobenius_upper(x) >= ||x||_F``; ``domain=False`` drops the no-underflow condition
    (the informative FP-FROB-RANGE)."""

    def margin(x: np.ndarray) -> float:
        t = torch.from_numpy(x)
        exact = fraction_sq_norm(
            np.concatenate([x.real.ravel(), x.imag.ravel()]) if np.iscomplexobj(x) else x.ravel()
        )
        scale = float(np.abs(x).max(initial=0.0))
        if domain and exact and not (FROB_LOW <= math.sqrt(float(exact)) and scale <= FROB_HIGH):
            raise Skip
        value = float(
            frobenius_upper(t.reshape(1, *x.shape[-2:]) if x.ndim >= 2 else t.reshape(1, 1, -1))[0]
        )
        if exact == 0:
            return 0.0 if value >= 0 else -1.0
        if math.isinf(value):
            return math.inf
        return float(_fr(value) ** 2 / exact - 1)

    def random(rng: np.random.Generator, count: int):
        for _ in range(count):
            shape = tuple(int(v) for v in rng.integers(1, 60, size=2))
            x = rng.standard_normal(shape) * 10.0 ** rng.uniform(-100, 100)
            if rng.random() < 0.5:
                x = x + 1j * rng.standard_normal(shape) * 10.0 ** rng.uniform(-100, 100)
            yield x

    def adversarial(mode: Mode):
        yield np.full((100, 100), 1.0 / 3.0)
        yield np.full((3, 3), 1e150)
        yield np.full((3, 3), 1e-150)
        yield np.array([[1.0, 1e-200, 1e-300, 5e-324]])
        yield np.zeros((2, 2))
        yield np.full((2, 2), 1e-170)  # outside the domain: squares underflow to 0
        yield np.array([[3e-160 + 4e-160j]])

    return Search(
        margin,
        random=random,
        adversarial=adversarial,
        strategy=matrices(20, 20),
        describe=describe,
        key="FP-FROB" if domain else "FP-FROB-RANGE",
    )


register(
    Theorem(
        id="FP-FROB",
        title="frobenius_upper is an upper bound on the Frobenius norm",
        statement="specbound.rigorous.rounding.frobenius_upper(x) >= ||x||_F (real or complex), "
        "including the rounding of the squares, the sum and the square root.",
        latex=r"\mathrm{frobenius\_upper}(x) \ge \|x\|_F",
        source=SOURCE,
        conditions="no underflow/overflow: x = 0, or 2^-500 <= ||x||_F and max |x_i| <= 2^500 "
        "(tiny entries whose squares underflow are allowed when the norm is large); matrices up to "
        "100 x 100; exact reference by fractions",
        relied_on=True,
        check=lambda mode: run(frob_search(True), mode),
        proof="The computed sum of n squares s^ satisfies s <= s^ / (1 - gamma_{n+2}) (the squares "
        "are rounded too); sqrt adds one rounding; a complex entry is two squares. Underflowed "
        "squares lose < n 2^-1074 in absolute terms, below the relative slack once s >= 2^-1000.",
        family=FAMILY,
    )
)

register(
    Theorem(
        id="FP-FROB-RANGE",
        title="frobenius_upper outside the standard model (underflow)",
        statement="frobenius_upper(x) >= ||x||_F for every finite float64 x, without the "
        "no-underflow condition.",
        latex=r"\forall x \in \mathbb F^{m\times n}:\ \mathrm{frobenius\_upper}(x) "
        r"\overset{?}{\ge} "
        r"\|x\|_F",
        source=SOURCE,
        conditions="none: frobenius_upper scales its argument by an exact power of two (largest "
        "entry in [1, 2)) before squaring",
        relied_on=True,
        check=lambda mode: run(frob_search(False), mode),
        proof="After the exact power-of-two scaling (capped at 2^1023) the largest entry is in "
        "[1, 2), or in [2^-51, 1) for an all-subnormal block; squares that underflow lose < "
        "2^-1074 each, and n 2^-1074 is added to the sum; a subnormal final division is rounded "
        "up. (Before this scaling was added, entries below ~1e-162 gave 0: found by this check; "
        "FP-SUBNORMAL covers all-subnormal blocks.)",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- FP-SYMBOL
def _mp_delta_norm(computed: np.ndarray, exact: mpmath.matrix) -> mpmath.mpf:
    """``||computed - exact||_2`` in mpmath (Frobenius first; the 2-norm when needed)."""
    rows, cols = computed.shape
    delta = mpmath.matrix(rows, cols)
    for i in range(rows):
        for j in range(cols):
            z = complex(computed[i, j])
            delta[i, j] = mpmath.mpc(z.real, z.imag) - exact[i, j]
    return delta


def _symbol_exact(sym: PolyphaseSymbol, g: int, *omega) -> mpmath.matrix:
    """The exact polyphase symbol matrix at ``omega`` (one mpf angle per axis, any number
    of axes) for group ``g``."""
    kernel = sym.kernel.numpy()
    _, p, c = kernel.shape[:3]
    strides = sym.strides
    per = math.prod(strides)
    m = mpmath.matrix(p, c * per)
    for tap in itertools.product(*(range(k) for k in kernel.shape[3:])):
        angle = mpmath.fsum(
            w * int(q[a]) for w, q, a in zip(omega, sym.positions, tap, strict=True)
        )
        phase = mpmath.expj(-angle)
        col = int(
            np.ravel_multi_index(
                tuple(int(r[a]) for r, a in zip(sym.phases, tap, strict=True)), strides
            )
        )
        for o in range(p):
            for ci in range(c):
                v = float(kernel[(g, o, ci, *tap)])
                if v:
                    m[o, ci * per + col] += v * phase
    return m


def _fro(delta: mpmath.matrix) -> mpmath.mpf:
    return mpmath.sqrt(
        mpmath.fsum(abs(delta[i, j]) ** 2 for i in range(delta.rows) for j in range(delta.cols))
    )


def _two_norm(delta: mpmath.matrix) -> mpmath.mpf:
    gram = delta.H * delta if delta.rows >= delta.cols else delta * delta.H
    return mpmath.sqrt(
        max(max(mpmath.re(e) for e in mpmath.eighe(gram, eigvals_only=True)), mpmath.mpf(0))
    )


def _symbol(instance) -> float:
    kernel, spec, omegas = instance
    layer = ConvLayer(kernel, spec)
    sym = PolyphaseSymbol.from_layer(layer)
    bound = sym.error_bound
    worst = math.inf
    with mpmath.workdps(DPS):
        checks = []
        m = [n // s for n, s in zip(layer.input_size, layer.spec.stride, strict=True)]
        rows = np.arange(m[0])[:3]
        grid = sym.on_grid(layer.input_size, rows).numpy()  # (g, r, *rest, p, q)
        for gi in range(grid.shape[0]):
            for ri, u in enumerate(rows):
                for rest in np.ndindex(*grid.shape[2:-2]):
                    omega = [
                        2 * mpmath.pi * int(v) / mi for v, mi in zip((u, *rest), m, strict=True)
                    ]
                    checks.append((grid[(gi, ri, *rest)], gi, omega))
        pts = sym.at_points(torch.from_numpy(omegas)).numpy()  # (g, F, p, q)
        for gi in range(pts.shape[0]):
            for f, point in enumerate(omegas):
                checks.append((pts[gi, f], gi, [mpmath.mpf(float(o)) for o in point]))
        for computed, gi, omega in checks:
            delta = _mp_delta_norm(computed, _symbol_exact(sym, gi, *omega))
            err = _fro(delta)
            if err > bound:
                err = _two_norm(delta)
            worst = min(worst, relative_margin(bound, err) if err > 0 else math.inf)
    return worst


def _symbol_random(rng: np.random.Generator, count: int):
    for _ in range(count):
        shape, spec = random_spec(
            rng, circulant=True, max_size=9, max_stride=3, max_dilation=4, max_kernel=4
        )
        kernel = family_kernel(
            str(rng.choice(["gaussian", "integer", "rank_one", "sparse"])),
            shape,
            int(rng.integers(2**31)),
        )
        kernel = kernel * 2.0 ** int(rng.integers(-300, 300))
        yield kernel, spec, rng.uniform(-2 * np.pi, 2 * np.pi, size=(2, 2))


def _symbol_adversarial(mode: Mode):
    rng = np.random.default_rng(3)
    for family in ("gaussian", "vanishing_frequency", "constant", "tiny", "huge", "checkerboard"):
        kernel = family_kernel(family, (2, 2, 3, 3), 1)
        yield (
            kernel,
            ConvSpec("circular", "same", (7, 7), dilation=(5, 3)),
            rng.uniform(-2 * np.pi, 2 * np.pi, size=(2, 2)),
        )
        yield (
            kernel,
            ConvSpec("circular", "same", (6, 9), stride=(2, 3)),
            np.array([[2 * np.pi, -2 * np.pi], [np.pi, 1e-300]]),
        )
    # three axes (docs/certify.md L14): the same bound over the 3-D engine
    for family in ("gaussian", "checkerboard", "huge"):
        kernel = family_kernel(family, (2, 2, 3, 6), 2).reshape(2, 2, 3, 2, 3)
        yield (
            kernel,
            ConvSpec("circular", "same", (4, 3, 4), stride=(2, 1, 2), dilation=(1, 2, 1)),
            rng.uniform(-2 * np.pi, 2 * np.pi, size=(2, 3)),
        )
        yield (
            kernel[:, :1],
            ConvSpec("circular", "same", (3, 2, 6), stride=(1, 2, 3), groups=2),
            np.array([[2 * np.pi, -2 * np.pi, np.pi], [np.pi, 1e-300, -1.0]]),
        )


register(
    Theorem(
        id="FP-SYMBOL",
        title="Polyphase symbol matrices carry a rigorous error bound",
        statement="PolyphaseSymbol.from_layer(layer).error_bound >= ||M~(w) - M(w)||_2 for every "
        "matrix it evaluates, on the DFT grid (on_grid) and at scattered points (at_points), where "
        "M(w) is the exact polyphase symbol of the stored kernel at the exact frequency.",
        latex=r"\|\tilde M(\omega) - M(\omega)\|_2 \le \eta\,\|A_{|K|}\|_F = "
        r"\mathrm{error\_bound}",
        source=SOURCE + "; specbound.rigorous.symbol over specbound.operators.frequency (eta: "
        "one-stage real DFT, libm cos/sin within LIBM_ULPS = 8 ulp)",
        conditions="kernels with max |K| in [2^-300, 2^302] (certify scales into [1, 2)); stride "
        "up "
        "to 3, dilation up to 5, groups; grid frequencies 2 pi (u/m_1, v/m_2) exact, points exact "
        "float64 values in [-2 pi, 2 pi]; reference in 40-digit mpmath",
        relied_on=True,
        check=lambda mode: run(
            Search(
                _symbol,
                random=_symbol_random,
                adversarial=_symbol_adversarial,
                n_random=(3, 40),
                n_hypothesis=(0, 0),
                key="FP-SYMBOL",
                describe=lambda x: f"{describe_layer((x[0], x[1]))}; omega = {x[2].tolist()}",
            ),
            mode,
        ),
        proof="Each entry is a sum of <= kh kw products K e^{-i theta} (the frequency engine): the "
        "phases carry the angle and libm errors and one complex product, the real inner products "
        "gamma_{kh kw}; entrywise |M~ - M| <= eta sum |K| (FP-ENGINE) gives the Frobenius (hence "
        "spectral) bound.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- FP-ENGINE
def _engine_exact(engine: FrequencyEngine, omega, grid: bool) -> list[mpmath.matrix]:
    """Exact matrices per group at the mpf frequency ``omega`` (one per axis): the sum over
    the taps of ``K e^{-i omega . q}``, ``q`` wrapped modulo ``m`` on the grid."""
    kernel = engine.kernel.numpy()
    p, q_cols = engine.shape
    c_in_g, s = kernel.shape[1], engine.stride
    n_phase = math.prod(s)
    out = [mpmath.matrix(p, q_cols) for _ in range(engine.groups)]
    for taps in np.ndindex(*engine.k):
        angle = mpmath.mpf(0)
        col = 0
        for ax, a in enumerate(taps):
            q = int(engine.positions[ax][a])
            if grid:
                q %= engine.grid[ax]
            angle += omega[ax] * q
            col = col * s[ax] + int(engine.phases[ax][a])
        phase = mpmath.expj(-angle)
        for o in range(kernel.shape[0]):
            g, row = divmod(o, p)
            for c in range(c_in_g):
                v = float(kernel[(o, c, *taps)])
                if v:
                    out[g][row, c * n_phase + col] += v * phase
    return out


def engine_search(bound=None, key: str = "FP-ENGINE") -> Search:
    """Entrywise ``|M~ - M| <= bound`` for the engine's grid and point matrices; ``bound(engine,
    computed)`` replaces ``engine.entry_bound()`` (for the planted variant)."""

    def margin(instance) -> float:
        kernel, geometry, omegas = instance
        engine = FrequencyEngine(torch.from_numpy(kernel), **geometry)
        worst = math.inf
        with mpmath.workdps(DPS):
            index = np.arange(min(engine.n_frequencies(half=False), 12))
            freqs = engine.frequencies(index, half=False)
            cases = [
                (
                    m,
                    [2 * mpmath.pi * int(u[ax]) / engine.grid[ax] for ax in range(engine.ndim)],
                    True,
                )
                for m, u in zip(engine.on_grid(index, half=False).numpy(), freqs, strict=True)
            ]
            pts = engine.at_points(omegas).numpy()
            cases += [
                (m, [mpmath.mpf(float(w)) for w in om], False)
                for m, om in zip(pts, omegas, strict=True)
            ]
            for computed, omega, grid in cases:
                limit = engine.entry_bound().numpy() if bound is None else bound(engine, computed)
                for g, exact in enumerate(_engine_exact(engine, omega, grid)):
                    for i in range(exact.rows):
                        for j in range(exact.cols):
                            z = complex(computed[g, i, j])
                            err = abs(mpmath.mpc(z.real, z.imag) - exact[i, j])
                            if err > 0:
                                worst = min(worst, relative_margin(float(limit[g, i, j]), err))
        if worst == math.inf:
            raise Skip
        return worst

    def random(rng: np.random.Generator, count: int):
        for _ in range(count):
            d = int(rng.integers(1, 4))
            stride = tuple(int(v) for v in rng.integers(1, 3, d))
            dilation = tuple(int(v) for v in rng.integers(1, 4, d))
            k = tuple(int(v) for v in rng.integers(1, 5 if d < 3 else 3, d))
            size = tuple(s * int(rng.integers(1, 5)) for s in stride)
            lo = tuple(
                int(rng.integers(0, dd * (kk - 1) + 2)) for dd, kk in zip(dilation, k, strict=True)
            )
            groups = int(rng.integers(1, 3))
            shape = (groups * int(rng.integers(1, 3)), int(rng.integers(1, 3)), *k)
            kernel = (
                rng.standard_normal(shape) if rng.random() < 0.5 else rng.integers(-3, 4, shape)
            )
            kernel = np.asarray(kernel, dtype=np.float64) * 2.0 ** int(rng.integers(-300, 300))
            geometry = {"size": size, "lo": lo, "stride": stride, "dilation": dilation}
            geometry["groups"] = groups
            yield kernel, geometry, rng.uniform(-2 * np.pi, 2 * np.pi, size=(2, d))

    def adversarial(mode: Mode):
        # taps whose phases cancel exactly: 1 + e^{-2 pi i/3} + e^{-4 pi i/3} = 0 at u = 1
        yield np.ones((1, 1, 3)), {"size": 3}, np.array([[2 * np.pi / 3], [-2 * np.pi]])
        yield np.ones((1, 1, 3, 3)), {"size": (3, 6), "lo": 1}, np.array([[np.pi, 1e-300]] * 2)
        wide = np.arange(1.0, 9.0).reshape(2, 1, 2, 2, 1)
        yield wide, {"size": (2, 4, 3), "stride": (2, 1, 1), "groups": 2}, np.zeros((1, 3))

    return Search(
        margin,
        random=random,
        adversarial=adversarial,
        n_random=(3, 40),
        n_hypothesis=(0, 0),
        key=key,
        describe=lambda x: f"kernel {x[0].shape}, {x[1]}, omega = {x[2].tolist()}",
    )


def relative_entry_bound(engine: FrequencyEngine, computed: np.ndarray) -> np.ndarray:
    """Planted false criterion: each entry is accurate to 4 ulps of its own value."""
    return 4 * 2.0**-53 * np.abs(computed)


register(
    Theorem(
        id="FP-ENGINE",
        title="The frequency engine's entrywise error bound",
        statement="FrequencyEngine(K, ...).entry_bound() >= |M~(w) - M(w)| entry by entry for "
        "every matrix on_grid and at_points evaluate, d = 1, 2, 3 axes, any stride, dilation, low "
        "pad and groups, M the exact polyphase matrix of the stored kernel at the exact frequency.",
        latex=r"|\tilde M_{o,(c,r)} - M_{o,(c,r)}| \le \eta \sum_{t:\,r_t=r} |K_{o,c,t}|",
        source=SOURCE + "; specbound.operators.frequency (docs/certify.md, lemma L2)",
        conditions="float64 kernels with max |K| in [2^-300, 2^302]; grid frequencies exact, "
        "points exact float64 values in [-2 pi, 2 pi]; reference in 40-digit mpmath",
        relied_on=True,
        check=lambda mode: run(engine_search(), mode),
        proof="Per axis the computed phase is within e_phi of e^{-i theta}; the product of d "
        "phases within (1 + e_phi)^d (1 + sqrt2 gamma_2)^(d-1) - 1; the two real inner products "
        "over the taps add sqrt2 gamma_T (1 + e_prod) relative to sum |K|; taps merged on the grid "
        "share their computed phase, another order of the same inner product.",
        family=FAMILY,
    )
)

register(
    Theorem(
        id="FP-ENGINE-RELATIVE",
        title="Planted: frequency matrix entries accurate to a few ulps of themselves",
        statement="False variant of FP-ENGINE: |M~ - M| <= 4 u |M~| entrywise. Taps whose "
        "phases cancel leave rounding noise where the exact entry is 0.",
        latex=r"|\tilde M - M| \overset{?}{\le} 4u|\tilde M|",
        source=SOURCE,
        conditions="as FP-ENGINE",
        relied_on=False,
        expected="FAIL",
        check=lambda mode: run(engine_search(relative_entry_bound, "FP-ENGINE-RELATIVE"), mode),
        proof="Not as stated: 1 + e^{-2 pi i/3} + e^{-4 pi i/3} is 0 exactly but not in float64.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- FP-GRAM
def gram_search(domain: bool = True) -> Search:
    """``RigorousGram(x).bound() >= sigma_1(x)`` after 0..10 steps; ``domain=False`` allows
    ||x||_F outside [2^-400, 2^400] (the informative FP-GRAM-RANGE)."""

    def margin(x: np.ndarray) -> float:
        top = float(np.abs(x).max(initial=0.0))
        fro = top * float(np.linalg.norm(x / top)) if top > 0 else 0.0  # no underflow
        if domain and fro and not 2.0**-400 <= fro <= 2.0**400:
            raise Skip
        exact = mp_sigma_max(x)
        gram = RigorousGram(torch.from_numpy(x)[None])
        worst = math.inf
        for step in range(11):
            if step:
                gram.step()
            b = float(gram.bound()[0])
            if math.isnan(b):
                return -math.inf
            if exact:
                worst = min(worst, relative_margin(b, exact))
            elif b < 0:
                worst = -1.0
        return worst

    def random(rng: np.random.Generator, count: int):
        for _ in range(count):
            family = str(rng.choice(MATRIX_FAMILIES))
            x = family_matrix(
                family, tuple(int(v) for v in rng.integers(1, 7, size=2)), int(rng.integers(2**31))
            )
            if family not in ("tiny", "huge"):
                x = x * 2.0 ** int(rng.integers(-300, 300))
            if rng.random() < 0.4:
                x = x + 1j * family_matrix("gaussian", x.shape, int(rng.integers(2**31))) * float(
                    np.abs(x).max(initial=1.0)
                )
            yield x

    def adversarial(mode: Mode):
        for family in MATRIX_FAMILIES:
            for shape in ((1, 1), (1, 5), (5, 1), (4, 4), (6, 3)):
                yield family_matrix(family, shape, 5)
        yield np.eye(6) * (1.0 + 2.0**-52)
        yield np.outer(np.ones(6), np.ones(4)) / 3.0
        yield np.full((3, 3), 1e-170)  # outside the domain
        yield np.full((3, 3), 1e160)  # outside the domain

    return Search(
        margin,
        random=random,
        adversarial=adversarial,
        strategy=matrices(6, 6),
        n_random=(6, 80),
        n_hypothesis=(6, 200),
        describe=describe,
        key="FP-GRAM" if domain else "FP-GRAM-RANGE",
    )


register(
    Theorem(
        id="FP-GRAM",
        title="The rigorous Gram iteration bounds sigma_1 including rounding",
        statement="For float64 or complex128 x, after any number of steps, "
        "RigorousGram(x).bound() >= sigma_1(x) in exact arithmetic (x taken as stored).",
        latex=r"\sqrt{\cdots\sqrt{\sqrt{\|G_T\|_F + e_{T-1}}/s_{T-1} + e_{T-2}}\cdots}/s_0 \ge "
        r"\sigma_1(x)",
        source=SOURCE + "; specbound.rigorous.gram (Weyl's inequality per step)",
        conditions="2^-400 <= ||x||_F <= 2^400 (no underflow/overflow; certify's prescaling keeps "
        "every matrix there, and its additive error terms cover matrices that vanish in float64); "
        "0..10 steps, real and complex, rank one (tight), orthogonal (all sigma equal), graded; "
        "reference: 40-digit mpmath",
        relied_on=True,
        check=lambda mode: run(gram_search(True), mode),
        proof="s_t is an exact power of two; G_{t+1} = fl(H_t^* H_t) = H_t^* H_t + E_t with "
        "||E_t||_2 <= sqrt(2) gamma_{2m} ||H_t||_F^2 = e_t (FP-GAMMA); Weyl: sigma_1(H_t)^2 <= "
        "sigma_1(G_{t+1}) + e_t; start from sigma_1(G_T) <= ||G_T||_F (FP-FROB) and unwind with "
        "upward rounding.",
        family=FAMILY,
    )
)

register(
    Theorem(
        id="FP-GRAM-RANGE",
        title="The rigorous Gram iteration outside the standard model (under/overflow)",
        statement="RigorousGram(x).bound() >= sigma_1(x) for every finite float64 x, without the "
        "range condition.",
        latex=r"\forall x:\ \mathrm{RigorousGram}(x).\mathrm{bound}() \overset{?}{\ge} \sigma_1(x)",
        source=SOURCE,
        conditions="none: each step's power-of-two scale is taken from the largest entry, which "
        "cannot under- or overflow",
        relied_on=True,
        check=lambda mode: run(gram_search(False), mode),
        proof="The scale comes from max|entry| (exact power of two), so H_t has largest entry in "
        "[1, 2) at every step and L3 applies. (Before this fix the scale came from torch's "
        "Frobenius norm, which under/overflowed beyond ~1e-154/1e154: found by this check.)",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- FP-MATVEC
def _matvec(instance) -> float:
    m, v, rel_err = instance
    err = rel_err * float(np.linalg.norm(m)) if m.size else 0.0
    lower = float(matvec_norm_lower(torch.from_numpy(m)[None], torch.from_numpy(v)[None], err)[0])
    with mpmath.workdps(DPS):
        mm = mpmath.matrix(
            [[mpmath.mpc(complex(z).real, complex(z).imag) for z in row] for row in m]
        )
        vv = mpmath.matrix([mpmath.mpc(complex(z).real, complex(z).imag) for z in v])
        y = mm * vv
        ny = mpmath.sqrt(mpmath.fsum(abs(t) ** 2 for t in y))
        nv = mpmath.sqrt(mpmath.fsum(abs(t) ** 2 for t in vv))
        if nv == 0:
            return math.inf if lower == 0.0 else -1.0
        # the worst admissible M = m + E, ||E|| <= err: E = -err y v^*/(|y||v|)
        truth = max(ny - mpmath.mpf(err) * nv, mpmath.mpf(0)) / nv
        if lower == 0.0:
            return math.inf  # a valid (trivial) lower bound
        return relative_margin(truth, lower)


def _matvec_random(rng: np.random.Generator, count: int):
    for _ in range(count):
        p, q = (int(v) for v in rng.integers(1, 7, size=2))
        m = rng.standard_normal((p, q)) + 1j * rng.standard_normal((p, q))
        m = m * 2.0 ** int(rng.integers(-200, 200))
        if rng.random() < 0.5:  # a top singular vector: the tight direction
            v = np.linalg.svd(m)[2][0].conj()
        else:
            v = rng.standard_normal(q) + 1j * rng.standard_normal(q)
        yield m, v * 2.0 ** int(rng.integers(-100, 100)), float(rng.choice([0.0, 1e-14, 0.3]))


register(
    Theorem(
        id="FP-MATVEC",
        title="Rigorous lower bound ||M v|| / ||v|| from a floating-point product",
        statement="matvec_norm_lower(m, v, e) <= ||M v|| / ||v|| for every exact matrix M with "
        "||M - m||_2 <= e.",
        latex=r"\mathrm{matvec\_norm\_lower}(m, v, e) \le \min_{\|M - m\|_2 \le e}"
        r"\frac{\|Mv\|}{\|v\|} = \frac{\max(\|mv\| - e\|v\|, 0)}{\|v\|}",
        source=SOURCE + "; specbound.rigorous.gram.matvec_norm_lower",
        conditions="complex m up to 6 x 6 scaled by 2^-200..2^200, v random or a top singular "
        "vector (tight), e in {0, 1e-14 ||m||_F, 0.3 ||m||_F}; reference: 40-digit mpmath with the "
        "worst admissible M",
        relied_on=True,
        check=lambda mode: run(
            Search(
                _matvec,
                random=_matvec_random,
                n_random=(10, 200),
                key="FP-MATVEC",
                describe=lambda x: (
                    f"m = {describe(x[0])}, v = {describe(x[1])}, e = {x[2]} ||m||_F"
                ),
            ),
            mode,
        ),
        proof="|fl(m v) - m v| <= sqrt(2) gamma_{2q} |m||v| (FP-GAMMA on the real GEMMs), so "
        "||M v|| >= ||fl(m v)|| - sqrt(2) gamma_{2q} ||m||_F ||v|| - e ||v||, every norm rounded "
        "in the safe direction.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- FP-OPLOWER
NORMAL_RANGE = (2.0**-400, 2.0**400)


def oplower_search(domain: bool = True) -> Search:
    """``operator_lower(layer, x) <= ||A x|| / ||x||``; ``domain=False`` drops the condition
    that the products ``|K| * |x|`` stay in the normal range (FP-OPLOWER-RANGE)."""

    def margin(instance) -> float:
        kernel, spec, x = instance
        if domain:
            z = exact_apply(np.abs(kernel), spec, np.abs(x))
            low, high = _fr(NORMAL_RANGE[0]), _fr(NORMAL_RANGE[1])
            top = max(z, default=Fraction(0))
            size = fraction_sq_norm(np.asarray(x, dtype=np.float64).ravel())
            if (top and not low <= top <= high) or (size and not low**2 <= size <= high**2):
                raise Skip
        return _oplower(instance)

    def adversarial(mode: Mode):
        if domain:
            return
        rng = np.random.default_rng(9)
        spec = ConvSpec("replicate", "same", (3, 4), stride=(2, 1))
        for e in range(20, 41, 4):  # products |K| |x| near 1e-157: squares are subnormal
            yield (
                family_kernel("tiny", (2, 2, 3, 3), 1),
                spec,
                rng.standard_normal((2, 3, 4)) * 2.0**-e,
            )

    return Search(
        margin,
        random=_oplower_random if domain else _oplower_range_random,
        adversarial=adversarial,
        n_random=(8, 100),
        describe=lambda x: f"{describe_layer((x[0], x[1]))}; x = {describe(x[2])}",
        key="FP-OPLOWER" if domain else "FP-OPLOWER-RANGE",
    )


def _oplower(instance) -> float:
    kernel, spec, x = instance
    layer = ConvLayer(kernel, spec)
    lower = operator_lower(layer, x)
    if lower == 0.0:
        return math.inf  # a valid (trivial) lower bound
    ax = fraction_sq_norm(exact_apply(kernel, spec, x))
    xx = fraction_sq_norm(np.asarray(x, dtype=np.float64).ravel())
    ratio = ax / (_fr(lower) ** 2 * xx)  # >= 1 iff the lower bound holds
    return math.sqrt(float(ratio)) - 1.0


def _oplower_random(rng: np.random.Generator, count: int):
    from specbound.operators import conv_matrix

    for _ in range(count):
        shape, spec = random_spec(rng, max_channels=2, max_kernel=3, max_size=5)
        kernel = family_kernel(
            str(rng.choice(["gaussian", "integer", "tiny", "huge", "nonnegative"])),
            shape,
            int(rng.integers(2**31)),
        )
        size = (shape[1] * spec.groups, *spec.input_size)
        if rng.random() < 0.5:
            a = conv_matrix(kernel, spec)
            x = np.linalg.svd(a)[2][0].reshape(size) if a.size else np.ones(size)
        else:
            x = rng.standard_normal(size)
        centre = -math.frexp(max(float(np.abs(kernel).max()), 1e-300))[1]  # |K| |x| ~ 1
        e = max(-350, min(350, centre + int(rng.integers(-60, 60))))
        yield kernel, spec, x * 2.0**e


def _oplower_range_random(rng: np.random.Generator, count: int):
    for kernel, spec, x in _oplower_random(rng, count):
        yield (
            kernel * 1e-150 / max(float(np.abs(kernel).max()), 1e-300),
            spec,
            x * 2.0 ** -int(rng.integers(10, 60)),
        )


register(
    Theorem(
        id="FP-OPLOWER",
        title="Rigorous lower bound on ||A x|| / ||x|| from one float64 convolution",
        statement="operator_lower(layer, x) <= ||A x|| / ||x|| for the exact operator A of the "
        "layer (every padding mode, stride, dilation, groups).",
        latex=r"\mathrm{operator\_lower}(A, x) \le \|Ax\|_2/\|x\|_2",
        source=SOURCE + "; specbound.rigorous.witness.operator_lower (im2col + GEMM, cuDNN/oneDNN "
        "off)",
        conditions="small layers of every mode, x random or the top singular vector (tight), "
        "scaled so that |K| |x| ~ 2^-60..2^60, as long as max (|K| * |x|) and ||x|| stay in "
        "[2^-400, 2^400] (no underflow; certify calls it with max |K| in [1, 2) and a unit x); "
        "exact reference by fractions",
        relied_on=True,
        check=lambda mode: run(oplower_search(True), mode),
        proof="|fl(A x) - A x| <= gamma_T |K| * |x| entrywise (T = c_in/g kh kw, FP-GAMMA); the "
        "norm of |K| * |x| is computed upward, ||fl(Ax)|| downward, ||x|| upward.",
        family=FAMILY,
    )
)


register(
    Theorem(
        id="FP-OPLOWER-RANGE",
        title="operator_lower outside the standard model (underflow)",
        statement="operator_lower(layer, x) <= ||A x|| / ||x|| also when the products |K| |x| are "
        "subnormal.",
        latex=r"\mathrm{operator\_lower}(A, x) \overset{?}{\le} \|Ax\|_2/\|x\|_2\ \text{(any "
        r"scale)}",
        source=SOURCE,
        conditions="none: kernels at 1e-150 with inputs at 2^-10..2^-60, where the squares of the "
        "outputs are subnormal (likewise inputs whose own squares underflow)",
        relied_on=True,
        check=lambda mode: run(oplower_search(False), mode),
        proof="Under gradual underflow each square and product that underflows adds at most "
        "2^-1075, which operator_lower subtracts explicitly (2^-1074 per term), and a result "
        "that may be subnormal is moved 4 ulps down. (Before issue 12 these allowances were "
        "missing and this check found violations: subnormal squares lose relative accuracy.)",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- FP-CERTIFY
def _mp_symbol_sigma(kernel: np.ndarray, omega: np.ndarray, dilation, groups: int):
    """sigma_1 of the exact symbol at the float64 point ``omega`` (mpmath): a value <= S."""
    lay = ConvLayer(kernel, ConvSpec(groups=groups, dilation=dilation))
    taps = lay.dense_channel_taps()
    dh, dw = lay.spec.dilation
    with mpmath.workdps(DPS):
        m = mpmath.matrix(taps.shape[0], taps.shape[1])
        for a in range(taps.shape[2]):
            for b in range(taps.shape[3]):
                phase = mpmath.expj(
                    -(mpmath.mpf(float(omega[0])) * dh * a + mpmath.mpf(float(omega[1])) * dw * b)
                )
                for o in range(taps.shape[0]):
                    for c in range(taps.shape[1]):
                        if taps[o, c, a, b]:
                            m[o, c] += float(taps[o, c, a, b]) * phase
        return _two_norm(m)


def _argmax_symbol(kernel: np.ndarray, dilation, groups: int) -> np.ndarray:
    from specbound.operators import symbol

    n = 48
    u = 2 * np.pi * np.arange(n) / n
    omega = np.stack(np.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    values = np.linalg.svd(
        symbol(kernel, omega, dilation=dilation, groups=groups), compute_uv=False
    )[..., 0]
    return omega[int(np.argmax(values))]


def _certify(instance) -> float:
    kernel, spec = instance
    cert = certify(
        kernel,
        spec.padding,
        input_size=spec.input_size,
        pad=spec.pad,
        stride=spec.stride,
        dilation=spec.dilation,
        groups=spec.groups,
        rtol=1e-6,
        max_seconds=20,
    )
    if not cert.lower <= cert.upper:
        return -1.0
    if spec.input_size is not None:
        exact = mp_layer_norm(kernel, spec, max_dim=32)
        if exact == 0:
            return math.inf if cert.lower == 0.0 else -1.0
        worst = relative_margin(cert.upper, exact)
        if cert.lower > 0:
            worst = min(worst, relative_margin(exact, cert.lower))
        try:
            cert.verify()
        except AssertionError:
            return -1.0
        return worst
    # every input size: the upper end must reach every lower estimate of the every-size norm
    # (exact norms at small sizes, any stride; sigma_1 of the exact symbol at a point, stride
    # 1), and the lower end must stay below an upper estimate of S (G5), which bounds every
    # zero-padded layer and every circular layer with total pad <= d(k-1) at any stride
    lows = []
    (eh, ew) = ConvLayer(kernel, spec).extent
    for j in (0, 1, 2):
        sized = spec.replace(input_size=(eh + j, ew + j))
        try:
            lows.append(mp_layer_norm(kernel, sized, max_dim=32))
        except (Skip, ValueError):
            continue
    if spec.stride == (1, 1):
        point = _argmax_symbol(kernel, spec.dilation, spec.groups)
        lows.append(_mp_symbol_sigma(kernel, point, spec.dilation, spec.groups))
    if not lows:
        raise Skip
    low = max(lows)
    if low == 0:
        return math.inf if cert.lower == 0.0 else -1.0
    worst = relative_margin(cert.upper, low)
    if cert.lower > 0:
        worst = min(
            worst, relative_margin(symbol_sup_upper(kernel, spec.dilation, spec.groups), cert.lower)
        )
    return worst


CERT_SPECS = (
    ((1, 1, 3, 3), ConvSpec("zeros", "same", (3, 3))),
    ((2, 1, 3, 3), ConvSpec("zeros", "full", (3, 2))),
    ((2, 2, 2, 3), ConvSpec("circular", "same", (5, 4))),
    ((2, 2, 3, 3), ConvSpec("circular", "same", (6, 6), stride=2)),
    ((1, 2, 3, 3), ConvSpec("reflect", "same", (3, 3))),
    ((2, 1, 3, 3), ConvSpec("replicate", (0, 2, 1, 1), (3, 3))),
    ((2, 2, 3, 3), ConvSpec("zeros", "same", None)),
    ((1, 1, 3, 3), ConvSpec("circular", "same", None)),
)
CERT_FAMILIES = (
    "gaussian",
    "rank_one",
    "nonnegative",
    "tiny",
    "huge",
    "zero",
    "constant",
    "orthogonal_center",
    "single_tap",
    "vanishing_frequency",
    "checkerboard",
)


def _certify_random(rng: np.random.Generator, count: int):
    for _ in range(count):
        size = rng.random() < 0.8
        shape, spec = random_spec(
            rng,
            ("zeros", "circular", "reflect", "replicate") if size else ("zeros",),
            max_channels=2,
            max_kernel=3,
            max_size=4,
            size=size,
        )
        yield family_kernel(str(rng.choice(CERT_FAMILIES)), shape, int(rng.integers(2**31))), spec


def _certify_adversarial(mode: Mode):
    from .common import suite

    yield from suite(CERT_SPECS, mode, CERT_FAMILIES)


def _certify_check(mode: Mode):
    main = run(
        Search(
            _certify,
            random=_certify_random,
            adversarial=_certify_adversarial,
            n_random=(3, 40),
            n_hypothesis=(0, 0),
            describe=describe_layer,
            key="FP-CERTIFY",
        ),
        mode,
    )
    tight = run(
        Search(
            _certify,
            strategy=st.tuples(st.integers(1, 4), st.integers(1, 4)).flatmap(
                lambda k: st.tuples(
                    adversarial_kernels((1, 1, *k), ("nonnegative", "constant", "single_tap")),
                    st.just(ConvSpec("circular", "same", (5, 5))),
                )
            ),
            n_hypothesis=(2, 60),
            describe=describe_layer,
            key="FP-CERTIFY-tight",
        ),
        mode,
    )
    return combine([main, tight])


register(
    Theorem(
        id="FP-CERTIFY",
        title="certify's bracket contains the exact norm",
        statement="certify(kernel, ...) returns lower <= ||A||_2 <= upper for the operator defined "
        "by the kernel's float64 values exactly as given, rounding included; its witness reaches "
        "the lower end; for input_size=None the bracket contains S(K).",
        latex=r"\mathrm{lower} \le \|A\|_2 \le \mathrm{upper}",
        source=SOURCE + "; specbound.certify",
        conditions="every route: circulant (exact per frequency), dense (zeros/reflect/replicate "
        "at "
        "a given size), every size (symbol cells); adversarial kernels: tight (single-channel "
        "non-negative, single tap, constant, orthogonal centre, rank one), zero, vanishing "
        "frequency, 1e-150 and 1e150 scales; rtol 1e-6; reference: 40-digit mpmath (given sizes); "
        "every size: exact norms at sizes e..e+2 (e the dilated extent) and (stride 1) sigma_1 of "
        "the exact symbol at the "
        "grid maximiser below the upper end, the G5 upper estimate of S above the lower end",
        relied_on=True,
        check=_certify_check,
        proof="Composition of FP-SYMBOL, FP-GRAM, FP-MATVEC, FP-OPLOWER and the exact identities "
        "(C4, ST-POLY, G1, G5-CELL); the kernel is first scaled by an exact power of two.",
        family=FAMILY,
    )
)

__all__ = ["frob_search", "gram_search"]
