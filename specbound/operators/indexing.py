"""Index maps of the padding modes, per spatial axis.

Every padding mode used by PyTorch acts separably on the spatial axes: the padded image is
``x[r_0(t_0), r_1(t_1), ...]`` for per-axis index maps ``r_ax`` (zeros padding maps outside the
image to "no pixel", written ``-1`` here). All exact operators are built from these maps.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .conv_layer import ConvLayer


def padded_index(n: int, lo: int, hi: int, mode: str) -> np.ndarray:
    """Source index of each position of an axis of length ``n`` padded by ``(lo, hi)``.

    Returns an int array of length ``lo + n + hi`` whose entry ``t`` is the input index that
    padded position ``t`` copies, or ``-1`` for a zero (``mode="zeros"``).

    ``"circular"`` takes indices modulo ``n`` (any pad); ``"reflect"`` mirrors without
    repeating the edge (pad < n, checked by :class:`~specbound.spec.ConvSpec`);
    ``"replicate"`` repeats the edge value.
    """
    p = np.arange(-lo, n + hi)
    if mode == "zeros":
        return np.where((p >= 0) & (p < n), p, -1)
    if mode == "circular":
        return np.mod(p, n)
    if mode == "replicate":
        return np.clip(p, 0, n - 1)
    if mode == "reflect":
        if n == 1:
            return np.zeros_like(p)
        period = 2 * (n - 1)
        q = np.mod(p, period)
        return np.where(q < n, q, period - q)
    raise ValueError(f"unknown padding mode {mode!r}")


def axis_multiplicity(n: int, lo: int, hi: int, mode: str) -> int:
    """``max_j m_j``: the largest number of padded positions of one axis that copy one input
    index (0 for an empty axis map)."""
    idx = padded_index(n, lo, hi, mode)
    kept = idx[idx >= 0]
    return int(np.bincount(kept, minlength=n).max()) if kept.size else 0


def padding_operator_norm(n: int, lo: int, hi: int, mode: str) -> float:
    """``||P||_2`` of the 1-D padding map ``R^n -> R^{n+lo+hi}`` (each padded position copies
    one input, so ``P^T P`` is diagonal with the copy counts): ``sqrt(max count)``
    (docs/certify.md, lemma L7)."""
    return math.sqrt(axis_multiplicity(n, lo, hi, mode))


def axis_index(
    n: int, k: int, lo: int, hi: int, stride: int, dilation: int, mode: str
) -> np.ndarray:
    """Input index read by output ``i`` at tap ``a`` along one axis: an ``(n_out, k)`` array.

    Entry ``[i, a]`` is the source index of padded position ``stride*i + dilation*a`` or
    ``-1`` where that position is a zero of zeros padding.
    """
    source = padded_index(n, lo, hi, mode)
    n_out = (n + lo + hi - dilation * (k - 1) - 1) // stride + 1
    t = stride * np.arange(n_out)[:, None] + dilation * np.arange(k)[None, :]
    return source[t]


def layer_axis_indices(layer: ConvLayer) -> tuple[np.ndarray, ...]:
    """The per-axis ``(n_out, k)`` index maps of a forward
    :class:`~specbound.operators.ConvLayer` (``(OH, kh)`` and ``(OW, kw)`` in 2-D)."""
    return layer.axis_indices()
