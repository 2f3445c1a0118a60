"""Adversarial ``certify`` cases (issue 12): the families a hostile user would try, drawn on
purpose, each with an independent ground truth.

A case is a :class:`Case`: the kernel exactly as passed (any dtype, numpy or torch), the
keyword arguments of :func:`specbound.certify`, and the family name. :func:`mp_norm` is the
truth: the operator assembled from the exact tap values (each entry an integer count times a
tap, from :func:`specbound.operators.conv_matrix` of one-hot kernels) and its norm to 40
digits by mpmath, so it is independent of every float64 rounding, scale and dtype.

Families (:data:`CASE_FAMILIES`):

* ``tight`` — exactly tight kernels (constant, orthogonal centre tap, single tap,
  checkerboard, identical filters) at the smallest rtol, ``1e-12``;
* ``subnormal`` — kernels and norms below ``2^-1022``; ``scales`` — ``1e-300`` and ``1e300``;
* ``mixed_groups`` — ``groups=2`` with the two groups ``2^e1`` and ``2^e2`` apart (up to
  ``1e200`` against ``1e-110``);
* ``dtypes`` — float16, bfloat16, float32, float64, longdouble, int, uint, bool; numpy and
  torch, non-contiguous and ``requires_grad``;
* ``big_pads`` — pads beyond ``d(k-1)`` in every mode at a given size (circular ones
  wrapping around the input more than once);
* ``every_size`` — ``input_size=None`` with zero padding of any amount or circular padding
  within ``d(k-1)``; ``every_size_wide_circular`` — circular pads beyond it (class 1 of the
  issue);
* ``far_strides`` — stride and dilation larger than the input;
* ``tiny_budget`` — ``max_seconds=1e-3``;
* ``probabilistic`` — ``guarantee="probabilistic"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import mpmath
import numpy as np
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ..operators import conv_matrix
from ..operators.conv_layer import ConvLayer
from ..spec import PADDING_MODES, ConvSpec
from .families import ENTRIES, TIGHT_FAMILIES, drawn_kernel
from .strategies import valid_geometry

DPS = 40
"""Digits of the mpmath truth."""
MAX_TRUTH_DIM = 24
"""Largest smaller side of a layer whose mpmath truth is computed (drawn layers stay below)."""
SMALLEST_RTOL = 1e-12

CASE_FAMILIES = (
    "tight",
    "subnormal",
    "scales",
    "mixed_groups",
    "dtypes",
    "big_pads",
    "every_size",
    "every_size_wide_circular",
    "far_strides",
    "tiny_budget",
    "probabilistic",
)


@dataclass
class Case:
    """One adversarial call: ``certify(kernel, **options)``; ``values`` is the kernel's exact
    values as float64 (``None`` when ``certify`` must refuse the kernel)."""

    family: str
    kernel: Any
    options: dict[str, Any]
    values: np.ndarray | None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> ConvSpec:
        keys = ("padding", "pad", "input_size", "stride", "dilation", "groups")
        return ConvSpec(**{k: self.options[k] for k in keys if k in self.options})

    def describe(self) -> dict[str, Any]:
        """JSON-ready: the family, the options and the kernel's values."""
        opts = {k: v for k, v in self.options.items() if k != "input_size"}
        spec = self.spec.to_dict()
        return {
            "family": self.family,
            "spec": spec,
            "options": {k: v for k, v in opts.items() if k not in spec},
            "kernel_type": type(self.kernel).__name__,
            "kernel_dtype": str(getattr(self.kernel, "dtype", None)),
            "values": None if self.values is None else self.values.tolist(),
            **self.notes,
        }


# ----------------------------------------------------------------------------- truth
def mp_norm(values: np.ndarray, spec: ConvSpec, dps: int = DPS) -> mpmath.mpf:
    """``||A||_2`` of the layer with these exact float64 tap values, to ``dps`` digits.

    ``A = sum_t K_t P_t`` with ``P_t`` the operator of the one-hot kernel at tap ``t``
    (integer entries: how often that tap reads each pixel, exact in float64), summed and
    decomposed in mpmath; the norm is the square root of the top eigenvalue of the smaller
    Gram matrix.
    """
    layer = ConvLayer(values, spec, need_size=True)
    if min(layer.in_dim, layer.out_dim) > MAX_TRUTH_DIM:
        raise ValueError(f"layer too large for the mpmath truth: {layer.in_dim}, {layer.out_dim}")
    with mpmath.workdps(dps):
        total = mpmath.zeros(layer.out_dim, layer.in_dim)
        for tap in zip(*np.nonzero(values), strict=True):
            one_hot = np.zeros(values.shape)
            one_hot[tap] = 1.0
            pattern = conv_matrix(one_hot, spec)
            rows, cols = np.nonzero(pattern)
            weight = mpmath.mpf(float(values[tap]))
            for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
                total[r, c] += weight * int(pattern[r, c])
        gram = total * total.T if total.rows <= total.cols else total.T * total
        if all(v == 0 for v in gram):
            return mpmath.mpf(0)
        top = max(mpmath.eigsy(gram, eigvals_only=True))
        return mpmath.sqrt(max(top, mpmath.mpf(0)))


# ----------------------------------------------------------------------------- specs
def _spec_options(spec: ConvSpec) -> dict[str, Any]:
    return {
        "padding": spec.padding,
        "pad": spec.pad,
        "input_size": spec.input_size,
        "stride": spec.stride,
        "dilation": spec.dilation,
        "groups": spec.groups,
    }


@st.composite
def _small_spec(
    draw: st.DrawFn,
    modes: tuple[str, ...] = PADDING_MODES,
    *,
    groups: int | None = None,
    extra_pad: int = 0,
    max_size: int = 4,
    max_stride: int = 2,
    max_dilation: int = 2,
    size: bool = True,
) -> tuple[tuple[int, int, int, int], ConvSpec]:
    """A tiny valid layer geometry; pads up to ``d(k-1) + extra_pad`` per side."""
    g = draw(st.integers(1, 2)) if groups is None else groups
    shape = (g * draw(st.integers(1, 2)), draw(st.integers(1, 2)), *draw(_kernel_size()))
    kh, kw = shape[2:]
    dil = (draw(st.integers(1, max_dilation)), draw(st.integers(1, max_dilation)))
    limit = max(dil[0] * (kh - 1), dil[1] * (kw - 1)) + extra_pad
    pad = draw(
        st.one_of(
            st.sampled_from(["same", "valid", "full"]),
            st.integers(0, limit),
            st.tuples(*(st.integers(0, limit) for _ in range(4))),
        )
    )
    in_size = (draw(st.integers(1, max_size)), draw(st.integers(1, max_size))) if size else None
    stride = (draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride)))
    spec = ConvSpec(draw(st.sampled_from(modes)), pad, in_size, stride, dil, g)
    assume(valid_geometry(shape, spec))
    if in_size is not None:
        layer = ConvLayer(np.ones(shape), spec)
        assume(min(layer.in_dim, layer.out_dim) <= MAX_TRUTH_DIM)
    return shape, spec


def _kernel_size() -> st.SearchStrategy[tuple[int, int]]:
    return st.tuples(st.integers(1, 3), st.integers(1, 3))


def total_pad_exceeds(shape: tuple[int, ...], spec: ConvSpec) -> bool:
    """True when a circular pad's total on some axis exceeds ``d(k-1)`` (duplicated rows)."""
    (top, bottom), (left, right) = spec.pads(shape[2:])
    (dh, dw), (kh, kw) = spec.dilation, shape[2:]
    return top + bottom > dh * (kh - 1) or left + right > dw * (kw - 1)


# ----------------------------------------------------------------------------- families
@st.composite
def tight_cases(draw: st.DrawFn) -> Case:
    """Exactly tight kernels at :data:`SMALLEST_RTOL`."""
    shape, spec = draw(_small_spec(("zeros", "circular"), extra_pad=0))
    kernel = drawn_kernel(draw, draw(st.sampled_from(TIGHT_FAMILIES)), shape)
    return Case("tight", kernel, {**_spec_options(spec), "rtol": SMALLEST_RTOL}, kernel)


SUBNORMAL_EXPONENTS = (-1074, -1060, -1030)
"""Scales ``2^e`` that make the kernel and the norm subnormal."""
EXTREME_EXPONENTS = (-1000, -997, 990, 996, 1000)
"""Scales ``2^e`` around ``1e-300`` and ``1e300`` (normal floats; the norm may overflow)."""


@st.composite
def scale_cases(
    draw: st.DrawFn, exponents: tuple[int, ...] = EXTREME_EXPONENTS, family: str = "scales"
) -> Case:
    """A kernel times ``2^e``, ``e`` from ``exponents``: ``1e-300`` or ``1e300`` (default),
    or subnormal (:data:`SUBNORMAL_EXPONENTS`, family ``"subnormal"``)."""
    shape, spec = draw(_small_spec())
    base = drawn_kernel(draw, draw(st.sampled_from(("gaussian", "integer", "single_tap"))), shape)
    e = draw(st.sampled_from(exponents))
    with np.errstate(under="ignore", over="ignore"):
        kernel = np.ldexp(base, e)
    assume(np.isfinite(kernel).all())
    rtol = draw(st.sampled_from([1e-3, 1e-9]))
    options = {**_spec_options(spec), "rtol": rtol}
    return Case(family, kernel, options, kernel, {"exponent": e})


@st.composite
def mixed_group_cases(draw: st.DrawFn) -> Case:
    """``groups=2``, the groups scaled by very different powers of two."""
    shape, spec = draw(_small_spec(("zeros", "circular"), groups=2))
    kernel = drawn_kernel(draw, "gaussian", shape)
    half = shape[0] // 2
    e1 = draw(st.sampled_from([664, 300, 0]))  # 2^664 ~ 1e200
    e2 = draw(st.sampled_from([-365, -700, -1060]))  # 2^-365 ~ 1e-110
    with np.errstate(under="ignore"):
        kernel[:half] = np.ldexp(kernel[:half], e1)
        kernel[half:] = np.ldexp(kernel[half:], e2)
    return Case("mixed_groups", kernel, _spec_options(spec), kernel, {"exponents": [e1, e2]})


DTYPES = (
    "float16",
    "bfloat16",
    "float32",
    "float64",
    "longdouble",
    "int8",
    "int64",
    "uint8",
    "bool",
)


@st.composite
def dtype_cases(draw: st.DrawFn) -> Case:
    """The same layer passed as every dtype, numpy or torch, possibly non-contiguous or
    with ``requires_grad``; a longdouble kernel float64 cannot hold must be refused."""
    import torch

    shape, spec = draw(_small_spec())
    name = draw(st.sampled_from(DTYPES))
    backend = "numpy" if name == "longdouble" else draw(st.sampled_from(["numpy", "torch"]))
    if name == "bfloat16":
        backend = "torch"
    if name in ("int8", "int64", "uint8", "bool"):
        lo = 0 if name in ("uint8", "bool") else -3
        hi = 1 if name == "bool" else 3
        ints = draw(hnp.arrays(np.int64, shape, elements=st.integers(lo, hi)))
        values = ints.astype(np.float64)
        arr: Any = ints.astype(name)
    elif name in ("float16", "float32"):
        values = draw(hnp.arrays(np.dtype(name), shape, elements=st.floats(-4, 4, width=16)))
        values = values.astype(np.float64)
        arr = values.astype(name)
    elif name == "bfloat16":
        values = draw(hnp.arrays(np.float64, shape, elements=ENTRIES))
        values = torch.from_numpy(values).to(torch.bfloat16).to(torch.float64).numpy()
        arr = values
    else:
        values = draw(hnp.arrays(np.float64, shape, elements=ENTRIES))
        arr = values.astype(np.longdouble) if name == "longdouble" else values
    if name == "longdouble" and draw(st.booleans()) and values.any():
        if np.finfo(np.longdouble).nmant > np.finfo(np.float64).nmant:
            # one tap with a bit below float64's precision: must be refused
            tap = tuple(int(i) for i in np.argwhere(values != 0)[0])
            arr = arr.copy()
            arr[tap] = arr[tap] * (1 + np.longdouble(2.0) ** -60)
            values = None
    if backend == "torch":
        tensor_dtype = getattr(torch, name)
        t = torch.from_numpy(np.asarray(values)).to(tensor_dtype)
        layout = draw(st.sampled_from(["plain", "strided", "grad"]))
        if layout == "strided":
            wide = torch.zeros(*shape[:3], 2 * shape[3], dtype=tensor_dtype)
            wide[..., ::2] = t
            t = wide[..., ::2]
        elif layout == "grad" and t.is_floating_point():
            t = t.clone().requires_grad_(True)
        arr = t
    elif draw(st.booleans()):  # a non-contiguous numpy view
        wide = np.zeros((*shape[:3], 2 * shape[3]), dtype=arr.dtype)
        wide[..., ::2] = arr
        arr = wide[..., ::2]
    return Case("dtypes", arr, _spec_options(spec), values, {"dtype": name, "backend": backend})


@st.composite
def big_pad_cases(draw: st.DrawFn) -> Case:
    """Pads beyond ``d(k-1)`` at a given size in every mode (circular ones wrap around)."""
    shape, spec = draw(_small_spec(extra_pad=5, max_size=3))
    kernel = drawn_kernel(draw, draw(st.sampled_from(("gaussian", "constant", "integer"))), shape)
    return Case("big_pads", kernel, _spec_options(spec), kernel)


@st.composite
def every_size_cases(draw: st.DrawFn, wide_circular: bool = False) -> Case:
    """``input_size=None``: zero padding of any amount and circular padding within
    ``d(k-1)`` per axis, or (``wide_circular``) circular padding beyond it."""
    modes = ("circular",) if wide_circular else ("zeros", "circular")
    shape, spec = draw(_small_spec(modes, extra_pad=3, size=False, max_stride=1))
    wide = spec.padding == "circular" and total_pad_exceeds(shape, spec)
    assume(wide == wide_circular)
    kernel = drawn_kernel(draw, draw(st.sampled_from(("gaussian", "constant", "integer"))), shape)
    family = "every_size_wide_circular" if wide_circular else "every_size"
    return Case(family, kernel, _spec_options(spec), kernel)


@st.composite
def far_stride_cases(draw: st.DrawFn) -> Case:
    """Stride and dilation larger than the input."""
    g = draw(st.integers(1, 2))
    shape = (g * draw(st.integers(1, 2)), draw(st.integers(1, 2)), *draw(_kernel_size()))
    size = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(size[0], 6)), draw(st.integers(size[1], 6)))
    dil = (draw(st.integers(size[0], 6)), draw(st.integers(size[1], 6)))
    mode = draw(st.sampled_from(("zeros", "circular", "replicate")))
    pad = draw(st.one_of(st.sampled_from(["same", "full"]), st.integers(0, 8)))
    spec = ConvSpec(mode, pad, size, stride, dil, g)
    assume(valid_geometry(shape, spec))
    layer = ConvLayer(np.ones(shape), spec)
    assume(min(layer.in_dim, layer.out_dim) <= MAX_TRUTH_DIM)
    kernel = drawn_kernel(draw, "gaussian", shape)
    return Case("far_strides", kernel, _spec_options(spec), kernel)


@st.composite
def tiny_budget_cases(draw: st.DrawFn) -> Case:
    """``max_seconds=1e-3``: the bracket must stay rigorous however little was done."""
    shape, spec = draw(_small_spec())
    kernel = drawn_kernel(draw, "gaussian", shape)
    options = {**_spec_options(spec), "rtol": 1e-9, "max_seconds": 1e-3}
    return Case("tiny_budget", kernel, options, kernel)


@st.composite
def probabilistic_cases(draw: st.DrawFn) -> Case:
    """``guarantee="probabilistic"`` (``delta=1e-12``: a failure is a bug, not bad luck)."""
    shape, spec = draw(_small_spec())
    kernel = drawn_kernel(draw, draw(st.sampled_from(("gaussian", "constant"))), shape)
    options = {**_spec_options(spec), "rtol": 1e-6, "guarantee": "probabilistic", "delta": 1e-12}
    return Case("probabilistic", kernel, options, kernel)


FAMILY_STRATEGIES = {
    "tight": tight_cases,
    "subnormal": lambda: scale_cases(SUBNORMAL_EXPONENTS, "subnormal"),
    "scales": scale_cases,
    "mixed_groups": mixed_group_cases,
    "dtypes": dtype_cases,
    "big_pads": big_pad_cases,
    "every_size": every_size_cases,
    "every_size_wide_circular": lambda: every_size_cases(wide_circular=True),
    "far_strides": far_stride_cases,
    "tiny_budget": tiny_budget_cases,
    "probabilistic": probabilistic_cases,
}


def adversarial_cases(families: tuple[str, ...] = CASE_FAMILIES) -> st.SearchStrategy[Case]:
    """A :class:`Case` from any of ``families`` (default :data:`CASE_FAMILIES`)."""
    bad = set(families) - set(FAMILY_STRATEGIES)
    if bad:
        raise ValueError(f"families must be among {CASE_FAMILIES}, got {sorted(bad)}")
    return st.one_of(*(FAMILY_STRATEGIES[f]() for f in families))


# ----------------------------------------------------------------------------- checking
EVERY_SIZE_PROBES = ((1, 1), (1, 2), (2, 3), (3, 3), (4, 2), (5, 5))


def check_case(case: Case, certify: Any) -> list[str]:
    """Run ``certify`` on ``case`` and return what is wrong (empty: nothing).

    Checked, with bare comparisons against :func:`mp_norm`: ``lower <= ||A|| <= upper``,
    neither is NaN, ``converged`` implies ``rel_gap <= rtol``, a refused kernel is refused
    with a ValueError naming ``kernel`` (and an every-size circular pad beyond ``d(k-1)``
    with one naming ``pad``); with ``input_size=None`` the upper end dominates
    the norm at :data:`EVERY_SIZE_PROBES` (where the layer exists); ``max_seconds`` is
    honoured within ``max(1.2 t, t + 1 s)``.
    """
    import time

    problems: list[str] = []
    start = time.perf_counter()
    try:
        cert = certify(case.kernel, **case.options)
    except ValueError as err:
        if case.values is None and "kernel" in str(err):
            return []
        spec = case.spec
        if (
            spec.input_size is None
            and spec.padding == "circular"
            and total_pad_exceeds(np.shape(case.values), spec)
            and "pad=" in str(err)
        ):
            return []  # documented refusal: such a pad repeats rows (no every-size bound)
        return [f"refused: {type(err).__name__}: {err}"]
    except Exception as err:  # any other exception is a finding
        return [f"raised {type(err).__name__}: {err}"]
    elapsed = time.perf_counter() - start
    if case.values is None:
        return ["accepted a kernel float64 cannot hold exactly"]
    upper, lower = cert.upper, cert.lower
    if math.isnan(upper) or math.isnan(lower):
        return [f"NaN in the bracket [{lower}, {upper}]"]
    if not lower <= upper:
        problems.append(f"lower {lower} > upper {upper}")
    if cert.converged and not cert.rel_gap <= cert.rtol:
        problems.append(f"converged with rel_gap {cert.rel_gap} > rtol {cert.rtol}")
    budget = case.options.get("max_seconds")
    if budget is not None and elapsed > max(1.2 * budget, budget + 1.0):
        problems.append(f"took {elapsed:.3g} s with max_seconds={budget}")
    spec = case.spec
    values = np.asarray(case.values, dtype=np.float64)
    if spec.input_size is not None:
        truth = mp_norm(values, spec)
        if not mpmath.mpf(upper) >= truth:
            problems.append(f"upper {upper!r} < truth {mpmath.nstr(truth, 20)}")
        if not mpmath.mpf(lower) <= truth:
            problems.append(f"lower {lower!r} > truth {mpmath.nstr(truth, 20)}")
        return problems
    for size in EVERY_SIZE_PROBES:
        probe = spec.replace(input_size=size)
        if not valid_geometry(values.shape, probe):
            continue
        layer = ConvLayer(values, probe)
        if min(layer.in_dim, layer.out_dim) > MAX_TRUTH_DIM:
            continue
        truth = mp_norm(values, probe)
        if not mpmath.mpf(upper) >= truth:
            problems.append(f"upper {upper!r} < truth {mpmath.nstr(truth, 20)} at size {size}")
            break
    return problems


__all__ = [
    "CASE_FAMILIES",
    "EXTREME_EXPONENTS",
    "SUBNORMAL_EXPONENTS",
    "Case",
    "adversarial_cases",
    "big_pad_cases",
    "check_case",
    "dtype_cases",
    "every_size_cases",
    "far_stride_cases",
    "mixed_group_cases",
    "mp_norm",
    "probabilistic_cases",
    "scale_cases",
    "tight_cases",
    "tiny_budget_cases",
]
