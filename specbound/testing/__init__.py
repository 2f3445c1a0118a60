"""Public Hypothesis strategies and assertion helpers for property-testing conv bounds.

Strategies (every spec drawn is valid; ``modes`` restricts the padding modes):

* :func:`conv_specs`, :func:`layers`, :func:`kernels` — any layer, kernels from
  :data:`KERNEL_FAMILIES` (gaussian, rank one, a vanishing frequency, zero, tiny and huge
  scales, non-negative, integer);
* :func:`adversarial_kernels`, :func:`adversarial_layers`, :func:`family_kernel` — the same
  plus exactly tight cases (:data:`ADVERSARIAL_FAMILIES`: constant, orthogonal centre tap,
  identical filters, a single tap, sparse, checkerboard), also without Hypothesis;
* :func:`drawn_kernel`, :func:`valid_geometry` — a family kernel drawn entry by entry (so
  failures shrink), and the independent predicate for specs ``ConvLayer(kernel, spec)`` must accept;
* :mod:`specbound.testing.adversarial` — adversarial ``certify`` calls by family (tight at
  rtol 1e-12, subnormal, 1e+-300, mixed-scale groups, every dtype, pads beyond ``d(k-1)``,
  every size, far strides, a millisecond budget, the probabilistic guarantee) with an mpmath
  truth (issue 12);
* :func:`circulant_specs`, :func:`symbol_bounded_specs`, :func:`lipschitz_specs` — the domains
  of the exact circulant route, of every-size bounds and of the 1-Lipschitz layers;
* :func:`matrices`, :func:`repeated_top_matrices`, :func:`family_matrix` — dense matrices
  (rank one, repeated top singular value, graded, orthogonal, tiny/huge, ...).

Ground truth and assertions (one-sided, against the exact float64 operator, with the one
rounding allowance :data:`ROUNDING_RTOL`): :func:`dense_norm` (the SVD of the dense matrix),
:func:`assert_upper_bound`, :func:`assert_lower_bound`, :func:`assert_bracket`,
:func:`assert_every_size_upper_bound`, :func:`assert_lipschitz_layer` (a module or a kernel),
:func:`module_matrix` (the dense Jacobian of an affine module), and
:func:`assert_upper_dominates_jacobian` (a whole network's certified upper bound against the
largest Jacobian norm found at random inputs).

Ground truth from torch itself: :func:`torch_conv_matrix`, the dense float64 matrix of any
``Conv1d/2d/3d`` or ``ConvTranspose1d/2d/3d`` module (every padding mode) or convolution
functional at a given input size.

Example
-------
>>> from hypothesis import given
>>> import specbound as sb
>>> from specbound.testing import layers, assert_upper_bound
>>> @given(layers(modes=("circular",), need_size=True))
... def test_my_bound(layer):
...     kernel, spec = layer
...     assert_upper_bound(my_bound(kernel, spec), kernel, spec)

A bound claimed for every input size, on the adversarial families:

>>> from specbound.testing import adversarial_layers, symbol_bounded_specs
>>> from specbound.testing import assert_every_size_upper_bound
>>> @given(adversarial_layers(symbol_bounded_specs(need_size=False)))
... def test_my_every_size_bound(layer):
...     kernel, spec = layer
...     assert_every_size_upper_bound(my_bound(kernel, spec.replace(input_size=None)),
...                                   kernel, spec)
"""

from .assertions import ROUNDING_RTOL, assert_lower_bound, assert_upper_bound, dense_norm
from .families import (
    ADVERSARIAL_FAMILIES,
    MATRIX_FAMILIES,
    TIGHT_FAMILIES,
    adversarial_kernels,
    adversarial_suite,
    drawn_kernel,
    family_kernel,
    family_matrix,
    matrices,
    repeated_top_matrices,
    repeated_top_matrix,
    with_singular_values,
)
from .lipschitz import (
    assert_bracket,
    assert_every_size_upper_bound,
    assert_lipschitz_layer,
    module_matrix,
)
from .network import JACOBIAN_RTOL, assert_upper_dominates_jacobian
from .specs import (
    adversarial_layers,
    circulant_specs,
    lipschitz_specs,
    symbol_bounded_specs,
    within_symbol_domain,
)
from .strategies import KERNEL_FAMILIES, conv_specs, kernels, layers, valid_geometry
from .torchconv import CONV_MODULES, torch_conv_matrix
from .torchvision import torchvision_models

__all__ = [
    "ADVERSARIAL_FAMILIES",
    "CONV_MODULES",
    "JACOBIAN_RTOL",
    "KERNEL_FAMILIES",
    "MATRIX_FAMILIES",
    "ROUNDING_RTOL",
    "TIGHT_FAMILIES",
    "adversarial_kernels",
    "adversarial_layers",
    "adversarial_suite",
    "assert_bracket",
    "assert_every_size_upper_bound",
    "assert_lipschitz_layer",
    "assert_lower_bound",
    "assert_upper_bound",
    "assert_upper_dominates_jacobian",
    "circulant_specs",
    "conv_specs",
    "dense_norm",
    "drawn_kernel",
    "family_kernel",
    "family_matrix",
    "kernels",
    "layers",
    "lipschitz_specs",
    "matrices",
    "module_matrix",
    "repeated_top_matrices",
    "repeated_top_matrix",
    "symbol_bounded_specs",
    "torch_conv_matrix",
    "torchvision_models",
    "valid_geometry",
    "with_singular_values",
    "within_symbol_domain",
]
