"""specbound.metrics: the margin / (sqrt(2) L) convention, checked against exact distances to
the decision boundary of linear classifiers (one-sided), and certified accuracy."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from specbound.metrics import certified_accuracy, certified_radius, margins

FLOATS = st.floats(-4, 4, allow_nan=False, width=64)


def boundary_distance(w: np.ndarray, x: np.ndarray, label: int) -> float:
    """Exact L2 distance from ``x`` to the nearest input that ``x -> W x`` classifies
    otherwise (ties count as another class): ``min_j (w_y - w_j).x / ||w_y - w_j||``."""
    out = math.inf
    for j in range(w.shape[0]):
        if j != label:
            d = w[label] - w[j]
            norm = np.linalg.norm(d)
            out = min(out, (d @ x) / norm if norm > 0 else (math.inf if d @ x > 0 else 0))
    return max(out, 0.0)


@given(
    w=arrays(np.float64, st.tuples(st.integers(2, 5), st.integers(1, 4)), elements=FLOATS),
    x=arrays(np.float64, 4, elements=FLOATS),
)
@example(w=np.eye(2), x=np.array([1.0, 0.0, 0.0, 0.0]))
def test_radius_never_exceeds_the_distance_to_the_boundary(w, x):
    x = x[: w.shape[1]]
    lipschitz = np.linalg.norm(w, 2) * (1 + 1e-12) + 1e-300  # an upper bound on ||W||_2
    logits = (w @ x)[None, :]
    label = int(np.argmax(logits[0]))
    r = certified_radius(logits, [label], lipschitz)[0]
    assert r >= 0
    assert r <= boundary_distance(w, x, label)


@given(x=arrays(np.float64, 2, elements=st.floats(-1e3, 1e3, allow_nan=False, width=64)))
@example(x=np.array([2e-323, 0.0]))  # a subnormal margin: the downward rounding is absolute
def test_identity_in_two_dimensions_is_tight(x):
    """For f(x) = x (L = 1) the radius is the distance to the line x_0 = x_1: the convention
    is margin / sqrt(2), not margin / (2 L) or margin / L. The radius is rounded down by a few
    units in the last place, relative above 2**-1022 and absolute (2**-1074 each) below."""
    label = int(x[1] > x[0])
    truth = abs(x[0] - x[1]) / math.sqrt(2)
    r = certified_radius(x[None, :], np.array([label]), 1.0)[0]
    assert r <= truth
    assert r >= truth * (1 - 1e-14) - 4 * 2.0**-1074


def test_misclassified_and_tied_inputs_have_radius_zero():
    logits = np.array([[1.0, 2.0], [2.0, 2.0], [3.0, 1.0]])
    np.testing.assert_array_equal(margins(logits, [0, 0, 0]) <= 0, [True, True, False])
    assert certified_radius(logits, [0, 0, 0], 1.0).tolist()[:2] == [0.0, 0.0]


def test_margins_are_rounded_down():
    logits = np.array([[1.0, 0.1]])
    m = margins(logits, [0])[0]
    assert m < 0.9 and m >= np.nextafter(np.nextafter(0.9, 0), 0)  # one ulp below fl(0.9)


def test_certified_accuracy_counts_radii_strictly_above_eps():
    logits = torch.tensor([[3.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.5]])
    labels = torch.tensor([0, 0, 0, 1])
    lip = 1 / math.sqrt(2)  # radius = margin (up to outward rounding)
    acc = certified_accuracy(logits, labels, lip, [0.0, 0.4, 0.99, 1.0, 2.9, 3.0])
    np.testing.assert_array_equal(acc, [0.75, 0.75, 0.5, 0.25, 0.25, 0.0])  # radii 3, 0, 1, 0.5
    assert certified_accuracy(logits, labels, lip, 0.0) == 0.75
    # a Certificate or an AuditReport can be passed: its .upper is used
    assert certified_accuracy(logits, labels, SimpleNamespace(upper=lip), 0.99) == 0.5


def test_accuracy_decreases_with_the_radius_and_with_the_constant():
    rng = np.random.default_rng(0)
    logits, labels = rng.standard_normal((200, 10)), rng.integers(0, 10, 200)
    radii = np.linspace(0, 2, 9)
    a1 = certified_accuracy(logits, labels, 1.0, radii)
    a2 = certified_accuracy(logits, labels, 2.0, radii)
    assert np.all(np.diff(a1) <= 0) and np.all(a2 <= a1)
    assert a1[0] == np.mean(np.argmax(logits, 1) == labels)  # no ties in Gaussian logits


@pytest.mark.parametrize(
    "args,error,message",
    [
        (([[np.nan, 1.0]], [0], 1.0), ValueError, "finite"),
        (([[1.0]], [0], 1.0), ValueError, "C >= 2"),
        (([1.0, 2.0], [0], 1.0), ValueError, r"\(N, C\)"),
        (([[1.0, 2.0]], [2], 1.0), ValueError, "labels must lie"),
        (([[1.0, 2.0]], [0.5], 1.0), ValueError, "integers"),
        (([[1.0, 2.0]], [0, 1], 1.0), ValueError, "labels must be N=1"),
        (([[1.0, 2.0]], [0], 0.0), ValueError, "lipschitz"),
        (([[1.0, 2.0]], [0], math.inf), ValueError, "lipschitz"),
        (([[1.0, 2.0]], [0], "1"), TypeError, "lipschitz"),
        (([[1.0, 2.0]], [0], SimpleNamespace(upper=math.nan)), ValueError, "lipschitz"),
        (([[1j, 2.0]], [0], 1.0), TypeError, "logits"),
    ],
)
def test_bad_input_is_named(args, error, message):
    with pytest.raises(error, match=message):
        certified_radius(*args)


def test_bad_radius_and_empty_batch():
    for radius in (-0.1, math.nan, [[0.1]], True):
        with pytest.raises(ValueError, match="radius"):
            certified_accuracy([[1.0, 0.0]], [0], 1.0, radius)
    with pytest.raises(ValueError, match="N=0"):
        certified_accuracy(np.zeros((0, 3)), np.zeros(0, dtype=int), 1.0, 0.1)
