"""Rigorous brackets of ``max_w sigma_1(M(w))`` over a finite set of frequencies.

:func:`bracket_matrices` is the engine shared by the circular route (the grid of a circulant
layer) and the every-size route (cell centres of the symbol): it prunes matrices whose
rigorous Frobenius cap cannot exceed the running lower bound, runs the rigorous Gram iteration
(:class:`~specbound.rigorous.gram.RigorousGram`) only on the rest, and improves the lower
bound from the Gram iterates' dominant columns. Every returned number is rigorous.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from .gram import RigorousGram, matvec_norm_lower, power_vectors
from .rounding import frobenius_upper

MAX_GRAM_STEPS = 40


@dataclass
class MatrixBracket:
    """Result of :func:`bracket_matrices`.

    ``upper[i]`` bounds ``sigma_1`` of exact matrix ``i`` (rigorous); ``lower`` is the best
    rigorous lower bound ``||M_j v|| / ||v||`` found, at matrix ``argmax`` with vector
    ``vector``; ``steps`` is the largest number of Gram steps run.
    """

    upper: torch.Tensor
    lower: float
    argmax: int
    vector: torch.Tensor | None
    steps: int = 0
    notes: list[str] = field(default_factory=list)


def _refine_vectors(m: torch.Tensor, v: torch.Tensor, n: int = 3) -> torch.Tensor:
    for _ in range(n):
        v = (m.mH @ (m @ v[..., None]))[..., 0]
        v = v / torch.clamp(torch.linalg.vector_norm(v, dim=-1, keepdim=True), min=1e-300)
    return v


def _dominant(gram: RigorousGram, mats: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Right-singular-vector estimates from the Gram iterate's dominant columns."""
    dominant = gram.top_vectors().to(torch.complex128)
    if m.shape[-2] < m.shape[-1]:  # the Gram was M M^*: map left vectors to right ones
        dominant = (mats.to(torch.complex128).mH @ dominant[..., None])[..., 0]
    return dominant


def bracket_matrices(
    m: torch.Tensor,
    error: float,
    rtol: float,
    *,
    lower: float = 0.0,
    n_candidates: int = 4,
    deadline: float | None = None,
    threshold: torch.Tensor | None = None,
) -> MatrixBracket:
    """Bracket ``sigma_1`` of every exact matrix ``M_i`` with ``||M_i - m_i||_2 <= error``.

    Parameters
    ----------
    m : torch.Tensor
        ``(B, p, q)`` computed matrices.
    error : float
        Uniform bound on ``||M_i - m_i||_2``.
    rtol : float
        Stop refining matrix ``i`` once ``upper[i] <= lower / (1 - rtol)``, i.e. once
        ``(upper - lower) / upper <= rtol``.
    lower : float
        A lower bound on ``max_i sigma_1(M_i)`` already known.
    threshold : torch.Tensor, optional
        Per-matrix targets ``(B,)`` replacing ``lower / (1 - rtol)``: matrix ``i`` is settled
        once ``upper[i] <= threshold[i]``, and abandoned (left with its current, still valid,
        bound) once a rigorous lower bound of its own exceeds ``threshold[i]`` (no amount of
        refinement can settle it; the caller splits it instead).
    """
    b = m.shape[0]
    fro = safe_upper(frobenius_upper(m) + error)
    upper = fro.clone()
    # lower bound from a few power-iteration vectors on the matrices with the largest caps
    top = torch.topk(fro, min(n_candidates, b)).indices
    v = power_vectors(m[top], 20)
    lows = matvec_norm_lower(m[top], v, error)
    best = int(torch.argmax(lows))
    res = MatrixBracket(upper, float(lows[best]), int(top[best]), v[best])
    if lower > res.lower:
        res.lower, res.vector = lower, None

    def targets(idx: torch.Tensor) -> torch.Tensor:
        if threshold is None:
            return torch.full_like(fro[idx], res.lower / (1 - rtol))
        return threshold.to(fro)[idx]

    active = torch.nonzero(fro > targets(torch.arange(b, device=fro.device))).flatten()
    if active.numel() == 0:
        return res
    gram = RigorousGram(m[active])
    mats = m[active]
    previous = upper[active].clone()
    for step in range(1, MAX_GRAM_STEPS + 1):
        gram.step()
        bound = torch.minimum(safe_upper(gram.bound() + error), previous)
        upper[active] = bound
        res.steps = step
        # improve the lower bound with the dominant directions of the leading candidates
        k = min(n_candidates, active.numel())
        lead = torch.topk(bound, k).indices
        vec = _refine_vectors(mats[lead].to(torch.complex128), _dominant(gram, mats, m)[lead])
        lows = matvec_norm_lower(mats[lead], vec, error)
        j = int(torch.argmax(lows))
        if float(lows[j]) > res.lower:
            res.lower, res.argmax, res.vector = float(lows[j]), int(active[lead[j]]), vec[j]
        keep = bound > targets(active)
        if threshold is not None:  # abandon matrices that provably exceed their own target
            own = _refine_vectors(mats.to(torch.complex128), _dominant(gram, mats, m), 1)
            keep &= matvec_norm_lower(mats, own, error) <= targets(active)
        stalled = bound >= previous * (1 - 1e-15)
        if step > 3:
            keep &= ~stalled
        if not bool(keep.any()):
            break
        if deadline is not None and time.perf_counter() > deadline:
            res.notes.append(f"stopped by max_seconds after {step} Gram steps")
            break
        gram.select(keep)
        active, mats, previous = active[keep], mats[keep], bound[keep]
    return res


def safe_upper(x: torch.Tensor) -> torch.Tensor:
    """Upper bounds with every NaN replaced by ``+inf`` (a NaN is no bound; ``inf`` is a
    safe one, and ``torch.minimum``/comparisons then keep it instead of dropping it)."""
    return torch.where(torch.isnan(x), torch.full_like(x, math.inf), x)


def max_upper(*values: float) -> float:
    """NaN-propagating maximum of upper bounds: ``inf`` if any is NaN (Python's ``max``
    silently drops a NaN that is not its first argument)."""
    vals = [float(v) for v in values]
    if any(math.isnan(v) for v in vals):
        return math.inf
    return max(vals)


def max_lower(*values: float) -> float:
    """Maximum of lower bounds, ignoring NaN ones (a NaN is no lower bound; 0 if none)."""
    vals = [float(v) for v in values if not math.isnan(float(v))]
    return max(vals, default=0.0)


def relative_gap(upper: float, lower: float) -> float:
    """``(upper - lower) / upper``; 0 when both vanish; 1 when ``upper`` is not finite or
    either end is NaN (no finite certificate)."""
    if math.isnan(upper) or math.isnan(lower) or math.isinf(upper):
        return 1.0
    if upper <= 0:
        return 0.0
    return max(0.0, (upper - lower) / upper)
