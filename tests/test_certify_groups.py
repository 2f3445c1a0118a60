"""Grouped layers certified group by group (docs/certify.md L18; issue 11 item 5).

Every bracket is compared one-sided, with bare comparisons, against the dense float64
operator of the kernel scaled by a power of two (exact), for every padding mode, stride,
dilation, at given sizes and for every size, depthwise and general grouped; the per-group
routes are also forced off the dense route (the embedding caps, the banded verified Cholesky
test) so that the branch and bound runs on small layers too.
"""

import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import specbound as sb
from specbound.operators import ConvLayer, conv_matrix, exact_norm
from specbound.rigorous import _groups as groups_mod
from specbound.rigorous import _routes as routes
from specbound.rigorous._groups import split_groups
from specbound.rigorous.cholesky import verified_norm_upper

# the ``dense`` fixture only sets two module constants: the same for every generated input
FEW = settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
MODES = ["zeros", "circular", "reflect", "replicate"]
ENTRIES = st.floats(-4, 4, allow_nan=False, width=64)


def truth(kernel: np.ndarray, spec: sb.ConvSpec) -> float:
    """``||A||_2`` from the dense matrix of ``2^j K`` (exact scaling), scaled back."""
    peak = float(np.abs(kernel).max())
    if peak == 0:
        return 0.0
    j = 1 - math.frexp(peak)[1]
    return math.ldexp(float(np.linalg.norm(conv_matrix(np.ldexp(kernel, j), spec), 2)), -j)


def check(cert: sb.Certificate, exact: float) -> None:
    assert not math.isnan(cert.upper) and not math.isnan(cert.lower)
    assert cert.lower <= exact, (cert.lower, exact)
    assert exact <= cert.upper, (exact, cert.upper)


@pytest.fixture(params=["dense", "no dense"])
def dense(request, monkeypatch):
    """Run with the library's limits, then with every dense route switched off."""
    if request.param == "no dense":
        monkeypatch.setattr(routes, "DENSE_GRAM_LIMIT", 0)
        monkeypatch.setattr(groups_mod, "DENSE_GROUP_LIMIT", 0)
    return request.param


# --------------------------------------------------------------------------- given size
@FEW
@given(
    kernel=hnp.arrays(np.float64, (6, 2, 3, 3), elements=ENTRIES),
    groups=st.sampled_from([2, 3]),
    mode=st.sampled_from(MODES),
    stride=st.sampled_from([1, 2, (2, 1)]),
    dilation=st.sampled_from([1, 2]),
    pad=st.sampled_from(["same", 0, 2]),
)
@example(
    kernel=np.arange(108.0).reshape(6, 2, 3, 3) % 7 - 3,
    groups=3,
    mode="zeros",
    stride=1,
    dilation=1,
    pad="same",
)
def test_grouped_given_size_one_sided(dense, kernel, groups, mode, stride, dilation, pad):
    spec = sb.ConvSpec(mode, pad, (6, 7), stride, dilation, groups)  # always a valid layer
    cert = sb.certify(kernel, spec, rtol=1e-3)
    check(cert, truth(kernel, spec))
    assert cert.verify()


@FEW
@given(
    kernel=hnp.arrays(np.float64, (5, 1, 3, 3), elements=ENTRIES),
    mode=st.sampled_from(MODES),
    stride=st.sampled_from([1, 2]),
    dilation=st.sampled_from([1, 2]),
)
def test_depthwise_given_size_one_sided(dense, kernel, mode, stride, dilation):
    spec = sb.ConvSpec(mode, "same", (8, 9), stride, dilation, 5)
    cert = sb.certify(kernel, spec, rtol=1e-4)
    check(cert, truth(kernel, spec))
    assert cert.verify()


@pytest.mark.parametrize("rtol", [1e-2, 1e-3, 1e-6])
def test_depthwise_zeros_branch_and_bound_reaches_rtol(dense, rtol):
    rng = np.random.default_rng(5)
    kernel = rng.standard_normal((8, 1, 3, 3))
    spec = sb.ConvSpec("zeros", "same", (12, 12), groups=8)
    cert = sb.certify(kernel, spec, rtol=rtol)
    check(cert, truth(kernel, spec))
    assert cert.converged, cert.notes
    assert cert.rel_gap <= rtol
    assert "8 groups (8 distinct)" in cert.notes[0]


@pytest.mark.parametrize("mode", ["replicate", "reflect", "zeros"])
def test_groups_settled_by_one_cholesky_test_are_one_sided(mode, monkeypatch):
    """Loose caps (the padding-operator factor of L7): most groups are settled by one
    verified Cholesky test at the best lower bound, not by their own full route."""
    monkeypatch.setattr(routes, "DENSE_GRAM_LIMIT", 0)
    monkeypatch.setattr(groups_mod, "DENSE_GROUP_LIMIT", 0)
    rng = np.random.default_rng(9)
    kernel = rng.standard_normal((12, 1, 3, 3))
    kernel[:6] *= 0.9  # close to the largest groups: their caps cannot settle them
    spec = sb.ConvSpec(mode, "same", (10, 11), groups=12)
    cert = sb.certify(kernel, spec, rtol=1e-3)
    check(cert, truth(kernel, spec))
    assert cert.converged
    tested = int(re.search(r"(\d+) by one verified Cholesky test", cert.notes[0]).group(1))
    if mode != "zeros":
        assert tested > 0, cert.notes[0]


@pytest.mark.parametrize("mode", ["zeros", "replicate", "reflect"])
def test_one_cholesky_settle_is_one_sided_and_refuses_below_the_norm(mode, monkeypatch):
    """``_settle`` proves ``||A_j|| <= lower (1 + rtol/2)``: never below the group's exact
    norm; accepted when that ``mu`` is above the norm, refused when ``mu`` is just below."""
    import torch

    monkeypatch.setattr(groups_mod, "DENSE_GROUP_LIMIT", 0)  # small groups take it too

    from specbound.rigorous._routes import CHOLESKY_THETA, Context

    rng = np.random.default_rng(10)
    kernel = rng.uniform(-1, 1, (3, 2, 3, 3))
    spec = sb.ConvSpec(mode, "same", (9, 10), groups=3)
    layer = ConvLayer(np.concatenate([kernel, kernel[:, ::-1]]), spec)
    rtol = 1e-3
    ctx = Context(rtol=rtol, device=torch.device("cpu"), deadline=None, kernel_error=0.0)
    for sub in split_groups(layer).layers:
        exact = exact_norm(sub.kernel, sub.spec)
        proved = groups_mod._settle(sub, ctx, exact)
        assert proved is not None and proved >= exact
        just_below = exact * (1 - 1e-12) / (1 + CHOLESKY_THETA * rtol)
        assert groups_mod._settle(sub, ctx, just_below) is None


# --------------------------------------------------------------------------- every size
@FEW
@given(
    kernel=hnp.arrays(np.float64, (4, 2, 3, 3), elements=ENTRIES),
    groups=st.sampled_from([2, 4]),
    mode=st.sampled_from(["zeros", "circular"]),
    dilation=st.sampled_from([1, 2]),
    stride=st.sampled_from([1, 2]),
)
def test_grouped_every_size_bounds_every_size(kernel, groups, mode, dilation, stride):
    k = kernel[:, : 4 // groups] if groups == 4 else kernel
    cert = sb.certify(k, mode, input_size=None, dilation=dilation, stride=stride, groups=groups)
    assert cert.lower <= cert.upper
    for n in (4, 6, 9):
        spec = sb.ConvSpec(mode, "same", (n, n), stride, dilation, groups)
        try:
            ConvLayer(k, spec)
        except ValueError:
            continue
        if mode == "circular" and stride == 2 and n % 2:
            continue  # circular at every size: the sizes the stride divides
        assert truth(k, spec) <= cert.upper
    assert cert.verify()


def test_every_size_lower_is_a_grouped_symbol_value():
    """The symbol witness names a group of the whole layer: ``||M_j(w) v|| >= lower``."""
    rng = np.random.default_rng(2)
    kernel = rng.standard_normal((6, 2, 3, 3))
    kernel[4:] *= 3  # the last group is the largest
    cert = sb.certify(kernel, "zeros", input_size=None, groups=3, rtol=1e-4)
    w = cert.witness
    m = sb.operators.symbol(kernel, np.array(w["frequency"]), groups=3)
    g = w["group"]
    block = m[2 * g : 2 * g + 2, 2 * g : 2 * g + 2]
    v = np.asarray(w["vector"])
    assert np.linalg.norm(block @ v) / np.linalg.norm(v) >= cert.lower * (1 - 1e-12)
    assert g == 2


# --------------------------------------------------------------------------- structure
def test_identical_groups_are_certified_once():
    rng = np.random.default_rng(0)
    sub = rng.standard_normal((2, 3, 3, 3))
    kernel = np.concatenate([sub, sub, 2 * sub, sub])
    layer = ConvLayer(kernel, sb.ConvSpec("zeros", "same", (8, 8), groups=4))
    split = split_groups(layer)
    assert [m for m in split.members] == [[0, 1, 3], [2]]
    spec = layer.spec
    cert = sb.certify(kernel, spec, rtol=1e-6)
    check(cert, truth(kernel, spec))
    assert "(2 distinct)" in cert.notes[0]
    # the witness lies on the channels of the largest group (2), zero elsewhere
    x = cert.witness["input"]
    assert np.any(x[6:9]) and not np.any(x[:6]) and not np.any(x[9:])


def test_near_tied_groups_are_never_under_the_exact_norm(dense):
    """Groups within 2^-40 of each other: the caps of all of them straddle the lower
    bound, so several are refined; no upper may fall below the exact norm."""
    rng = np.random.default_rng(7)
    sub = rng.standard_normal((1, 1, 3, 3))
    kernel = np.concatenate([sub, sub * (1 - 2.0**-40), sub * (1 - 2.0**-41)])
    for mode in MODES:
        spec = sb.ConvSpec(mode, "same", (10, 10), groups=3)
        cert = sb.certify(kernel, spec, rtol=1e-9)
        check(cert, truth(kernel, spec))


def test_per_group_cholesky_refuses_just_below_the_exact_norm():
    """The banded verified Cholesky test that refines one group alone: ``mu`` just below
    the group's exact norm must not verify, just above it must."""
    rng = np.random.default_rng(4)
    kernel = rng.standard_normal((4, 1, 3, 3))
    layer = ConvLayer(kernel, sb.ConvSpec("zeros", "same", (10, 10), groups=4))
    for sub in split_groups(layer).layers:
        exact = exact_norm(sub.kernel, sub.spec)
        below = verified_norm_upper(sub, exact * (1 - 1e-12), lower=exact * (1 - 1e-6))
        assert not below.accepted
        above = verified_norm_upper(sub, exact * (1 + 1e-6), lower=exact * (1 - 1e-6))
        assert above.accepted and above.upper >= exact


# --------------------------------------------------------------------------- scales, NaN
@pytest.mark.parametrize(
    "mode, size", [(m, (6, 6)) for m in MODES] + [("zeros", None), ("circular", None)]
)
def test_mixed_scale_groups(dense, mode, size):
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal((3, 1, 3, 3))
    kernel[0] *= 1e300
    kernel[1] *= 1e-300
    kernel[2] = 0.0  # a zero group
    cert = sb.certify(kernel, mode, input_size=size, groups=3, rtol=1e-4)
    if size is None:
        assert cert.upper >= truth(kernel, sb.ConvSpec(mode, "same", (7, 7), groups=3))
        assert cert.lower <= cert.upper and cert.converged
    else:
        check(cert, truth(kernel, sb.ConvSpec(mode, "same", size, groups=3)))
    assert cert.upper > 0 and math.isfinite(cert.upper)


def test_tiny_group_alone_keeps_its_scale(dense):
    """A 1e-300 group next to a zero group: the bracket is of the tiny group's norm."""
    rng = np.random.default_rng(8)
    kernel = rng.standard_normal((2, 1, 3, 3)) * 1e-300
    kernel[1] = 0.0
    spec = sb.ConvSpec("zeros", "same", (9, 9), groups=2)
    cert = sb.certify(kernel, spec, rtol=1e-3)
    check(cert, truth(kernel, spec))
    assert cert.converged


def test_nan_in_one_group_is_refused():
    kernel = np.ones((4, 1, 3, 3))
    kernel[3, 0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="kernel must be finite"):
        sb.certify(kernel, "zeros", input_size=(8, 8), groups=4)


def test_a_nan_bound_never_becomes_a_number(dense, monkeypatch):
    """A NaN cap and a NaN per-group upper are no bounds: the certificate's upper stays
    above the exact norm (or is inf), never NaN."""
    real_caps, real_route = groups_mod.group_caps, groups_mod.group_route

    def nan_caps(split, ctx):
        caps = real_caps(split, ctx)
        caps[0] = np.nan
        return caps

    def nan_route(sub, ctx, route):
        res = real_route(sub, ctx, route)
        if np.abs(sub.kernel).max() > 2.5:  # the large group
            res.upper = math.nan
        return res

    monkeypatch.setattr(groups_mod, "group_caps", nan_caps)
    monkeypatch.setattr(groups_mod, "group_route", nan_route)
    rng = np.random.default_rng(3)
    kernel = rng.uniform(-1, 1, (3, 1, 3, 3))
    kernel[1] *= 4
    spec = sb.ConvSpec("zeros", "same", (9, 9), groups=3)
    cert = sb.certify(kernel, spec, rtol=1e-3)
    check(cert, truth(kernel, spec))


# --------------------------------------------------------------------------- budget
def test_max_seconds_is_split_and_every_group_keeps_a_valid_bracket(monkeypatch):
    monkeypatch.setattr(routes, "DENSE_GRAM_LIMIT", 0)
    monkeypatch.setattr(groups_mod, "DENSE_GROUP_LIMIT", 0)
    rng = np.random.default_rng(6)
    kernel = rng.standard_normal((8, 1, 3, 3))
    spec = sb.ConvSpec("replicate", "same", (12, 12), groups=8)
    cert = sb.certify(kernel, spec, rtol=1e-9, max_seconds=0.05)
    check(cert, truth(kernel, spec))
    assert cert.elapsed_s <= 1.05
