"""Lipschitz rules of elementwise activations: rigorous brackets of ``sup |f'|`` for the
smooth ones (GELU, SiLU, tanh-GELU), the tables of activation modules and functions, and the
analyser's activation rows."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..rigorous.rounding import LIBM_ULPS
from ._analysis import Analysis
from ._errors import AuditError
from ._graph import _bind, _Op
from ._outward import _down, _up


def gelu_lipschitz() -> tuple[float, float]:
    """Rigorous bracket of the Lipschitz constant of the exact GELU ``x Phi(x)``.

    ``f' = Phi + x phi``, ``f'' = phi (2 - x^2)``: ``f'`` increases on ``[-sqrt 2, sqrt 2]`` and
    decreases outside, with limits 0 and 1, and ``f'(-x) = 1 - f'(x)``. So
    ``sup |f'| = f'(sqrt 2) = (1 + erf 1)/2 + 1/(e sqrt(pi))`` (Hendrycks & Gimpel 2016 define
    GELU; the derivative is elementary). The float64 evaluation (``erf``, ``exp``, ``sqrt``
    within :data:`~specbound.rigorous.rounding.LIBM_ULPS` ulps each, and 4 arithmetic
    operations) is rounded outwards.
    """
    value = (1.0 + math.erf(1.0)) / 2.0 + math.exp(-1.0) / math.sqrt(math.pi)
    ops = 3 * LIBM_ULPS + 6
    return _down(value, ops), _up(value, ops)


def _silu_d1(x: np.ndarray) -> np.ndarray:
    s = 1.0 / (1.0 + np.exp(-x))
    return s * (1.0 + x * (1.0 - s))


def _silu_d2_bound(xmax: np.ndarray) -> np.ndarray:
    # f'' = s(1-s)(2 + x(1-2s)), |s(1-s)| <= 1/4, |1-2s| <= 1
    return 0.25 * (2.0 + xmax)


_GT_C = math.sqrt(2.0 / math.pi)
_GT_K = 0.044715


def _gelu_tanh_d1(x: np.ndarray) -> np.ndarray:
    u = _GT_C * (x + _GT_K * x**3)
    t = np.tanh(u)
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _GT_C * (1.0 + 3.0 * _GT_K * x * x)


def _gelu_tanh_d2_bound(xmax: np.ndarray) -> np.ndarray:
    # f'' = sech^2(u) u' + x/2 (-2 tanh(u) sech^2(u) u'^2 + sech^2(u) u''), sech^2 <= 1, |tanh| <= 1
    du = _GT_C * (1.0 + 3.0 * _GT_K * xmax**2)
    ddu = 6.0 * _GT_C * _GT_K * xmax
    return du + 0.5 * xmax * (2.0 * du * du + ddu)


def smooth_activation_bracket(
    d1: Callable[[np.ndarray], np.ndarray],
    d2_bound: Callable[[np.ndarray], np.ndarray],
    radius: float,
    tail_bound: float,
    cells: int = 400_000,
) -> tuple[float, float]:
    """Rigorous bracket of ``sup_x |f'(x)|`` for a smooth activation.

    On ``[-radius, radius]`` cut into ``cells`` cells of width ``h``, ``|f'(x)| <= |f'(c)| +
    (h/2) B`` on the cell of centre ``c`` where ``B >= sup |f''|`` there (``d2_bound`` evaluated
    at the cell's largest ``|x|``: the bounds used are increasing in ``|x|``); outside, the
    caller's ``tail_bound``. The lower end is ``max |f'(c)|`` (an attained slope). The float64
    evaluation of ``f'`` (a few dozen operations, relative error far below ``1e-13`` for these
    functions) is covered by an absolute ``1e-12``.
    """
    h = 2.0 * radius / cells
    centres = -radius + h * (np.arange(cells) + 0.5)
    slopes = np.abs(d1(centres))
    xmax = np.abs(centres) + h / 2
    upper = float(np.max(slopes + (h / 2) * d2_bound(xmax)))
    slack = 1e-12
    return max(0.0, float(slopes.max()) - slack), _up(max(upper, tail_bound) + slack, 2)


def _silu_bracket() -> tuple[float, float]:
    # |x| > 20: f' = s(1 + x(1 - s)) in (-21 e^-20, 1 + 20 e^-20)
    return smooth_activation_bracket(_silu_d1, _silu_d2_bound, 20.0, 1.0 + 21.0 * math.exp(-20))


def _gelu_tanh_bracket() -> tuple[float, float]:
    # |x| > 8: |u| >= c (8 + k 8^3) > 24, sech^2(u) <= 4 e^{-2|u|}, so
    # |f'| <= 1 + |x| u'(x) 2 e^{-2|u|}, decreasing for |x| >= 8 and < 1e-18 at 8
    return smooth_activation_bracket(_gelu_tanh_d1, _gelu_tanh_d2_bound, 8.0, 1.0 + 1e-18)


_SELU = (1.0507009873554804934193349852946, 1.6732632423543772848170429916717)


def _module_activation(mod: nn.Module) -> tuple[float, float, str] | None:
    """``(lower, upper, method)`` for an activation module, or None."""
    if isinstance(
        mod,
        (
            nn.ReLU,
            nn.ReLU6,
            nn.Tanh,
            nn.Hardtanh,
            nn.Softsign,
            nn.LogSigmoid,
            nn.Tanhshrink,
            nn.Softshrink,
            nn.Softplus,
        ),
    ):
        return 1.0, 1.0, "sup |f'| = 1"
    if isinstance(mod, nn.LeakyReLU):
        v = max(1.0, abs(float(mod.negative_slope)))
        return v, v, "max(1, |negative_slope|)"
    if isinstance(mod, nn.PReLU):
        v = max(1.0, float(mod.weight.detach().abs().max()))
        return v, v, "max(1, max |a|)"
    if isinstance(mod, nn.ELU):
        v = max(1.0, abs(float(mod.alpha)))
        return v, v, "max(1, |alpha|)"
    if isinstance(mod, nn.CELU):
        if float(mod.alpha) <= 0:
            return None
        return 1.0, 1.0, "sup |f'| = 1 (alpha > 0)"
    if isinstance(mod, nn.SELU):
        return _down(_SELU[0] * _SELU[1], 2), _up(_SELU[0] * _SELU[1], 2), "scale * alpha"
    if isinstance(mod, nn.Sigmoid):
        return 0.25, 0.25, "sup sigma' = 1/4"
    if isinstance(mod, nn.Hardsigmoid):
        return _down(1 / 6), _up(1 / 6), "slope 1/6"
    if isinstance(mod, nn.Hardswish):
        return 1.5, 1.5, "sup |(2x + 3)/6| on [-3, 3] = 3/2"
    if isinstance(mod, nn.GELU):
        return _gelu(mod.approximate)
    if isinstance(mod, nn.SiLU):
        lo, hi = _silu_bracket()
        return lo, hi, "sup |f'| on a grid + cell-wise |f''| bound"
    return None


def _gelu(approximate: str) -> tuple[float, float, str]:
    if approximate == "tanh":
        lo, hi = _gelu_tanh_bracket()
        return lo, hi, "sup |f'| on a grid + cell-wise |f''| bound"
    lo, hi = gelu_lipschitz()
    return lo, hi, "(1 + erf 1)/2 + 1/(e sqrt pi) (closed form)"


def _function_activation(name: str, node: fx.Node, an: Analysis) -> tuple | None:
    if name in (
        "relu",
        "relu6",
        "tanh",
        "hardtanh",
        "softsign",
        "logsigmoid",
        "log_sigmoid",
        "tanhshrink",
        "softshrink",
        "softplus",
        "clamp",
        "clip",
        "abs",
        "clamp_min",
        "clamp_max",
        "threshold_relu",
    ):
        return 1.0, 1.0, "sup |f'| = 1"
    if name == "leaky_relu":
        b = _bind(node, ("input", "negative_slope"), {"negative_slope": 0.01})
        v = max(1.0, abs(float(an.const(b["negative_slope"]))))
        return v, v, "max(1, |negative_slope|)"
    if name == "elu":
        b = _bind(
            node,
            ("input", "alpha", "scale", "input_scale"),
            {"alpha": 1.0, "scale": 1.0, "input_scale": 1.0},
        )
        if node.target is F.elu:
            b = _bind(node, ("input", "alpha"), {"alpha": 1.0, "scale": 1.0, "input_scale": 1.0})
        alpha, scale, iscale = (float(an.const(b[k])) for k in ("alpha", "scale", "input_scale"))
        v = abs(scale) * max(1.0, abs(alpha * iscale))
        return _down(v, 3), _up(v, 3), "|scale| max(1, |alpha input_scale|)"
    if name == "celu":
        b = _bind(node, ("input", "alpha"), {"alpha": 1.0})
        if float(an.const(b["alpha"])) <= 0:
            return None
        return 1.0, 1.0, "sup |f'| = 1 (alpha > 0)"
    if name == "selu":
        return _down(_SELU[0] * _SELU[1], 2), _up(_SELU[0] * _SELU[1], 2), "scale * alpha"
    if name == "sigmoid":
        return 0.25, 0.25, "sup sigma' = 1/4"
    if name == "hardsigmoid":
        return _down(1 / 6), _up(1 / 6), "slope 1/6"
    if name == "hardswish":
        return 1.5, 1.5, "sup |(2x + 3)/6| on [-3, 3] = 3/2"
    if name == "gelu":
        b = _bind(node, ("input", "approximate"), {"approximate": "none"})
        return _gelu(str(an.const(b["approximate"])))
    if name == "silu":
        lo, hi = _silu_bracket()
        return lo, hi, "sup |f'| on a grid + cell-wise |f''| bound"
    if name == "prelu":
        b = _bind(node, ("input", "weight"))
        v = max(1.0, float(torch.as_tensor(an.const(b["weight"])).abs().max()))
        return v, v, "max(1, max |a|)"
    return None


# ---------------------------------------------------------------- rules


def activation(
    an: Analysis, node: fx.Node, lower: float, upper: float, method: str, linear: bool = False
) -> _Op:
    op = an.unary(node, linear=linear)
    name, typ = an.label(node)
    op.row = an.row(node, name, typ, lower, upper, "exact", method, linear=linear)
    return op


def act_op(an: Analysis, node: fx.Node, value: float, method: str) -> _Op:
    return activation(an, node, value, value, method)


ACTIVATION_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.Tanh,
    nn.Hardtanh,
    nn.Softsign,
    nn.LogSigmoid,
    nn.Tanhshrink,
    nn.Softshrink,
    nn.Softplus,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.Sigmoid,
    nn.Hardsigmoid,
    nn.Hardswish,
    nn.GELU,
    nn.SiLU,
)
"""The activation modules with a rule (:func:`_module_activation` gives their constant)."""


def activation_module(an: Analysis, node: fx.Node, mod: nn.Module) -> _Op:
    """An activation module of :data:`ACTIVATION_MODULES`."""
    act = _module_activation(mod)
    if act is None:  # e.g. CELU with alpha <= 0
        raise an.no_module_rule(node)
    return activation(an, node, *act)


def maxmin_module(an: Analysis, node: fx.Node, mod: nn.Module) -> _Op:
    """``specbound.layers.MaxMin``: it permutes each pair of entries."""
    return act_op(an, node, 1.0, "MaxMin: permutes each pair (Anil et al. 2019)")


def sorting_module(an: Analysis, node: fx.Node, mod: nn.Module) -> _Op:
    """A peer library's sorting activation (GroupSort, FullSort, ...)."""
    return act_op(an, node, 1.0, "sorts disjoint groups of entries (or |x|): 1-Lipschitz (AUD-MAX)")


def vector_norm_function(an: Analysis, node: fx.Node, name: str) -> _Op:
    """``torch.norm`` / ``linalg.vector_norm`` (L2 only): 1-Lipschitz over disjoint groups,
    ``| |x| - |y| | <= |x - y|`` (AUD-MAX)."""
    b = _bind(node, ("input", "p", "dim"), {"p": 2})
    p = an.const(b.get("p", b.get("ord", 2)))
    if p not in (2, 2.0, "fro", None):
        raise AuditError(f"{an.describe(node)}: only the L2 norm has a rule")
    return an.unary(node, linear=False, kind="norm")


def sort_function(an: Analysis, node: fx.Node, name: str) -> _Op:
    """``sort``, ``msort``, ``topk``: they permute (and select) entries, 1-Lipschitz (AUD-MAX)."""
    return an.unary(node, linear=False, kind="sort")
