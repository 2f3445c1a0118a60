"""Transposed and d-dimensional convolutions (1, 2 and 3 spatial axes), on dense float64
operators built from torch itself.

The statements are those of docs/certify.md, section 7: a transposed convolution is the
adjoint of a forward convolution at its output size (``TRANSPOSE-ADJ``, L12), zero-padded
norms grow with the size (``ZERO-MONO``, L13), the polyphase frequency matrices of a 3-D DFT
carry the singular values of a circular 3-D layer (``ND-CIRCULANT``, L14), and the norm of a
3-D padding operator is the product of the per-axis norms (``ND-KRON``, L16). None of them
uses specbound's operators: every matrix is the Jacobian of a torch functional, taken column
by column on the identity, and the frequency matrices are built here from the weight. Each
statement has a planted false variant (``*-NO-OUTPUT-PADDING``, ``*-CIRCULAR``, ``*-2AXES``,
``*-MAX``) that must FAIL on the same instances.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..harness import Search, Skip, run
from ..registry import Mode, Theorem, register

FAMILY = "Transposed and d-dimensional convolutions"
SOURCE = "derived in specbound (docs/certify.md, section 7)"

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONVT = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def dense(fn: Callable[[torch.Tensor], torch.Tensor], in_shape: tuple[int, ...]) -> np.ndarray:
    """The float64 matrix of the linear map ``fn`` on inputs of shape ``in_shape`` (without the
    batch axis): ``fn`` applied to the identity, one basis vector per batch entry."""
    n = math.prod(in_shape)
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape)
    with torch.no_grad():
        out = fn(eye)
    return out.reshape(n, -1).T.numpy().copy()


def _wrap(x: torch.Tensor, pads: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """Circular padding by an index map (any amount, also beyond the size): axis ``i`` of the
    result holds ``x`` at ``(t - lo) mod n`` for ``t`` in ``[0, n + lo + hi)``."""
    for axis, (lo, hi) in enumerate(pads):
        dim = 2 + axis
        n = x.shape[dim]
        idx = torch.arange(-lo, n + hi) % n
        x = x.index_select(dim, idx)
    return x


def _zero_pad(x: torch.Tensor, pads: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """Zero padding (a negative pad crops), pads per axis in the order of the axes."""
    flat = [v for lo_hi in reversed(pads) for v in lo_hi]
    return F.pad(x, flat)


def _norm(a: np.ndarray) -> float:
    return float(np.linalg.norm(a, 2)) if a.size else 0.0


# --------------------------------------------------------------------------- TRANSPOSE-ADJ
def _adj_instances(rng: np.random.Generator, count: int) -> Iterator[dict]:
    for k in range(count):
        ell = 1 + k % 3
        groups = int(rng.choice([1, 2]))
        c_in_t = groups * int(rng.integers(1, 3))
        c_out_t = groups * int(rng.integers(1, 3))
        big = 4 if ell < 3 else 3
        ks = tuple(int(rng.integers(1, big)) for _ in range(ell))
        s = tuple(int(rng.integers(1, 4)) for _ in range(ell))
        d = tuple(int(rng.integers(1, 3)) for _ in range(ell))
        p = tuple(int(rng.integers(0, 3)) for _ in range(ell))
        # PyTorch's condition: output_padding < max(stride, dilation); q >= s included
        q = tuple(int(rng.integers(0, max(si, di))) for si, di in zip(s, d, strict=True))
        n = tuple(int(rng.integers(1, big + 1)) for _ in range(ell))
        w = rng.normal(size=(c_in_t, c_out_t // groups, *ks))
        yield {
            "weight": w,
            "stride": s,
            "padding": p,
            "output_padding": q,
            "dilation": d,
            "groups": groups,
            "n": n,
        }


def _adj_adversarial(mode: Mode) -> Iterator[dict]:
    """Output padding at or above the stride (below the dilation), in 1-D and 3-D with groups,
    and a high pad p - q < 0 (the forward layer then ignores its last inputs)."""
    rng = np.random.default_rng(14)
    cases = [
        ((1, 1, 3), (1,), (0,), (1,), (2,), 1, (3,)),
        ((4, 1, 2, 2, 2), (1, 2, 1), (1, 0, 0), (1, 1, 1), (2, 2, 2), 2, (2, 2, 3)),
        ((2, 3, 3, 2), (2, 1), (0, 1), (1, 0), (1, 2), 1, (3, 2)),
    ]
    for shape, s, p, q, d, g, n in cases:
        yield {
            "weight": rng.normal(size=shape),
            "stride": s,
            "padding": p,
            "output_padding": q,
            "dilation": d,
            "groups": g,
            "n": n,
        }


def _adj_margin(inst: dict, planted: bool = False) -> float:
    w = torch.from_numpy(inst["weight"])
    s, p, q, d = inst["stride"], inst["padding"], inst["output_padding"], inst["dilation"]
    g, n = inst["groups"], inst["n"]
    ell = len(n)
    ks = w.shape[2:]
    c_in_t, c_out_t = w.shape[0], w.shape[1] * g

    def convt(x: torch.Tensor) -> torch.Tensor:
        return _CONVT[ell](x, w, None, s, p, q, g, d)

    try:
        out = convt(torch.zeros(1, c_in_t, *n, dtype=torch.float64))
    except RuntimeError:
        raise Skip from None
    if out.numel() == 0:
        raise Skip
    size = tuple(
        (n[i] - 1) * s[i] - 2 * p[i] + d[i] * (ks[i] - 1) + (0 if planted else q[i]) + 1
        for i in range(ell)
    )
    if not planted and tuple(out.shape[2:]) != size:
        return -1.0  # the output-size formula is part of the statement
    t = dense(convt, (c_in_t, *n))

    def conv(x: torch.Tensor) -> torch.Tensor:
        return _CONV[ell](x, w, None, s, p, d, g)

    if min(size) < 1:
        return -1.0
    try:
        a = dense(conv, (c_out_t, *size))
        rows = conv(torch.zeros(1, c_out_t, *size, dtype=torch.float64)).shape[2:]
    except RuntimeError:
        return -1.0
    # L12: the forward layer has n + floor(q/s) rows per axis; T^T is its first n per axis
    if tuple(rows) != tuple(n[i] + q[i] // s[i] for i in range(ell)) and not planted:
        return -1.0
    a = a.reshape(c_in_t, *rows, -1)
    if any(rows[i] < n[i] for i in range(ell)):
        return -1.0
    a = a[(slice(None), *(slice(0, ni) for ni in n))].reshape(-1, a.shape[-1])
    if a.shape != t.T.shape:
        return -1.0
    scale = float(np.abs(t).max(initial=0.0)) or 1.0
    worst = -float(np.abs(a - t.T).max(initial=0.0)) / scale
    if planted:
        return worst
    # the form certify uses: pads (p, max(p - q, 0)) on the first L - max(q - p, 0) inputs per
    # axis; the inputs after them are read by no row (zero columns)
    cut = tuple(size[i] - max(q[i] - p[i], 0) for i in range(ell))
    pads = tuple((p[i], max(p[i] - q[i], 0)) for i in range(ell))
    if min(cut) < 1:  # no input is read on some axis: the transposed layer is zero
        return worst if not np.any(t) else -1.0

    def conv_cut(x: torch.Tensor) -> torch.Tensor:
        return _CONV[ell](_zero_pad(x, pads), w, None, s, 0, d, g)

    try:
        b = dense(conv_cut, (c_out_t, *cut))
    except RuntimeError:
        return -1.0
    tt = t.T.reshape(-1, c_out_t, *size)
    kept = tt[(slice(None), slice(None), *(slice(0, ci) for ci in cut))].reshape(tt.shape[0], -1)
    if kept.shape != b.shape:
        return -1.0
    rest = tt.copy()
    rest[(slice(None), slice(None), *(slice(0, ci) for ci in cut))] = 0.0
    worst = min(worst, -float(np.abs(kept - b).max(initial=0.0)) / scale)
    return min(worst, -float(np.abs(rest).max(initial=0.0)) / scale)


def adjoint_search(planted: bool = False) -> Search:
    """``TRANSPOSE-ADJ``, or its planted variant (the size without ``output_padding``)."""
    return Search(
        lambda inst: _adj_margin(inst, planted),
        tolerance=1e-12,
        random=_adj_instances,
        adversarial=_adj_adversarial,
        n_random=(30, 300),
        key="TRANSPOSE-ADJ" + ("-NO-OUTPUT-PADDING" if planted else ""),
    )


register(
    Theorem(
        id="TRANSPOSE-ADJ",
        title="A transposed convolution is the adjoint of the forward convolution at its output "
        "size (1, 2 and 3 axes)",
        statement="conv_transposeNd(W, stride s, padding p, output_padding q, groups g, dilation "
        "d) on input size n has output size L = (n-1)s - 2p + d(k-1) + q + 1 per axis, and its "
        "matrix is, entry for entry, the transpose of the first n rows per axis of convNd(W, s, "
        "zero padding p, d, g) on size L (the same weight tensor read as (c_out, c_in/g, *k)); "
        "that forward layer has n + floor(q/s) rows per axis, so for q < s it is exactly the "
        "adjoint, and the two have the same norm. Equivalently (the form certify uses, only "
        "non-negative pads): the transpose is the forward layer with pads (p, max(p-q, 0)) on "
        "the first L - max(q-p, 0) inputs per axis, and zero on the inputs after them.",
        latex=r"T^{(n)}_{W} = \big(R_n\,C^{(L(n))}_{W}\big)^{\top},\quad "
        r"L(n) = (n-1)s - 2p + d(k-1) + q + 1,\quad R_n = I \text{ if } q < s",
        source=SOURCE + ", L12",
        conditions="1, 2 and 3 spatial axes; 1-2 groups; kernels up to 3 (2 in 3-D); strides "
        "1-3, dilation 1-2, padding 0-2, output_padding < max(stride, dilation) (also >= the "
        "stride); inputs up to 4 (3 in 3-D); float64 Jacobians of torch's functionals; "
        "entrywise, relative tolerance 1e-12",
        relied_on=True,
        check=lambda mode: run(adjoint_search(), mode),
        proof="Input pixel (o, j) of the transposed layer adds W[o, c, a] u[o, j] to output "
        "(c, t) with t = s j - p + d a inside [0, L); row (o, j) of the forward layer reads "
        "W[o, c, a] x[c, s j - p + d a]: the same incidence with rows and columns exchanged. The "
        "forward row count floor((L + 2p - d(k-1) - 1)/s) + 1 = n + floor(q/s).",
        family=FAMILY,
    )
)

register(
    Theorem(
        id="TRANSPOSE-ADJ-NO-OUTPUT-PADDING",
        title="Planted: the adjoint convolution at the size without output_padding",
        statement="The transposed convolution is the adjoint of the forward convolution on size "
        "(n-1)s - 2p + d(k-1) + 1 (output_padding left out; false when q > 0: must FAIL).",
        latex=r"T^{(n)}_{W} \overset{?}{=} \big(C^{((n-1)s-2p+d(k-1)+1)}_{W}\big)^{\top}",
        source=SOURCE + ", L12",
        conditions="as TRANSPOSE-ADJ",
        relied_on=False,
        expected="FAIL",
        check=lambda mode: run(adjoint_search(planted=True), mode),
        proof="With q > 0 the transposed layer has q more outputs per axis than that forward "
        "layer has inputs.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- ZERO-MONO
def _mono_instances(rng: np.random.Generator, count: int) -> Iterator[dict]:
    for k in range(count):
        ell = 1 + k % 3
        groups = int(rng.choice([1, 2]))
        c_out, c_in = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
        big = 4 if ell < 3 else 3
        ks = tuple(int(rng.integers(1, big)) for _ in range(ell))
        w = rng.normal(size=(c_out, c_in // groups, *ks))
        if k % 4 == 0:
            w = np.round(w * 2.0)  # integer weights: exact ties between sizes
        yield {
            "weight": w,
            "stride": tuple(int(rng.integers(1, 4)) for _ in range(ell)),
            "dilation": tuple(int(rng.integers(1, 3)) for _ in range(ell)),
            "groups": groups,
            "pads": tuple((int(rng.integers(0, 3)), int(rng.integers(-1, 3))) for _ in range(ell)),
            "size": tuple(int(rng.integers(1, big + 1)) for _ in range(ell)),
            "axis": int(rng.integers(0, ell)),
        }


def _mono_adversarial(mode: Mode) -> Iterator[dict]:
    # the circular [1, -1] kernel: norm 2 at N = 2, 2 cos(pi/6) at N = 3
    yield {
        "weight": np.array([[[1.0, -1.0]]]),
        "stride": (1,),
        "dilation": (1,),
        "groups": 1,
        "pads": ((0, 1),),
        "size": (2,),
        "axis": 0,
    }
    yield {
        "weight": np.array([[[[1.0, -1.0], [-1.0, 1.0]]]]),
        "stride": (1, 1),
        "dilation": (1, 1),
        "groups": 1,
        "pads": ((0, 1), (0, 1)),
        "size": (2, 2),
        "axis": 1,
    }


def _layer_norm(inst: dict, size: tuple[int, ...], circular: bool) -> float:
    w = torch.from_numpy(inst["weight"])
    ell, pads = len(size), inst["pads"]
    c_in = w.shape[1] * inst["groups"]

    def fn(x: torch.Tensor) -> torch.Tensor:
        xp = _wrap(x, pads) if circular else _zero_pad(x, pads)
        return _CONV[ell](xp, w, None, inst["stride"], 0, inst["dilation"], inst["groups"])

    try:
        return _norm(dense(fn, (c_in, *size)))
    except RuntimeError:
        raise Skip from None


def _mono_margin(inst: dict, circular: bool = False) -> float:
    size = inst["size"]
    if circular and any(lo < 0 or hi < 0 for lo, hi in inst["pads"]):
        raise Skip  # a negative circular pad is no padding map
    bigger = tuple(v + (i == inst["axis"]) for i, v in enumerate(size))
    small = _layer_norm(inst, size, circular)
    large = _layer_norm(inst, bigger, circular)
    if small == 0.0:
        return 0.0
    return large / small - 1.0


def mono_search(circular: bool = False) -> Search:
    """``ZERO-MONO``, or its planted variant for circular padding."""
    return Search(
        lambda inst: _mono_margin(inst, circular),
        tolerance=1e-12,
        random=_mono_instances,
        adversarial=_mono_adversarial,
        n_random=(30, 300),
        key="ZERO-MONO" + ("-CIRCULAR" if circular else ""),
    )


register(
    Theorem(
        id="ZERO-MONO",
        title="Zero-padded norms do not decrease as the input grows (any stride, 1-3 axes)",
        statement="For zero padding with any pads (a negative high pad crops), stride, dilation "
        "and groups, the norm of the layer on size L is at most its norm on size L + e_i, for "
        "every axis i.",
        latex=r"L \le L' \Rightarrow \|F_L\| \le \|F_{L'}\|",
        source=SOURCE + ", L13",
        conditions="1, 2 and 3 spatial axes; 1-2 groups; kernels up to 3 (2 in 3-D); strides "
        "1-3, dilation 1-2, pads 0-2 low and -1-2 high; sizes up to 4 (3 in 3-D), one axis "
        "grown by one; gaussian and integer weights; relative tolerance 1e-12",
        relied_on=True,
        check=lambda mode: run(mono_search(), mode),
        proof="Extend x by zeros: every row of F_L is a row of F_L' and reads the same values "
        "(pad zeros become zeros of the extended input), so F_L x is a sub-vector of F_L' x~.",
        family=FAMILY,
    )
)

register(
    Theorem(
        id="ZERO-MONO-CIRCULAR",
        title="Planted: circular-padded norms do not decrease as the input grows",
        statement="ZERO-MONO with circular padding (false: the circular [1, -1] has norm 2 at "
        "N = 2 and sqrt(3) at N = 3; must FAIL).",
        latex=r"\|C_N\| \overset{?}{\le} \|C_{N+1}\|",
        source=SOURCE + ", L13",
        conditions="as ZERO-MONO, non-negative pads, padding by wrapping",
        relied_on=False,
        expected="FAIL",
        check=lambda mode: run(mono_search(circular=True), mode),
        proof="The circular norm is the maximum of the symbol over the grid of size N, and the "
        "grids of N and N + 1 are not nested.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- ND-CIRCULANT
def _circ_instances(rng: np.random.Generator, count: int) -> Iterator[dict]:
    for k in range(count):
        groups = int(rng.choice([1, 2]))
        c_out, c_in = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
        ks = tuple(int(rng.integers(1, 4)) for _ in range(3))
        s = tuple(int(rng.integers(1, 3)) for _ in range(3))
        d = tuple(int(rng.integers(1, 3)) for _ in range(3))
        m = tuple(int(rng.integers(1, 4)) for _ in range(3))
        lo = tuple(int(rng.integers(0, di * (ki - 1) + 1)) for di, ki in zip(d, ks, strict=True))
        w = rng.normal(size=(c_out, c_in // groups, *ks))
        if k % 4 == 0:
            w = np.round(w * 2.0)
        yield {"weight": w, "stride": s, "dilation": d, "groups": groups, "m": m, "lo": lo}


def _circ_dense(inst: dict) -> np.ndarray:
    w = torch.from_numpy(inst["weight"])
    s, d, m, lo = inst["stride"], inst["dilation"], inst["m"], inst["lo"]
    ks = w.shape[2:]
    size = tuple(si * mi for si, mi in zip(s, m, strict=True))
    pads = tuple((lo[i], d[i] * (ks[i] - 1) - lo[i]) for i in range(3))

    def fn(x: torch.Tensor) -> torch.Tensor:
        return F.conv3d(_wrap(x, pads), w, None, s, 0, d, inst["groups"])

    return dense(fn, (w.shape[1] * inst["groups"], *size))


def _polyphase_sv(inst: dict, axes: tuple[int, ...] = (0, 1, 2)) -> np.ndarray:
    """Singular values of the polyphase frequency matrices: the weight of each group reshaped
    into phases ``R`` and wrapped positions ``Q mod m`` (``d a - P_lo = s Q + R``), then a DFT
    over the spatial ``axes`` (the others are summed: frequency 0 there)."""
    w, g = inst["weight"], inst["groups"]
    s, d, m, lo = inst["stride"], inst["dilation"], inst["m"], inst["lo"]
    c_out, c_in_g, *ks = w.shape
    o_g = c_out // g
    values = []
    for grp in range(g):
        block = w[grp * o_g : (grp + 1) * o_g]
        poly = np.zeros((o_g, c_in_g, *s, *m))
        for a in itertools.product(*(range(k) for k in ks)):
            q, r = zip(*(divmod(d[i] * a[i] - lo[i], s[i]) for i in range(3)), strict=True)
            qm = tuple(q[i] % m[i] for i in range(3))
            poly[(slice(None), slice(None), *r, *qm)] += block[(slice(None), slice(None), *a)]
        for axis in set(range(3)) - set(axes):  # planted: this axis is not transformed
            poly = np.repeat(poly.sum(axis=5 + axis, keepdims=True), m[axis], axis=5 + axis)
        freq = np.fft.fftn(poly, axes=tuple(5 + a for a in axes))
        mats = np.moveaxis(freq.reshape(o_g, c_in_g * math.prod(s), -1), -1, 0)
        values.append(np.linalg.svd(mats, compute_uv=False).ravel())
    return np.sort(np.concatenate(values))


def _circ_margin(inst: dict, axes: tuple[int, ...] = (0, 1, 2)) -> float:
    exact = np.sort(np.linalg.svd(_circ_dense(inst), compute_uv=False))
    fast = _polyphase_sv(inst, axes)
    if exact.shape != fast.shape:
        return -1.0
    top = max(float(exact.max(initial=0.0)), 1e-300)
    return -float(np.abs(exact - fast).max(initial=0.0)) / top


def circulant_search(axes: tuple[int, ...] = (0, 1, 2)) -> Search:
    """``ND-CIRCULANT``, or its planted variant (a DFT over fewer axes)."""
    return Search(
        lambda inst: _circ_margin(inst, axes),
        tolerance=1e-12,
        random=_circ_instances,
        n_random=(16, 160),
        key="ND-CIRCULANT" + ("" if len(axes) == 3 else "-2AXES"),
    )


register(
    Theorem(
        id="ND-CIRCULANT",
        title="A circular 3-D layer is block diagonalised by the 3-D DFT of its polyphase weight",
        statement="For a circular 3-D layer with d(k-1) padded in total per axis and stride s "
        "dividing the size N = s m, the singular values of its dense matrix are, together, those "
        "of the polyphase frequency matrices M(w)_{o,(c,r)} = sum_{a: R_a = r} W[o, c, a] "
        "e^{-i w.Q_a} (d a - P_lo = s Q_a + R_a) over the grid w in 2 pi u / m, per group.",
        latex=r"\operatorname{sv}(C_N) = \biguplus_{\omega\in\Omega_m}\operatorname{sv}"
        r"\big(M(\omega)\big),\quad M(\omega)_{o,(c,r)} = \sum_{a:R_a=r}W_{o,c,a}"
        r"e^{-i\omega\cdot Q_a}",
        source=SOURCE + ", L14",
        conditions="3 spatial axes; 1-2 groups of 1-2 channels; kernels up to 3, strides 1-2, "
        "dilation 1-2, grids m of 1-3 per axis (taps wrap when m < k), any split of the pad "
        "d(k-1) between the two sides; gaussian and integer weights; absolute tolerance 1e-12 "
        "sigma_1 on every singular value",
        relied_on=True,
        check=lambda mode: run(circulant_search(), mode),
        proof="The polyphase reshape is a permutation of the inputs; the layer becomes a "
        "stride-1 block circulant on Z_m1 x Z_m2 x Z_m3, and the Kronecker product of the three "
        "unitary DFTs diagonalises every cyclic shift of that group.",
        family=FAMILY,
    )
)

register(
    Theorem(
        id="ND-CIRCULANT-2AXES",
        title="Planted: a DFT over two of the three axes block diagonalises a 3-D circulant",
        statement="ND-CIRCULANT with the DFT over the last two axes only and the first axis' "
        "positions summed (frequency 0 on it for every matrix; false: must FAIL).",
        latex=r"\operatorname{sv}(C_N) \overset{?}{=} \biguplus\operatorname{sv}"
        r"\big(M(0,\omega_2,\omega_3)\big)",
        source=SOURCE + ", L14",
        conditions="as ND-CIRCULANT",
        relied_on=False,
        expected="FAIL",
        check=lambda mode: run(circulant_search(axes=(1, 2)), mode),
        proof="A kernel spread along the first axis has a symbol that varies with w_1.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- ND-KRON
_PAD_MODES = ("reflect", "replicate", "circular")


def _kron_instances(rng: np.random.Generator, count: int) -> Iterator[dict]:
    for k in range(count):
        mode = _PAD_MODES[k % 3]
        n = tuple(int(rng.integers(1, 5)) for _ in range(3))
        pads = []
        for ni in n:
            top = ni - 1 if mode == "reflect" else (ni if mode == "circular" else 3)
            pads.append((int(rng.integers(0, top + 1)), int(rng.integers(0, top + 1))))
        yield {"mode": mode, "n": n, "pads": tuple(pads)}


def _pad_matrix(mode: str, n: tuple[int, ...], pads: tuple[tuple[int, int], ...]) -> np.ndarray:
    flat = [v for lo_hi in reversed(pads) for v in lo_hi]
    return dense(lambda x: F.pad(x, flat, mode=mode), (1, *n))


def _kron_margin(inst: dict, planted: bool = False) -> float:
    mode, n, pads = inst["mode"], inst["n"], inst["pads"]
    try:
        full = _pad_matrix(mode, n, pads)
        axes = [_pad_matrix(mode, (n[i],), (pads[i],)) for i in range(3)]
    except (RuntimeError, NotImplementedError):
        raise Skip from None
    kron = np.kron(np.kron(axes[0], axes[1]), axes[2])
    if kron.shape != full.shape or not np.array_equal(kron, full):
        return -1.0  # the factorisation itself is part of the statement
    norms = [_norm(a) for a in axes]
    claim = max(norms) if planted else math.prod(norms)
    exact = _norm(full)
    return -abs(claim - exact) / exact


def kron_search(planted: bool = False) -> Search:
    """``ND-KRON``, or its planted variant (the largest per-axis norm)."""
    return Search(
        lambda inst: _kron_margin(inst, planted),
        tolerance=1e-12,
        random=_kron_instances,
        n_random=(30, 300),
        key="ND-KRON" + ("-MAX" if planted else ""),
    )


register(
    Theorem(
        id="ND-KRON",
        title="A 3-D padding operator is the Kronecker product of its axes; its norm the product",
        statement="torch's 3-D reflect, replicate and circular padding is, entry for entry, the "
        "Kronecker product P_1 (x) P_2 (x) P_3 of the 1-D padding maps of its axes, so its norm "
        "is ||P_1|| ||P_2|| ||P_3|| (each sqrt of the largest copy count).",
        latex=r"P = P_1\otimes P_2\otimes P_3,\qquad \|P\| = \prod_{i=1}^{3}\|P_i\|",
        source=SOURCE + ", L16",
        conditions="sizes 1-4 per axis; pads 0 to n-1 (reflect), 0-3 (replicate), 0 to n "
        "(circular), low and high drawn separately; relative tolerance 1e-12",
        relied_on=True,
        check=lambda mode: run(kron_search(), mode),
        proof="Each padded position copies the input at one index per axis, chosen by that "
        "axis' map alone; singular values of a Kronecker product are the products of the "
        "factors' singular values.",
        family=FAMILY,
    )
)

register(
    Theorem(
        id="ND-KRON-MAX",
        title="Planted: a 3-D pad is as bad as its worst axis",
        statement="The norm of a 3-D padding operator is the largest of the three 1-D norms "
        "(false when two axes copy a pixel: must FAIL).",
        latex=r"\|P\| \overset{?}{=} \max_i \|P_i\|",
        source=SOURCE + ", L16",
        conditions="as ND-KRON",
        relied_on=False,
        expected="FAIL",
        check=lambda mode: run(kron_search(planted=True), mode),
        proof="Replicate padding by 1 on every axis of a 1x1x1 input copies its pixel 27 times: "
        "norm sqrt(27), against sqrt(3) per axis.",
        family=FAMILY,
    )
)
