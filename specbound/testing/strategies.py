"""Hypothesis strategies for layer specs and kernels, including adversarial kernel families.

Every spec drawn is valid (``ConvLayer(kernel, spec)`` accepts it); invalid combinations are never
generated rather than filtered, except for the rare empty output which is rejected with
``assume``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

from ..spec import PADDING_MODES, ConvSpec
from .families import KERNEL_FAMILIES, drawn_kernel


@st.composite
def kernels(
    draw: st.DrawFn,
    shape: tuple[int, int, int, int],
    families: tuple[str, ...] = KERNEL_FAMILIES,
) -> np.ndarray:
    """A float64 kernel of ``shape`` from one of ``families`` (default
    :data:`KERNEL_FAMILIES`; :data:`~specbound.testing.ADVERSARIAL_FAMILIES` adds the tight
    ones), drawn entry by entry so that failures shrink
    (:func:`~specbound.testing.families.drawn_kernel`)."""
    family = draw(st.sampled_from(families))
    return drawn_kernel(draw, family, shape)


def valid_geometry(shape: tuple[int, int, int, int], spec: ConvSpec) -> bool:
    """True when ``ConvLayer(kernel, spec)`` must accept a kernel of ``shape`` (computed
    independently of it): ``groups`` divides ``c_out``, and at a given size the output is
    non-empty and a reflect pad is smaller than the input. Tests draw with
    ``assume(valid_geometry(...))`` and then call ``ConvLayer(kernel, spec)`` unguarded, so a
    validation regression fails the test instead of being filtered out."""
    c_out, _, kh, kw = shape
    if c_out % spec.groups:
        return False
    if spec.input_size is None:
        return True
    (h, w), (dh, dw) = spec.input_size, spec.dilation
    (top, bottom), (left, right) = spec.pads((kh, kw))
    if spec.padding == "reflect" and (max(top, bottom) >= h or max(left, right) >= w):
        return False
    return h + top + bottom >= dh * (kh - 1) + 1 and w + left + right >= dw * (kw - 1) + 1


def _pad_choice(kh: int, kw: int, dh: int, dw: int, max_pad: int | None) -> st.SearchStrategy:
    limit_h = dh * (kh - 1) if max_pad is None else max_pad
    limit_w = dw * (kw - 1) if max_pad is None else max_pad
    side_h, side_w = st.integers(0, limit_h), st.integers(0, limit_w)
    return st.one_of(
        st.sampled_from(["same", "valid", "full"]),
        st.integers(0, min(limit_h, limit_w)),
        st.tuples(side_h, side_w),
        st.tuples(side_w, side_w, side_h, side_h),
    )


@st.composite
def conv_specs(
    draw: st.DrawFn,
    modes: tuple[str, ...] = PADDING_MODES,
    *,
    max_channels: int = 3,
    max_kernel: int = 4,
    max_size: int = 8,
    max_stride: int = 3,
    max_dilation: int = 3,
    max_groups: int = 2,
    max_pad: int | None = None,
    need_size: bool = True,
    circulant: bool = False,
) -> tuple[tuple[int, int, int, int], ConvSpec]:
    """A valid ``(kernel_shape, ConvSpec)`` pair.

    Parameters
    ----------
    modes : padding modes to draw from.
    max_pad : largest pad per side; default ``dilation*(k-1)`` (the "full" pad).
    need_size : draw a finite input size; if False, ``input_size`` may be None.
    circulant : draw only block-circulant circular layers (``pad="same"``, stride dividing
        the size), the domain of :func:`specbound.operators.circulant_spectrum`.
    """
    mode = draw(st.sampled_from(("circular",) if circulant else modes))
    groups = draw(st.integers(1, max_groups))
    c_out = groups * draw(st.integers(1, max_channels))
    c_in_g = draw(st.integers(1, max_channels))
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    dh, dw = draw(st.integers(1, max_dilation)), draw(st.integers(1, max_dilation))
    sh, sw = draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride))
    if circulant:
        pad: Any = "same"
        h = sh * draw(st.integers(1, max(1, max_size // sh)))
        w = sw * draw(st.integers(1, max(1, max_size // sw)))
    else:
        pad = draw(_pad_choice(kh, kw, dh, dw, max_pad))
        h, w = draw(st.integers(1, max_size)), draw(st.integers(1, max_size))
    size = (h, w) if need_size or draw(st.booleans()) else None
    spec = ConvSpec(mode, pad, size, (sh, sw), (dh, dw), groups)
    shape = (c_out, c_in_g, kh, kw)
    assume(valid_geometry(shape, spec))
    return shape, spec


@st.composite
def layers(
    draw: st.DrawFn,
    modes: tuple[str, ...] = PADDING_MODES,
    families: tuple[str, ...] = KERNEL_FAMILIES,
    **spec_options: Any,
) -> tuple[np.ndarray, ConvSpec]:
    """A valid ``(kernel, spec)`` pair; options as :func:`conv_specs`."""
    shape, spec = draw(conv_specs(modes, **spec_options))
    return draw(kernels(shape, families)), spec
