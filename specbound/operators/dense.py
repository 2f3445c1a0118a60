"""The dense float64 matrix of a convolution layer, built by index arithmetic."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..spec import ConvSpec, check_dense_size, check_spec
from .indexing import layer_axis_indices


def conv_matrix(kernel: Any, spec: ConvSpec, *, max_bytes: int | None = None) -> np.ndarray:
    """Dense matrix ``A`` of the layer, so that ``A @ x.ravel() == conv(x).ravel()``.

    Vectors are flattened as PyTorch tensors ``(c, H, W)`` in C order (channel-major).
    Row ``(o, i, j)`` of ``A`` holds, at column ``(c, r_h[i, a], r_w[j, b])``, the sum of the
    taps ``K[o, c, a, b]`` that read that input pixel, where ``r_h`` and ``r_w`` are the
    per-axis index maps of the padding mode (:mod:`specbound.operators.indexing`).

    Parameters
    ----------
    kernel : array_like or torch.Tensor
        ``(c_out, c_in // groups, kh, kw)``.
    spec : ConvSpec
        Must have a finite ``input_size``.
    max_bytes : int, optional
        Refuse (``TooLargeError``) before allocating more than this many bytes;
        default :data:`specbound.spec.DENSE_MAX_BYTES`.

    Returns
    -------
    numpy.ndarray
        float64 array of shape ``(c_out*OH*OW, c_in*H*W)``.

    References
    ----------
    * docs/theory/operators.md, "The layer as a matrix" and "Exact representations".

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> import specbound as sb
    >>> from specbound.operators import conv_matrix
    >>> kernel = np.ones((1, 1, 3, 3))
    >>> A = conv_matrix(kernel, sb.ConvSpec(padding="zeros", input_size=(4, 4)))
    >>> A.shape
    (16, 16)
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> y = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(kernel), padding=1)
    >>> np.allclose(A @ x.ravel(), y.numpy().ravel())
    True
    >>> round(float(np.linalg.norm(A, 2)), 6)
    6.854102
    """
    layer = check_spec(spec).layer(kernel, need_size=True)
    check_dense_size((layer.out_dim, layer.in_dim), "the dense matrix", max_bytes)
    (h, w), (oh, ow) = layer.input_size, layer.out_size
    taps = layer.dense_channel_taps()
    idx_h, idx_w = layer_axis_indices(layer)
    a4 = np.zeros((layer.c_out, oh * ow, layer.c_in, h * w))
    kh, kw = layer.kernel_size
    for a in range(kh):
        for b in range(kw):
            ih, iw = idx_h[:, a], idx_w[:, b]
            ii, jj = np.nonzero((ih[:, None] >= 0) & (iw[None, :] >= 0))
            if ii.size == 0:
                continue
            rows = ii * ow + jj
            cols = ih[ii] * w + iw[jj]
            # within one tap each output pixel reads one input pixel: (rows, cols) are distinct
            a4[:, rows, :, cols] += taps[None, :, :, a, b]
    return a4.reshape(layer.out_dim, layer.in_dim)
