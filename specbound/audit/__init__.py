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
--------------------------------------------------------------------------------------------
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
                                          **not** ``gamma / var``)
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
reference value of ``Lip``. It is reported only as
``AuditReport.local_estimate``, labelled a local lower *estimate* (not a certificate), next to
the composed upper bound (:func:`local_lipschitz_estimate`). Rules added for issue 14
(normalisation, max/sort, broadcasts, resampling, transposed convolutions, folding and merging)
are listed with their theorems in the audit how-to. When every
operator is affine, the network is ``x -> A x + b`` and its Lipschitz constant is ``||A||_2``;
then a witness ``v`` from a float64 power iteration gives the rigorous lower bound
``(||fl(A v)|| - gamma_N || |A| |v| ||) / ||v||`` (Higham, *Accuracy and Stability of Numerical
Algorithms*, 2nd ed., eq. 3.5 and Lemma 3.3: every float64 operator evaluation with ``n`` terms
per output entry errs by at most ``gamma_n`` times the same evaluation with absolute values;
``N`` sums those counts over the graph).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from ._activations import gelu_lipschitz, smooth_activation_bracket
from ._analyser import _Analyser
from ._compose import _compose, composition_note
from ._errors import AuditError
from ._graph import _op_name, _type_name
from ._lower import _linear_lower
from ._pooling import max_pool_lipschitz
from ._report import AuditReport, LayerBound, report_markdown
from ._trace import _Recorder, _trace_script, trace
from .fallback import tap_sum_upper
from .local import local_lipschitz_estimate
from .progress import _Progress
from .runner import DEFAULT_RTOL, DEFAULT_SECONDS_PER_LAYER, _Runner


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
    rtol: float | None = None,
    device: str | torch.device | None = None,
    progress: bool | None = None,
    *,
    max_seconds: float | None = None,
    max_seconds_per_layer: float | None = DEFAULT_SECONDS_PER_LAYER,
    on_layer: Callable[[LayerBound], object] | None = None,
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
    rtol : float, optional
        Target relative gap of each layer's certificate (:func:`specbound.certify`); default
        ``1e-2`` (:data:`~specbound.audit.runner.DEFAULT_RTOL`), and the report says that the
        default was used.
    device : str or torch.device, optional
        Where the certificates' heavy float64 work runs (default CPU). The shape-recording
        forward pass runs where the model's parameters are.
    progress : bool, optional
        Show a progress bar (``tqdm`` when installed, else one line per layer) on stderr;
        default: when stderr is a terminal. The bar advances within a long layer.
    max_seconds : float, optional
        Budget of the whole run, counted from this call. A layer reached after it is spent
        is not certified: it gets a rigorous but much wider upper bound (the tap-sum bound,
        lemma L-TAP of ``docs/certify.md``; kind ``"bound"``, ``converged=False``), and the
        report is marked ``partial``. The run returns within ``max_seconds`` plus the slack
        of the one :func:`specbound.certify` call running when it ends (that call gets what
        is left of the budget as its own ``max_seconds``) plus the cheap bounds of the layers
        left (milliseconds each).
    max_seconds_per_layer : float or None
        Budget of each :func:`specbound.certify` call (default 120 s; ``None``: no limit). The
        bracket stays rigorous and the layer's ``converged`` says whether ``rtol`` was met.
    on_layer : callable, optional
        Called with each :class:`LayerBound` of the report, in report order, as soon as it is
        final (streaming). A ``KeyboardInterrupt``, raised there or while a layer is
        certified, ends the certificates: the partial report is returned (finished rows kept,
        the others bounded as for a spent budget, ``partial=True``).

    Returns
    -------
    AuditReport

    Raises
    ------
    AuditError
        The model cannot be traced, the forward pass fails at ``input_shape``, or an operator
        has no Lipschitz rule (the message names the module or node).

    References
    ----------
    * docs/certify.md, section 6 "Audit rules beyond convolutions" and lemma L-TAP (the
      budget fallback); each layer's certificate is :func:`specbound.certify`'s.
    * C. Szegedy et al., "Intriguing properties of neural networks", ICLR 2014, Sec. 4.3
      (the product of per-layer norms bounds the network's Lipschitz constant).

    Examples
    --------
    >>> import torch
    >>> import specbound as sb
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(
    ...     torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(),
    ...     torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 4, 3))
    >>> report = sb.audit(model, (1, 4, 4), progress=False)
    >>> [layer.name for layer in report.layers], report.layers[0].kind
    (['0', '1', '3'], 'certified')
    >>> report.converged, report.lower is None  # ReLU: no certified lower bound
    (True, True)
    >>> conv, relu, linear = report.layers
    >>> report.upper >= conv.upper * relu.upper * linear.upper  # composed along the chain
    True
    """
    start = time.perf_counter()
    shape = _check_shape(input_shape)
    rtol_default = rtol is None
    if rtol is None:
        rtol = DEFAULT_RTOL
    if isinstance(rtol, bool) or not (isinstance(rtol, (int, float)) and 0 < rtol < 1):
        raise ValueError(f"rtol must be a number in (0, 1), got {rtol!r}")
    for name, value in (
        ("max_seconds", max_seconds),
        ("max_seconds_per_layer", max_seconds_per_layer),
    ):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a positive number of seconds or None, got {value!r}")
        if not value > 0 or math.isnan(value):
            raise ValueError(f"{name} must be positive, got {value!r}")
    if on_layer is not None and not callable(on_layer):
        raise TypeError(
            f"on_layer must be callable (it receives each LayerBound), got {on_layer!r}"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    modes = {m: m.training for m in model.modules()}
    _set_eval(model)
    budget = _Budget(rtol_default, max_seconds, max_seconds_per_layer, on_layer)
    try:
        # a parametrized weight (torch.nn.utils.parametrize) is computed once and reused by
        # the shape-recording pass and every certificate: some parametrizations give slightly
        # different weights at every access
        with torch.nn.utils.parametrize.cached():
            return _audit(model, shape, float(rtol), device, progress, budget, start)
    finally:
        for m, training in modes.items():
            m.training = training


@dataclass
class _Budget:
    rtol_default: bool
    max_seconds: float | None
    per_layer: float | None
    on_layer: Callable[[LayerBound], Any] | None


def _audit(
    model: nn.Module,
    shape: tuple[int, ...],
    rtol: float,
    device: Any,
    progress: bool | None,
    budget: _Budget,
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
        gm = trace(model, example)
        frontend, title = gm.meta["specbound_frontend"], type(model).__name__
    _set_eval(gm)
    modules = dict(gm.named_modules())

    def describe(n: fx.Node) -> str:
        if n.op == "call_module":
            return f"module '{n.target}' ({_type_name(modules.get(str(n.target)))})"
        return f"node '{n.name}' ({_op_name(n)[0]})"

    rec = _Recorder(gm, describe)
    with torch.no_grad():
        rec.run(example)
    an = _Analyser(gm, rec, frontend, rtol, device, budget.per_layer, param_names, script)
    an.analyse()
    rows_ops = [op for op in an.ops.values() if op.row is not None and op.folded_into is None]
    tasks = [op for op in rows_ops if op.task is not None]
    enabled = sys.stderr.isatty() if progress is None else bool(progress)
    bar = _Progress(len(tasks), enabled, f"audit {title}")
    runner = _Runner(
        rtol, device, budget.max_seconds, budget.per_layer, start, budget.on_layer, bar
    )
    an.certifier = runner.certify
    try:
        runner.run(rows_ops)
    finally:
        bar.close()
    output = next(n for n in gm.graph.nodes if n.op == "output")
    upper = _compose(an.ops, output)
    linear = all(op.linear for op in an.ops.values())
    if linear and runner.stop_reason:
        lower, lower_method = None, ""
        lower_note = f"the network is affine, but the run stopped early ({runner.stop_reason})"
    elif linear:
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
    # a stopped run returns at once: no extra work after the budget is spent
    local = None if runner.stop_reason else _local_estimate(model, shape)
    if not linear and upper > 0:
        notes.append(composition_note(an.ops, output, upper))
    notes.append(
        f"rtol {rtol:g}"
        + (
            " (the audit's default; pass rtol= / --rtol to change it)"
            if budget.rtol_default
            else " (as asked)"
        )
        + "; budgets: whole run "
        + ("none" if budget.max_seconds is None else f"{budget.max_seconds:g} s")
        + ", per layer "
        + ("none" if budget.per_layer is None else f"{budget.per_layer:g} s")
    )
    if runner.reused:
        notes.append(
            f"{runner.certified + runner.reused} certified rows, {runner.certified} distinct "
            f"(kernel, geometry) pairs: {runner.reused} certificate(s) reused"
        )
    if runner.stop_reason:
        notes.append(
            f"PARTIAL: {runner.stop_reason}; {runner.fallbacks} layer(s) not certified carry "
            "the rigorous tap-sum bound (L-TAP), so the network bound is valid but wider"
        )
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
        local_estimate=local,
        partial=bool(runner.stop_reason),
        stop_reason=runner.stop_reason,
        rtol_default=budget.rtol_default,
        budget={"max_seconds": budget.max_seconds, "max_seconds_per_layer": budget.per_layer},
    )


def _local_estimate(model: nn.Module, shape: tuple[int, ...]) -> float | None:
    """Largest Jacobian norm at 3 random inputs (:func:`local_lipschitz_estimate`, at most
    about 2 s), or None when the model cannot be run in float64 with autograd."""
    try:
        return local_lipschitz_estimate(model, shape, n_inputs=3, iters=8, max_seconds=2.0)
    except Exception:
        return None


__all__ = [
    "AuditError",
    "AuditReport",
    "LayerBound",
    "audit",
    "gelu_lipschitz",
    "local_lipschitz_estimate",
    "max_pool_lipschitz",
    "report_markdown",
    "smooth_activation_bracket",
    "tap_sum_upper",
    "trace",
]
