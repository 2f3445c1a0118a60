"""Tracing a model into a :class:`torch.fx.GraphModule` (``torch.fx`` symbolic tracing, or
``make_fx`` for TorchScript) and shape propagation by one real forward pass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from .errors import AuditError
from .graph import _op_name


def _leaf_types() -> tuple[type, ...]:
    from ..layers import ConstrainedConv2d, ConvNorm2d, MaxMin, RescaledLinear, SLLConv2d, SLLLinear

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
