"""The layer as a matrix-free ``scipy.sparse.linalg.LinearOperator`` (float64, via torch)."""

from __future__ import annotations

import torch

from ..spec import ConvSpec, KernelLike, check_spec, resolve_device
from .conv_layer import ConvLayer


def conv_operator(
    kernel: KernelLike, spec: ConvSpec, *, device: str | torch.device | None = None
) -> ConvLayer:
    """Matrix-free ``LinearOperator`` of the layer, with ``matvec`` and ``rmatvec`` (adjoint).

    The :class:`ConvLayer` itself, after checking that ``spec`` has a finite input size.
    Memory is ``O(c * prod(size))`` per vector, so this works where even
    :func:`conv_sparse` does not fit. Computation is float64; ``device`` selects where torch
    runs it. ``matvec`` gathers the padded input through the per-axis index maps of the
    padding mode (every mode and any pad, circular pads that wrap more than once included)
    and runs ``torch.nn.functional.conv{d}d``; ``rmatvec`` is the exact adjoint:
    ``conv_transpose{d}d`` followed by the transposed gather (a scatter-add).

    References
    ----------
    * docs/theory/operators.md, "The layer as a matrix" and "Exact representations".

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.sparse.linalg import svds
    >>> import specbound as sb
    >>> from specbound.operators import conv_matrix, conv_operator
    >>> kernel = np.ones((1, 1, 3, 3))
    >>> spec = sb.ConvSpec(padding="reflect", input_size=(4, 4))
    >>> A = conv_operator(kernel, spec)
    >>> A.shape
    (16, 16)
    >>> x = np.arange(16.0)
    >>> np.allclose(A.matvec(x), conv_matrix(kernel, spec) @ x)
    True
    >>> np.allclose(A.rmatvec(x), conv_matrix(kernel, spec).T @ x)
    True
    >>> B = conv_operator(kernel, sb.ConvSpec(input_size=(4, 4)))
    >>> round(float(svds(B, k=1, return_singular_vectors=False, random_state=0)[0]), 6)
    6.854102
    """
    layer = ConvLayer(kernel, check_spec(spec), need_size=True)
    return layer.to(resolve_device(device))
