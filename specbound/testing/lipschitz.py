"""Assertions for 1-Lipschitz layers, every-size bounds and certified brackets.

* :func:`module_matrix` — the dense Jacobian of an affine ``torch.nn.Module`` (a conv layer with
  bias, a constrained layer, a ConvNorm step in eval mode), from the images of the basis;
* :func:`assert_lipschitz_layer` — ``||J|| <= bound (1 + rtol)`` for a module at an input size,
  or for a ``(kernel, spec)`` pair;
* :func:`assert_every_size_upper_bound` — a bound that claims to hold for every input size
  (``input_size=None``) is at least the exact norm at several finite sizes;
* :func:`assert_bracket` — ``lower <= exact <= upper``, e.g. for a :class:`specbound.certify`
  certificate.

Example
-------
>>> import torch
>>> from hypothesis import given
>>> from specbound.layers import AOLConv2d
>>> from specbound.testing import assert_lipschitz_layer, kernels
>>> @given(kernels((3, 2, 3, 3)))
... def test_aol_is_1_lipschitz(kernel):
...     layer = AOLConv2d(2, 3, 3, padding="same").double()
...     layer.weight = torch.from_numpy(kernel)  # stores the free kernel
...     assert_lipschitz_layer(layer, (6, 6))
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from ..operators import exact_norm
from ..operators.conv_layer import ConvLayer
from ..spec import ConvSpec
from .assertions import ROUNDING_RTOL, _value


def module_matrix(
    module: torch.nn.Module, input_shape: tuple[int, int, int], *, chunk: int = 512
) -> np.ndarray:
    """Dense Jacobian ``J`` of an affine module, ``f(x) = J x + f(0)``, in float64.

    A copy of ``module`` is converted to float64 and put in eval mode (so that BatchNorm uses
    its running statistics and the map is affine); the columns of ``J`` are
    ``f(e_i) - f(0)`` for the basis images ``e_i`` of shape ``input_shape = (c, H, W)``.

    Returns
    -------
    numpy.ndarray
        ``(out_numel, c*H*W)``; vectors flattened as PyTorch tensors ``(c, H, W)``.
    """
    model = copy.deepcopy(module).double().eval()
    n = math.prod(input_shape)
    columns = []
    with torch.no_grad():
        offset = model(torch.zeros(1, *input_shape, dtype=torch.float64)).reshape(1, -1)
        for start in range(0, n, chunk):
            eye = torch.eye(n, dtype=torch.float64)[start : start + chunk]
            out = model(eye.reshape(-1, *input_shape)).reshape(eye.shape[0], -1)
            columns.append((out - offset).T)
    return torch.cat(columns, dim=1).numpy()


def _matrix_norm(a: np.ndarray) -> float:
    gram = a @ a.T if a.shape[0] <= a.shape[1] else a.T @ a
    return float(np.sqrt(max(float(np.linalg.eigvalsh(gram)[-1]), 0.0)))


def assert_lipschitz_layer(
    layer: Any,
    input_size: Any = None,
    *,
    spec: ConvSpec | None = None,
    bound: float = 1.0,
    rtol: float = ROUNDING_RTOL,
) -> float:
    """Assert that a layer's exact spectral norm is ``<= bound * (1 + rtol)``; return the norm.

    Parameters
    ----------
    layer : torch.nn.Module or array_like
        An affine module (its Jacobian by :func:`module_matrix`), or a kernel together with
        ``spec``.
    input_size : (H, W) or int, optional
        Input size for a module (its channel count is read from ``in_channels``, or pass
        ``input_size=(c, H, W)``); for a kernel it replaces ``spec.input_size`` when given.
    spec : ConvSpec, optional
        The layer description when ``layer`` is a kernel.
    bound : float
        The Lipschitz constant claimed (1 for the layers of :mod:`specbound.layers`).
    rtol : float
        Rounding allowance.
    """
    if isinstance(layer, torch.nn.Module):
        if input_size is None:
            raise ValueError("a module needs input_size=(H, W) or (c, H, W)")
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if len(size) == 2:
            channels = getattr(layer, "in_channels", None)
            if channels is None:
                raise ValueError("pass input_size=(c, H, W): the module has no in_channels")
            size = (int(channels), *size)
        norm = _matrix_norm(module_matrix(layer, size))
        what = f"{type(layer).__name__} at input {size}"
    else:
        if spec is None:
            raise ValueError("a kernel needs spec=ConvSpec(...)")
        if input_size is not None:
            spec = spec.replace(input_size=input_size)
        norm = exact_norm(layer, spec)
        what = spec.describe()
    assert norm <= bound * (1 + rtol), (
        f"the layer's norm {norm!r} exceeds the Lipschitz bound {bound!r} for {what}"
    )
    return norm


def assert_every_size_upper_bound(
    bound: Any,
    kernel: Any,
    spec: ConvSpec,
    sizes: Iterable[Any] = (1, 2, 3, 5, 8, 13),
    *,
    rtol: float = ROUNDING_RTOL,
) -> float:
    """Assert that a bound claimed for every input size (``spec.input_size`` is ignored) is at
    least the exact norm at each of ``sizes`` (where the layer is defined); return the largest
    exact norm seen.

    Passing is evidence, not proof, of an every-size bound: the supremum over sizes is
    approached only as the size grows (``sigma_zero(n) -> S(K)``).
    """
    value = _value(bound)
    best = 0.0
    for size in sizes:
        sized = spec.replace(input_size=size)
        try:
            ConvLayer(kernel, sized)
        except ValueError:  # e.g. an empty output or a reflect pad at this size
            continue
        exact = exact_norm(kernel, sized)
        best = max(best, exact)
        assert value * (1 + rtol) >= exact, (
            f"every-size upper bound {value!r} is below the exact norm {exact!r} at "
            f"{sized.describe()}"
        )
    return best


def assert_bracket(
    lower: Any,
    upper: Any = None,
    kernel: Any = None,
    spec: ConvSpec | None = None,
    *,
    rtol: float = ROUNDING_RTOL,
) -> float:
    """Assert ``lower (1 - rtol) <= exact <= upper (1 + rtol)``; return the exact norm.

    ``lower`` may be a certificate (an object with ``lower`` and ``upper`` attributes, and
    ``kernel``/``spec`` when those are not given); then ``upper`` is omitted.
    """
    if hasattr(lower, "upper") and hasattr(lower, "lower"):
        cert = lower
        kernel = cert.kernel if kernel is None else kernel
        spec = cert.spec if spec is None else spec
        lower, upper = cert.lower, cert.upper
    if kernel is None or spec is None or upper is None:
        raise ValueError("assert_bracket needs lower, upper, kernel and spec (or a certificate)")
    exact = exact_norm(kernel, spec)
    lo, hi = _value(lower), _value(upper)
    assert lo * (1 - rtol) <= exact <= hi * (1 + rtol), (
        f"exact norm {exact!r} outside the bracket [{lo!r}, {hi!r}] for {spec.describe()}"
    )
    return exact
