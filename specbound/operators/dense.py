"""The dense float64 matrix of a convolution layer (:meth:`ConvLayer.dense`)."""

from __future__ import annotations

import numpy as np

from ..spec import ConvSpec, KernelLike, check_spec
from .conv_layer import ConvLayer


def conv_matrix(kernel: KernelLike, spec: ConvSpec, *, max_bytes: int | None = None) -> np.ndarray:
    """Dense matrix ``A`` of the layer, so that ``A @ x.ravel() == conv(x).ravel()``.

    Vectors are flattened as PyTorch tensors ``(c, *size)`` in C order (channel-major).
    Row ``(o, i)`` of ``A`` holds, at column ``(c, r(i, a))``, the sum of the taps
    ``K[o, c, a]`` that read that input entry, where ``r`` is the product of the per-axis
    index maps of the padding mode (:mod:`specbound.operators.indexing`). Any number of
    spatial axes (1 to 3) and transposed specs work (see :class:`ConvLayer`).

    Parameters
    ----------
    kernel : array_like or torch.Tensor
        ``(c_out, c_in // groups, k...)``.
    spec : ConvSpec
        Must have a finite ``input_size``.
    max_bytes : int, optional
        Refuse (``TooLargeError``) before allocating more than this many bytes;
        default :data:`specbound.spec.DENSE_MAX_BYTES`.

    Returns
    -------
    numpy.ndarray
        float64 array of shape ``(c_out * prod(out_size), c_in * prod(input_size))``.

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
    layer = ConvLayer(kernel, check_spec(spec), need_size=True)
    return layer.dense(max_bytes=max_bytes)
