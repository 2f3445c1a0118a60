"""Padding operators of PyTorch's padding modes: application, adjoint and exact norm.

A padding mode maps an axis of length ``n`` to an axis of length ``lo + n + hi``. For every mode
PyTorch offers, each padded position either copies exactly one input pixel or is a zero, so the
per-axis operator ``P`` has at most one ``1`` per row and

.. math::

    P^\\top P = \\operatorname{diag}(m_0, \\dots, m_{n-1}),\\qquad
    \\|P\\|_2 = \\sqrt{\\max_j m_j},

where :math:`m_j` is the number of padded positions that copy input pixel ``j`` (its
*multiplicity*). In 2-D the padding acts separably and identically on each channel,
``P_2d = I_c (x) P_h (x) P_w``, so :math:`\\|P_{2d}\\| = \\|P_h\\|\\,\\|P_w\\|`.

Multiplicities, per axis (derivation: count the positions ``t in [-lo, n + hi)`` mapped to ``j``):

* ``"zeros"``: 1 (an isometric embedding).
* ``"circular"``: ``#{t : t = j mod n}``; at most ``ceil((n + lo + hi) / n)``.
* ``"replicate"``: ``n >= 2``: ``1 + lo`` at ``j = 0``, ``1 + hi`` at ``j = n - 1``;
  ``n = 1``: ``1 + lo + hi``.
* ``"reflect"`` (PyTorch needs ``lo, hi < n``): ``1 + [1 <= j <= lo] + [n-1-hi <= j <= n-2]``,
  so 3 where the two mirrored ranges overlap (``lo + hi >= n - 1``), else at most 2.

For ``n >= lo + hi + 2`` every one of these multiplicity patterns is independent of ``n``
(the mirrored ranges no longer overlap, the circular wrap covers each index at most twice, the
replicated edges are distinct), so :func:`padding_norm_bound` takes the supremum over all
sizes ``n >= min_size`` by enumerating ``n`` up to ``max(min_size, lo + hi + 2)``.

A layer ``x -> conv(pad(x))`` equals ``V P x`` with ``V`` the unpadded ("valid") convolution
on the padded grid, a row selection of the convolution on the plane; hence
``||conv o pad|| <= ||L(K)|| ||P||``. This is how the 1-Lipschitz layers compensate reflect and
replicate padding (``specbound.layers``): the kernel is divided by the bound on ``||P||``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from ..operators.indexing import axis_multiplicity as multiplicity
from ..operators.indexing import padded_index
from ..spec import AxisPads

MODES = ("zeros", "circular", "reflect", "replicate")


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"padding_mode must be one of {MODES}, got {mode!r}")


@lru_cache(maxsize=512)
def axis_source_index(n: int, lo: int, hi: int, mode: str) -> tuple[int, ...]:
    """Input index copied by each padded position of one axis (``-1`` for a zero), as
    :func:`~specbound.operators.indexing.padded_index` gives it, for torch's gather.

    ``"reflect"`` mirrors without repeating the edge and needs ``lo, hi < n`` (PyTorch's
    rule); ``"circular"`` takes indices modulo ``n`` for any pad (wrapping several times).
    """
    _check_axis(n, lo, hi, mode)
    return tuple(int(i) for i in padded_index(n, lo, hi, mode))


def axis_multiplicity(n: int, lo: int, hi: int, mode: str) -> int:
    """``max_j m_j``: the largest number of padded positions that copy one input pixel."""
    _check_axis(n, lo, hi, mode)
    return multiplicity(n, lo, hi, mode)


def _check_axis(n: int, lo: int, hi: int, mode: str) -> None:
    _check_mode(mode)
    if n < 1 or lo < 0 or hi < 0:
        raise ValueError(f"need n >= 1 and non-negative pads, got n={n}, pads=({lo}, {hi})")
    if mode == "reflect" and max(lo, hi) >= n:
        raise ValueError(
            f"padding_mode='reflect' needs each pad smaller than the input size: "
            f"pads ({lo}, {hi}) with size {n}"
        )


def padding_norm(size: tuple[int, int], pads: AxisPads, mode: str) -> float:
    """Exact spectral norm of the 2-D padding operator for one input size.

    Parameters
    ----------
    size : (H, W)
    pads : ((top, bottom), (left, right))
    mode : {"zeros", "circular", "reflect", "replicate"}

    References
    ----------
    * docs/certify.md, lemma L7 (the padding operator: ``P^T P`` is diagonal, ``||P||`` the
      square root of the largest multiplicity).

    Examples
    --------
    >>> from specbound import layers
    >>> layers.padding_norm((4, 4), ((1, 1), (1, 1)), "zeros")
    1.0
    >>> layers.padding_norm((4, 4), ((1, 1), (1, 1)), "replicate")  # sqrt(2) per axis
    2.0
    """
    (top, bottom), (left, right) = pads
    m_h = axis_multiplicity(size[0], top, bottom, mode)
    m_w = axis_multiplicity(size[1], left, right, mode)
    return math.sqrt(m_h * m_w)


def min_valid_size(lo: int, hi: int, mode: str) -> int:
    """Smallest axis length the mode accepts (``reflect``: each pad below the size)."""
    return max(lo, hi) + 1 if mode == "reflect" else 1


def padding_norm_bound(pads: AxisPads, mode: str, min_size: tuple[int, int] | None = None) -> float:
    """``sup ||P||`` over every input size ``(H, W) >= min_size`` that the mode accepts.

    Exact (a maximum, attained): the multiplicity pattern is constant for
    ``n >= lo + hi + 2`` (module docstring), so the supremum is a maximum over finitely many
    sizes, which are enumerated.

    References
    ----------
    * docs/certify.md, lemma L7 (the padding operator: ``P^T P`` is diagonal, ``||P||`` the
      square root of the largest multiplicity).

    Examples
    --------
    >>> from specbound import layers
    >>> round(layers.padding_norm_bound(((1, 1), (1, 1)), "reflect"), 9)  # sqrt(3) per axis
    3.0
    """
    (top, bottom), (left, right) = pads
    lows = (1, 1) if min_size is None else min_size
    result = 1.0
    for n0, lo, hi in ((lows[0], top, bottom), (lows[1], left, right)):
        start = max(int(n0), min_valid_size(lo, hi, mode))
        stop = max(start, lo + hi + 2)
        result *= math.sqrt(max(axis_multiplicity(n, lo, hi, mode) for n in range(start, stop + 1)))
    return result


def _gather_axis(x: torch.Tensor, dim: int, index: tuple[int, ...] | list[int]) -> torch.Tensor:
    idx = torch.tensor(index, device=x.device, dtype=torch.long)
    return x.index_select(dim, idx)


def pad2d(x: torch.Tensor, pads: AxisPads, mode: str) -> torch.Tensor:
    """Pad the last two axes of ``x`` by ``((top, bottom), (left, right))`` with ``mode``.

    ``"zeros"``, ``"reflect"`` and ``"replicate"`` use :func:`torch.nn.functional.pad`
    (PyTorch's semantics). ``"circular"`` is index-based, so that a pad larger than the input
    wraps around several times (the convolution on the torus), which ``F.pad`` refuses.

    References
    ----------
    * docs/certify.md, lemma L7 (the padding operator: ``P^T P`` is diagonal, ``||P||`` the
      square root of the largest multiplicity).

    Examples
    --------
    >>> import torch
    >>> from specbound import layers
    >>> x = torch.arange(3.0).reshape(1, 1, 1, 3)
    >>> layers.pad2d(x, ((0, 0), (1, 1)), "reflect")  # ((top, bottom), (left, right))
    tensor([[[[1., 0., 1., 2., 1.]]]])
    """
    _check_mode(mode)
    (top, bottom), (left, right) = pads
    if top == bottom == left == right == 0:
        return x
    if mode == "zeros":
        return F.pad(x, (left, right, top, bottom))
    if mode == "circular":
        h, w = x.shape[-2:]
        x = _gather_axis(x, -2, axis_source_index(h, top, bottom, mode))
        return _gather_axis(x, -1, axis_source_index(w, left, right, mode))
    if mode == "reflect":
        h, w = x.shape[-2:]
        if max(top, bottom) >= h or max(left, right) >= w:
            raise ValueError(
                f"padding_mode='reflect' needs each pad smaller than the input: pads "
                f"((top, bottom), (left, right))={pads} with input size {(h, w)}"
            )
    return F.pad(x, (left, right, top, bottom), mode=mode)


def pad2d_adjoint(
    y: torch.Tensor, pads: AxisPads, mode: str, size: tuple[int, int]
) -> torch.Tensor:
    """Adjoint ``P^T`` of :func:`pad2d`: sum each padded pixel back onto its source pixel.

    References
    ----------
    * docs/certify.md, lemma L7 (the padding operator: ``P^T P`` is diagonal, ``||P||`` the
      square root of the largest multiplicity).

    Examples
    --------
    >>> import torch
    >>> from specbound import layers
    >>> y = torch.tensor([[[[1.0, 0.0, 1.0, 2.0, 1.0]]]])
    >>> layers.pad2d_adjoint(y, ((0, 0), (1, 1)), "reflect", (1, 3))
    tensor([[[[0., 3., 2.]]]])
    """
    (top, bottom), (left, right) = pads
    h, w = size
    for dim, n, lo, hi in ((-2, h, top, bottom), (-1, w, left, right)):
        index = axis_source_index(n, lo, hi, mode)
        keep = [t for t, j in enumerate(index) if j >= 0]
        src = _gather_axis(y, dim, keep)
        target = torch.tensor([index[t] for t in keep], device=y.device, dtype=torch.long)
        shape = list(y.shape)
        shape[dim] = n
        out = y.new_zeros(shape)
        y = out.index_add(dim, target, src)
    return y
