"""Exact float64 spectral norms through the cheapest exact route."""

from __future__ import annotations

import numpy as np

from ..rigorous.rounding import prescale, scale_back_outward
from ..spec import ConvSpec, KernelLike, check_dense_size, check_spec
from .circulant import circulant_norm
from .conv_layer import ConvLayer


def exact_route(kernel: KernelLike, spec: ConvSpec) -> str:
    """Name of the route :func:`exact_norm` takes: ``"circulant"`` or ``"dense"``.

    References
    ----------
    * docs/theory/operators.md, "Exact routes, and their accuracy".

    Examples
    --------
    >>> import numpy as np
    >>> import specbound as sb
    >>> from specbound.operators import exact_route
    >>> kernel = np.ones((1, 1, 3, 3))
    >>> exact_route(kernel, sb.ConvSpec(padding="circular", input_size=(4, 4)))
    'circulant'
    >>> exact_route(kernel, sb.ConvSpec(padding="zeros", input_size=(4, 4)))
    'dense'
    """
    return _route(ConvLayer(kernel, spec, need_size=True))


def _route(layer: ConvLayer) -> str:
    if layer.d == 1:
        layer = layer.as_2d()
    return "circulant" if layer.d == 2 and layer.is_circulant else "dense"


def exact_norm(kernel: KernelLike, spec: ConvSpec, *, max_bytes: int | None = None) -> float:
    """The spectral norm :math:`\\|A\\|_2` of the layer, exact up to float64 rounding.

    Any layer :class:`ConvLayer` describes: 1-, 2- or 3-D, plain or transposed (the
    norm of a transposed layer is computed on its own matrix). Routes, cheapest first:

    * ``"circulant"`` (2-D or 1-D forward layers with circular padding, ``d*(k-1)``
      padded per axis, stride dividing the size): the largest eigenvalue of the smaller
      Gram matrix of each frequency matrix of the wrapped (polyphase) kernel (Sedghi et
      al. 2019), over the ``rfft2`` half-spectrum.
    * ``"dense"``: the largest eigenvalue of the smaller Gram matrix ``A A^T`` or ``A^T A``
      of the dense matrix (:func:`conv_matrix`), refused with ``TooLargeError`` above
      ``max_bytes``.

    The kernel is first scaled by a power of two (largest entry in ``[1, 2)``) and the norm
    scaled back, so kernels at ``1e300`` or ``1e-300`` neither overflow nor underflow (a
    norm above the largest float is ``inf``).

    Accuracy: float64 rounding, relative to the norm for the dense route; the frequency
    route's error is absolute, of order ``u * sum|K|``, which matters only when taps cancel
    (a norm far below ``sum|K|``). :func:`specbound.certify` accounts for both rigorously.

    Raises
    ------
    ValueError
        for ``input_size=None`` (the norm over every size is the symbol supremum ``S(K)``,
        which no finite computation gives exactly: use ``certify`` for a rigorous bracket).
    TooLargeError
        when the dense route does not fit in ``max_bytes``.

    References
    ----------
    * docs/theory/operators.md, "Exact routes, and their accuracy".
    * H. Sedghi, V. Gupta and P. M. Long, "The Singular Values of Convolutional Layers",
      ICLR 2019, Thm. 6 (the circulant route).

    Examples
    --------
    >>> import numpy as np
    >>> import specbound as sb
    >>> from specbound.operators import exact_norm
    >>> kernel = np.ones((1, 1, 3, 3))
    >>> round(exact_norm(kernel, sb.ConvSpec(padding="circular", input_size=(4, 4))), 9)
    9.0
    >>> round(exact_norm(kernel, sb.ConvSpec(padding="zeros", input_size=(4, 4))), 9)
    6.854101966
    >>> exact_norm(kernel, sb.ConvSpec(padding="zeros"))  # every size: no finite matrix
    Traceback (most recent call last):
    ...
    ValueError: ...
    """
    spec = check_spec(spec)
    if spec.input_size is None:
        raise ValueError(
            "exact_norm needs a finite input_size: with input_size=None the norm over every "
            "input size is the symbol supremum S(K), which is only bracketed (use certify)"
        )
    layer = ConvLayer(kernel, spec, need_size=True)
    if layer.d == 1:  # the one-row 2-D layer: the same matrix
        layer = layer.as_2d()
    # work on the kernel scaled by 2^j (max |K| in [1, 2)), exact barring subnormals, so
    # that neither the Gram matrix nor the frequency matrices over- or underflow for a
    # kernel at 1e300 or 1e-300; the norm is scaled back by 2^-j at the end
    kernel, j, _ = prescale(layer.kernel)  # exact barring subnormal entries
    scaled = ConvLayer(kernel, layer.spec)
    if _route(layer) == "circulant":
        return scale_back_outward(circulant_norm(scaled), j, upward=True)
    small = min(layer.in_dim, layer.out_dim)
    check_dense_size(
        (layer.out_dim + small, layer.in_dim), "the dense matrix and its Gram", max_bytes
    )
    a = scaled.dense(max_bytes=max_bytes)
    gram = a @ a.T if a.shape[0] <= a.shape[1] else a.T @ a
    top = float(np.linalg.eigvalsh(gram)[-1])
    return scale_back_outward(float(np.sqrt(max(top, 0.0))), j, upward=True)
