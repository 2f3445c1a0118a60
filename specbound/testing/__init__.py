"""Public Hypothesis strategies and assertion helpers for property-testing conv bounds.

Example
-------
>>> from hypothesis import given
>>> import specbound as sb
>>> from specbound.testing import layers, assert_upper_bound
>>> @given(layers(modes=("circular",), need_size=True))
... def test_my_bound(layer):
...     kernel, spec = layer
...     assert_upper_bound(my_bound(kernel, spec), kernel, spec)
"""

from .assertions import ROUNDING_RTOL, assert_lower_bound, assert_upper_bound
from .strategies import KERNEL_FAMILIES, conv_specs, kernels, layers

__all__ = [
    "KERNEL_FAMILIES",
    "ROUNDING_RTOL",
    "assert_lower_bound",
    "assert_upper_bound",
    "conv_specs",
    "kernels",
    "layers",
]
