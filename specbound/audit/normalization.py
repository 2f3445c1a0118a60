"""Lipschitz rules of the normalisation layers that use the statistics of their own input:
LayerNorm, GroupNorm, InstanceNorm (without running statistics) and RMSNorm, in eval mode.

The constant (docs/certify.md, "Normalisation layers"; theorem ``AUD-NORM`` of proofs_check)
----------------------------------------------------------------------------------------
One normalisation group of ``N`` entries maps ``x`` to ``gamma * g(P x) + beta`` with ``P = I -
11^T/N`` (centring; ``P = I`` for RMSNorm) and ``g(y) = y / s(y)``, ``s(y) = sqrt(|y|^2/N +
eps)``. Its Jacobian ``J_g(y) = (I - y y^T / (N s^2)) / s`` is symmetric with eigenvalues
``1/s`` (on ``y``'s orthogonal complement) and ``eps/s^3`` (along ``y``), both in ``(0,
1/sqrt(eps)]`` because ``s >= sqrt(eps)``, and ``J_g`` maps ``range(P)`` into itself. So at
every point ``||D J_g P|| <= ||D P|| / sqrt(eps)`` with ``D = diag(gamma)``, with equality at
``y = 0``; the map is smooth, hence

    Lip(group) = ||diag(gamma) P|| / sqrt(eps)   (0 when N = 1 with centring).

Groups act on disjoint sets of entries, so the layer's constant is the largest group's (the
squared differences add up). ``||diag(gamma) P|| <= max |gamma|`` gives the upper bound; the
witness ``v = e_i - 1/N`` (``i`` where ``|gamma|`` is largest, ``v`` is centred) gives the lower
bound ``||diag(gamma) v|| / ||v||``. The constant grows like ``1/sqrt(eps)`` (316 for
``eps = 1e-5``): a LayerNorm is **not** 1-Lipschitz, whatever ``gamma``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.fx as fx

from ._analysis import Analysis
from ._errors import AuditError
from ._graph import _bind, _Op
from ._outward import _down, _up


def normalization_lipschitz(
    gamma: np.ndarray | None,
    eps: float,
    group_size: int,
    *,
    repeat: int = 1,
    centred: bool = True,
) -> tuple[float, float]:
    """Rigorous bracket of the Lipschitz constant of one normalisation group.

    Parameters
    ----------
    gamma : numpy.ndarray or None
        The scales of the group's entries, one per ``repeat`` consecutive entries (GroupNorm:
        one per channel, repeated over the ``H W`` pixels); None for no affine scale (1).
    eps : float
        The ``eps`` added to the variance (positive).
    group_size : int
        ``N``, the number of entries normalised together.
    repeat : int
        How many entries share one ``gamma`` value.
    centred : bool
        True for LayerNorm/GroupNorm/InstanceNorm (mean subtracted), False for RMSNorm.

    Returns
    -------
    (lower, upper) : tuple of float
        ``lower <= ||diag(gamma) P|| / sqrt(eps) <= upper`` (module docstring).
    """
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")
    n = int(group_size)
    if n < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    g = np.ones(1) if gamma is None else np.abs(np.asarray(gamma, dtype=np.float64)).ravel()
    if g.size == 0:
        return 0.0, 0.0
    if not np.all(np.isfinite(g)):
        raise ValueError("gamma has non-finite entries")
    if gamma is None:
        g = np.ones(max(1, n // repeat))
    root = math.sqrt(float(eps))
    gmax = float(g.max())
    if centred and n == 1:
        return 0.0, 0.0  # x - mean(x) = 0: the output is the constant beta
    upper = _up(gmax / _down(root, 2), 2)
    if not centred:  # D itself: its norm is max |gamma|, attained at e_i
        return _down(gmax / _up(root, 2), 2), upper
    i = int(np.argmax(g))
    # ||D v||^2 for v = e_i - 1/N: entry i gets (1 - 1/N) gamma_i, every other entry -gamma/N
    sq = g[i] ** 2 * (1.0 - 1.0 / n) ** 2 + (float(np.sum(g**2)) * repeat - g[i] ** 2) / n**2
    ratio = math.sqrt(max(sq, 0.0) / (1.0 - 1.0 / n))
    lower = _down(ratio / _up(root, 2), 2 * len(g) + 12)
    return max(lower, 0.0), upper


# ---------------------------------------------------------------- rules


def _norm_row(
    an: Analysis,
    node: fx.Node,
    gamma: Any,
    eps: float,
    groups: list[tuple[int, int, int, int]],
    what: str,
    centred: bool = True,
) -> _Op:
    """``groups``: ``(first, stop, N, repeat)``: the group's slice of the flattened
    ``gamma``, its size and how many entries share one ``gamma``; the largest group's
    bracket is the layer's (disjoint groups)."""
    g = None if gamma is None else torch.as_tensor(gamma).detach().double().cpu().numpy()
    lows, ups = [], []
    for start, stop, size, repeat in groups[: 1 if g is None else len(groups)]:
        sub = None if g is None else g.ravel()[start:stop]
        lo, hi = normalization_lipschitz(sub, eps, size, repeat=repeat, centred=centred)
        lows.append(lo)
        ups.append(hi)
    op = _single_tensor_unary(an, node)
    name, typ = an.label(node)
    rule = (
        "||diag(gamma) P|| / sqrt(eps) <= max|gamma| / sqrt(eps)"
        if centred
        else "max|gamma| / sqrt(eps)"
    )
    op.row = an.row(
        node,
        name,
        typ,
        max(lows),
        max(ups),
        "exact",
        f"{what}, eps={eps:g}: {rule} (AUD-NORM)",
        "witness e_i - 1/N at the largest |gamma|",
        linear=False,
    )
    return op


def _single_tensor_unary(an: Analysis, node: fx.Node) -> _Op:
    deps = an.dep_inputs(node)
    if len(deps) != 1 or deps[0] is not node.args[0]:
        raise AuditError(
            f"{an.describe(node)} has an input-dependent weight, bias or statistic: "
            "only the normalised input may depend on the network input"
        )
    return _Op(node, "unary", [(deps[0], 1.0)], False)


def layer_norm_op(
    an: Analysis, node: fx.Node, normalized_shape: Any, weight: Any, eps: float
) -> _Op:
    n = math.prod(int(d) for d in normalized_shape)
    return _norm_row(an, node, weight, float(eps), [(0, n, n, 1)], f"LayerNorm over N={n}")


def group_norm_op(an: Analysis, node: fx.Node, num_groups: int, weight: Any, eps: float) -> _Op:
    shape = an.rec.info[node.args[0]].shape
    c = int(shape[1])
    hw = math.prod(shape[2:])
    per = c // int(num_groups)
    groups = [(k * per, (k + 1) * per, per * hw, hw) for k in range(int(num_groups))]
    return _norm_row(
        an, node, weight, float(eps), groups, f"GroupNorm, {num_groups} groups of N={per * hw}"
    )


def functional_norm(an: Analysis, node: fx.Node, name: str) -> _Op:
    if name in ("layer_norm", "native_layer_norm"):
        b = _bind(node, ("input", "normalized_shape", "weight", "bias", "eps"), {"eps": 1e-5})
        if name == "native_layer_norm":
            _only_first_output(an, node)
        return layer_norm_op(
            an,
            node,
            an.const(b["normalized_shape"]),
            an.const(b.get("weight")),
            float(an.const(b["eps"])),
        )
    if name == "group_norm":
        b = _bind(node, ("input", "num_groups", "weight", "bias", "eps"), {"eps": 1e-5})
        return group_norm_op(
            an,
            node,
            int(an.const(b["num_groups"])),
            an.const(b.get("weight")),
            float(an.const(b["eps"])),
        )
    if name == "native_group_norm":
        _only_first_output(an, node)
        b = _bind(node, ("input", "weight", "bias", "N", "C", "HxW", "group", "eps"))
        return group_norm_op(
            an, node, int(an.const(b["group"])), an.const(b["weight"]), float(b["eps"])
        )
    # rms_norm(input, normalized_shape, weight=None, eps=None)
    b = _bind(node, ("input", "normalized_shape", "weight", "eps"), {"eps": None})
    eps = an.const(b.get("eps"))
    if eps is None:  # torch uses the input's machine epsilon
        weight = an.const(b.get("weight"))
        dtype = weight.dtype if isinstance(weight, torch.Tensor) else torch.float32
        eps = float(torch.finfo(dtype).eps)
    dims = tuple(int(d) for d in an.const(b["normalized_shape"]))
    n = math.prod(dims)
    return _norm_row(
        an, node, an.const(b.get("weight")), float(eps), [(0, n, n, 1)], "RMSNorm", False
    )


def _only_first_output(an: Analysis, node: fx.Node) -> None:
    for user in node.users:
        index = user.args[1] if len(user.args) > 1 else None
        if user.op != "call_function" or index != 0:
            raise AuditError(
                f"{an.describe(user)} uses the mean or inverse standard deviation of "
                f"{an.describe(node)}: not globally Lipschitz, no rule"
            )


def norm_module_op(an: Analysis, node: fx.Node, mod: torch.nn.Module) -> _Op:
    from torch import nn

    if isinstance(mod, nn.LayerNorm):
        return layer_norm_op(an, node, mod.normalized_shape, mod.weight, mod.eps)
    if isinstance(mod, nn.GroupNorm):
        return group_norm_op(an, node, mod.num_groups, mod.weight, mod.eps)
    if isinstance(mod, nn.RMSNorm):
        dtype = mod.weight.dtype if mod.weight is not None else torch.get_default_dtype()
        eps = mod.eps if mod.eps is not None else float(torch.finfo(dtype).eps)
        n = math.prod(mod.normalized_shape)
        return _norm_row(an, node, mod.weight, float(eps), [(0, n, n, 1)], "RMSNorm", False)
    # InstanceNorm without running statistics: GroupNorm with one group per channel
    if mod.track_running_stats and not mod.training:
        raise AuditError(
            f"{an.describe(node)} normalises with running statistics: use BatchNorm, "
            "or track_running_stats=False (instance statistics, supported)"
        )
    c = int(an.rec.info[node.args[0]].shape[1])
    return group_norm_op(an, node, c, mod.weight if mod.affine else None, mod.eps)


NORM_FUNCS = ("layer_norm", "native_layer_norm", "group_norm", "native_group_norm", "rms_norm")

NORM_MODULES = (
    torch.nn.LayerNorm,
    torch.nn.GroupNorm,
    torch.nn.RMSNorm,
    torch.nn.InstanceNorm1d,
    torch.nn.InstanceNorm2d,
    torch.nn.InstanceNorm3d,
)
