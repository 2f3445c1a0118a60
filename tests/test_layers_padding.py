"""Padding operators used by the 1-Lipschitz layers: application, adjoint and exact norms.

Ground truth: the dense matrix of ``torch.nn.functional.pad`` built from the identity basis and
its SVD (float64), independent of the index arithmetic in ``specbound.layers.padding``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from specbound.layers.padding import (
    axis_multiplicity,
    pad2d,
    pad2d_adjoint,
    padding_norm,
    padding_norm_bound,
)

MODES = ("zeros", "circular", "reflect", "replicate")


def torch_pad_matrix(
    size: tuple[int, int], pads: tuple[tuple[int, int], tuple[int, int]], mode: str
) -> np.ndarray:
    """Dense matrix of F.pad (PyTorch's own implementation) on one channel."""
    h, w = size
    (top, bottom), (left, right) = pads
    eye = torch.eye(h * w, dtype=torch.float64).reshape(h * w, 1, h, w)
    torch_mode = "constant" if mode == "zeros" else mode
    out = F.pad(eye, (left, right, top, bottom), mode=torch_mode)
    return out.reshape(h * w, -1).T.numpy()


@st.composite
def pad_cases(draw, modes=MODES):
    mode = draw(st.sampled_from(modes))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    if mode == "reflect":
        pads = (
            draw(st.integers(0, h - 1)),
            draw(st.integers(0, h - 1)),
            draw(st.integers(0, w - 1)),
            draw(st.integers(0, w - 1)),
        )
    elif mode == "circular":  # F.pad accepts a circular pad up to the size
        pads = (
            draw(st.integers(0, h)),
            draw(st.integers(0, h)),
            draw(st.integers(0, w)),
            draw(st.integers(0, w)),
        )
    else:
        pads = tuple(draw(st.integers(0, 4)) for _ in range(4))
    return (h, w), (pads[:2], pads[2:]), mode


@given(pad_cases())
def test_pad2d_matches_torch_pad(case):
    size, pads, mode = case
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    (top, bottom), (left, right) = pads
    expected = F.pad(x, (left, right, top, bottom), mode="constant" if mode == "zeros" else mode)
    assert torch.equal(pad2d(x, pads, mode), expected)


@given(pad_cases())
def test_padding_norm_is_exact(case):
    """||P|| = sqrt(max multiplicity), against the SVD of F.pad's dense matrix."""
    size, pads, mode = case
    exact = np.linalg.norm(torch_pad_matrix(size, pads, mode), 2)
    assert abs(padding_norm(size, pads, mode) - exact) <= 1e-12 * exact


@given(pad_cases())
def test_pad2d_adjoint_is_the_adjoint(case):
    size, pads, mode = case
    x = torch.randn(2, *size, dtype=torch.float64)
    px = pad2d(x, pads, mode)
    y = torch.randn_like(px)
    lhs = (px * y).sum()
    rhs = (x * pad2d_adjoint(y, pads, mode, size)).sum()
    assert abs(float(lhs - rhs)) <= 1e-12 * (1 + abs(float(lhs)))


def test_circular_pad_wraps_more_than_once():
    """A pad above the size (refused by F.pad) wraps around the torus again."""
    x = torch.arange(3.0).reshape(1, 1, 1, 3)
    out = pad2d(x, ((0, 0), (4, 5)), "circular")
    assert out.reshape(-1).tolist() == [2.0, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1]


@given(
    st.sampled_from(MODES),
    st.integers(0, 4),
    st.integers(0, 4),
    st.integers(1, 6),
)
def test_padding_norm_bound_is_the_supremum(mode, lo, hi, n_min):
    """The bound equals the brute-force maximum over sizes n_min..60 (and is attained)."""
    start = max(n_min, max(lo, hi) + 1) if mode == "reflect" else n_min
    brute = max(axis_multiplicity(n, lo, hi, mode) for n in range(start, 61))
    bound = padding_norm_bound(((0, 0), (lo, hi)), mode, (1, n_min))
    assert bound == pytest.approx(math.sqrt(brute), rel=1e-15)


@pytest.mark.parametrize(
    ("mode", "lo", "hi", "n_min", "expected"),
    [
        ("zeros", 3, 2, 1, 1),
        ("replicate", 1, 1, 1, 3),  # n = 1: the single pixel is copied 3 times
        ("replicate", 1, 1, 2, 2),  # n >= 2: an edge pixel at most twice
        ("replicate", 2, 1, 2, 3),
        ("reflect", 1, 1, 2, 3),  # n = 3: pixel 1 is mirrored from both sides
        ("reflect", 1, 1, 4, 2),  # n >= lo + hi + 2: mirrored ranges disjoint
        ("reflect", 2, 0, 3, 2),
        ("circular", 1, 1, 1, 3),  # n = 1: 3 positions on one pixel
        ("circular", 1, 1, 2, 2),
    ],
)
def test_padding_multiplicity_hand_computed(mode, lo, hi, n_min, expected):
    """Multiplicities derived by hand in the module docstring."""
    assert padding_norm_bound(((0, 0), (lo, hi)), mode, (1, n_min)) == pytest.approx(
        math.sqrt(expected)
    )


def test_reflect_refuses_large_pad():
    with pytest.raises(ValueError, match="reflect"):
        pad2d(torch.zeros(1, 1, 2, 2), ((2, 0), (0, 0)), "reflect")
    with pytest.raises(ValueError, match="padding_mode"):
        pad2d(torch.zeros(1, 1, 2, 2), ((1, 0), (0, 0)), "mirror")


def test_reflect_bound_only_over_admissible_sizes():
    """Pad 2 needs n >= 3: the bound is the maximum over n >= 3, not over n = 1, 2."""
    assert padding_norm_bound(((0, 0), (2, 2)), "reflect") == pytest.approx(
        math.sqrt(max(axis_multiplicity(n, 2, 2, "reflect") for n in range(3, 30)))
    )
