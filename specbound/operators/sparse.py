"""The layer as a scipy.sparse matrix with its Kronecker (block-Toeplitz/circulant) structure."""

from __future__ import annotations

import scipy.sparse as sp

from ..spec import ConvSpec, KernelLike, check_spec
from .conv_layer import LAYOUTS, ConvLayer, axis_selection

__all__ = ["LAYOUTS", "axis_selection", "conv_sparse"]


def conv_sparse(
    kernel: KernelLike, spec: ConvSpec, *, layout: str = "channels_first"
) -> sp.sparray:
    """The layer's matrix as ``scipy.sparse``, equal to :func:`conv_matrix`.

    It is assembled from its structure,

    .. math::  A = \\sum_{a, b} K_{ab} \\otimes R_a \\otimes C_b,

    where :math:`K_{ab}` is the ``c_out x c_in`` tap matrix (block diagonal over groups) and
    :math:`R_a`, :math:`C_b` are the per-axis selection matrices of the padding mode
    (:func:`axis_selection`): Toeplitz for zeros padding, circulant for circular padding, so
    ``A`` is doubly block-Toeplitz or block-circulant.

    Parameters
    ----------
    layout : {"channels_first", "pixels_first"}
        ``"channels_first"`` (default) flattens as PyTorch ``(c, H, W)`` and returns CSR, equal
        to :func:`conv_matrix`. ``"pixels_first"`` orders ``(H, W, c)`` and returns a BSR matrix
        whose ``c_out x c_in`` blocks are sums of kernel taps, ``sum R_a ⊗ C_b ⊗ K_ab``.

    References
    ----------
    * docs/theory/operators.md, "The layer as a matrix" and "Exact representations".

    Examples
    --------
    >>> import numpy as np
    >>> import specbound as sb
    >>> from specbound.operators import conv_matrix, conv_sparse
    >>> kernel = np.ones((1, 1, 3, 3))
    >>> spec = sb.ConvSpec(padding="circular", input_size=(4, 4))
    >>> A = conv_sparse(kernel, spec)
    >>> A.shape, A.nnz
    ((16, 16), 144)
    >>> np.array_equal(A.toarray(), conv_matrix(kernel, spec))
    True
    """
    return ConvLayer(kernel, check_spec(spec), need_size=True).sparse(layout=layout)
