"""The graph analyser: walks the traced graph and dispatches every input-dependent node to its
Lipschitz rule through one table: :data:`MODULE_RULES` (by module type) and
:data:`FUNCTION_RULES` (by function or method name). Each rule is a function
``rule(an, node, mod_or_name) -> _Op`` in the module of its concept (:mod:`.linear`,
:mod:`._activations`, :mod:`.normalization`, :mod:`._pooling`, :mod:`._padding`,
:mod:`.resample`, :mod:`.structural`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..layers import ConstrainedConv2d, MaxMin, RescaledLinear, SLLConv2d, SLLLinear, pad2d
from ..spec import ConvSpec
from ._activations import (
    ACTIVATION_MODULES,
    _function_activation,
    activation,
    activation_module,
    maxmin_module,
    sort_function,
    sorting_module,
    vector_norm_function,
)
from ._analysis import Analysis
from ._errors import AuditError
from ._graph import _Op, _op_name
from ._padding import PAD_MODULES, functional_pad, pad_module
from ._pooling import (
    adaptive_avg_module,
    adaptive_max_module,
    avg_pool_module,
    functional_adaptive_avg,
    functional_adaptive_max,
    functional_avg_pool,
    functional_max_pool,
    max_pool_module,
)
from ._trace import conv_subclass_agrees, is_peer_sorting_activation
from .linear import (
    batchnorm_module,
    conv_fields,
    conv_op,
    fold_batchnorm,
    functional_bn,
    functional_conv,
    functional_linear,
    functional_transposed_conv,
    linear_module,
    sll_op,
    transposed_conv_module,
)
from .normalization import NORM_FUNCS, NORM_MODULES, functional_norm, norm_module_op
from .resample import functional_resample, upsample_module
from .structural import (
    _DROPOUT_FUNCS,
    _STRUCT_FUNCS,
    cat_function,
    dropout_function,
    dropout_module,
    expand_function,
    identity_module,
    minmax_op,
    neg_function,
    reduce_op,
    scale_op,
    stochastic_depth_function,
    struct_function,
    sum_op,
)

ModuleRule = Callable[[Analysis, fx.Node, nn.Module], _Op]
"""``rule(an, node, module)``: the row of a ``call_module`` node."""

FunctionRule = Callable[[Analysis, fx.Node, str], _Op]
"""``rule(an, node, name)``: the row of a ``call_function`` / ``call_method`` node."""


PEER_LIBRARIES = ("deel.torchlip", "orthogonium")
"""Libraries whose layers are presented as 1-Lipschitz: the audit reports for each of their
layers whether that claim is confirmed (``upper <= 1``) or refuted (``lower > 1``)."""


def _peer_library(mod: Any) -> str:
    for cls in type(mod).__mro__ if mod is not None else ():
        for lib in PEER_LIBRARIES:
            if cls.__module__.startswith(lib + ".") or cls.__module__ == lib:
                return lib
    return ""


def _attention_refusal(where: str) -> str:
    return (
        f"{where} is attention (softmax(Q K^T) V multiplies input-dependent tensors): not "
        "globally Lipschitz (Kim, Papamakarios & Mnih, 'The Lipschitz constant of "
        "self-attention', ICML 2021), so no bound exists; audit the sub-network before it "
        "(e.g. the patch embedding), or use a Lipschitz attention (e.g. L2 attention)"
    )


def _attention_refusal(where: str) -> str:
    return (
        f"{where} is attention (softmax(Q K^T) V multiplies input-dependent tensors): not "
        "globally Lipschitz (Kim, Papamakarios & Mnih, 'The Lipschitz constant of "
        "self-attention', ICML 2021), so no bound exists; audit the sub-network before it "
        "(e.g. the patch embedding), or use a Lipschitz attention (e.g. L2 attention)"
    )


def _attention_module(an: Analysis, node: fx.Node, mod: nn.Module) -> _Op:
    raise AuditError(_attention_refusal(an.describe(node)))


def _attention_function(an: Analysis, node: fx.Node, name: str) -> _Op:
    """A product of two input-dependent tensors is attention (refused); with one it is a
    batched matrix product by a constant, which has no rule either."""
    if len(an.dep_inputs(node)) > 1:
        raise AuditError(_attention_refusal(an.describe(node)))
    raise an.no_function_rule(node)


# ------------------------------------------------- convolutions (geometry read from the module)
def _conv_module(an: Analysis, node: fx.Node, mod: nn.Module) -> _Op:
    """``Conv1d`` / ``Conv2d`` / ``Conv3d`` (a subclass only if it computes the plain
    convolution); the geometry read by :meth:`ConvSpec.from_module`."""
    try:
        spec = ConvSpec.from_module(mod)
    except (TypeError, ValueError) as err:
        raise AuditError(f"{an.describe(node)}: {err}") from err
    weight = mod.weight.detach()  # the effective weight of a parametrized conv
    if type(mod).forward not in (nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward):
        if not conv_subclass_agrees(mod, an.in_shape(node)):
            raise AuditError(
                f"{an.describe(node)} subclasses a convolution but its forward is not "
                "the plain convolution of its weight with its padding, stride, dilation "
                "and groups at this input size; export it to a plain torch.nn conv "
                "(e.g. the library's vanilla_export) before auditing"
            )
    conv = conv_fields(spec)

    def lin(x: torch.Tensor, w: torch.Tensor = weight) -> torch.Tensor:
        return mod._conv_forward(x, w.to(x), None)

    def absf(x: torch.Tensor, w: torch.Tensor = weight) -> torch.Tensor:
        return mod._conv_forward(x, w.to(x).abs(), None)

    return conv_op(an, node, weight, conv, lin, absf)


def _constrained_conv_module(an: Analysis, node: fx.Node, mod: nn.Module) -> _Op:
    """A ``specbound.layers`` constrained convolution (it pads in its own order)."""
    weight = mod.weight.detach()
    conv = conv_fields(mod.spec)

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

    return conv_op(an, node, weight, conv, c_lin, lambda x: c_lin(x, a=True))


# ---------------------------------------------------------------- the table
MODULE_RULES: tuple[tuple[type | tuple[type, ...], ModuleRule], ...] = (
    ((nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d), transposed_conv_module),
    ((nn.Conv1d, nn.Conv2d, nn.Conv3d), _conv_module),
    (ConstrainedConv2d, _constrained_conv_module),
    ((nn.Linear, RescaledLinear), linear_module),
    ((nn.BatchNorm1d, nn.BatchNorm2d), batchnorm_module),
    ((SLLConv2d, SLLLinear), sll_op),
    (MaxMin, maxmin_module),
    ((nn.Identity, nn.Flatten, nn.Unflatten), identity_module),
    (
        (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.FeatureAlphaDropout),
        dropout_module,
    ),
    (NORM_MODULES, norm_module_op),
    (nn.Upsample, upsample_module),  # also UpsamplingNearest2d / UpsamplingBilinear2d
    (nn.MultiheadAttention, _attention_module),
    (ACTIVATION_MODULES, activation_module),
    ((nn.AvgPool1d, nn.AvgPool2d), avg_pool_module),
    ((nn.MaxPool1d, nn.MaxPool2d), max_pool_module),
    ((nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d), adaptive_avg_module),
    ((nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d), adaptive_max_module),
    (PAD_MODULES, pad_module),
)
"""Module type -> rule, the first ``isinstance`` match wins (transposed convolutions before
convolutions). A peer library's sorting activation, matched by its exact class name, comes
first (:func:`~._trace.is_peer_sorting_activation`)."""


def _by_name(*groups: tuple[tuple[str, ...], FunctionRule]) -> dict[str, FunctionRule]:
    table: dict[str, FunctionRule] = {}
    for names, rule in groups:
        for name in names:
            if name in table:
                raise RuntimeError(f"function {name!r} has two rules")
            table[name] = rule
    return table


FUNCTION_RULES: dict[str, FunctionRule] = _by_name(
    (tuple(sorted(_STRUCT_FUNCS)), struct_function),
    (("add", "sub", "rsub"), sum_op),
    (("cat", "concat", "concatenate", "stack"), cat_function),
    (("mul", "truediv", "div"), scale_op),
    (("neg",), neg_function),
    (("mean", "sum"), reduce_op),
    (_DROPOUT_FUNCS, dropout_function),
    (("stochastic_depth",), stochastic_depth_function),  # torchvision.ops: identity in eval
    (("conv1d", "conv2d", "conv3d", "convolution", "_convolution"), functional_conv),
    (("conv_transpose1d", "conv_transpose2d", "conv_transpose3d"), functional_transposed_conv),
    (("linear", "addmm", "mm", "matmul"), functional_linear),
    (("batch_norm", "native_batch_norm", "_native_batch_norm_legit_no_training"), functional_bn),
    (("avg_pool1d", "avg_pool2d"), functional_avg_pool),
    (
        ("max_pool1d", "max_pool2d", "max_pool1d_with_indices", "max_pool2d_with_indices"),
        functional_max_pool,
    ),
    (
        ("adaptive_avg_pool1d", "adaptive_avg_pool2d", "_adaptive_avg_pool2d"),
        functional_adaptive_avg,
    ),
    (("adaptive_max_pool1d", "adaptive_max_pool2d"), functional_adaptive_max),
    (
        (
            "pad",
            "constant_pad_nd",
            "reflection_pad1d",
            "reflection_pad2d",
            "replication_pad1d",
            "replication_pad2d",
            "_pad_circular",
        ),
        functional_pad,
    ),
    (NORM_FUNCS, functional_norm),
    (("max", "min", "maximum", "minimum", "amax", "amin", "fmax", "fmin"), minmax_op),
    (("expand", "expand_as", "broadcast_to", "repeat", "tile"), expand_function),
    (("norm", "linalg_vector_norm", "vector_norm"), vector_norm_function),
    (("sort", "msort", "topk"), sort_function),
    (("interpolate", "upsample"), functional_resample),
    (
        ("scaled_dot_product_attention", "multi_head_attention_forward", "bmm", "baddbmm"),
        _attention_function,
    ),
)
"""Function or method name -> rule. The ATen ``upsample_*`` names go to
:func:`~.resample.functional_resample` too; any other name is looked up among the
elementwise activations (:func:`~._activations._function_activation`), then refused."""


def module_rule(mod: nn.Module) -> ModuleRule | None:
    """The rule of a module, or None."""
    if is_peer_sorting_activation(mod):
        return sorting_module
    for types, rule in MODULE_RULES:
        if isinstance(mod, types):
            return rule
    return None


class _Analyser(Analysis):
    """One analysis: the main pass over the graph, dispatching each node through the table."""

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
        fold_batchnorm(self)
        self.tag_peer_claims()

    def tag_peer_claims(self) -> None:
        """Mark the rows of layers from libraries that present them as 1-Lipschitz
        (:data:`PEER_LIBRARIES`), with the padding mode of convolutions."""
        for op in self.ops.values():
            if op.row is None or op.node.op != "call_module":
                continue
            mod = self.modules.get(str(op.node.target))
            lib = _peer_library(mod)
            if lib:
                op.row.claim = lib
                op.row.padding = str(getattr(mod, "padding_mode", "") or "")

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

    # ---------------------------------------------------------------- dispatch
    def parse_module(self, node: fx.Node, mod: nn.Module) -> _Op:
        rule = module_rule(mod)
        if rule is None:
            raise self.no_module_rule(node)
        return rule(self, node, mod)

    def parse_function(self, node: fx.Node) -> _Op:
        name, _ = _op_name(node)
        rule = FUNCTION_RULES.get(name)
        if rule is None and name.startswith(("upsample", "_upsample")):
            rule = functional_resample
        if rule is not None:
            return rule(self, node, name)
        act = _function_activation(name, node, self)
        if act is not None:
            return activation(self, node, *act)
        raise self.no_function_rule(node)
