"""Spectral rescaling (SR) and AOL: diagonal rescalings that make a conv 1-Lipschitz.

Delattre, Barthélemy & Allauzen, "Spectral Norm of Convolutional Layers with Circular and Zero
Paddings", arXiv 2402.00240 (2024), spectral rescaling; ``n_iter = 1`` is AOL (Prach & Lampert,
"Almost-Orthogonal Layers for Efficient General-Purpose Lipschitz Networks", ECCV 2022, Thm. 1
and Lemma 2). The factors come from :func:`rescaling_factors`:

.. math::

    t_i = \\Big(\\sum_{j,\\delta} |K_T[i, j, \\delta]|\\Big)^{2^{-T}},\\qquad
    K_1 = K \\star K,\\ K_{t+1} = K_t \\star K_t ,

the iterated full self-correlation on the output side, and the layer uses
``K[i] / t_i`` (``side="output"``).

Guarantee (proof)
-----------------
On :math:`\\ell^2(\\mathbb Z^2)`, :math:`L(K)L(K)^* = L(K\\star K)` and
:math:`L(K_T) = (L(K)L(K)^*)^{2^{T-1}}` is PSD. The Schur test gives
:math:`L(K_T) \\preceq \\mathrm{diag}(t^{2^T})` (``x^* M x <= sum_ij |M_ij| |x_i| |x_j|
<= sum_i tau_i |x_i|^2``), Löwner–Heinz (``t -> t^{1/m}`` is operator monotone) gives
:math:`L(K)L(K)^* \\preceq \\mathrm{diag}(t)^2`, i.e. ``||diag(1/t) L(K)|| <= 1``. The per-channel
diagonal commutes with the spatial structure, so the bound transfers to

* zero padding of **any** amount, any input size, any stride: the layer is a row selection
  (output window, stride) of ``L(K)`` applied to the zero-extended input (an isometric
  embedding);
* circular padding with a total pad ``<= dilation*(k-1)`` per axis, any input size (including
  ``n < k``): a row selection (distinct rows) of the circulant, whose norm is the maximum of the
  symbol over the DFT grid, at most its supremum;
* dilation: the self-correlation of a dilated kernel is the dilated self-correlation, so the
  factors of the undilated kernel are the factors of the dilated one;
* groups: the operator is block diagonal, factors per group (``groups=`` of the factor
  function);
* reflect / replicate: ``conv(pad(x)) = V P x`` with ``V`` a row selection of ``L(K)``; the
  layers divide by the exact bound on ``||P||`` (:mod:`specbound.layers.padding`).

``side="input"`` is the same theorem applied to the adjoint (whose kernel is the
channel-transposed, spatially flipped kernel): ``||L(K) diag(1/t)|| = ||diag(1/t) L(K)^*|| <= 1``
with the factors of the adjoint kernel, applied to the input channels. This is AOL as published
(Lemma 2 rescales input channels by the self-correlation ``P^T P * P``). Mixing the two (input
factors applied to output channels) is not valid (AOL-N2, tested).

A zero channel has ``t_i = 0``; the division is guarded (the channel stays zero), and ``eps``
replaces ``t_i`` by ``max(t_i, eps)``, which only shrinks the norm.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from ..bounds.gram import kernel_gram_row_factors
from ..certify import Certificate
from ..spec import check_count, check_tensor
from ._base import (
    CachedTransform,
    ConstrainedConv2d,
    check_tensor_name,
    linear_certify,
    module_geometry,
    padding_compensation,
)


# ------------------------------------------------------------------ the factors
def _as_batch(kernel: torch.Tensor, groups: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """``(..., c_out, c_in_g, kh, kw)`` -> ``(B, c_out_g, c_in_g, kh, kw)``, B over batch
    and groups."""
    lead, (c_out, c_in_g, kh, kw) = kernel.shape[:-4], kernel.shape[-4:]
    if c_out % groups:
        raise ValueError(f"groups={groups} must divide c_out={c_out}")
    return kernel.reshape(-1, c_out // groups, c_in_g, kh, kw), (*lead, groups)



def rescaling_factors(kernel: torch.Tensor, n_iter: int, *, groups: int = 1) -> torch.Tensor:
    """Spectral-rescaling factors of a conv kernel, one per output channel.

    Delattre, Barthélemy & Allauzen 2024 (arXiv 2402.00240), Sec. 5 (spectral rescaling),
    theorems SR1-SR5 (:doc:`/proofs`): with :math:`K_1 = K \\star K` (full spatial
    self-correlation on the output side, ``c_out x c_out`` channels) and
    :math:`K_{t+1} = K_t \\star K_t`,

    .. math:: t_i = \\Big(\\sum_{j,\\delta} |K_T[i,j,\\delta]|\\Big)^{2^{-T}}.

    Then :math:`\\|\\mathrm{diag}(t)^{-1}\\,\\mathrm{op}(K)\\|_2 \\le 1` for circular padding
    (any size), zero padding (any size and pad), any stride and any dilation (Schur test and
    Löwner–Heinz; theorem SR1), and :math:`\\max_i t_i` is the ``gram_zero`` bound on the
    output side. ``T = 1`` is AOL (Prach & Lampert 2022) on the output side. The factors do
    not depend on the dilation (the self-correlation of a dilated kernel is the dilated
    self-correlation), so pass the undilated kernel.

    Parameters
    ----------
    kernel : torch.Tensor
        ``(..., c_out, c_in // groups, kh, kw)``, real; leading dimensions are a batch.
    n_iter : int
        ``T >= 1`` self-correlations.
    groups : int
        Block-diagonal channel groups, as in ``torch.nn.Conv2d``.

    Returns
    -------
    torch.Tensor
        ``(..., c_out)``, non-negative; ``t_i = 0`` exactly (no NaN) for a zero output channel.
        Differentiable in ``kernel``.

    References
    ----------
    * B. Delattre, A. Allauzen and Q. Barthélemy, "Spectral Norm of Convolutional Layers with
      Circular and Zero Paddings", arXiv:2402.00240, 2024, Sec. 5 (spectral rescaling).
    * B. Prach and C. H. Lampert, "Almost-Orthogonal Layers for Efficient General-Purpose
      Lipschitz Networks", ECCV 2022, Thm. 1 (``n_iter=1``).

    Examples
    --------
    >>> import torch
    >>> from specbound.layers import rescaling_factors
    >>> k = torch.zeros(2, 2, 3, 3, dtype=torch.float64)
    >>> k[0, 0, 1, 1], k[1, 1, 0, 0] = 3.0, -2.0  # one tap per channel pair: t_i = |tap|
    >>> [round(t, 12) for t in rescaling_factors(k, 2).tolist()]
    [3.0, 2.0]
    """
    kernel = check_tensor(kernel, "kernel", 4, real=True)
    n_iter = check_count(n_iter, "n_iter", 1)
    batch, lead = _as_batch(kernel, groups)
    factors = kernel_gram_row_factors(batch, n_iter, root=2.0**-n_iter)
    return factors.reshape(*lead[:-1], -1)


def rescaling_factors_dense(matrix: torch.Tensor, n_iter: int) -> torch.Tensor:
    """Spectral-rescaling factors of a matrix, one per row (Delattre et al. 2024;
    theorem SR4).

    With :math:`M = (W W^\\top)^{2^{T-1}}`: :math:`t_i = (\\sum_j |M_{ij}|)^{2^{-T}}` and
    :math:`\\|\\mathrm{diag}(t)^{-1} W\\|_2 \\le 1`. ``T = 1`` is AOL on the rows.

    Parameters
    ----------
    matrix : torch.Tensor
        ``(..., p, q)``, real; leading dimensions are a batch.
    n_iter : int
        ``T >= 1``.

    Returns
    -------
    torch.Tensor
        ``(..., p)``; 0 exactly for a zero row. Differentiable.

    References
    ----------
    * B. Delattre, A. Allauzen and Q. Barthélemy, arXiv:2402.00240, 2024, Sec. 5.

    Examples
    --------
    >>> import torch
    >>> from specbound.layers import rescaling_factors_dense
    >>> [round(t, 12) for t in rescaling_factors_dense(4 * torch.eye(2), 3).tolist()]
    [4.0, 4.0]
    """
    matrix = check_tensor(matrix, "matrix", 2, real=True)
    n_iter = check_count(n_iter, "n_iter", 1)
    return rescaling_factors(matrix[..., None, None], n_iter)


def rescaling_factors_residual(
    kernel_or_matrix: torch.Tensor, n_iter: int, q: torch.Tensor
) -> torch.Tensor:
    """Residual (SLL-style) rescaling factors with positive weights ``q``
    (theorem SR5).

    .. math:: t^{\\mathrm{res}}_i = \\Big(\\sum_{j(,\\delta)} |M_{ij(\\delta)}|\\,
              \\frac{q_j}{q_i}\\Big)^{2^{-(T-1)}},

    with :math:`M = K_T` for a kernel (``(c_out, c_in, kh, kw)``) or
    :math:`M = (W W^\\top)^{2^{T-1}}` for a matrix (``(p, q)``). For every ``q > 0``,
    :math:`W W^\\top \\preceq \\mathrm{diag}(t^{\\mathrm{res}})` (weighted Schur test and
    Löwner–Heinz), the condition of the SLL block :math:`x - 2 W T^{-1}\\sigma(W^\\top x + b)`
    (Araujo et al., ICLR 2023); with ``q = 1``, :math:`t^{\\mathrm{res}} = t^2`. Note the
    exponent: these are *squared* scales.

    Parameters
    ----------
    kernel_or_matrix : torch.Tensor
        A 4-D conv kernel or a 2-D matrix, real.
    n_iter : int
        ``T >= 1``.
    q : torch.Tensor
        Positive weights, shape ``(c_out,)`` (rows of the matrix).

    Returns
    -------
    torch.Tensor
        ``(c_out,)``; 0 for a zero row. Differentiable in both arguments.

    References
    ----------
    * A. Araujo, A. Havens, B. Delattre, A. Allauzen and B. Hu, "A Unified Algebraic
      Perspective on Lipschitz Neural Networks", ICLR 2023, Thm. 3 (the SLL condition).
    * B. Delattre, A. Allauzen and Q. Barthélemy, arXiv:2402.00240, 2024, Sec. 5.

    Examples
    --------
    >>> import torch
    >>> from specbound.layers import rescaling_factors_residual
    >>> w = torch.eye(2, dtype=torch.float64) * 3
    >>> t_res = rescaling_factors_residual(w, 1, torch.ones(2, dtype=torch.float64))
    >>> [round(t, 12) for t in t_res.tolist()]  # t**2 for q = 1
    [9.0, 9.0]
    """
    x = check_tensor(kernel_or_matrix, "kernel_or_matrix", 2, real=True)
    n_iter = check_count(n_iter, "n_iter", 1)
    if x.dim() == 2:
        x = x[..., None, None]
    elif x.dim() != 4:
        raise ValueError(
            "kernel_or_matrix must be a 2-D matrix or a 4-D conv kernel, got shape "
            f"{tuple(kernel_or_matrix.shape)}"
        )
    q = check_tensor(q, "q", 1)
    if q.shape != (x.shape[0],):
        raise ValueError(f"q must have shape ({x.shape[0]},) (one per row), got {tuple(q.shape)}")
    if not bool((q > 0).all()):
        raise ValueError("q must be positive")
    q = q.to(x.dtype)
    # (sum_j |M_ij| q_j / q_i)^r = (sum_j |M_ij| q_j)^r / q_i^r: the log-scaled row sums of K_T
    root = 2.0 ** -(n_iter - 1)
    weighted = kernel_gram_row_factors(x[None], n_iter, root=root, weights=q[None])[0]
    return weighted / q**root


# ------------------------------------------------------------------ the layers
SIDES = ("input", "output")


def _check(n_iter: Any, side: str, eps: float) -> None:
    if not isinstance(n_iter, int) or isinstance(n_iter, bool) or n_iter < 1:
        raise ValueError(f"n_iter must be an int >= 1 (n_iter=1 is AOL), got {n_iter!r}")
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps!r}")


def rescaling_factors_for(
    weight: torch.Tensor, n_iter: int, *, side: str = "output", groups: int = 1
) -> torch.Tensor:
    """The factors ``t`` of a conv kernel or a matrix, on the chosen side.

    Parameters
    ----------
    weight : torch.Tensor
        Conv kernel ``(c_out, c_in // groups, kh, kw)`` or matrix ``(out, in)``.
    n_iter : int
        ``T >= 1`` (``T = 1``: AOL).
    side : {"output", "input"}
        ``"output"``: one factor per output channel / row; ``"input"``: one per input channel
        of each group / column, from the adjoint kernel.
    groups : int
        Conv groups (kernels only).

    Returns
    -------
    torch.Tensor
        ``(c_out,)`` for ``side="output"``; ``(groups, c_in // groups)`` for a kernel with
        ``side="input"``; ``(in,)`` for a matrix with ``side="input"``.

    References
    ----------
    * B. Delattre, Q. Barthélemy and A. Allauzen, "Spectral Norm of Convolutional Layers
      with Circular and Zero Paddings", arXiv:2402.00240, 2024 (spectral rescaling; ``n_iter=1``
      is AOL).
    * docs/proofs.md, theorems SR1-SR5.

    Examples
    --------
    >>> import torch
    >>> from specbound import layers
    >>> W = torch.eye(3, dtype=torch.float64)
    >>> layers.rescaling_factors_for(W, 3)  # an orthogonal matrix needs no rescaling
    tensor([1., 1., 1.], dtype=torch.float64)
    """
    _check(n_iter, side, 0.0)
    if weight.dim() == 2:
        if groups != 1:
            raise ValueError(f"a matrix has no groups, got groups={groups}")
        mat = weight if side == "output" else weight.mT
        return rescaling_factors_dense(mat, n_iter)
    if weight.dim() != 4:
        raise ValueError(f"weight must be a 2-D matrix or a 4-D kernel, got {tuple(weight.shape)}")
    if side == "output":
        return rescaling_factors(weight, n_iter, groups=groups)
    c_out, c_in_g, kh, kw = weight.shape
    if c_out % groups:
        raise ValueError(f"groups={groups} must divide c_out={c_out}")
    adjoint = weight.reshape(groups, c_out // groups, c_in_g, kh, kw).transpose(1, 2)
    return rescaling_factors(adjoint.flip(-2, -1), n_iter)  # (groups, c_in_g)


def _safe_divide(w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``w / t`` where ``t > 0``; where ``t = 0`` the slice of ``w`` is zero and stays zero."""
    return w / torch.where(t > 0, t, torch.ones_like(t))


def rescale(
    weight: torch.Tensor,
    n_iter: int,
    *,
    side: str = "output",
    groups: int = 1,
    eps: float = 0.0,
) -> torch.Tensor:
    """The spectrally rescaled kernel or matrix ``diag(1/t) W`` (or ``W diag(1/t)``).

    Delattre et al. 2024 (arXiv 2402.00240), spectral rescaling; ``n_iter=1`` is AOL (Prach &
    Lampert 2022, Lemma 1/2). Guarantee and proof in the module docstring. Differentiable.

    References
    ----------
    * B. Delattre, Q. Barthélemy and A. Allauzen, "Spectral Norm of Convolutional Layers
      with Circular and Zero Paddings", arXiv:2402.00240, 2024 (spectral rescaling; ``n_iter=1``
      is AOL).
    * docs/proofs.md, theorems SR1-SR5.

    Examples
    --------
    >>> import torch
    >>> from specbound import layers
    >>> _ = torch.manual_seed(0)
    >>> W = torch.randn(3, 4, dtype=torch.float64)
    >>> bool(torch.linalg.matrix_norm(layers.rescale(W, 3), 2) <= 1 + layers.ROUNDING_ALLOWANCE)
    True
    """
    _check(n_iter, side, eps)
    t = rescaling_factors_for(weight, n_iter, side=side, groups=groups)
    if eps > 0:
        t = t.clamp_min(eps)
    if weight.dim() == 2:
        return _safe_divide(weight, t[:, None] if side == "output" else t[None, :])
    if side == "output":
        return _safe_divide(weight, t[:, None, None, None])
    c_out, c_in_g, kh, kw = weight.shape
    w = weight.reshape(groups, c_out // groups, c_in_g, kh, kw)
    return _safe_divide(w, t[:, None, :, None, None]).reshape(weight.shape)


class Rescaling(CachedTransform):
    """Parametrization ``W -> rescale(W, n_iter, side) / padding_norm``, cached in eval mode.

    References
    ----------
    * B. Delattre, Q. Barthélemy and A. Allauzen, "Spectral Norm of Convolutional Layers
      with Circular and Zero Paddings", arXiv:2402.00240, 2024 (spectral rescaling; ``n_iter=1``
      is AOL).
    * docs/proofs.md, theorems SR1-SR5.

    Examples
    --------
    >>> import torch
    >>> from torch.nn.utils import parametrize
    >>> from specbound import layers
    >>> conv = torch.nn.Conv2d(2, 3, 3, padding=1, dtype=torch.float64)
    >>> _ = parametrize.register_parametrization(conv, "weight", layers.Rescaling(3))
    >>> isinstance(conv.parametrizations.weight[0], layers.CachedTransform)
    True
    """

    def __init__(
        self,
        n_iter: int,
        *,
        side: str = "output",
        groups: int = 1,
        eps: float = 0.0,
        padding_norm: float = 1.0,
    ) -> None:
        super().__init__()
        _check(n_iter, side, eps)
        self.n_iter, self.side, self.groups, self.eps = n_iter, side, groups, eps
        self.padding_norm = padding_norm

    def transform(self, original: torch.Tensor) -> torch.Tensor:
        w = rescale(original, self.n_iter, side=self.side, groups=self.groups, eps=self.eps)
        return w / self.padding_norm if self.padding_norm != 1.0 else w

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        """Assigning ``module.weight = W`` stores ``W`` as the original (the rescaling is
        applied on read), as :func:`torch.nn.utils.parametrizations.spectral_norm` does."""
        return value

    def extra_repr(self) -> str:
        return f"n_iter={self.n_iter}, side={self.side!r}, groups={self.groups}, eps={self.eps}"


def orthogonal_center_(kernel: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """Initialise a kernel (in place) as a (semi-)orthogonal matrix per group at the central
    tap and zeros elsewhere (the AOL paper's initialisation: the rescaling is tight there)."""
    c_out, c_in_g, kh, kw = kernel.shape
    with torch.no_grad():
        kernel.zero_()
        co = c_out // groups
        for g in range(groups):
            block = torch.empty(co, c_in_g, dtype=kernel.dtype, device=kernel.device)
            nn.init.orthogonal_(block)
            kernel[g * co : (g + 1) * co, :, (kh - 1) // 2, (kw - 1) // 2] = block
    return kernel


class _RescaledConv2d(ConstrainedConv2d):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any,
        padding: Any,
        dilation: Any,
        groups: int,
        bias: bool,
        padding_mode: str,
        *,
        n_iter: int,
        side: str,
        eps: float,
        min_input_size: Any,
        device: torch.device | str | None,
        dtype: torch.dtype | None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            min_input_size=min_input_size,
            device=device,
            dtype=dtype,
        )
        weight = torch.empty(
            out_channels, in_channels // self.groups, *self.kernel_size, device=device, dtype=dtype
        )
        self.weight = nn.Parameter(orthogonal_center_(weight, self.groups))
        parametrize.register_parametrization(
            self,
            "weight",
            Rescaling(
                n_iter, side=side, groups=self.groups, eps=eps, padding_norm=self.padding_norm
            ),
        )

    @property
    def n_iter(self) -> int:
        return self.parametrizations.weight[0].n_iter

    @property
    def side(self) -> str:
        return self.parametrizations.weight[0].side


class SRConv2d(_RescaledConv2d):
    """Conv layer with spectral rescaling (Delattre et al. 2024, arXiv 2402.00240).

    ``weight = diag(1/t) K`` with the factors of ``n_iter`` self-correlations
    (:func:`rescale`); ``n_iter=1`` equals AOL on the chosen side, and as ``n_iter`` grows the
    rescaling tends to spectral normalisation. 1-Lipschitz (float64 allowance
    :data:`~specbound.layers.ROUNDING_ALLOWANCE`) for zero padding (any pad), circular padding
    (total pad ``<= dilation*(k-1)``), any input size, stride, dilation and groups; reflect /
    replicate padding are compensated by the exact bound on the padding operator
    (``padding_norm``; ``min_input_size`` tightens it and is enforced in ``forward``).

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode
        As :class:`torch.nn.Conv2d` (``padding`` also accepts ``"full"`` and a 4-tuple
        ``(left, right, top, bottom)``, and ``"same"`` with a stride: ``dilation*(k-1)`` in
        total, the odd pixel on the right/bottom). Default ``padding="same"``.
    n_iter : int
        Number of self-correlations ``T >= 1``. Cost and memory grow with the iterated
        kernel size ``2^T (k - 1) + 1``.
    side : {"output", "input"}
        Rescale output channels (default, as the paper) or input channels (adjoint form).
    eps : float
        Lower clamp of the factors (``>= 0``), safe by construction.
    min_input_size : (H, W), optional
        Reflect/replicate only.

    The free kernel is ``self.parametrizations.weight.original``; ``self.weight`` is the
    rescaled kernel (cached in eval mode).

    References
    ----------
    * B. Delattre, Q. Barthélemy and A. Allauzen, "Spectral Norm of Convolutional Layers
      with Circular and Zero Paddings", arXiv:2402.00240, 2024 (spectral rescaling; ``n_iter=1``
      is AOL).
    * docs/proofs.md, theorems SR1-SR5.

    Examples
    --------
    >>> import torch
    >>> from specbound import layers
    >>> _ = torch.manual_seed(0)
    >>> layer = layers.SRConv2d(2, 3, 3, n_iter=3, dtype=torch.float64)
    >>> layer(torch.randn(1, 2, 6, 6, dtype=torch.float64)).shape
    torch.Size([1, 3, 6, 6])
    >>> layer.certify(input_size=(6, 6)).upper <= 1 + 1e-9
    True
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = "same",
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        n_iter: int = 3,
        side: str = "output",
        eps: float = 0.0,
        min_input_size: Any = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            n_iter=n_iter,
            side=side,
            eps=eps,
            min_input_size=min_input_size,
            device=device,
            dtype=dtype,
        )


class RescaledLinear(nn.Module):
    """Base of :class:`SRLinear` / :class:`~specbound.layers.AOLLinear`: ``y = x W^T + b``
    with ``W = rescale(original)`` (cached in eval mode).

    References
    ----------
    * B. Delattre, Q. Barthélemy and A. Allauzen, "Spectral Norm of Convolutional Layers
      with Circular and Zero Paddings", arXiv:2402.00240, 2024 (spectral rescaling; ``n_iter=1``
      is AOL).
    * docs/proofs.md, theorems SR1-SR5.

    Examples
    --------
    >>> import torch
    >>> from specbound import layers
    >>> _ = torch.manual_seed(0)
    >>> layer = layers.RescaledLinear(4, 3, n_iter=2, dtype=torch.float64)
    >>> layer(torch.randn(2, 4, dtype=torch.float64)).shape
    torch.Size([2, 3])
    >>> bool(torch.linalg.matrix_norm(layer.weight.detach(), 2) <= 1 + layers.ROUNDING_ALLOWANCE)
    True
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        n_iter: int = 3,
        side: str = "output",
        eps: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.in_features, self.out_features = in_features, out_features
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(
            nn.init.orthogonal_(torch.empty(out_features, in_features, **factory))
        )
        self.bias = nn.Parameter(torch.zeros(out_features, **factory)) if bias else None
        parametrize.register_parametrization(self, "weight", Rescaling(n_iter, side=side, eps=eps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def to_linear(self) -> nn.Linear:
        """A plain :class:`torch.nn.Linear` with the current rescaled weight."""
        w = self.weight.detach()
        lin = nn.Linear(
            self.in_features,
            self.out_features,
            self.bias is not None,
            device=w.device,
            dtype=w.dtype,
        )
        with torch.no_grad():
            lin.weight.copy_(w)
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin

    def certify(self, *, rtol: float = 1e-3) -> Certificate:
        """Certified bracket on ``||W||_2`` by :func:`specbound.certify` (a 1x1 conv on a
        1x1 input)."""
        return linear_certify(self.weight, rtol)

    def extra_repr(self) -> str:
        p = self.parametrizations.weight[0]
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, n_iter={p.n_iter}, side={p.side!r}"
        )


class SRLinear(RescaledLinear):
    """Linear layer with spectral rescaling (Delattre et al. 2024): ``||W||_2 <= 1``.

    ``side="output"`` (default) rescales rows, ``"input"`` columns; ``n_iter=1`` is AOL.

    References
    ----------
    * B. Delattre, Q. Barthélemy and A. Allauzen, "Spectral Norm of Convolutional Layers
      with Circular and Zero Paddings", arXiv:2402.00240, 2024 (spectral rescaling; ``n_iter=1``
      is AOL).
    * docs/proofs.md, theorems SR1-SR5.

    Examples
    --------
    >>> import torch
    >>> from specbound import layers
    >>> _ = torch.manual_seed(0)
    >>> layer = layers.SRLinear(4, 3, dtype=torch.float64)
    >>> bool(torch.linalg.matrix_norm(layer.weight.detach(), 2) <= 1 + layers.ROUNDING_ALLOWANCE)
    True
    """


def _attach(module: nn.Module, tensor_name: str, transform_factory: Any) -> nn.Module:
    check_tensor_name(module, tensor_name)
    if isinstance(module, nn.Conv2d):
        spec, ks, pads = module_geometry(module)
        transform = transform_factory(module.groups, padding_compensation(spec, ks, pads))
    elif isinstance(module, nn.Linear):
        transform = transform_factory(1, 1.0)
    else:
        raise TypeError(
            f"expected a torch.nn.Conv2d or torch.nn.Linear, got {type(module).__name__}"
        )
    parametrize.register_parametrization(module, tensor_name, transform)
    return module


def spectral_rescaling_(
    module: nn.Module,
    tensor_name: str = "weight",
    *,
    n_iter: int = 3,
    side: str = "output",
    eps: float = 0.0,
) -> nn.Module:
    """Parametrize an existing :class:`torch.nn.Conv2d` or :class:`torch.nn.Linear` with
    spectral rescaling, in place (like :func:`torch.nn.utils.parametrizations.spectral_norm`).

    The free weight is at ``module.parametrizations.weight.original`` and ``module.weight``
    becomes ``rescale(original) / padding_norm``. The conv's stride, padding, dilation and
    groups are read from the module; reflect/replicate padding is compensated for every input
    size; circular padding above ``dilation*(k-1)`` per axis raises ``ValueError``.

    Parameters
    ----------
    module : torch.nn.Conv2d or torch.nn.Linear
        Parametrized in place and returned.
    tensor_name : str
        The parameter to constrain (geotorch's call style); a tensor of the weight's shape.
    n_iter : int
        Gram iterations of the factors (``>= 1``; 1 is AOL).
    side : {"output", "input"}
        Which channels are rescaled.
    eps : float
        Lower clamp of the factors (``>= 0``).

    Returns
    -------
    torch.nn.Module
        ``module``. (The old call ``spectral_rescaling_(module, n_iter)`` still works, with a
        DeprecationWarning.)

    References
    ----------
    * B. Delattre, Q. Barthélemy and A. Allauzen, "Spectral Norm of Convolutional Layers
      with Circular and Zero Paddings", arXiv:2402.00240, 2024 (spectral rescaling; ``n_iter=1``
      is AOL).
    * docs/proofs.md, theorems SR1-SR5.

    Examples
    --------
    >>> import torch
    >>> import specbound as sb
    >>> from specbound import layers
    >>> conv = torch.nn.Conv2d(2, 3, 3, padding=1, dtype=torch.float64)
    >>> conv = layers.spectral_rescaling_(conv, n_iter=3)
    >>> sb.certify(conv, input_size=(6, 6)).upper <= 1 + 1e-9
    True
    """
    if isinstance(tensor_name, int) and not isinstance(tensor_name, bool):  # old n_iter
        warnings.warn(
            "spectral_rescaling_(module, n_iter) is deprecated: the second position is "
            f"tensor_name; pass spectral_rescaling_(module, n_iter={tensor_name!r})",
            DeprecationWarning,
            stacklevel=2,
        )
        tensor_name, n_iter = "weight", tensor_name
    _check(n_iter, side, eps)
    return _attach(
        module,
        tensor_name,
        lambda groups, norm: Rescaling(
            n_iter, side=side, groups=groups, eps=eps, padding_norm=norm
        ),
    )
