"""Lipschitz rules of the linear operators: convolutions, ``Linear``, BatchNorm (alone or
folded into the convolution or linear layer before it), SLL layers, and their certified rows
(:func:`specbound.certify`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..certify import Certificate
from ..operators.conv_layer import ConvLayer
from ..rigorous.rounding import U, frobenius_upper
from ..spec import ConvSpec
from ._analysis import Analysis
from ._errors import AuditError
from ._graph import _bind, _Op, _tuple
from ._outward import _down, _up
from ._report import LayerBound
from ._trace import conv_subclass_agrees

FOLD_ULPS = 8
"""Relative rounding allowance (in units of ``u = 2^-53``) of a BatchNorm-folded kernel entry:
``s = gamma / sqrt(var + eps)`` takes three roundings and ``W s`` one more, so the exact entry is
within ``gamma_4 / (1 - gamma_4) < 5u`` of the computed one; 8 leaves a margin."""


def _fold_allowance(kernel: np.ndarray, pad_norm: float) -> float:
    """Upper bound on ``||A_E||_2`` for the error ``E = K_exact - K_computed`` of a folded
    kernel, ``|E| <= FOLD_ULPS u |K|`` entrywise: the layer is ``sum_taps E_tap S_tap P`` with
    ``P`` the padding operator and ``S_tap`` a (strided) selection, so ``||A_E|| <= ||P||
    sum_tap ||E_tap||_F``."""
    k = torch.from_numpy(kernel.reshape(kernel.shape[0], kernel.shape[1], -1)).permute(2, 0, 1)
    per_tap = frobenius_upper(k)
    total = float(per_tap.sum()) * (1 + per_tap.numel() * U)
    return _up(total * FOLD_ULPS * U * pad_norm, 3)


def conv_fields(spec: ConvSpec) -> dict[str, Any]:
    """The audit's geometry of a convolution read by :class:`ConvSpec`
    (:meth:`ConvSpec.from_module` for modules): 2-D and 3-D as they are, a 1-D one as the
    one-row 2-D convolution (no pad, stride or dilation along the height), with the same
    matrix row for row."""
    if spec.ndim != 1:
        pad = spec.pad
    elif isinstance(spec.pad, str):
        pad = spec.pad
    else:
        ((lo, hi),) = spec.pads((1,))  # explicit amounts do not depend on the kernel
        pad = (0, lo) if lo == hi else (lo, hi, 0, 0)  # (ph, pw) or F.pad order
    s, d = spec.stride, spec.dilation
    if spec.ndim == 1:
        s, d = (1, s[0]), (1, d[0])
    return {"padding": spec.padding, "pad": pad, "stride": s, "dilation": d, "groups": spec.groups}


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


# ---------------------------------------------------------------- rules


def conv_op(
    an: Analysis,
    node: fx.Node,
    weight: torch.Tensor,
    conv: dict[str, Any],
    lin: Callable,
    absf: Callable,
) -> _Op:
    nops = weight.shape[1] * math.prod(weight.shape[2:])  # (c_in / groups) kh kw
    op = an.unary(node, linear=True, nops=nops, lin=lin, absf=absf, kind="conv")
    op.weight, op.conv = weight, conv
    return op


def linear_op(an: Analysis, node: fx.Node, weight: torch.Tensor) -> _Op:
    w = weight.detach()
    op = an.unary(
        node,
        linear=True,
        nops=w.shape[1],
        lin=lambda x, *a, **k: F.linear(x, w.to(x)),
        absf=lambda x, *a, **k: F.linear(x, w.to(x).abs()),
        kind="linear",
    )
    op.weight = w
    return op


def bn_op(an: Analysis, node: fx.Node, weight: Any, running_var: Any, eps: float) -> _Op:
    var = torch.as_tensor(running_var).detach().double().cpu()
    if bool((var + eps <= 0).any()):
        raise AuditError(f"{an.describe(node)} has running_var + eps <= 0")
    g = torch.ones_like(var) if weight is None else torch.as_tensor(weight).detach().double().cpu()
    scale = g / torch.sqrt(var + float(eps))

    def lin(x: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
        return x * scale.to(x).view(1, -1, *([1] * (x.dim() - 2)))

    def absf(x: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
        return x * scale.to(x).abs().view(1, -1, *([1] * (x.dim() - 2)))

    op = an.unary(node, linear=True, nops=4, lin=lin, absf=absf, kind="bn")
    op.scale = scale
    return op


def sll_op(an: Analysis, node: fx.Node, mod: nn.Module) -> _Op:
    from ..layers import SLLConv2d

    op = an.unary(node, linear=False)
    op.kind = "sll"  # a certify call without a cheap fallback (see audit.runner)
    name, typ = an.label(node)
    row = an.row(
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
    size = an.in_shape(node)

    def task() -> None:
        start = time.perf_counter()
        if isinstance(mod, SLLConv2d):
            cert = mod.certify(input_size=tuple(size[-2:]), rtol=an.rtol)
        else:
            cert = mod.certify(rtol=an.rtol)
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


def functional_conv(an: Analysis, node: fx.Node, name: str) -> _Op:
    if name in ("conv1d", "conv2d", "conv3d"):
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
        transposed = bool(an.const(b["transposed"]))
    if an.dep(b["weight"]):
        raise AuditError(f"{an.describe(node)}: the kernel depends on the input")
    if transposed:
        weight = torch.as_tensor(an.const(b["weight"])).detach()
        return transposed_conv_op(
            an,
            node,
            weight,
            an.const(b["stride"]),
            an.const(b["padding"]),
            an.const(b["output_padding"]),
            an.const(b["dilation"]),
            int(an.const(b["groups"])),
        )
    if an.dep(b["weight"]):
        raise AuditError(f"{an.describe(node)}: the kernel depends on the input")
    weight = torch.as_tensor(an.const(b["weight"])).detach()
    stride, padding = an.const(b["stride"]), an.const(b["padding"])
    dilation, groups = an.const(b["dilation"]), int(an.const(b["groups"]))
    if weight.dim() not in (3, 4, 5):
        raise AuditError(f"{an.describe(node)}: only 1-D, 2-D and 3-D convolutions have a rule")
    n = weight.dim() - 2
    pad: Any = padding if isinstance(padding, str) else _tuple(padding, n)
    try:
        spec = ConvSpec("zeros", pad, None, _tuple(stride, n), _tuple(dilation, n), groups, n)
    except (TypeError, ValueError) as err:
        raise AuditError(f"{an.describe(node)}: {err}") from err
    conv = conv_fields(spec)
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
    s_, p_, d_ = stride, padding, dilation

    def lin(x: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
        return fn(x, weight.to(x), None, s_, p_, d_, groups)

    def absf(x: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
        return fn(x, weight.to(x).abs(), None, s_, p_, d_, groups)

    op = conv_op(an, node, weight, conv, lin, absf)
    op.node.meta["specbound_weight"] = b["weight"]
    return op


def functional_linear(an: Analysis, node: fx.Node, name: str) -> _Op:
    if name == "linear":
        b = _bind(node, ("input", "weight", "bias"))
        x, wnode, transpose = b["input"], b["weight"], False
    elif name == "addmm":
        b = _bind(node, ("bias", "input", "mat2"))
        x, wnode, transpose = b["input"], b["mat2"], True
    else:  # mm, matmul: x @ W
        x, wnode, transpose = node.args[0], node.args[1], True
    if an.dep(x) and an.dep(wnode):
        raise AuditError(
            f"{an.describe(node)} multiplies two input-dependent matrices (as attention's "
            "Q K^T and its product with V do): not globally Lipschitz, so no bound exists; "
            "audit the sub-network before this node"
        )
    if not an.dep(x) or an.dep(wnode):
        raise AuditError(
            f"{an.describe(node)}: only input-dependent @ constant matrix is supported"
        )
    w = torch.as_tensor(an.const(wnode)).detach()
    if w.dim() != 2:
        raise AuditError(f"{an.describe(node)}: the constant operand is not a matrix")
    weight = w.t() if transpose else w
    op = linear_op(an, node, weight)
    op.node.meta["specbound_weight"] = _source_param(wnode)
    return op


def functional_bn(an: Analysis, node: fx.Node, name: str) -> _Op:
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
    if bool(an.const(b["training"])) or an.const(b["running_var"]) is None:
        raise AuditError(f"{an.describe(node)} normalises with batch statistics")
    op = bn_op(
        an, node, an.const(b["weight"]), an.const(b["running_var"]), float(an.const(b["eps"]))
    )
    op.node.meta["specbound_weight"] = b["weight"]
    return op


# ---------------------------------------------------------------- folding and tasks
def fold_batchnorm(an: Analysis) -> None:
    fold_padding(an)
    for op in an.ops.values():
        if op.kind not in ("bn", "chscale"):
            continue
        src = op.inputs[0][0]
        prev = an.ops.get(src)
        if prev is None or prev.kind not in ("conv", "linear") or prev.fold is not None:
            continue
        if len(src.users) != 1:
            continue
        channels = prev.weight.shape[0]
        if op.scale.numel() != channels:
            continue
        prev.fold, op.folded_into = op, prev
    merge_linear(an)
    for node, op in an.ops.items():
        if op.kind in ("conv", "linear", "convT"):
            certified_row(an, op)
        elif op.kind == "bn" and op.folded_into is None:
            s = op.scale.abs()
            value = float(s.max()) if s.numel() else 0.0
            name, typ = an.label(node, node.meta.get("specbound_weight"))
            op.row = an.row(
                node,
                name,
                typ,
                _down(value, 4),
                _up(value, 4),
                "exact",
                "max |gamma| / sqrt(var + eps) (diagonal)",
                linear=True,
            )


def fold_padding(an: Analysis) -> None:
    """Fold a padding node (module or ``F.pad``, any mode) into the 2-D convolution that is
    its sole user when that convolution pads nothing itself: the pair is one convolution
    with that padding mode and those pads, certified as a whole at the padding's input size
    (tighter than the product of the two norms)."""
    for op in an.ops.values():
        if op.kind != "conv" or op.conv is None or op.weight is None or op.weight.dim() != 4:
            continue
        pad = op.conv["pad"]
        unpadded = op.conv["padding"] == "zeros" and (
            pad in ("valid", 0) or (isinstance(pad, tuple) and not any(pad))
        )
        src = op.inputs[0][0]
        prev = an.ops.get(src)
        if not unpadded or prev is None or prev.kind != "pad" or prev.padding is None:
            continue
        mode, pads = prev.padding
        if len(pads) != 4 or len(src.users) != 1 or prev.folded_into is not None:
            continue
        op.conv = dict(op.conv, padding=mode, pad=pads)
        op.pre_pad, prev.folded_into = prev, op


def transposed_conv_op(
    an: Analysis,
    node: fx.Node,
    weight: torch.Tensor,
    stride: Any,
    padding: Any,
    output_padding: Any,
    dilation: Any,
    groups: int,
) -> _Op:
    """``ConvTranspose1d/2d/3d``: the adjoint of the convolution with the same weight,
    stride, padding, dilation and groups on the transposed layer's output size (PyTorch
    defines the transposed convolution, ``output_padding`` included, as that convolution's
    gradient with respect to its input), so its norm is that convolution's; with
    ``output_padding >= stride`` that of the cropped convolution (docs/certify.md L12).
    Certified by :func:`specbound.certify` on the transposed spec."""
    n = weight.dim() - 2
    if n not in (1, 2, 3):
        raise AuditError(f"{an.describe(node)}: a weight of shape {tuple(weight.shape)}")
    if isinstance(padding, str):
        raise AuditError(f"{an.describe(node)}: string padding {padding!r} not supported")
    s, p, d = _tuple(stride, n), _tuple(padding, n), _tuple(dilation, n)
    op_ = _tuple(output_padding, n)
    conv = conv_fields(ConvSpec("zeros", p, None, s, d, groups, ndim=n))
    conv["output_padding"] = (0, op_[0]) if n == 1 else op_  # the audit's 2-D form of 1-D
    fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[n]

    def lin(x: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
        return fn(x, weight.to(x), None, s, p, op_, groups, d)

    def absf(x: torch.Tensor, *a: Any, **k: Any) -> torch.Tensor:
        return fn(x, weight.to(x).abs(), None, s, p, op_, groups, d)

    nops = weight.shape[0] // groups * math.prod(weight.shape[2:])
    op = an.unary(node, linear=True, nops=nops, lin=lin, absf=absf, kind="convT")
    op.weight, op.conv = weight, conv
    return op


def merge_linear(an: Analysis) -> None:
    """Merge two consecutive linear operators with nothing nonlinear between them into one
    when the product is still a convolution: a convolution (any geometry, a BatchNorm
    after it folded) followed by a 1x1, stride-1, unpadded, ungrouped convolution, or a
    Linear followed by a Linear. The merged kernel ``W2 (s1 W1)`` is certified once; the
    float64 rounding of the product (each entry a sum of ``C1`` products, error at most
    ``gamma_{C1+2}`` times the same sum of absolute values) is added to the bracket through
    the Frobenius norm of that bound times ``sqrt(taps)`` (a convolution's norm is at most
    the sum of its taps' norms, Cauchy-Schwarz) and the padding operator's norm."""
    for op in an.ops.values():
        if op.kind not in ("conv", "linear") or op.weight is None or op.fold is not None:
            continue
        src = op.inputs[0][0]
        prev = an.ops.get(src)
        if prev is not None and prev.kind in ("bn", "chscale") and prev.folded_into:
            prev = prev.folded_into  # the conv/linear whose BatchNorm is src
        if prev is None or prev is op or prev.kind != op.kind or prev.weight is None:
            continue
        out_node = prev.fold.node if prev.fold is not None else prev.node
        if out_node is not src or len(src.users) != 1 or prev.folded_into is not None:
            continue
        w2 = op.weight.detach().to("cpu", torch.float64)
        w1 = prev.weight.detach().to("cpu", torch.float64)
        if prev.fold is not None:
            w1 = w1 * prev.fold.scale.to(torch.float64).view(-1, *([1] * (w1.dim() - 1)))
        if op.kind == "conv":
            c = op.conv
            pad = c["pad"]
            plain_1x1 = (
                w2.dim() == 4
                and w1.dim() == 4
                and tuple(w2.shape[2:]) == (1, 1)
                and c["stride"] == (1, 1)
                and c["groups"] == 1
                and (pad in ("valid", 0) or (isinstance(pad, tuple) and not any(pad)))
                and op.pre_pad is None
            )
            if not plain_1x1:
                continue
            g = prev.conv["groups"]
            c1, cin_g = w1.shape[0], w1.shape[1]
            full = torch.zeros(c1, cin_g * g, *w1.shape[2:], dtype=torch.float64)
            per = c1 // g
            for k in range(g):
                full[k * per : (k + 1) * per, k * cin_g : (k + 1) * cin_g] = w1[
                    k * per : (k + 1) * per
                ]
            merged = torch.einsum("oc,cihw->oihw", w2[:, :, 0, 0], full)
            bound = torch.einsum("oc,cihw->oihw", w2[:, :, 0, 0].abs(), full.abs())
            taps = full.shape[2] * full.shape[3]
            op.conv = dict(prev.conv, groups=1)
        else:
            merged, bound, taps = w2 @ w1, w2.abs() @ w1.abs(), 1
        from ..rigorous.rounding import gamma

        fro = float(torch.linalg.vector_norm(bound)) * (1 + 4 * gamma(bound.numel() + 2))
        op.merge_error = _up(math.sqrt(taps) * gamma(w2.shape[1] + 2) * fro, 4)
        op.weight = merged
        op.merged, op.pre_pad = prev, prev.pre_pad
        prev.folded_into = op


def certified_row(an: Analysis, op: _Op) -> None:
    node = op.node
    name, typ = an.label(node, node.meta.get("specbound_weight"))
    notes: list[str] = []
    if op.fold is not None:
        bn = op.fold
        bn_name, bn_typ = an.label(bn.node, bn.node.meta.get("specbound_weight"))
        name, typ = f"{name}+{bn_name}", f"{typ}+{bn_typ}"
        notes.append(
            f"BatchNorm '{bn_name}' folded: W' = diag(gamma/sqrt(var+eps)) W"
            if bn.kind == "bn"
            else f"per-channel scale '{bn_name}' folded: W' = diag(c) W"
        )
    in_node = node
    if op.merged is not None:
        first = op.merged
        in_node = first.node
        first_name, first_typ = an.label(first.node, first.node.meta.get("specbound_weight"))
        if first.fold is not None:
            bn_name, bn_typ = an.label(first.fold.node)
            first_name, first_typ = f"{first_name}+{bn_name}", f"{first_typ}+{bn_typ}"
        name, typ = f"{first_name}+{name}", f"{first_typ}+{typ}"
        notes.append(
            f"'{first_name}' merged: no nonlinearity between, the product is one "
            "convolution (linear map), certified once"
        )
    if op.pre_pad is not None:
        in_node = op.pre_pad.node
        pad_name, _ = an.label(in_node)
        name = f"{pad_name}+{name}"
        notes.append(
            f"padding '{pad_name}' ({op.conv['padding']}, {op.conv['pad']}) folded: "
            "certified as one convolution with that padding"
        )

    def float64_kernel() -> np.ndarray:
        # built when the task runs, so that one layer's float64 copy is alive at a time
        weight = op.weight.detach().to("cpu", torch.float64)
        if op.fold is not None:
            weight = weight * op.fold.scale.view((-1,) + (1,) * (weight.dim() - 1))
        return weight.numpy()

    out_node = op.fold.node if op.fold is not None else node
    row = LayerBound(
        name,
        typ,
        an.in_shape(in_node),
        an.out_shape(out_node),
        None,
        math.inf,
        "certified",
        "",
        "",
        notes=notes,
    )
    op.row = row
    size = an.in_shape(in_node)

    def task() -> None:
        start = time.perf_counter()
        kernel = float64_kernel()
        if op.kind in ("conv", "convT"):
            c = op.conv
            k4 = kernel[:, :, None, :] if kernel.ndim == 3 else kernel  # 1-D as one row
            d = k4.ndim - 2

            def spatial(shape: tuple[int, ...]) -> tuple[int, ...]:
                return (1, shape[-1]) if kernel.ndim == 3 else tuple(shape[-d:])

            hw = spatial(size)
            # a transposed conv: certify takes its transposed spec (the adjoint of the
            # forward conv on its output size, docs/certify.md L12)
            extra = (
                {"transposed": True, "output_padding": c["output_padding"]}
                if op.kind == "convT"
                else {}
            )
            spec = ConvSpec(
                c["padding"],
                c["pad"],
                hw,
                c["stride"],
                c["dilation"],
                c["groups"],
                ndim=d,
                **extra,
            )
            layer = ConvLayer(k4, spec)
            expected, traced = layer.out_size, spatial(an.out_shape(node))
            if expected != traced:
                raise AuditError(
                    f"{an.describe(node)}: specbound's geometry gives output size "
                    f"{expected}, the forward pass {traced}"
                )
            cert = an.certifier(k4, spec)
            pads = layer.pads
            pad_norm = layer.padding_norm()  # the per-axis maps' Kronecker product (L16)
            # pad_norm: d square roots and d - 1 products (2-D's count of 2 is covered by
            # _up's (ops + 1) u and its final ulp; 3-D takes the full count)
            pad_ops = 2 if d == 2 else 2 * d - 1
            axes = "((top, bottom), (left, right))" if d == 2 else "((lo, hi) per axis)"
            row.notes.append(
                f"{spec.padding} padding {pads} {axes}, stride "
                f"{spec.stride}, dilation {spec.dilation}, groups {spec.groups}, input "
                f"{'x'.join(map(str, hw))}"
            )
        else:
            k4 = kernel[:, :, None, None]  # W as a 1x1 convolution on a 1x1 input
            cert = an.certifier(k4, ConvSpec("zeros", "valid", (1, 1)))
            pad_norm, pad_ops = 1.0, 2
        lower, upper = cert.lower, cert.upper
        if op.merge_error:
            err = _up(op.merge_error * _up(pad_norm, pad_ops), 2)
            upper, lower = _up(upper + err, 1), _down(max(0.0, lower - err), 1)
            row.notes.append(f"merge rounding allowance {err:.3g} added to the bracket")
        if op.fold is not None:
            err = _fold_allowance(k4, _up(pad_norm, pad_ops))
            upper, lower = _up(upper + err, 1), _down(max(0.0, lower - err), 1)
            row.notes.append(f"fold rounding allowance {err:.3g} added to the bracket")
        row.lower, row.upper = lower, upper
        row.upper_method, row.lower_method = cert.upper_method, cert.lower_method
        row.converged = cert.converged
        row.certificate = cert if isinstance(cert, Certificate) else None
        row.notes += list(cert.notes)
        row.elapsed_s = time.perf_counter() - start

    op.task = task


def linear_module(an: Analysis, node: fx.Node, mod: nn.Module) -> _Op:
    """``nn.Linear`` (a subclass only if it computes ``x W^T + b``) and RescaledLinear."""
    if (
        isinstance(mod, nn.Linear)
        and type(mod).forward is not nn.Linear.forward
        and not conv_subclass_agrees(mod, an.in_shape(node))
    ):
        raise AuditError(
            f"{an.describe(node)} subclasses Linear but its forward is not x W^T + b "
            "with its weight; export it to a plain torch.nn.Linear before auditing"
        )
    return linear_op(an, node, mod.weight.detach())


def batchnorm_module(an: Analysis, node: fx.Node, mod: nn.Module) -> _Op:
    """Eval ``BatchNorm1d`` / ``BatchNorm2d`` (folded into the layer before it later)."""
    if mod.training or mod.running_var is None:
        raise AuditError(
            f"{an.describe(node)} normalises with batch statistics (training mode or "
            "track_running_stats=False): not a fixed function of one input"
        )
    return bn_op(an, node, mod.weight, mod.running_var, mod.eps)


def transposed_conv_module(an: Analysis, node: fx.Node, mod: nn.Module) -> _Op:
    """``ConvTranspose1d`` / ``ConvTranspose2d`` / ``ConvTranspose3d`` with zero padding
    (geometry read by :meth:`ConvSpec.from_module`), any ``output_padding``."""
    try:
        spec = ConvSpec.from_module(mod)
    except (TypeError, ValueError) as err:
        raise AuditError(f"{an.describe(node)}: {err}") from err
    return transposed_conv_op(
        an,
        node,
        mod.weight.detach(),
        spec.stride,
        spec.pad,
        spec.output_padding,
        spec.dilation,
        spec.groups,
    )


def functional_transposed_conv(an: Analysis, node: fx.Node, name: str) -> _Op:
    """``conv_transpose1d`` / ``conv_transpose2d`` / ``conv_transpose3d``."""
    b = _bind(
        node,
        ("input", "weight", "bias", "stride", "padding", "output_padding", "groups"),
        {"stride": 1, "padding": 0, "output_padding": 0, "groups": 1},
    )
    b.setdefault("dilation", node.args[7] if len(node.args) > 7 else 1)
    return transposed_conv_op(
        an,
        node,
        torch.as_tensor(an.const(b["weight"])).detach(),
        an.const(b["stride"]),
        an.const(b["padding"]),
        an.const(b["output_padding"]),
        an.const(b["dilation"]),
        int(an.const(b["groups"])),
    )
