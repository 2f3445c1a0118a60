"""The verified core (specbound.rigorous.verified, docs/certify.md L10): one-sided against
40-digit singular values of the stored matrices, refusal just below the norm, extreme scales."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from proofs_check.exact import mp_sigma_max
from specbound.rigorous import verified
from specbound.rigorous.verified import sigma_at_most, verified_bracket, verified_sigma

ENTRIES = st.floats(-4, 4, allow_nan=False, allow_subnormal=False)


@st.composite
def batches(draw):
    b = draw(st.integers(1, 3))
    p, q = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    real = draw(arrays(np.float64, (b, p, q), elements=ENTRIES))
    if draw(st.booleans()):
        imag = draw(arrays(np.float64, (b, p, q), elements=ENTRIES))
        m = real + 1j * imag
    else:
        m = real
    return m * 2.0 ** draw(st.sampled_from([0, 0, -600, 600, -1000, 1000, 7]))


def _exact(m: np.ndarray) -> list[mpmath.mpf]:
    return [mp_sigma_max(x) for x in m]


FLOOR = 2.0**-1064
"""Absolute slack of the tightness checks: 1024 units of ``2^-1074``, the subnormal rounding
floor below which no relative statement holds (the bounds stay one-sided there)."""


@settings(max_examples=60, deadline=None)
@given(batches(), st.sampled_from([1e-12, 1e-8, 1e-3]))
@example(np.array([[[2.4143506e-317]]]), 1e-12)  # subnormal norm: relative slack impossible
@example(np.zeros((1, 2, 2)), 1e-8)
@example(np.array([[[1.08662842e-310]]]), 1e-12)  # subnormal: the scale 2^(1-e) overflows
@example(np.zeros((1, 1, 2), dtype=complex), 1e-12)  # a conjugated (transposed) view
@example(np.array([[[1.0, 1.0], [1.0, 1.0 + 2.0**-52]]]), 1e-12)
def test_upper_bounds_sigma_one_sided(m, rel):
    upper, _, _, _ = verified_sigma(torch.from_numpy(m), 0.0, rel)
    for u, exact in zip(upper.tolist(), _exact(m), strict=True):
        assert u >= exact
        assert math.isfinite(u)
        if exact > 0:  # tight: within the margin (and the rounding floor) of the norm
            assert u <= float(exact) * (1 + rel + 1e-9) + FLOOR


@settings(max_examples=40, deadline=None)
@given(batches())
@example(np.ones((1, 2, 3)))
@example(np.array([[[2.40991987e-181]]]))
def test_refuses_just_below_the_norm(m):
    exact = _exact(m)
    mu_below = torch.tensor(
        [float(e * (1 - mpmath.mpf("1e-12"))) for e in exact], dtype=torch.float64
    )
    assert not bool(sigma_at_most(torch.from_numpy(m), mu_below).any())
    mu_above = torch.tensor(
        [float(e * (1 + mpmath.mpf("1e-6"))) for e in exact], dtype=torch.float64
    )
    accepted = sigma_at_most(torch.from_numpy(m), mu_above)
    for ok, e in zip(accepted.tolist(), exact, strict=True):
        assert ok or e == 0  # 1e-6 above is far outside the rounding floor of 6x6 matrices


@settings(max_examples=60, deadline=None)
@given(batches(), st.sampled_from([1e-12, 1e-8, 1e-3]), st.booleans())
@example(np.zeros((1, 2, 2)), 1e-8, False)
@example(np.array([[[2.96552899e-221]], [[0.0]]]), 1e-12, False)  # zero next to a tiny norm
@example(np.array([[[1.0, 0.0], [0.0, 1.0]], [[3.0, 0.0], [0.0, 2.0**-600]]]), 1e-12, True)
@example(np.swapaxes(np.array([[[2.0**-1000, 0.0]], [[2.0**600, 1.0]]]), 1, 2).copy(), 1e-12, True)
def test_shared_level_bounds_every_matrix_and_the_max_tightly(m, rel, mislead):
    """``shared_level``: every matrix's bound is one-sided; the largest is as tight as the
    own-level bound. ``mislead`` ranks the matrices backwards (the power estimates replaced),
    so that the shared level sits below some matrices' norms: they must break down and be
    retested at their own estimates."""
    real = verified._shared_estimates

    def backwards(c, s2, shared):
        lam, own = real(c, s2, shared)
        fake = torch.zeros_like(lam)
        mask = torch.zeros_like(own)
        low = int(torch.argmin(lam / s2))
        fake[low], mask[low] = lam[low], True
        return fake, mask

    with pytest.MonkeyPatch.context() as patch:
        if mislead:
            patch.setattr(verified, "_shared_estimates", backwards)
        upper, _, _, _ = verified_sigma(torch.from_numpy(m), 0.0, rel, shared_level=True)
    exact = _exact(m)
    for u, e in zip(upper.tolist(), exact, strict=True):
        assert u >= e
        assert math.isfinite(u)
    top = float(max(exact))
    if top > 0:
        assert float(upper.max()) <= top * (1 + rel + 1e-9) + FLOOR


def test_matrix_error_is_added():
    m = torch.eye(3, dtype=torch.float64)[None] * 2
    upper, *_ = verified_sigma(m, 0.5, 1e-10)
    assert float(upper[0]) >= 2.5
    assert not bool(sigma_at_most(m, 2.4, error=0.5)[0])
    assert bool(sigma_at_most(m, 2.51, error=0.5)[0])


def test_bracket_lower_and_upper_contain_the_max():
    gen = torch.Generator().manual_seed(3)
    m = torch.complex(
        torch.randn(50, 7, 5, generator=gen, dtype=torch.float64),
        torch.randn(50, 7, 5, generator=gen, dtype=torch.float64),
    )
    res = verified_bracket(m, 1e-13, 1e-6)
    exact = [float(e) for e in _exact(m.numpy())]
    assert res.lower <= max(exact) <= float(res.upper.max())
    assert all(u >= e for u, e in zip(res.upper.tolist(), exact, strict=True))
    assert (float(res.upper.max()) - res.lower) / float(res.upper.max()) <= 1e-6


def test_bad_input():
    with pytest.raises(TypeError, match="float64 or complex128"):
        verified_sigma(torch.ones(1, 2, 2, dtype=torch.float32))
    with pytest.raises(ValueError, match="rel"):
        verified_sigma(torch.ones(1, 2, 2, dtype=torch.float64), 0.0, 0.0)
    with pytest.raises(ValueError, match="error"):
        verified_sigma(torch.ones(1, 2, 2, dtype=torch.float64), math.nan)


def test_float32_mu_is_refused():
    """A float32 mu may round up past the norm: it is refused, not converted."""
    with pytest.raises(TypeError, match="mu must be a float or a float64 tensor"):
        sigma_at_most(torch.ones(1, 2, 3, dtype=torch.float64), torch.tensor([2.449]))


@settings(max_examples=30, deadline=None)
@given(
    arrays(np.float64, (4, 1, 5), elements=ENTRIES),
    st.booleans(),
)
@example(np.full((4, 1, 5), 7.88719972e-290), False)  # squares underflow: lower was 0
def test_rows_and_columns_one_sided(m, column):
    """A row or a column: the Frobenius shortcut (sigma_1 = ||m||_F) and its witness."""
    if column:
        m = np.ascontiguousarray(m.transpose(0, 2, 1))
    res = verified_bracket(torch.from_numpy(m), 0.0, 1e-6)
    exact = [mp_sigma_max(x) for x in m]
    assert all(u >= e for u, e in zip(res.upper.tolist(), exact, strict=True))
    assert res.lower <= max(exact)
    if max(exact) > 0:
        assert res.lower >= float(max(exact)) * (1 - 1e-12)


@pytest.mark.parametrize("lower", [0.0, 1.0])
def test_bracket_past_its_deadline_keeps_frobenius_caps(lower):
    """A deadline already passed: no matrix is verified, every one keeps its Frobenius cap
    (computed on the spot when no cap was needed up front, ``lower = 0``)."""
    gen = torch.Generator().manual_seed(5)
    m = torch.randn(6, 4, 3, generator=gen, dtype=torch.float64)
    res = verified_bracket(m, 0.0, 1e-6, lower=lower, deadline=0.0)
    fro = torch.linalg.matrix_norm(m).tolist()
    exact = [float(e) for e in _exact(m.numpy())]
    assert all(math.isfinite(u) for u in res.upper.tolist())
    assert all(u >= f >= e for u, f, e in zip(res.upper.tolist(), fro, exact, strict=True))
    assert any("max_seconds" in note for note in res.notes)
