"""The certification strategy of each kind of layer (see ``docs/certify.md``).

Each route takes a validated :class:`~specbound.operators.ConvLayer` whose kernel has been
scaled by an exact power of two, and returns a :class:`Bracket` of rigorous bounds on ``||A||_2``.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from ..operators.circulant import embedding_size_axis
from ..operators.conv_layer import ConvLayer
from ..operators.dense import conv_matrix
from ..operators.sparse import conv_sparse
from ..spec import ConvSpec
from . import cholesky
from .bracket import max_lower, max_upper, relative_gap
from .cholesky import BandLayout, choose_layout, verified_norm_upper
from .rounding import U, gamma, up
from .symbol import PolyphaseSymbol
from .verified import verified_bracket, verified_sigma
from .witness import lanczos_direction, operator_lower, plane_wave

CHUNK_ENTRIES = 2**24  # complex entries of frequency matrices held at once (256 MiB)
DENSE_GRAM_LIMIT = 1536  # largest Gram size for the rigorous dense route
CHOLESKY_THETA = 0.5  # the first mu is lower * (1 + theta * rtol)
CHOLESKY_TRIES = 3  # factorizations at most per bracket


@dataclass
class Bracket:
    upper: float
    lower: float
    upper_method: str
    lower_method: str
    witness: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Context:
    rtol: float
    device: torch.device
    deadline: float | None
    kernel_error: float  # Frobenius bound on the error of the (scaled) kernel values

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.perf_counter() > self.deadline


def _real_direction(v: torch.Tensor) -> np.ndarray:
    """A real vector from a complex approximate singular vector of a real matrix."""
    arr = v.detach().to("cpu", torch.complex128).numpy()
    pivot = arr[np.argmax(np.abs(arr))]
    out = (arr * np.conj(pivot) / max(abs(pivot), 1e-300)).real
    return out / max(np.linalg.norm(out), 1e-300)


# ---------------------------------------------------------------------------- circulant
def circulant_route(layer: ConvLayer, ctx: Context, rtol: float | None = None) -> Bracket:
    """Circular layer, block-circulant (stride dividing the size): exact per frequency.

    Frequency matrices of the wrapped polyphase kernel with a rigorous error bound; Frobenius
    caps prune the frequencies that cannot exceed the running lower bound; the verified core
    (:mod:`~specbound.rigorous.verified`, L10) on the rest; the witness is the real plane
    wave of the best frequency.
    """
    rtol = ctx.rtol if rtol is None else rtol
    sym = PolyphaseSymbol.from_layer(layer, device=ctx.device, kernel_error=ctx.kernel_error)
    m = [n // s for n, s in zip(layer.input_size, layer.spec.stride, strict=True)]
    m1 = m[0]
    g, (p, q) = sym.groups, sym.shape
    rest = (*m[1:-1], m[-1] // 2 + 1)  # frequencies per first-axis row (half spectrum)
    half = math.prod(rest)
    rows_per_chunk = max(1, CHUNK_ENTRIES // max(1, g * half * p * q))
    upper, lower, best = 0.0, 0.0, None
    notes: list[str] = []
    for start in range(0, m1, rows_per_chunk):
        if start > 0 and ctx.out_of_time():
            # frequencies not reached: |M(w)| <= A_abs entrywise, so sigma_1(M(w)) <=
            # ||A_abs||_2 for every w (verified core on the small A_abs matrices)
            upper = max_upper(upper, _abs_symbol_bound(sym))
            notes.append(f"stopped by max_seconds after {start} of {m1} frequency rows")
            break
        rows = np.arange(start, min(m1, start + rows_per_chunk))
        mats = sym.on_grid(layer.input_size, rows)  # (g, r, *rest, p, q)
        flat = mats.reshape(-1, p, q)
        res = verified_bracket(
            flat, sym.error_bound, rtol, lower=lower, deadline=ctx.deadline, shared_level=True
        )
        upper = max_upper(upper, float(res.upper.max()))
        notes.extend(n for n in res.notes if n not in notes)  # e.g. Frobenius caps kept
        if res.vector is not None and res.lower > lower:
            gi, index = divmod(res.argmax, len(rows) * half)
            ui, other = divmod(index, half)
            freq = (int(rows[ui]), *(int(v) for v in np.unravel_index(other, rest)))
            lower, best = res.lower, (gi, freq, res.vector)
    witness = None
    if best is not None:
        gi, freq, vec = best
        witness = {"input": plane_wave(layer, gi, freq, vec), "frequency": freq, "group": gi}
    notes.insert(0, f"{m1 * half * g} frequency matrices, verified core (L10)")
    return Bracket(upper, lower, "circulant_verified_core", "plane_wave_witness", witness, notes)


def _abs_symbol_bound(sym: PolyphaseSymbol) -> float:
    """``max_groups ||A_abs||_2 + error_bound``: ``A_abs[o, (c, r)]`` sums ``|K|`` over the
    taps of phase ``r``; every frequency matrix is entrywise at most ``A_abs`` in modulus, so
    its norm is at most ``|| |M(w)| ||_2 <= ||A_abs||_2`` (Perron-Frobenius)."""
    taps = math.prod(sym.kernel.shape[3:])
    sums = sym.abs_matrix()
    # sums of at most prod(k) non-negative terms: exact <= computed / (1 - gamma)
    bound, *_ = verified_sigma(sums, 0.0, 1e-3)
    return up(float(bound.max()) / (1 - gamma(taps)) + sym.error_bound, 2)


# ---------------------------------------------------------------------------- dense
def dense_route(layer: ConvLayer, ctx: Context) -> Bracket:
    """Any layer small enough: the dense matrix with the verified core (L10).

    Entries of the matrix are sums of at most ``T = prod(k)`` taps (several taps meet one
    pixel only with reflect/replicate/circular wrapping), so ``||A~ - A||_2 <=
    gamma_T || conv(|K|) ||_F``; the kernel's own error adds ``T`` times its Frobenius
    bound.
    """
    a = conv_matrix(layer.kernel, layer.spec)
    taps = math.prod(layer.kernel_size)
    abs_fro = float(np.sqrt((conv_sparse(np.abs(layer.kernel), layer.spec).data ** 2).sum()))
    err = up(gamma(taps) * abs_fro * (1 + gamma(a.size)) + ctx.kernel_error * taps)
    mat = torch.from_numpy(a).to(ctx.device)[None]
    res = verified_bracket(mat, err, min(ctx.rtol, 1e-9), deadline=ctx.deadline)
    x = _real_direction(res.vector) if res.vector is not None else None
    witness, lower = None, 0.0
    if x is not None:
        x = x.reshape(layer.c_in, *layer.input_size)
        lower = operator_lower(layer, x, ctx.device)
        witness = {"input": x}
    return Bracket(
        max_upper(float(res.upper.max())),
        lower,
        "dense_verified_core",
        "dense_witness",
        witness,
        [f"verified core (L10) on the {a.shape} matrix"],
    )


def dense_fits(layer: ConvLayer) -> bool:
    return min(layer.in_dim, layer.out_dim) <= DENSE_GRAM_LIMIT and (
        8 * layer.in_dim * layer.out_dim <= 2**30
    )


# ---------------------------------------------------------------------------- every size
def _cells(counts: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Cells covering ``[0, 2pi)^{d-1} x [0, pi]`` (the last axis over the half torus),
    ``counts[i]`` per axis: centres ``(F, d)`` and half-widths ``(F, d)``."""
    spans = [2 * np.pi] * (len(counts) - 1) + [np.pi]
    axes = [span * (np.arange(n) + 0.5) / n for span, n in zip(spans, counts, strict=True)]
    centres = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(counts))
    widths = [span / (2 * n) for span, n in zip(spans, counts, strict=True)]
    half = np.broadcast_to(widths, centres.shape).copy()
    return centres, half


def cell_shrink(rho: np.ndarray) -> np.ndarray:
    """A lower bound on ``cos(rho / 2)`` for an upper bound ``rho`` on a cell's
    ``sum_i D_i h_i``, and 0 (no bound) from ``rho >= pi`` (L8): a cell's centre value
    is at least ``S`` times this when the cell holds a maximiser. The computed cosine of a
    value in ``[0, pi/2]`` errs by at most a few ulps of a number at most 1, far below the
    ``1e-14`` subtracted."""
    rho = np.asarray(rho, dtype=np.float64)
    ok = rho < math.pi * (1 - 1e-12)
    return np.where(ok, np.clip(np.cos(np.where(ok, rho, 0.0) / 2) - 1e-14, 0.0, 1.0), 0.0)


def check_every_size_pads(layer: ConvLayer) -> None:
    """Refuse an every-size (``input_size=None``) layer for which the symbol supremum ``S``
    is not a bound: the submatrix property behind L8.

    A zero-padded layer of any size, pad and stride is a submatrix of the convolution on
    ``Z^2`` (distinct output rows are distinct rows of the bi-infinite operator), so
    ``||A_n|| <= S`` for every pad. A circular layer is a submatrix of the block circulant
    (whose norm is at most ``S``) only when at most ``d(k-1)`` is padded in total per axis:
    a larger circular pad repeats output rows (a 1x1 kernel ``[1]`` with circular pad 1 on a
    1x1 input is the 3x3 all-ones matrix, norm 3 > S = 1).

    Raises
    ------
    ValueError
        for circular padding whose total pad exceeds ``d(k-1)`` on an axis.
    """
    if layer.spec.padding != "circular":
        return
    if any(lo + hi > e - 1 for (lo, hi), e in zip(layer.pads, layer.extent, strict=True)):
        totals = ", ".join(f"{lo}+{hi}" for lo, hi in layer.pads)
        degrees = tuple(e - 1 for e in layer.extent)
        size = "(H, W)" if layer.d == 2 else "(D, H, W)" if layer.d == 3 else "n"
        raise ValueError(
            f"pad={layer.spec.pad!r} with padding='circular' and input_size=None cannot be "
            f"certified: it pads ({totals}) in total per axis, more than "
            f"dilation*(kernel_size-1) = {degrees}, so output rows repeat and the "
            f"norm exceeds the symbol supremum at small sizes; pass input_size={size}, or a "
            "pad of at most dilation*(kernel_size-1) in total per axis"
        )


def support_layer(layer: ConvLayer) -> ConvLayer:
    """The stride-1 layer of the kernel cut to the bounding box of its non-zero taps.

    Its symbol is ``e^{i w.t0}`` times the full kernel's symbol (``t0`` the box's corner),
    a unimodular scalar, so both have the same singular values at every frequency: the
    every-size bound is unchanged, but the trigonometric degree, which sets how finely the
    Bernstein cells must be cut, is that of the support (a single tap is degree 0: exact).
    The pad is irrelevant to the symbol (``pad=0``).
    """
    k = layer.kernel
    box = []
    for ax in range(2, k.ndim):
        hit = np.flatnonzero(np.any(k != 0, axis=tuple(i for i in range(k.ndim) if i != ax)))
        box.append(slice(hit[0], hit[-1] + 1))
    cut = k[(slice(None), slice(None), *box)]
    return ConvLayer(np.ascontiguousarray(cut), layer.spec.replace(stride=1, pad=0))


def channel_blocks(kernel: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The connected components ``(out_channels, in_channels)`` of the bipartite graph with an
    edge ``(o, i)`` wherever ``K[o, i]`` has a non-zero tap (channels with none are left out).

    After permuting rows and columns the symbol is block diagonal with these blocks (and zero
    rows/columns), so ``S(K) = max_b S(K_b)``: each block is bounded separately, and each on
    its own bounding box (:func:`support_layer`).
    """
    edges = np.any(kernel != 0, axis=tuple(range(2, kernel.ndim)))  # (c_out, c_in)
    c_out, c_in = edges.shape
    seen_out, seen_in = np.zeros(c_out, bool), np.zeros(c_in, bool)
    blocks = []
    for start in np.flatnonzero(edges.any(axis=1)):
        if seen_out[start]:
            continue
        outs, ins = np.zeros(c_out, bool), np.zeros(c_in, bool)
        outs[start] = True
        while True:  # alternate: inputs read by these outputs, outputs reading these inputs
            new_ins = edges[outs].any(axis=0) | ins
            new_outs = edges[:, new_ins].any(axis=1) | outs
            if (new_ins == ins).all() and (new_outs == outs).all():
                break
            ins, outs = new_ins, new_outs
        seen_out |= outs
        seen_in |= ins
        blocks.append((np.flatnonzero(outs), np.flatnonzero(ins)))
    return blocks


def every_size_route(layer: ConvLayer, ctx: Context) -> Bracket:
    """Stride 1, every input size: ``S(K) = max_b S(K_b)`` over the channel blocks
    (:func:`channel_blocks`; ``groups=1``), each on its support's bounding box
    (:func:`support_layer`), by :func:`symbol_sup_route`. A witness of block ``b`` is one of
    ``K`` with the vector set to 0 on the other input channels (block ``b``'s inputs feed no
    other output)."""
    blocks = channel_blocks(layer.kernel) if layer.spec.groups == 1 else []
    if len(blocks) <= 1:
        return symbol_sup_route(support_layer(layer), ctx)
    parts = []
    for outs, ins in blocks:
        sub = ConvLayer(np.ascontiguousarray(layer.kernel[np.ix_(outs, ins)]), layer.spec)
        parts.append((symbol_sup_route(support_layer(sub), ctx), ins))
    upper = max_upper(*(b.upper for b, _ in parts))
    best, ins = max(parts, key=lambda part: max_lower(part[0].lower))
    witness = None
    if best.witness is not None:
        vec = np.asarray(best.witness["vector"])
        full = np.zeros(layer.c_in, dtype=vec.dtype)
        full[ins] = vec
        witness = {**best.witness, "vector": full}
    notes = [f"{len(blocks)} independent channel blocks, each bounded on its own", *best.notes]
    return Bracket(
        upper, max_lower(best.lower), best.upper_method, best.lower_method, witness, notes
    )


def symbol_sup_route(layer: ConvLayer, ctx: Context, *, max_cells: int = 200_000) -> Bracket:
    """``S = sup_w sigma_1(M(w))`` of the (polyphase) symbol: every input size.

    The Bernstein-Szegő inequality along a segment (L8): for the top singular pair ``(u, v)``
    at a maximiser ``w*``, ``f(w) = |u^* M(w) v|^2`` is a real trigonometric polynomial with
    degree ``D_i`` per axis, with ``0 <= f <= S^2`` and ``f(w*) = S^2``; along the segment to
    ``w`` the function ``F = 2 f / S^2 - 1`` is bounded by 1 and of exponential type
    ``tau = sum_i D_i |delta_i|`` (per unit length), so ``F >= cos(tau t)`` and
    ``f(w) >= S^2 cos^2(rho / 2)`` with ``rho = sum_i D_i |w_i - w*_i| <= pi``. For the cell
    (half-widths ``h``) that contains ``w*``, its centre ``c`` has ``rho <= sum_i D_i h_i``;
    hence ``S <= max_cells sigma_1(M(c)) / cos(rho_c / 2)`` (:func:`cell_shrink`); cells whose
    cap exceeds the target are split in two along every axis of positive degree until the gap
    closes (docs/certify.md L8, and L17 for ``d`` axes). The half torus (last axis in
    ``[0, pi]``) suffices because ``M(-w) = conj M(w)`` for a real kernel.

    Holds for every layer whose operator is a submatrix of the bi-infinite one (zero
    padding with any pad; circular padding with at most ``d(k-1)`` padded in total per axis:
    :func:`check_every_size_pads`). With stride 1 the symbol of the undilated kernel is used
    (same values); the witness records the dilation of the symbol it refers to.
    """
    spec = layer.spec
    symbol_dilation = list(spec.dilation)
    if all(s == 1 for s in spec.stride) and any(dil != 1 for dil in spec.dilation):
        symbol_dilation = [1] * layer.d
        # S(K dilated) = S(K): the symbol is K^(d w), the same set of values
        layer = ConvLayer(layer.kernel, spec.replace(dilation=1, pad=0, input_size=None))
    sym = PolyphaseSymbol.from_layer(
        layer, offsets=False, device=ctx.device, kernel_error=ctx.kernel_error
    )
    degree = tuple(int(v) for v in sym.degree)
    # the last axis covers the half torus [0, pi]: half as many cells
    counts = [1 if v == 0 else max(4, 8 * v) for v in degree[:-1]]
    counts.append(1 if degree[-1] == 0 else max(2, 4 * degree[-1]))
    centres, half = _cells(tuple(counts))
    target_rtol = ctx.rtol
    lower, best, settled, evaluated, levels = 0.0, None, 0.0, 0, 0
    notes: list[str] = []
    upper = math.inf
    parent_caps = np.full(centres.shape[0], np.inf)  # caps of the enclosing cells
    cells_per_chunk = max(1, CHUNK_ENTRIES // max(1, sym.groups * sym.shape[0] * sym.shape[1]))
    while centres.shape[0]:
        levels += 1
        f_all = centres.shape[0]
        rho = sum(v * half[:, i] for i, v in enumerate(degree)) * (1 + 8 * U)
        shrink = cell_shrink(rho)
        ok = shrink > 0
        sigma = np.full(f_all, np.inf)
        processed = f_all
        # cells in chunks (bounded memory); after the first level the deadline is checked
        # between chunks, and the cells not reached keep the cap of their enclosing cell
        for start in range(0, f_all, cells_per_chunk):
            if start > 0 and levels > 1 and ctx.out_of_time():
                processed = start
                break
            part = slice(start, min(f_all, start + cells_per_chunk))
            omega = torch.as_tensor(centres[part], dtype=torch.float64, device=ctx.device)
            mats = sym.at_points(omega)  # (g, F, p, q)
            g, f = mats.shape[:2]
            cell_target = torch.as_tensor(
                np.tile(shrink[part] * lower / (1 - target_rtol) * (1 - 4 * U), g),
                device=ctx.device,
            )
            res = verified_bracket(
                mats.reshape(g * f, *mats.shape[2:]),
                sym.error_bound,
                target_rtol / 4,
                lower=lower,
                deadline=ctx.deadline,
                threshold=cell_target,
                lazy=True,  # cells that cannot settle are split: their Frobenius cap suffices
                lazy_factor=torch.as_tensor(
                    np.tile(shrink[part] / (1 - target_rtol), g), device=ctx.device
                ),
            )
            evaluated += f
            if res.vector is not None and res.lower > lower:
                gi, fi = divmod(res.argmax, f)
                lower, best = res.lower, (gi, centres[start + fi].copy(), res.vector)
            sigma[part] = res.upper.reshape(g, f).max(dim=0).values.cpu().numpy()
        caps = np.full(f_all, np.inf)
        reached = ok.copy()
        reached[processed:] = False
        caps[reached] = sigma[reached] / shrink[reached] * (1 + 4 * U)
        caps = np.minimum(caps, parent_caps)  # a cell lies inside its enclosing cell
        target = lower / (1 - ctx.rtol)
        done = caps <= target
        if done.any():
            settled = max_upper(settled, float(caps[done].max()))
        open_caps = caps[~done]
        upper = max_upper(settled, float(open_caps.max()) if open_caps.size else 0.0)
        if not open_caps.size:
            break
        if processed < f_all or ctx.out_of_time():
            notes.append(f"stopped by max_seconds after {levels} refinement levels")
            break
        if evaluated + 4 * open_caps.size > max_cells:
            notes.append(f"stopped at {evaluated} symbol evaluations (max_cells={max_cells})")
            # the open cells kept Frobenius caps (lazy): verify them once for the final upper
            open_c = centres[~done]
            tight = _verified_cell_sigma(sym, open_c, ctx, cells_per_chunk)
            if tight is not None:
                again = tight / np.where(ok[~done], shrink[~done], 1.0) * (1 + 4 * U)
                again = np.where(ok[~done], again, np.inf)
                open_caps = np.minimum(open_caps, again)
                upper = max(settled, float(open_caps.max()))
            break
        # split the open cells in two along every axis of positive degree
        c, hw = centres[~done], half[~done]
        offs = [
            np.array(o) for o in itertools.product(*((-0.5, 0.5) if v else (0.0,) for v in degree))
        ]
        centres = np.concatenate([c + o * hw for o in offs])
        parent_caps = np.concatenate([open_caps] * len(offs))
        half = np.concatenate([hw * np.where(np.array(degree) > 0, 0.5, 1.0)] * len(offs))
    witness = None
    if best is not None:
        gi, w, vec = best
        witness = {
            "frequency": [float(v) for v in w],
            "group": gi,
            "vector": vec.detach().cpu().numpy(),
            "dilation": symbol_dilation,
        }
    notes.append(f"{evaluated} symbol evaluations over {levels} levels; degree {degree}")
    return Bracket(upper, lower, "symbol_bernstein_cells", "symbol_grid_witness", witness, notes)


def _verified_cell_sigma(
    sym: PolyphaseSymbol, centres: np.ndarray, ctx: Context, per_chunk: int
) -> np.ndarray | None:
    """Verified ``sigma_1`` upper bounds (max over groups) at the cell centres; None when the
    deadline passes first."""
    out = np.full(centres.shape[0], np.inf)
    for start in range(0, centres.shape[0], per_chunk):
        if ctx.out_of_time():
            return None
        part = slice(start, min(centres.shape[0], start + per_chunk))
        omega = torch.as_tensor(centres[part], dtype=torch.float64, device=ctx.device)
        mats = sym.at_points(omega)
        g, f = mats.shape[:2]
        res = verified_bracket(mats.reshape(g * f, *mats.shape[2:]), sym.error_bound, ctx.rtol / 4)
        out[part] = res.upper.reshape(g, f).max(dim=0).values.cpu().numpy()
    return out


# ---------------------------------------------------------------------------- zeros, size
EMBEDDING_CANDIDATES = 4


def embedding_layers(layer: ConvLayer) -> list[ConvLayer]:
    """Block-circulant layers that contain a zero-padded layer as a submatrix (theorem G1 of
    docs/proofs.md, lemma L6 of docs/certify.md): from the smallest embedding size per axis
    (:func:`~specbound.operators.circulant.embedding_size_axis`, any pads, stride and
    dilation) on, in steps of the stride, ``d(k-1)`` padded in total with the low pad
    ``min(lo, d(k-1))`` (the offset of a circulant only permutes its input).
    """
    axes = list(zip(layer.pads, layer.extent, layer.input_size, layer.stride, strict=True))
    sizes = [embedding_size_axis(n, lo, hi, s, e - 1) for (lo, hi), e, n, s in axes]
    pads = tuple((min(lo, e - 1), e - 1 - min(lo, e - 1)) for (lo, _hi), e, _n, _s in axes)
    out = []
    for i in range(EMBEDDING_CANDIDATES):
        spec = ConvSpec(
            "circular",
            pads,
            tuple(n + i * s for n, s in zip(sizes, layer.stride, strict=True)),
            layer.spec.stride,
            layer.spec.dilation,
            layer.groups,
            ndim=layer.d,
        )
        out.append(ConvLayer(layer.kernel, spec))
    return out


def zero_given_route(
    layer: ConvLayer, ctx: Context, *, tighten: bool = True, dense: bool = True
) -> Bracket:
    """Zero padding at a given size: dense when it fits (and ``dense``), else the circular
    embedding upper bound with a Lanczos witness on the true operator; when that misses
    ``rtol`` (and ``tighten``), the verified Cholesky test closes the gap
    (:func:`cholesky_tighten`).

    With the Cholesky step feasible (memory, time), one embedding size is enough to start
    from; the other sizes run only if the Cholesky step leaves the gap above ``rtol``.
    The banded Cholesky test is 2-D only: for a 3-D layer the bracket is the embedding's
    (a note says so when it misses ``rtol``)."""
    if dense and dense_fits(layer):
        return dense_route(layer, ctx)
    embeddings = embedding_layers(layer)
    first = len(embeddings)
    banded = tighten and layer.d == 2
    if banded and cholesky_plan(layer, ctx)[1] is None:
        first = 1
    result = _embedding_bracket(layer, ctx, embeddings[:first], None)
    if not banded:
        return _without_cholesky(layer, ctx, result) if tighten else result
    result = cholesky_tighten(layer, ctx, result)
    if relative_gap(result.upper, result.lower) > ctx.rtol and first < len(embeddings):
        result = _embedding_bracket(layer, ctx, embeddings[first:], result)
    return result


def _embedding_bracket(
    layer: ConvLayer, ctx: Context, embeddings: list[ConvLayer], start: Bracket | None
) -> Bracket:
    """The best circular-embedding upper bound over ``embeddings`` (theorem G1), kept only
    where it beats ``start``; without ``start``, the Lanczos witness is seeded from the first
    embedding's plane wave."""
    best = start
    # notes that stay whichever embedding wins (those of ``start`` but its "upper:" line)
    base = [] if start is None else [n for n in start.notes if not n.startswith("upper: ")]
    for emb in embeddings:
        if best is not None and (
            relative_gap(best.upper, best.lower) <= ctx.rtol or ctx.out_of_time()
        ):
            break
        b = circulant_route(emb, ctx, rtol=min(ctx.rtol / 10, 1e-6))
        notes = [f"upper: circular embedding at N={emb.input_size} (theorem G1)", *b.notes, *base]
        if best is None:  # the witness of the first embedding seeds Lanczos
            crop = (slice(None), *(slice(0, n) for n in layer.input_size))
            seed = b.witness["input"][crop] if b.witness else None
            x = _witness_direction(layer, seed, ctx, b.upper * (1 - 0.75 * ctx.rtol))
            lower = operator_lower(layer, x, ctx.device)
            best = Bracket(b.upper, lower, b.upper_method, "lanczos_witness", {"input": x}, notes)
        elif b.upper < best.upper:
            best = replace(best, upper=b.upper, upper_method=b.upper_method, notes=notes)
    assert best is not None
    return best


def _witness_direction(
    layer: ConvLayer, seed: np.ndarray | None, ctx: Context, target: float | None = None
) -> np.ndarray:
    """Lanczos from ``seed`` to a relative accuracy of ``rtol / 8`` (or until its ratio
    ``||A x|| / ||x||`` reaches ``target``, e.g. ``1 - 3 rtol / 4`` times the upper bound); under a
    deadline it stops at half the time left, so that ``max_seconds`` holds."""
    deadline = None
    if ctx.deadline is not None:
        now = time.perf_counter()
        deadline = now + 0.5 * max(0.0, ctx.deadline - now)
    tol = min(max(ctx.rtol / 8, 1e-12), 1e-4)
    return lanczos_direction(layer, seed, ctx.device, tol=tol, deadline=deadline, target=target)


# ---------------------------------------------------------------------------- verified Cholesky
_GEMM_RATE: dict[str, float] = {}


def gemm_rate(device: torch.device) -> float:
    """Measured float64 GEMM rate (flop/s) of ``device``, once per process (a warm-up, then
    the best of three 1024^3 products): for the time estimate of the verified Cholesky
    test."""
    key = str(device)
    if key not in _GEMM_RATE:
        a = torch.ones(1024, 1024, dtype=torch.float64, device=device)
        best = math.inf
        for i in range(4):
            t = time.perf_counter()
            (a @ a).sum().item()
            if i:
                best = min(best, time.perf_counter() - t)
        _GEMM_RATE[key] = 2 * 1024**3 / max(best, 1e-9)
    return _GEMM_RATE[key]


def cholesky_test(layer: ConvLayer, ctx: Context, mu: float, lower: float, layout: BandLayout):
    """One verified Cholesky test (L9) of ``||A|| <= mu`` on ``layout``, within the context's
    deadline, device and kernel error; ``lower`` only sets the test's shift."""
    return verified_norm_upper(
        layer,
        mu,
        lower=lower,
        kernel_error=ctx.kernel_error,
        device=ctx.device,
        deadline=ctx.deadline,
        layout=layout,
    )


def cholesky_plan(layer: ConvLayer, ctx: Context) -> tuple[BandLayout, str | None]:
    """The band layout of the verified Cholesky step, and why it cannot run (``None`` when it
    can): a band above :data:`~specbound.rigorous.cholesky.MAX_BAND_BYTES`, or an estimated
    factorization time (flops over :func:`gemm_rate`) beyond what ``max_seconds`` leaves."""
    layout = choose_layout(layer)
    if layout.band_bytes > cholesky.MAX_BAND_BYTES:
        return layout, (
            f"verified Cholesky skipped: its band needs {layout.band_bytes / 2**30:.3g} GiB, "
            f"above specbound.rigorous.cholesky.MAX_BAND_BYTES = "
            f"{cholesky.MAX_BAND_BYTES / 2**30:.3g} GiB"
        )
    if ctx.deadline is None:  # no budget: no estimate needed (and no GEMM timing paid)
        return layout, None
    seconds = layout.flops / gemm_rate(ctx.device)
    if time.perf_counter() + seconds > ctx.deadline:
        return layout, (
            f"verified Cholesky skipped: about {seconds:.3g} s per factorization "
            f"({layout.flops:.3g} flop), more than max_seconds leaves"
        )
    return layout, None


def _layout_note(layout: BandLayout) -> str:
    gram = "A^T A" if layout.side == "input" else "A A^T"
    return (
        f"verified Cholesky of mu^2 I - {gram} (docs/certify.md L9): order {layout.dim}, "
        f"{layout.n_blocks} blocks of {layout.block}, block bandwidth {layout.bandwidth}, "
        f"{layout.band_bytes / 2**30:.3g} GiB, {layout.flops:.3g} flop per factorization"
    )


def cholesky_tighten(layer: ConvLayer, ctx: Context, bracket: Bracket) -> Bracket:
    """Close a given-size bracket with the verified Cholesky test of
    ``mu^2 I - G >= 0`` (:func:`~specbound.rigorous.cholesky.verified_norm_upper`, L9).

    The first ``mu`` is ``lower (1 + theta rtol)`` with ``theta = 1/2``; if the factorization
    breaks down, the witness is refined once by a longer Lanczos run (a better ``lower``
    moves ``mu`` down with it), then ``mu`` moves to the geometric mean of ``mu`` and the
    current upper bound, up to :data:`CHOLESKY_TRIES` factorizations in all. Skipped, with a
    note, when the gap is already within ``rtol``, when there is no positive lower bound,
    when the band exceeds :data:`~specbound.rigorous.cholesky.MAX_BAND_BYTES`, or when the
    estimated time exceeds what is left before the deadline.
    """
    if relative_gap(bracket.upper, bracket.lower) <= ctx.rtol or ctx.out_of_time():
        return bracket
    x = (bracket.witness or {}).get("input")
    if bracket.lower <= 0 or x is None:
        return replace(
            bracket, notes=[*bracket.notes, "verified Cholesky: no positive lower bound"]
        )
    layout, skip = cholesky_plan(layer, ctx)
    if skip is not None:
        return replace(bracket, notes=[*bracket.notes, skip])
    lower, upper, method = bracket.lower, bracket.upper, bracket.upper_method
    mu = lower * (1 + CHOLESKY_THETA * ctx.rtol)
    tries, refined = [], False
    while len(tries) < CHOLESKY_TRIES and mu < upper and not ctx.out_of_time():
        res = cholesky_test(layer, ctx, mu, lower, layout)
        floor = f", rounding bound {res.rounding:.2g} mu^2" if res.accepted else ""
        tries.append(
            f"mu = lower*(1 + {mu / lower - 1:.3g}): {res.reason}{floor} ({res.seconds:.3g} s)"
        )
        if res.accepted:
            if res.upper < upper:
                upper, method = res.upper, "verified_cholesky"
            break
        if res.reason in ("time", "memory"):
            break
        if res.reason == "breakdown" and not refined:
            refined = True  # perhaps the witness is poor: one longer Lanczos run
            x2 = lanczos_direction(layer, x, ctx.device, tol=1e-14, maxiter=3000, ncv=64)
            low2 = operator_lower(layer, x2, ctx.device)
            if low2 > lower:  # keep the better witness; retry near it if it moved enough
                moved = low2 > lower * (1 + CHOLESKY_THETA * ctx.rtol / 4)
                lower, x = low2, x2
                if moved:
                    mu = lower * (1 + CHOLESKY_THETA * ctx.rtol)
                    continue
        mu = math.sqrt(mu * upper)
    notes = [*bracket.notes, _layout_note(layout), *tries]
    if method == "verified_cholesky":
        notes[0:0] = ["upper: verified Cholesky test (L9) replaces " + bracket.upper_method]
    witness = {**(bracket.witness or {}), "input": x}
    return Bracket(upper, lower, method, bracket.lower_method, witness, notes)


# ---------------------------------------------------------------------------- other modes
def padded_route(layer: ConvLayer, ctx: Context, *, dense: bool = True) -> Bracket:
    """Reflect, replicate, or a circular layer that is not block-circulant: dense when it
    fits (and ``dense``); else ``||A|| <= ||P_h|| ||P_w|| ||C_valid||`` with ``P`` the padding
    operator (exact norm) and ``C_valid`` the unpadded convolution at the padded size (bounded
    by its circular embedding), then the verified Cholesky test on the true operator when that
    misses ``rtol`` (:func:`cholesky_tighten`). Lower: Lanczos on the true operator."""
    if dense and dense_fits(layer):
        return dense_route(layer, ctx)
    axes = list(zip(layer.input_size, layer.pads, strict=True))
    p_norm = layer.padding_norm()  # L16: the norm of a Kronecker product, axis by axis
    valid = ConvLayer(
        layer.kernel,
        ConvSpec(
            "zeros",
            0,
            tuple(n + lo + hi for n, (lo, hi) in axes),
            layer.spec.stride,
            layer.spec.dilation,
            layer.groups,
            ndim=layer.d,
        ),
    )
    inner = zero_given_route(valid, ctx, tighten=False)
    # d square roots, d - 1 products in p_norm and one product here: 2d roundings; the
    # 2-D count of 2 (kept: its results unchanged) is covered by up()'s (ops + 1) u and its
    # final step of one ulp (> u relative), 3-D takes the full count
    upper = up(p_norm * inner.upper, 2 if layer.d == 2 else 2 * layer.d)
    x = _witness_direction(layer, None, ctx, upper * (1 - 0.75 * ctx.rtol))
    lower = operator_lower(layer, x, ctx.device)
    notes = [f"upper: ||padding operator|| = {p_norm:.6g} times the unpadded layer's bound"]
    result = Bracket(
        upper,
        lower,
        "padding_norm_times_" + inner.upper_method,
        "lanczos_witness",
        {"input": x},
        notes + inner.notes,
    )
    # the padding-operator factor is loose: the Cholesky test runs on the true operator
    # (reflect and replicate keep G banded; a wrapping circular pad makes it dense)
    if layer.d != 2:
        return _without_cholesky(layer, ctx, result)
    return cholesky_tighten(layer, ctx, result)


def _without_cholesky(layer: ConvLayer, ctx: Context, bracket: Bracket) -> Bracket:
    """A bracket that the banded verified Cholesky test (2-D only) cannot tighten: a note
    says so when it misses ``rtol``."""
    if relative_gap(bracket.upper, bracket.lower) <= ctx.rtol:
        return bracket
    note = (
        f"verified Cholesky: the banded test (L9) is 2-D only, not available for a "
        f"{layer.d}-D layer; the gap stays that of the upper route"
    )
    return replace(bracket, notes=[*bracket.notes, note])
