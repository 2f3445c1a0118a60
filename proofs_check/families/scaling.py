"""The assumptions ``certify`` makes about scaling and range, checked on the library code
(issue 12): outward scale-back by ``2^-j`` (subnormal results), rigorous building blocks on
blocks whose entries are all subnormal or of mixed scale (gradual underflow), and the
submatrix property behind L8 (the pad range where the symbol supremum bounds every size).
Each has a planted false variant that must FAIL.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch
from hypothesis import strategies as st

from specbound import ConvSpec, certify
from specbound.operators import ConvLayer, conv_matrix, symbol
from specbound.rigorous._routes import channel_blocks, support_layer
from specbound.rigorous.gram import RigorousGram
from specbound.rigorous.rounding import frobenius_upper, scale_back_outward

from ..exact import fraction_sq_norm, mp_sigma_max
from ..harness import Search, Skip, combine, describe, run
from ..registry import Mode, Theorem, register

FAMILY = "Scaling and range (certify)"
SOURCE = "derived in specbound (docs/certify.md, section 1 and L8; issue 12)"


# --------------------------------------------------------------------------- FP-SCALEBACK
def _scaleback_margin(rounding):
    def margin(instance) -> float:
        value, j = instance
        exact = Fraction(value) / Fraction(2) ** j
        up = Fraction(rounding(value, j, upward=True))
        down = Fraction(rounding(value, j, upward=False))
        if exact == 0:
            return 0.0 if down <= 0 <= up else -1.0
        return float(min(up - exact, exact - down) / exact)

    return margin


def _scaleback_random(rng: np.random.Generator, count: int):
    for _ in range(count):
        yield (
            float(rng.uniform(1, 2)) * 2.0 ** int(rng.integers(-2, 3)),
            int(rng.integers(1000, 1100)),
        )


def _scaleback_adversarial(mode: Mode):
    yield math.sqrt(2.0), 1074
    yield 1.5, 1074  # exactly half an ulp: ties-to-even rounds down
    yield 1.0 + 2.0**-52, 1060
    yield 3.0, 1023
    yield 1.9999999999999998, 1075


def _nearest(value: float, j: int, *, upward: bool) -> float:
    """The planted false rule: ``math.ldexp`` (round to nearest), as before issue 12."""
    del upward
    return math.ldexp(value, -j)


SCALEBACK_STRATEGY = st.tuples(
    st.floats(0.5, 4.0, allow_nan=False, allow_infinity=False), st.integers(900, 1100)
)

register(
    Theorem(
        id="FP-SCALEBACK",
        title="The scale-back by 2^-j rounds outward",
        statement="scale_back_outward(v, j, upward=True) >= v 2^-j >= "
        "scale_back_outward(v, j, upward=False), also where v 2^-j is subnormal.",
        latex=r"\mathrm{down}(v 2^{-j}) \le v 2^{-j} \le \mathrm{up}(v 2^{-j})",
        source=SOURCE,
        conditions="v in [0.25, 8), j in [900, 1100] (subnormal and normal results); exact "
        "reference by fractions",
        relied_on=True,
        check=lambda mode: run(
            Search(
                _scaleback_margin(scale_back_outward),
                random=_scaleback_random,
                adversarial=_scaleback_adversarial,
                strategy=SCALEBACK_STRATEGY,
                key="FP-SCALEBACK",
            ),
            mode,
        ),
        proof="ldexp is exact unless the result is subnormal; then it is the nearest multiple of "
        "2^-1074; scaling it back by 2^j is exact, so comparing with v decides the side, and one "
        "ulp outward fixes it.",
        family=FAMILY,
    )
)

register(
    Theorem(
        id="FP-SCALEBACK-NEAREST",
        title="Planted: the scale-back by math.ldexp (round to nearest) is outward",
        statement="math.ldexp(v, -j) >= v 2^-j >= math.ldexp(v, -j) (false for subnormal "
        "results: it must FAIL).",
        latex=r"\mathrm{fl}(v 2^{-j}) \overset{?}{=} v 2^{-j}",
        source=SOURCE,
        conditions="as FP-SCALEBACK",
        relied_on=False,
        expected="FAIL",
        check=lambda mode: run(
            Search(
                _scaleback_margin(_nearest),
                random=_scaleback_random,
                adversarial=_scaleback_adversarial,
                strategy=SCALEBACK_STRATEGY,
                key="FP-SCALEBACK-NEAREST",
            ),
            mode,
        ),
        proof="sqrt(2) 2^-1074 rounds to 2^-1074, below the exact value.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- FP-SUBNORMAL
def _old_frobenius_upper(x: torch.Tensor) -> torch.Tensor:
    """The planted false variant: the power-of-two scale uncapped (overflows to inf for a
    subnormal block, as before issue 12)."""
    top = x.abs().amax(dim=(-2, -1), keepdim=True)
    safe = torch.where(top > 0, top, torch.ones_like(top))
    _, e = torch.frexp(safe)
    s = torch.ldexp(torch.ones_like(safe), (1 - e).to(safe.dtype))
    y = x * s
    total = (y**2).sum(dim=(-2, -1))
    return torch.sqrt(total) / s.reshape(total.shape)


def _subnormal_margin(frob, gram: bool):
    def margin(x: np.ndarray) -> float:
        t = torch.from_numpy(x)[None]
        if not np.any(x):
            raise Skip
        if gram:
            g = RigorousGram(t)
            for _ in range(3):
                g.step()
            value = float(g.bound()[0])
            exact = Fraction(str(mp_sigma_max(x) ** 2)) * (1 - Fraction(1, 10**30))
        else:
            value = float(frob(t)[0])
            exact = fraction_sq_norm(x.ravel())
        if math.isnan(value) or value < 0:
            return -1.0
        if math.isinf(value):
            return math.inf
        return float(Fraction(value) ** 2 / exact - 1)

    return margin


SUBNORMALS = (5e-324, -1e-323, 3e-320, -2.2e-310, 1e-310, 2.0**-1022)


def _subnormal_random(rng: np.random.Generator, count: int):
    for _ in range(count):
        shape = tuple(int(v) for v in rng.integers(1, 6, size=2))
        x = rng.choice(SUBNORMALS, size=shape)
        if rng.random() < 0.3:
            x[0, 0] = 1.0  # mixed scale: one normal entry
        yield x


def _subnormal_adversarial(mode: Mode):
    yield np.full((2, 2), 5e-324)
    yield np.array([[1e-310, -3e-320], [2e-323, 1e-315]])
    yield np.array([[1.0, 5e-324]])


SUBNORMAL_STRATEGY = st.integers(0, 2**32 - 1).map(
    lambda seed: next(_subnormal_random(np.random.default_rng(seed), 1))
)


def _subnormal_search(frob, gram: bool, key: str) -> Search:
    return Search(
        _subnormal_margin(frob, gram),
        random=_subnormal_random,
        adversarial=_subnormal_adversarial,
        strategy=SUBNORMAL_STRATEGY,
        describe=describe,
        key=key,
    )


def _both(mode: Mode):
    return combine(
        [
            run(_subnormal_search(frobenius_upper, False, "FP-SUBNORMAL"), mode),
            run(_subnormal_search(frobenius_upper, True, "FP-SUBNORMAL-G"), mode),
        ]
    )


register(
    Theorem(
        id="FP-SUBNORMAL",
        title="frobenius_upper and the rigorous Gram iteration on subnormal blocks",
        statement="frobenius_upper(x) >= ||x||_F and RigorousGram(x).bound() >= sigma_1(x) for "
        "blocks whose entries are all subnormal, or of mixed scale down to 2^-1074.",
        latex=r"\mathrm{frobenius\_upper}(x) \ge \|x\|_F,\ \mathrm{RigorousGram}(x) \ge "
        r"\sigma_1(x),\quad |x_{ij}| < 2^{-1022}",
        source=SOURCE,
        conditions="gradual underflow (checked by specbound.rigorous.fpenv); blocks up to 5 x 5; "
        "exact reference by fractions and 40-digit mpmath",
        relied_on=True,
        check=lambda mode: _both(mode),
        proof="pow2_scale caps the scale at 2^1023, so a subnormal block is scaled exactly into "
        "[2^-51, 1) instead of overflowing; underflowing squares and products add at most "
        "2^-1075 each, which is added explicitly; a possibly subnormal final division is rounded "
        "up by one ulp.",
        family=FAMILY,
    )
)


register(
    Theorem(
        id="FP-SUBNORMAL-UNCAPPED",
        title="Planted: an uncapped power-of-two scale on subnormal blocks",
        statement="The Frobenius bound with the scale 2^(1-e) uncapped bounds ||x||_F on "
        "subnormal blocks (false: the scale overflows to inf, the bound is NaN or 0; must FAIL).",
        latex=r"\|x\|_F \overset{?}{\le} \sqrt{\textstyle\sum (2^{1-e}x)^2}/2^{1-e}",
        source=SOURCE,
        conditions="as FP-SUBNORMAL",
        relied_on=False,
        expected="FAIL",
        check=lambda mode: run(
            _subnormal_search(_old_frobenius_upper, False, "FP-SUBNORMAL-UNCAPPED"), mode
        ),
        proof="2^(1-e) = 2^1075 for 5e-324 overflows to inf; inf * 0 or inf / inf is NaN.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- L8-PAD
def _l8_margin(beyond: bool):
    def margin(instance) -> float:
        kernel, split, n = instance
        kh, kw = kernel.shape[2:]
        extra = 1 if beyond else 0  # the planted variant pads one row and column more
        tb, lr = kh - 1 + extra, kw - 1 + extra
        pads = (min(split, lr), lr - min(split, lr), min(split, tb), tb - min(split, tb))
        spec = ConvSpec("circular", pads, (n, n))
        try:
            ConvLayer(kernel, spec)
        except ValueError as err:
            raise Skip from err
        # S does not depend on the pad: certify refuses the planted pads, so ask with pad 0
        every = certify(kernel, "circular", pad=0 if beyond else pads, input_size=None, rtol=1e-6)
        truth = float(np.linalg.norm(conv_matrix(kernel, spec), 2))
        return (every.upper - truth) / max(truth, 1e-300)

    return margin


def _l8_random(rng: np.random.Generator, count: int):
    for _ in range(count):
        kh, kw = (int(v) for v in rng.integers(1, 4, size=2))
        kernel = rng.integers(-2, 3, size=(1, 1, kh, kw)).astype(float)
        if not kernel.any():
            kernel[0, 0, 0, 0] = 1.0
        yield kernel, int(rng.integers(0, 3)), int(rng.integers(1, 5))


def _l8_adversarial(mode: Mode):
    yield np.ones((1, 1, 1, 1)), 0, 1  # beyond: [1] with circular pad 1, n = 1 (norm 3)
    yield np.ones((1, 1, 3, 3)), 1, 2
    yield np.ones((1, 1, 2, 3)), 2, 1


register(
    Theorem(
        id="L8-PAD",
        title="The every-size circular bound holds for pads up to d(k-1)",
        statement="For circular padding with at most d(k-1) padded in total per axis, every "
        "layer of size n is a submatrix of the block circulant, so ||A_n|| <= certify(..., "
        "input_size=None).upper.",
        latex=r"P_{lo}+P_{hi} \le d(k-1) \Rightarrow \|A_n\| \le S(K)",
        source=SOURCE,
        conditions="1 x 1 channels, kernels up to 3 x 3 with entries in {-2..2}, n in 1..4; "
        "dense float64 reference (relative tolerance 1e-12)",
        relied_on=True,
        check=lambda mode: run(
            Search(
                _l8_margin(False),
                tolerance=1e-12,
                random=_l8_random,
                adversarial=_l8_adversarial,
                n_random=(10, 60),
                n_hypothesis=(0, 0),
                key="L8-PAD",
            ),
            mode,
        ),
        proof="Output row i reads the padded indices i + d a - P_lo; with P_lo + P_hi <= d(k-1) "
        "there are at most n output rows per axis and they are distinct rows of the circulant "
        "(indices modulo n), whose norm is at most S.",
        family=FAMILY,
    )
)

register(
    Theorem(
        id="L8-PAD-BEYOND",
        title="Planted: the symbol bound for a circular pad beyond d(k-1)",
        statement="With one more row of circular pad than d(k-1) per axis, ||A_n|| <= S still "
        "(false: rows repeat; must FAIL).",
        latex=r"P_{lo}+P_{hi} = d(k-1)+1 \Rightarrow \|A_n\| \overset{?}{\le} S(K)",
        source=SOURCE,
        conditions="as L8-PAD",
        relied_on=False,
        expected="FAIL",
        check=lambda mode: run(
            Search(
                _l8_margin(True),
                tolerance=1e-12,
                random=_l8_random,
                adversarial=_l8_adversarial,
                n_random=(10, 60),
                n_hypothesis=(0, 0),
                key="L8-PAD-BEYOND",
            ),
            mode,
        ),
        proof="[1] with circular pad 1 on a 1 x 1 input is the 3 x 3 all-ones matrix, norm 3 > 1.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- SYM-SUPPORT
def _support_margin(cut):
    """``-(relative difference)`` of the top singular values of the full kernel's symbol and
    of ``cut``'s kernel's symbol at one frequency."""

    def margin(instance) -> float:
        kernel, omega = instance
        if not np.any(kernel):
            raise Skip
        full = np.linalg.norm(symbol(kernel, omega), 2)
        trimmed = np.linalg.norm(symbol(cut(kernel), omega), 2)
        return -abs(full - trimmed) / full

    return margin


def _library_support(kernel: np.ndarray) -> np.ndarray:
    return support_layer(ConvLayer(kernel, ConvSpec("zeros", 0, None))).kernel


def _drop_zero_lines(kernel: np.ndarray) -> np.ndarray:
    """The planted false rule: every all-zero tap row and column removed, interior ones
    too (that is not a shift: ``[1, 0, 1]`` becomes ``[1, 1]``)."""
    rows = np.flatnonzero(np.any(kernel != 0, axis=(0, 1, 3)))
    cols = np.flatnonzero(np.any(kernel != 0, axis=(0, 1, 2)))
    return np.ascontiguousarray(kernel[:, :, rows][:, :, :, cols])


def _support_random(rng: np.random.Generator, count: int):
    for _ in range(count):
        c_out, c_in, kh, kw = (int(v) for v in rng.integers(1, 4, size=4))
        kh, kw = kh + 1, kw + 1
        kernel = rng.standard_normal((c_out, c_in, kh, kw))
        kernel *= rng.random((1, 1, kh, kw)) < 0.5  # whole tap positions set to zero
        yield kernel, rng.uniform(0, 2 * np.pi, size=2)


def _support_adversarial(mode: Mode):
    one = np.zeros((1, 1, 3, 3))
    one[0, 0, 1, 2] = 1.0
    yield one, np.array([0.3, 1.1])
    gap = np.zeros((1, 1, 1, 3))
    gap[0, 0, 0, [0, 2]] = 1.0  # [1, 0, 1]: interior zero column
    yield gap, np.array([0.0, np.pi / 2])
    corner = np.zeros((2, 2, 3, 2))
    corner[:, :, 2, 1] = [[1.0, -2.0], [0.5, 3.0]]
    yield corner, np.array([2.0, 5.0])


for _id, _cut, _relied, _expected, _title, _statement in (
    (
        "SYM-SUPPORT",
        _library_support,
        True,
        "PASS",
        "Cutting a kernel to the bounding box of its non-zero taps keeps its symbol's "
        "singular values",
        "sigma(K^(w)) = sigma(K_box^(w)) at every frequency w, K_box = "
        "specbound.rigorous._routes.support_layer(K): the two symbols differ by the scalar "
        "e^{i w.t0}.",
    ),
    (
        "SYM-SUPPORT-GAPS",
        _drop_zero_lines,
        False,
        "FAIL",
        "Planted: removing interior zero tap rows/columns keeps the singular values",
        "sigma(K^(w)) = sigma(K'^(w)) with every all-zero tap row and column of K removed "
        "(false: it must FAIL).",
    ),
):
    register(
        Theorem(
            id=_id,
            title=_title,
            statement=_statement,
            latex=r"\hat K_{\mathrm{box}}(\omega) = e^{i\omega\cdot t_0}\hat K(\omega)",
            source=SOURCE,
            conditions="kernels up to 3x3 channels and 4x4 taps with whole tap positions "
            "zeroed; random frequencies",
            relied_on=_relied,
            expected=_expected,
            check=lambda mode, _cut=_cut, _id=_id: run(
                Search(
                    _support_margin(_cut),
                    tolerance=1e-12,
                    random=_support_random,
                    adversarial=_support_adversarial,
                    key=_id,
                ),
                mode,
            ),
            proof="K_box[a, b] = K[a + a0, b + b0] with (a0, b0) the box's corner, so "
            "K^(w) = sum K_box[a, b] e^{-i w.((a, b) + t0)} = e^{-i w.t0} K_box^(w); a "
            "unimodular scalar does not change singular values. An interior zero line is no "
            "shift: [1, 0, 1] has symbol 1 + e^{-2iw}, zero at w = pi/2, where [1, 1] has "
            "modulus sqrt 2.",
            family=FAMILY,
        )
    )


# --------------------------------------------------------------------------- SYM-BLOCKS
def _row_blocks(kernel: np.ndarray):
    """The planted false rule: every output channel its own block (ignores that outputs
    sharing an input are coupled)."""
    return [(np.array([o]), np.arange(kernel.shape[1])) for o in range(kernel.shape[0])]


def _blocks_margin(blocks):
    def margin(instance) -> float:
        kernel, omega = instance
        if not np.any(kernel):
            raise Skip
        full = np.linalg.norm(symbol(kernel, omega), 2)
        subs = [kernel[np.ix_(o, i)] for o, i in blocks(kernel)]
        parts = [
            np.linalg.norm(symbol(_library_support(sub), omega), 2) if np.any(sub) else 0.0
            for sub in subs
        ]
        return -abs(full - max(parts)) / full

    return margin


def _blocks_random(rng: np.random.Generator, count: int):
    for _ in range(count):
        c_out, c_in = (int(v) for v in rng.integers(1, 5, size=2))
        kernel = rng.standard_normal((c_out, c_in, 3, 3))
        kernel *= rng.random((c_out, c_in, 1, 1)) < 0.4  # whole channel pairs set to zero
        kernel *= rng.random((1, 1, 3, 3)) < 0.7
        yield kernel, rng.uniform(0, 2 * np.pi, size=2)


for _id, _blocks, _relied, _expected, _title in (
    (
        "SYM-BLOCKS",
        channel_blocks,
        True,
        "PASS",
        "The symbol's norm is the largest of its channel blocks' norms",
    ),
    (
        "SYM-BLOCKS-ROWS",
        _row_blocks,
        False,
        "FAIL",
        "Planted: every output channel is a block of its own",
    ),
):
    register(
        Theorem(
            id=_id,
            title=_title,
            statement="sigma(K^(w)) = max_b sigma(K_b^(w)) over the connected components b of "
            "the graph of channel pairs with a non-zero tap (specbound.rigorous._routes."
            "channel_blocks), each cut to its bounding box"
            + ("" if _relied else " (with one block per output channel: false, must FAIL)"),
            latex=r"\sigma_1(\hat K(\omega)) = \max_b \sigma_1(\hat K_b(\omega))",
            source=SOURCE,
            conditions="up to 4x4 channels, 3x3 taps, channel pairs and tap positions zeroed "
            "at random; random frequencies",
            relied_on=_relied,
            expected=_expected,
            check=lambda mode, _blocks=_blocks, _id=_id: run(
                Search(
                    _blocks_margin(_blocks),
                    tolerance=1e-12,
                    random=_blocks_random,
                    key=_id,
                ),
                mode,
            ),
            proof="Permuting rows to the blocks' outputs and columns to their inputs makes "
            "K^(w) block diagonal plus zero rows/columns (no non-zero entry joins two "
            "components), and a block diagonal matrix's norm is its blocks' largest; each "
            "block's bounding-box cut changes it by a unimodular scalar (SYM-SUPPORT).",
            family=FAMILY,
        )
    )
