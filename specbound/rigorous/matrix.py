r"""Matrices are matrices: 1x1 convolutions and Linear layers certified on the weight matrix
(``docs/certify.md`` L11), with the verified core of L10 and memory bounded by chunking.

**L11.** A 1x1 convolution with weight ``W`` (``c_out x c_in``, block diagonal over the groups)
acts on the pixels independently: output ``(o, i', j')`` reads input ``(c, S_h(i'), S_w(j'))``
where ``S`` is the composite of padding and striding along each axis (a position of a zero pad
reads nothing; reflect, replicate and circular pads read a copy of an input pixel). So
``A = W (x) S_h (x) S_w`` (Kronecker product), and ``||A||_2 = ||W||_2 ||S_h||_2 ||S_w||_2``
exactly. Each ``S`` has one non-zero (a 1) per row at most, so ``S^T S`` is diagonal with the
copy counts and ``||S|| = sqrt(max count)`` (0 when no output reads an input, 1 for zero
padding at stride 1 or any stride with at least one output inside). With every input size
(``input_size=None``, zeros or circular padding, stride 1) the symbol is the constant ``W``,
so ``S = ||W||``. A ``torch.nn.Linear`` is the 1x1 convolution at input size ``1 x 1``.
"""

from __future__ import annotations

import itertools
import math
import sys

import numpy as np
import torch

from ..operators.conv_layer import ConvLayer
from ..operators.indexing import layer_axis_indices
from .cholesky import _float64_gemm
from .rounding import U, down, frobenius_upper, gamma, pow2_exponent, scale_back_outward, up
from .verified import RETRY_FACTOR, lambda_max_upper, level_margin

CHUNK_BYTES = 2**27
"""Bytes of float64 weight columns converted at once (128 MiB)."""
GRAM_BLOCK = 512
"""Column blocks of the Gram: only blocks on or above the diagonal are multiplied."""
EIGH_LIMIT = 1024
"""Gram orders above this are estimated by Lanczos (scipy ``eigsh``) instead of ``eigh``."""


def axis_factor(index: np.ndarray) -> tuple[int, int]:
    """``(max count, input index attaining it)`` of a 1-D 1x1 index map ``(n_out, 1)``
    (``-1`` = a zero of zero padding): ``||S|| = sqrt(max count)``."""
    src = index[:, 0]
    src = src[src >= 0]
    if src.size == 0:
        return 0, 0
    counts = np.bincount(src)
    best = int(np.argmax(counts))
    return int(counts[best]), best


def _chunks(q: int, rows: int) -> list[slice]:
    per = max(1, CHUNK_BYTES // (8 * max(1, rows)))
    return [slice(c, min(q, c + per)) for c in range(0, q, per)]


def weight_sigma(
    w: torch.Tensor, rtol: float, device: torch.device | None = None
) -> tuple[float, float, np.ndarray, list[str]]:
    """Rigorous ``lower <= sigma_1(W) <= upper`` for one real matrix ``W`` (``p x q``, any
    real dtype, values taken exactly as stored), chunked over the long side.

    Returns ``(upper, lower, v, notes)`` with ``v`` (float64, length ``q``) the witness:
    ``||W v|| >= lower ||v||``.
    """
    device = torch.device("cpu") if device is None else device
    p, q = w.shape
    w = w.detach()
    peak = max(float(w[:, part].abs().max()) for part in _chunks(q, p))  # chunked: no copy
    if not math.isfinite(peak):
        raise ValueError("the weight holds NaN or inf")
    if peak == 0.0:
        return 0.0, 0.0, np.ones(q) / math.sqrt(q), ["zero weight"]
    j = int(pow2_exponent(torch.tensor(peak, dtype=torch.float64)))
    scale = 2.0**j  # exact; finite (j <= 1023)
    right = q <= p  # Gram W^T W (order q, inner p) or W W^T (order p, inner q)
    n, k = (q, p) if right else (p, q)
    g = torch.zeros(n, n, dtype=torch.float64, device=device)
    fro_sq, tiny = 0.0, 0
    # rows of h = W (right) or W^T (left) in chunks: G accumulates partial sums of each inner
    # product (one evaluation tree), so gram_lower's bound holds for the whole sum; only the
    # blocks of the upper triangle are formed (L10 reads the upper triangle)
    edges = [*range(0, n, GRAM_BLOCK), n]
    for part in _chunks(k, n):
        block = w[part, :] if right else w[:, part]
        h = block.to(device, torch.float64) * scale
        if not right:
            h = h.T  # (rows of the chunk, n)
        tiny += int(((h != 0) & (h.abs() < sys.float_info.min)).sum())
        with _float64_gemm():
            for a, b in itertools.pairwise(edges):
                g[a:b, a:] += h[:, a:b].T @ h[:, a:]
        fro_sq += float(frobenius_upper(h[None])[0]) ** 2 * (1 + 4 * U)
        del h, block
    # scaled entries that became subnormal carry <= 2^-1075 each: ||W_s - s W||_F <= kerr
    kerr = math.sqrt(tiny) * 2.0**-1074 if tiny else 0.0
    fro_sq = up(fro_sq, len(_chunks(k, n)) + 1)  # the chunks' bounds added in sequence
    g_err = torch.tensor(
        [up(gamma(k) * fro_sq + n * k * 2.0**-1074, 4)], dtype=torch.float64, device=device
    )
    lam, vec = _estimate(g, rtol)
    margin = level_margin(n, rtol / 4)
    level = torch.tensor([max(lam, 0.0) * (1 + margin)], dtype=torch.float64, device=device)
    level = torch.maximum(level, g_err)
    bound = lambda_max_upper(g[None], g_err, level)
    notes = [f"weight {p}x{q}: verified core (L10) on the {n}x{n} Gram"]
    if not bool(torch.isfinite(bound).all()):
        bound = lambda_max_upper(g[None], g_err, level * (1 + RETRY_FACTOR * margin) + g_err)
    del g
    sig = float(bound[0])
    if not math.isfinite(sig):
        notes.append("the Cholesky test broke down twice: Frobenius bound")
        sig = fro_sq
    upper_s = up(math.sqrt(sig), 2)
    # witness: a right vector v; lower from fl(W_s v) with |fl(W_s v) - W_s v| <= gamma_q |W_s||v|
    v = vec if right else _times_transpose(w, vec, scale, device)
    v_norm = float(torch.linalg.vector_norm(v))
    if v_norm == 0:
        return _unscale(upper_s, kerr, j, True), 0.0, np.ones(q) / math.sqrt(q), notes
    v = v / v_norm
    y = torch.zeros(p, dtype=torch.float64, device=device)
    for part in _chunks(q, p):
        y += (w[:, part].detach().to(device, torch.float64) * scale) @ v[part]
    y_low = math.sqrt(float((y * y).sum()) * (1 - gamma(p + 2))) * (1 - 2 * U)
    v_up = float(frobenius_upper(v[None, :, None])[0])
    slack = up(gamma(q) * math.sqrt(fro_sq) * v_up, 2)
    lower_s = max(0.0, down((y_low - slack) / v_up, 3))
    upper = _unscale(upper_s, kerr, j, True)
    lower = _unscale(lower_s, kerr, j, False)
    return upper, min(lower, upper), v.cpu().numpy(), notes


def _unscale(value: float, kerr: float, j: int, upward: bool) -> float:
    """The bound ``value`` of the weight scaled by ``2^j``, widened by ``kerr``, at the
    weight's own scale, rounded outward."""
    if upward:
        return scale_back_outward(up(value + kerr, 1), j, upward=True)
    return scale_back_outward(down(max(0.0, value - kerr), 1), j, upward=False)


def _times_transpose(w: torch.Tensor, u: torch.Tensor, scale: float, device) -> torch.Tensor:
    p, q = w.shape
    out = torch.empty(q, dtype=torch.float64, device=device)
    for part in _chunks(q, p):
        out[part] = (w[:, part].detach().to(device, torch.float64) * scale).T @ u
    return out


def _estimate(g: torch.Tensor, rtol: float) -> tuple[float, torch.Tensor]:
    """Approximate top eigenpair of the symmetric ``g`` (upper triangle): ``eigh`` for small
    orders, Lanczos above :data:`EIGH_LIMIT` (no guarantee needed: L10 verifies)."""
    n = g.shape[0]
    sym = torch.triu(g)
    sym += torch.triu(g, 1).T
    if n <= EIGH_LIMIT:
        vals, vecs = torch.linalg.eigh(sym)
        return float(vals[-1]), vecs[:, -1]
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    a = sym.cpu().numpy()
    del sym
    try:
        vals, vecs = eigsh(a, k=1, which="LA", tol=min(1e-10, rtol / 100), v0=np.ones(n))
    except ArpackNoConvergence:
        vals_t, vecs_t = torch.linalg.eigh(torch.from_numpy(a))
        return float(vals_t[-1]), vecs_t[:, -1]
    return float(vals[0]), torch.from_numpy(vecs[:, 0]).to(g.device)


def conv1x1_bracket(layer: ConvLayer, rtol: float, device: torch.device | None = None):
    """``(upper, lower, upper_method, witness, notes)`` for a 1x1 layer (L11): the weight's
    groups by :func:`weight_sigma` (maximum over groups, NaN-propagating), times the exact
    padding/stride factors ``sqrt(max count)`` per axis at a given size."""
    c_out, c_in_g = layer.kernel.shape[:2]
    g = layer.groups
    weight = torch.as_tensor(layer.kernel).reshape(c_out, c_in_g)
    rows = c_out // g
    best = (-1.0, 0, None)
    upper = 0.0
    notes: list[str] = []
    for gi in range(g):
        up_g, low_g, v, n_g = weight_sigma(weight[gi * rows : (gi + 1) * rows], rtol, device)
        if math.isnan(up_g):
            upper = math.nan
        elif not math.isnan(upper):
            upper = max(upper, up_g)
        if low_g > best[0]:
            best = (low_g, gi, v)
        if gi == 0:
            notes += n_g
    lower, gi, v = best
    if upper == 0.0:  # the zero weight: the operator is 0, exactly
        lower = 0.0
    if g > 1:
        notes.append(f"{g} groups certified one by one (maximum over groups)")
    if layer.spec.input_size is None:
        witness = {"frequency": [0.0] * layer.d, "group": gi, "vector": v}
        return upper, max(lower, 0.0), "weight_matrix_verified", witness, notes
    factors = [axis_factor(index) for index in layer_axis_indices(layer)]
    counts = [c for c, _ in factors]
    product = math.sqrt(counts[0])
    for c in counts[1:]:
        product = product * math.sqrt(c)
    ops = 2 * len(counts) - 1  # d square roots and d - 1 products
    factor_up, factor_down = up(product, ops), down(product, ops)
    x = np.zeros((layer.c_in, *layer.input_size))
    if all(counts):
        x[(slice(gi * c_in_g, (gi + 1) * c_in_g), *(b for _, b in factors))] = v
    if any(c != 1 for c in counts):
        shown = " x ".join(map(str, counts))
        notes.append(f"padding/stride copy counts {shown}: factor sqrt({math.prod(counts)})")
    return (
        0.0 if upper == 0.0 or math.prod(counts) == 0 else up(upper * factor_up, 1),
        down(max(lower, 0.0) * factor_down, 1),
        "weight_matrix_verified",
        {"input": x},
        notes,
    )


__all__ = ["axis_factor", "conv1x1_bracket", "weight_sigma"]
