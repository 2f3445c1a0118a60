"""The state of one analysis of a traced graph, and the helpers every Lipschitz rule uses.

A rule is a function ``rule(an, node, ...) -> _Op`` in the module of its concept
(:mod:`.linear`, :mod:`._activations`, :mod:`._pooling`, ...); it reads the recorded values and
shapes through the :class:`Analysis` it is given and builds its row with :meth:`Analysis.row`.
The dispatch from a module type or a function name to its rule is the table of
:mod:`._analyser`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx

from ._errors import AuditError
from ._graph import _Op, _op_name, _type_name
from ._outward import _down, _up
from ._report import LayerBound
from ._trace import _Info, _Recorder


def _module_path(node: fx.Node) -> str:
    """`` in module 'path' (Type)`` from the innermost entry of the node's module stack (set
    by torch.fx and torch.export), or the empty string at the top level."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path, typ = list(stack.values())[-1]
    typ = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    typ = typ.rsplit(".", 1)[-1]
    return f" in module '{path}' ({typ})" if path else ""


class Analysis:
    """One traced graph under analysis: the recorder of its forward pass, the options of the
    run, the operations found so far, and the helpers of the rules."""

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
        # certifier(kernel4, spec) -> Certificate-like: set by the run loop (runner._Runner)
        self.certifier: Any = None

    # ---------------------------------------------------------------- helpers
    def describe(self, node: fx.Node) -> str:
        if node.op == "call_module":
            mod = self.modules.get(str(node.target))
            return f"module '{node.target}' ({_type_name(mod)})"
        if node.op in ("call_function", "call_method"):
            return f"node '{node.name}' ({_op_name(node)[0]}){_module_path(node)}"
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

    def no_module_rule(self, node: fx.Node) -> AuditError:
        """The error for a module without a Lipschitz rule (nothing is assumed 1-Lipschitz)."""
        return AuditError(
            f"no Lipschitz rule for {self.describe(node)}: supported modules are convolutions, "
            "linear layers, eval BatchNorm, pooling, padding, the listed activations, "
            "Flatten/Identity/Dropout and specbound.layers (see specbound.audit's docstring)"
        )

    def no_function_rule(self, node: fx.Node) -> AuditError:
        """The error for a function or method without a Lipschitz rule."""
        return AuditError(
            f"no Lipschitz rule for {self.describe(node)}; an operator without a rule is never "
            "assumed 1-Lipschitz (see specbound.audit's docstring for the supported ones)"
        )
