"""LipBound: Araujo, Negrevergne, Chevaleyre & Atif, "On Lipschitz Regularization of
Convolutional Layers using Toeplitz Matrix Theory", AAAI 2021.

The bound samples the kernel's symbol ``K_hat(w)`` on a grid of ``n_s`` points per axis, takes
the largest (Frobenius, as published, or spectral) norm and multiplies by a correction factor
that covers the whole torus. Two corrections from the published code are made here:

* the grid has ``n_s`` **distinct** samples ``2 pi j / n_s`` (the reference code's
  ``linspace(0, 2 pi, n_s)`` repeats ``0 = 2 pi``, leaving ``n_s - 1`` of them while its factor
  uses ``n_s``);
* the factor is always applied (the reference torch ``v1`` path omits it), and in float64.

Correction factor (proved in :func:`axis_factor`). Per axis with ``D = d*(k-1)``:
``sec(pi D / (2 n_s))`` (``factor="secant"``), or the paper's ``1/(1 - D/n_s)`` applied as
``1/sqrt((1 - D_h/n_h)(1 - D_w/n_w))`` (``factor="araujo"``, equal to the paper's
``1/(1 - (k-1)/n_s)`` for square kernels), which dominates the secant product when
``n_s >= 2 D`` per axis. The bound holds for the spectral or the Frobenius norm alike.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ..operators.conv_layer import ConvLayer
from ..operators.frequency import FrequencyEngine
from ..spec import Pair, check_pair
from ._numerics import as_float64, safe_sqrt, scale_down, scale_up
from .base import SIZE_NONE, Bound, register
from .embedding import dilated_degree, require_symbol_bounded
from .sedghi import NORMS, symbol_grid_max

FACTORS = ("araujo", "secant")
DEFAULT_SAMPLES = 50
"""Samples per axis by default, as in the published code (raised to ``2 D`` where needed)."""


def axis_factor(degree: int, samples: int, factor: str) -> float:
    """Correction for one axis: ``sup_x ||P(x)|| <= c * max_j ||P(2 pi j / n_s)||``.

    Here ``P(x) = sum_{a=0}^{D} P_a e^{-i a x}`` is matrix-valued and ``||.||`` any norm.

    Proof. Let ``x*`` attain ``M = sup ||P||`` and pick ``Q`` in the dual unit ball with
    ``Re <Q, P(x*)> = M``. Then ``psi(y) = Re(e^{i D y} <Q, P(2y)>)`` is a real trigonometric
    polynomial of degree ``D`` in ``y`` (frequencies ``D - 2a``), bounded by ``M``, with
    ``psi(x*/2) = M``. The Bernstein-Szego inequality ``T'^2 + D^2 T^2 <= D^2 ||T||^2`` gives
    ``psi(y) >= M cos(D |y - x*/2|)`` while ``D |y - x*/2| <= pi``. The nearest sample is within
    ``pi / n_s`` of ``x*``, i.e. ``pi / (2 n_s)`` in ``y``, so
    ``max_j ||P(x_j)|| >= M cos(pi D / (2 n_s))`` for ``n_s > D``: the secant factor.
    Since ``cos(pi t) >= 1 - 2t`` on ``[0, 1/2]``, ``sec(pi t / 2)^2 <= 1/(1 - t)`` for
    ``t = D/n_s <= 1/2``: the ``"araujo"`` factor ``1/sqrt(1 - D/n_s)`` per axis dominates it.
    """
    if factor not in FACTORS:
        raise ValueError(f"factor must be one of {FACTORS}, got {factor!r}")
    if degree == 0:
        return 1.0
    if factor == "secant":
        if samples <= degree:
            raise ValueError(
                f"n_samples: the secant factor needs n_samples > dilation*(k-1) = {degree}, "
                f"got {samples}"
            )
        return 1.0 / math.cos(math.pi * degree / (2 * samples))
    if samples < 2 * degree:
        raise ValueError(
            f"n_samples: the Araujo factor 1/(1 - D/n_s) is proved here for n_samples >= "
            f"2*dilation*(k-1) = {2 * degree}, got {samples}; use more samples or "
            f"factor='secant'"
        )
    return 1.0 / math.sqrt(1.0 - degree / samples)


def correction_factor(degree: Pair, samples: Pair, factor: str) -> float:
    """Two-axis correction: the product of :func:`axis_factor` over the axes.

    Apply the one-axis statement along ``w_1`` at ``w_2 = w_2*`` (a sample ``w_1g`` keeps at
    least ``S / c_h``), then along ``w_2`` at ``w_1 = w_1g``.
    """
    return axis_factor(degree[0], samples[0], factor) * axis_factor(degree[1], samples[1], factor)


def grid_samples(layer: ConvLayer, n_samples: Any) -> Pair:
    """Samples per axis: ``n_samples`` if given, else ``max(50, 2 D)``."""
    if n_samples is not None:
        return check_pair(n_samples, "n_samples", 1)
    return tuple(max(DEFAULT_SAMPLES, 2 * dd) for dd in dilated_degree(layer))


def channel_autocorrelation(kernel: torch.Tensor, groups: int) -> torch.Tensor:
    """``R_g[delta] = sum_{o, c in group g} sum_a K[o, c, a] K[o, c, a + delta]``.

    Shape ``(groups, 2 kh - 1, 2 kw - 1)``, ``delta`` from ``-(k-1)`` to ``k-1``: the full
    spatial autocorrelation summed over the channel pairs of each group (one grouped
    ``conv2d``, the kernel correlated with itself). By Parseval per frequency,
    ``||K_hat_g(w)||_F^2 = sum_delta R_g[delta] e^{-i d w . delta}``: a scalar trigonometric
    polynomial, so the Frobenius grid costs ``O(k^2)`` per sample instead of ``O(c^2 k^2)``.
    """
    c_out, c_in_g, kh, kw = kernel.shape
    image = kernel.reshape(1, c_out * c_in_g, kh, kw)
    weight = kernel.reshape(groups, (c_out // groups) * c_in_g, kh, kw)
    return F.conv2d(image, weight, padding=(kh - 1, kw - 1), groups=groups)[0]


def frobenius_grid_max(kernel: torch.Tensor, layer: ConvLayer, samples: Pair) -> torch.Tensor:
    """``max_{j, g} ||K_hat_g(2 pi j / n_s)||_F`` from :func:`channel_autocorrelation`: the
    autocorrelation is a one-channel kernel on the lags ``-(k-1)..k-1`` (low pad
    ``d*(k-1)``), whose frequency "matrices" are the squared Frobenius norms."""
    scaled, e = scale_down(kernel)
    corr = channel_autocorrelation(scaled, layer.groups)  # (g, 2kh-1, 2kw-1)
    (d_h, d_w), (kh, kw) = layer.spec.dilation, layer.kernel_size
    engine = FrequencyEngine(
        corr[:, None], samples, lo=(d_h * (kh - 1), d_w * (kw - 1)), dilation=(d_h, d_w)
    )
    values = engine.on_grid(half=False).real  # (F, g, 1, 1)
    return scale_up(safe_sqrt(values.max()), e)


def sampled_symbol(
    kernel: torch.Tensor, layer: ConvLayer, n_samples: Any, norm: str, factor: str
) -> tuple[torch.Tensor, float, Pair]:
    """``(max_j ||K_hat(2 pi j / n_s)||, correction, n_s)`` on ``n_s`` distinct samples per axis.

    Groups: the symbol is block diagonal, so its norm is the maximum over groups of the
    per-group norms (not their Frobenius combination, not a product).
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    samples = grid_samples(layer, n_samples)
    scale = correction_factor(dilated_degree(layer), samples, factor)
    if norm == "frobenius":
        return frobenius_grid_max(kernel, layer, samples), scale, samples
    grid_max = symbol_grid_max(
        kernel, "spectral", size=samples, dilation=layer.spec.dilation, groups=layer.groups
    )[0]
    return grid_max, scale, samples


def lipbound_norm(
    kernel: torch.Tensor,
    layer: ConvLayer,
    *,
    n_samples: Any = None,
    norm: str = "frobenius",
    factor: str = "araujo",
) -> torch.Tensor:
    """``correction * max_j ||K_hat(2 pi j / n_s)||`` (differentiable in ``kernel``)."""
    grid_max, scale, _ = sampled_symbol(kernel, layer, n_samples, norm, factor)
    return grid_max * scale


@register(
    name="lipbound",
    kind="upper",
    reference="Araujo, Negrevergne, Chevaleyre & Atif, On Lipschitz Regularization of "
    "Convolutional Layers using Toeplitz Matrix Theory, AAAI 2021 (grid maximum of the symbol "
    "times a sampling correction; n_s distinct samples, factor proved in the docstring)",
    paddings=("zeros", "circular"),
    input_size=SIZE_NONE,
    differentiable=True,
    cost="frobenius: O(c^2 k^4 + n_s^2 k^2); spectral: n_s^2 frequency matrices and eigenvalues",
    check=require_symbol_bounded,
    torch_func=lipbound_norm,
)
def lipbound(
    layer: ConvLayer, *, n_samples: Any = None, norm: str = "frobenius", factor: str = "araujo"
) -> Bound:
    """Upper bound on ``S(K)`` (every input size) from a sampled symbol, Araujo et al. 2021.

    Parameters
    ----------
    n_samples : int or (int, int), optional
        Distinct samples per axis; default ``max(50, 2 D)`` (``D = dilation*(k-1)``).
    norm : {"frobenius", "spectral"}
        Norm of the symbol at each sample. The paper bounds the spectral norm by the
        Frobenius norm; the spectral norm is tighter and equally valid.
    factor : {"araujo", "secant"}
        Correction (see :func:`axis_factor`): the paper's ``1/(1 - D/n_s)`` (as
        ``1/sqrt(1 - D/n_s)`` per axis; needs ``n_s >= 2D``) or the sharper
        ``sec(pi D / (2 n_s))`` per axis (needs ``n_s > D``).

    Returns
    -------
    Bound
        ``kind="upper"``; ``details``: ``n_samples``, ``grid_max`` (the uncorrected maximum),
        ``factor`` and ``norm``.
    """
    with torch.no_grad():
        grid_max, scale, samples = sampled_symbol(as_float64(layer), layer, n_samples, norm, factor)
    return Bound(
        value=float(grid_max) * scale,
        kind="upper",
        method="lipbound",
        details={"n_samples": samples, "grid_max": float(grid_max), "factor": scale, "norm": norm},
    )
