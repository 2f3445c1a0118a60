"""The layer as a scipy.sparse matrix with its Kronecker (block-Toeplitz/circulant) structure."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ..spec import ConvSpec
from .indexing import layer_axis_indices

LAYOUTS = ("channels_first", "pixels_first")


def axis_selection(index: np.ndarray, n: int) -> list[sp.csr_array]:
    """One ``(n_out, n)`` 0/1 matrix per tap: row ``i`` of tap ``a`` selects input ``index[i, a]``.

    For zeros padding and stride 1 these are shifted identities (Toeplitz); for circular
    padding they are cyclic shifts (circulant); strides keep every ``s``-th row.

    References
    ----------
    * docs/theory/operators.md, "The layer as a matrix" and "Exact representations".

    Examples
    --------
    Two output rows reading inputs ``(0, 1)`` and ``(1, 2)`` of an axis of length 3:

    >>> import numpy as np
    >>> from specbound.operators import axis_selection
    >>> first, second = axis_selection(np.array([[0, 1], [1, 2]]), 3)
    >>> first.toarray()
    array([[1., 0., 0.],
           [0., 1., 0.]])
    >>> second.toarray()
    array([[0., 1., 0.],
           [0., 0., 1.]])
    """
    n_out, k = index.shape
    mats = []
    for a in range(k):
        rows = np.nonzero(index[:, a] >= 0)[0]
        data = np.ones(rows.size)
        mats.append(sp.csr_array((data, (rows, index[rows, a])), shape=(n_out, n)))
    return mats


def conv_sparse(kernel: Any, spec: ConvSpec, *, layout: str = "channels_first") -> sp.sparray:
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
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    layer = spec.layer(kernel, need_size=True)
    (h, w) = layer.input_size
    taps = layer.dense_channel_taps()
    idx_h, idx_w = layer_axis_indices(layer)
    rows_h, cols_w = axis_selection(idx_h, h), axis_selection(idx_w, w)
    shape = (layer.out_dim, layer.in_dim)
    total = sp.csr_array(shape)
    for a, r_a in enumerate(rows_h):
        for b, c_b in enumerate(cols_w):
            k_ab = sp.csr_array(taps[:, :, a, b])
            if k_ab.nnz == 0:
                continue
            spatial = sp.kron(r_a, c_b, format="csr")
            if layout == "channels_first":
                total = total + sp.kron(k_ab, spatial, format="csr")
            else:
                total = total + sp.kron(spatial, k_ab, format="csr")
    if layout == "pixels_first":
        return sp.bsr_array(total, blocksize=(layer.c_out, layer.c_in))
    total.sum_duplicates()
    return total
