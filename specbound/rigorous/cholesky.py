r"""Verified upper bounds on :math:`\|A\|_2` from a floating-point Cholesky factorization.

:math:`\|A\|_2 \le \mu` holds if and only if :math:`X = \mu^2 I - G \succeq 0`, where
:math:`G = A^TA` or :math:`G = AA^T` (whichever side is cheaper). For a convolution at a
given input size with zero, reflect or replicate padding, :math:`G` is block-banded when the
pixels are ordered raster-wise: two pixels interact only if one output pixel
(:math:`A^TA`) or one input pixel (:math:`AA^T`) sees both, and padding only copies nearby
pixels. This module proves :math:`X \succeq 0` by a block-banded Cholesky factorization in
float64 that accounts for every rounding error, in the spirit of Rump's criterion
(S. M. Rump, "Verification of positive definiteness", *BIT* 46:433--452, 2006), with the
componentwise backward error of Cholesky due to Demmel (N. J. Higham, *Accuracy and
Stability of Numerical Algorithms*, 2nd ed., SIAM 2002, Thm 10.3).

Model of arithmetic: IEEE-754 binary64, :math:`u = 2^{-53}`, :math:`\gamma_n = nu/(1-nu)`;
``+ - * / sqrt`` are correctly rounded; a GEMM or GEMV computes each inner product by some
binary evaluation tree of its terms (any summation order, with or without FMA, as in
``docs/certify.md`` (A2)). Nothing is assumed about LAPACK: the factorization is written here
with GEMM, GEMV, division and square root only.

**(C1) The Gram band.** Write :math:`B = A` (input side, :math:`G = B^TB`) or
:math:`B = A^T` (output side, :math:`G = AA^T = B^TB`). Each entry of :math:`A` is a sum of
the taps that carry one input pixel to one output pixel (a single tap for zero padding).
Expanding the products, an entry of :math:`G` is a sum of products
:math:`K[o,c_1,t_1]K[o,c_2,t_2]`, one per "hub" (an output pixel and output channel on the
input side, an input pixel and input channel on the output side) and tap pair that reach
both "spokes". The code forms :math:`Q = \mathrm{fl}(M^TM)`, with :math:`M` the
``(C_hub, T C_spoke)`` matrix of the :math:`T = k_hk_w` taps (inner length
:math:`C_{hub}`), and adds at most ``terms`` blocks of :math:`Q` into each block of
:math:`G` (``terms`` :math:`\le k_hk_w` for zero padding: a hub and a spoke determine the
tap). Whatever the order of the additions, each product passes through at most
:math:`1 + (C_{hub}-1) + (\mathrm{terms}-1)` roundings, so
:math:`|\tilde G - G| \le \gamma_{C_{hub}+\mathrm{terms}}\,|B_K|^T|B_K|` entrywise (Higham
Lemma 3.1), where :math:`B_K` is the operator built from :math:`|K|` (the sum of the
absolute values of the products). Hence

.. math:: \|\tilde G - G\|_2 \le e_G := \gamma_{C_{hub}+\mathrm{terms}}\,\rho_{row}\rho_{col},

where :math:`\rho_{row}` and :math:`\rho_{col}` bound the row and column sums of :math:`B_K`
(the largest per-output-channel sum of :math:`|K|`, and the largest per-input-channel sum
times the number of outputs that read one input pixel through one tap) and
:math:`\|B_K\|_2^2 \le \|B_K\|_1\|B_K\|_\infty` (Schur test). Products that underflow
lose at most :math:`2^{-1075}` each, which :func:`gram_error` adds as well.

**(C2) Floating-point Cholesky (Demmel; Higham Thm 10.3).** Let :math:`Y` be a symmetric
float64 matrix whose lower triangle lies in a band in which any inner product of the
factorization has at most :math:`m - 1` terms. If the factorization below runs to completion
(every pivot is positive and every computed entry finite), the computed factor
:math:`\hat L` satisfies

.. math:: \hat L\hat L^T = Y + \Delta Y,\qquad |\Delta Y| \le \gamma_{m+1}|\hat L||\hat L^T|
   + \tau,

with :math:`\tau` an underflow term (below). *Proof.* Each entry is computed as
:math:`\hat l_{ij} = \mathrm{fl}((y_{ij} - \sum_k \hat l_{ik}\hat l_{jk}) / \hat l_{jj})` or
:math:`\hat l_{jj} = \mathrm{fl}(\sqrt{y_{jj} - \sum_k \hat l_{jk}^2})`, where the sum has at
most :math:`m - 1` products and is evaluated by *some* binary tree: the blocked algorithm
splits it into partial sums computed by GEMMs (each partial sum a subtree, then one rounded
subtraction from the running value) and finishes it by a GEMV; FMAs only remove roundings.
In a tree with :math:`m` leaves, the leaf :math:`y_{ij}` passes through at most :math:`m-1`
roundings, and for each product the roundings *not shared* with :math:`y_{ij}` (those below
their lowest common ancestor, plus the multiplication) number at most :math:`m - 1` in all.
Dividing the computed sum by the factors of :math:`y_{ij}` (the argument of Higham's Lemma
8.4, carried out for an arbitrary evaluation tree) gives
:math:`y_{ij} = \sum_k \hat l_{ik}\hat l_{jk}(1+\theta_{m-1}) + \hat l_{ij}\hat l_{jj}
(1+\theta_{m+1})`: the last factor collects :math:`y_{ij}`'s own
:math:`m - 1` roundings and the division (two roundings if it is done as a multiplication
by a rounded reciprocal) or, on the diagonal, the square root squared. Hence
:math:`|\Delta Y_{ij}| \le \gamma_{m+1}(|\hat L||\hat L^T|)_{ij}` (Lemma 3.1).
*Underflow:* with gradual underflow, a product or quotient carries an extra absolute error
:math:`|\eta| \le 2^{-1075}` (Higham eq. 2.8) and additions are exact. Carried through the
same steps (every factor :math:`1+\theta` lies in :math:`[1/2, 2]`), this adds at most
:math:`4(m + 2 + \max_j \hat l_{jj})\,2^{-1074}` per entry; :math:`\tau` is that times
the number :math:`\le 2m` of entries in a row of the band. (``certify``'s power-of-two prescale
keeps every quantity far from the underflow range anyway.) *Overflow* produces an infinity or
a NaN, which is detected: the test then refuses.

**(C3) The criterion.** Since :math:`\hat L\hat L^T \succeq 0`,
:math:`\lambda_{\min}(Y) \ge -\|\Delta Y\|_2 \ge -\gamma_{m+1}\beta - \|\tau\|` with
:math:`\beta \ge \||\hat L|\|_2^2` computed upward as the smaller of
:math:`\|\hat L\|_F^2` and the largest row sum of :math:`|\hat L|(|\hat L|^T\mathbf 1)`
(both are norms bounding :math:`\|\,|\hat L||\hat L|^T\|_2`).

**(C4) Shift and diagonal rounding.** To prove :math:`\lambda_{\min}(X) \ge \epsilon` for a
float64 symmetric :math:`X`, factor :math:`Y` with :math:`Y_{ij} = X_{ij}` off the diagonal
and :math:`Y_{ii} = \mathrm{fl}(X_{ii} - s)` for a float :math:`s \ge 0` chosen in advance.
Then :math:`X = Y + sI + D` with :math:`|D_{ii}| \le u|Y_{ii}|/(1-u)`, so
:math:`\lambda_{\min}(X) \ge s - \max|D_{ii}| - \gamma_{m+1}\beta - \|\tau\|`, and the test
accepts when this (computed downward) is :math:`\ge \epsilon` (:func:`verified_psd`). Rump's
a priori choice (Rump 2006, Thm 2.3) takes :math:`s` at least the error bound obtained from
:math:`\|\hat L\|_F^2 \le \mathrm{tr}(Y)/(1-\gamma_{m+1})` or
:math:`(|\hat L||\hat L^T|)_{ij} \le \sqrt{y_{ii}y_{jj}}/(1-\gamma_{m+1})`, so that
completing the factorization suffices.

**(C5) The norm bound.** With :math:`m_2` a float and :math:`\tilde X = m_2 I - \tilde G`
stored with its diagonal rounded (:math:`|\tilde X_{ii} - (m_2 - \tilde G_{ii})| \le
u|\tilde X_{ii}|/(1-u)`), :math:`\lambda_{\min}(m_2I - G) \ge \lambda_{\min}(\tilde X) -
2u\max|\tilde X_{ii}| - e_G`. So proving :math:`\lambda_{\min}(\tilde X) \ge \epsilon :=
e_G + 2u\max|\tilde X_{ii}|` gives :math:`\|A\|_2 \le \sqrt{m_2}`
(:func:`verified_norm_upper`). Groups are independent blocks of :math:`G` and are
certified one at a time.

**Ordering and band.** Pixels are ordered raster-wise (by image rows or by image columns,
whichever is cheaper), channels innermost. Two spoke rows interact only when their
difference is a multiple of the coupling period :math:`q` (the gcd of the differences that
occur; :math:`q = d` on the input side of a zero-padded layer with dilation :math:`d`), so
rows are ordered by residue class mod :math:`q` first: for zero padding the band then has
:math:`k-1` rows of pixels on the input side whatever the dilation, and
:math:`\lfloor d(k-1)/s\rfloor` rows on the output side (stride :math:`s`). Circular padding
that is not block-circulant couples the first and last rows: its band is the whole matrix.
The factorization works on blocks of ``pixels_per_block`` whole pixels (block size :math:`b`,
a multiple of the channel count) with block bandwidth :math:`p = \lceil w/b \rceil` for the
scalar half-bandwidth :math:`w`; it stores only the band, :math:`N(p+1)b` entries, and costs
about :math:`N(p+1)^2b^2` flops.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import dataclass, field
from itertools import product

import numpy as np
import torch

from ..operators.conv_layer import ConvLayer
from ..operators.indexing import layer_axis_indices
from .fpenv import one_cpu_thread
from .rounding import U, gamma, up

MAX_BAND_BYTES = 2**33
"""Largest band (bytes) the verified Cholesky route of :func:`specbound.certify` allocates
(8 GiB); read at call time, so ``specbound.rigorous.cholesky.MAX_BAND_BYTES = ...`` changes it."""

SIDES = ("input", "output")
ORDERS = ("rows", "cols")
BASE_COLUMNS = 32  # the recursion factors panels of at most this many columns column by column
THREADED_FLOPS = 2e8  # CPU: smaller GEMM updates run on one intra-op thread
UNDERFLOW_UNIT = 2.0**-1074


# ---------------------------------------------------------------------------- geometry
def _axis_incidence(index: np.ndarray) -> list[tuple[int, int, int]]:
    """``(output index, input index, tap)`` for every tap that reads an input pixel, from an
    ``(n_out, k)`` index map (``-1``: a zero of zero padding)."""
    return [
        (r, int(index[r, a]), a)
        for r in range(index.shape[0])
        for a in range(index.shape[1])
        if index[r, a] >= 0
    ]


@dataclass(frozen=True)
class _Axis:
    """One spatial axis of the Gram matrix: spokes, their elimination order, and the tap pairs
    that couple each pair of spokes.

    ``pairs[(x1, x2)]`` lists one tap pair ``(t1, t2)`` per hub that reads spoke ``x1`` with
    tap ``t1`` and ``x2`` with ``t2`` (a multiset: with reflect or replicate padding one hub
    may read a spoke through several taps). ``copies`` is the largest number of outputs that
    read one input index through one tap (1 for zero padding).
    """

    n: int  # spokes on this axis
    position: np.ndarray  # spoke -> position in the elimination order
    pairs: dict[tuple[int, int], tuple[tuple[int, int], ...]]  # (x1, x2) -> tap pairs
    reach: int  # largest |position(x1) - position(x2)| over coupled spokes
    copies: int

    @property
    def terms(self) -> int:
        """The largest number of tap pairs coupling two spokes."""
        return max((len(v) for v in self.pairs.values()), default=0)

    @classmethod
    def build(cls, incidence: list[tuple[int, int, int]], n_spokes: int, side: str) -> _Axis:
        by_hub: dict[int, list[tuple[int, int]]] = {}
        reads: dict[tuple[int, int], int] = {}
        for out_i, in_i, tap in incidence:
            hub, spoke = (out_i, in_i) if side == "input" else (in_i, out_i)
            by_hub.setdefault(hub, []).append((spoke, tap))
            reads[(in_i, tap)] = reads.get((in_i, tap), 0) + 1
        sets: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for entries in by_hub.values():
            for (x1, t1), (x2, t2) in product(entries, entries):
                sets.setdefault((x1, x2), []).append((t1, t2))
        diffs = [abs(x1 - x2) for x1, x2 in sets if x1 != x2]
        period = functools.reduce(math.gcd, diffs, 0) or 1
        order = sorted(range(n_spokes), key=lambda x: (x % period, x // period))
        position = np.empty(n_spokes, dtype=np.int64)
        position[order] = np.arange(n_spokes)
        reach = max((abs(int(position[a] - position[b])) for a, b in sets), default=0)
        pairs = {key: tuple(sorted(value)) for key, value in sets.items()}
        return cls(n_spokes, position, pairs, reach, max(reads.values(), default=1))


@dataclass(frozen=True)
class BandLayout:
    """How the Gram matrix of one group is ordered and stored as a block band.

    Attributes
    ----------
    side : {"input", "output"}
        ``G = A^T A`` (spokes are input pixels) or ``G = A A^T`` (output pixels).
    order : {"rows", "cols"}
        Raster order of the spoke pixels (image rows or image columns outermost).
    channels, hub_channels : int
        Channels per spoke pixel (``C``) and per hub pixel, for one group.
    pixels_per_block : int
        Block size ``b = channels * pixels_per_block``.
    """

    side: str
    order: str
    rows: _Axis
    cols: _Axis
    channels: int
    hub_channels: int
    taps: int
    pixels_per_block: int

    @property
    def pixels(self) -> int:
        return self.rows.n * self.cols.n

    @property
    def terms(self) -> int:
        """The largest number of tap products ``Q[t1, t2]`` summed into one block of ``G``."""
        return self.rows.terms * self.cols.terms

    @property
    def copies(self) -> int:
        """The largest number of outputs reading one input pixel through one tap."""
        return self.rows.copies * self.cols.copies

    @property
    def pixel_reach(self) -> int:
        """Largest distance, in pixels of the elimination order, between coupled pixels."""
        if self.order == "rows":
            return self.rows.reach * self.cols.n + self.cols.reach
        return self.cols.reach * self.rows.n + self.rows.reach

    @property
    def half_bandwidth(self) -> int:
        """Scalar half-bandwidth ``w`` of the lower triangle."""
        return self.channels * (self.pixel_reach + 1) - 1

    @property
    def block(self) -> int:
        return self.channels * self.pixels_per_block

    @property
    def n_blocks(self) -> int:
        return -(-self.pixels // self.pixels_per_block)

    @property
    def dim(self) -> int:
        """Order of the (padded) matrix: ``n_blocks * block``."""
        return self.n_blocks * self.block

    @property
    def bandwidth(self) -> int:
        """Block bandwidth ``p = ceil(w / b)``."""
        return -(-self.half_bandwidth // self.block)

    @property
    def panel_rows(self) -> int:
        return (self.bandwidth + 1) * self.block

    @property
    def inner_terms(self) -> int:
        """``m``: one more than the largest number of products in an inner product of the
        factorization (every stored column of the rows' previous panels)."""
        return self.panel_rows

    @property
    def band_bytes(self) -> int:
        """Bytes of the band storage plus the tap-product matrix ``Q`` (float64)."""
        band = self.n_blocks * self.panel_rows * self.block
        return 8 * (band + (self.taps * self.channels) ** 2)

    @property
    def flops(self) -> float:
        """Floating-point operations of one factorization (about ``N (p+1)^2 b^2``)."""
        p, b = self.bandwidth, self.block
        return float(self.n_blocks) * (p * (p + 1) + p + 1.0 / 3.0) * b**3

    def flat(self) -> np.ndarray:
        """Position of each spoke pixel ``(row, col)`` in the elimination order."""
        pr, pc = self.rows.position[:, None], self.cols.position[None, :]
        return pr * self.cols.n + pc if self.order == "rows" else pc * self.rows.n + pr


def _axes(layer: ConvLayer, side: str) -> tuple[_Axis, _Axis]:
    index_h, index_w = layer_axis_indices(layer)
    (h, w), (oh, ow) = layer.input_size, layer.out_size
    n_h, n_w = (h, w) if side == "input" else (oh, ow)
    return (
        _Axis.build(_axis_incidence(index_h), n_h, side),
        _Axis.build(_axis_incidence(index_w), n_w, side),
    )


def band_layouts(layer: ConvLayer, pixels_per_block: int | None = None) -> list[BandLayout]:
    """Every candidate layout (two sides, two raster orders), each with the block size that
    minimises its estimated cost, or with ``pixels_per_block`` when given."""
    g = layer.groups
    out = []
    for side in SIDES:
        rows, cols = _axes(layer, side)
        c_spoke = layer.kernel.shape[1] if side == "input" else layer.c_out // g
        c_hub = layer.c_out // g if side == "input" else layer.kernel.shape[1]
        taps = layer.kernel_size[0] * layer.kernel_size[1]
        for order in ORDERS:
            base = BandLayout(side, order, rows, cols, c_spoke, c_hub, taps, 1)
            if pixels_per_block is not None:
                out.append(_with_block(base, pixels_per_block))
                continue
            out.append(min(_block_candidates(base), key=_estimated_cost))
    return out


def _with_block(layout: BandLayout, pixels_per_block: int) -> BandLayout:
    return BandLayout(
        layout.side,
        layout.order,
        layout.rows,
        layout.cols,
        layout.channels,
        layout.hub_channels,
        layout.taps,
        max(1, min(pixels_per_block, layout.pixels)),
    )


def _block_candidates(layout: BandLayout) -> list[BandLayout]:
    reach = layout.pixel_reach + 1
    sizes = {1, reach, max(1, reach // 2)}
    sizes |= {q for q in (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64) if q <= reach}
    return [_with_block(layout, q) for q in sorted(sizes)]


def _estimated_cost(layout: BandLayout) -> float:
    """Flops plus a per-call overhead (GEMM calls per panel, vector ops per column)."""
    calls = layout.n_blocks * (layout.bandwidth + 2 * layout.block / BASE_COLUMNS)
    return layout.flops + 2e6 * calls + 4e5 * layout.dim


def choose_layout(layer: ConvLayer) -> BandLayout:
    """The cheapest layout of :func:`band_layouts` (estimated flops and overhead)."""
    return min(band_layouts(layer), key=_estimated_cost)


def group_kernels(layer: ConvLayer) -> list[np.ndarray]:
    """The kernel of each group, ``(c_out/g, c_in/g, kh, kw)``: the blocks of ``G``."""
    g, co = layer.groups, layer.c_out // layer.groups
    return [layer.kernel[i * co : (i + 1) * co] for i in range(g)]


# ---------------------------------------------------------------------------- Gram band
def _channel_matrix(kernel: np.ndarray, side: str) -> np.ndarray:
    """``M`` of shape ``(C_hub, T * C_spoke)``, columns ordered ``(a, b, spoke channel)``."""
    if side == "input":
        m = kernel.transpose(0, 2, 3, 1)  # (c_out, kh, kw, c_in)
    else:
        m = kernel.transpose(1, 2, 3, 0)  # (c_in, kh, kw, c_out)
    return np.ascontiguousarray(m.reshape(m.shape[0], -1))


def gram_error(kernel: np.ndarray, layout: BandLayout) -> float:
    """``e_G`` of (C1): a bound on :math:`\\|\\tilde G - G\\|_2` for the band formed by
    :func:`gram_band` from this group's ``kernel``.

    ``gamma_{C_hub + terms} rho_row rho_col``, where ``terms`` is the largest number of tap
    products summed into one entry, ``rho_row`` the largest per-output-channel sum of
    ``|K|`` and ``rho_col`` the largest per-input-channel sum times ``layout.copies`` (how
    many outputs read one input index through one tap: 1 for zero padding). Products that
    underflow lose at most ``2^-1075`` each: ``2m (C_hub terms + 1) 2^-1074`` more covers
    them over the at most ``2m`` entries of a row.
    """
    a = np.abs(kernel)
    c_out, c_in, kh, kw = kernel.shape
    per_out = a.reshape(c_out, -1).sum(axis=1)  # row sums of |A| (per output channel)
    per_in = a.transpose(1, 0, 2, 3).reshape(c_in, -1).sum(axis=1)  # column sums of |A|
    # sums of n non-negative terms: exact <= computed / (1 - gamma_n)
    row = float(per_out.max()) / (1 - gamma(c_in * kh * kw))
    col = float(per_in.max()) / (1 - gamma(c_out * kh * kw)) * layout.copies
    g = gamma(layout.hub_channels + layout.terms)
    tiny = 2 * layout.inner_terms * (layout.hub_channels * layout.terms + 1) * UNDERFLOW_UNIT
    return up(g * up(row, 2) * up(col, 2) + tiny, 3)


def gram_band(
    kernel: np.ndarray, layout: BandLayout, device: torch.device | str | None = None
) -> torch.Tensor:
    """The lower block band of ``fl(G)`` for one group, ``(n_blocks, (p+1) b, b)`` float64.

    Panel ``k`` holds rows ``k b .. k b + (p+1) b`` of block column ``k``; its first ``b``
    rows are the diagonal block (both triangles filled; only the lower one is used). Rows past
    the matrix order are zero; padding pixels (to a whole number of blocks) have zero rows,
    which keeps ``mu^2 I - G`` positive on them. Entries obey (C1) of the module docstring.
    """
    dev = torch.device("cpu" if device is None else device)
    kh, kw = kernel.shape[2], kernel.shape[3]
    c, b = layout.channels, layout.block
    band = torch.zeros(layout.n_blocks, layout.panel_rows, b, dtype=torch.float64, device=dev)
    m = torch.from_numpy(_channel_matrix(kernel, layout.side)).to(dev)
    with _float64_gemm():
        q = (m.T @ m).reshape(kh, kw, c, kh, kw, c)  # Q[(a1,b1,c1),(a2,b2,c2)]
    flat = layout.flat() * c  # first row of each spoke pixel
    rows, cols = layout.rows, layout.cols
    row_ids = {s: i for i, s in enumerate(sorted(set(rows.pairs.values())))}
    col_ids = {s: i for i, s in enumerate(sorted(set(cols.pairs.values())))}
    groups: dict[tuple[tuple, tuple], list[tuple[int, int]]] = {}
    for (r1, r2), rset in rows.pairs.items():
        for (c1, c2), cset in cols.pairs.items():
            g1, g2 = int(flat[r1, c1]), int(flat[r2, c2])
            if g1 >= g2:  # lower triangle (and the diagonal blocks)
                groups.setdefault((rset, cset), []).append((g1, g2))
    for rset in sorted(row_ids, key=row_ids.get):
        todo = [(cset, groups[(rset, cset)]) for cset in col_ids if (rset, cset) in groups]
        if not todo:
            continue
        r_sum = sum(q[a1, :, :, a2] for a1, a2 in rset)  # (kw, c, kw, c)
        for cset, places in todo:
            z = sum(r_sum[b1, :, b2] for b1, b2 in cset)  # (c, c)
            for g1, g2 in places:
                k, col = divmod(g2, b)
                row = g1 - k * b
                band[k, row : row + c, col : col + c] = z
    return band


# ---------------------------------------------------------------------------- Cholesky
@contextlib.contextmanager
def _float64_gemm():
    """TF32 off on CUDA (float64 GEMMs never use it, but a caller's float32 setting must not
    leak into anything computed here)."""
    from .fpenv import tf32_disabled

    with tf32_disabled():
        yield


def _factor_columns(p: torch.Tensor, c0: int, c1: int) -> None:
    """Columns ``c0..c1`` of the panel, one at a time (left-looking within the range)."""
    for j in range(c0, c1):
        if j > c0:
            p[j:, j].addmv_(p[j:, c0:j], p[j, c0:j], alpha=-1)
        p[j, j].sqrt_()
        p[j + 1 :, j].div_(p[j, j])


def _factor_panel(p: torch.Tensor, c0: int, c1: int, base: int) -> None:
    """Recursive Cholesky of columns ``c0..c1`` of a lower panel (diagonal block on top, the
    rows below it solved in the same sweep): left half, GEMM update of the right half, right
    half. Every entry is ``(y - sum of products) / pivot`` with the sum split into GEMM
    partial sums: (C2) holds for any split."""
    if c1 - c0 <= base:
        _factor_columns(p, c0, c1)
        return
    mid = c0 + (c1 - c0) // 2
    _factor_panel(p, c0, mid, base)
    p[mid:, mid:c1].addmm_(p[mid:, c0:mid], p[mid:c1, c0:mid].T, alpha=-1)
    _factor_panel(p, mid, c1, base)


def block_band_cholesky(
    band: torch.Tensor,
    bandwidth: int,
    *,
    base: int = BASE_COLUMNS,
    deadline: float | None = None,
) -> str:
    """In-place lower Cholesky factorization of a symmetric block-banded matrix.

    Parameters
    ----------
    band : torch.Tensor
        ``(n_blocks, (p+1) b, b)`` float64: panel ``k`` holds rows ``k b ..`` of block column
        ``k`` (diagonal block first, lower triangle used). Overwritten by the factor ``L``
        (the strict upper triangles of the diagonal blocks are zeroed).
    bandwidth : int
        ``p``; the matrix has order ``n_blocks * b`` (rows of the last panels past it are
        ignored).
    base : int
        Panels of at most ``base`` columns are factored column by column.
    deadline : float, optional
        ``time.perf_counter()`` value after which the factorization stops.

    Returns
    -------
    str
        ``"complete"`` (every pivot positive, every entry finite), ``"breakdown"`` (a pivot
        was not positive or an entry not finite) or ``"time"``.

    Left-looking by block columns: panel ``k`` is updated with one GEMM per previous panel
    that reaches it, then factored by :func:`_factor_panel`. No LAPACK routine is used, so the
    error analysis (C2) depends only on the GEMM/GEMV model, correctly rounded division and
    square root.
    """
    n_blocks, rows, b = band.shape
    p, dim = bandwidth, n_blocks * band.shape[2]
    small = 2.0 * rows * b * b < THREADED_FLOPS
    with _float64_gemm(), one_cpu_thread(band.device, small):
        for k in range(n_blocks):
            if deadline is not None and time.perf_counter() > deadline:
                return "time"
            height = min(rows, dim - k * b)
            panel = band[k, :height]
            for j in range(max(0, k - p), k):
                off = (k - j) * b
                top = min(rows, dim - j * b)
                if top <= off:
                    continue
                below = band[j, off:top]  # rows k b .. of block column j
                panel[: top - off].addmm_(below, band[j, off : off + b].T, alpha=-1)
            with one_cpu_thread(band.device):
                _factor_panel(panel, 0, b, base)
                diag = panel[:b]
                diag.copy_(torch.tril(diag))
                finite = bool(torch.isfinite(panel).all())
                if not (finite and bool((torch.diagonal(diag) > 0).all())):
                    return "breakdown"
    return "complete"


def factor_error_bound(band: torch.Tensor) -> float:
    """``beta >= || |L| ||_2^2`` for the factor in ``band`` (upward): the smaller of
    ``||L||_F^2`` and the largest row sum of ``|L| (|L|^T 1)`` ((C3) of the module
    docstring). Works panel by panel (no copy of the band)."""
    n_blocks, rows, b = band.shape
    dim = n_blocks * b
    m = rows  # every sum below has at most m terms
    top = max(float(band[k].abs().max()) for k in range(n_blocks))
    if top == 0.0:
        return 0.0
    # exact power-of-two scaling of the largest entry into [1, 2); capped at 2^1023 (a
    # subnormal top is scaled into [2^-51, 1) instead of overflowing)
    e = min(1 - math.frexp(top)[1], 1023)
    v = torch.empty(n_blocks, b, dtype=band.dtype, device=band.device)
    sq = 0.0
    for k in range(n_blocks):
        absl = band[k].abs()
        v[k] = absl.sum(dim=0)  # column sums of |L|
        sq += float(((absl * 2.0**e) ** 2).sum())
    v = v.reshape(-1)
    w = torch.zeros(dim + rows, dtype=band.dtype, device=band.device)
    for k in range(n_blocks):
        w[k * b : k * b + rows] += band[k].abs() @ v[k * b : (k + 1) * b]
    # non-negative sums of at most m terms, twice: exact <= computed / (1 - gamma_m)^2;
    # products that underflow lose at most 2^-1075 each (m per entry)
    shrink = (1 - gamma(m + 1)) ** 2
    row_sum = up(float(w[:dim].max()) / shrink + m * UNDERFLOW_UNIT, 4)
    # ||L||_F^2: each square one rounding, a sum of at most band.numel() terms (the per-panel
    # sums and their total are one evaluation tree)
    fro_sq = math.ldexp(up(sq / (1 - gamma(band.numel() + 1)), 4), -2 * e) + UNDERFLOW_UNIT
    return min(row_sum, up(fro_sq, 1))


@dataclass
class PSDResult:
    """Outcome of :func:`verified_psd`.

    ``accepted`` means :math:`\\lambda_{\\min}(X) \\ge` ``margin`` is proved. ``reason`` is
    ``"accepted"``, ``"breakdown"`` (the factorization of ``X - shift I`` did not complete),
    ``"rounding"`` (it completed but the rounding bound exceeds ``shift - margin``) or
    ``"time"``; ``needed`` is the rounding bound (upward), when computed.
    """

    accepted: bool
    reason: str
    shift: float
    needed: float = math.nan
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def a_priori_shift(diag_max: float, trace: float, layout_terms: int, margin: float = 0.0) -> float:
    """Rump's a priori shift: ``s`` such that completing the factorization of ``X - s I``
    proves ``lambda_min(X) >= margin`` ((C4) of the module docstring).

    ``diag_max`` and ``trace`` bound ``max_i X_ii`` and ``sum_i max(X_ii, 0)`` from above;
    ``layout_terms`` is ``m``. Uses
    :math:`\\||\\hat L|\\|_2^2 \\le \\min(\\mathrm{tr}(Y), 2m\\max_i y_{ii})/(1-\\gamma_{m+1})`.
    """
    m = layout_terms
    g = gamma(m + 1)
    y_max = up(max(diag_max, 0.0), 1)
    beta = min(up(trace, 1), 2 * m * y_max) / (1 - g)
    tau = _underflow_term(m, math.sqrt(y_max) * (1 + 4 * U))
    return up(margin + g * up(beta, 2) * 1.01 + 2 * U * y_max + tau, 6)


def _underflow_term(m: int, pivot_max: float) -> float:
    """``||tau||_2`` of (C2): ``2m`` entries per row of ``4 (m + 2 + max l_jj) 2^-1074``."""
    return up(8 * m * (m + 2 + pivot_max) * UNDERFLOW_UNIT, 4)


def verified_psd(
    band: torch.Tensor,
    bandwidth: int,
    *,
    shift: float | None = None,
    margin: float = 0.0,
    base: int = BASE_COLUMNS,
    deadline: float | None = None,
) -> PSDResult:
    """Prove :math:`\\lambda_{\\min}(X) \\ge` ``margin`` for the symmetric float64 matrix in
    ``band`` by a floating-point Cholesky factorization of ``X - shift I`` (Rump 2006;
    Higham 2002, Thm 10.3): criterion (C4) of the module docstring.

    Parameters
    ----------
    band : torch.Tensor
        The lower block band of ``X`` as for :func:`block_band_cholesky`; **overwritten** by
        the factor.
    bandwidth, base, deadline
        As :func:`block_band_cholesky`.
    shift : float, optional
        ``s >= 0``; default: Rump's a priori shift (:func:`a_priori_shift`), with which a
        completed factorization always proves the claim.
    margin : float
        The lower bound on ``lambda_min(X)`` to prove (``>= 0``).

    Returns
    -------
    PSDResult
        ``accepted`` only if ``lambda_min(X) >= margin`` holds in exact arithmetic for ``X``
        as stored.
    """
    start = time.perf_counter()
    n_blocks, rows, b = band.shape
    if margin < 0 or not math.isfinite(margin):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    m = rows
    diag = torch.diagonal(band[:, :b, :], dim1=1, dim2=2)  # a view: (n_blocks, b)
    if not all(bool(torch.isfinite(band[k]).all()) for k in range(n_blocks)):
        return PSDResult(False, "breakdown", math.nan, seconds=time.perf_counter() - start)
    if shift is None:
        trace = float(diag.clamp(min=0).sum()) / (1 - gamma(diag.numel() + 1))
        shift = a_priori_shift(float(diag.max()), trace, m, margin)
    if shift < 0 or not math.isfinite(shift):
        raise ValueError(f"shift must be a finite number >= 0, got {shift!r}")
    diag -= shift  # Y_ii = fl(X_ii - s): |X_ii - s - Y_ii| <= u |Y_ii| / (1 - u)
    y_max = float(diag.abs().max())
    status = block_band_cholesky(band, bandwidth, base=base, deadline=deadline)
    if status != "complete":
        return PSDResult(False, status, shift, seconds=time.perf_counter() - start)
    beta = factor_error_bound(band)
    pivot_max = float(torch.diagonal(band[:, :b, :], dim1=1, dim2=2).max())
    needed = up(
        margin + gamma(m + 1) * beta + 2 * U * y_max + _underflow_term(m, pivot_max),
        6,
    )
    ok = shift >= needed
    return PSDResult(
        ok, "accepted" if ok else "rounding", shift, needed, time.perf_counter() - start
    )


# ---------------------------------------------------------------------------- the norm test
@dataclass
class NormTest:
    """Outcome of :func:`verified_norm_upper`.

    ``accepted`` means ``||A||_2 <= upper`` is proved (rounding and the kernel's own error
    included); otherwise ``upper`` is ``inf`` and ``reason`` says why: ``"breakdown"``
    (``mu`` is probably below the norm, or too close to it), ``"rounding"``, ``"time"``,
    ``"memory"`` or ``"below_floor"`` (``mu`` too close to ``lower`` for the rounding errors).
    ``rounding`` is the largest rounding bound of the groups' tests relative to ``mu^2``
    (what the shift had to cover), when computed.
    """

    accepted: bool
    upper: float
    mu: float
    reason: str
    layout: BandLayout | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    rounding: float = math.nan


def verified_norm_upper(
    layer: ConvLayer,
    mu: float,
    *,
    lower: float = 0.0,
    kernel_error: float = 0.0,
    device: torch.device | str | None = None,
    deadline: float | None = None,
    max_bytes: int | None = None,
    layout: BandLayout | None = None,
    base: int = BASE_COLUMNS,
) -> NormTest:
    """Prove :math:`\\|A\\|_2 \\le \\mu` (up to rounding) for a zero-padded layer by showing
    :math:`\\mu^2 I - G \\succeq 0` with a verified block-banded Cholesky factorization
    ((C1)-(C5) of the module docstring; Rump 2006; Higham 2002, Thm 10.3).

    Parameters
    ----------
    layer : ConvLayer
        Zero padding and a finite input size; any stride, dilation, groups. The kernel should
        be scaled so that ``max|K|`` is near 1 (as :func:`specbound.certify` does).
    mu : float
        The bound to prove, ``> 0``.
    lower : float
        A known lower bound on the norm (from a witness). The shift is chosen below
        ``mu^2 - lower^2``, so that the factorization tests ``||A||^2 < mu^2 - shift``.
    kernel_error : float
        Frobenius bound on the error of the kernel values; adds ``kh kw kernel_error`` to
        the result.
    device : torch.device or str, optional
        Where the band lives (CPU or CUDA; float64 only, TF32 off).
    deadline : float, optional
        ``time.perf_counter()`` value after which the test gives up (``reason="time"``).
    max_bytes : int, optional
        Refuse (``reason="memory"``) when the band would need more bytes.
    layout : BandLayout, optional
        Default :func:`choose_layout`.
    base : int
        Column-by-column panel width of the factorization.

    Returns
    -------
    NormTest
        With ``accepted``, ``upper >= ||A||_2`` in exact arithmetic for the kernel as stored
        (plus ``kernel_error``).
    """
    start = time.perf_counter()
    if not (mu > 0 and math.isfinite(mu)):
        raise ValueError(f"mu must be a positive finite number, got {mu!r}")
    layout = choose_layout(layer) if layout is None else layout
    if max_bytes is not None and layout.band_bytes > max_bytes:
        return NormTest(
            False,
            math.inf,
            mu,
            "memory",
            layout,
            notes=[f"band needs {layout.band_bytes / 2**30:.2f} GiB > {max_bytes / 2**30:.2f}"],
        )
    m2 = mu * mu
    if not math.isfinite(m2):
        return NormTest(False, math.inf, mu, "rounding", layout)
    dev = torch.device("cpu" if device is None else device)
    notes: list[str] = []
    rounding = 0.0
    for g, kernel in enumerate(group_kernels(layer)):
        band = gram_band(kernel, layout, dev)
        band.neg_()  # -G off the diagonal (exact)
        diag = torch.diagonal(band[:, : layout.block, :], dim1=1, dim2=2)
        diag += m2  # X_ii = fl(m2 - G_ii)
        x_max = float(diag.abs().max())
        margin = up(gram_error(kernel, layout) + 2 * U * x_max, 2)
        trace = float(diag.clamp(min=0).sum()) / (1 - gamma(layout.dim + 1))
        shift = a_priori_shift(float(diag.max()), trace, layout.inner_terms, margin)
        room = m2 - lower * lower if 0 < lower < mu else math.inf
        if shift > room / 2:  # keep the factorization's test below ``||A||^2``
            floor = margin + 2 * U * x_max
            if room / 2 <= up(floor, 2):
                return NormTest(
                    False,
                    math.inf,
                    mu,
                    "below_floor",
                    layout,
                    time.perf_counter() - start,
                    [f"mu^2 - lower^2 = {room:.3g} below the rounding floor {floor:.3g}"],
                )
            shift = room / 2
        res = verified_psd(
            band,
            layout.bandwidth,
            shift=shift,
            margin=margin,
            base=base,
            deadline=deadline,
        )
        del band
        if not res.accepted:
            return NormTest(
                False,
                math.inf,
                mu,
                res.reason,
                layout,
                time.perf_counter() - start,
                [f"group {g}: {res.reason} (shift {res.shift:.3g}, needed {res.needed:.3g})"],
            )
        notes.append(f"group {g}: shift {res.shift:.3g} >= rounding bound {res.needed:.3g}")
        rounding = max(rounding, res.needed / m2)
    kh, kw = layer.kernel_size
    upper = up(up(math.sqrt(m2), 1) + kernel_error * kh * kw, 2)
    seconds = time.perf_counter() - start
    return NormTest(True, upper, mu, "accepted", layout, seconds, notes, rounding)


# ---------------------------------------------------------------------------- dense helpers
def band_from_dense(x: np.ndarray | torch.Tensor, block: int) -> tuple[torch.Tensor, int]:
    """The lower block band of a symmetric matrix and its block bandwidth (for tests and
    checks of :func:`verified_psd`).

    The order is padded to a whole number of blocks with a diagonal equal to the largest
    diagonal entry (1 if none is positive). ``X`` is a principal submatrix of the padded
    matrix, so by interlacing a lower bound on the padded matrix's smallest eigenvalue holds
    for ``X``.
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    n = x.shape[0]
    nz = torch.nonzero(torch.tril(x))
    w = int((nz[:, 0] - nz[:, 1]).max()) if nz.numel() else 0
    p = -(-w // block)
    n_blocks = max(1, -(-n // block))
    rows = (p + 1) * block
    band = torch.zeros(n_blocks, rows, block, dtype=torch.float64)
    padded = torch.zeros(n_blocks * block + rows, n_blocks * block, dtype=torch.float64)
    padded[:n, :n] = x
    top = float(torch.diagonal(x).max()) if n else 1.0
    for i in range(n, n_blocks * block):
        padded[i, i] = top if top > 0 else 1.0
    for k in range(n_blocks):
        band[k] = padded[k * block : k * block + rows, k * block : (k + 1) * block]
    return band, p


def dense_from_band(band: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """The lower-triangular matrix stored in a band (e.g. the factor ``L``), its leading
    ``dim`` rows and columns (default all)."""
    n_blocks, rows, b = band.shape
    dim = n_blocks * b if dim is None else dim
    out = torch.zeros(n_blocks * b + rows, n_blocks * b, dtype=band.dtype)
    for k in range(n_blocks):
        out[k * b : k * b + rows, k * b : (k + 1) * b] = band[k].cpu()
    return torch.tril(out[:dim, :dim])


__all__ = [
    "BandLayout",
    "NormTest",
    "PSDResult",
    "a_priori_shift",
    "band_from_dense",
    "band_layouts",
    "block_band_cholesky",
    "choose_layout",
    "dense_from_band",
    "factor_error_bound",
    "gram_band",
    "gram_error",
    "verified_norm_upper",
    "verified_psd",
]
