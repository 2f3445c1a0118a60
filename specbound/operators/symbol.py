"""The symbol of a convolution: the matrix-valued trigonometric polynomial of its kernel."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..spec import ConvSpec, as_kernel, check_pair
from .conv_layer import ConvLayer
from .frequency import FrequencyEngine


def symbol(kernel: Any, omega: Any, *, dilation: Any = 1, groups: int = 1) -> np.ndarray:
    """The ``c_out x c_in`` matrix :math:`\\hat K(\\omega) = \\sum_{a,b} K_{ab}\\,
    e^{-i(\\omega_1 d_h a + \\omega_2 d_w b)}` (block diagonal over groups).

    Its largest singular value, maximised over the torus, is
    :math:`S(K) = \\sup_\\omega \\sigma_{\\max}(\\hat K(\\omega))`, the norm of the convolution
    on :math:`\\ell^2(\\mathbb Z^2)` and an upper bound on every zero-padded layer of the kernel
    (Delattre et al. 2024, arXiv 2402.00240; see ``docs`` for the gap relations). A kernel
    with ``d`` spatial axes (1 to 3) has the symbol of ``d`` frequencies, the same sum over
    its taps (docs/certify.md L14).

    Parameters
    ----------
    omega : array_like, shape ``(..., d)``
        Frequencies ``(omega_h, omega_w)`` in radians (one per spatial axis of the kernel).

    Returns
    -------
    numpy.ndarray
        complex128, shape ``(..., c_out, c_in)``.

    References
    ----------
    * docs/theory/operators.md, "The symbol supremum".
    * B. Delattre, Q. Barthélemy and A. Allauzen, "Spectral Norm of Convolutional Layers
      with Circular and Zero Paddings", arXiv:2402.00240, 2024 (the supremum of the symbol is
      the every-size norm of a zero-padded layer).

    Examples
    --------
    >>> import numpy as np
    >>> from specbound.operators import symbol
    >>> kernel = np.ones((1, 1, 3, 3))
    >>> symbol(kernel, (0.0, 0.0))
    array([[9.+0.j]])
    >>> np.round(np.abs(symbol(kernel, (np.pi, np.pi))), 9)
    array([[1.]])
    """
    layer = ConvLayer(kernel, ConvSpec(groups=groups))
    k, d = layer.dense_channel_taps(), layer.d
    if d == 2:
        dil: tuple[int, ...] = check_pair(dilation, "dilation", 1)
    elif isinstance(dilation, (int, np.integer)):
        dil = (int(dilation),) * d
    else:
        dil = tuple(int(v) for v in dilation)
        if len(dil) != d:
            raise ValueError(f"dilation must give one int per spatial axis ({d}), got {dilation!r}")
    w = np.asarray(omega, dtype=np.float64)
    if w.shape[-1:] != (d,):
        raise ValueError(f"omega must have shape (..., {d}), got {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError("omega must be finite")
    engine = FrequencyEngine(torch.as_tensor(k, dtype=torch.float64), dilation=dil, ndim=d)
    mats = engine.at_points(w.reshape(-1, d))  # (F, 1, c_out, c_in)
    return mats.reshape(*w.shape[:-1], *k.shape[:2]).numpy()


def symbol_grid_norm(kernel: Any, grid: Any, *, dilation: Any = 1, groups: int = 1) -> float:
    """:math:`\\max_{u, v} \\sigma_{\\max}(\\hat K(2\\pi u / N_h, 2\\pi v / N_w))` on an
    ``N_h x N_w`` grid.

    This equals the exact norm of the circular layer on ``N_h x N_w`` inputs (kernel
    wrapped), hence it is a lower bound on :math:`S(K)`.

    References
    ----------
    * docs/theory/operators.md, "The symbol supremum"; docs/proofs.md, theorem G5 (how far
      a grid maximum can sit below the supremum).
    * A. Araujo, B. Negrevergne, Y. Chevaleyre and J. Atif, "On Lipschitz Regularization of
      Convolutional Layers using Toeplitz Matrix Theory", AAAI 2021 (the symbol sampled on a
      grid).

    Examples
    --------
    >>> import numpy as np
    >>> from specbound.operators import symbol_grid_norm
    >>> round(symbol_grid_norm(np.ones((1, 1, 3, 3)), (8, 8)), 9)
    9.0
    """
    from .circulant import circulant_norm

    spec = ConvSpec(
        padding="circular", pad="same", input_size=grid, dilation=dilation, groups=groups
    )
    return circulant_norm(ConvLayer(as_kernel(kernel), spec))
