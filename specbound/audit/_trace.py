"""Tracing a model into a :class:`torch.fx.GraphModule` (``torch.fx`` symbolic tracing, or
``make_fx`` for TorchScript) and shape propagation by one real forward pass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from ..spec import ConvSpec
from ._errors import AuditError
from ._graph import _op_name


def _leaf_types() -> tuple[type, ...]:
    from ..layers import ConstrainedConv2d, ConvNorm2d, MaxMin, RescaledLinear, SLLConv2d, SLLLinear

    return (ConstrainedConv2d, ConvNorm2d, MaxMin, RescaledLinear, SLLConv2d, SLLLinear)


PEER_SORTING_ACTIVATIONS = frozenset(
    {
        "deel.torchlip.modules.activation.GroupSort",
        "deel.torchlip.modules.activation.GroupSort2",
        "deel.torchlip.modules.activation.FullSort",
        "deel.torchlip.modules.activation.MaxMin",
        "orthogonium.layers.custom_activations.MaxMin",
        "orthogonium.layers.custom_activations.Abs",
    }
)
"""Peer-library activations kept as leaves by qualified type name and bounded by 1: each
sorts disjoint groups of entries (GroupSort, FullSort, MaxMin: ``max``/``min`` of pairs) or
takes absolute values (theorem ``AUD-MAX``). Their forwards branch on Python values, which
torch.fx cannot trace."""


def _qualname(m: nn.Module) -> str:
    return f"{type(m).__module__}.{type(m).__qualname__}"


def is_peer_sorting_activation(m: nn.Module) -> bool:
    """Whether ``m`` is one of :data:`PEER_SORTING_ACTIVATIONS` (exact type, no subclass)."""
    return _qualname(m) in PEER_SORTING_ACTIVATIONS


_PLAIN_CONVS = (nn.Conv1d, nn.Conv2d)


def conv_subclass_agrees(m: nn.Module, shape: tuple[int, ...] | None = None) -> bool:
    """Whether a convolution or linear subclass (a parametrized or library layer) computes the
    plain convolution (linear map) of its effective ``weight`` with its own padding, stride,
    dilation and groups, on one random input (of ``shape`` without batch, or a small one). A
    subclass that does something else (an extra padding in its forward, a different operator)
    is traced through instead, and refused at audit time if it still disagrees at the true
    input size."""
    if isinstance(m, nn.Linear):
        plain: tuple = (nn.Linear.forward,)
    elif isinstance(m, _PLAIN_CONVS):
        plain = (nn.Conv1d.forward, nn.Conv2d.forward)
    else:
        return False
    if type(m).forward in plain:
        return True
    try:
        w = m.weight
        if isinstance(m, nn.Linear):
            shape = shape or (m.in_features,)
        elif shape is None:
            spec = ConvSpec.from_module(m)  # the one reader of a conv's geometry
            ks = tuple(w.shape[2:])
            side = max(8, 2 * max(spec.dilation) * (max(ks) - 1) + 4)
            shape = (w.shape[1] * spec.groups, *(side,) * len(ks))
        gen = torch.Generator().manual_seed(0)
        x = torch.randn((1, *shape), generator=gen).to(device=w.device, dtype=w.dtype)
        with torch.no_grad():
            got = m(x)
            if isinstance(m, nn.Linear):
                ref = torch.nn.functional.linear(x, w, m.bias)
            else:
                ref = m._conv_forward(x, w, m.bias)
        scale = float(ref.abs().max()) + float(w.detach().abs().max()) + 1.0
        return got.shape == ref.shape and float((got - ref).abs().max()) <= 1e-4 * scale
    except Exception:
        return False


class _Tracer(fx.Tracer):
    """torch.fx tracer that keeps specbound's layers as leaves and remembers which module's
    forward was being traced when tracing failed."""

    def __init__(self, root: nn.Module | None = None) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.failed_in: list[str] | None = None
        self.leaves = _leaf_types()
        # probed before tracing: a probe inside tracing would run through the patched
        # Module.__call__ and trace the parametrization instead
        self.conv_leaves = {
            id(m) for m in (root.modules() if root is not None else ()) if conv_subclass_agrees(m)
        }

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (
            isinstance(m, self.leaves)
            or is_peer_sorting_activation(m)
            or id(m) in self.conv_leaves
            or super().is_leaf_module(m, module_qualified_name)
        )

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


def trace(model: nn.Module, example: torch.Tensor | None = None) -> fx.GraphModule:
    """Symbolically trace ``model`` with :mod:`torch.fx`, falling back to :mod:`torch.export`.

    Kept as leaves (one node each, bounded by their own rule): specbound's layers, the peer
    activations of :data:`PEER_SORTING_ACTIVATIONS`, and convolution subclasses that compute a
    plain convolution of their effective weight (:func:`conv_subclass_agrees`). When
    ``torch.fx`` fails (Python control flow on tensor values) and ``example`` (a batch of one)
    is given, the model is exported with ``torch.export.export(model, (example,),
    strict=False)`` (ATen operators, module paths kept in each node's ``nn_module_stack``).
    The frontend used is in ``graph_module.meta["specbound_frontend"]``.

    Raises :class:`AuditError` naming the innermost module whose forward could not be traced
    (and why the export failed too).
    """
    tracer = _Tracer(model)
    try:
        graph = tracer.trace(model)
    except Exception as err:
        where = (
            f"in the forward of module '{tracer.failed_in[-1]}'"
            if tracer.failed_in
            else f"in the forward of the top-level {type(model).__name__}"
        )
        fx_error = f"{where}: {type(err).__name__}: {_first_line(err)}"
        if example is not None:
            try:
                gm = torch.export.export(model, (example,), strict=False).module()
            except Exception as err2:
                export_error = f"{type(err2).__name__}: {_first_line(err2)}"
            else:
                gm.meta["specbound_frontend"] = f"torch.export (torch.fx failed {fx_error})"
                return gm
        else:
            export_error = "not tried (no example input)"
        raise AuditError(
            f"cannot trace {type(model).__name__} with torch.fx: {fx_error}. torch.fx cannot "
            "follow Python control flow on tensor values or non-torch calls on tensors; "
            f"torch.export failed too ({export_error}); rewrite that forward, or export the "
            "model with torch.jit.script/trace"
        ) from None
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    gm.meta["specbound_frontend"] = "torch.fx.symbolic_trace"
    return gm


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
