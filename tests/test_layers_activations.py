"""MaxMin: a 1-Lipschitz, gradient-norm-preserving activation (a permutation of pairs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from specbound.layers import MaxMin
from specbound.testing.families import ENTRIES


@given(st.integers(1, 4), st.integers(1, 3), st.data())
def test_maxmin_is_one_lipschitz_and_sorts_pairs(half, n, data):
    pair = data.draw(hnp.arrays(np.float64, (2, 3, 2 * half, n, n), elements=ENTRIES))
    a, b = torch.from_numpy(pair)
    act = MaxMin()
    assert (act(a) - act(b)).norm() <= (a - b).norm() * (1 + 1e-15)
    ya = act(a)
    assert torch.equal(ya[:, :half], torch.maximum(a[:, :half], a[:, half:]))
    assert torch.equal(ya[:, :half] + ya[:, half:], a[:, :half] + a[:, half:])  # a permutation
    assert ya.norm() == pytest.approx(float(a.norm()), rel=1e-15)


def test_maxmin_needs_even_channels():
    with pytest.raises(ValueError, match="even"):
        MaxMin()(torch.zeros(1, 3, 2, 2))
