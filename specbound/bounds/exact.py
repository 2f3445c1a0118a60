"""The float64 ground-truth route as a bound method: ``exact`` calls
:func:`specbound.operators.exact_norm` (block-circulant eigenvalues when the layer is
circular, the dense Gram matrix otherwise) and names the route it took.
"""

from __future__ import annotations

from ..operators import exact_norm, exact_route
from ..operators.conv_layer import ConvLayer
from .base import SIZE_GIVEN, Bound, register


@register(
    name="exact",
    kind="exact",
    reference="float64 ground truth: Sedghi, Gupta & Long, ICLR 2019, Thm. 6 (circulant "
    "route); dense Gram matrix eigenvalue otherwise",
    input_size=SIZE_GIVEN,
    cost="circulant: O(HW c^3); dense: O((c H W)^3), refused above max_bytes",
)
def exact(layer: ConvLayer, *, max_bytes: int | None = None) -> Bound:
    """The spectral norm of the layer through :func:`specbound.operators.exact_norm`.

    Parameters
    ----------
    max_bytes : int, optional
        Memory ceiling of the dense route (``TooLargeError``, a ``ValueError``, above it).

    Returns
    -------
    Bound
        ``kind="exact"``; ``details["route"]`` is ``"circulant"`` or ``"dense"``.
    """
    route = exact_route(layer.kernel, layer.spec)
    value = exact_norm(layer.kernel, layer.spec, max_bytes=max_bytes)
    return Bound(value=value, kind="exact", method="exact", details={"route": route})
