"""Lipschitz rules of pooling: max pooling (the largest number of windows an input entry
falls into), average and adaptive average pooling (separable averaging matrices with a
rigorous bracket of their norms)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.fx as fx
from torch import nn

from ..rigorous.bracket import bracket_matrices
from ..rigorous.rounding import U, frobenius_upper
from ._analysis import Analysis
from ._graph import _bind, _Op, _tuple
from ._outward import _down, _up


def _axis_taps(n: int, n_out: int, k: int, s: int, p: int, d: int = 1) -> list[np.ndarray]:
    """Input indices (inside ``[0, n)``) read by each output position of a sliding window
    ``start = i s - p``, taps ``start + d t``, ``t < k`` (PyTorch's pooling geometry)."""
    taps = []
    for i in range(n_out):
        idx = i * s - p + d * np.arange(k)
        taps.append(idx[(idx >= 0) & (idx < n)])
    return taps


def _adaptive_taps(n: int, n_out: int) -> list[np.ndarray]:
    """Adaptive pooling windows ``[floor(i n / o), ceil((i + 1) n / o))`` (PyTorch)."""
    return [np.arange((i * n) // n_out, -((-(i + 1) * n) // n_out)) for i in range(n_out)]


def max_pool_lipschitz(taps_per_axis: Sequence[list[np.ndarray]], n_per_axis: Sequence[int]) -> int:
    """``m`` such that the max pooling's L2 Lipschitz constant is exactly ``sqrt(m)``.

    ``m = prod_axis max_pixel (number of windows along that axis containing the pixel)`` (a
    window is a product of per-axis windows, so the count of a pixel is the product of its
    per-axis counts). Upper: ``|max_W x - max_W y| <= max_{p in W} |x_p - y_p|``, so
    ``sum_W (max_W x - max_W y)^2 <= sum_W sum_{p in W} d_p^2 = sum_p c_p d_p^2 <= m ||d||^2``.
    Attained: ``x = t e_p`` at a pixel ``p`` in ``m`` windows and ``y = 0`` change exactly those
    ``m`` outputs by ``t``. Channels are pooled independently (block diagonal).
    """
    m = 1
    for taps, n in zip(taps_per_axis, n_per_axis, strict=True):
        counts = np.bincount(np.concatenate(taps), minlength=n) if taps else np.zeros(1, int)
        m *= int(counts.max())
    return m


def _matrix_bracket(mat: np.ndarray, entry_rel_error: float) -> tuple[float, float]:
    """Rigorous bracket of ``||B||_2`` for the exact matrix whose entries are within
    ``entry_rel_error`` (relative) of ``mat`` (:func:`~specbound.rigorous.bracket.bracket_matrices`
    with ``||B - mat||_2 <= ||B - mat||_F <= entry_rel_error ||mat||_F``)."""
    m = torch.from_numpy(np.ascontiguousarray(mat, dtype=np.float64))[None]
    if not bool(m.any()):
        return 0.0, 0.0
    err = float(frobenius_upper(m)[0]) * entry_rel_error * (1 + 4 * U)
    res = bracket_matrices(m, err, 1e-12)
    return max(0.0, res.lower), float(res.upper.max())


def avg_pool_axis_matrix(
    n: int, n_out: int, k: int, s: int, p: int, count_include_pad: bool, ones: bool = False
) -> np.ndarray:
    """The 1-D factor ``B`` (``n_out x n``) of PyTorch's ``avg_pool``: row ``i`` averages the
    window ``start = i s - p``; its divisor is the window clipped to the padded input
    ``[-p, n + p)`` (``count_include_pad=True``) or to the input ``[0, n)``; the 2-D divisor
    is the product of the two axes' divisors (``aten/src/ATen/native/cpu/AvgPoolKernel.cpp``),
    so the 2-D map is ``B_h (x) B_w``. ``ones=True`` gives the 0/1 window matrix (for
    ``divisor_override``)."""
    mat = np.zeros((n_out, n))
    for i in range(n_out):
        start = i * s - p
        end = min(start + k, n + p)
        lo, hi = max(start, 0), min(end, n)
        if lo >= hi:
            continue
        div = 1.0 if ones else float((end - start) if count_include_pad else (hi - lo))
        mat[i, lo:hi] = 1.0 / div
    return mat


def adaptive_avg_axis_matrix(n: int, n_out: int) -> np.ndarray:
    """The 1-D factor of adaptive average pooling (windows of :func:`_adaptive_taps`)."""
    mat = np.zeros((n_out, n))
    for i, taps in enumerate(_adaptive_taps(n, n_out)):
        mat[i, taps] = 1.0 / len(taps)
    return mat


def _product_bracket(
    pairs: Iterable[tuple[float, float]], scale: float = 1.0
) -> tuple[float, float]:
    lo, hi, n = 1.0, 1.0, 0
    for a, b in pairs:
        lo, hi, n = lo * a, hi * b, n + 1
    return _down(lo * scale, n + 1), _up(hi * scale, n + 1)


# ---------------------------------------------------------------- rules


def avg_pool_op(
    an: Analysis,
    node: fx.Node,
    k: Any,
    s: Any,
    p: Any,
    ceil_mode: bool,
    count_include_pad: bool,
    divisor: Any,
    fn: Callable,
) -> _Op:
    in_shape, out_shape = an.in_shape(node), an.out_shape(node)
    nd = 1 if len(in_shape) == 2 else 2
    k, s, p = _tuple(k, nd), _tuple(s if s not in (None, []) else k, nd), _tuple(p, nd)
    del ceil_mode  # the traced output size already says how many windows there are
    mats = [
        avg_pool_axis_matrix(
            in_shape[-nd + i],
            out_shape[-nd + i],
            k[i],
            s[i],
            p[i],
            count_include_pad,
            ones=divisor is not None,
        )
        for i in range(nd)
    ]
    error = 0.0 if divisor is not None else U
    scale = 1.0 / float(divisor) if divisor is not None else 1.0
    return _separable_average_op(an, node, mats, math.prod(k) + 1, error, scale, fn)


def _separable_average_op(
    an: Analysis, node: fx.Node, mats: list, nops: int, error: float, scale: float, fn: Callable
) -> _Op:
    """Averaging ``I_C (x) B_h (x) B_w``: a pending certified row whose task brackets
    ``scale * prod ||B_i||`` (each ``B_i`` with entrywise rounding ``error``)."""
    op = an.unary(
        node,
        linear=True,
        nops=nops,
        lin=lambda x, *a, **kw: fn(x),
        absf=lambda x, *a, **kw: fn(x),
    )
    name, typ = an.label(node)
    row = an.row(
        node,
        name,
        typ,
        None,
        math.inf,
        "certified",
        "exact: ||B_h|| ||B_w|| (separable averaging), rigorous bracket",
        linear=True,
    )
    op.row = row

    def task() -> None:
        start = time.perf_counter()
        pairs = [_matrix_bracket(m, error) for m in mats]
        row.lower, row.upper = _product_bracket(pairs, scale)
        row.elapsed_s = time.perf_counter() - start

    op.task = task
    return op


def adaptive_op(an: Analysis, node: fx.Node, kind: str, fn: Callable | None) -> _Op:
    in_shape, out_shape = an.in_shape(node), an.out_shape(node)
    nd = 1 if len(in_shape) == 2 else 2
    sizes = [(in_shape[-nd + i], out_shape[-nd + i]) for i in range(nd)]
    if kind == "max":
        m = max_pool_lipschitz([_adaptive_taps(n, o) for n, o in sizes], [n for n, _ in sizes])
        return _max_pool_row_op(an, node, m)
    mats = [adaptive_avg_axis_matrix(n, o) for n, o in sizes]
    window = math.prod(int((m > 0).sum(1).max()) for m in mats)
    return _separable_average_op(an, node, mats, window + 1, U, 1.0, fn)


def max_pool_op(an: Analysis, node: fx.Node, k: Any, s: Any, p: Any, d: Any) -> _Op:
    in_shape, out_shape = an.in_shape(node), an.out_shape(node)
    nd = 1 if len(in_shape) == 2 else 2
    k, s = _tuple(k, nd), _tuple(s if s not in (None, []) else k, nd)
    p, d = _tuple(p, nd), _tuple(d, nd)
    taps = [
        _axis_taps(in_shape[-nd + i], out_shape[-nd + i], k[i], s[i], p[i], d[i]) for i in range(nd)
    ]
    m = max_pool_lipschitz(taps, [in_shape[-nd + i] for i in range(nd)])
    return _max_pool_row_op(an, node, m)


def _max_pool_row_op(an: Analysis, node: fx.Node, m: int) -> _Op:
    """A max-pooling node whose L2 Lipschitz constant is ``sqrt(m)``, ``m`` the largest
    number of windows one pixel belongs to (rounded outwards)."""
    op = an.unary(node, linear=False)
    name, typ = an.label(node)
    op.row = an.row(
        node,
        name,
        typ,
        _down(math.sqrt(m)),
        _up(math.sqrt(m)),
        "exact",
        f"sqrt(max windows per pixel) = sqrt({m})",
        linear=False,
    )
    return op


def avg_pool_module(an: Analysis, node: fx.Node, mod: nn.Module) -> _Op:
    """``AvgPool1d`` / ``AvgPool2d``."""
    return avg_pool_op(
        an,
        node,
        mod.kernel_size,
        mod.stride,
        mod.padding,
        mod.ceil_mode,
        mod.count_include_pad,
        getattr(mod, "divisor_override", None),
        lambda x: mod(x),
    )


def max_pool_module(an: Analysis, node: fx.Node, mod: nn.Module) -> _Op:
    """``MaxPool1d`` / ``MaxPool2d``."""
    return max_pool_op(an, node, mod.kernel_size, mod.stride, mod.padding, mod.dilation)


def adaptive_avg_module(an: Analysis, node: fx.Node, mod: nn.Module) -> _Op:
    """``AdaptiveAvgPool1d`` / ``AdaptiveAvgPool2d``."""
    return adaptive_op(an, node, "avg", lambda x: mod(x))


def adaptive_max_module(an: Analysis, node: fx.Node, mod: nn.Module) -> _Op:
    """``AdaptiveMaxPool1d`` / ``AdaptiveMaxPool2d``."""
    return adaptive_op(an, node, "max", None)


def functional_avg_pool(an: Analysis, node: fx.Node, name: str) -> _Op:
    """``avg_pool1d`` / ``avg_pool2d``."""
    b = _bind(
        node,
        (
            "input",
            "kernel_size",
            "stride",
            "padding",
            "ceil_mode",
            "count_include_pad",
            "divisor_override",
        ),
        {
            "stride": None,
            "padding": 0,
            "ceil_mode": False,
            "count_include_pad": True,
            "divisor_override": None,
        },
    )
    fn = node.target
    extra = [an.const(v) for v in node.args[1:]]
    kw = {k: an.const(v) for k, v in node.kwargs.items()}
    return avg_pool_op(
        an,
        node,
        an.const(b["kernel_size"]),
        an.const(b["stride"]),
        an.const(b["padding"]),
        an.const(b["ceil_mode"]),
        an.const(b["count_include_pad"]),
        an.const(b["divisor_override"]),
        lambda x: fn(x, *extra, **kw),
    )


def functional_max_pool(an: Analysis, node: fx.Node, name: str) -> _Op:
    """``max_pool1d`` / ``max_pool2d`` (with or without indices)."""
    b = _bind(
        node,
        ("input", "kernel_size", "stride", "padding", "dilation"),
        {"stride": None, "padding": 0, "dilation": 1},
    )
    return max_pool_op(
        an,
        node,
        an.const(b["kernel_size"]),
        an.const(b["stride"]),
        an.const(b["padding"]),
        an.const(b["dilation"]),
    )


def functional_adaptive_avg(an: Analysis, node: fx.Node, name: str) -> _Op:
    """``adaptive_avg_pool1d`` / ``adaptive_avg_pool2d``."""
    fn = node.target
    extra = [an.const(v) for v in node.args[1:]]
    return adaptive_op(an, node, "avg", lambda x: fn(x, *extra))


def functional_adaptive_max(an: Analysis, node: fx.Node, name: str) -> _Op:
    """``adaptive_max_pool1d`` / ``adaptive_max_pool2d``."""
    return adaptive_op(an, node, "max", None)
