"""Tests of proofs_check (the registry's checks find planted false statements, the harness
reports what it finds) and of the public strategies and helpers of specbound.testing."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from hypothesis import find, given, settings
from hypothesis import strategies as st

import specbound as sb
from proofs_check import CheckResult, Mode, Search, Skip, exit_code, get, run, theorems
from proofs_check.__main__ import main
from proofs_check.families.aol import aol_uncompensated_search
from proofs_check.families.audit import max_tap_upper, tap_search
from proofs_check.families.cholesky import naive_psd_search, psd_search
from proofs_check.families.fantastic_four import ff_padded_search
from proofs_check.families.gaps import G1_COUNTEREXAMPLE, g1_search, g5_search
from proofs_check.report import format_table, markdown
from proofs_check.runner import Outcome
from specbound.layers import AOLConv2d
from specbound.operators import ConvLayer, exact_norm
from specbound.testing import (
    ADVERSARIAL_FAMILIES,
    MATRIX_FAMILIES,
    adversarial_kernels,
    adversarial_layers,
    assert_bracket,
    assert_every_size_upper_bound,
    assert_lipschitz_layer,
    assert_upper_bound,
    circulant_specs,
    conv_specs,
    family_kernel,
    family_matrix,
    lipschitz_specs,
    matrices,
    module_matrix,
    repeated_top_matrices,
    symbol_bounded_specs,
    within_symbol_domain,
)

QUICK = Mode("quick")
MODES = ("zeros", "circular", "reflect", "replicate")


# ----------------------------------------------------------------------------- registry
def test_registry_entries_are_complete_and_unique():
    entries = theorems()
    ids = [t.id for t in entries]
    assert len(ids) == len(set(ids))
    for t in entries:
        assert t.title and t.statement and t.latex and t.source and t.conditions and t.family
        assert isinstance(t.relied_on, bool) and callable(t.check)
        if "derived in specbound" in t.source and t.quantifier == "forall":
            assert t.proof, f"{t.id}: a statement derived in specbound needs its proof sketch"


def test_registry_covers_the_issue():
    ids = {t.id for t in theorems()}
    required = {
        "GI-UB",
        "GI-MONO",
        "GI-SCHATTEN",
        "GI-RANK",
        "GI-REC",
        "GI-LIN",
        *(f"C{i}" for i in range(1, 8)),
        *(f"Z{i}" for i in range(1, 9)),
        "KGI-QUAD",
        *(f"G{i}" for i in range(1, 7)),
        "G1-SHARP",
        "ST-STRIDE",
        "ST-DIL",
        "ST-POLY",
        "SR1",
        "SR2",
        "SR4",
        "AOL1",
        "AOL-N1",
        "BCOP1",
        "FF1",
        "FF-N1",
        "CN1",
        "CN3",
        "CN-N1",
        "ARAUJO",
        "G5-CELL",
        "FP-GRAM",
        "FP-FROB",
        "FP-SYMBOL",
        "FP-MATVEC",
        "FP-CERTIFY",
        "CHOL-PSD",
        "CHOL-NORM",
    }
    assert required <= ids
    relied = {t.id for t in theorems() if t.relied_on}
    assert {"G1", "C1", "Z1", "SR1", "G5", "FP-GRAM", "FP-FROB", "FP-CERTIFY"} <= relied
    assert {"CHOL-PSD", "CHOL-NORM", "VER-SIGMA"} <= relied
    assert {"TRANSPOSE-ADJ", "ZERO-MONO", "ND-CIRCULANT", "ND-KRON"} <= relied
    assert {"ND-EMBED", "ND-CELLS"} <= relied
    assert get("KGI-QUAD").relied_on is False and get("KGI-QUAD").expected == "FAIL"


# ----------------------------------------------------------------------------- planted false
def test_planted_g1_with_n_plus_p_minus_1_fails():
    search = g1_search(offset=-1)
    # far beyond rounding: the zero-padded norm exceeds sigma_circ(n + P - 1) by a large factor
    assert search.margin((G1_COUNTEREXAMPLE, sb.ConvSpec("zeros", "same", (3, 3)))) < -0.1
    result = run(search, QUICK)
    assert result.verdict == "FAIL"
    assert result.counterexample is not None and result.margin < 0


def test_true_g1_passes_on_the_same_instances():
    result = run(g1_search(offset=0), QUICK)
    assert result.verdict == "PASS" and result.instances > 20


def test_planted_aol_reflect_without_compensation_fails():
    result = run(aol_uncompensated_search("forall", ("reflect",)), QUICK)
    assert result.verdict == "FAIL"
    assert "reflect" in result.counterexample


def test_planted_wrong_bernstein_factor_fails():
    def missing_pi(deg, grid):  # pi^2 dropped from G5's factor: too optimistic
        t = deg[0] / grid[0] + deg[1] / grid[1]
        return math.sqrt(1.0 - 0.5 * t * t)

    result = run(g5_search(missing_pi, library=False, key="wrong"), QUICK)
    assert result.verdict == "FAIL" and result.margin < 0
    assert run(g5_search(library=False, key="right"), QUICK).verdict == "PASS"


def test_planted_fantastic_four_under_reflect_fails():
    assert run(ff_padded_search("forall"), QUICK).verdict == "FAIL"


def test_planted_plain_cholesky_criterion_fails():
    """'A floating-point Cholesky that completes proves X >= 0' is false (rounding can hide a
    negative eigenvalue); the verified criterion passes on the same instances."""
    result = run(naive_psd_search(), QUICK)
    assert result.verdict == "FAIL" and result.margin < 0 and result.counterexample
    search, counts = psd_search()
    assert run(search, QUICK).verdict == "PASS" and counts["accepted"] > 0


@pytest.mark.parametrize(
    "theorem_id",
    [
        "G1",
        "C3",
        "ST-POLY",
        "FP-FROB",
        "FP-FROB-RANGE",
        "FP-GRAM-RANGE",
        "FP-OPLOWER-RANGE",
        "FP-MATVEC",
        "AOL-N1",
        "G1-SHARP",
        "CHOL-PSD",
        "CHOL-NORM",
        "SYM-SUPPORT",
        "SYM-BLOCKS",
        "TRANSPOSE-ADJ",
        "ZERO-MONO",
        "ND-CIRCULANT",
        "ND-KRON",
        "ND-EMBED",
        "ND-CELLS",
    ],
)
def test_registered_checks_pass(theorem_id):
    result = get(theorem_id).check(QUICK)
    assert result.verdict == "PASS", result.to_dict()


@pytest.mark.parametrize(
    "theorem_id",
    [
        "KGI-QUAD",
        "CN-CLAIM",
        "FP-SCALEBACK-NEAREST",
        "L8-PAD-BEYOND",
        "SYM-SUPPORT-GAPS",
        "SYM-BLOCKS-ROWS",
        "TRANSPOSE-ADJ-NO-OUTPUT-PADDING",
        "ZERO-MONO-CIRCULAR",
        "ND-CIRCULANT-2AXES",
        "ND-KRON-MAX",
        "ND-EMBED-SMALL",
        "ND-CELLS-MAX",
    ],
)
def test_claims_known_false_are_reported_with_a_counterexample(theorem_id):
    result = get(theorem_id).check(QUICK)
    assert result.verdict == "FAIL" and result.counterexample


# ----------------------------------------------------------------------------- harness
def test_forall_reports_the_worst_instance():
    result = run(
        Search(lambda x: 1.0 - x, random=lambda rng, n: iter([0.5, 0.9, 3.0, 2.0]), key="t"), QUICK
    )
    assert result.verdict == "FAIL" and result.margin == -2.0 and result.example == "3.0"


def test_forall_passes_within_tolerance_and_skips():
    def margin(x):
        if x < 0:
            raise Skip
        return -1e-13 * x

    result = run(
        Search(margin, tolerance=1e-12, adversarial=lambda m: iter([-1.0, 0.0, 1.0]), key="t"),
        QUICK,
    )
    assert result.verdict == "PASS" and result.instances == 2
    assert any("skipped" in note for note in result.notes)


def test_nan_margin_is_a_failure():
    result = run(Search(lambda x: math.nan, adversarial=lambda m: iter([1]), key="t"), QUICK)
    assert result.verdict == "FAIL"


def test_hypothesis_search_finds_a_counterexample():
    result = run(
        Search(lambda x: -1.0 if x > 1000 else 0.0, strategy=st.integers(0, 10**6), key="t"), QUICK
    )
    assert result.verdict == "FAIL" and result.by_source == {"hypothesis": result.instances}
    assert int(result.example) > 1000


def test_hypothesis_target_guides_towards_the_worst_margin():
    # the margin decreases with x; only the search guided by target() reaches x > 9000
    result = run(
        Search(
            lambda x: 1.0 - x / 9000.0,
            strategy=st.integers(0, 10**4),
            n_hypothesis=(200, 200),
            key="t",
        ),
        QUICK,
    )
    assert result.verdict == "FAIL" and int(result.example) > 9000


def test_exists_stops_at_a_witness():
    seen = []

    def margin(x):
        seen.append(x)
        return x - 2.0

    result = run(
        Search(margin, quantifier="exists", random=lambda rng, n: iter(range(10)), key="t"), QUICK
    )
    assert result.verdict == "PASS" and result.example == "3" and seen == [0, 1, 2, 3]
    none = run(
        Search(lambda x: -1.0, quantifier="exists", adversarial=lambda m: iter([1, 2]), key="t"),
        QUICK,
    )
    assert none.verdict == "FAIL"


def test_a_crashing_margin_is_an_error():
    def margin(x):
        raise RuntimeError("boom")

    result = run(Search(margin, adversarial=lambda m: iter([1]), key="t"), QUICK)
    assert result.verdict == "ERROR" and "boom" in result.error


def _outcome(theorem_id, relied, verdict_margin, expected="PASS"):
    fake = dataclasses.replace(get(theorem_id), relied_on=relied, expected=expected)
    return Outcome(fake, CheckResult("forall", 3, verdict_margin, example="x"))


def test_exit_code_only_for_statements_relied_on():
    assert exit_code([_outcome("G1", True, 0.0), _outcome("KGI-QUAD", False, -1.0, "FAIL")]) == 0
    assert exit_code([_outcome("G1", True, -1.0)]) == 1
    assert _outcome("KGI-QUAD", False, -1.0, "FAIL").label == "FAIL (not as stated)"


def test_report_table_and_markdown():
    outcomes = [_outcome("G1", True, 0.0), _outcome("KGI-QUAD", False, -1.0, "FAIL")]
    table = format_table(outcomes)
    assert "G1" in table and "KGI-QUAD*" in table and "FAIL (not as stated)" in table
    doc = markdown(
        outcomes, mode="quick", command="python -m proofs_check", seconds=1.0, date="2000-01-01"
    )
    assert "### G1" in doc and "$$" in doc and "Counterexample" in doc and "2000-01-01" in doc


def test_cli_runs_selected_theorems(capsys):
    assert main(["--only", "G4", "C3", "--quiet", "--no-docs"]) == 0
    out = capsys.readouterr().out
    assert "G4*" in out and "C3" in out and "PASS" in out


# ----------------------------------------------------------------------------- strategies
@settings(max_examples=60)
@given(conv_specs(max_size=6))
def test_conv_specs_are_valid(drawn):
    shape, spec = drawn
    layer = ConvLayer(np.zeros(shape), spec)
    assert min(layer.out_size) >= 1


@pytest.mark.parametrize("mode", MODES)
def test_conv_specs_cover_each_mode(mode):
    shape, spec = find(conv_specs(), lambda d: d[1].padding == mode)
    assert ConvLayer(np.zeros(shape), spec).spec.padding == mode


@settings(max_examples=40)
@given(symbol_bounded_specs(max_size=6))
def test_symbol_bounded_specs_stay_in_the_domain(drawn):
    shape, spec = drawn
    assert within_symbol_domain(shape, spec) and spec.padding in ("zeros", "circular")
    ConvLayer(np.zeros(shape), spec)


@settings(max_examples=40)
@given(lipschitz_specs(max_size=6))
def test_lipschitz_specs_are_valid_layer_geometries(drawn):
    shape, spec = drawn
    ConvLayer(np.zeros(shape), spec)
    AOLConv2d(
        shape[1] * spec.groups,
        shape[0],
        shape[2:],
        stride=spec.stride,
        padding=spec.pad,
        dilation=spec.dilation,
        groups=spec.groups,
        padding_mode=spec.padding,
    )


@pytest.mark.parametrize("mode", MODES)
def test_lipschitz_specs_cover_each_mode(mode):
    assert find(lipschitz_specs(), lambda d: d[1].padding == mode)[1].padding == mode


@settings(max_examples=40)
@given(circulant_specs(max_size=8, max_stride=3))
def test_circulant_specs_are_block_circulant(drawn):
    shape, spec = drawn
    assert ConvLayer(np.zeros(shape), spec).is_circulant


@pytest.mark.parametrize("family", ADVERSARIAL_FAMILIES)
def test_family_kernels(family):
    shape = (3, 2, 3, 4)
    k = family_kernel(family, shape, seed=5)
    assert k.shape == shape and k.dtype == np.float64 and np.isfinite(k).all()
    assert np.array_equal(k, family_kernel(family, shape, seed=5))  # deterministic
    if family == "orthogonal_center":
        centre = k[:, :, 1, 1]
        assert np.allclose(centre.T @ centre, np.eye(2), atol=1e-14)
        assert np.count_nonzero(k) == np.count_nonzero(centre)
    if family == "vanishing_frequency":
        assert np.abs(k.sum(axis=(2, 3))).max() < 1e-12
    if family == "identical_filters":
        assert np.array_equal(k[0], k[2])
    if family == "rank_one":
        assert np.linalg.matrix_rank(k.reshape(3, -1)) == 1


@settings(max_examples=30)
@given(adversarial_kernels((2, 2, 3, 3)))
def test_adversarial_kernels_strategy(kernel):
    assert kernel.shape == (2, 2, 3, 3) and np.isfinite(kernel).all()


@pytest.mark.parametrize("family", MATRIX_FAMILIES)
def test_family_matrices(family):
    w = family_matrix(family, (5, 3), seed=1)
    assert w.shape == (5, 3) and np.isfinite(w).all()
    s = np.linalg.svd(w, compute_uv=False)
    if family == "orthogonal":
        assert np.allclose(s, 1.0, atol=1e-14)
    if family == "rank_one":
        assert s[1] <= 1e-14 * s[0]


@settings(max_examples=20)
@given(repeated_top_matrices())
def test_repeated_top_matrices(drawn):
    w, m = drawn
    s = np.linalg.svd(w, compute_uv=False)
    assert np.allclose(s[:m], 1.0, atol=1e-13) and (s[m:] < 1.0 - 1e-6).all()


@settings(max_examples=20)
@given(matrices(max_rows=5, max_cols=5))
def test_matrices_strategy(w):
    assert w.ndim == 2 and 1 <= w.shape[0] <= 5 and np.isfinite(w).all()


# ----------------------------------------------------------------------------- helpers
@settings(max_examples=10)
@given(adversarial_layers(lipschitz_specs(max_size=4, max_kernel=3, max_channels=2)))
def test_assert_lipschitz_layer_on_aol(layer):
    """The docstring example of specbound.testing.lipschitz: AOL layers pass."""
    kernel, spec = layer
    module = AOLConv2d(
        kernel.shape[1] * spec.groups,
        kernel.shape[0],
        kernel.shape[2:],
        stride=spec.stride,
        padding=spec.pad,
        dilation=spec.dilation,
        groups=spec.groups,
        padding_mode=spec.padding,
    ).double()
    module.weight = torch.from_numpy(kernel)  # stores the free kernel
    assert assert_lipschitz_layer(module, spec.input_size) <= 1 + 1e-12


def test_assert_lipschitz_layer_rejects_a_plain_conv():
    conv = torch.nn.Conv2d(2, 2, 3, padding=1, bias=True)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    with pytest.raises(AssertionError, match="exceeds"):
        assert_lipschitz_layer(conv, (4, 4))
    kernel = np.ones((1, 1, 3, 3))
    assert assert_lipschitz_layer(kernel / 9, spec=sb.ConvSpec("circular", input_size=5)) == (
        pytest.approx(1.0)
    )


def test_module_matrix_matches_conv_matrix():
    conv = torch.nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect", bias=True).double()
    j = module_matrix(conv, (2, 4, 5))
    spec = sb.ConvSpec.from_module(conv, input_size=(4, 5))
    assert np.abs(j - sb.operators.conv_matrix(conv.weight, spec)).max() < 1e-14


def test_every_size_and_bracket_helpers():
    kernel = np.random.default_rng(0).standard_normal((2, 2, 3, 3))
    spec = sb.ConvSpec("zeros", "same", None)
    bound = sb.bounds.compute("gram_zero", kernel, spec, n_iter=3)
    largest = assert_every_size_upper_bound(bound, kernel, spec)
    with pytest.raises(AssertionError):
        assert_every_size_upper_bound(0.5 * largest, kernel, spec)
    cert = sb.certify(kernel, "zeros", input_size=(4, 4))
    assert_bracket(cert)
    given_spec = sb.ConvSpec("zeros", "same", (4, 4))
    with pytest.raises(AssertionError):
        assert_bracket(cert.upper * 1.01, cert.upper * 1.02, kernel, given_spec)
    assert assert_upper_bound(cert, kernel, given_spec) == pytest.approx(
        exact_norm(kernel, given_spec)
    )


def test_planted_max_over_taps_fails_and_the_tap_sum_passes():
    """'||A|| <= ||P|| max_t ||K_t||_F' (the maximum over the taps in place of their sum) is
    false; the audit's fallback bound (L-TAP) passes on the same instances."""
    result = run(tap_search(max_tap_upper, key="planted"), QUICK)
    assert result.verdict == "FAIL" and result.margin < 0 and result.counterexample
    assert run(tap_search(), QUICK).verdict == "PASS"
    assert get("AUDIT-TAP").relied_on


def test_planted_unverified_sigma_criterion_fails():
    """'A completed Cholesky of fl(t I - fl(M^T M)) proves sigma_1^2 <= t' is false (no
    rounding terms); the verified core (L10) passes on the same instances."""
    from proofs_check.families.verified import naive_sigma_search, sigma_search

    result = run(naive_sigma_search(), QUICK)
    assert result.verdict == "FAIL" and result.margin < 0 and result.counterexample
    search, counts = sigma_search()
    assert run(search, QUICK).verdict == "PASS" and counts["accepted"] > 0


# ----------------------------------------------------------------------------- transposed, 3-D
def test_planted_transposed_size_fails_exactly_when_output_padding_is_used():
    from proofs_check.families.transposed import _adj_margin

    base = {
        "weight": np.array([[[1.0, -2.0, 3.0]]]),
        "stride": (2,),
        "padding": (1,),
        "dilation": (1,),
        "groups": 1,
        "n": (3,),
    }
    without, with_q = {**base, "output_padding": (0,)}, {**base, "output_padding": (1,)}
    assert _adj_margin(without) == 0.0 and _adj_margin(without, planted=True) == 0.0
    assert _adj_margin(with_q) == 0.0 and _adj_margin(with_q, planted=True) < 0.0


def test_circular_norm_is_not_monotone_on_the_hand_example():
    from proofs_check.families.transposed import _mono_margin

    inst = {
        "weight": np.array([[[1.0, -1.0]]]),
        "stride": (1,),
        "dilation": (1,),
        "groups": 1,
        "pads": ((0, 1),),
        "size": (2,),
        "axis": 0,
    }
    # circular: norm 2 at N = 2 (frequency pi), 2 cos(pi/6) = sqrt(3) at N = 3
    assert _mono_margin(inst, circular=True) == pytest.approx(math.sqrt(3) / 2 - 1, abs=1e-14)
    # zeros: [[1, -1], [0, 1]] at n = 2 grows to the 3x3 bidiagonal at n = 3
    assert _mono_margin(inst) >= 0.0


def test_replicate_pad_of_one_pixel_copies_it_27_times():
    from proofs_check.families.transposed import _kron_margin

    inst = {"mode": "replicate", "n": (1, 1, 1), "pads": ((1, 1), (0, 2), (2, 0))}
    assert _kron_margin(inst) >= -1e-14  # sqrt(27) = sqrt(3)^3, up to the SVD's rounding
    assert _kron_margin(inst, planted=True) == pytest.approx(-(1 - 1 / 3), abs=1e-14)


def test_two_axis_dft_misses_a_kernel_spread_along_the_first_axis():
    from proofs_check.families.transposed import _circ_margin

    inst = {
        "weight": np.array([1.0, -1.0]).reshape(1, 1, 2, 1, 1),
        "stride": (1, 1, 1),
        "dilation": (1, 1, 1),
        "groups": 1,
        "m": (2, 1, 1),
        "lo": (0, 0, 0),
    }
    assert _circ_margin(inst) >= -1e-15  # singular values {2, 0} on both sides
    assert _circ_margin(inst, axes=(1, 2)) == pytest.approx(-1.0, abs=1e-15)  # {0, 0}
