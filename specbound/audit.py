"""``audit``: per-layer certificates and a whole-network L2 Lipschitz upper bound.

:func:`audit` traces a model with :mod:`torch.fx` (a TorchScript module through
:func:`torch.fx.experimental.proxy_tensor.make_fx` at the ATen level; a ``GraphModule``, such as
``torch.export.export(model, args).module()``, is used as given), runs one real forward pass on
a zero input of the given shape to learn every tensor's shape, bounds every operator at the
input size it really sees, and composes the bounds over the graph. The model is audited in eval
mode (its train/eval flags are restored afterwards).

What the numbers mean
---------------------
Every bound is for the real-number function the network computes with its parameters exactly
as stored (float32 weights are exactly representable in float64); the rounding of the
network's own float32 forward pass is not part of it. Every per-layer number is rigorous,
including the rounding of its own computation (:func:`specbound.certify`; elementary constants
are rounded outwards with :func:`specbound.rigorous.rounding.up` / ``down``).

Rules (``L(v)`` bounds ``||v(x) - v(y)|| <= L(v) ||x - y||`` for the network input ``x, y``)
-------------------------------------------------------------------------------------------
=============================  ==================================================================
node                           rule
=============================  ==================================================================
input / constant               1 / 0 (a node that does not depend on the input, or holds only
                               shape metadata such as ``x.size()``, is constant)
one tensor operand ``f(u)``    ``Lip(f) * L(u)`` (composition of Lipschitz maps)
``u + v``, ``u - v``           ``L(u) + L(v)`` (triangle inequality); ``alpha`` scales a term
``cat``/``stack``              ``sqrt(sum L_i^2)``: ``||[A x; B x]||^2 = ||A x||^2 + ||B x||^2
                               <= (||A||^2 + ||B||^2) ||x||^2`` (same for differences of
                               nonlinear branches)
tuple output                   as a concatenation
=============================  ==================================================================

========================================  ==========================================================
operator                                  Lipschitz constant
========================================  ==========================================================
Conv1d/Conv2d, F.conv*, aten.convolution  :func:`specbound.certify` of the kernel at the true input
(+ specbound.layers constrained convs)    size, padding mode, pad, stride, dilation and groups
Conv/Linear directly followed by eval     folded: ``W' = diag(gamma / sqrt(var + eps)) W``, then
BatchNorm (sole user)                     certified (the fold's own rounding is added, see
                                          :func:`_fold_allowance`)
other eval BatchNorm1d/2d                 ``max_c |gamma_c| / sqrt(var_c + eps)`` (a diagonal map;
                                          **not** ``gamma / var``: gram.md Sec. 6 item 14)
Linear, F.linear, addmm, x @ W            ``||W||_2``, certified as a 1x1 conv on a 1x1 input
AvgPool1d/2d, AdaptiveAvgPool1d/2d        exact: the map is ``I_C (x) B_h (x) B_w`` with 1-D
                                          averaging matrices ``B`` (PyTorch's divisor rules,
                                          ``count_include_pad``, ``ceil_mode``,
                                          ``divisor_override``), so its norm is
                                          ``||B_h|| ||B_w||``, each bracketed rigorously
MaxPool1d/2d, AdaptiveMaxPool1d/2d        ``sqrt(m)``, ``m`` = the largest number of windows that
                                          contain one input pixel (:func:`max_pool_lipschitz`)
mean / sum over ``N`` entries             ``1/sqrt(N)`` / ``sqrt(N)``
padding (zero/constant, reflect,          ``sqrt`` of the largest number of copies of one pixel
replicate, circular)                      (exact), 1 for zero padding
ReLU, ReLU6, LeakyReLU, PReLU, ELU, CELU  ``max(1, |slope|)``, ``max(1, |alpha|)``; SELU
Tanh, Hardtanh, Softplus, Softsign,       ``scale * max(1, alpha)``; Sigmoid 1/4; Hardsigmoid 1/6;
LogSigmoid, Tanhshrink, Softshrink,       Hardswish 3/2; all others 1 (sup of ``|f'|``)
clamp, abs, MaxMin/GroupSort
GELU (exact)                              ``Phi(sqrt 2) + sqrt 2 phi(sqrt 2) = (1 + erf 1)/2 +
                                          1/(e sqrt(pi)) ~ 1.1289`` (computed rigorously: ``f'' =
                                          phi (2 - x^2)`` vanishes at ``+-sqrt 2`` only)
GELU (tanh), SiLU                         ``sup |f'|`` bracketed on a grid with a cell-wise bound on
                                          ``|f''|`` (:func:`smooth_activation_bracket`)
Flatten, view, reshape, permute,          1 (they permute or select entries); eval Dropout is the
getitem with slices, Dropout (eval),      identity
Identity, dtype casts
scalar ``* c``, ``/ c``, ``-x``           ``|c|``, ``1/|c|``, 1
SLLConv2d/SLLLinear (specbound.layers)    ``max(1, 2u^2 - 1)``, ``u >= ||T^{-1/2} C||`` certified
========================================  ==========================================================

An operator without a rule (an unknown activation, a product of two input-dependent tensors,
indexing with tensors, train-mode BatchNorm or Dropout) is an error naming the node; nothing is
assumed 1-Lipschitz.

Whole-network lower bound
-------------------------
The Lipschitz constant of a nonlinear network is not bracketed from below here. At a point
where the network is differentiable ``||J(x)|| <= Lip``, but a Jacobian power iteration there is
a floating-point estimate of a local slope (and at a ReLU kink autograd's chain-rule product
need not be a derivative at all), usually far below ``Lip``: it must never serve as the
reference value of ``Lip`` (the mistake of gram.md Sec. 6 item 14), and is not reported. When every
operator is affine, the network is ``x -> A x + b`` and its Lipschitz constant is ``||A||_2``;
then a witness ``v`` from a float64 power iteration gives the rigorous lower bound
``(||fl(A v)|| - gamma_N || |A| |v| ||) / ||v||`` (Higham, *Accuracy and Stability of Numerical
Algorithms*, 2nd ed., eq. 3.5 and Lemma 3.3: every float64 operator evaluation with ``n`` terms
per output entry errs by at most ``gamma_n`` times the same evaluation with absolute values;
``N`` sums those counts over the graph).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .certify import Certificate, certify
from .rigorous.bracket import bracket_matrices
from .rigorous.rounding import LIBM_ULPS, U, down, frobenius_upper, gamma, up
from .rigorous.routes import padding_operator_norm
from .spec import ConvSpec

FOLD_ULPS = 8
"""Relative rounding allowance (in units of ``u = 2^-53``) of a BatchNorm-folded kernel entry:
``s = gamma / sqrt(var + eps)`` takes three roundings and ``W s`` one more, so the exact entry is
within ``gamma_4 / (1 - gamma_4) < 5u`` of the computed one; 8 leaves a margin."""


class AuditError(ValueError):
    """The model cannot be audited: it cannot be traced, the forward pass fails at the given
    input shape, or an operator has no Lipschitz rule."""


# ============================================================================ results
@dataclass
class LayerBound:
    """The bound of one operator of the traced graph.

    Attributes
    ----------
    name : str
        Module path (``layer1.0.conv1``), ``a+b`` for a folded conv + BatchNorm, or the graph
        node's name for a functional operator.
    type : str
        Module class or function name.
    input_shape, output_shape : tuple of int
        Without the batch dimension, as traced.
    lower, upper : float or None, float
        ``lower <= Lip <= upper`` (rigorous); ``lower`` is None where no lower bound is given.
    kind : {"certified", "exact", "bound"}
        ``certified``: a :func:`specbound.certify` bracket (or a rigorous bracket of a small
        matrix); ``exact``: a closed form rounded outwards; ``bound``: an upper bound only.
    """

    name: str
    type: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    lower: float | None
    upper: float
    kind: str
    upper_method: str
    lower_method: str
    elapsed_s: float = 0.0
    converged: bool = True
    linear: bool = True
    notes: list[str] = field(default_factory=list)
    certificate: Certificate | None = field(default=None, repr=False)

    @property
    def rel_gap(self) -> float | None:
        if self.lower is None:
            return None
        return 0.0 if self.upper <= 0 else max(0.0, (self.upper - self.lower) / self.upper)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "lower": self.lower,
            "upper": self.upper,
            "rel_gap": self.rel_gap,
            "kind": self.kind,
            "upper_method": self.upper_method,
            "lower_method": self.lower_method,
            "elapsed_s": self.elapsed_s,
            "converged": self.converged,
            "linear": self.linear,
            "notes": list(self.notes),
            "certificate": None if self.certificate is None else self.certificate.to_dict(),
        }


@dataclass
class AuditReport:
    """Result of :func:`audit`.

    Attributes
    ----------
    upper : float
        Rigorous upper bound on the network's L2 Lipschitz constant, composed over the graph.
    lower : float or None
        Rigorous lower bound, given only for an affine network (``lower_note`` says why not).
    layers : list of LayerBound
        One row per operator with a Lipschitz factor, in graph order.
    composition : dict
        Counts of the composition nodes: ``sums`` (residual additions), ``concatenations``.
    """

    model: str
    input_shape: tuple[int, ...]
    upper: float
    lower: float | None
    lower_method: str
    lower_note: str
    linear: bool
    layers: list[LayerBound]
    composition: dict[str, int]
    rtol: float
    device: str
    elapsed_s: float
    frontend: str
    notes: list[str] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        """True when every certified layer reached ``rtol``."""
        return all(layer.converged for layer in self.layers)

    def __float__(self) -> float:
        return float(self.upper)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "upper": self.upper,
            "lower": self.lower,
            "lower_method": self.lower_method,
            "lower_note": self.lower_note,
            "linear": self.linear,
            "converged": self.converged,
            "rtol": self.rtol,
            "device": self.device,
            "elapsed_s": self.elapsed_s,
            "frontend": self.frontend,
            "composition": dict(self.composition),
            "layers": [layer.to_dict() for layer in self.layers],
            "notes": list(self.notes),
        }

    def to_json(self, **kwargs: Any) -> str:
        """``json.dumps(self.to_dict())`` (``kwargs`` go to :func:`json.dumps`)."""
        kwargs.setdefault("indent", 2)
        return json.dumps(self.to_dict(), **kwargs)

    def to_markdown(self) -> str:
        """A Markdown summary and per-layer table (:func:`report_markdown`)."""
        return report_markdown(self.to_dict())

    def __str__(self) -> str:
        return self.to_markdown()


def report_markdown(report: dict[str, Any]) -> str:
    """Markdown for an :meth:`AuditReport.to_dict` result (also what ``specbound audit``
    prints)."""
    shape = "x".join(map(str, report["input_shape"]))
    layers = report["layers"]
    out = [f"# specbound audit: {report['model']}, input {shape}", ""]
    out.append(
        f"**L2 Lipschitz upper bound: {report['upper']:.6g}** (guaranteed; composed over "
        "the traced graph)"
    )
    out.append("")
    if report["lower"] is not None:
        out.append(f"Lower bound: {report['lower']:.6g} ({report['lower_method']})")
    else:
        out.append(f"Lower bound: none — {report['lower_note']}")
    n_cert = sum(row["kind"] == "certified" for row in layers)
    out += [
        "",
        f"rtol {report['rtol']:g} · device {report['device']} · {len(layers)} layers "
        f"({n_cert} certified) · {report['elapsed_s']:.2f} s · "
        + ("all converged" if report["converged"] else "**some layers did not converge**"),
        "",
        "| # | layer | type | input | lower | upper | method | time (s) | converged |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, row in enumerate(layers, 1):
        low = "—" if row["lower"] is None else f"{row['lower']:.6g}"
        size = "x".join(map(str, row["input_shape"]))
        method = row["upper_method"].replace("|", "\\|")
        out.append(
            f"| {i} | `{row['name']}` | {row['type']} | {size} | {low} | {row['upper']:.6g} | "
            f"{method} | {row['elapsed_s']:.3f} | {'yes' if row['converged'] else 'NO'} |"
        )
    comp = report["composition"]
    out += [
        "",
        f"Composition: sums {comp.get('sums', 0)} (bound: sum of the branch bounds), "
        f"concatenations {comp.get('concatenations', 0)} (bound: root-sum-square of the "
        "branch bounds). Traced with " + report["frontend"] + ".",
    ]
    if report["notes"]:
        out += [""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(out) + "\n"


# ============================================================================ elementary rules
def _up(x: float, ops: int = 1) -> float:
    return up(float(x), ops)


def _down(x: float, ops: int = 1) -> float:
    return down(float(x), ops)


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


def _fold_allowance(kernel: np.ndarray, pad_norm: float) -> float:
    """Upper bound on ``||A_E||_2`` for the error ``E = K_exact - K_computed`` of a folded
    kernel, ``|E| <= FOLD_ULPS u |K|`` entrywise: the layer is ``sum_taps E_tap S_tap P`` with
    ``P`` the padding operator and ``S_tap`` a (strided) selection, so ``||A_E|| <= ||P||
    sum_tap ||E_tap||_F``."""
    k = torch.from_numpy(kernel.reshape(kernel.shape[0], kernel.shape[1], -1)).permute(2, 0, 1)
    per_tap = frobenius_upper(k)
    total = float(per_tap.sum()) * (1 + per_tap.numel() * U)
    return _up(total * FOLD_ULPS * U * pad_norm, 3)


# ============================================================================ tracing
def _leaf_types() -> tuple[type, ...]:
    from .layers import ConstrainedConv2d, ConvNorm2d, MaxMin, RescaledLinear, SLLConv2d, SLLLinear

    return (ConstrainedConv2d, ConvNorm2d, MaxMin, RescaledLinear, SLLConv2d, SLLLinear)


class _Tracer(fx.Tracer):
    """torch.fx tracer that keeps specbound's layers as leaves and remembers which module's
    forward was being traced when tracing failed."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.failed_in: list[str] | None = None
        self.leaves = _leaf_types()

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, self.leaves) or super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Callable, args: tuple, kwargs: dict) -> Any:
        try:
            name = self.path_of_module(m)
        except NameError:
            name = type(m).__name__
        self.stack.append(f"{name} ({type(m).__name__})")
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = list(self.stack)
            raise
        finally:
            self.stack.pop()


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``model`` with :mod:`torch.fx` (specbound's layers kept as leaves).

    Raises :class:`AuditError` naming the innermost module whose forward could not be traced.
    """
    tracer = _Tracer()
    try:
        graph = tracer.trace(model)
    except Exception as err:
        where = (
            f"in the forward of module '{tracer.failed_in[-1]}'"
            if tracer.failed_in
            else f"in the forward of the top-level {type(model).__name__}"
        )
        raise AuditError(
            f"cannot trace {type(model).__name__} with torch.fx: {where}: "
            f"{type(err).__name__}: {_first_line(err)}. torch.fx cannot follow Python control "
            "flow on tensor values or non-torch calls on tensors; rewrite that forward, or "
            "export the model with torch.jit.script/trace"
        ) from None
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def _trace_script(module: torch.jit.ScriptModule, example: torch.Tensor) -> fx.GraphModule:
    """ATen-level graph of a TorchScript module (functionalised, real-tensor tracing: a branch
    on a tensor value fails instead of being specialised)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    try:
        from torch.func import functionalize

        gm = make_fx(functionalize(lambda x: module(x)), tracing_mode="real")(example)
    except Exception as err:
        lines = str(err).splitlines()
        here = [lines[i - 1].strip() for i, line in enumerate(lines) if "<--- HERE" in line and i]
        where = (
            (f"at `{here[-1]}` (a branch on a tensor value, or an operation that cannot be traced)")
            if here
            else f"{type(err).__name__}: {_first_line(err)}"
        )
        raise AuditError(
            f"cannot trace the TorchScript module {module.original_name!r} at input shape "
            f"{tuple(example.shape[1:])}: it fails {where}"
        ) from None
    return gm


# ============================================================================ shapes
@dataclass
class _Info:
    dependent: bool
    shape: Any
    value: Any = None
    floating: bool = True


_SHAPE_OPS = {"size", "dim", "numel", "getattr", "len", "sym_size", "sym_numel", "type_as_shape"}


def _shape_of(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return tuple(out.shape)
    if isinstance(out, (tuple, list)):
        return tuple(_shape_of(o) for o in out)
    return None


def _holds_tensor(out: Any) -> bool:
    if isinstance(out, torch.Tensor):
        return True
    if isinstance(out, (tuple, list)):
        return any(_holds_tensor(o) for o in out)
    return False


class _Recorder(fx.Interpreter):
    """Runs the graph once, recording each node's shape, whether it depends on the input and,
    for constant nodes, the value."""

    def __init__(self, gm: fx.GraphModule, describe: Callable[[fx.Node], str]) -> None:
        super().__init__(gm)
        self.info: dict[fx.Node, _Info] = {}
        self.describe = describe

    def run_node(self, n: fx.Node) -> Any:
        try:
            out = super().run_node(n)
        except AuditError:
            raise
        except Exception as err:
            raise AuditError(
                f"the forward pass fails at {self.describe(n)}: {type(err).__name__}: "
                f"{_first_line(err)}"
            ) from None
        if n.op == "placeholder":  # the first input is the audited one; others keep defaults
            dep = not any(i.dependent for m, i in self.info.items() if m.op == "placeholder")
        else:
            dep = any(self.info[a].dependent for a in n.all_input_nodes)
        if dep and _op_name(n)[0] in _SHAPE_OPS and not _holds_tensor(out):
            dep = False  # shape metadata does not depend on the input's values
        floating = not isinstance(out, torch.Tensor) or out.is_floating_point()
        self.info[n] = _Info(dep, _shape_of(out), None if dep else out, floating)
        return out


# ============================================================================ graph analysis
def _op_name(node: fx.Node) -> tuple[str, bool]:
    """Canonical operator name and whether it is in place, for call_function/call_method."""
    if node.op == "call_method":
        name = str(node.target)
    elif node.op == "call_function":
        t = node.target
        if isinstance(t, torch._ops.OpOverload):
            name = t._schema.name.split("::")[-1]
        elif isinstance(t, torch._ops.OpOverloadPacket):
            name = t._qualified_op_name.split("::")[-1]
        else:
            name = getattr(t, "__name__", repr(t))
    else:
        return node.op, False
    inplace_ops = {"iadd": "add", "isub": "sub", "imul": "mul", "itruediv": "truediv"}
    if name in inplace_ops:
        return inplace_ops[name], True
    if name.endswith("_") and not name.endswith("__") and len(name) > 1:
        return name[:-1], True
    return name, False


def _bind(
    node: fx.Node, names: Sequence[str], defaults: dict[str, Any] | None = None, first: int = 0
) -> dict[str, Any]:
    out = dict(defaults or {})
    for key, value in zip(names, node.args[first:], strict=False):
        out[key] = value
    out.update(node.kwargs)
    return out


@dataclass
class _Op:
    """One input-dependent node: how its bound composes, its row, and its float64 linear and
    absolute-value evaluations (for the lower bound of affine networks)."""

    node: fx.Node
    compose: str  # "unary" | "sum" | "rss" | "input"
    inputs: list[tuple[fx.Node, float]]
    linear: bool
    nops: int = 0
    row: LayerBound | None = None
    task: Callable[[], None] | None = None
    lin: Callable[..., Any] | None = None
    absf: Callable[..., Any] | None = None
    # for BatchNorm folding
    kind: str = ""
    weight: torch.Tensor | None = None
    conv: dict[str, Any] | None = None
    scale: torch.Tensor | None = None
    folded_into: _Op | None = None
    fold: _Op | None = None


class _Analyser:
    def __init__(
        self,
        gm: fx.GraphModule,
        rec: _Recorder,
        frontend: str,
        rtol: float,
        device: Any,
        max_seconds: float | None,
        param_names: dict[int, str] | None = None,
        script: torch.jit.ScriptModule | None = None,
    ) -> None:
        self.gm, self.rec, self.frontend = gm, rec, frontend
        self.rtol, self.device, self.max_seconds = rtol, device, max_seconds
        self.param_names = param_names or {}
        self.script = script
        self.modules = dict(gm.named_modules())
        self.ops: dict[fx.Node, _Op] = {}
        self.order = {n: i for i, n in enumerate(gm.graph.nodes)}

    # ---------------------------------------------------------------- helpers
    def describe(self, node: fx.Node) -> str:
        if node.op == "call_module":
            mod = self.modules.get(str(node.target))
            return f"module '{node.target}' ({_type_name(mod)})"
        if node.op in ("call_function", "call_method"):
            return f"node '{node.name}' ({_op_name(node)[0]})"
        return f"node '{node.name}'"

    def info(self, node: Any) -> _Info | None:
        return self.rec.info.get(node) if isinstance(node, fx.Node) else None

    def dep(self, x: Any) -> bool:
        i = self.info(x)
        return i is not None and i.dependent

    def const(self, x: Any) -> Any:
        """The value of a constant argument (a node's recorded value, or a literal)."""
        if isinstance(x, fx.Node):
            i = self.rec.info[x]
            if i.dependent:
                raise AuditError(f"{self.describe(x)} must not depend on the input here")
            return i.value
        if isinstance(x, (list, tuple)):
            return type(x)(self.const(v) for v in x)
        return x

    def in_shape(self, node: fx.Node) -> tuple[int, ...]:
        for a in node.all_input_nodes:
            if self.dep(a):
                s = self.rec.info[a].shape
                return tuple(s[1:]) if isinstance(s, tuple) and s and isinstance(s[0], int) else ()
        return ()

    def out_shape(self, node: fx.Node) -> tuple[int, ...]:
        s = self.rec.info[node].shape
        if isinstance(s, tuple) and s and isinstance(s[0], tuple):
            s = s[0]
        return tuple(s[1:]) if isinstance(s, tuple) and s else ()

    def label(self, node: fx.Node, weight: Any = None) -> tuple[str, str]:
        if node.op == "call_module":
            return str(node.target), _type_name(self.modules[str(node.target)])
        if isinstance(weight, fx.Node) and weight.op == "get_attr":
            value = self.rec.info[weight].value
            name = self.param_names.get(id(value)) or str(weight.target)
            base = name.rsplit(".", 1)[0] if "." in name else name
            typ = _op_name(node)[0]
            if self.script is not None:
                sub: Any = self.script
                for part in base.split("."):
                    sub = getattr(sub, part, None)
                typ = getattr(sub, "original_name", typ)
            return base, typ
        return node.name, _op_name(node)[0]

    def dep_inputs(self, node: fx.Node) -> list[fx.Node]:
        return [a for a in node.all_input_nodes if self.dep(a)]

    def unary(
        self,
        node: fx.Node,
        *,
        linear: bool,
        nops: int = 0,
        lin: Any = None,
        absf: Any = None,
        kind: str = "",
    ) -> _Op:
        deps = self.dep_inputs(node)
        if len(deps) != 1:
            raise AuditError(
                f"{self.describe(node)} takes {len(deps)} input-dependent tensors; its rule "
                "needs exactly one (a product of two input-dependent tensors is not globally "
                "Lipschitz)"
            )
        return _Op(node, "unary", [(deps[0], 1.0)], linear, nops, lin=lin, absf=absf, kind=kind)

    def row(
        self,
        node: fx.Node,
        name: str,
        typ: str,
        lower: float | None,
        upper: float,
        kind: str,
        method: str,
        lower_method: str = "",
        *,
        linear: bool,
        notes: list[str] | None = None,
    ) -> LayerBound:
        return LayerBound(
            name,
            typ,
            self.in_shape(node),
            self.out_shape(node),
            lower,
            upper,
            kind,
            method,
            lower_method or method,
            linear=linear,
            notes=list(notes or []),
        )

    def exact(
        self,
        node: fx.Node,
        value: float,
        method: str,
        *,
        linear: bool,
        ops: int = 2,
        name: str | None = None,
        typ: str | None = None,
        notes: list[str] | None = None,
    ) -> LayerBound:
        n, t = self.label(node)
        return self.row(
            node,
            name or n,
            typ or t,
            _down(value, ops),
            _up(value, ops),
            "exact",
            method,
            linear=linear,
            notes=notes,
        )

    # ---------------------------------------------------------------- main pass
    def analyse(self) -> None:
        graph = self.gm.graph
        output = next(n for n in graph.nodes if n.op == "output")
        live: set[fx.Node] = set()
        stack = [output]
        while stack:
            n = stack.pop()
            if n in live:
                continue
            live.add(n)
            stack.extend(n.all_input_nodes)
        for node in graph.nodes:
            if node.op in ("call_module", "call_function", "call_method") and any(
                self.dep(a) for a in node.all_input_nodes
            ):
                self.check_inplace(node)  # dead nodes too: a mutation has no users
            if node.op == "output" or node not in live or not self.dep(node):
                continue
            op = self.parse(node)
            self.ops[node] = op
        self.fold_batchnorm()

    def check_inplace(self, node: fx.Node) -> None:
        inplace = False
        if node.op == "call_module":
            inplace = bool(getattr(self.modules[str(node.target)], "inplace", False))
        elif node.op in ("call_function", "call_method"):
            inplace = _op_name(node)[1] or node.kwargs.get("inplace") is True
        if not inplace or not node.args or not isinstance(node.args[0], fx.Node):
            return
        target = node.args[0]
        later = [u for u in target.users if u is not node and self.order[u] > self.order[node]]
        if later:
            raise AuditError(
                f"{self.describe(node)} modifies its input in place, and that input is used "
                f"again later by {self.describe(later[0])}: the traced graph does not show "
                "the mutation; use the out-of-place operator"
            )

    def parse(self, node: fx.Node) -> _Op:
        if node.op == "placeholder":
            return _Op(node, "input", [], True)
        if node.op == "call_module":
            return self.parse_module(node, self.modules[str(node.target)])
        if node.op in ("call_function", "call_method"):
            return self.parse_function(node)
        raise AuditError(f"no Lipschitz rule for {self.describe(node)}")

    # ---------------------------------------------------------------- modules
    def parse_module(self, node: fx.Node, mod: nn.Module) -> _Op:
        from .layers import ConstrainedConv2d, MaxMin, RescaledLinear, SLLConv2d, SLLLinear
        from .layers.padding import pad2d

        if isinstance(mod, (nn.Conv1d, nn.Conv2d)) and not isinstance(
            mod, (nn.ConvTranspose1d, nn.ConvTranspose2d)
        ):
            if isinstance(mod.padding, str):
                pad: Any = mod.padding
            elif isinstance(mod, nn.Conv1d):
                pad = (0, mod.padding[0])
            else:
                pad = tuple(mod.padding)
            weight = mod.weight.detach()
            conv = _conv_geometry(
                weight, mod.padding_mode, pad, mod.stride, mod.dilation, mod.groups
            )

            def lin(x: torch.Tensor, w: torch.Tensor = weight) -> torch.Tensor:
                return mod._conv_forward(x, w.to(x), None)

            def absf(x: torch.Tensor, w: torch.Tensor = weight) -> torch.Tensor:
                return mod._conv_forward(x, w.to(x).abs(), None)

            return self.conv_op(node, weight, conv, lin, absf)
        if isinstance(mod, ConstrainedConv2d):
            weight = mod.weight.detach()
            top, bottom, left, right = mod.pads
            conv = _conv_geometry(
                weight,
                mod.padding_mode,
                (left, right, top, bottom),
                mod.stride,
                mod.dilation,
                mod.groups,
            )

            def c_lin(x: torch.Tensor, w: torch.Tensor = weight, a: bool = False) -> torch.Tensor:
                w = w.to(x).abs() if a else w.to(x)
                return F.conv2d(
                    pad2d(x, mod.pads, mod.padding_mode),
                    w,
                    None,
                    mod.stride,
                    0,
                    mod.dilation,
                    mod.groups,
                )

            return self.conv_op(node, weight, conv, c_lin, lambda x: c_lin(x, a=True))
        if isinstance(mod, (nn.Linear, RescaledLinear)):
            return self.linear_op(node, mod.weight.detach())
        if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
            if mod.training or mod.running_var is None:
                raise AuditError(
                    f"{self.describe(node)} normalises with batch statistics (training mode or "
                    "track_running_stats=False): not a fixed function of one input"
                )
            return self.bn_op(node, mod.weight, mod.running_var, mod.eps)
        if isinstance(mod, (SLLConv2d, SLLLinear)):
            return self.sll_op(node, mod)
        if isinstance(mod, MaxMin):
            return self.act_op(node, 1.0, "MaxMin: permutes each pair (Anil et al. 2019)")
        if isinstance(mod, (nn.Identity, nn.Flatten, nn.Unflatten)):
            return self.struct_op(node)
        if isinstance(
            mod, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.FeatureAlphaDropout)
        ):
            if mod.training:
                raise AuditError(f"{self.describe(node)} is in training mode (random)")
            return self.struct_op(node)
        act = _module_activation(mod)
        if act is not None:
            return self.activation(node, *act)
        if isinstance(mod, (nn.AvgPool1d, nn.AvgPool2d)):
            return self.avg_pool_op(
                node,
                mod.kernel_size,
                mod.stride,
                mod.padding,
                mod.ceil_mode,
                mod.count_include_pad,
                getattr(mod, "divisor_override", None),
                lambda x: mod(x),
            )
        if isinstance(mod, (nn.MaxPool1d, nn.MaxPool2d)):
            return self.max_pool_op(node, mod.kernel_size, mod.stride, mod.padding, mod.dilation)
        if isinstance(mod, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
            return self.adaptive_op(node, "avg", lambda x: mod(x))
        if isinstance(mod, (nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)):
            return self.adaptive_op(node, "max", None)
        pad_mode = _pad_module_mode(mod)
        if pad_mode is not None:
            value = float(getattr(mod, "value", 0.0))
            return self.pad_op(node, tuple(mod.padding), pad_mode, value)
        raise AuditError(
            f"no Lipschitz rule for {self.describe(node)}: supported modules are convolutions, "
            "linear layers, eval BatchNorm, pooling, padding, the listed activations, "
            "Flatten/Identity/Dropout and specbound.layers (see specbound.audit's docstring)"
        )

    # ---------------------------------------------------------------- functions
    def parse_function(self, node: fx.Node) -> _Op:
        name, _ = _op_name(node)
        if name in _STRUCT_FUNCS:
            if name == "getitem":
                return self.getitem_op(node)
            if name in ("to", "type", "float", "double", "half", "bfloat16", "_to_copy"):
                return self.struct_op(node, identity=True)
            return self.struct_op(node)
        if name in ("add", "sub", "rsub"):
            return self.sum_op(node, name)
        if name in ("cat", "concat", "concatenate", "stack"):
            return self.cat_op(node)
        if name in ("mul", "truediv", "div"):
            return self.scale_op(node, name)
        if name == "neg":
            return self.unary(node, linear=True, lin=lambda x: -x, absf=lambda x: x)
        if name in ("mean", "sum"):
            return self.reduce_op(node, name)
        if name in (
            "dropout",
            "feature_dropout",
            "alpha_dropout",
            "dropout1d",
            "dropout2d",
            "native_dropout",
        ):
            b = _bind(node, ("input", "p", "training"), {"training": name == "native_dropout"})
            if bool(self.const(b.get("training", b.get("train", False)))):
                raise AuditError(f"{self.describe(node)} is in training mode (random)")
            return self.struct_op(node, identity=True)
        if name in ("conv1d", "conv2d", "convolution", "_convolution"):
            return self.functional_conv(node, name)
        if name in ("linear", "addmm", "mm", "matmul"):
            return self.functional_linear(node, name)
        if name in ("batch_norm", "native_batch_norm", "_native_batch_norm_legit_no_training"):
            return self.functional_bn(node, name)
        if name in ("avg_pool1d", "avg_pool2d"):
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
            extra = [self.const(v) for v in node.args[1:]]
            kw = {k: self.const(v) for k, v in node.kwargs.items()}
            return self.avg_pool_op(
                node,
                self.const(b["kernel_size"]),
                self.const(b["stride"]),
                self.const(b["padding"]),
                self.const(b["ceil_mode"]),
                self.const(b["count_include_pad"]),
                self.const(b["divisor_override"]),
                lambda x: fn(x, *extra, **kw),
            )
        if name in (
            "max_pool1d",
            "max_pool2d",
            "max_pool1d_with_indices",
            "max_pool2d_with_indices",
        ):
            b = _bind(
                node,
                ("input", "kernel_size", "stride", "padding", "dilation"),
                {"stride": None, "padding": 0, "dilation": 1},
            )
            return self.max_pool_op(
                node,
                self.const(b["kernel_size"]),
                self.const(b["stride"]),
                self.const(b["padding"]),
                self.const(b["dilation"]),
            )
        if name in ("adaptive_avg_pool1d", "adaptive_avg_pool2d", "_adaptive_avg_pool2d"):
            fn = node.target
            extra = [self.const(v) for v in node.args[1:]]
            return self.adaptive_op(node, "avg", lambda x: fn(x, *extra))
        if name in ("adaptive_max_pool1d", "adaptive_max_pool2d"):
            return self.adaptive_op(node, "max", None)
        if name in (
            "pad",
            "constant_pad_nd",
            "reflection_pad1d",
            "reflection_pad2d",
            "replication_pad1d",
            "replication_pad2d",
            "_pad_circular",
        ):
            return self.functional_pad(node, name)
        act = _function_activation(name, node, self)
        if act is not None:
            return self.activation(node, *act)
        raise AuditError(
            f"no Lipschitz rule for {self.describe(node)}; an operator without a rule is never "
            "assumed 1-Lipschitz (see specbound.audit's docstring for the supported ones)"
        )

    # ---------------------------------------------------------------- rules
    def struct_op(self, node: fx.Node, identity: bool = False) -> _Op:
        if identity:
            return self.unary(
                node, linear=True, lin=lambda x, *a, **k: x, absf=lambda x, *a, **k: x
            )
        return self.unary(node, linear=True)

    def getitem_op(self, node: fx.Node) -> _Op:
        src, index = node.args[0], self.const(node.args[1])
        shape = self.rec.info[src].shape
        is_tensor = isinstance(shape, tuple) and (not shape or isinstance(shape[0], int))
        if is_tensor:
            items = index if isinstance(index, tuple) else (index,)
            ok = all(isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in items)
            if not ok:
                raise AuditError(
                    f"{self.describe(node)} indexes with {index!r}: only ints, slices, None and "
                    "... (which select entries, norm 1) are supported"
                )
        return self.unary(node, linear=True)

    def sum_op(self, node: fx.Node, name: str) -> _Op:
        b = _bind(node, ("input", "other", "alpha"), {"alpha": 1})
        alpha = float(self.const(b.get("alpha", 1)))
        x, y = b["input"], b["other"]
        signs = {"sub": (1.0, -alpha), "rsub": (-alpha, 1.0)}.get(name, (1.0, alpha))
        terms = [(v, s) for v, s in zip((x, y), signs, strict=True) if self.dep(v)]
        out = self.rec.info[node].shape
        for v, _ in terms:
            if self.rec.info[v].shape != out:
                raise AuditError(
                    f"{self.describe(node)} broadcasts {self.describe(v)} from shape "
                    f"{self.rec.info[v].shape} to {out}: repeated entries, no rule"
                )
        op = _Op(node, "sum", list(terms), True, nops=len(terms) + 1)
        op.kind = "sum"
        return op

    def cat_op(self, node: fx.Node) -> _Op:
        tensors = node.args[0] if node.args else node.kwargs.get("tensors")
        op = _Op(node, "rss", [(t, 1.0) for t in tensors if self.dep(t)], True)
        op.kind = "cat"
        return op

    def scale_op(self, node: fx.Node, name: str) -> _Op:
        x, y = node.args[0], node.args[1]
        if self.dep(x) and self.dep(y):
            raise AuditError(
                f"{self.describe(node)} multiplies or divides two input-dependent tensors: not "
                "globally Lipschitz, no rule"
            )
        if not self.dep(x):
            if name != "mul":
                raise AuditError(f"{self.describe(node)} divides by an input-dependent tensor")
            x, y = y, x
        c = self.const(y)
        if self.rec.info[x].shape != self.rec.info[node].shape:
            raise AuditError(
                f"{self.describe(node)} broadcasts the input-dependent operand from shape "
                f"{self.rec.info[x].shape} to {self.rec.info[node].shape}: no rule"
            )
        c_abs = (
            torch.as_tensor(c).detach().abs().double().cpu() if c is not None else torch.tensor(1.0)
        )
        if name == "mul":
            factor = float(c_abs.max()) if c_abs.numel() else 0.0
        else:
            if c_abs.numel() == 0 or float(c_abs.min()) == 0.0:
                raise AuditError(f"{self.describe(node)} divides by zero")
            factor = 1.0 / float(c_abs.min())
        cd = c.detach().double().cpu() if isinstance(c, torch.Tensor) else c
        ca = c.detach().double().cpu().abs() if isinstance(c, torch.Tensor) else abs(c)

        def lin(v: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
            return v * cd if name == "mul" else v / cd

        def absf(v: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
            return v * ca if name == "mul" else v / ca

        op = self.unary(node, linear=True, nops=1, lin=lin, absf=absf)
        what = "factor" if name == "mul" else "divisor"
        op.row = self.exact(node, factor, f"|constant| {what}", linear=True, ops=2)
        return op

    def reduce_op(self, node: fx.Node, name: str) -> _Op:
        b = _bind(node, ("input", "dim", "keepdim"), {"dim": None, "keepdim": False})
        shape = self.rec.info[b["input"]].shape
        dims = self.const(b["dim"])
        if dims is None or dims == []:
            dims = list(range(1, len(shape)))  # one sample (the batch has size 1)
        dims = [dims] if isinstance(dims, int) else list(dims)
        dims = [d % len(shape) for d in dims]
        if 0 in dims:
            raise AuditError(f"{self.describe(node)} reduces over the batch dimension")
        n = math.prod(shape[d] for d in dims)
        value = 1.0 / math.sqrt(n) if name == "mean" else math.sqrt(n)
        op = self.unary(node, linear=True, nops=n + 1)
        rule = "1/sqrt(N)" if name == "mean" else "sqrt(N)"
        op.row = self.exact(node, value, f"{name} over N={n} entries: {rule}", linear=True, ops=3)
        return op

    def activation(
        self, node: fx.Node, lower: float, upper: float, method: str, linear: bool = False
    ) -> _Op:
        op = self.unary(node, linear=linear)
        name, typ = self.label(node)
        op.row = self.row(node, name, typ, lower, upper, "exact", method, linear=linear)
        return op

    def act_op(self, node: fx.Node, value: float, method: str) -> _Op:
        return self.activation(node, value, value, method)

    def conv_op(
        self,
        node: fx.Node,
        weight: torch.Tensor,
        conv: dict[str, Any],
        lin: Callable,
        absf: Callable,
    ) -> _Op:
        nops = weight.shape[1] * math.prod(weight.shape[2:])  # (c_in / groups) kh kw
        op = self.unary(node, linear=True, nops=nops, lin=lin, absf=absf, kind="conv")
        op.weight, op.conv = weight, conv
        return op

    def linear_op(self, node: fx.Node, weight: torch.Tensor) -> _Op:
        w = weight.detach()
        op = self.unary(
            node,
            linear=True,
            nops=w.shape[1],
            lin=lambda x, *a, **k: F.linear(x, w.to(x)),
            absf=lambda x, *a, **k: F.linear(x, w.to(x).abs()),
            kind="linear",
        )
        op.weight = w
        return op

    def bn_op(self, node: fx.Node, weight: Any, running_var: Any, eps: float) -> _Op:
        var = torch.as_tensor(running_var).detach().double().cpu()
        if bool((var + eps <= 0).any()):
            raise AuditError(f"{self.describe(node)} has running_var + eps <= 0")
        g = (
            torch.ones_like(var)
            if weight is None
            else torch.as_tensor(weight).detach().double().cpu()
        )
        scale = g / torch.sqrt(var + float(eps))

        def lin(x: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
            return x * scale.to(x).view(1, -1, *([1] * (x.dim() - 2)))

        def absf(x: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
            return x * scale.to(x).abs().view(1, -1, *([1] * (x.dim() - 2)))

        op = self.unary(node, linear=True, nops=4, lin=lin, absf=absf, kind="bn")
        op.scale = scale
        return op

    def sll_op(self, node: fx.Node, mod: nn.Module) -> _Op:
        from .layers import SLLConv2d

        op = self.unary(node, linear=False)
        name, typ = self.label(node)
        row = self.row(
            node,
            name,
            typ,
            None,
            math.inf,
            "bound",
            "max(1, 2u^2-1), u certified",
            "none",
            linear=False,
        )
        op.row = row
        size = self.in_shape(node)

        def task() -> None:
            start = time.perf_counter()
            if isinstance(mod, SLLConv2d):
                cert = mod.certify(input_size=tuple(size[-2:]), rtol=self.rtol)
            else:
                cert = mod.certify(rtol=self.rtol)
            excess = _up(2.0 * _up(cert.upper * cert.upper, 1), 1) - 1.0
            row.upper = 1.0 if excess <= 1.0 else _up(excess, 1)
            row.certificate, row.converged = cert, cert.converged
            row.notes.append(
                f"u = ||T^-1/2 C|| in [{cert.lower:.6g}, {cert.upper:.6g}] "
                f"({cert.upper_method}); Araujo et al. 2023 Thm. 3: eigenvalues "
                "of the Jacobian in [1 - 2u^2, 1]"
            )
            row.elapsed_s = time.perf_counter() - start

        op.task = task
        return op

    def avg_pool_op(
        self,
        node: fx.Node,
        k: Any,
        s: Any,
        p: Any,
        ceil_mode: bool,
        count_include_pad: bool,
        divisor: Any,
        fn: Callable,
    ) -> _Op:
        in_shape, out_shape = self.in_shape(node), self.out_shape(node)
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
        op = self.unary(
            node,
            linear=True,
            nops=math.prod(k) + 1,
            lin=lambda x, *a, **kw: fn(x),
            absf=lambda x, *a, **kw: fn(x),
        )
        name, typ = self.label(node)
        row = self.row(
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
            pairs = [_matrix_bracket(m, 0.0 if divisor is not None else U) for m in mats]
            scale = 1.0 / float(divisor) if divisor is not None else 1.0
            row.lower, row.upper = _product_bracket(pairs, scale)
            row.elapsed_s = time.perf_counter() - start

        op.task = task
        return op

    def adaptive_op(self, node: fx.Node, kind: str, fn: Callable | None) -> _Op:
        in_shape, out_shape = self.in_shape(node), self.out_shape(node)
        nd = 1 if len(in_shape) == 2 else 2
        sizes = [(in_shape[-nd + i], out_shape[-nd + i]) for i in range(nd)]
        name, typ = self.label(node)
        if kind == "max":
            m = max_pool_lipschitz([_adaptive_taps(n, o) for n, o in sizes], [n for n, _ in sizes])
            op = self.unary(node, linear=False)
            op.row = self.row(
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
        mats = [adaptive_avg_axis_matrix(n, o) for n, o in sizes]
        window = math.prod(int((m > 0).sum(1).max()) for m in mats)
        op = self.unary(
            node,
            linear=True,
            nops=window + 1,
            lin=lambda x, *a, **kw: fn(x),
            absf=lambda x, *a, **kw: fn(x),
        )
        row = self.row(
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
            row.lower, row.upper = _product_bracket(_matrix_bracket(m, U) for m in mats)
            row.elapsed_s = time.perf_counter() - start

        op.task = task
        return op

    def max_pool_op(self, node: fx.Node, k: Any, s: Any, p: Any, d: Any) -> _Op:
        in_shape, out_shape = self.in_shape(node), self.out_shape(node)
        nd = 1 if len(in_shape) == 2 else 2
        k, s = _tuple(k, nd), _tuple(s if s not in (None, []) else k, nd)
        p, d = _tuple(p, nd), _tuple(d, nd)
        taps = [
            _axis_taps(in_shape[-nd + i], out_shape[-nd + i], k[i], s[i], p[i], d[i])
            for i in range(nd)
        ]
        m = max_pool_lipschitz(taps, [in_shape[-nd + i] for i in range(nd)])
        op = self.unary(node, linear=False)
        name, typ = self.label(node)
        op.row = self.row(
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

    def pad_op(self, node: fx.Node, pads: tuple[int, ...], mode: str, value: float) -> _Op:
        in_shape = self.in_shape(node)
        if len(pads) % 2 or len(pads) // 2 > len(in_shape):
            raise AuditError(f"{self.describe(node)}: cannot read pads {pads}")
        if min(pads) < 0:
            raise AuditError(f"{self.describe(node)}: negative pads (cropping) are not supported")
        norm = 1.0
        if mode != "zeros":
            for j in range(len(pads) // 2):
                n = in_shape[-1 - j]
                norm *= padding_operator_norm(n, pads[2 * j], pads[2 * j + 1], mode)
        torch_mode = {"zeros": "constant"}.get(mode, mode)

        def lin(x: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
            return (
                F.pad(x, list(pads), mode=torch_mode)
                if mode != "zeros"
                else F.pad(x, list(pads), value=0.0)
            )

        op = self.unary(node, linear=True, lin=lin, absf=lin)
        op.row = self.exact(
            node,
            norm,
            f"padding operator ({mode}): sqrt(max copies of a pixel)",
            linear=True,
            ops=3,
            notes=[f"constant value {value:g} is an offset"] if value else None,
        )
        return op

    def functional_pad(self, node: fx.Node, name: str) -> _Op:
        if name == "pad":
            b = _bind(node, ("input", "pad", "mode", "value"), {"mode": "constant", "value": None})
            mode = self.const(b["mode"])
            value = self.const(b["value"]) or 0.0
        elif name == "constant_pad_nd":
            b = _bind(node, ("input", "pad", "value"), {"value": 0.0})
            mode, value = "constant", self.const(b["value"])
        else:
            b = _bind(node, ("input", "pad"))
            mode = {"reflection": "reflect", "replication": "replicate"}.get(
                name.split("_")[0], "circular"
            )
            value = 0.0
        mode = {"constant": "zeros"}.get(mode, mode)
        return self.pad_op(node, tuple(int(v) for v in self.const(b["pad"])), mode, float(value))

    def functional_conv(self, node: fx.Node, name: str) -> _Op:
        if name in ("conv1d", "conv2d"):
            b = _bind(
                node,
                ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
                {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1},
            )
            transposed = False
        else:
            b = _bind(
                node,
                (
                    "input",
                    "weight",
                    "bias",
                    "stride",
                    "padding",
                    "dilation",
                    "transposed",
                    "output_padding",
                    "groups",
                ),
            )
            transposed = bool(self.const(b["transposed"]))
        if transposed:
            raise AuditError(f"{self.describe(node)} is a transposed convolution: no rule yet")
        if self.dep(b["weight"]):
            raise AuditError(f"{self.describe(node)}: the kernel depends on the input")
        weight = torch.as_tensor(self.const(b["weight"])).detach()
        stride, padding = self.const(b["stride"]), self.const(b["padding"])
        dilation, groups = self.const(b["dilation"]), int(self.const(b["groups"]))
        one_d = weight.dim() == 3
        if isinstance(padding, str):
            pad: Any = padding
        else:
            pp = _tuple(padding, 1 if one_d else 2)
            pad = (0, pp[0]) if one_d else pp
        conv = _conv_geometry(
            weight,
            "zeros",
            pad,
            _tuple(stride, 1 if one_d else 2),
            _tuple(dilation, 1 if one_d else 2),
            groups,
        )
        fn = F.conv1d if one_d else F.conv2d
        s_, p_, d_ = stride, padding, dilation

        def lin(x: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
            return fn(x, weight.to(x), None, s_, p_, d_, groups)

        def absf(x: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
            return fn(x, weight.to(x).abs(), None, s_, p_, d_, groups)

        op = self.conv_op(node, weight, conv, lin, absf)
        op.node.meta["specbound_weight"] = b["weight"]
        return op

    def functional_linear(self, node: fx.Node, name: str) -> _Op:
        if name == "linear":
            b = _bind(node, ("input", "weight", "bias"))
            x, wnode, transpose = b["input"], b["weight"], False
        elif name == "addmm":
            b = _bind(node, ("bias", "input", "mat2"))
            x, wnode, transpose = b["input"], b["mat2"], True
        else:  # mm, matmul: x @ W
            x, wnode, transpose = node.args[0], node.args[1], True
        if not self.dep(x) or self.dep(wnode):
            raise AuditError(
                f"{self.describe(node)}: only input-dependent @ constant matrix is supported"
            )
        w = torch.as_tensor(self.const(wnode)).detach()
        if w.dim() != 2:
            raise AuditError(f"{self.describe(node)}: the constant operand is not a matrix")
        weight = w.t() if transpose else w
        op = self.linear_op(node, weight)
        op.node.meta["specbound_weight"] = _source_param(wnode)
        return op

    def functional_bn(self, node: fx.Node, name: str) -> _Op:
        if name == "batch_norm" and node.op == "call_function" and node.target is F.batch_norm:
            b = _bind(
                node,
                (
                    "input",
                    "running_mean",
                    "running_var",
                    "weight",
                    "bias",
                    "training",
                    "momentum",
                    "eps",
                ),
                {"weight": None, "bias": None, "training": False, "eps": 1e-5},
            )
        elif name == "_native_batch_norm_legit_no_training":
            b = _bind(
                node, ("input", "weight", "bias", "running_mean", "running_var", "momentum", "eps")
            )
            b["training"] = False
        else:
            b = _bind(
                node,
                (
                    "input",
                    "weight",
                    "bias",
                    "running_mean",
                    "running_var",
                    "training",
                    "momentum",
                    "eps",
                ),
            )
        if bool(self.const(b["training"])) or self.const(b["running_var"]) is None:
            raise AuditError(f"{self.describe(node)} normalises with batch statistics")
        op = self.bn_op(
            node, self.const(b["weight"]), self.const(b["running_var"]), float(self.const(b["eps"]))
        )
        op.node.meta["specbound_weight"] = b["weight"]
        return op

    # ---------------------------------------------------------------- folding and tasks
    def fold_batchnorm(self) -> None:
        for op in self.ops.values():
            if op.kind != "bn":
                continue
            src = op.inputs[0][0]
            prev = self.ops.get(src)
            if prev is None or prev.kind not in ("conv", "linear") or prev.fold is not None:
                continue
            if len(src.users) != 1:
                continue
            channels = prev.weight.shape[0]
            if op.scale.numel() != channels:
                continue
            prev.fold, op.folded_into = op, prev
        for node, op in self.ops.items():
            if op.kind in ("conv", "linear"):
                self.certified_row(op)
            elif op.kind == "bn" and op.folded_into is None:
                s = op.scale.abs()
                value = float(s.max()) if s.numel() else 0.0
                name, typ = self.label(node, node.meta.get("specbound_weight"))
                op.row = self.row(
                    node,
                    name,
                    typ,
                    _down(value, 4),
                    _up(value, 4),
                    "exact",
                    "max |gamma| / sqrt(var + eps) (diagonal)",
                    linear=True,
                )

    def certified_row(self, op: _Op) -> None:
        node = op.node
        name, typ = self.label(node, node.meta.get("specbound_weight"))
        weight = op.weight.detach().to("cpu", torch.float64)
        notes: list[str] = []
        if op.fold is not None:
            bn = op.fold
            bn_name, bn_typ = self.label(bn.node, bn.node.meta.get("specbound_weight"))
            shape = (-1,) + (1,) * (weight.dim() - 1)
            weight = weight * bn.scale.view(shape)
            name, typ = f"{name}+{bn_name}", f"{typ}+{bn_typ}"
            notes.append(f"BatchNorm '{bn_name}' folded: W' = diag(gamma/sqrt(var+eps)) W")
        kernel = weight.numpy()
        out_node = op.fold.node if op.fold is not None else node
        row = LayerBound(
            name,
            typ,
            self.in_shape(node),
            self.out_shape(out_node),
            None,
            math.inf,
            "certified",
            "",
            "",
            notes=notes,
        )
        op.row = row
        size = self.in_shape(node)

        def task() -> None:
            start = time.perf_counter()
            if op.kind == "conv":
                c = op.conv
                k4 = kernel[:, :, None, :] if kernel.ndim == 3 else kernel
                hw = (1, size[-1]) if kernel.ndim == 3 else tuple(size[-2:])
                spec = ConvSpec(c["padding"], c["pad"], hw, c["stride"], c["dilation"], c["groups"])
                expected = spec.layer(k4).out_size
                traced = (
                    tuple(self.out_shape(node)[-2:])
                    if kernel.ndim == 4
                    else (1, self.out_shape(node)[-1])
                )
                if expected != traced:
                    raise AuditError(
                        f"{self.describe(node)}: specbound's geometry gives output size "
                        f"{expected}, the forward pass {traced}"
                    )
                cert = certify(
                    k4,
                    spec.padding,
                    input_size=hw,
                    pad=spec.pad,
                    stride=spec.stride,
                    dilation=spec.dilation,
                    groups=spec.groups,
                    rtol=self.rtol,
                    device=self.device,
                    max_seconds=self.max_seconds,
                )
                pads = spec.layer(k4).pads
                pad_norm = 1.0
                if spec.padding != "zeros":
                    pad_norm = padding_operator_norm(
                        hw[0], pads[0], pads[1], spec.padding
                    ) * padding_operator_norm(hw[1], pads[2], pads[3], spec.padding)
                row.notes.append(
                    f"{spec.padding} padding {pads} (top, bottom, left, right), stride "
                    f"{spec.stride}, dilation {spec.dilation}, groups {spec.groups}, input "
                    f"{hw[0]}x{hw[1]}"
                )
            else:
                k4 = kernel[:, :, None, None]
                cert = certify(
                    k4,
                    "zeros",
                    input_size=(1, 1),
                    pad="valid",
                    rtol=self.rtol,
                    device=self.device,
                    max_seconds=self.max_seconds,
                )
                pad_norm = 1.0
            lower, upper = cert.lower, cert.upper
            if op.fold is not None:
                err = _fold_allowance(k4, _up(pad_norm, 2))
                upper, lower = _up(upper + err, 1), _down(max(0.0, lower - err), 1)
                row.notes.append(f"fold rounding allowance {err:.3g} added to the bracket")
            row.lower, row.upper = lower, upper
            row.upper_method, row.lower_method = cert.upper_method, cert.lower_method
            row.converged, row.certificate = cert.converged, cert
            row.notes += list(cert.notes)
            row.elapsed_s = time.perf_counter() - start

        op.task = task


# ============================================================================ module tables
def _type_name(mod: Any) -> str:
    if mod is None:
        return "?"
    return type(mod).__name__.removeprefix("Parametrized")


def _tuple(value: Any, n: int) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        vals = tuple(int(v) for v in value)
        return vals * n if len(vals) == 1 else vals
    return (int(value),) * n


def _conv_geometry(
    weight: torch.Tensor, mode: str, pad: Any, stride: Any, dilation: Any, groups: int
) -> dict[str, Any]:
    one_d = weight.dim() == 3
    s = _tuple(stride, 1 if one_d else 2)
    d = _tuple(dilation, 1 if one_d else 2)
    if one_d:
        s, d = (1, s[0]), (1, d[0])
    return {"padding": mode, "pad": pad, "stride": s, "dilation": d, "groups": int(groups)}


def _combine(terms: list[tuple[torch.Tensor, float]]) -> torch.Tensor:
    out = None
    for v, c in terms:
        term = v if c == 1.0 else v * c
        out = term if out is None else out + term
    assert out is not None
    return out


def _source_param(node: Any) -> Any:
    """Follow ``t``/``transpose`` of a constant back to its ``get_attr`` node (for naming)."""
    while isinstance(node, fx.Node) and node.op == "call_function" and node.args:
        node = node.args[0]
    return node


def _pad_module_mode(mod: nn.Module) -> str | None:
    table = (
        ((nn.ZeroPad1d, nn.ZeroPad2d, nn.ConstantPad1d, nn.ConstantPad2d), "zeros"),
        ((nn.ReflectionPad1d, nn.ReflectionPad2d), "reflect"),
        ((nn.ReplicationPad1d, nn.ReplicationPad2d), "replicate"),
        ((nn.CircularPad1d, nn.CircularPad2d), "circular"),
    )
    for types, mode in table:
        if isinstance(mod, types):
            return mode
    return None


_SELU = (1.0507009873554804934193349852946, 1.6732632423543772848170429916717)
_STRUCT_FUNCS = {
    "flatten",
    "view",
    "reshape",
    "_unsafe_view",
    "contiguous",
    "clone",
    "detach",
    "permute",
    "transpose",
    "t",
    "squeeze",
    "unsqueeze",
    "getitem",
    "to",
    "type",
    "float",
    "double",
    "half",
    "bfloat16",
    "alias",
    "chunk",
    "split",
    "unbind",
    "narrow",
    "slice",
    "select",
    "split_with_sizes",
    "movedim",
    "swapaxes",
    "unflatten",
    "identity",
    "lift_fresh_copy",
    "_to_copy",
    "view_as",
    "reshape_as",
}


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


def _function_activation(name: str, node: fx.Node, an: _Analyser) -> tuple | None:
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


# ============================================================================ composition
def _compose(ops: dict[fx.Node, _Op], output: fx.Node) -> float:
    """Upper bound on the network's Lipschitz constant over the graph (rules in the module
    docstring), every operation rounded upwards."""
    lip: dict[fx.Node, float] = {}
    for node, op in ops.items():
        if op.compose == "input":
            lip[node] = 1.0
            continue
        vals = [(lip.get(src, 0.0), abs(c)) for src, c in op.inputs]
        if all(v == 0.0 for v, _ in vals):  # exactly constant
            lip[node] = 0.0
        elif op.compose == "unary":
            factor = 1.0
            if op.row is not None and op.folded_into is None:
                factor = op.row.upper
            lip[node] = _up(factor * vals[0][0], 1)
        elif op.compose == "sum":
            lip[node] = _up(sum(_up(c * v, 1) for v, c in vals), len(vals) + 1)
        else:  # rss
            total = _up(sum(_up(v * v, 1) for v, _ in vals), len(vals) + 1)
            lip[node] = _up(math.sqrt(total), 1)
    outs = [a for a in output.all_input_nodes if lip.get(a, 0.0) > 0]
    if not outs:
        return 0.0
    if len(outs) == 1:
        return lip[outs[0]]
    total = _up(sum(_up(lip[a] ** 2, 1) for a in outs), len(outs) + 1)
    return _up(math.sqrt(total), 1)


# ============================================================================ lower bound
def _evaluate(an: _Analyser, x: torch.Tensor, mode: str) -> torch.Tensor:
    """The network's linear part ``A x`` (``mode="lin"``: biases, BatchNorm means and other
    offsets dropped) or the absolute-value network ``|A| x`` (``mode="abs"``), float64 on CPU;
    the output's tensors flattened into one vector."""
    env: dict[fx.Node, Any] = {}

    def resolve(a: Any) -> Any:
        if isinstance(a, fx.Node):
            if a in env:
                return env[a]
            value = an.rec.info[a].value
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                # a constant block (of a concatenation) is an offset: dropped
                return torch.zeros(value.shape, dtype=torch.float64)
            return value
        if isinstance(a, (list, tuple)):
            return type(a)(resolve(v) for v in a)
        if isinstance(a, dict):
            return {k: resolve(v) for k, v in a.items()}
        return a

    for node, op in an.ops.items():
        if op.compose == "input":
            env[node] = x
            continue
        if op.compose == "sum":
            terms = [(env[src], c if mode == "lin" else abs(c)) for src, c in op.inputs]
            env[node] = _combine(terms)
            continue
        fn = op.lin if mode == "lin" else op.absf
        if op.compose == "unary" and fn is not None:
            env[node] = fn(env[op.inputs[0][0]])
            continue
        args, kwargs = resolve(node.args), resolve(node.kwargs)
        if node.op == "call_module":
            env[node] = an.modules[str(node.target)](*args, **kwargs)
        elif node.op == "call_method":
            env[node] = getattr(args[0], str(node.target))(*args[1:], **kwargs)
        else:
            env[node] = node.target(*args, **kwargs)
    out_node = next(n for n in an.gm.graph.nodes if n.op == "output")
    parts = [env[a] for a in out_node.all_input_nodes if a in env]
    flat = [p.reshape(-1) for p in parts if isinstance(p, torch.Tensor)]
    return torch.cat(flat) if flat else torch.zeros(0, dtype=torch.float64)


def _linear_lower(an: _Analyser, in_shape: tuple[int, ...], iters: int = 60) -> tuple[float, str]:
    """Rigorous lower bound on ``||A||`` for an affine network ``x -> A x + b``."""
    gen = torch.Generator().manual_seed(0)
    v = torch.randn((1, *in_shape), generator=gen, dtype=torch.float64)
    v /= v.norm()
    est = 0.0
    for _ in range(iters):
        x = v.clone().requires_grad_(True)
        y = _evaluate(an, x, "lin")
        if not y.requires_grad:  # the output does not depend on the input
            return 0.0, "constant network"
        (g,) = torch.autograd.grad(y, x, y.detach())
        norm = float(g.norm())
        if norm == 0.0:
            break
        prev, est = est, math.sqrt(norm)
        v = (g / norm).detach()
        if abs(est - prev) <= 1e-12 * est:
            break
    with torch.no_grad():
        y = _evaluate(an, v, "lin")
        m = _evaluate(an, v.abs(), "abs")
    n_total = sum(op.nops for op in an.ops.values()) + 1
    if n_total * U >= 0.5:
        return 0.0, "too many operations for the rounding bound"
    g_n = gamma(n_total)
    y_norm = math.sqrt(float((y * y).sum()) * (1 - gamma(y.numel() + 2))) * (1 - 2 * U)
    m_norm = float(frobenius_upper(m.reshape(1, -1))) / (1 - g_n)
    v_norm = float(frobenius_upper(v.reshape(1, -1)))
    lower = _down((y_norm - _up(g_n * m_norm, 2)) / v_norm, 3)
    return max(0.0, lower), f"float64 power-iteration witness, rounding bound gamma_{n_total}"


# ============================================================================ progress
class _Progress:
    def __init__(self, total: int, enabled: bool, title: str) -> None:
        self.bar, self.enabled, self.total, self.i = None, enabled, total, 0
        if not enabled or total == 0:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            self.bar = tqdm(
                total=total,
                desc=title,
                unit="layer",
                file=sys.stderr,
                leave=False,
                dynamic_ncols=True,
            )

    def step(self, name: str) -> None:
        self.i += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(name, refresh=False)
            self.bar.update(1)
        else:
            print(f"[{self.i}/{self.total}] {name}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ============================================================================ entry point
def _check_shape(input_shape: Any) -> tuple[int, ...]:
    if isinstance(input_shape, int):
        input_shape = (input_shape,)
    try:
        shape = tuple(int(v) for v in input_shape)
    except (TypeError, ValueError):
        raise TypeError(f"input_shape must be a sequence of ints, got {input_shape!r}") from None
    if (
        not shape
        or min(shape) < 1
        or any(
            isinstance(v, bool) or (isinstance(v, float) and not v.is_integer())
            for v in input_shape
        )
    ):
        raise ValueError(
            f"input_shape must be positive ints without the batch dimension, e.g. (3, 32, 32); "
            f"got {input_shape!r}"
        )
    return shape


def _set_eval(model: nn.Module) -> None:
    """``model.eval()``; an exported module refuses it (its graph already fixed the mode)."""
    try:
        model.eval()
    except NotImplementedError:
        pass


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for p in list(model.parameters()) + list(model.buffers()):
        if p.is_floating_point():
            return p.device, p.dtype
    return torch.device("cpu"), torch.float32


def audit(
    model: nn.Module,
    input_shape: Sequence[int],
    rtol: float = 1e-3,
    device: str | torch.device | None = None,
    progress: bool | None = None,
    *,
    max_seconds_per_layer: float | None = None,
) -> AuditReport:
    """Certify every layer of ``model`` at its true input size and bound the whole network.

    Parameters
    ----------
    model : torch.nn.Module, torch.jit.ScriptModule or torch.fx.GraphModule
        Traced with :mod:`torch.fx` (an ``nn.Module``), at the ATen level with ``make_fx``
        (TorchScript), or used as given (a ``GraphModule``, e.g.
        ``torch.export.export(model, args).module()``). Audited in eval mode; its train/eval
        flags are restored afterwards.
    input_shape : sequence of int
        One sample's shape without the batch dimension, e.g. ``(3, 32, 32)``.
    rtol : float
        Target relative gap of each layer's certificate (:func:`specbound.certify`).
    device : str or torch.device, optional
        Where the certificates' heavy float64 work runs (default CPU). The shape-recording
        forward pass runs where the model's parameters are.
    progress : bool, optional
        Show a progress bar (``tqdm`` when installed, else one line per layer) on stderr;
        default: when stderr is a terminal.
    max_seconds_per_layer : float, optional
        Time budget of each :func:`specbound.certify` call; the bracket stays rigorous and the
        layer's ``converged`` says whether ``rtol`` was met.

    Returns
    -------
    AuditReport

    Raises
    ------
    AuditError
        The model cannot be traced, the forward pass fails at ``input_shape``, or an operator
        has no Lipschitz rule (the message names the module or node).
    """
    start = time.perf_counter()
    shape = _check_shape(input_shape)
    if not (isinstance(rtol, (int, float)) and 0 < rtol < 1):
        raise ValueError(f"rtol must be a number in (0, 1), got {rtol!r}")
    if max_seconds_per_layer is not None and not max_seconds_per_layer > 0:
        raise ValueError(f"max_seconds_per_layer must be positive, got {max_seconds_per_layer!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    modes = {m: m.training for m in model.modules()}
    _set_eval(model)
    try:
        return _audit(model, shape, float(rtol), device, progress, max_seconds_per_layer, start)
    finally:
        for m, training in modes.items():
            m.training = training


def _audit(
    model: nn.Module,
    shape: tuple[int, ...],
    rtol: float,
    device: Any,
    progress: bool | None,
    max_seconds: float | None,
    start: float,
) -> AuditReport:
    dev, dtype = _model_device_dtype(model)
    example = torch.zeros((1, *shape), device=dev, dtype=dtype)
    script = model if isinstance(model, torch.jit.ScriptModule) else None
    param_names: dict[int, str] = {}
    if script is not None:
        with torch.no_grad():
            gm = _trace_script(script, example)
        ids = {p.data_ptr(): n for n, p in script.named_parameters()}
        ids.update({b.data_ptr(): n for n, b in script.named_buffers()})
        for _, value in list(gm.named_parameters()) + list(gm.named_buffers()):
            if value.data_ptr() in ids:
                param_names[id(value)] = ids[value.data_ptr()]
        for node in gm.graph.nodes:
            if node.op == "get_attr":
                value = getattr(gm, str(node.target))
                if isinstance(value, torch.Tensor) and value.data_ptr() in ids:
                    param_names[id(value)] = ids[value.data_ptr()]
        frontend, title = "torch.fx.experimental.proxy_tensor.make_fx (ATen)", script.original_name
    elif isinstance(model, fx.GraphModule):  # e.g. torch.export.export(...).module()
        gm = model
        frontend, title = "the given torch.fx.GraphModule", type(model).__name__
        title = "GraphModule" if "GraphModule" in title else title
    else:
        gm = trace(model)
        frontend, title = "torch.fx.symbolic_trace", type(model).__name__
    _set_eval(gm)
    modules = dict(gm.named_modules())

    def describe(n: fx.Node) -> str:
        if n.op == "call_module":
            return f"module '{n.target}' ({_type_name(modules.get(str(n.target)))})"
        return f"node '{n.name}' ({_op_name(n)[0]})"

    rec = _Recorder(gm, describe)
    with torch.no_grad():
        rec.run(example)
    an = _Analyser(gm, rec, frontend, rtol, device, max_seconds, param_names, script)
    an.analyse()
    rows_ops = [op for op in an.ops.values() if op.row is not None and op.folded_into is None]
    tasks = [op for op in rows_ops if op.task is not None]
    enabled = sys.stderr.isatty() if progress is None else bool(progress)
    bar = _Progress(len(tasks), enabled, f"audit {title}")
    try:
        for op in tasks:
            op.task()
            bar.step(op.row.name)
    finally:
        bar.close()
    output = next(n for n in gm.graph.nodes if n.op == "output")
    upper = _compose(an.ops, output)
    linear = all(op.linear for op in an.ops.values())
    if linear:
        lower, lower_method = _linear_lower(an, shape)
        lower_note = "the network is affine: rigorous witness of ||A||"
    else:
        lower, lower_method = None, ""
        first = next(op for op in an.ops.values() if not op.linear)
        lower_note = (
            f"the network is nonlinear ({an.describe(first.node)}): no certified lower "
            "bound (a Jacobian power iteration at one point is only a local estimate and "
            "never a reference for the global constant)"
        )
    n_sums = sum(op.compose == "sum" and len(op.inputs) > 1 for op in an.ops.values())
    n_cats = sum(op.compose == "rss" for op in an.ops.values())
    notes = [
        "audited in eval mode; bounds hold for the real-number network with the stored "
        "parameters (the float32 rounding of its forward pass is not included)",
    ]
    if n_sums:
        notes.append("sums (residual additions): the bound of u + v is L(u) + L(v)")
    return AuditReport(
        model=title,
        input_shape=shape,
        upper=upper,
        lower=lower,
        lower_method=lower_method,
        lower_note=lower_note,
        linear=linear,
        layers=[op.row for op in rows_ops],
        composition={"sums": n_sums, "concatenations": n_cats},
        rtol=rtol,
        device=str(torch.device("cpu" if device is None else device)),
        elapsed_s=time.perf_counter() - start,
        frontend=frontend,
        notes=notes,
    )


__all__ = [
    "AuditError",
    "AuditReport",
    "LayerBound",
    "audit",
    "gelu_lipschitz",
    "max_pool_lipschitz",
    "report_markdown",
    "smooth_activation_bracket",
    "trace",
]
