"""The frequency engine: polyphase frequency matrices of a convolution kernel, with their
entrywise rounding bound.

One axis, one tap ``a``: the tap reads input offset ``t_a = d*a - lo``; with stride ``s`` it
is written ``t_a = s*q_a + r_a`` (``0 <= r_a < s``): the tap sits at position ``q_a`` of the
polyphase channel ``r_a`` (Senderovich et al. 2022, Sec. 3). With ``d`` spatial axes, tap
``t = (a_1, ..., a_d)`` has phase ``r_t = (r_{a_1}, ..., r_{a_d})`` and position ``q_t``, and
the frequency matrix of group ``g`` at ``omega`` in ``R^d`` is

.. math::  M(\\omega)_{o,(c, r)} = \\sum_{t:\\, r_t = r} K[o, c, t]\\,
           e^{-i \\sum_j \\omega_j q_{t,j}},

columns ordered ``(c, r_1, ..., r_d)`` in C order. On the torus grid
``omega = 2 pi u / m`` (``m = n / s`` per axis, ``s`` dividing ``n``) these matrices carry
every singular value of the strided circular layer (Sedghi et al. 2019, Thm. 6, with the
kernel wrapped modulo ``m``, never cropped); as a function of ``omega`` they are the symbol,
whose supremum is the every-size norm (Delattre et al. 2024).

Evaluation (the one form, grid or points): per axis the phase ``e^{-i theta}`` of each tap
(``theta = (2 pi) j / m`` with the integer ``j = u q mod m`` on the grid, ``theta = q omega``
at points), the tap phase as the product of the ``d`` axis phases, and one real inner
product over the taps for the real part and one for the imaginary part; on the grid the taps
that land on one point modulo ``m`` are summed first (they share their computed phase). In
float64 every computed entry then satisfies (docs/certify.md, lemma L2; points with
``|omega_j| <= 2 pi``)
``|M~ - M| <= eta * A_abs`` entrywise, with ``A_abs[o, (c, r)] = sum_{t: r_t = r}
|K[o, c, t]|`` and ``eta`` of :meth:`FrequencyEngine.eta`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ..rigorous.rounding import LIBM_ULPS, U, frobenius_upper, gamma, up

IntSeq = int | Sequence[int]


def polyphase_positions(
    k: int, lo: int, stride: int, dilation: int
) -> tuple[np.ndarray, np.ndarray]:
    """Phase ``r_a`` and (unwrapped) position ``q_a`` of each tap of one axis:
    ``d*a - lo = s*q_a + r_a`` with ``0 <= r_a < s``."""
    offset = dilation * np.arange(k, dtype=np.int64) - lo
    phase = np.mod(offset, stride)
    return phase, (offset - phase) // stride


def _per_axis(value: IntSeq | None, d: int, name: str, default: int) -> tuple[int, ...]:
    if value is None:
        return (default,) * d
    if isinstance(value, (int, np.integer)):
        return (int(value),) * d
    out = tuple(int(v) for v in value)
    if len(out) != d:
        raise ValueError(f"{name} must give one int per spatial axis ({d}), got {value!r}")
    return out


class FrequencyEngine:
    """Frequency matrices of a kernel on a torus grid or at points, chunked, on any device.

    Parameters
    ----------
    kernel : torch.Tensor
        Real, shape ``(*batch, c_out, c_in // groups, *k)`` with ``d`` spatial axes. Its
        dtype and device are those of every result; results are differentiable in it.
    size : int or sequence of int, optional
        Input size per axis (needed for the grid; each a multiple of the stride).
    lo : int or sequence of int
        Low pad per axis: tap ``a`` reads input offset ``d*a - lo``.
    stride, dilation : int or sequence of int
    groups : int
    ndim : int, optional
        Number of spatial axes ``d``; default ``len(size)`` if ``size`` is a sequence, else
        ``kernel.ndim - 2``.

    Notes
    -----
    Matrices come frequency-major: shape ``(F, *batch, groups, p, q)`` with
    ``p = c_out / groups`` and ``q = c_in/groups * prod(stride)``. Grid frequencies are
    indexed flat in C order over ``(u_1, ..., u_d)``, ``0 <= u_j < m_j``; the half spectrum
    keeps ``u_d <= m_d // 2`` (for a real kernel ``M(-omega) = conj M(omega)``, with the same
    singular values), the ``rfftn`` layout.

    References
    ----------
    * H. Sedghi, V. Gupta and P. M. Long, "The Singular Values of Convolutional Layers",
      ICLR 2019, Thm. 6.
    * A. Senderovich, E. Bulatova, A. Obukhov and M. Rakhuba, "Towards Practical Control of
      Singular Values of Convolutional Layers", NeurIPS 2022, Sec. 3.
    * docs/certify.md, lemma L2 (the entrywise error bound).

    Examples
    --------
    >>> import torch
    >>> from specbound.operators.frequency import FrequencyEngine
    >>> engine = FrequencyEngine(torch.ones(1, 1, 3, 3, dtype=torch.float64), (4, 4), lo=1)
    >>> engine.on_grid(half=False).shape  # (frequencies, groups, c_out, c_in)
    torch.Size([16, 1, 1, 1])
    >>> float(engine.on_grid()[0].abs().max())
    9.0
    """

    def __init__(
        self,
        kernel: torch.Tensor,
        size: IntSeq | None = None,
        *,
        lo: IntSeq = 0,
        stride: IntSeq = 1,
        dilation: IntSeq = 1,
        groups: int = 1,
        ndim: int | None = None,
    ) -> None:
        if not isinstance(kernel, torch.Tensor) or kernel.is_complex():
            raise TypeError(f"kernel must be a real torch.Tensor, got {type(kernel).__name__}")
        if ndim is None:
            ndim = len(size) if isinstance(size, Sequence) else kernel.ndim - 2
        if ndim < 1 or kernel.ndim < ndim + 2:
            raise ValueError(
                f"kernel must have shape (*batch, c_out, c_in_g, *k) with {ndim} spatial axes, "
                f"got {tuple(kernel.shape)}"
            )
        d = ndim
        self.kernel = kernel
        self.ndim = d
        self.k = tuple(kernel.shape[-d:])
        self.batch = tuple(kernel.shape[: -d - 2])
        c_out, c_in_g = kernel.shape[-d - 2], kernel.shape[-d - 1]
        if not isinstance(groups, (int, np.integer)) or groups < 1 or c_out % groups:
            raise ValueError(f"groups must be a positive int dividing c_out={c_out}, got {groups}")
        self.groups = int(groups)
        self.lo = _per_axis(lo, d, "lo", 0)
        self.stride = _per_axis(stride, d, "stride", 1)
        self.dilation = _per_axis(dilation, d, "dilation", 1)
        if min(self.stride) < 1 or min(self.dilation) < 1:
            raise ValueError(f"stride and dilation must be >= 1, got {stride!r}, {dilation!r}")
        self.size = None if size is None else _per_axis(size, d, "size", 1)
        if self.size is not None and any(
            n < 1 or n % s for n, s in zip(self.size, self.stride, strict=True)
        ):
            raise ValueError(
                f"size must be positive multiples of the stride {self.stride}, got {self.size}"
            )
        axes = [
            polyphase_positions(kk, lo_, s, dd)
            for kk, lo_, s, dd in zip(self.k, self.lo, self.stride, self.dilation, strict=True)
        ]
        self.phases = tuple(a[0] for a in axes)
        self.positions = tuple(a[1] for a in axes)
        self.c_in_g = c_in_g
        self.shape = (c_out // self.groups, c_in_g * math.prod(self.stride))

    # ------------------------------------------------------------------ geometry
    @property
    def grid(self) -> tuple[int, ...]:
        """The polyphase grid ``m = size / stride`` per axis."""
        if self.size is None:
            raise ValueError("this engine has no size: pass size=... for the torus grid")
        return tuple(n // s for n, s in zip(self.size, self.stride, strict=True))

    def grid_shape(self, half: bool = True) -> tuple[int, ...]:
        """Frequencies per axis: ``m``, the last one ``m_d // 2 + 1`` for the half spectrum."""
        m = self.grid
        return (*m[:-1], m[-1] // 2 + 1) if half else m

    def n_frequencies(self, half: bool = True) -> int:
        return math.prod(self.grid_shape(half))

    def frequencies(self, index: Any, half: bool = True) -> np.ndarray:
        """Integer frequencies ``(F, d)`` of flat grid indices."""
        idx = np.asarray(index, dtype=np.int64).reshape(-1)
        return np.stack(np.unravel_index(idx, self.grid_shape(half)), axis=-1)

    def degree(self) -> tuple[int, ...]:
        """Per-axis span ``max q - min q`` of the tap positions."""
        return tuple(int(q.max() - q.min()) for q in self.positions)

    # ------------------------------------------------------------------ evaluation
    def _taps(self, kernel: torch.Tensor, phases: Sequence[np.ndarray]) -> torch.Tensor:
        """``kernel`` (``(*batch, c_out, c_in_g, *t)``) as ``(N, prod(stride), T)`` with each
        tap in the column of its phase (exact zeros elsewhere): ``N = batch * c_out * c_in_g``,
        ``T = prod(t)``; ``phases[j]`` are the per-axis phases of the taps."""
        d, s = self.ndim, self.stride
        t = math.prod(len(r) for r in phases)
        flat = kernel.reshape(-1, t)
        if math.prod(s) == 1:
            return flat[:, None, :]
        hit = np.ones((1, 1), dtype=bool)  # (taps so far, phases so far), C order
        for j in range(d):
            axis = phases[j][:, None] == np.arange(s[j])[None, :]  # (t_j, s_j)
            hit = (hit[:, None, :, None] & axis[None, :, None, :]).reshape(
                hit.shape[0] * len(phases[j]), hit.shape[1] * s[j]
            )
        one_hot = torch.as_tensor(hit.T, dtype=flat.dtype, device=flat.device)  # (S, T)
        return flat[:, None, :] * one_hot

    def _evaluate(
        self, kernel: torch.Tensor, phases: Sequence[np.ndarray], angles: list[torch.Tensor]
    ) -> torch.Tensor:
        """Matrices from per-axis angles ``angles[j]`` of shape ``(F, t_j)``."""
        phase = torch.polar(torch.ones_like(angles[0]), -angles[0])
        for a in angles[1:]:
            p = torch.polar(torch.ones_like(a), -a)
            phase = (phase[..., :, None] * p[..., None, :]).flatten(-2)
        phase = phase.T  # (T, F)
        taps = self._taps(kernel, phases)  # (N, S, T)
        n, s, t = taps.shape
        f = phase.shape[1]
        flat = taps.reshape(n * s, t)
        out = torch.complex(flat @ phase.real, flat @ phase.imag)  # (N*S, F)
        out = out.reshape(*self.batch, self.groups, self.shape[0], self.c_in_g * s, f)
        return out.movedim(-1, 0)

    def _merged(self) -> tuple[torch.Tensor, list[np.ndarray], list[np.ndarray]]:
        """The kernel with the taps that land on one grid point summed (the wrapping), and
        per axis the phase ``r`` and position ``q mod m`` of each merged tap. Taps merged
        here share their computed phase on the grid (the same integer ``u q mod m``), so the
        sum is one more order of the tap inner product: the bound is unchanged."""
        k = self.kernel
        phases, positions = [], []
        for j, m in enumerate(self.grid):
            key, inverse = np.unique(
                self.phases[j] * m + np.mod(self.positions[j], m), return_inverse=True
            )
            axis = k.ndim - self.ndim + j
            shape = list(k.shape)
            shape[axis] = len(key)
            index = torch.as_tensor(inverse.reshape(-1), dtype=torch.long, device=k.device)
            k = k.new_zeros(shape).index_add(axis, index, k)
            phases.append(key // m)
            positions.append(key % m)
        return k, phases, positions

    def _grid_angles(self, u: np.ndarray, positions: list[np.ndarray]) -> list[torch.Tensor]:
        dev, real = self.kernel.device, self.kernel.dtype
        out = []
        for j, m in enumerate(self.grid):
            turns = np.mod(np.outer(u[:, j], positions[j]), m)  # exact integers
            angle = torch.as_tensor(turns, dtype=real, device=dev)
            out.append(angle * (2 * math.pi) / m)
        return out

    def on_grid(self, index: Any = None, *, half: bool = True) -> torch.Tensor:
        """Matrices at flat grid indices (default: every frequency of the spectrum):
        shape ``(F, *batch, groups, p, q)``."""
        if index is None:
            index = np.arange(self.n_frequencies(half))
        elif isinstance(index, torch.Tensor):
            index = index.detach().cpu().numpy()
        kernel, phases, positions = self._merged()
        angles = self._grid_angles(self.frequencies(index, half), positions)
        return self._evaluate(kernel, phases, angles)

    def chunks(
        self, *, half: bool = True, chunk: int | None = None
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(start, matrices)`` for consecutive blocks of at most ``chunk`` grid
        frequencies (default: about 2**27 bytes of matrices per block)."""
        n = self.n_frequencies(half)
        if chunk is None:
            per = max(1, math.prod(self.batch) * self.groups * self.shape[0] * self.shape[1])
            chunk = max(1, 2**27 // (16 * per))
        if int(chunk) < 1:
            raise ValueError(f"chunk must be a positive int, got {chunk!r}")
        for start in range(0, n, int(chunk)):
            yield start, self.on_grid(np.arange(start, min(n, start + int(chunk))), half=half)

    def at_points(self, omega: Any) -> torch.Tensor:
        """Matrices at continuous frequencies ``omega`` (``(F, d)`` radians, finite):
        shape ``(F, *batch, groups, p, q)``."""
        dev, real = self.kernel.device, self.kernel.dtype
        w = torch.as_tensor(omega, device=dev).to(real)
        if w.ndim != 2 or w.shape[1] != self.ndim:
            raise ValueError(f"omega must have shape (F, {self.ndim}), got {tuple(w.shape)}")
        if not bool(torch.isfinite(w).all()):
            raise ValueError("omega must be finite")
        angles = [
            w[:, j, None] * torch.as_tensor(self.positions[j], dtype=real, device=dev)[None]
            for j in range(self.ndim)
        ]
        return self._evaluate(self.kernel, self.phases, angles)

    def wrapped(self) -> torch.Tensor:
        """The polyphase kernel wrapped on the grid, grid axes first:
        ``(*m, *batch, c_out, c_in_g * prod(stride))`` (taps on one position summed)."""
        m, s, d = self.grid, self.stride, self.ndim
        target = np.zeros((1,) * d, dtype=np.int64)
        for j in range(d):
            qj = np.mod(self.positions[j], m[j])
            shape = [self.k[i] if i == j else 1 for i in range(d)]
            target = target * m[j] + qj.reshape(shape)
        for j in range(d):
            shape = [self.k[i] if i == j else 1 for i in range(d)]
            target = target * s[j] + self.phases[j].reshape(shape)
        lead = self.kernel.shape[:-d]  # (*batch, c_out, c_in_g)
        values = self.kernel.flatten(-d).movedim(-1, 0)
        index = torch.as_tensor(target.reshape(-1), dtype=torch.long, device=self.kernel.device)
        out = self.kernel.new_zeros((math.prod(m) * math.prod(s), *lead))
        out = out.index_put((index,), values, accumulate=True)
        out = out.reshape(*m, *s, *lead).movedim(tuple(range(d, 2 * d)), tuple(range(-d, 0)))
        return out.reshape(*m, *lead[:-1], lead[-1] * math.prod(s))

    def on_grid_fft(self, *, half: bool = True) -> torch.Tensor:
        """Every grid matrix by an FFT of :meth:`wrapped` (no error bound claimed; cheaper
        than :meth:`on_grid` for kernels with many taps): same layout as :meth:`on_grid`."""
        axes = tuple(range(self.ndim))
        fft = torch.fft.rfftn if half else torch.fft.fftn
        spec = fft(self.wrapped(), dim=axes)
        p, q = self.shape
        return spec.reshape(-1, *self.batch, self.groups, p, q)

    # ------------------------------------------------------------------ error bound
    def position_bound(self) -> int:
        return int(max(3, *(int(np.abs(q).max()) for q in self.positions)))

    def phase_error(self) -> float:
        """Bound on ``|phi~ - phi|`` of each computed axis phase ``phi = e^{-i theta}``."""
        theta = 2 * math.pi * (self.position_bound() + 1) * U * 1.01
        return up(math.sqrt(2.0) * (theta + 2 * LIBM_ULPS * U))

    def eta(self) -> float:
        """Relative entrywise error (float64): ``|M~ - M| <= eta * A_abs``."""
        e_phi, r2 = self.phase_error(), math.sqrt(2.0)
        d, t = self.ndim, math.prod(self.k)
        # (1 + e_phi)^d (1 + sqrt2 gamma_2)^(d-1) - 1, without cancellation (log1p/expm1 are
        # accurate to a few ulps; 16 roundings allowed)
        e_prod = up(math.expm1(d * math.log1p(e_phi) + (d - 1) * math.log1p(r2 * gamma(2))), 16)
        return up(r2 * gamma(max(t, 2)) * (1 + e_prod) + e_prod, 8)

    def abs_matrix(self) -> torch.Tensor:
        """``A_abs`` per group: ``(*batch, groups, p, q)``, as computed (a sum of at most
        ``prod(k)`` non-negative terms per entry)."""
        taps = self._taps(self.kernel.abs(), self.phases)  # (N, S, T)
        p, q = self.shape
        return taps.sum(-1).reshape(*self.batch, self.groups, p, q)

    def entry_bound(self) -> torch.Tensor:
        """Entrywise bound ``(*batch, groups, p, q)`` on ``|M~(omega) - M(omega)|`` for every
        ``omega`` evaluated by :meth:`on_grid` or :meth:`at_points` with ``|omega_j| <= 2 pi``
        (float64 only; the bound is rounded up by the ``(1 + 4u)`` factor)."""
        self._require_float64()
        t = math.prod(self.k)
        factor = self.eta() / (1 - gamma(t)) * (1 + 4 * U)
        return self.abs_matrix() * factor

    def error_bound(self) -> float:
        """Bound on ``||M~(omega) - M(omega)||_2`` over every group, batch element and
        ``omega``: ``eta * max ||A_abs||_F`` rounded up (float64 only)."""
        self._require_float64()
        t = math.prod(self.k)
        a = self.abs_matrix().detach()
        fro = float(frobenius_upper(a).max()) if a.numel() else 0.0
        return up(self.eta() * up(fro / (1 - gamma(t))))

    def _require_float64(self) -> None:
        if self.kernel.dtype != torch.float64:
            raise ValueError(
                f"the error bound is stated for float64 kernels, got {self.kernel.dtype}"
            )
