"""certify honours max_seconds (issue 11, item 4): it returns within about
max(1.2 max_seconds, max_seconds + 1 s) with a rigorous bracket, converged=False and a note."""

from __future__ import annotations

import time

import numpy as np
import pytest

import specbound as sb
from specbound.operators import conv_operator

SLACK_S = 2.0  # the target is + 1 s; CI machines are shared, so the test allows 2 s


def _power_estimate(kernel: np.ndarray, spec: sb.ConvSpec) -> float:
    """A float64 power-iteration estimate: at most the true norm (up to rounding)."""
    op = conv_operator(kernel, spec)
    x = np.random.default_rng(0).standard_normal(op.shape[1])
    for _ in range(60):
        x = op.rmatvec(op.matvec(x))
        x /= np.linalg.norm(x)
    return float(np.linalg.norm(op.matvec(x)))


@pytest.mark.parametrize(
    ("padding", "size"), [("zeros", (24, 24)), ("reflect", (24, 24)), ("zeros", None)]
)
def test_max_seconds_is_honoured(padding, size):
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal((48, 48, 3, 3)) * np.sqrt(2 / (9 * 48))
    budget = 0.5
    start = time.perf_counter()
    cert = sb.certify(kernel, padding, input_size=size, rtol=1e-8, max_seconds=budget)
    elapsed = time.perf_counter() - start
    assert elapsed <= budget + SLACK_S
    assert not cert.converged and cert.notes
    assert 0 <= cert.lower <= cert.upper
    if size is not None:
        spec = sb.ConvSpec(padding, "same", size)
        assert cert.upper >= _power_estimate(kernel, spec) * (1 - 1e-9)
        assert cert.verify()
