"""SLL residual blocks with spectral-rescaling weights (Araujo et al., ICLR 2023).

Araujo, Havens, Delattre, Allauzen & Hu, "A Unified Algebraic Perspective on Lipschitz Neural
Networks", ICLR 2023, Thm. 3 (SDP-based Lipschitz layers): the block

.. math::

    h(x) = x - 2\\, C^\\top T^{-1} \\sigma(C x + b)

is 1-Lipschitz whenever ``C C^T <= T`` (Loewner order) with ``T`` diagonal and ``sigma``
acting entrywise with slopes in ``[0, 1]`` (ReLU). Proof: ``sigma(u) - sigma(u') = D (u - u')``
with ``D`` diagonal in ``[0, 1]``, so ``h(x) - h(x') = (I - 2 C^T T^{-1} D C)(x - x')``. The
matrix ``C^T T^{-1} D C`` is symmetric PSD with largest eigenvalue
``||D^{1/2} T^{-1/2} C||^2 <= ||T^{-1/2} C||^2 <= 1``, so ``I - 2 C^T T^{-1} D C`` has eigenvalues
in ``[-1, 1]``.

``T`` here is the residual spectral-rescaling factor with learnable positive weights ``q``
(Delattre et al. 2024, arXiv 2402.00240; docs/proofs.md, theorem SR5),
:func:`specbound.layers.rescaling_factors_residual`:
``t_i = (sum_{j, delta} |K_T[i, j, delta]| q_j / q_i)^{2^{-(T-1)}}`` with ``C C^T <= diag(t)``
for every ``q > 0`` (weighted Schur test and Löwner–Heinz). ``n_iter = 1`` is the SLL matrix
``T_ii = sum_j |C C^T|_ij q_j / q_i`` of the paper.

For a conv ``C`` is the padded convolution ``x -> conv(pad(x), K)`` (stride 1) and ``C^T`` its
exact adjoint (a transposed convolution followed by the adjoint of the padding), so the block
maps an ``(H, W)`` input to an ``(H, W)`` output. Zero padding (any pad) and circular padding
(total pad ``<= dilation*(k-1)``) keep ``C C^T <= diag(t)`` (row selection of the plane
operator, as in :mod:`specbound.layers.rescaling`); reflect/replicate are refused.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..certify import Certificate, certify
from ._base import linear_certify, padding_compensation, resolve_geometry
from .padding import pad2d, pad2d_adjoint
from .rescaling import rescaling_factors_residual


def _check_n_iter(n_iter: Any) -> int:
    if not isinstance(n_iter, int) or isinstance(n_iter, bool) or n_iter < 1:
        raise ValueError(f"n_iter must be an int >= 1, got {n_iter!r}")
    return n_iter


def _inverse(t: torch.Tensor) -> torch.Tensor:
    """``1/t`` where ``t > 0``, 0 where ``t = 0`` (a zero hidden channel: pseudo-inverse)."""
    return torch.where(t > 0, 1.0 / torch.where(t > 0, t, torch.ones_like(t)), torch.zeros_like(t))


def sll_factors(
    weight: torch.Tensor, n_iter: int, q: torch.Tensor, groups: int = 1
) -> torch.Tensor:
    """``t`` with ``C C^T <= diag(t)`` for a kernel ``(hidden, c // groups, kh, kw)`` or a
    matrix ``(hidden, features)``, per group; shape ``(hidden,)``.

    References
    ----------
    * A. Araujo, A. Havens, B. Delattre, A. Allauzen and B. Hu, "A Unified Algebraic
      Perspective on Lipschitz Neural Networks", ICLR 2023, Thm. 3 (the SDP-based Lipschitz
      layer).
    * B. Delattre, Q. Barthélemy and A. Allauzen, arXiv:2402.00240, 2024 (the rescaled
      factors ``t``); docs/proofs.md, theorems SR1-SR5.

    Examples
    --------
    >>> import torch
    >>> from specbound import layers
    >>> _ = torch.manual_seed(0)
    >>> kernel = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    >>> layers.sll_factors(kernel, 2, torch.ones(4, dtype=torch.float64)).shape
    torch.Size([4])
    """
    if groups == 1:
        return rescaling_factors_residual(weight, n_iter, q)
    hg = weight.shape[0] // groups
    parts = [
        rescaling_factors_residual(weight[g * hg : (g + 1) * hg], n_iter, q[g * hg : (g + 1) * hg])
        for g in range(groups)
    ]
    return torch.cat(parts)


class SLLConv2d(nn.Module):
    """1-Lipschitz residual conv block ``x - 2 C^T T^{-1} relu(C x + b)`` (Araujo et al. 2023).

    Parameters
    ----------
    channels : int
        Input = output channels.
    hidden_channels : int, optional
        Channels of ``C x`` (default ``channels``).
    kernel_size, padding, dilation, groups, bias, padding_mode
        Of the inner convolution ``C`` (stride 1); ``padding_mode`` ``"zeros"`` or
        ``"circular"`` (total pad ``<= dilation*(k-1)``).
    n_iter : int
        Self-correlations of the residual rescaling (``>= 1``; 1 is the SLL matrix).

    Notes
    -----
    Parameters: ``weight`` (the kernel of ``C``), ``bias`` and ``log_q`` (``q = exp(log_q)``).
    :meth:`certify` certifies ``||T^{-1/2} C||``: the block is 1-Lipschitz when it is ``<= 1``.

    References
    ----------
    * A. Araujo, A. Havens, B. Delattre, A. Allauzen and B. Hu, "A Unified Algebraic
      Perspective on Lipschitz Neural Networks", ICLR 2023, Thm. 3 (the SDP-based Lipschitz
      layer).
    * B. Delattre, Q. Barthélemy and A. Allauzen, arXiv:2402.00240, 2024 (the rescaled
      factors ``t``); docs/proofs.md, theorems SR1-SR5.

    Examples
    --------
    >>> import torch
    >>> from specbound import layers
    >>> _ = torch.manual_seed(0)
    >>> block = layers.SLLConv2d(2, 4, 3, dtype=torch.float64)
    >>> block(torch.randn(1, 2, 6, 6, dtype=torch.float64)).shape
    torch.Size([1, 2, 6, 6])
    >>> block.certify(input_size=(6, 6)).upper <= 1 + 1e-9  # ||T^(-1/2) C|| <= 1
    True
    """

    def __init__(
        self,
        channels: int,
        hidden_channels: int | None = None,
        kernel_size: Any = 3,
        padding: Any = "same",
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        n_iter: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        hidden = channels if hidden_channels is None else hidden_channels
        if padding_mode not in ("zeros", "circular"):
            raise ValueError(
                f"SLLConv2d supports padding_mode 'zeros' or 'circular', got "
                f"padding_mode={padding_mode!r}"
            )
        self.spec, ks, self.pads = resolve_geometry(
            channels,
            hidden,
            kernel_size,
            stride=1,
            padding=padding,
            dilation=dilation,
            groups=groups,
            padding_mode=padding_mode,
        )
        padding_compensation(self.spec, ks, self.pads)  # refuses circular over-padding
        self.channels, self.hidden_channels, self.kernel_size = channels, hidden, ks
        self.padding, self.padding_mode = padding, padding_mode
        self.dilation, self.groups = self.spec.dilation, self.spec.groups
        self.n_iter = _check_n_iter(n_iter)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(hidden, channels // groups, *ks, **factory))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        self.bias = nn.Parameter(torch.zeros(hidden, **factory)) if bias else None
        self.log_q = nn.Parameter(torch.zeros(hidden, **factory))

    def factors(self) -> torch.Tensor:
        """The diagonal of ``T`` (``C C^T <= diag(T)``)."""
        return sll_factors(self.weight, self.n_iter, self.log_q.exp(), self.groups)

    def conv(self, x: torch.Tensor) -> torch.Tensor:
        """``C x`` (no bias)."""
        return F.conv2d(
            pad2d(x, self.pads, self.padding_mode),
            self.weight,
            None,
            1,
            0,
            self.dilation,
            self.groups,
        )

    def conv_adjoint(self, y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``C^T y`` for an input of spatial size ``size``."""
        z = F.conv_transpose2d(y, self.weight, None, 1, 0, 0, self.groups, self.dilation)
        return pad2d_adjoint(z, self.pads, self.padding_mode, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"expected input (N, {self.channels}, H, W), got {tuple(x.shape)}")
        z = self.conv(x)
        if self.bias is not None:
            z = z + self.bias[:, None, None]
        h = F.relu(z) * _inverse(self.factors())[:, None, None]
        return x - 2.0 * self.conv_adjoint(h, (x.shape[-2], x.shape[-1]))

    def certify(self, input_size: Any = None, *, rtol: float = 1e-3) -> Certificate:
        """Certified bracket on ``||T^{-1/2} C||`` by :func:`specbound.certify`; the block is
        1-Lipschitz when ``upper <= 1``."""
        scaled = (
            self.weight.detach() * _inverse(self.factors().detach()).sqrt()[:, None, None, None]
        )
        return certify(
            scaled,
            self.padding_mode,
            input_size=input_size,
            pad=self.pads,
            dilation=self.dilation,
            groups=self.groups,
            rtol=rtol,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, hidden_channels={self.hidden_channels}, "
            f"kernel_size={self.kernel_size}, padding={self.padding!r}, "
            f"dilation={self.dilation}, groups={self.groups}, padding_mode={self.padding_mode!r}, "
            f"n_iter={self.n_iter}"
        )


class SLLLinear(nn.Module):
    """1-Lipschitz residual dense block ``x - 2 W^T T^{-1} relu(W x + b)`` (Araujo et al.
    2023), ``W`` of shape ``(hidden_features, features)``, ``W W^T <= diag(T)`` by the residual
    spectral rescaling with learnable ``q = exp(log_q)``.

    References
    ----------
    * A. Araujo, A. Havens, B. Delattre, A. Allauzen and B. Hu, "A Unified Algebraic
      Perspective on Lipschitz Neural Networks", ICLR 2023, Thm. 3 (the SDP-based Lipschitz
      layer).
    * B. Delattre, Q. Barthélemy and A. Allauzen, arXiv:2402.00240, 2024 (the rescaled
      factors ``t``); docs/proofs.md, theorems SR1-SR5.

    Examples
    --------
    >>> import torch
    >>> from specbound import layers
    >>> _ = torch.manual_seed(0)
    >>> block = layers.SLLLinear(4, dtype=torch.float64)
    >>> block(torch.randn(2, 4, dtype=torch.float64)).shape
    torch.Size([2, 4])
    >>> block.certify().upper <= 1 + 1e-9
    True
    """

    def __init__(
        self,
        features: int,
        hidden_features: int | None = None,
        bias: bool = True,
        *,
        n_iter: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        hidden = features if hidden_features is None else hidden_features
        for name, value in (("features", features), ("hidden_features", hidden)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.features, self.hidden_features = features, hidden
        self.n_iter = _check_n_iter(n_iter)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(hidden, features, **factory))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        self.bias = nn.Parameter(torch.zeros(hidden, **factory)) if bias else None
        self.log_q = nn.Parameter(torch.zeros(hidden, **factory))

    def factors(self) -> torch.Tensor:
        """The diagonal of ``T`` (``W W^T <= diag(T)``)."""
        return sll_factors(self.weight, self.n_iter, self.log_q.exp())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.linear(x, self.weight, self.bias)
        h = F.relu(z) * _inverse(self.factors())
        return x - 2.0 * h @ self.weight

    def certify(self, *, rtol: float = 1e-3) -> Certificate:
        """Certified bracket on ``||T^{-1/2} W||``; the block is 1-Lipschitz when ``<= 1``."""
        return linear_certify(
            self.weight.detach() * _inverse(self.factors().detach()).sqrt()[:, None], rtol
        )

    def extra_repr(self) -> str:
        return f"{self.features}, hidden_features={self.hidden_features}, n_iter={self.n_iter}"
