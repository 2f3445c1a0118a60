"""Frequency matrices of a (polyphase) kernel with a rigorous entrywise error bound.

For a layer with stride ``s`` the taps of each axis are split by phase: input offset
``d*a - P_lo = s*q_a + r_a`` with ``0 <= r_a < s`` (Senderovich et al. 2022, polyphase
reshape). The matrix at frequency ``w = (w_1, w_2)`` is

.. math::  M(w)_{o,(c, r_1, r_2)} = \\sum_{a: r_a = r_1}\\sum_{b: r_b = r_2}
           K[o, c, a, b]\\, e^{-i (w_1 q_a + w_2 q_b)} ,

for each group. On the grid ``w = 2 pi (u/m_1, v/m_2)`` (``m = n/s``) these are the blocks of
a circular layer (Sedghi et al. 2019, Thm. 6); as functions of ``w`` on the torus they form
the symbol whose supremum ``S`` is the norm of the bi-infinite (zero-padded, every size)
layer (Delattre et al. 2024, arXiv 2402.00240).

The matrices come from the one frequency engine
(:class:`specbound.operators.frequency.FrequencyEngine`), whose float64 entries satisfy
``|M~ - M| <= eta * A_abs`` entrywise; hence ``||M~(w) - M(w)||_2 <= eta * ||A_abs||_F``
for every ``w`` (:attr:`PolyphaseSymbol.error_bound`), where
``A_abs[o, (c, r)] = sum_{taps of phase r} |K[o, c, tap]|``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..operators.conv_layer import ConvLayer
from ..operators.frequency import FrequencyEngine
from .rounding import up


@dataclass
class PolyphaseSymbol:
    """The polyphase symbol of a layer, evaluable with rigorous error bounds: the frequency
    engine of the layer's geometry, in the layout of the certified routes.

    Attributes
    ----------
    engine : FrequencyEngine
        float64, on ``device``.
    error_bound : float
        Uniform bound on ``||M~(w) - M(w)||_2`` over every evaluated ``w``.
    """

    engine: FrequencyEngine
    error_bound: float = 0.0

    @classmethod
    def from_layer(
        cls,
        layer: ConvLayer,
        *,
        offsets: bool = True,
        device: torch.device | str | None = None,
        kernel_error: float = 0.0,
    ) -> PolyphaseSymbol:
        """Build from a layer. ``offsets=False`` drops the left pads (irrelevant for the
        bi-infinite operator, which is shift-invariant). ``kernel_error`` is a bound on the
        Frobenius norm of any error already present in the kernel values (added to
        :attr:`error_bound`, times the number of taps)."""
        lo = tuple(low if offsets else 0 for low, _ in layer.pads)
        engine = FrequencyEngine(
            torch.as_tensor(layer.kernel, dtype=torch.float64, device=device),
            lo=lo,
            stride=layer.spec.stride,
            dilation=layer.spec.dilation,
            groups=layer.groups,
            ndim=layer.d,
        )
        taps = int(np.prod(engine.k))
        return cls(engine, up(engine.error_bound() + kernel_error * taps))

    # ------------------------------------------------------------------ sizes
    @property
    def kernel(self) -> torch.Tensor:
        """``(groups, p, c_in_g, kh, kw)`` float64."""
        k = self.engine.kernel
        return k.reshape(self.groups, k.shape[0] // self.groups, *k.shape[1:])

    @property
    def phases(self) -> tuple[np.ndarray, ...]:
        return self.engine.phases

    @property
    def positions(self) -> tuple[np.ndarray, ...]:
        return self.engine.positions

    @property
    def strides(self) -> tuple[int, ...]:
        return self.engine.stride

    @property
    def groups(self) -> int:
        return self.engine.groups

    @property
    def shape(self) -> tuple[int, int]:
        """``(p, q)`` = ``(c_out/groups, c_in/groups * s_h * s_w)``."""
        return self.engine.shape

    @property
    def degree(self) -> tuple[int, ...]:
        """Per-axis degree of ``|u^* M(w) v|^2`` as a trigonometric polynomial:
        the span ``max q - min q`` of the tap positions."""
        return self.engine.degree()

    def eta(self) -> float:
        """Relative entrywise error of the engine (:meth:`FrequencyEngine.eta`)."""
        return self.engine.eta()

    def abs_matrix(self) -> torch.Tensor:
        """``A_abs[g, o, (c, r)] = sum_{taps of phase r} |K|`` as computed (sums of at most
        ``kh kw`` non-negative terms: exact ``<=`` computed ``/ (1 - gamma_{kh kw})``)."""
        return self.engine.abs_matrix()

    # ------------------------------------------------------------------ evaluation
    def on_grid(self, size: tuple[int, ...], rows: np.ndarray | None = None) -> torch.Tensor:
        """Matrices at ``2 pi u / m``, ``m = size/stride`` per axis (``d >= 2`` axes); the
        last axis over the half spectrum ``0..m_d//2`` (real kernel: ``M(-w) = conj M(w)``),
        the middle axes in full, the first axis over ``rows`` (default all). Shape
        ``(g, len(rows), m_2, ..., m_{d-1}, m_d//2 + 1, p, q)``."""
        e = self.engine
        grid = FrequencyEngine(
            e.kernel, size, lo=e.lo, stride=e.stride, dilation=e.dilation, groups=e.groups
        )
        rest = (*grid.grid[1:-1], grid.grid[-1] // 2 + 1)
        per_row = int(np.prod(rest))
        rows = np.arange(grid.grid[0]) if rows is None else np.asarray(rows)
        index = (rows[:, None] * per_row + np.arange(per_row)[None, :]).reshape(-1)
        mats = grid.on_grid(index).movedim(0, 1)  # (g, F, p, q)
        return mats.reshape(e.groups, len(rows), *rest, *e.shape)

    def at_points(self, omega: torch.Tensor) -> torch.Tensor:
        """Matrices at scattered frequencies ``omega`` (``(F, d)``, float64, entries in
        ``[-2 pi, 2 pi]``): shape ``(g, F, p, q)``."""
        return self.engine.at_points(omega).movedim(0, 1)
