"""The audit's cheap rigorous upper bound for a layer its budget did not reach (lemma L-TAP of
``docs/certify.md``): ``||A||_2 <= ||P||_2 max_groups sum_taps ||K_{g,t}||_F``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..operators.conv_layer import ConvLayer
from ..rigorous.rounding import U, frobenius_upper, pow2_scale, up
from ..spec import ConvSpec

TAP_SUM_METHOD = "tap_sum_frobenius (L-TAP; budget fallback, not certified to rtol)"


def tap_sum_upper(kernel: np.ndarray, spec: ConvSpec) -> float:
    """Rigorous upper bound on ``||A||_2`` from the kernel's tap matrices alone (lemma L-TAP).

    Each tap ``t`` of group ``g`` contributes ``(I (x) K_{g,t}) S_t P``: ``P`` the padding map
    (``||P|| = sqrt(max copy count)``, 1 for zero padding, lemma L7), ``S_t`` the selection of
    the pixels that tap reads (one distinct pixel per output position, so ``||S_t|| <= 1``,
    whatever the stride and dilation), and the groups are independent diagonal blocks. Hence
    ``||A|| <= ||P|| max_g sum_t ||K_{g,t}||_F``, each Frobenius norm bounded above with L1,
    the sums correctly rounded (:func:`math.fsum`) and the products rounded up.

    Parameters
    ----------
    kernel : numpy.ndarray
        ``(c_out, c_in // groups, k...)`` (1 to 3 spatial axes), float64 (any real dtype is
        converted exactly).
    spec : ConvSpec
        With ``input_size`` given.

    Returns
    -------
    float
        An upper bound, ``inf`` only if the kernel holds an infinite entry.

    Raises
    ------
    ValueError
        ``spec.input_size`` is None, or the kernel does not fit the spec.
    """
    if spec.input_size is None:
        raise ValueError("tap_sum_upper needs spec.input_size (the padding map's norm)")
    layer = ConvLayer(np.asarray(kernel), spec)  # validates shapes and geometry
    k = torch.from_numpy(np.ascontiguousarray(layer.kernel, dtype=np.float64))
    if not bool(torch.isfinite(k).all()):
        if bool(torch.isnan(k).any()):
            raise ValueError("the kernel holds NaN")
        return math.inf
    c_out, c_in_g = k.shape[:2]
    g = spec.groups
    taps = k.reshape(g, c_out // g, c_in_g, -1).permute(0, 3, 1, 2)  # (g, T, o, i)
    per_tap = _frobenius_chunked(taps)  # (g, T), each >= ||K_{g,t}||_F (L1)
    sums = [math.fsum(row) for row in per_tap.tolist()]  # one rounding each
    worst = max(sums, default=0.0)
    pad_norm = layer.padding_norm()  # the per-axis maps' Kronecker product (L16)
    # d square roots and d - 1 products (pad_norm = 1.0 * first is exact)
    return up(up(worst, 1) * up(pad_norm, 2 * layer.d - 1), 1)


CHUNK_ENTRIES = 1 << 22
"""Entries per slice of :func:`_frobenius_chunked` (32 MiB of float64): memory stays bounded
for a large linear layer."""


def _frobenius_chunked(taps: torch.Tensor) -> torch.Tensor:
    """Upper bounds on the Frobenius norms over the last two axes, by row slices of at most
    :data:`CHUNK_ENTRIES` entries: ``||K||_F^2 = sum_i ||K_i||_F^2`` over the slices ``K_i``,
    each ``||K_i||_F`` bounded by L1, squared, summed and rooted upwards."""
    rows, cols = taps.shape[-2:]
    step = max(1, CHUNK_ENTRIES // max(cols, 1))
    if rows <= step:
        return frobenius_upper(taps)
    parts = torch.stack(
        [frobenius_upper(taps[..., r : r + step, :]) for r in range(0, rows, step)], dim=-1
    )
    # an exact power-of-two scale puts the largest part in [1, 2): its square cannot underflow,
    # and smaller squares that do lose < 2^-1074 each against a sum >= 1
    scale = pow2_scale(parts.amax(dim=-1, keepdim=True))
    total = (parts * scale).square().sum(dim=-1)  # one rounding per square, n - 1 per sum
    ops = 2 * parts.shape[-1] + 2  # squares, sum, sqrt: relative error below (ops + 1) u
    value = torch.sqrt(total) * (1.0 + (ops + 1) * U) / scale.squeeze(-1)
    return torch.nextafter(value, torch.full_like(value, math.inf))  # a subnormal quotient


@dataclass
class FallbackBound:
    """What a layer gets in place of a certificate when its budget ran out, or the run was
    interrupted, before it was certified: the rigorous :func:`tap_sum_upper` and the trivial
    lower bound 0. Duck-compatible with the fields of :class:`specbound.Certificate` that the
    audit reads."""

    upper: float
    reason: str
    lower: float = 0.0
    converged: bool = False
    upper_method: str = TAP_SUM_METHOD
    lower_method: str = "none (0)"
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.notes = [
            f"not certified ({self.reason}): upper is the rigorous tap-sum bound ||P|| "
            "max_g sum_t ||K_g,t||_F (L-TAP), usually much wider than the norm"
        ]
