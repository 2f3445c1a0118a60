"""Strategies for the spec domains that the library's theorems are stated on.

Each is a restriction of :func:`~specbound.testing.conv_specs`, so every spec drawn is valid:

* :func:`circulant_specs` — block-circulant circular layers (``pad="same"``, stride dividing the
  size): the domain of :func:`specbound.operators.circulant_spectrum` and of the per-frequency
  Gram iteration;
* :func:`symbol_bounded_specs` — zero padding of any amount, or circular padding with at most
  ``dilation*(k-1)`` padded in total per axis: every such layer is a compression of the
  convolution on the plane (or a row selection of a circulant), so its norm is at most the
  symbol supremum ``S(K)`` (the domain of every "every input size" bound);
* :func:`lipschitz_specs` — the domain of the 1-Lipschitz layers: the above plus reflect and
  replicate padding (which the layers compensate by the padding operator's norm).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from ..spec import ConvSpec
from .families import ADVERSARIAL_FAMILIES, adversarial_kernels
from .strategies import conv_specs

Drawn = tuple[tuple[int, int, int, int], ConvSpec]


def circulant_specs(**options: Any) -> st.SearchStrategy[Drawn]:
    """``(kernel_shape, spec)`` of a block-circulant circular layer (options as
    :func:`~specbound.testing.conv_specs`, without ``modes`` and ``circulant``)."""
    return conv_specs(("circular",), circulant=True, **options)


def within_symbol_domain(shape: tuple[int, int, int, int], spec: ConvSpec) -> bool:
    """True for zero padding, and for circular padding with total pad ``<= d*(k-1)`` per axis."""
    if spec.padding == "zeros":
        return True
    if spec.padding != "circular":
        return False
    (top, bottom), (left, right) = spec.pads(shape[2:])
    (dh, dw), (kh, kw) = spec.dilation, shape[2:]
    return top + bottom <= dh * (kh - 1) and left + right <= dw * (kw - 1)


def symbol_bounded_specs(
    modes: tuple[str, ...] = ("zeros", "circular"), **options: Any
) -> st.SearchStrategy[Drawn]:
    """``(kernel_shape, spec)`` whose layer norm is at most ``S(K)`` (module docstring)."""
    bad = set(modes) - {"zeros", "circular"}
    if bad:
        raise ValueError(f"symbol-bounded layers are zeros or circular, got modes {sorted(bad)}")
    return conv_specs(modes, **options).filter(lambda drawn: within_symbol_domain(*drawn))


def lipschitz_specs(
    modes: tuple[str, ...] = ("zeros", "circular", "reflect", "replicate"), **options: Any
) -> st.SearchStrategy[Drawn]:
    """``(kernel_shape, spec)`` in the domain of :mod:`specbound.layers` (module docstring)."""
    return conv_specs(modes, **options).filter(
        lambda drawn: drawn[1].padding in ("reflect", "replicate") or within_symbol_domain(*drawn)
    )


@st.composite
def adversarial_layers(
    draw: st.DrawFn,
    specs: st.SearchStrategy[Drawn] | None = None,
    families: tuple[str, ...] = ADVERSARIAL_FAMILIES,
) -> tuple[np.ndarray, ConvSpec]:
    """``(kernel, spec)``: a spec from ``specs`` (default :func:`conv_specs`) and a kernel from
    any adversarial family (:func:`~specbound.testing.adversarial_kernels`)."""
    shape, spec = draw(conv_specs() if specs is None else specs)
    return draw(adversarial_kernels(shape, families)), spec
