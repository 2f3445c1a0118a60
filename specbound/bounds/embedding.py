"""Upper bounds from exact circular norms: embedding a zero-padded layer, and a Bernstein grid.

Notation (per spatial axis): input size ``n``, pads ``(lo, hi)``, dilation ``d``, kernel size
``k`` and ``D = d*(k-1)``, the dilated extent minus one. ``sigma_circ(N)`` is the exact norm of
the stride-1 circular layer of the kernel on the ``N_h x N_w`` torus (kernel wrapped), computed
by :func:`~specbound.bounds.sedghi.symbol_grid_max`; ``S(K) = sup_w sigma_max(K_hat(w))`` is the
norm of the convolution on the whole plane.

The every-size bounds (``bernstein_grid`` here, ``lipbound``, ``fantastic_four``) accept the
layers of :func:`require_symbol_bounded`, for two reasons:

* a zero-padded layer (any pads, any stride) is a *compression* of the bi-infinite convolution:
  zero-extend the input, convolve on ``Z^2``, keep distinct output positions; so its norm is at
  most ``S(K)`` and it is a row selection of its stride-1 version;
* a circular layer with at most ``D`` padded in total per axis (any split, any stride, any size,
  the kernel wrapped when ``n < k``) has at most ``n`` distinct output positions per axis, all
  rows of the stride-1 circulant: its norm is at most ``sigma_circ(n) <= S(K)``.

Reflect and replicate padding repeat input pixels and are outside both arguments.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..operators.circulant import embedding_size_axis
from ..operators.conv_layer import ConvLayer
from ..spec import Pair, check_pair
from ._numerics import as_float64
from .base import SIZE_GIVEN, SIZE_NONE, Bound, register
from .sedghi import symbol_grid_max


def dilated_degree(layer: ConvLayer) -> Pair:
    """``D = d*(k-1)`` per axis: the degree of the symbol as a trigonometric polynomial."""
    (eh, ew) = layer.extent
    return (eh - 1, ew - 1)


def require_symbol_bounded(layer: ConvLayer) -> None:
    """Refuse a layer that is not a compression of the plane convolution or of a circulant.

    Zero padding: any pads. Circular padding: at most ``d*(k-1)`` padded in total per axis
    (more would repeat output rows of the circulant, e.g. ``pad="full"``: on a 1x1 input a 3x3
    all-ones kernel with full circular padding has 3x3 outputs equal to ``9 x``, norm
    ``27 > S(K) = 9``).
    """
    if layer.spec.padding != "circular":
        return
    (top, bottom), (left, right) = layer.pads
    (dh, dw) = dilated_degree(layer)
    if top + bottom > dh or left + right > dw:
        raise ValueError(
            f"with padding='circular' this bound needs at most dilation*(k-1) = ({dh}, {dw}) "
            f"padded in total per axis (e.g. pad='same'), got pads ((top, bottom), (left, right))="
            f"{layer.pads}: larger pads repeat rows of the circulant"
        )


def circular_norm(kernel: torch.Tensor, layer: ConvLayer, grid: Pair) -> torch.Tensor:
    """``sigma_circ(N)``: exact norm of the stride-1 circular layer of ``kernel`` on ``grid``."""
    return symbol_grid_max(
        kernel, "spectral", size=grid, dilation=layer.spec.dilation, groups=layer.groups
    )[0]


# ----------------------------------------------------------------------------- embedding
def embedding_size(layer: ConvLayer) -> Pair:
    """Smallest torus per axis that embeds the layer: the least multiple of the stride ``s``
    that is ``>= n + max(min(lo, D), min(hi, D))`` (the lemma and its proof:
    :func:`specbound.operators.circulant.embedding_size_axis`; docs/certify.md, L6)."""
    (n_h, n_w), (dh, dw), (sh, sw) = layer.input_size, dilated_degree(layer), layer.spec.stride
    (top, bottom), (left, right) = layer.pads
    return (
        embedding_size_axis(n_h, top, bottom, sh, dh),
        embedding_size_axis(n_w, left, right, sw, dw),
    )


def embedding_candidates(layer: ConvLayer, extra: int = 2, sizes: Any = None) -> list[Pair]:
    """The tori tried: ``sizes`` if given (each validated), else ``N0 + j s`` for
    ``j <= extra`` (``N0`` from :func:`embedding_size`)."""
    low, (sh, sw) = embedding_size(layer), layer.spec.stride
    if sizes is None:
        if not isinstance(extra, int) or extra < 0:
            raise ValueError(f"extra must be a non-negative int, got {extra!r}")
        return [(low[0] + j * sh, low[1] + j * sw) for j in range(extra + 1)]
    grids = [check_pair(s, "sizes", 1) for s in sizes]
    if not grids:
        raise ValueError("sizes must list at least one (N_h, N_w)")
    for grid in grids:
        if grid[0] < low[0] or grid[1] < low[1] or grid[0] % sh or grid[1] % sw:
            raise ValueError(
                f"sizes: the torus {grid} does not embed the layer; each must be a multiple of "
                f"the stride {(sh, sw)} and >= n + max(min(pad_lo, D), min(pad_hi, D)), "
                f"i.e. >= {low} per axis"
            )
    return grids


def embedding_norms(
    kernel: torch.Tensor, layer: ConvLayer, extra: int = 2, sizes: Any = None
) -> dict[Pair, torch.Tensor]:
    """Exact norm of the strided circular layer (offset = the layer's top/left pads) on every
    candidate torus of :func:`embedding_candidates`."""
    (top, _), (left, _) = layer.pads
    spec = layer.spec
    norms = {}
    for grid in embedding_candidates(layer, extra, sizes):
        norms[grid] = symbol_grid_max(
            kernel,
            "spectral",
            size=grid,
            lo=(top, left),
            stride=spec.stride,
            dilation=spec.dilation,
            groups=spec.groups,
        )[0]
    return norms


def circular_embedding_norm(
    kernel: torch.Tensor, layer: ConvLayer, *, extra: int = 2, sizes: Any = None
) -> torch.Tensor:
    """``min_N ||C_N||`` over the embedding tori of a zero-padded layer (differentiable)."""
    return torch.stack(list(embedding_norms(kernel, layer, extra, sizes).values())).min()


@register(
    name="circular_embedding",
    kind="upper",
    reference="embedding of the zero-padded layer into a (strided) circulant, sigma_zero(n) "
    "<= sigma_circ(N) for N >= n + P (gap relation of Delattre, Barthelemy & Allauzen, arXiv "
    "2402.00240; proof in the docstring); circular norms by Sedghi et al., ICLR 2019, "
    "polyphase stride by Senderovich et al., NeurIPS 2022",
    paddings=("zeros",),
    input_size=SIZE_GIVEN,
    differentiable=True,
    cost="(extra+1) exact circular norms on ~(n+P)^2 grids",
    torch_func=circular_embedding_norm,
)
def circular_embedding(layer: ConvLayer, *, extra: int = 2, sizes: Any = None) -> Bound:
    """Upper bound on a zero-padded layer at its input size by exact circular norms.

    ``sigma_zero(n) <= sigma_circ(N)`` for every ``N >= n + max(min(lo, D), min(hi, D))`` per
    axis (:func:`embedding_size` has the proof; for ``lo = hi = P <= D`` it is the relation
    ``N >= n + P``, sharp: ``N = n + P - 1`` can fail). Pads larger than ``D`` only add zero
    output rows and are clipped to ``D``. A stride ``s`` embeds into the *strided* circular
    layer on a torus divisible by ``s`` (exact by the polyphase route), which is tighter than
    bounding the unstrided layer. Any dilation and groups.

    Parameters
    ----------
    extra : int
        Try the tori ``N0 + j s`` (both axes), ``j = 0..extra``; the value is the minimum.
    sizes : list of (N_h, N_w), optional
        Explicit tori to try instead (each must embed the layer).

    Returns
    -------
    Bound
        ``kind="upper"``; ``details["N"]`` is the torus attaining the minimum,
        ``details["tried"]`` every torus with its circular norm.
    """
    with torch.no_grad():
        norms = embedding_norms(as_float64(layer), layer, extra, sizes)
    tried = {g: float(v) for g, v in norms.items()}
    best = min(tried, key=tried.__getitem__)
    return Bound(
        value=tried[best],
        kind="upper",
        method="circular_embedding",
        details={"N": best, "tried": [[list(g), v] for g, v in tried.items()]},
    )


# ----------------------------------------------------------------------------- Bernstein grid
def bernstein_factor(degree: Pair, grid: Pair) -> float:
    """``1 / sqrt(1 - (pi^2/2) (D_h/N_h + D_w/N_w)^2)``, the G5 grid factor per axis.

    Proof. Let ``w*`` maximise ``sigma_max(K_hat)`` with top singular pair ``(u, v)`` and set
    ``f(w) = |u^H K_hat(w) v|^2``: a real trigonometric polynomial of degree ``D_h`` in ``w_1``
    and ``D_w`` in ``w_2`` (the taps sit at ``d*a``), with ``0 <= f <= S^2``, ``f(w*) = S^2``
    and ``grad f(w*) = 0``. Bernstein's inequality ``||T'|| <= n ||T||`` for real
    trigonometric polynomials of degree ``n``, applied once or twice per variable, gives
    ``|f_11| <= D_h^2 S^2``, ``|f_22| <= D_w^2 S^2`` and ``|f_12| <= D_h D_w S^2``. The grid
    point ``w_g`` nearest to ``w*`` is within ``h_i <= pi/N_i`` per axis, and Taylor's formula
    along the segment gives ``f(w_g) >= S^2 - (1/2)(D_h h_1 + D_w h_2)^2 S^2``. Since
    ``sigma_circ(N) >= sigma_max(K_hat(w_g)) >= sqrt(f(w_g))``,
    ``S <= sigma_circ(N) / sqrt(1 - (pi^2/2)(D_h/N_h + D_w/N_w)^2)``. With ``D_h = D_w = D``
    and ``N_h = N_w = N`` this is ``1/sqrt(1 - 2 pi^2 D^2/N^2)`` (valid for
    ``N > sqrt(2) pi D``).
    """
    t = degree[0] / grid[0] + degree[1] / grid[1]
    slack = 1.0 - 0.5 * math.pi**2 * t**2
    if slack <= 0:
        raise ValueError(
            f"N: the Bernstein grid factor needs (pi^2/2) (D_h/N_h + D_w/N_w)^2 < 1 with "
            f"D = dilation*(k-1) = {degree}; the grid {grid} is too coarse"
        )
    return 1.0 / math.sqrt(slack)


def bernstein_default_grid(degree: Pair, rtol: float) -> Pair:
    """Smallest grid with factor ``<= 1 + rtol``, splitting ``D_h/N_h = D_w/N_w`` (least work)."""
    if not rtol > 0:
        raise ValueError(f"rtol must be > 0, got {rtol!r}")
    budget = math.sqrt(2.0 * (1.0 - (1.0 + rtol) ** -2)) / math.pi  # D_h/N_h + D_w/N_w
    active = sum(1 for dd in degree if dd > 0)
    grid = tuple(1 if dd == 0 else math.ceil(active * dd / budget) for dd in degree)
    while bernstein_factor(degree, grid) > 1.0 + rtol:  # guard the ceiling against rounding
        grid = tuple(g + (dd > 0) for g, dd in zip(grid, degree, strict=True))
    return grid


def bernstein_parts(
    kernel: torch.Tensor, layer: ConvLayer, N: Any, rtol: float
) -> tuple[torch.Tensor, float, Pair]:
    """``(sigma_circ(N), bernstein_factor, N)`` with ``N`` defaulted from ``rtol``."""
    degree = dilated_degree(layer)
    grid = bernstein_default_grid(degree, rtol) if N is None else check_pair(N, "N", 1)
    factor = bernstein_factor(degree, grid)
    return circular_norm(kernel, layer, grid), factor, grid


def bernstein_grid_norm(
    kernel: torch.Tensor, layer: ConvLayer, *, N: Any = None, rtol: float = 0.01
) -> torch.Tensor:
    """``sigma_circ(N) * bernstein_factor`` (differentiable in ``kernel``)."""
    circ, factor, _ = bernstein_parts(kernel, layer, N, rtol)
    return circ * factor


@register(
    name="bernstein_grid",
    kind="upper",
    reference="S(K) <= sigma_circ(N)/sqrt(1 - 2 pi^2 D^2/N^2) from Bernstein's inequality "
    "(gap relation G5; per-axis form derived in the docstring); circular norms by Sedghi et "
    "al., ICLR 2019",
    paddings=("zeros", "circular"),
    input_size=SIZE_NONE,
    differentiable=True,
    cost="one exact circular norm on an N_h x N_w grid; N ~ 63 D for 1% slack",
    check=require_symbol_bounded,
    torch_func=bernstein_grid_norm,
)
def bernstein_grid(layer: ConvLayer, *, N: Any = None, rtol: float = 0.01) -> Bound:
    """Upper bound on ``S(K)``, hence on the layer at every input size, from one circular norm.

    ``S(K) <= sigma_circ(N) / sqrt(1 - (pi^2/2)(D_h/N_h + D_w/N_w)^2)`` (proof in
    :func:`bernstein_factor`). ``S(K)`` bounds every zero-padded layer of the kernel (any
    size, pads, stride) and every circular layer with at most ``D`` padded per axis.

    Parameters
    ----------
    N : int or (int, int), optional
        The grid. Default: the smallest with factor ``<= 1 + rtol``.
    rtol : float
        Target slack of the factor when ``N`` is not given.

    Returns
    -------
    Bound
        ``kind="upper"``; ``details``: the grid ``N``, ``sigma_circ`` and ``factor``.
    """
    with torch.no_grad():
        circ, factor, grid = bernstein_parts(as_float64(layer), layer, N, rtol)
    return Bound(
        value=float(circ) * factor,
        kind="upper",
        method="bernstein_grid",
        details={"N": grid, "sigma_circ": float(circ), "factor": factor},
    )
