"""Lipschitz rule of resampling (``nn.Upsample``, ``F.interpolate``, ATen ``upsample_*``).

Nearest, linear/bilinear/trilinear and area interpolation are linear maps ``A`` with
nonnegative entries (copies, convex combinations, averages). For such a map the Schur test
gives ``||A||_2^2 <= ||A||_1 ||A||_inf`` = (largest column sum) (largest row sum) (docs/certify.md,
"Resampling"; theorem ``AUD-RESAMPLE``): the column sums are ``A^T 1`` (one backward pass), the
row sums ``A 1`` (one forward pass). The lower end is the best of the witnesses ``1`` and
``A^T 1``: ``max(||A 1|| / ||1||, ||A A^T 1|| / ||A^T 1||)``. For nearest upsampling by integer
factors both ends equal ``sqrt(s_h s_w)`` (every pixel is copied ``s_h s_w`` times). Bicubic
interpolation has negative weights and is refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.fx as fx
from torch import nn

from ._analysis import Analysis
from ._errors import AuditError
from ._graph import _bind, _Op
from ._outward import _down, _up

NONNEGATIVE_MODES = ("nearest", "nearest-exact", "linear", "bilinear", "trilinear", "area")


def nonnegative_map_bracket(
    fn: Callable[[torch.Tensor], torch.Tensor], in_shape: tuple[int, ...]
) -> tuple[float, float]:
    """Rigorous bracket of ``||A||_2`` for a linear map ``x -> fn(x)`` with nonnegative entries.

    ``fn`` takes a float64 batch of one ``(1, *in_shape)`` and must be linear with entrywise
    nonnegative matrix (the caller's responsibility: interpolation modes of
    :data:`NONNEGATIVE_MODES`). Upper: Schur test ``sqrt(max colsum * max rowsum)``; lower:
    the witnesses ``1`` and ``A^T 1``. Every float64 sum is of nonnegative terms, so its
    relative error is below ``n u`` for ``n`` terms; ``n`` is bounded by the number of entries.
    """
    x = torch.ones((1, *in_shape), dtype=torch.float64, requires_grad=True)
    y = fn(x)
    (cols,) = torch.autograd.grad(y.sum(), x)
    y = y.detach()
    cols = cols.detach()
    ops = y.numel() + x.numel() + 8
    col_max = float(cols.max())
    row_max = float(y.max())
    upper = _up(math.sqrt(_up(col_max * row_max, ops)), 2)
    with torch.no_grad():
        w1 = float(y.norm()) / math.sqrt(x.numel())
        back = fn(cols)
        cnorm = float(cols.norm())
        w2 = float(back.norm()) / cnorm if cnorm > 0 else 0.0
    lower = _down(max(w1, w2), 2 * ops)
    return max(0.0, min(lower, upper)), upper


# ---------------------------------------------------------------- rules


def resample_op(
    an: Analysis, node: fx.Node, mode: str, fn: Callable[[torch.Tensor], torch.Tensor]
) -> _Op:
    if mode not in NONNEGATIVE_MODES:
        raise AuditError(
            f"{an.describe(node)} interpolates with mode {mode!r}: only the modes with "
            f"nonnegative weights {NONNEGATIVE_MODES} have a rule (bicubic has negative "
            "weights); use one of those"
        )
    lo, hi = nonnegative_map_bracket(fn, an.in_shape(node))
    op = an.unary(node, linear=True, lin=lambda x, *a, **k: fn(x), absf=lambda x, *a, **k: fn(x))
    name, typ = an.label(node)
    op.row = an.row(
        node,
        name,
        typ,
        lo,
        hi,
        "certified",
        f"{mode} resampling: Schur test sqrt(max column sum * max row sum) (AUD-RESAMPLE)",
        "witnesses 1 and A^T 1",
        linear=True,
    )
    return op


_ATEN_RESAMPLE = (
    ("nearest_exact", "nearest-exact"),
    ("nearest", "nearest"),
    ("bilinear", "bilinear"),
    ("trilinear", "trilinear"),
    ("bicubic", "bicubic"),
    ("linear", "linear"),
)


def functional_resample(an: Analysis, node: fx.Node, name: str) -> _Op:
    """``interpolate`` and the ATen ``upsample_*`` functions."""
    if name == "interpolate" or name == "upsample":
        b = _bind(node, ("input", "size", "scale_factor", "mode"), {"mode": "nearest"})
        mode = str(an.const(b["mode"]))
    else:
        mode = next(
            (m for key, m in _ATEN_RESAMPLE if key in name),
            name,
        )
    fn = node.target
    extra = [an.const(v) for v in node.args[1:]]
    kw = {k: an.const(v) for k, v in node.kwargs.items()}
    if node.op == "call_method":
        return resample_op(an, node, mode, lambda x: getattr(x, str(fn))(*extra, **kw))
    return resample_op(an, node, mode, lambda x: fn(x, *extra, **kw))


def upsample_module(an: Analysis, node: fx.Node, mod: nn.Module) -> _Op:
    """``nn.Upsample`` (also ``UpsamplingNearest2d`` / ``UpsamplingBilinear2d``)."""
    return resample_op(an, node, str(mod.mode), lambda x: mod(x))
