"""The permanent adversarial suite of issue 12: the families a hostile user would try,
drawn on purpose (:mod:`specbound.testing.adversarial`), each checked one-sided against the
mpmath norm of the exact operator (:func:`~specbound.testing.adversarial.check_case`).

The last tests are the regressions of issue 12's classes 1-3 (subnormal scale-back,
NaN-dropping reductions, circular pads beyond ``d(k-1)`` at every size): each has its minimal
counterexample as an ``@example``, which certified a false bracket before the fix.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings

import specbound as sb
from specbound.testing.adversarial import (
    EXTREME_EXPONENTS,
    SUBNORMAL_EXPONENTS,
    Case,
    big_pad_cases,
    check_case,
    dtype_cases,
    every_size_cases,
    far_stride_cases,
    mixed_group_cases,
    probabilistic_cases,
    scale_cases,
    tight_cases,
    tiny_budget_cases,
)

FAST = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _case(family: str, kernel, values=None, **options) -> Case:
    kernel_values = np.asarray(kernel, dtype=np.float64) if values is None else values
    return Case(family, kernel, options, kernel_values)


def assert_sound(case: Case) -> None:
    problems = check_case(case, sb.certify)
    assert not problems, (problems, case.describe())


# ---------------------------------------------------------------------------- sound today
@FAST
@given(tight_cases())
@example(_case("tight", np.ones((1, 1, 3, 3)), padding="circular", input_size=(4, 4), rtol=1e-12))
def test_exactly_tight_kernels_at_the_smallest_rtol(case):
    assert_sound(case)


@FAST
@given(scale_cases(EXTREME_EXPONENTS))
@example(_case("scales", np.full((1, 1, 2, 2), 2.0**1000), padding="zeros", input_size=(3, 3)))
def test_kernels_near_1e300_and_1e_minus_300(case):
    assert_sound(case)


@FAST
@given(dtype_cases())
@example(  # longdouble below 2**-1074 used to become 0: upper = 0 for a non-zero operator
    Case(
        "dtypes",
        np.full((1, 1, 1, 1), np.longdouble(2) ** -1080),
        {"padding": "zeros", "input_size": (2, 2)},
        None,
    )
)
def test_every_dtype_certifies_its_exact_values_or_is_refused(case):
    if case.values is None and np.finfo(np.longdouble).nmant <= np.finfo(np.float64).nmant:
        pytest.skip("longdouble is float64 on this platform")
    assert_sound(case)


@FAST
@given(big_pad_cases())
@example(_case("big_pads", np.ones((1, 1, 1, 1)), padding="circular", pad=3, input_size=(1, 2)))
@example(_case("big_pads", np.ones((1, 1, 2, 2)), padding="replicate", pad=4, input_size=(1, 1)))
def test_pads_beyond_full_at_a_given_size(case):
    assert_sound(case)


@FAST
@given(every_size_cases())
@example(_case("every_size", np.ones((1, 1, 1, 1)), padding="zeros", pad=3, input_size=None))
def test_every_size_within_the_symbol_domain(case):
    assert_sound(case)


@FAST
@given(far_stride_cases())
@example(
    _case(
        "far_strides",
        np.ones((1, 1, 2, 2)),
        padding="zeros",
        pad=0,
        input_size=(2, 2),
        stride=5,
        dilation=1,
    )
)
def test_stride_and_dilation_beyond_the_input(case):
    assert_sound(case)


@FAST
@given(tiny_budget_cases())
def test_a_millisecond_budget_stays_rigorous(case):
    assert_sound(case)


@FAST
@given(probabilistic_cases())
def test_probabilistic_guarantee(case):
    assert_sound(case)


# ---------------------------------------------------------------------------- issue 12, classes 1-3
@FAST
@given(scale_cases(SUBNORMAL_EXPONENTS, "subnormal"))
@example(  # lower 1e-323 above the norm 7.99e-324: the scale-back rounds to nearest
    _case("subnormal", np.full((1, 1, 1, 2), 2.0**-1074), padding="zeros", input_size=(1, 2))
)
@example(  # upper 1e-323 below the norm 1.19e-323
    _case("subnormal", np.full((1, 1, 1, 3), 2.0**-1074), padding="zeros", input_size=(1, 3))
)
def test_subnormal_norms(case):
    assert_sound(case)


@FAST
@given(mixed_group_cases())
@example(  # groups of 2^664 and 2^-365 (1e200, 1e-110), circular 1x1: certified upper 0
    _case(
        "mixed_groups",
        np.array([2.0**664, 2.0**-365]).reshape(2, 1, 1, 1),
        padding="circular",
        input_size=(1, 1),
        groups=2,
    )
)
def test_mixed_scale_groups(case):
    assert_sound(case)


def test_mixed_scale_groups_at_6x6():
    """circular 6x6, groups at 1e200 and 1e-110: certified [0, 0] (truth 2.96e200)."""
    kernel = np.random.default_rng(0).standard_normal((2, 1, 3, 3))
    kernel[0] *= 1e200
    kernel[1] *= 1e-110
    cert = sb.certify(kernel, "circular", input_size=6, groups=2)
    # every tap is an entry of A (no wrap-around duplicates at 6x6): ||A|| >= max |K|
    assert cert.upper >= float(np.abs(kernel).max())


@FAST
@given(every_size_cases(wide_circular=True))
@example(  # [1] with circular pad 1 at n=1 is the 3x3 all-ones matrix, norm 3
    _case("every_size_wide_circular", np.ones((1, 1, 1, 1)), padding="circular", pad=1)
)
def test_every_size_with_circular_pads_beyond_full(case):
    """Such a pad repeats output rows, so the symbol supremum is no bound: refused (it used
    to be certified, e.g. ``<= 1`` for the norm-3 example)."""
    with pytest.raises(ValueError, match=r"pad=.*dilation\*\(kernel_size-1\)"):
        sb.certify(case.kernel, **case.options)
