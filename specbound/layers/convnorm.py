"""ConvNorm: per-output-channel normalisation in the Fourier domain (Liu et al., NeurIPS 2021).

Liu, Li, Zhai, You, Zhu, Fernandez-Granda & Qu, "Convolutional Normalization: Improving Deep
Convolutional Network Robustness and Training", NeurIPS 2021 (arXiv 2103.00673). Implemented
from the mathematics of the paper, with :mod:`torch.fft`.

The normalisation step
----------------------
On a periodic grid ``G`` (``G = n + e - 1`` per axis for zero padding, the "full" grid on which a
zero-padded conv is a circular one; ``G = n`` for circular padding), with ``e = d (k - 1) + 1``
the dilated extent, let :math:`\\hat\\kappa_{ji}(\\omega)` be the DFT on ``G`` of the kernel
placed at offsets ``d a (mod G)``. Output channel ``j`` of the torus convolution is multiplied,
frequency by frequency, by

.. math::

    v_j(\\omega) = \\Big(\\sum_{i} |\\hat\\kappa_{ji}(\\omega)|^2
                   + \\varepsilon\\,\\overline{s_j}\\Big)^{-1/2},
    \\qquad \\overline{s_j} = \\operatorname{mean}_\\omega \\sum_i |\\hat\\kappa_{ji}(\\omega)|^2
    = \\|\\kappa_j\\|_F^2 ,

(the sum over ``i`` runs over the input channels of ``j``'s group). The regulariser is relative,
so the operator is invariant under ``K -> alpha K``, ``alpha > 0`` (``-K`` flips the sign); the
reference code had no epsilon (NaN for a vanishing frequency). Then the output is read at the
positions of the requested conv: ``y[i] = z[(s i - pad_lo) mod G]`` (crop and stride). Bias,
the affine step (a depthwise conv with bias, identity at initialisation) and
:class:`torch.nn.BatchNorm2d` follow, as in the paper.

What it guarantees (verified on exact dense operators, ``tests/test_layers_convnorm.py``)
-------------------------------------------------------------------------------------------
With ``eps = 0``, exact ``v`` (training mode, or ``track_running_stats=False``) and no
vanishing frequency, before the bias, affine step and BatchNorm:

* **CN-1, channel-wise isometry on the full grid**: output channel ``j`` on the torus ``G`` is
  the row block ``R_j = V_j [C_j1 ... C_jc]``, ``V_j`` the circulant of symbol ``v_j``, and
  ``R_j R_j^T`` has symbol ``v_j^2 sum_i |kappa_ji|^2 = 1``: ``R_j R_j^T = I``, each output
  channel is a co-isometry.
* **CN-2, scale invariance**: ``ConvNorm(alpha K) = sign(alpha) ConvNorm(K)``.
* **CN-3, norm window**: on the torus (circular padding, total pad ``dilation*(k-1)``, stride 1)
  ``1 <= ||J|| <= sqrt(c_out / groups)``: the lower end because one block row has norm 1, the
  upper because ``||J||^2 <= sum_j ||R_j||^2``. After a crop and a stride (rows selected),
  ``||J|| <= sqrt(c_out / groups)``. The upper end is attained when all output filters of a
  group are equal. With ``eps > 0`` each ``R_j R_j^T`` has symbol ``s_j / (s_j + eps mean s_j)
  <= 1``: the upper bound still holds, the isometry is approximate.

What it does not guarantee
--------------------------
* **Not 1-Lipschitz** (CN-N1): the normalised operator has norm ``>= 1`` on the torus and
  typically ``> 1`` (up to ``sqrt(c_out)``).
* **Not a norm reduction** (CN-N2): the step is scale invariant, so a conv of small norm is
  *raised* to norm ``>= 1``; the abstract's "reduce the layerwise spectral norm" holds only for
  large-norm convs.
* The affine depthwise conv and BatchNorm are unconstrained: **the full layer has no Lipschitz
  bound at all**. ``certify`` covers the normalisation step only.
* In eval mode with ``track_running_stats=True`` the step uses the running average of ``v``
  (as BatchNorm's running statistics), so CN-1 holds only approximately (CN-E1).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..certify import Certificate, certify
from ..operators.frequency import FrequencyEngine
from ..spec import AxisPads
from ._base import _pair, pad_module, resolve_geometry
from .padding import pad2d


def convnorm_normalizer(
    kernel: torch.Tensor,
    grid: tuple[int, int],
    *,
    dilation: Any = 1,
    eps: float = 1e-5,
) -> torch.Tensor:
    """The Fourier multipliers ``v_j(omega)`` on ``grid`` (module docstring), shape
    ``(c_out, G_h, G_w // 2 + 1)`` (``rfft2`` half-spectrum). Differentiable.

    Parameters
    ----------
    kernel : torch.Tensor
        ``(c_out, c_in // groups, kh, kw)``; the groups are implicit in the second axis.
    grid : (G_h, G_w)
        The periodic grid.
    dilation : int or pair
    eps : float
        Relative regulariser ``>= 0``.

    References
    ----------
    * S. Liu, X. Li, Y. Zhai, C. You, Z. Zhu, C. Fernandez-Granda and Q. Qu,
      "Convolutional Normalization: Improving Deep Convolutional Network Robustness and
      Training", NeurIPS 2021.
    * H. Sedghi, V. Gupta and P. M. Long, "The Singular Values of Convolutional Layers",
      ICLR 2019, Thm. 6 (the per-frequency view it rests on).

    Examples
    --------
    >>> import torch
    >>> from specbound import layers
    >>> kernel = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    >>> layers.convnorm_normalizer(kernel, (8, 8)).shape  # rfft2 half-grid
    torch.Size([3, 8, 5])
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")
    grid = tuple(grid)
    engine = FrequencyEngine(kernel, grid, dilation=_pair(dilation, "dilation"))
    kappa = engine.wrapped()  # (G_h, G_w, c_out, c_in_g): the kernel at d*a mod G
    spectrum = engine.on_grid_fft()[:, 0]  # (F, c_out, c_in_g), rfft2 half-spectrum
    power = (spectrum.real**2 + spectrum.imag**2).sum(dim=-1).T  # (c_out, F)
    power = power.reshape(-1, grid[0], grid[1] // 2 + 1)
    mean = (kappa**2).sum(dim=(0, 1, 3))  # Parseval: mean over the full grid
    tiny = torch.finfo(power.dtype).tiny
    return torch.rsqrt((power + eps * mean[:, None, None]).clamp_min(tiny))


class ConvNorm2d(nn.Module):
    """Convolution followed by ConvNorm's per-channel Fourier normalisation (Liu et al. 2021).

    **Not a 1-Lipschitz layer**: see the module docstring for exactly what holds (channel-wise
    isometry on the full grid; norm in ``[1, sqrt(c_out/groups)]`` before the affine step and
    BatchNorm) and what does not (it can raise the norm; the affine step and BatchNorm are
    unconstrained).

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias
        As :class:`torch.nn.Conv2d` (``padding`` also accepts ``"full"`` and a 4-tuple
        ``(left, right, top, bottom)``). ``bias`` is added after the normalisation.
    padding_mode : {"zeros", "circular"}
        ``"zeros"``: normalised on the full grid ``n + e - 1`` (the reference code's
        operator), each pad at most ``dilation*(k-1)``. ``"circular"``: normalised on the
        ``n``-torus, total pad at most ``dilation*(k-1)`` per axis. Reflect/replicate are
        refused (no periodic grid on which the operator is a convolution).
    affine : bool
        Learned depthwise conv (kernel ``kernel_size``, "same" zero padding, identity at
        initialisation) with bias after the normalisation.
    bn : bool
        :class:`torch.nn.BatchNorm2d` at the end.
    eps : float
        Relative regulariser of the normaliser (``>= 0``).
    momentum : float or None
        Running average of ``v`` for eval (``None``: cumulative average).
    track_running_stats : bool
        Keep the running average and use it in eval; ``False`` always uses the exact ``v`` of
        the current weights (cached in eval while the weights do not change).
    detach_normalizer : bool
        Do not backpropagate through ``v`` in training (the reference code's behaviour).

    Notes
    -----
    The running estimate is tied to one grid size; a forward at another input size with
    ``track_running_stats=True`` raises ``ValueError``. If eval runs before any training step,
    the running estimate is initialised with the exact ``v`` of the current weights.

    References
    ----------
    * S. Liu, X. Li, Y. Zhai, C. You, Z. Zhu, C. Fernandez-Granda and Q. Qu,
      "Convolutional Normalization: Improving Deep Convolutional Network Robustness and
      Training", NeurIPS 2021.
    * H. Sedghi, V. Gupta and P. M. Long, "The Singular Values of Convolutional Layers",
      ICLR 2019, Thm. 6 (the per-frequency view it rests on).

    Examples
    --------
    >>> import torch
    >>> from specbound import layers
    >>> _ = torch.manual_seed(0)
    >>> layer = layers.ConvNorm2d(2, 3, 3, padding=1, dtype=torch.float64)
    >>> layer(torch.randn(2, 2, 8, 8, dtype=torch.float64)).shape
    torch.Size([2, 3, 8, 8])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = False,
        padding_mode: str = "zeros",
        *,
        affine: bool = True,
        bn: bool = True,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        track_running_stats: bool = True,
        detach_normalizer: bool = True,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if padding_mode not in ("zeros", "circular"):
            raise ValueError(
                f"ConvNorm2d supports padding_mode 'zeros' or 'circular', got "
                f"padding_mode={padding_mode!r}: the normalisation needs a periodic grid"
            )
        spec, ks, pads = resolve_geometry(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            padding_mode=padding_mode,
        )
        (dh, dw) = spec.dilation
        eh, ew = dh * (ks[0] - 1), dw * (ks[1] - 1)
        (top, bottom), (left, right) = pads
        if padding_mode == "zeros" and (max(top, bottom) > eh or max(left, right) > ew):
            raise ValueError(
                f"ConvNorm2d with zero padding needs each pad <= dilation*(k-1)=({eh}, {ew}) "
                f"(outputs beyond the full grid); got padding={padding!r} -> "
                f"((top, bottom), (left, right))={pads}"
            )
        if padding_mode == "circular" and (top + bottom > eh or left + right > ew):
            raise ValueError(
                f"ConvNorm2d with circular padding needs a total pad <= dilation*(k-1)=({eh}, "
                f"{ew}) per axis; got padding={padding!r} -> ((top, bottom), (left, right))={pads}"
            )
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps!r}")
        if momentum is not None and not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1] or None, got {momentum!r}")
        factory = {"device": device, "dtype": dtype}
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, ks
        self.stride, self.dilation, self.groups = spec.stride, spec.dilation, spec.groups
        self.padding, self.padding_mode, self.pads = padding, padding_mode, pads
        self.eps, self.momentum = eps, momentum
        self.track_running_stats, self.detach_normalizer = track_running_stats, detach_normalizer
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, *ks, **factory))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # torch.nn.Conv2d's default
        self.bias = nn.Parameter(torch.zeros(out_channels, **factory)) if bias else None
        if affine:
            aw = torch.zeros(out_channels, 1, *ks, **factory)
            aw[:, 0, (ks[0] - 1) // 2, (ks[1] - 1) // 2] = 1.0
            self.affine_weight = nn.Parameter(aw)
            self.affine_bias = nn.Parameter(torch.zeros(out_channels, **factory))
        else:
            self.register_parameter("affine_weight", None)
            self.register_parameter("affine_bias", None)
        self.bn = nn.BatchNorm2d(out_channels, **factory) if bn else None
        self.register_buffer("running_v", torch.zeros(0, **factory))
        self.register_buffer("running_grid", torch.zeros(2, dtype=torch.long, device=device))
        self.register_buffer(
            "num_batches_tracked", torch.zeros((), dtype=torch.long, device=device)
        )
        self._v_cache: tuple[tuple, torch.Tensor] | None = None

    # ------------------------------------------------------------------ geometry
    @property
    def extent(self) -> tuple[int, int]:
        return (
            self.dilation[0] * (self.kernel_size[0] - 1) + 1,
            self.dilation[1] * (self.kernel_size[1] - 1) + 1,
        )

    def grid(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """The periodic grid of the normalisation for an input of size ``(H, W)``."""
        h, w = input_size
        if self.padding_mode == "circular":
            return (h, w)
        eh, ew = self.extent
        return (h + eh - 1, w + ew - 1)

    def out_size(self, input_size: tuple[int, int]) -> tuple[int, int]:
        (top, bottom), (left, right) = self.pads
        (eh, ew), (sh, sw) = self.extent, self.stride
        h, w = input_size
        return ((h + top + bottom - eh) // sh + 1, (w + left + right - ew) // sw + 1)

    # ------------------------------------------------------------------ normaliser
    def exact_normalizer(self, grid: tuple[int, int]) -> torch.Tensor:
        """``v`` of the current weights on ``grid`` (differentiable)."""
        return convnorm_normalizer(self.weight, grid, dilation=self.dilation, eps=self.eps)

    def _cached_exact(self, grid: tuple[int, int]) -> torch.Tensor:
        w = self.weight
        key = (w.data_ptr(), w._version, w.dtype, str(w.device), tuple(grid))
        if self._v_cache is None or self._v_cache[0] != key:
            with torch.no_grad():
                self._v_cache = (key, self.exact_normalizer(grid))
        return self._v_cache[1]

    def normalizer(self, grid: tuple[int, int]) -> torch.Tensor:
        """The ``v`` that the forward pass uses now (mode- and state-dependent)."""
        if self.training:
            if self.detach_normalizer:
                with torch.no_grad():
                    v = self.exact_normalizer(grid)
            else:
                v = self.exact_normalizer(grid)
            if self.track_running_stats:
                self._update_running(v.detach(), grid)
            return v
        if self.track_running_stats:
            if self.running_v.numel() == 0:
                self._update_running(self._cached_exact(grid), grid)
            self._check_grid(grid)
            return self.running_v
        if torch.is_grad_enabled() and self.weight.requires_grad and not self.detach_normalizer:
            return self.exact_normalizer(grid)
        return self._cached_exact(grid)

    def _check_grid(self, grid: tuple[int, int]) -> None:
        tracked = tuple(int(g) for g in self.running_grid)
        if tracked != tuple(grid):
            raise ValueError(
                f"ConvNorm2d tracks its running normaliser on the grid {tracked} but this input "
                f"needs the grid {tuple(grid)} (another input_size); use the training input "
                "size, or track_running_stats=False"
            )

    @torch.no_grad()
    def _update_running(self, v: torch.Tensor, grid: tuple[int, int]) -> None:
        if self.running_v.numel() == 0:
            self.running_v = v.clone()
            self.running_grid.copy_(torch.tensor(grid))
            self.num_batches_tracked.fill_(1)
            return
        self._check_grid(grid)
        self.num_batches_tracked.add_(1)
        m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        self.running_v.mul_(1.0 - m).add_(v, alpha=m)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "running_v"
        if key in state_dict:  # the running estimate is shaped by the tracked grid
            self.running_v = torch.empty_like(state_dict[key], device=self.running_v.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ------------------------------------------------------------------ forward
    def _positions(self, input_size: tuple[int, int], grid: tuple[int, int]):
        (oh, ow), (sh, sw) = self.out_size(input_size), self.stride
        (top, _), (left, _) = self.pads
        dev = self.weight.device
        rows = (sh * torch.arange(oh, device=dev) - top) % grid[0]
        cols = (sw * torch.arange(ow, device=dev) - left) % grid[1]
        return rows, cols

    def normalized_conv(self, x: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        """The normalisation step alone (no bias, affine step or BatchNorm)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input (N, {self.in_channels}, H, W), got shape {tuple(x.shape)}"
            )
        size = (x.shape[-2], x.shape[-1])
        if min(self.out_size(size)) < 1:
            raise ValueError(f"the output is empty for input size {size}")
        grid = self.grid(size)
        if v is None:
            v = self.normalizer(grid)
        eh, ew = self.extent
        if self.padding_mode == "zeros":
            x = F.pad(x, (0, grid[1] - size[1], 0, grid[0] - size[0]))
        x = pad2d(x, ((0, eh - 1), (0, ew - 1)), "circular")
        z = F.conv2d(x, self.weight, None, 1, 0, self.dilation, self.groups)
        z = torch.fft.irfft2(torch.fft.rfft2(z) * v, s=grid)
        rows, cols = self._positions(size, grid)
        return z.index_select(-2, rows).index_select(-1, cols)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.normalized_conv(x)
        if self.bias is not None:
            y = y + self.bias[:, None, None]
        if self.affine_weight is not None:
            y = self._affine(y)
        if self.bn is not None:
            y = self.bn(y)
        return y

    def _affine_pads(self) -> AxisPads:
        kh, kw = self.kernel_size
        return (((kh - 1) // 2, kh - 1 - (kh - 1) // 2), ((kw - 1) // 2, kw - 1 - (kw - 1) // 2))

    def _affine(self, y: torch.Tensor) -> torch.Tensor:
        y = pad2d(y, self._affine_pads(), "zeros")
        return F.conv2d(y, self.affine_weight, self.affine_bias, groups=self.out_channels)

    # ------------------------------------------------------------------ export / certify
    def normalized_kernel(self, input_size: Any) -> tuple[torch.Tensor, AxisPads]:
        """Kernel and pads ``((top, bottom), (left, right))`` of a plain conv equal to the
        normalisation step at ``input_size`` (with the ``v`` the forward would use now).

        The normalised torus correlation has the ``G``-periodic kernel
        ``kappa' = irfft2(v * rfft2(kappa))``. Zero padding: ``y[i] = sum_j kappa'[(j - q_i)
        mod G] x[j]`` with ``q_i = s i - pad_lo``, a zero-padded conv with a kernel of length
        ``n + G - 1`` and pads ``(pad_lo + n - 1, pad_hi + n - 1)``. Circular padding: a
        circular conv with the ``n``-periodic kernel rolled by ``pad_lo``, pads
        ``(0, s (n_out - 1))``.
        """
        size = _pair(input_size, "input_size")
        grid = self.grid(size)
        with torch.no_grad():
            v = self.normalizer(grid).detach()
            engine = FrequencyEngine(self.weight.detach(), grid, dilation=self.dilation)
            kappa = engine.wrapped().permute(2, 3, 0, 1)  # (c_out, c_in_g, G_h, G_w)
            kprime = torch.fft.irfft2(torch.fft.rfft2(kappa) * v[:, None], s=grid)
        (top, bottom), (left, right) = self.pads
        dev = kprime.device
        if self.padding_mode == "zeros":
            idx = [
                (torch.arange(n + g - 1, device=dev) - (n - 1)) % g
                for n, g in zip(size, grid, strict=True)
            ]
            pads = (
                (top + size[0] - 1, bottom + size[0] - 1),
                (left + size[1] - 1, right + size[1] - 1),
            )
        else:
            (oh, ow), (sh, sw) = self.out_size(size), self.stride
            idx = [
                (torch.arange(g, device=dev) + lo) % g
                for g, lo in zip(grid, (top, left), strict=True)
            ]
            pads = ((0, sh * (oh - 1)), (0, sw * (ow - 1)))
        kernel = kprime.index_select(-2, idx[0]).index_select(-1, idx[1])
        return kernel, pads

    def to_conv2d(self, input_size: Any) -> nn.Module:
        """Plain modules reproducing this layer's output at ``input_size``: padding, a conv
        with the normalised kernel (:meth:`normalized_kernel`), the affine depthwise conv and
        a copy of the BatchNorm (its current mode and statistics)."""
        import copy

        kernel, pads = self.normalized_kernel(input_size)
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            tuple(kernel.shape[-2:]),
            stride=self.stride,
            groups=self.groups,
            bias=self.bias is not None,
            device=kernel.device,
            dtype=kernel.dtype,
        )
        with torch.no_grad():
            conv.weight.copy_(kernel)
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        mods: list[nn.Module] = [pad_module(pads, self.padding_mode), conv]
        if self.affine_weight is not None:
            affine = nn.Conv2d(
                self.out_channels,
                self.out_channels,
                self.kernel_size,
                groups=self.out_channels,
                device=kernel.device,
                dtype=kernel.dtype,
            )
            with torch.no_grad():
                affine.weight.copy_(self.affine_weight)
                affine.bias.copy_(self.affine_bias)
            mods += [pad_module(self._affine_pads(), "zeros"), affine]
        if self.bn is not None:
            mods.append(copy.deepcopy(self.bn))
        return nn.Sequential(*mods)

    def certify(self, input_size: Any, *, rtol: float = 1e-3) -> Certificate:
        """Certified bracket on the norm of the **normalisation step only** at ``input_size``
        (the affine step and BatchNorm have no bound), by :func:`specbound.certify`."""
        kernel, pads = self.normalized_kernel(input_size)
        return certify(
            kernel,
            self.padding_mode,
            input_size=input_size,
            pad=pads,
            stride=self.stride,
            groups=self.groups,
            rtol=rtol,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding!r}, dilation={self.dilation}, "
            f"groups={self.groups}, padding_mode={self.padding_mode!r}, eps={self.eps}, "
            f"affine={self.affine_weight is not None}, bn={self.bn is not None}, "
            f"track_running_stats={self.track_running_stats}"
        )
