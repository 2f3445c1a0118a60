"""The verified Cholesky test (specbound.rigorous.cholesky, docs/certify.md L9): the band of the
Gram matrix and the factorization against dense float64 references, and one-sided checks of
the norm test and of certify against the exact operator."""

import math
import time

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import specbound as sb
from specbound.certify import certify
from specbound.operators import ConvLayer, conv_matrix, exact_norm
from specbound.rigorous import _routes as routes
from specbound.rigorous import cholesky
from specbound.rigorous.bracket import relative_gap
from specbound.rigorous.cholesky import (
    band_from_dense,
    band_layouts,
    block_band_cholesky,
    choose_layout,
    dense_from_band,
    gram_band,
    gram_error,
    group_kernels,
    verified_norm_upper,
    verified_psd,
)
from specbound.rigorous.rounding import gamma
from specbound.testing import family_kernel, layers
from specbound.testing.families import ENTRIES

FEW = settings(max_examples=max(5, settings().max_examples // 4))
GIVEN_SIZE = ("zeros", "reflect", "replicate", "circular")


def power_of_two_scaled(kernel: np.ndarray) -> np.ndarray:
    """``kernel * 2^j`` with ``max|K|`` in ``[1, 2)``, as certify scales it (exact)."""
    peak = float(np.abs(kernel).max())
    return kernel if peak == 0 else np.ldexp(kernel, 1 - math.frexp(peak)[1])


def layout_operator(kernel, spec, layout, group):
    """The dense ``B`` with ``G = B^T B`` of one group, columns in the layout's order."""
    layer = ConvLayer(kernel, spec)
    a = conv_matrix(kernel, spec)
    if layout.side == "input":
        channels, (h, w) = layer.kernel.shape[1], layer.input_size
    else:
        channels, (h, w) = layer.c_out // layer.groups, layer.out_size
    flat = layout.flat()
    pixels = sorted(((r, c) for r in range(h) for c in range(w)), key=lambda p: flat[p])
    index = [
        (ch + group * channels) * h * w + r * w + c for r, c in pixels for ch in range(channels)
    ]
    return a[:, index] if layout.side == "input" else a[index, :].T


def square_arrays(min_n, max_n):
    """``n x n`` float64 arrays, ``min_n <= n <= max_n``, drawn entry by entry (failures shrink)."""
    return st.integers(min_n, max_n).flatmap(
        lambda n: hnp.arrays(np.float64, (n, n), elements=ENTRIES)
    )


def banded_spd(a, width):
    """The symmetric part of the square ``a`` cut to the band ``|i - j| <= width``, shifted to
    strict diagonal dominance (so SPD)."""
    n = a.shape[0]
    x = (a + a.T) * (np.abs(np.subtract.outer(np.arange(n), np.arange(n))) <= width)
    return x + (np.abs(x).sum(axis=1).max() + 1.0) * np.eye(n)


# ----------------------------------------------------------------------------- factorization
@given(square_arrays(1, 30), st.integers(0, 29), st.integers(1, 6), st.integers(1, 4))
def test_block_band_cholesky_equals_dense_cholesky(a, width, block, base):
    n = a.shape[0]
    x = banded_spd(a, min(width, n - 1))
    band, p = band_from_dense(x, block)
    assert block_band_cholesky(band, p, base=base) == "complete"
    factor = dense_from_band(band, n)
    reference = torch.linalg.cholesky(torch.from_numpy(x))
    # the same algorithm up to summation order: agreement to a few units of rounding
    assert float((factor - reference).abs().max()) <= 1e-13 * float(reference.abs().max())
    assert not bool(factor.triu(1).any())


@pytest.mark.parametrize("relative", [-1e-6, -1e-10])
def test_block_band_cholesky_breaks_down_on_indefinite_matrices(relative):
    rng = np.random.default_rng(2)
    x = banded_spd(rng.standard_normal((20, 20)), 4)
    lam = np.linalg.eigvalsh(x)
    x = x - (lam[0] - relative * lam[-1]) * np.eye(20)
    band, p = band_from_dense(x, 3)
    assert block_band_cholesky(band, p, base=2) == "breakdown"


# ----------------------------------------------------------------------------- PSD criterion
@given(square_arrays(2, 14), st.integers(0, 13))
@example(  # the former seed-0 example
    np.array(
        [[0.1257302210933933, -0.1321048632913019], [0.6404226504432821, 0.10490011715303971]]
    ),
    1,
)
def test_verified_psd_never_accepts_a_negative_eigenvalue(a, width):
    n = a.shape[0]
    x = banded_spd(a, min(width, n - 1))
    lam = np.linalg.eigvalsh(x)
    for relative in (-1e-6, -1e-12, -1e-15):
        y = x - (lam[0] - relative * lam[-1]) * np.eye(n)
        if np.linalg.eigvalsh(y)[0] >= -1e-3 * abs(relative) * lam[-1]:
            continue  # rounding of the diagonal moved the eigenvalue: not a negative case
        for shift in (None, 0.0, 1e-15 * lam[-1]):
            band, p = band_from_dense(y, 3)
            assert not verified_psd(band, p, shift=shift, base=2).accepted


def test_verified_psd_accepts_with_a_margin_and_says_why_not():
    rng = np.random.default_rng(3)
    x = banded_spd(rng.standard_normal((30, 30)), 5)
    lam = np.linalg.eigvalsh(x)
    x = x - (lam[0] - 1e-6 * lam[-1]) * np.eye(30)  # lambda_min = 1e-6 lambda_max
    band, p = band_from_dense(x, 4)
    res = verified_psd(band, p)
    assert res.accepted and res.reason == "accepted" and res.needed <= res.shift
    band, p = band_from_dense(x, 4)
    proved = verified_psd(band, p, margin=0.5e-6 * lam[-1])
    assert proved.accepted  # lambda_min >= 0.5e-6 lambda_max
    assert np.linalg.eigvalsh(x)[0] >= 0.5e-6 * lam[-1]
    band, p = band_from_dense(x, 4)
    too_much = verified_psd(band, p, margin=2e-6 * lam[-1])
    assert not too_much.accepted and too_much.reason == "breakdown"
    band, p = band_from_dense(x, 4)
    no_room = verified_psd(band, p, shift=0.0)  # completes, but no room for rounding
    assert not no_room.accepted and no_room.reason == "rounding" and no_room.needed > 0
    with pytest.raises(ValueError, match="shift"):
        verified_psd(band, p, shift=-1.0)


# ----------------------------------------------------------------------------- Gram band
@FEW
@given(layers(GIVEN_SIZE, max_channels=3, max_kernel=3, max_size=6), st.integers(1, 3))
@example((np.ones((2, 2, 5, 5)), sb.ConvSpec("zeros", "same", (2, 3))), 2)  # input < kernel
def test_gram_band_matches_the_dense_gram(layer, pixels_per_block):
    kernel, spec = layer
    kernel = power_of_two_scaled(kernel)
    lay = ConvLayer(kernel, spec)
    for layout in band_layouts(lay, pixels_per_block=pixels_per_block):
        assert layout.bandwidth * layout.block >= layout.half_bandwidth
        for g, part in enumerate(group_kernels(lay)):
            band = gram_band(part, layout)
            assert 8 * band.numel() <= layout.band_bytes
            b = layout_operator(kernel, spec, layout, g)
            dense = b.T @ b
            n = dense.shape[0]
            stored = dense_from_band(band)
            # (C1) bounds the band's error; the reference carries gamma_rows |B|^T |B|
            allowance = gram_error(part, layout) + gamma(b.shape[0]) * float(
                (np.abs(b).T @ np.abs(b)).max(initial=0.0)
            )
            assert float(np.abs(np.tril(dense) - stored[:n, :n].numpy()).max()) <= allowance
            assert not bool(stored[n:].any())  # padding pixels: no G


# ----------------------------------------------------------------------------- norm test
@given(layers(GIVEN_SIZE, max_channels=3, max_kernel=3, max_size=5))
@example((np.ones((1, 1, 3, 3)), sb.ConvSpec("zeros", "same", (4, 4))))
@example((np.ones((2, 2, 3, 3)), sb.ConvSpec("replicate", 2, (1, 3), stride=2)))
def test_norm_test_never_certifies_below_the_norm(layer):
    kernel, spec = layer
    exact = exact_norm(kernel, spec)
    if not 1e-290 < exact < 1e290:
        return  # zero operator, or a scale outside float64 squares: nothing to refute
    lay = ConvLayer(kernel, spec)
    for layout in band_layouts(lay):
        for relative, hint in ((1e-6, 1e-5), (1e-12, -1e-6), (1e-12, 0.0)):
            res = verified_norm_upper(
                lay, exact * (1 - relative), lower=exact * (1 - hint), layout=layout, base=2
            )
            assert not res.accepted, (layout.side, layout.order, relative, res.notes)
            assert res.upper == math.inf


@given(layers(GIVEN_SIZE, max_channels=3, max_kernel=3, max_size=5), st.integers(1, 3))
@example((np.ones((1, 1, 3, 3)), sb.ConvSpec("zeros", "same", (4, 4))), 1)
@example(  # a vanishing operator: the float64 "exact" norm is rounding noise (~6e-16)
    (
        np.array([[[[-0.06942186, 0.06942186], [0.06942186, -0.06942186]]]]),
        sb.ConvSpec("replicate", "same", (1, 2)),
    ),
    1,
)
def test_norm_test_accepts_just_above_the_norm(layer, pixels_per_block):
    kernel, spec = layer
    kernel = power_of_two_scaled(kernel)
    exact = exact_norm(kernel, spec)
    lay = ConvLayer(kernel, spec)
    # below the float64 ground truth's own cancellation error the operator may be exactly zero
    # and no test can separate mu from rounding noise: ask for mu = 1 there
    noise = 1e-12 * float(np.abs(kernel).sum())
    mu = exact * (1 + 1e-3) if exact > noise else 1.0
    for layout in band_layouts(lay, pixels_per_block=pixels_per_block):
        res = verified_norm_upper(lay, mu, lower=exact * (1 - 1e-9), layout=layout, base=2)
        assert res.accepted, (layout.side, layout.order, res.reason, res.notes)
        assert res.upper >= exact  # one-sided
        assert res.upper <= mu * (1 + 1e-12)


ADVERSARIAL_SPECS = [
    ((2, 2, 5, 5), sb.ConvSpec("zeros", "same", (3, 2))),  # input smaller than the kernel
    ((3, 2, 3, 3), sb.ConvSpec("zeros", "full", (4, 3), dilation=2)),
    ((4, 2, 3, 3), sb.ConvSpec("zeros", "same", (5, 5), groups=2)),
    ((2, 3, 2, 4), sb.ConvSpec("zeros", (0, 2, 1, 0), (3, 7))),  # rectangular
    ((3, 3, 3, 3), sb.ConvSpec("zeros", "same", (7, 6), stride=(2, 3))),
    ((2, 2, 3, 3), sb.ConvSpec("reflect", "same", (4, 5), stride=2)),
    ((2, 2, 3, 3), sb.ConvSpec("replicate", 2, (3, 3), dilation=(1, 2))),
]


@pytest.mark.parametrize("shape,spec", ADVERSARIAL_SPECS)
@pytest.mark.parametrize(
    "family", ["rank_one", "zero", "single_tap", "constant", "checkerboard", "tiny", "huge"]
)
def test_norm_test_on_adversarial_kernels(shape, spec, family):
    kernel = family_kernel(family, shape, 4)
    scaled = power_of_two_scaled(kernel)
    lay = ConvLayer(scaled, spec)
    exact = exact_norm(scaled, spec)
    if exact == 0:
        res = verified_norm_upper(lay, 1.0)
        assert res.accepted and res.upper >= 0
        return
    above = verified_norm_upper(lay, exact * (1 + 1e-6), lower=exact * (1 - 1e-12))
    assert above.accepted and above.upper >= exact
    below = verified_norm_upper(lay, exact * (1 - 1e-9), lower=exact * (1 - 1e-12))
    assert not below.accepted
    # unscaled 1e+-150 kernels: refusing is allowed, certifying below the norm is not
    raw = verified_norm_upper(ConvLayer(kernel, spec), exact_norm(kernel, spec) * (1 - 1e-9))
    assert not raw.accepted


def test_memory_limit_is_checked_before_allocating():
    lay = ConvLayer(np.ones((4, 4, 3, 3)), sb.ConvSpec("zeros", "same", (6, 6)))
    layout = choose_layout(lay)
    res = verified_norm_upper(lay, 100.0, max_bytes=layout.band_bytes - 1)
    assert not res.accepted and res.reason == "memory" and "GiB" in res.notes[0]
    with pytest.raises(ValueError, match="mu"):
        verified_norm_upper(lay, 0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_agrees_with_cpu():
    rng = np.random.default_rng(8)
    k = power_of_two_scaled(rng.standard_normal((8, 8, 3, 3)))
    spec = sb.ConvSpec("zeros", "same", (6, 6))
    exact = exact_norm(k, spec)
    lay = ConvLayer(k, spec)
    for mu, accept in ((exact * (1 + 1e-6), True), (exact * (1 - 1e-6), False)):
        cpu = verified_norm_upper(lay, mu, lower=exact * (1 - 1e-12))
        gpu = verified_norm_upper(lay, mu, lower=exact * (1 - 1e-12), device="cuda")
        assert cpu.accepted == gpu.accepted == accept
        if accept:
            assert gpu.upper >= exact


# ----------------------------------------------------------------------------- certify
def he_kernel(c_out, c_in, kh=3, kw=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((c_out, c_in, kh, kw)) * math.sqrt(2 / (c_in * kh * kw))


CERTIFY_CASES = [
    (he_kernel(32, 32), {"input_size": 8}),
    (he_kernel(64, 64, seed=1), {"input_size": 5}),
    (he_kernel(32, 32, seed=2), {"input_size": (7, 8), "dilation": 2}),
    (he_kernel(24, 32, 3, 5, seed=3), {"input_size": (6, 11)}),  # rectangular
    (he_kernel(100, 100, seed=4), {"input_size": 8, "stride": 2}),
    (he_kernel(64, 32, seed=5), {"input_size": 6, "groups": 2}),
    (he_kernel(32, 32, seed=6), {"input_size": 8, "padding": "reflect"}),
    (family_kernel("rank_one", (40, 40, 3, 3), 7), {"input_size": 7}),
]


@pytest.mark.parametrize("kernel,kwargs", CERTIFY_CASES)
def test_certify_reaches_rtol_with_the_verified_cholesky_step(kernel, kwargs):
    cert = certify(kernel, rtol=1e-4, **kwargs)
    assert cert.converged and cert.rel_gap <= 1e-4
    assert cert.upper_method == "verified_cholesky"
    assert any("verified Cholesky of mu^2 I" in n for n in cert.notes)
    exact = exact_norm(kernel, cert.spec)
    assert cert.lower <= exact <= cert.upper


@pytest.mark.parametrize("scale", [1e-150, 1e150])
def test_certify_cholesky_at_extreme_scales(scale):
    k = he_kernel(32, 32, seed=9)
    cert = certify(k * scale, "zeros", input_size=8, rtol=1e-6)
    exact = exact_norm(k, cert.spec) * scale  # one rounding: far inside the rtol/2 margins
    assert cert.converged and cert.upper_method == "verified_cholesky"
    assert cert.lower <= exact <= cert.upper and np.isfinite(cert.upper)


def test_certify_cholesky_tight_rtol():
    k = he_kernel(32, 32, seed=10)
    cert = certify(k, "zeros", input_size=8, rtol=1e-8)
    assert cert.converged and cert.rel_gap <= 1e-8
    assert cert.lower <= exact_norm(k, cert.spec) <= cert.upper


def test_cholesky_step_is_skipped_when_time_is_short():
    k = he_kernel(32, 32, seed=11)
    layer = ConvLayer(k, sb.ConvSpec("zeros", "same", (8, 8)))
    bracket = routes.Bracket(10.0, 1.0, "embedding", "witness", {"input": np.ones((32, 8, 8))})
    ctx = routes.Context(1e-4, torch.device("cpu"), time.perf_counter() + 1e-4, 0.0)
    out = routes.cholesky_tighten(layer, ctx, bracket)
    assert out.upper == 10.0 and out.upper_method == "embedding"
    ctx = routes.Context(1e-4, torch.device("cpu"), time.perf_counter() - 1.0, 0.0)
    assert routes.cholesky_tighten(layer, ctx, bracket).upper == 10.0


@pytest.mark.parametrize("refine", [True, False])
def test_cholesky_step_recovers_from_a_poor_witness(refine, monkeypatch):
    """A lower bound 10% below the norm: the first factorization breaks down. A longer
    Lanczos run then refines the witness (and the next test certifies within rtol), or, when
    Lanczos cannot help, mu moves to the geometric mean of mu and the upper bound."""
    k = he_kernel(32, 32, seed=12)
    spec = sb.ConvSpec("zeros", "same", (8, 8))
    layer = ConvLayer(k, spec)
    exact = exact_norm(k, spec)
    if not refine:
        monkeypatch.setattr(routes, "lanczos_direction", lambda layer, x, *a, **kw: x)
    start = np.random.default_rng(0).standard_normal((32, 8, 8))
    bracket = routes.Bracket(exact * 1.5, 0.0, "embedding", "witness", {"input": start})
    bracket.lower = routes.operator_lower(layer, start)
    assert bracket.lower < 0.9 * exact
    ctx = routes.Context(1e-3, torch.device("cpu"), None, 0.0)
    out = routes.cholesky_tighten(layer, ctx, bracket)
    assert out.lower <= exact <= out.upper < exact * 1.5
    assert out.upper_method == "verified_cholesky"
    assert out.notes[-2].endswith(")") and "breakdown" in out.notes[-2]  # the first try
    if refine:
        assert relative_gap(out.upper, out.lower) <= 1e-3
    else:  # bisection: each mu is the geometric mean of the previous one and 1.5 exact
        assert out.lower == bracket.lower
        tries = [n for n in out.notes if n.startswith("mu = lower")]
        assert 2 <= len(tries) <= routes.CHOLESKY_TRIES
        assert tries[-1].split(": ")[1].startswith("accepted")


def test_embedding_sizes_remain_the_fallback(monkeypatch):
    """With the Cholesky step feasible only the first embedding size runs before it; if the
    step cannot close the gap, the other sizes still run: the bound is the old one."""
    k = he_kernel(32, 32, seed=14)
    monkeypatch.setattr(cholesky, "MAX_BAND_BYTES", 0)  # embeddings only
    before = certify(k, "zeros", input_size=8, rtol=1e-4)
    monkeypatch.setattr(cholesky, "MAX_BAND_BYTES", 2**33)
    monkeypatch.setattr(routes, "CHOLESKY_TRIES", 0)  # feasible, but closes nothing
    after = certify(k, "zeros", input_size=8, rtol=1e-4)
    assert not before.converged and not after.converged
    assert after.upper == before.upper and after.upper_method == before.upper_method
    assert after.lower == before.lower
    assert sum(n.startswith("upper: circular embedding") for n in after.notes) == 1
