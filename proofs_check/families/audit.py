"""The audit's budget fallback: the tap-sum bound (lemma L-TAP of docs/certify.md), on exact
operators, with a planted false variant (the maximum over the taps instead of their sum)."""

from __future__ import annotations

import numpy as np

from specbound.audit import tap_sum_upper
from specbound.rigorous.rounding import frobenius_upper
from specbound.testing import adversarial_layers, conv_specs

from ..exact import norm
from ..harness import Search, Skip, run
from ..registry import Theorem, register
from .common import (
    CIRCULANT_SPECS,
    FLOOR_NOTE,
    PADDED_SPECS,
    ZERO_SPECS,
    describe_layer,
    negligible,
    random_layers,
    suite,
)

FAMILY = "Audit budget fallback"


def max_tap_upper(kernel: np.ndarray, spec) -> float:
    """Planted false criterion: ``||A|| <= ||P|| max_t ||K_t||_F`` (the maximum over the taps
    in place of their sum)."""
    import torch

    k = torch.from_numpy(np.asarray(kernel, dtype=np.float64))
    c_out, c_in, kh, kw = k.shape
    taps = k.reshape(c_out, c_in, kh * kw).permute(2, 0, 1)
    ratio = tap_sum_upper(np.ones((1, 1, kh, kw)), spec.replace(groups=1)) / (kh * kw)
    return float(frobenius_upper(taps).max()) * ratio  # ratio: ||P|| (rounded up)


def tap_search(bound=tap_sum_upper, key: str = "AUDIT-TAP") -> Search:
    """The ``AUDIT-TAP`` search; ``bound(kernel, spec)`` replaces the library's bound (for the
    planted variant)."""

    def margin(layer) -> float:
        kernel, spec = layer
        if spec.input_size is None:
            raise Skip
        exact = norm(kernel, spec)
        if negligible(exact, kernel):
            raise Skip
        value = bound(kernel, spec)
        if exact == 0.0:
            return 0.0 if value >= 0.0 else -1.0
        return value / exact - 1.0

    return Search(
        margin,
        tolerance=1e-12,
        random=lambda rng, n: random_layers(rng, n, ("gaussian", "integer"), max_stride=3),
        adversarial=lambda m: suite(ZERO_SPECS + PADDED_SPECS + CIRCULANT_SPECS, m),
        strategy=adversarial_layers(conv_specs(max_stride=3, max_size=6)),
        describe=describe_layer,
        key=key,
    )


register(
    Theorem(
        id="AUDIT-TAP",
        title="Tap-sum bound (the audit's fallback for layers not certified)",
        statement="For every padding mode, pads, stride, dilation and groups at a given size, "
        "||A||_2 <= ||P||_2 max_g sum_t ||K_{g,t}||_F, as computed by "
        "specbound.audit.tap_sum_upper (rounding included).",
        latex=r"\|A\|_2 \le \|P\|_2 \max_g \sum_t \|K_{g,t}\|_F",
        source="derived in specbound (docs/certify.md, lemma L-TAP)",
        conditions="all four padding modes, strides up to 3, any pads, dilation, groups; relative "
        "tolerance 1e-12 (float64 reference norm)" + FLOOR_NOTE,
        relied_on=True,
        check=lambda mode: run(tap_search(), mode),
        proof="A_g = sum_t (I (x) K_{g,t}) S_t P; each S_t selects one distinct padded pixel per "
        "output position (||S_t|| <= 1), ||P|| = sqrt(max copy count) (L7), ||K||_2 <= "
        "||K||_F; groups are independent diagonal blocks.",
        family=FAMILY,
    )
)
