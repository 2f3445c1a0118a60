"""Grouped convolutions certified group by group (``docs/certify.md``, L18).

A layer with ``groups = g > 1`` is, after permuting its input and its output channels, block
diagonal with ``g`` independent ``groups=1`` layers (the kernel's slices ``K_j``), for every
padding mode, pad, stride, dilation and input size, and at every size. Its norm is therefore
``max_j ||A_j||``, and brackets combine as ``[max_j lower_j, max_j upper_j]``
(:func:`~specbound.rigorous.bracket.max_lower`, :func:`~specbound.rigorous.bracket.max_upper`:
a NaN upper becomes ``inf``).

:func:`grouped_route` certifies a grouped layer:

* identical groups (same sub-kernel) are certified once;
* where a route is batched over groups already (circular block-circulant layers, every input
  size), the distinct groups go to it in one call;
* otherwise (a given size with zero, reflect or replicate padding, or a circular layer that is
  not block-circulant) each distinct group gets a cheap rigorous cap from one batched
  circular-embedding pass (:func:`group_caps`); the groups are then taken the highest cap
  first: each is settled by one verified Cholesky test at the best lower bound so far, or
  else refined alone by its cheapest route, until every remaining cap is within ``rtol`` of
  the best lower bound (branch and bound). ``max_seconds`` is split over
  the groups still open; a group that runs out keeps its valid bracket.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..operators.conv_layer import ConvLayer
from ._routes import (
    CHOLESKY_THETA,
    Bracket,
    Context,
    cholesky_plan,
    cholesky_test,
    embedding_layers,
    padded_route,
    zero_given_route,
)
from .bracket import max_lower, max_upper
from .rounding import up
from .symbol import PolyphaseSymbol
from .verified import verified_bracket

DENSE_GROUP_LIMIT = 256
"""A group alone takes the dense route only up to this order (``min(in_dim, out_dim)``);
above it the embedding and the banded verified Cholesky test cost less (a depthwise group at
``n = 32``: about 1.5 s dense against about 0.1 s banded, on one CPU thread)."""

Route = Callable[[ConvLayer, Context], Bracket]


@dataclass
class GroupSplit:
    """The distinct groups of a grouped layer.

    Attributes
    ----------
    layers : list of ConvLayer
        One ``groups=1`` layer per distinct sub-kernel ``(c_out/g, c_in/g, kh, kw)``, with the
        layer's spec otherwise unchanged.
    members : list of list of int
        The original group indices of each distinct sub-kernel.
    groups : int
        ``g`` of the layer.
    """

    layers: list[ConvLayer]
    members: list[list[int]]
    groups: int

    @property
    def c_in_group(self) -> int:
        return self.layers[0].kernel.shape[1]


def split_groups(layer: ConvLayer) -> GroupSplit:
    """The layer's groups as ``groups=1`` layers, identical sub-kernels merged (bit for bit:
    ``-0.0`` and ``0.0`` count as different, which only costs a repeated certificate)."""
    g = layer.groups
    per = layer.c_out // g
    spec = layer.spec.replace(groups=1)
    seen: dict[bytes, int] = {}
    layers: list[ConvLayer] = []
    members: list[list[int]] = []
    for j in range(g):
        sub = np.ascontiguousarray(layer.kernel[j * per : (j + 1) * per])
        key = sub.tobytes()
        if key in seen:
            members[seen[key]].append(j)
            continue
        seen[key] = len(layers)
        layers.append(ConvLayer(sub, spec))
        members.append([j])
    return GroupSplit(layers, members, g)


def batched_layer(split: GroupSplit) -> ConvLayer:
    """The distinct groups as one grouped layer (``groups`` = number of distinct groups)."""
    kernel = np.concatenate([sub.kernel for sub in split.layers], axis=0)
    spec = split.layers[0].spec.replace(groups=len(split.layers))
    return ConvLayer(kernel, spec)


def embed_witness(witness: dict | None, split: GroupSplit, distinct: int) -> dict | None:
    """A witness of distinct group ``distinct`` (or of the batched layer, ``distinct=-1``) as
    a witness of the whole layer: an input is placed on the channels of the first group with
    that sub-kernel, zero elsewhere (the other groups read none of them); a symbol witness
    names that group."""
    if witness is None:
        return None
    out = dict(witness)
    c = split.c_in_group
    if "input" in witness:
        x = np.asarray(witness["input"])
        full = np.zeros((c * split.groups, *x.shape[1:]), dtype=x.dtype)
        if distinct >= 0:
            j = split.members[distinct][0]
            full[j * c : (j + 1) * c] = x
        else:  # batched layer: its group d holds channels d*c .. (d+1)*c
            for d, members in enumerate(split.members):
                j = members[0]
                full[j * c : (j + 1) * c] = x[d * c : (d + 1) * c]
        out["input"] = full
    if "group" in witness:
        d = int(witness["group"]) if distinct < 0 else distinct
        out["group"] = split.members[d][0]
    return out


def group_caps(split: GroupSplit, ctx: Context) -> np.ndarray:
    """Rigorous upper bounds on ``||A_j||`` for each distinct group at a given size, from one
    batched pass over the circular embedding (L6, theorem G1) of the zero-padded layer, or
    of the unpadded layer times the padding operator's norm (L7) for the other modes; ``inf``
    where no embedding exists (a pad above ``d(k-1)``) or the deadline passes first."""
    caps = np.full(len(split.layers), math.inf)
    layer = batched_layer(split)
    factor = 1.0
    if layer.spec.padding != "zeros":
        (top, bottom), (left, right) = layer.pads
        (h, w) = layer.input_size
        factor = layer.padding_norm()
        layer = ConvLayer(
            layer.kernel,
            layer.spec.replace(
                padding="zeros", pad=0, input_size=(h + top + bottom, w + left + right)
            ),
        )
    embeddings = embedding_layers(layer)
    if not embeddings:
        return caps
    emb = embeddings[0]
    sym = PolyphaseSymbol.from_layer(emb, device=ctx.device, kernel_error=ctx.kernel_error)
    (h, w), (sh, sw) = emb.input_size, emb.spec.stride
    m1, m2 = h // sh, w // sw
    g, (p, q) = sym.groups, sym.shape
    rows_per_chunk = max(1, 2**22 // max(1, g * (m2 // 2 + 1) * p * q))
    best = np.zeros(g)
    for start in range(0, m1, rows_per_chunk):
        if ctx.out_of_time():
            return caps
        rows = np.arange(start, min(m1, start + rows_per_chunk))
        mats = sym.on_grid((h, w), rows)  # (g, r, half, p, q)
        res = verified_bracket(mats.reshape(-1, p, q), sym.error_bound, 1e-6, deadline=ctx.deadline)
        upper = res.upper.reshape(g, -1)
        upper = torch.where(torch.isnan(upper), torch.full_like(upper, math.inf), upper)
        best = np.maximum(best, upper.max(dim=1).values.cpu().numpy())
    return np.array([up(float(b) * factor, 4) if factor != 1.0 else float(b) for b in best])


def _zero_group_upper(sub: ConvLayer, ctx: Context) -> float:
    """A group whose (scaled) kernel is zero: only the kernel's own error remains, and by
    the tap-sum argument (L-TAP) ``||A(E)|| <= ||P|| sum_t ||E_t||_F <= ||P|| T ||E||_F``."""
    if ctx.kernel_error == 0.0:
        return 0.0
    kh, kw = sub.kernel_size
    factor = 1.0 if sub.spec.input_size is None else sub.padding_norm()
    return up(ctx.kernel_error * kh * kw * factor, 6)  # two sqrt, three products


def _settle(sub: ConvLayer, ctx: Context, lower: float) -> float | None:
    """Settle a group that its cap cannot: one verified Cholesky test (L9) of
    ``||A_j|| <= mu = lower (1 + rtol / 2)``, with ``lower`` the best lower bound over the
    groups so far (it only sets the test's shift; soundness does not depend on it). Returns
    the proved upper bound, or None (no test fits, or it fails: the group is refined)."""
    if lower <= 0 or sub.is_circulant or min(sub.in_dim, sub.out_dim) <= DENSE_GROUP_LIMIT:
        return None
    if not sub.kernel.any() or ctx.out_of_time():
        return None
    layout, skip = cholesky_plan(sub, ctx)
    if skip is not None:
        return None
    mu = lower * (1 + CHOLESKY_THETA * ctx.rtol)
    res = cholesky_test(sub, ctx, mu, lower, layout)
    return res.upper if res.accepted else None


def group_route(sub: ConvLayer, ctx: Context, route: Route) -> Bracket:
    """The cheapest route for one group alone at a given size: for zero padding, the
    circular embedding and the banded verified Cholesky test rather than the dense matrix
    above :data:`DENSE_GROUP_LIMIT`; for reflect, replicate and circular pads that are not
    block-circulant, the padding-operator bound (L7) and the same Cholesky test, likewise;
    otherwise ``route``."""
    if not sub.kernel.any():
        bound = _zero_group_upper(sub, ctx)
        x = np.zeros((sub.c_in, *sub.input_size))
        x.flat[0] = 1.0
        return Bracket(bound, 0.0, "zero_group", "zero_group", {"input": x})
    if min(sub.in_dim, sub.out_dim) > DENSE_GROUP_LIMIT:
        if sub.spec.padding == "zeros" and embedding_layers(sub):
            return zero_given_route(sub, ctx, dense=False)
        if sub.spec.padding != "zeros" and not sub.is_circulant:
            return padded_route(sub, ctx, dense=False)
    return route(sub, ctx)


def grouped_route(layer: ConvLayer, ctx: Context, route: Route, *, batched: bool) -> Bracket:
    """Certify a grouped layer group by group (L18): ``[max_j lower_j, max_j upper_j]``.

    Parameters
    ----------
    layer : ConvLayer
        ``groups > 1``, kernel already scaled (as every route expects).
    ctx : Context
    route : callable
        The route for a layer as it is (``groups=1`` groups, or the batched distinct groups).
    batched : bool
        Whether ``route`` is batched over groups for this layer (circulant, every size): the
        distinct groups then go to it in one call; else branch and bound over the groups.
    """
    split = split_groups(layer)
    n_distinct = len(split.layers)
    head = f"{split.groups} groups ({n_distinct} distinct), norm = max over groups (L18)"
    if batched or n_distinct == 1:
        if n_distinct == 1:
            res = route(split.layers[0], ctx)
            return replace(
                res,
                witness=embed_witness(res.witness, split, 0),
                notes=[head + ": one group certified", *res.notes],
            )
        res = route(batched_layer(split), ctx)
        return replace(
            res,
            witness=embed_witness(res.witness, split, -1),
            notes=[head + ": batched in one call", *res.notes],
        )
    return _branch_and_bound(split, ctx, route, head)


def _branch_and_bound(split: GroupSplit, ctx: Context, route: Route, head: str) -> Bracket:
    caps = group_caps(split, ctx)
    caps = np.where(np.isnan(caps), math.inf, caps)  # a NaN is no bound
    uppers = caps.copy()
    lower, best = 0.0, None
    results: dict[int, Bracket] = {}
    tested: dict[int, str] = {}
    notes: list[str] = []
    for d in np.argsort(-caps, kind="stable"):
        d = int(d)
        target = lower / (1 - ctx.rtol)
        if caps[d] <= target:
            break  # sorted: every remaining cap is within rtol of the lower bound
        if ctx.out_of_time():
            notes.append(
                f"stopped by max_seconds after {len(results) + len(tested)} groups: the others "
                "keep their embedding caps"
            )
            break
        sub_ctx = ctx
        if ctx.deadline is not None:
            # half of what is left (all of it for the last open group): the highest caps,
            # which most likely hold the norm, get the most time, and every later group a
            # share; a group that runs out keeps its valid bracket
            open_groups = int(np.sum(caps > target)) - len(results) - len(tested)
            share = (ctx.deadline - time.perf_counter()) / min(2, max(1, open_groups))
            sub_ctx = replace(ctx, deadline=time.perf_counter() + share)
        proved = _settle(split.layers[d], sub_ctx, lower)
        if proved is not None:
            uppers[d] = min(caps[d], proved)
            tested[d] = "verified_cholesky"
            continue
        res = group_route(split.layers[d], sub_ctx, route)
        results[d] = res
        uppers[d] = min(caps[d], max_upper(res.upper))  # NaN -> inf, never below the cap
        if res.lower > lower:
            lower, best = res.lower, d
    upper = max_upper(*uppers)
    target = lower / (1 - ctx.rtol)
    rest = [d for d in range(len(uppers)) if d not in results and d not in tested]
    by_caps = sum(1 for d in rest if caps[d] <= target)
    notes.insert(
        0,
        f"{head}: {by_caps} groups settled by their embedding caps, {len(tested)} by one "
        f"verified Cholesky test at the best lower bound (L9), {len(results)} refined one at "
        "a time"
        + (f", {len(rest) - by_caps} left open with their caps" if by_caps < len(rest) else ""),
    )
    top = int(np.argmax(np.where(np.isnan(uppers), np.inf, uppers)))
    if top in results:
        upper_method = results[top].upper_method
    else:
        upper_method = tested.get(top, "group_embedding_caps")
    if best is None:
        return Bracket(upper, 0.0, upper_method, "none", None, notes)
    res = results[best]
    return Bracket(
        upper,
        max_lower(lower),
        upper_method,
        res.lower_method,
        embed_witness(res.witness, split, best),
        [*notes, *res.notes],
    )


__all__ = [
    "DENSE_GROUP_LIMIT",
    "GroupSplit",
    "batched_layer",
    "embed_witness",
    "group_caps",
    "group_route",
    "grouped_route",
    "split_groups",
]
