"""AOL: Almost-Orthogonal Lipschitz layers (Prach & Lampert, ECCV 2022, arXiv 2208.03160):
the layers :class:`AOLConv2d` and :class:`AOLLinear`, the rescaling :func:`aol` and the in-place
parametrization :func:`aol_`.

Theorem 1: for any matrix ``P`` and ``D_jj = (sum_k |(P^T P)_jk|)^{-1/2}`` (0 for a zero
column), ``||P D|| <= 1``. Lemma 2 (convolutions): the same with the kernel self-correlation
``G[i, j, delta] = sum_{o, a} P[o, i, a] P[o, j, a + delta]`` and
``d_i = (sum_{j, delta} |G[i, j, delta]|)^{-1/2}`` scaling input channel ``i``.

This is spectral rescaling with one self-correlation applied to the adjoint
(:func:`specbound.layers.rescaling.rescale` with ``n_iter=1, side="input"``); the guarantee, its
proof and its domain (zero padding of any amount, circular padding up to ``dilation*(k-1)``,
any input size, stride, dilation, groups; reflect/replicate compensated) are in
:mod:`specbound.layers.rescaling`. ``side="output"`` gives the dual variant (Theorem 1 applied
to ``J^T``), also 1-Lipschitz.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .rescaling import RescaledLinear, _RescaledConv2d, rescale, spectral_rescaling_

__all__ = ["AOLConv2d", "AOLLinear", "aol", "aol_"]


class AOLConv2d(_RescaledConv2d):
    """Conv layer with AOL rescaling (Prach & Lampert 2022, Lemma 2): ``||J|| <= 1``.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode
        As :class:`torch.nn.Conv2d` (default ``padding="same"``; ``"same"`` is accepted with a
        stride; also ``"full"`` and ``(left, right, top, bottom)``).
    side : {"input", "output"}
        ``"input"`` (default): the published form, input channels rescaled; ``"output"``: the
        dual form.
    eps : float
        Lower clamp of the factors (``>= 0``).
    min_input_size : (H, W), optional
        Reflect/replicate only: tightens the padding compensation; enforced in ``forward``.

    Notes
    -----
    Initialised with an orthogonal central tap (the paper's "orthogonal center"
    initialisation), where the rescaling is the identity when ``c_out >= c_in``.
    ``self.weight`` is the rescaled kernel, cached in eval mode; the free kernel is
    ``self.parametrizations.weight.original``.

    References
    ----------
    * B. Prach and C. H. Lampert, "Almost-Orthogonal Layers for Efficient General-Purpose
      Lipschitz Networks", ECCV 2022, Thm. 1 (matrices) and Lemma 2 (convolutions).
    * docs/proofs.md, theorems AOL1, AOL-DENSE and AOL-TIGHT.

    Examples
    --------
    >>> import torch
    >>> from specbound import layers
    >>> _ = torch.manual_seed(0)
    >>> layer = layers.AOLConv2d(2, 3, 3, dtype=torch.float64)
    >>> layer(torch.randn(1, 2, 6, 6, dtype=torch.float64)).shape
    torch.Size([1, 3, 6, 6])
    >>> cert = layer.certify(input_size=(6, 6))
    >>> cert.lower <= 1 + layers.ROUNDING_ALLOWANCE, cert.upper <= 1 + 1e-9
    (True, True)
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
        side: str = "input",
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
            n_iter=1,
            side=side,
            eps=eps,
            min_input_size=min_input_size,
            device=device,
            dtype=dtype,
        )


class AOLLinear(RescaledLinear):
    """Linear layer with AOL rescaling (Prach & Lampert 2022, Thm. 1 / Lemma 1):
    ``y = x (P D)^T + b`` with ``||P D|| <= 1``; ``side="input"`` (default) rescales the
    columns as published, ``"output"`` the rows.

    References
    ----------
    * B. Prach and C. H. Lampert, "Almost-Orthogonal Layers for Efficient General-Purpose
      Lipschitz Networks", ECCV 2022, Thm. 1 (matrices) and Lemma 2 (convolutions).
    * docs/proofs.md, theorems AOL1, AOL-DENSE and AOL-TIGHT.

    Examples
    --------
    >>> import torch
    >>> from specbound import layers
    >>> _ = torch.manual_seed(0)
    >>> layer = layers.AOLLinear(4, 3, dtype=torch.float64)
    >>> bool(torch.linalg.matrix_norm(layer.weight.detach(), 2) <= 1 + layers.ROUNDING_ALLOWANCE)
    True
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        side: str = "input",
        eps: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(
            in_features,
            out_features,
            bias,
            n_iter=1,
            side=side,
            eps=eps,
            device=device,
            dtype=dtype,
        )


def aol(
    weight: torch.Tensor, *, side: str = "input", groups: int = 1, eps: float = 0.0
) -> torch.Tensor:
    """AOL rescaling (Prach & Lampert, ECCV 2022, Thm. 1 / Lemma 2): :func:`rescale` with
    ``n_iter=1``; ``side="input"`` (default) is the published form ``P D``.

    Parameters
    ----------
    weight : torch.Tensor
        ``(c_out, c_in // groups, kh, kw)`` or a matrix ``(out, in)``.
    side : {"input", "output"}
    groups : int
    eps : float
        Lower clamp of the factors (``>= 0``).

    Returns
    -------
    torch.Tensor
        The rescaled weight, differentiable in ``weight``.

    References
    ----------
    * B. Prach and C. H. Lampert, "Almost-Orthogonal Layers for Efficient General-Purpose
      Lipschitz Networks", ECCV 2022, Thm. 1 (matrices) and Lemma 2 (convolutions).
    * docs/proofs.md, theorems AOL1, AOL-DENSE and AOL-TIGHT.

    Examples
    --------
    >>> import torch
    >>> from specbound import layers
    >>> _ = torch.manual_seed(0)
    >>> W = torch.randn(3, 4, dtype=torch.float64)
    >>> bool(torch.linalg.matrix_norm(layers.aol(W), 2) <= 1 + layers.ROUNDING_ALLOWANCE)
    True
    """
    return rescale(weight, 1, side=side, groups=groups, eps=eps)


def aol_(
    module: nn.Module, tensor_name: str = "weight", *, side: str = "input", eps: float = 0.0
) -> nn.Module:
    """Parametrize an existing conv or linear layer with AOL (Prach & Lampert 2022), in place:
    :func:`~specbound.layers.spectral_rescaling_` with ``n_iter=1`` and ``side="input"`` by
    default.

    Parameters
    ----------
    module : torch.nn.Conv2d or torch.nn.Linear
        Parametrized in place and returned.
    tensor_name : str
        The parameter to constrain (geotorch's call style); a tensor of the weight's shape.
    side : {"input", "output"}
        ``"input"``: the published form; ``"output"``: the dual form.
    eps : float
        Lower clamp of the factors (``>= 0``).

    Returns
    -------
    torch.nn.Module
        ``module``.

    References
    ----------
    * B. Prach and C. H. Lampert, "Almost-Orthogonal Layers for Efficient General-Purpose
      Lipschitz Networks", ECCV 2022, Thm. 1 (matrices) and Lemma 2 (convolutions).
    * docs/proofs.md, theorems AOL1, AOL-DENSE and AOL-TIGHT.

    Examples
    --------
    >>> import torch
    >>> import specbound as sb
    >>> from specbound import layers
    >>> conv = layers.aol_(torch.nn.Conv2d(2, 3, 3, padding=1, dtype=torch.float64))
    >>> type(conv).__name__
    'ParametrizedConv2d'
    >>> sb.certify(conv, input_size=(6, 6)).upper <= 1 + 1e-9
    True
    """
    if not isinstance(tensor_name, str):
        raise TypeError(f"tensor_name must be a str, got {type(tensor_name).__name__}")
    return spectral_rescaling_(module, tensor_name, n_iter=1, side=side, eps=eps)
