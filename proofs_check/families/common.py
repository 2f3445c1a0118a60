"""Instance generators shared by the theorem families: random valid layers (numpy, no
Hypothesis), fixed adversarial specs, and their descriptions."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from specbound import ConvSpec
from specbound.operators import ConvLayer
from specbound.testing import (
    ADVERSARIAL_FAMILIES,
    KERNEL_FAMILIES,
    family_kernel,
    within_symbol_domain,
)

from ..registry import Mode

Shape = tuple[int, int, int, int]
Layer = tuple[np.ndarray, ConvSpec]


def valid(shape: Shape, spec: ConvSpec) -> bool:
    """Whether ``ConvLayer(kernel, spec)`` accepts a kernel of ``shape``."""
    try:
        ConvLayer(np.zeros(shape), spec)
    except ValueError:
        return False
    return True


def random_spec(
    rng: np.random.Generator,
    modes: Sequence[str] = ("zeros", "circular", "reflect", "replicate"),
    *,
    circulant: bool = False,
    symbol_domain: bool = False,
    max_channels: int = 3,
    max_kernel: int = 4,
    max_size: int = 7,
    max_stride: int = 2,
    max_dilation: int = 2,
    max_groups: int = 2,
    size: bool = True,
) -> tuple[Shape, ConvSpec]:
    """A random valid ``(kernel_shape, spec)`` (numpy twin of ``specbound.testing.conv_specs``).

    ``circulant``: block-circulant circular layers; ``symbol_domain``: zero padding, or
    circular with total pad ``<= d(k-1)`` per axis.
    """
    for _ in range(1000):
        mode = "circular" if circulant else str(rng.choice(list(modes)))
        groups = int(rng.integers(1, max_groups + 1))
        shape = (
            groups * int(rng.integers(1, max_channels + 1)),
            int(rng.integers(1, max_channels + 1)),
            int(rng.integers(1, max_kernel + 1)),
            int(rng.integers(1, max_kernel + 1)),
        )
        stride = tuple(int(v) for v in rng.integers(1, max_stride + 1, size=2))
        dilation = tuple(int(v) for v in rng.integers(1, max_dilation + 1, size=2))
        if circulant:
            pad: Any = "same"
            hw = tuple(s * int(rng.integers(1, max(1, max_size // s) + 1)) for s in stride)
        else:
            choice = int(rng.integers(0, 4))
            limits = [d * (k - 1) for d, k in zip(dilation, shape[2:], strict=True)]
            if choice == 0:
                pad = str(rng.choice(["same", "valid", "full"]))
            elif choice == 1:
                pad = int(rng.integers(0, min(limits) + 1))
            elif choice == 2:
                pad = (int(rng.integers(0, limits[0] + 1)), int(rng.integers(0, limits[1] + 1)))
            else:
                pad = tuple(int(rng.integers(0, limits[i] + 1)) for i in (1, 1, 0, 0))
            hw = tuple(int(v) for v in rng.integers(1, max_size + 1, size=2))
        spec = ConvSpec(mode, pad, hw if size else None, stride, dilation, groups)
        if symbol_domain and not within_symbol_domain(shape, spec):
            continue
        if valid(shape, spec):
            return shape, spec
    raise RuntimeError("no valid spec drawn in 1000 attempts")


def random_layers(
    rng: np.random.Generator,
    count: int,
    families: Sequence[str] = ("gaussian",),
    **options: Any,
) -> Iterator[Layer]:
    """``count`` random ``(kernel, spec)`` pairs, kernels from ``families``."""
    for _ in range(count):
        shape, spec = random_spec(rng, **options)
        family = str(rng.choice(list(families)))
        yield family_kernel(family, shape, int(rng.integers(2**31))), spec


def suite(
    specs: Iterable[tuple[Shape, ConvSpec]],
    mode: Mode,
    families: Sequence[str] = ADVERSARIAL_FAMILIES,
    seed: int = 7,
) -> Iterator[Layer]:
    """Adversarial kernels on fixed specs (invalid combinations are left out).

    Thorough mode: every family on every spec. Quick mode: a covering subset, every family
    once and every spec once (``len(families) + len(specs)`` instances).
    """
    pairs = [(shape, spec) for shape, spec in specs if valid(shape, spec)]
    if not pairs:
        return
    if mode.thorough:
        chosen = [(p, f) for p in pairs for f in families]
    else:
        chosen = [(pairs[j % len(pairs)], f) for j, f in enumerate(families)]
        chosen += [(p, families[(i + 1) % len(families)]) for i, p in enumerate(pairs)]
    for (shape, spec), family in chosen:
        yield family_kernel(family, shape, seed), spec


def describe_layer(layer: Layer) -> str:
    from ..harness import describe

    kernel, spec = layer
    return f"{spec.describe()}; kernel {describe(kernel)}"


CIRCULANT_SPECS: tuple[tuple[Shape, ConvSpec], ...] = (
    ((2, 3, 3, 3), ConvSpec("circular", "same", (1, 1))),
    ((2, 3, 3, 3), ConvSpec("circular", "same", (2, 3))),
    ((2, 2, 5, 5), ConvSpec("circular", "same", (3, 3))),
    ((3, 2, 3, 3), ConvSpec("circular", "same", (5, 5))),
    ((1, 1, 2, 2), ConvSpec("circular", "same", (7, 7))),
    ((2, 2, 3, 3), ConvSpec("circular", "same", (6, 6), stride=2)),
    ((2, 1, 4, 4), ConvSpec("circular", "same", (4, 6), stride=(2, 3))),
    ((2, 2, 3, 2), ConvSpec("circular", "same", (6, 4), dilation=(2, 2))),
    ((4, 1, 3, 3), ConvSpec("circular", "same", (5, 5), groups=2)),
)
"""Block-circulant circular layers: ``n < k`` (wrapped kernels), odd and even sizes, stride,
dilation, groups."""

ZERO_SPECS: tuple[tuple[Shape, ConvSpec], ...] = (
    ((2, 2, 3, 3), ConvSpec("zeros", "same", (3, 3))),
    ((2, 2, 3, 3), ConvSpec("zeros", "full", (2, 2))),
    ((2, 3, 3, 3), ConvSpec("zeros", "valid", (4, 5))),
    ((1, 1, 3, 3), ConvSpec("zeros", "same", (1, 1))),
    ((2, 2, 4, 4), ConvSpec("zeros", "same", (5, 5))),
    ((2, 2, 3, 3), ConvSpec("zeros", (0, 2, 1, 2), (4, 4))),
    ((2, 2, 3, 3), ConvSpec("zeros", "same", (5, 5), stride=2)),
    ((2, 2, 2, 3), ConvSpec("zeros", "same", (4, 5), dilation=2)),
    ((4, 1, 3, 3), ConvSpec("zeros", "same", (4, 4), groups=2)),
)
"""Zero-padded layers: same/valid/full and asymmetric pads, n < k, stride, dilation, groups."""

SYMBOL_CIRCULAR_SPECS: tuple[tuple[Shape, ConvSpec], ...] = (
    *CIRCULANT_SPECS,
    ((2, 2, 3, 3), ConvSpec("circular", (0, 1, 1, 0), (4, 4))),
    ((2, 2, 3, 3), ConvSpec("circular", "valid", (5, 5))),
    ((2, 2, 3, 3), ConvSpec("circular", "same", (5, 5), stride=2)),
)
"""Circular layers with total pad ``<= d(k-1)`` (row selections of a circulant), including
strides that do not divide the size."""

PADDED_SPECS: tuple[tuple[Shape, ConvSpec], ...] = (
    ((2, 2, 3, 3), ConvSpec("reflect", "same", (2, 2))),
    ((2, 2, 3, 3), ConvSpec("reflect", "same", (3, 4))),
    ((2, 2, 3, 3), ConvSpec("replicate", "same", (2, 3))),
    ((2, 2, 3, 3), ConvSpec("replicate", "full", (3, 3))),
    ((2, 2, 3, 3), ConvSpec("reflect", "same", (5, 5), stride=2)),
)
"""Reflect and replicate layers (the padding map repeats pixels)."""

NON_ZERO_FAMILIES = tuple(f for f in ADVERSARIAL_FAMILIES if f != "zero")
__all__ = [
    "ADVERSARIAL_FAMILIES",
    "CIRCULANT_SPECS",
    "KERNEL_FAMILIES",
    "NON_ZERO_FAMILIES",
    "PADDED_SPECS",
    "SYMBOL_CIRCULAR_SPECS",
    "ZERO_SPECS",
    "describe_layer",
    "random_layers",
    "random_spec",
    "suite",
    "valid",
]


NEGLIGIBLE = 1e-10
"""A norm below ``NEGLIGIBLE * sum |K|`` is at the float64 rounding floor of its own
evaluation (e.g. a vanishing frequency on a 1 x 1 grid): relative comparisons there measure
rounding noise, so such instances are outside what a float64 check can decide."""


FLOOR_NOTE = (
    "; norms at the float64 rounding floor (< 1e-10 sum |K|, e.g. a vanishing "
    "frequency on a 1 x 1 grid) are skipped"
)


def negligible(value: float, kernel: np.ndarray) -> bool:
    """``0 < value < NEGLIGIBLE * sum |K|`` (exact zeros are decidable and kept)."""
    return 0.0 < value < NEGLIGIBLE * float(np.abs(kernel).sum())
