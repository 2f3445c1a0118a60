"""Exact float64 ground truth for convolution layers (1-, 2- and 3-D, plain or transposed).

* :class:`ConvLayer` — the layer as one object: geometry, ``LinearOperator``, matrices;

* :func:`conv_matrix` — dense matrix, by index arithmetic, with a memory guard;
* :func:`conv_sparse` — ``scipy.sparse`` with the Kronecker block-Toeplitz/circulant structure;
* :func:`conv_operator` — matrix-free ``LinearOperator`` with the adjoint;
* :func:`circulant_spectrum` — every singular value of a circular layer (wrapped, polyphase);
* :func:`symbol`, :func:`symbol_grid_norm` — the kernel's symbol and its grid maximum;
* :func:`exact_norm` — the spectral norm through the cheapest exact route.
"""

from .circulant import circulant_spectrum, frequency_matrices, polyphase_kernel
from .conv_layer import ConvLayer
from .dense import conv_matrix
from .exact import exact_norm, exact_route
from .matrix_free import conv_operator
from .sparse import axis_selection, conv_sparse
from .symbol import symbol, symbol_grid_norm

__all__ = [
    "ConvLayer",
    "axis_selection",
    "circulant_spectrum",
    "conv_matrix",
    "conv_operator",
    "conv_sparse",
    "exact_norm",
    "exact_route",
    "frequency_matrices",
    "polyphase_kernel",
    "symbol",
    "symbol_grid_norm",
]
