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

The matrices are computed as a DFT over the taps in real arithmetic (never an FFT), so the
error obeys the inner-product model: every computed entry satisfies
``|M~ - M| <= eta * sum_taps |K|`` with the ``eta`` of :meth:`PolyphaseSymbol.eta`.
Hence ``||M~(w) - M(w)||_2 <= eta * ||A_abs||_F`` for every ``w`` (:attr:`error_bound`),
where ``A_abs[o, (c, r)] = sum_{taps of phase r} |K[o, c, tap]|``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..operators.conv_layer import ConvLayer
from .rounding import LIBM_ULPS, U, frobenius_upper, gamma, up


def axis_phases(k: int, dilation: int, lo: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Phase ``r_a`` and position ``q_a`` of each tap: ``d*a - lo = s*q_a + r_a``."""
    offset = dilation * np.arange(k) - lo
    phase = np.mod(offset, stride)
    return phase, (offset - phase) // stride


@dataclass
class PolyphaseSymbol:
    """The polyphase symbol of a layer, evaluable with rigorous error bounds.

    Attributes
    ----------
    kernel : torch.Tensor
        ``(groups, p, c_in_g, kh, kw)`` float64 on ``device``.
    phases, positions : per-axis int arrays (``r_a``, ``q_a``).
    strides : (s_h, s_w)
    error_bound : float
        Uniform bound on ``||M~(w) - M(w)||_2`` over every evaluated ``w``.
    """

    kernel: torch.Tensor
    phases: tuple[np.ndarray, np.ndarray]
    positions: tuple[np.ndarray, np.ndarray]
    strides: tuple[int, int]
    position_bound: int
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
        (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.spec.stride, layer.spec.dilation
        (top, _), (left, _) = layer.pads if offsets else ((0, 0), (0, 0))
        ph, qh = axis_phases(kh, dh, top, sh)
        pw, qw = axis_phases(kw, dw, left, sw)
        g = layer.groups
        k = torch.as_tensor(layer.kernel, dtype=torch.float64, device=device)
        k = k.reshape(g, layer.c_out // g, *layer.kernel.shape[1:])
        bound = int(max(3, np.abs(qh).max(), np.abs(qw).max()))
        sym = cls(k, (ph, pw), (qh, qw), (sh, sw), bound)
        sym.error_bound = up(sym.eta() * sym.abs_frobenius() + kernel_error * kh * kw)
        return sym

    # ------------------------------------------------------------------ sizes
    @property
    def groups(self) -> int:
        return self.kernel.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        """``(p, q)`` = ``(c_out/groups, c_in/groups * s_h * s_w)``."""
        _g, p, c, _kh, _kw = self.kernel.shape
        return p, c * self.strides[0] * self.strides[1]

    @property
    def degree(self) -> tuple[int, int]:
        """Per-axis degree of ``|u^* M(w) v|^2`` as a trigonometric polynomial:
        the span ``max q - min q`` of the tap positions."""
        (qh, qw) = self.positions
        return int(qh.max() - qh.min()), int(qw.max() - qw.min())

    # ------------------------------------------------------------------ error constants
    def phase_error(self) -> float:
        """Bound on ``|phi~ - phi|`` for each computed phase ``phi = e^{-i theta}``: the angle
        carries ``<= 2 pi Q u`` absolute error (``Q`` bounds ``|q|`` and the 3 roundings of
        ``2 pi j / m``), and cos/sin add ``LIBM_ULPS`` ulps each."""
        theta = 2 * math.pi * (self.position_bound + 1) * U * 1.01
        return up(math.sqrt(2.0) * (theta + 2 * LIBM_ULPS * U))

    def eta(self) -> float:
        """Relative entrywise error of the two-stage tap DFT (taps of ``b``, then of ``a``),
        and of the one-stage form at scattered points; the larger of the two."""
        _, _, _, kh, kw = self.kernel.shape
        e_phi = self.phase_error()
        r2 = math.sqrt(2.0)
        eta_b = r2 * gamma(kw) * (1 + e_phi) + e_phi
        two_stage = (r2 * gamma(2 * kh) * (1 + e_phi) + e_phi) * (1 + eta_b) + eta_b
        e_prod = r2 * gamma(2) * (1 + e_phi) ** 2 + e_phi * (2 + e_phi)
        one_stage = r2 * gamma(kh * kw) * (1 + e_prod) + e_prod
        return up(max(two_stage, one_stage), 8)

    def abs_matrix(self) -> torch.Tensor:
        """``A_abs[g, o, (c, r)] = sum_{taps of phase r} |K|`` as computed (sums of at most
        ``kh kw`` non-negative terms: exact ``<=`` computed ``/ (1 - gamma_{kh kw})``)."""
        g, p, _c, _kh, _kw = self.kernel.shape
        (ph, pw), (sh, sw) = self.phases, self.strides
        a = self.kernel.abs()
        sel_h = torch.as_tensor(
            ph[:, None] == np.arange(sh)[None, :], dtype=a.dtype, device=a.device
        )
        sel_w = torch.as_tensor(
            pw[:, None] == np.arange(sw)[None, :], dtype=a.dtype, device=a.device
        )
        return torch.einsum("gocab,ar,bs->gocrs", a, sel_h, sel_w).reshape(g, p, -1)

    def abs_frobenius(self) -> float:
        """``max_groups ||A_abs||_F`` with ``A_abs[o,(c,r)] = sum_{taps of phase r} |K|``."""
        _g, _p, _c, kh, kw = self.kernel.shape
        sums = self.abs_matrix()
        n_terms = kh * kw
        # sums of non-negative terms: exact <= computed / (1 - gamma)
        return up(float(frobenius_upper(sums).max()) / (1 - gamma(n_terms)))

    # ------------------------------------------------------------------ evaluation
    def _axis_matrix(self, axis: int, angle: torch.Tensor) -> torch.Tensor:
        """``(2k, 2 s F)`` real matrix ``[[C, S], [-S, C]]`` (``S = -sin``) with the tap-phase
        selection folded in, for angles ``angle[a, f]`` (shape ``(k, F)``)."""
        phase, s = self.phases[axis], self.strides[axis]
        sel = torch.as_tensor(
            phase[:, None] == np.arange(s)[None, :], dtype=torch.float64, device=angle.device
        )  # (k, s)
        c = (sel[:, :, None] * torch.cos(angle)[:, None, :]).reshape(len(phase), -1)
        sn = (sel[:, :, None] * -torch.sin(angle)[:, None, :]).reshape(len(phase), -1)
        return torch.cat([torch.cat([c, sn], 1), torch.cat([-sn, c], 1)], 0)

    def _grid_angles(self, axis: int, freqs: np.ndarray, m: int) -> torch.Tensor:
        j = np.mod(np.outer(self.positions[axis], freqs), m)  # exact integers
        angle = torch.as_tensor(j, dtype=torch.float64, device=self.kernel.device)
        return angle * (2 * math.pi) / m

    def _point_angles(self, axis: int, omega: torch.Tensor) -> torch.Tensor:
        q = torch.as_tensor(self.positions[axis], dtype=torch.float64, device=omega.device)
        return q[:, None] * omega[None, :]

    def _contract(self, ah: torch.Tensor, aw: torch.Tensor) -> torch.Tensor:
        """Two-stage real DFT: returns complex ``(g, Fh, Fw, p, q)``."""
        g, p, c, kh, kw = self.kernel.shape
        (sh, sw) = self.strides
        fh, fw = ah.shape[1], aw.shape[1]
        pw_mat = self._axis_matrix(1, aw)  # (2kw, 2 sw fw)
        # stage 1 over b: real kernel times [C | S] (first kw rows)
        t = self.kernel @ pw_mat[:kw]  # (g, p, c, kh, 2 sw fw) = [Tr | Ti]
        t = t.reshape(g, p, c, kh, 2, sw * fw).permute(0, 1, 2, 5, 4, 3)
        t = t.reshape(g, p, c, sw * fw, 2 * kh)  # [Tr | Ti] along the last axis
        ph_mat = self._axis_matrix(0, ah)  # (2kh, 2 sh fh)
        m = (t @ ph_mat).reshape(g, p, c, sw, fw, 2, sh, fh)  # [Mr | Mi]
        m = torch.complex(m[..., 0, :, :], m[..., 1, :, :])  # (g, p, c, sw, fw, sh, fh)
        m = m.permute(0, 6, 4, 1, 2, 5, 3)  # (g, fh, fw, p, c, sh, sw)
        return m.reshape(g, fh, fw, p, c * sh * sw)

    def on_grid(self, size: tuple[int, int], rows: np.ndarray | None = None) -> torch.Tensor:
        """Matrices at ``2 pi (u/m_1, v/m_2)``, ``m = size/stride``; ``v`` over the half
        spectrum ``0..m_2//2`` (real kernel: ``M(-w) = conj M(w)``); ``u`` over ``rows``
        (default all). Shape ``(g, len(rows), m_2//2 + 1, p, q)``."""
        m1, m2 = size[0] // self.strides[0], size[1] // self.strides[1]
        rows = np.arange(m1) if rows is None else np.asarray(rows)
        ah = self._grid_angles(0, rows, m1)
        aw = self._grid_angles(1, np.arange(m2 // 2 + 1), m2)
        return self._contract(ah, aw)

    def at_points(self, omega: torch.Tensor) -> torch.Tensor:
        """Matrices at scattered frequencies ``omega`` (``(F, 2)``, float64, entries in
        ``[-2 pi, 2 pi]``): shape ``(g, F, p, q)``. One-stage DFT over all taps."""
        g, p, c, kh, kw = self.kernel.shape
        (sh, sw) = self.strides
        omega = omega.to(self.kernel.device, torch.float64)
        ah = self._point_angles(0, omega[:, 0])  # (kh, F)
        aw = self._point_angles(1, omega[:, 1])  # (kw, F)
        # phase of tap (a, b) at point f, computed as a complex product (error in eta)
        pa = torch.polar(torch.ones_like(ah), -ah)
        pb = torch.polar(torch.ones_like(aw), -aw)
        sel_h = torch.as_tensor(self.phases[0][:, None] == np.arange(sh), device=omega.device)
        sel_w = torch.as_tensor(self.phases[1][:, None] == np.arange(sw), device=omega.device)
        phase = pa[:, None, None, None, :] * pb[None, :, None, None, :]  # (kh, kw, 1, 1, F)
        phase = phase * (sel_h[:, None, :, None, None] & sel_w[None, :, None, :, None])
        phase = phase.reshape(kh * kw, sh * sw * omega.shape[0])  # (taps, (rh, rw, F))
        kflat = self.kernel.reshape(g, p, c, kh * kw)
        mr = kflat @ phase.real
        mi = kflat @ phase.imag
        m = torch.complex(mr, mi).reshape(g, p, c, sh, sw, -1)
        return m.permute(0, 5, 1, 2, 3, 4).reshape(g, -1, p, c * sh * sw)
