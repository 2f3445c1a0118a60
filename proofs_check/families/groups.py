"""Grouped layers (L18 of docs/certify.md): after permuting channels a grouped convolution is
block diagonal with its groups' ``groups=1`` layers, so its norm is the largest group's, at a
given size for every padding mode, stride and dilation, and for the symbol (every size).
Checked on the library's own split (:func:`specbound.rigorous._groups.split_groups`) against
the dense operator; two planted false variants must FAIL.
"""

from __future__ import annotations

import numpy as np

from specbound import ConvSpec
from specbound.operators import ConvLayer, conv_matrix, symbol
from specbound.rigorous._groups import split_groups

from ..harness import Search, Skip, run
from ..registry import Theorem, register

FAMILY = "Grouped layers (certify)"
SOURCE = "derived in specbound (docs/certify.md, L18; issue 11)"
MODES = ("zeros", "circular", "reflect", "replicate")


def _library_groups(kernel: np.ndarray, spec: ConvSpec) -> list[np.ndarray]:
    """Each group's sub-kernel, one per group (the library merges identical ones; the
    maximum is the same)."""
    return [sub.kernel for sub in split_groups(ConvLayer(kernel, spec)).layers]


def _interleaved_groups(kernel: np.ndarray, spec: ConvSpec) -> list[np.ndarray]:
    """Planted: group ``j`` holds the output channels ``j, j + g, ...`` (wrong permutation)."""
    g = spec.groups
    return [np.ascontiguousarray(kernel[j::g]) for j in range(g)]


def _norm(m: np.ndarray) -> float:
    return float(np.linalg.norm(m, 2)) if m.size else 0.0


def _groups_margin(split, combine):
    def margin(instance) -> float:
        kernel, spec, omega = instance
        try:
            full_op = conv_matrix(kernel, spec)
        except ValueError as err:  # e.g. a reflect pad not smaller than the input
            raise Skip from err
        full = _norm(full_op)
        if full == 0:
            raise Skip
        subs = split(kernel, spec)
        one = spec.replace(groups=1)
        parts = [_norm(conv_matrix(sub, one)) for sub in subs]
        worst = abs(full - combine(parts)) / full
        # the symbol (every size): block diagonal over groups in the same way
        sym_full = _norm(symbol(kernel, omega, dilation=spec.dilation, groups=spec.groups))
        sym_parts = [_norm(symbol(sub, omega, dilation=spec.dilation)) for sub in subs]
        if sym_full > 0:
            worst = max(worst, abs(sym_full - combine(sym_parts)) / sym_full)
        return -worst

    return margin


def _groups_random(rng: np.random.Generator, count: int):
    for _ in range(count):
        g = int(rng.integers(2, 4))
        c_out = g * int(rng.integers(1, 3))
        c_in_g = int(rng.integers(1, 3))
        kh, kw = (int(v) for v in rng.integers(1, 4, size=2))
        kernel = rng.standard_normal((c_out, c_in_g, kh, kw))
        kernel *= rng.uniform(0.1, 3.0, size=(c_out, 1, 1, 1))  # groups of different norms
        mode = MODES[int(rng.integers(len(MODES)))]
        pad = "same" if rng.random() < 0.5 else int(rng.integers(0, 4))
        spec = ConvSpec(
            mode,
            pad,
            (int(rng.integers(3, 7)), int(rng.integers(3, 7))),
            int(rng.integers(1, 3)),
            int(rng.integers(1, 3)),
            g,
        )
        yield kernel, spec, rng.uniform(0, 2 * np.pi, size=2)


def _groups_adversarial(mode):
    rng = np.random.default_rng(11)
    # identical groups, one zero group, a wrapping circular pad, depthwise
    k = rng.standard_normal((2, 2, 3, 3))
    yield (
        np.concatenate([k, k, np.zeros_like(k)]),
        ConvSpec("circular", 3, (3, 4), groups=3),
        (np.array([0.3, 2.0])),
    )
    yield (
        rng.standard_normal((4, 1, 3, 3)),
        ConvSpec("replicate", 1, (4, 4), 2, 1, 4),
        (np.array([1.0, 0.5])),
    )
    yield (
        rng.standard_normal((4, 2, 2, 3)),
        ConvSpec("reflect", "same", (5, 3), 1, 2, 2),
        (np.array([2.5, 0.1])),
    )


for _id, _split, _combine, _relied, _expected, _title, _latex in (
    (
        "GROUPS",
        _library_groups,
        max,
        True,
        "PASS",
        "A grouped layer's norm is the largest of its groups' norms",
        r"\|A\|_2 = \max_j \|A_j\|_2",
    ),
    (
        "GROUPS-MEAN",
        _library_groups,
        lambda parts: float(np.mean(parts)),
        False,
        "FAIL",
        "Planted: the norm is the mean over groups",
        r"\|A\|_2 = \tfrac1g\sum_j \|A_j\|_2",
    ),
    (
        "GROUPS-PERM",
        _interleaved_groups,
        max,
        False,
        "FAIL",
        "Planted: group j holds the interleaved output channels j, j+g, ...",
        r"\|A\|_2 = \max_j \|A(K[j::g])\|_2",
    ),
):
    register(
        Theorem(
            id=_id,
            title=_title,
            statement="||A||_2 = max_j ||A_j||_2 for a layer with groups g, A_j the groups=1 "
            "layer (same padding mode, pad, size, stride, dilation) of the sub-kernel "
            "K[j c_out/g : (j+1) c_out/g] (specbound.rigorous._groups.split_groups); likewise "
            "sigma(K^(w)) for the symbol"
            + ("" if _relied else " -- " + _title + " (false: it must FAIL)"),
            latex=_latex,
            source=SOURCE,
            conditions="2-3 groups of 1-2 output and 1-2 input channels, kernels up to 3x3, "
            "every padding mode, pads 0-3 or same (circular pads may wrap), stride and "
            "dilation 1-2, inputs 3x3 to 6x6; identical and zero groups; random frequencies",
            relied_on=_relied,
            expected=_expected,
            check=lambda mode, _split=_split, _combine=_combine, _id=_id: run(
                Search(
                    _groups_margin(_split, _combine),
                    tolerance=1e-12,
                    random=_groups_random,
                    adversarial=_groups_adversarial,
                    key=_id,
                ),
                mode,
            ),
            proof="Output channel o of group j reads only the input channels of group j, "
            "through the sub-kernel K_j; the padding acts on each channel alone (I_c x P_h x "
            "P_w) and the geometry is shared. Ordering inputs and outputs by (group, channel, "
            "pixel) is a pair of permutations that makes A = diag(A_1, ..., A_g); "
            "permutations are orthogonal and a block diagonal matrix's norm is its blocks' "
            "largest. The symbol is block diagonal over the groups in the same way.",
            family=FAMILY,
        )
    )
