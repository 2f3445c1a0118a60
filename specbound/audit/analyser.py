"""The graph analyser: walks the traced graph, dispatches every node to its Lipschitz rule
(the rule mixins of :mod:`.structural`, :mod:`.activations`, :mod:`.linear`, :mod:`.pooling`
and :mod:`.padding`) and records an :class:`_Op` per input-dependent node."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..spec import ConvSpec
from .activations import _ActivationRules, _function_activation, _module_activation
from .errors import AuditError
from .graph import _bind, _Op, _op_name, _type_name
from .linear import _LinearRules, conv_fields
from .normalization import _NormalizationRules
from .outward import _down, _up
from .padding import _pad_module_mode, _PaddingRules
from .pooling import _PoolingRules
from .report import LayerBound
from .resample import _ResampleRules
from .structural import _STRUCT_FUNCS, _StructuralRules
from .trace import _Info, _Recorder, conv_subclass_agrees, is_peer_sorting_activation


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


_NORM_FUNCS = ("layer_norm", "native_layer_norm", "group_norm", "native_group_norm", "rms_norm")

_ATEN_RESAMPLE = (
    ("nearest_exact", "nearest-exact"),
    ("nearest", "nearest"),
    ("bilinear", "bilinear"),
    ("trilinear", "trilinear"),
    ("bicubic", "bicubic"),
    ("linear", "linear"),
)


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


class _Analyser(
    _StructuralRules,
    _ActivationRules,
    _LinearRules,
    _PoolingRules,
    _PaddingRules,
    _NormalizationRules,
    _ResampleRules,
):
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

    # ---------------------------------------------------------------- modules
    def parse_module(self, node: fx.Node, mod: nn.Module) -> _Op:
        from ..layers import ConstrainedConv2d, MaxMin, RescaledLinear, SLLConv2d, SLLLinear
        from ..layers.padding import pad2d

        if isinstance(mod, (nn.Conv3d, nn.ConvTranspose3d)):
            raise AuditError(
                f"{self.describe(node)}: 3-D convolutions are not supported yet (1-D and 2-D "
                "convolutions and transposed convolutions are)"
            )
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d, nn.ConvTranspose2d)):
            try:
                spec = ConvSpec.from_module(mod)
            except (TypeError, ValueError) as err:
                raise AuditError(f"{self.describe(node)}: {err}") from err
        if isinstance(mod, (nn.ConvTranspose1d, nn.ConvTranspose2d)):
            return self.transposed_conv_op(
                node,
                mod.weight.detach(),
                spec.stride,
                spec.pad,
                spec.output_padding,
                spec.dilation,
                spec.groups,
            )
        if isinstance(mod, (nn.Conv1d, nn.Conv2d)):
            weight = mod.weight.detach()  # the effective weight of a parametrized conv
            if type(mod).forward not in (nn.Conv1d.forward, nn.Conv2d.forward):
                if not conv_subclass_agrees(mod, self.in_shape(node)):
                    raise AuditError(
                        f"{self.describe(node)} subclasses a convolution but its forward is not "
                        "the plain convolution of its weight with its padding, stride, dilation "
                        "and groups at this input size; export it to a plain torch.nn conv "
                        "(e.g. the library's vanilla_export) before auditing"
                    )
            conv = conv_fields(spec)

            def lin(x: torch.Tensor, w: torch.Tensor = weight) -> torch.Tensor:
                return mod._conv_forward(x, w.to(x), None)

            def absf(x: torch.Tensor, w: torch.Tensor = weight) -> torch.Tensor:
                return mod._conv_forward(x, w.to(x).abs(), None)

            return self.conv_op(node, weight, conv, lin, absf)
        if isinstance(mod, ConstrainedConv2d):
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

            return self.conv_op(node, weight, conv, c_lin, lambda x: c_lin(x, a=True))
        if isinstance(mod, (nn.Linear, RescaledLinear)):
            if (
                isinstance(mod, nn.Linear)
                and type(mod).forward is not nn.Linear.forward
                and not conv_subclass_agrees(mod, self.in_shape(node))
            ):
                raise AuditError(
                    f"{self.describe(node)} subclasses Linear but its forward is not x W^T + b "
                    "with its weight; export it to a plain torch.nn.Linear before auditing"
                )
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
        if is_peer_sorting_activation(mod):
            return self.act_op(
                node, 1.0, "sorts disjoint groups of entries (or |x|): 1-Lipschitz (AUD-MAX)"
            )
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
        if isinstance(
            mod,
            (
                nn.LayerNorm,
                nn.GroupNorm,
                nn.RMSNorm,
                nn.InstanceNorm1d,
                nn.InstanceNorm2d,
                nn.InstanceNorm3d,
            ),
        ):
            return self.norm_module_op(node, mod)
        if isinstance(mod, nn.Upsample):  # also UpsamplingNearest2d / UpsamplingBilinear2d
            return self.resample_op(node, str(mod.mode), lambda x: mod(x))
        if isinstance(mod, nn.MultiheadAttention):
            raise AuditError(_attention_refusal(self.describe(node)))
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
        if name == "stochastic_depth":  # torchvision.ops: the identity in eval
            b = _bind(node, ("input", "p", "mode", "training"), {"training": True})
            if bool(self.const(b["training"])) and float(self.const(b["p"])) > 0:
                raise AuditError(f"{self.describe(node)} is in training mode (random)")
            return self.struct_op(node, identity=True)
        if name in ("conv1d", "conv2d", "convolution", "_convolution"):
            return self.functional_conv(node, name)
        if name in ("conv_transpose1d", "conv_transpose2d"):
            b = _bind(
                node,
                ("input", "weight", "bias", "stride", "padding", "output_padding", "groups"),
                {"stride": 1, "padding": 0, "output_padding": 0, "groups": 1},
            )
            b.setdefault("dilation", node.args[7] if len(node.args) > 7 else 1)
            return self.transposed_conv_op(
                node,
                torch.as_tensor(self.const(b["weight"])).detach(),
                self.const(b["stride"]),
                self.const(b["padding"]),
                self.const(b["output_padding"]),
                self.const(b["dilation"]),
                int(self.const(b["groups"])),
            )
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
        if name in _NORM_FUNCS:
            return self.functional_norm(node, name)
        if name in ("max", "min", "maximum", "minimum", "amax", "amin", "fmax", "fmin"):
            return self.minmax_op(node, name)
        if name in ("expand", "expand_as", "broadcast_to", "repeat", "tile"):
            return self.expand_op(node)
        if name in ("norm", "linalg_vector_norm", "vector_norm"):
            b = _bind(node, ("input", "p", "dim"), {"p": 2})
            p = self.const(b.get("p", b.get("ord", 2)))
            if p not in (2, 2.0, "fro", None):
                raise AuditError(f"{self.describe(node)}: only the L2 norm has a rule")
            # 1-Lipschitz over disjoint groups: | |x| - |y| | <= |x - y| (AUD-MAX)
            return self.unary(node, linear=False, kind="norm")
        if name in ("sort", "msort", "topk"):  # 1-Lipschitz (AUD-MAX)
            return self.unary(node, linear=False, kind="sort")
        if name == "interpolate" or name.startswith(("upsample", "_upsample")):
            return self.functional_resample(node, name)
        if name in (
            "scaled_dot_product_attention",
            "multi_head_attention_forward",
            "bmm",
            "baddbmm",
        ):
            if len(self.dep_inputs(node)) > 1:
                raise AuditError(_attention_refusal(self.describe(node)))
        act = _function_activation(name, node, self)
        if act is not None:
            return self.activation(node, *act)
        raise AuditError(
            f"no Lipschitz rule for {self.describe(node)}; an operator without a rule is never "
            "assumed 1-Lipschitz (see specbound.audit's docstring for the supported ones)"
        )

    def functional_resample(self, node: fx.Node, name: str) -> _Op:
        if name == "interpolate" or name == "upsample":
            b = _bind(node, ("input", "size", "scale_factor", "mode"), {"mode": "nearest"})
            mode = str(self.const(b["mode"]))
        else:
            mode = next(
                (m for key, m in _ATEN_RESAMPLE if key in name),
                name,
            )
        fn = node.target
        extra = [self.const(v) for v in node.args[1:]]
        kw = {k: self.const(v) for k, v in node.kwargs.items()}
        if node.op == "call_method":
            return self.resample_op(node, mode, lambda x: getattr(x, str(fn))(*extra, **kw))
        return self.resample_op(node, mode, lambda x: fn(x, *extra, **kw))

    # ---------------------------------------------------------------- rules
