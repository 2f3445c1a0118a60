"""The audit's Lipschitz rules for non-convolution operators, on dense float64 operators.

Each statement is checked against an exact reference (a dense matrix's norm, or the Jacobian at
random points), and each has a planted false variant (``*_search(planted=True)``) that the
tests require to FAIL on the same instances.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from specbound.audit.normalization import normalization_lipschitz
from specbound.audit.resample import nonnegative_map_bracket
from specbound.audit.structural import broadcast_scale_norm

from ..harness import Search, Skip, run
from ..registry import Theorem, register

FAMILY = "Audit rules (normalisation, max/sort, broadcast, resampling, rearrangements)"


def _dense(fn, in_shape: tuple[int, ...]) -> np.ndarray:
    """Dense matrix of ``fn`` on inputs of ``in_shape`` (batch of one included)."""
    n = math.prod(in_shape)
    eye = torch.eye(n, dtype=torch.float64).reshape(n, *in_shape[1:])
    with torch.no_grad():
        cols = torch.stack([fn(eye[i : i + 1]).reshape(-1) for i in range(n)], dim=1)
    return cols.numpy()


def _norm(a: np.ndarray) -> float:
    return float(np.linalg.norm(a, 2)) if a.size else 0.0


# --------------------------------------------------------------------------- AUD-NORM
def _norm_instances(rng: np.random.Generator, count: int):
    for k in range(count):
        channels = int(rng.integers(1, 5))
        hw = int(rng.integers(1, 5))
        gamma = rng.normal(size=channels) * float(rng.choice([0.1, 1.0, 3.0]))
        if k % 4 == 0:
            gamma[int(rng.integers(channels))] *= 10.0  # one dominant scale
        eps = float(10.0 ** rng.uniform(-6, 1))
        centred = bool(k % 3)
        yield gamma, eps, hw, centred, int(rng.integers(1 << 30))


def _planted_norm_bracket(gamma, eps, size, *, repeat=1, centred=True):
    g = float(np.abs(gamma).max())  # eps ignored: "a normalisation is max|gamma|-Lipschitz"
    return g, g


def _norm_margin(instance, bracket=normalization_lipschitz) -> float:
    gamma, eps, hw, centred, seed = instance
    g = np.repeat(np.asarray(gamma, dtype=np.float64), hw)
    n = g.size
    p = np.eye(n) - (np.ones((n, n)) / n if centred else 0.0)
    dp = g[:, None] * p
    exact = _norm(dp) / math.sqrt(eps)
    lo, hi = bracket(gamma, eps, n, repeat=hw, centred=centred)
    rng = np.random.default_rng(seed)
    worst_jac = 0.0
    for scale in (1e-3, 1.0, 30.0):
        y = p @ (rng.normal(size=n) * scale * math.sqrt(eps))
        s = math.sqrt(float(y @ y) / n + eps)
        jac = g[:, None] * ((np.eye(n) - np.outer(y, y) / (n * s * s)) @ p) / s
        worst_jac = max(worst_jac, _norm(jac))
    if exact == 0.0:
        return 0.0 if hi >= 0.0 and lo <= 0.0 and worst_jac == 0.0 else -1.0
    return min(hi / exact - 1.0, 1.0 - lo / exact, hi / max(worst_jac, 1e-300) - 1.0)


def _rule_search(
    theorem_id: str,
    margin: Callable[[Any, bool], float],
    random: Callable[..., Any],
    planted: bool,
    n_random: tuple[int, int] = (40, 400),
) -> Search:
    """The search of one audit rule, or of its planted false variant (``planted=True``, key
    ``ID-planted``): random instances against dense float64 operators, tolerance 1e-12."""
    return Search(
        lambda inst: margin(inst, planted),
        tolerance=1e-12,
        random=random,
        n_random=n_random,
        n_hypothesis=(0, 0),
        key=theorem_id + ("-planted" if planted else ""),
    )


def norm_search(planted: bool = False) -> Search:
    bracket = _planted_norm_bracket if planted else normalization_lipschitz
    return _rule_search(
        "AUD-NORM", lambda inst, _: _norm_margin(inst, bracket), _norm_instances, planted
    )


register(
    Theorem(
        id="AUD-NORM",
        title="Normalisation layers are ||diag(gamma) P|| / sqrt(eps)-Lipschitz",
        statement="One normalisation group x -> gamma * Px / sqrt(|Px|^2/N + eps) + beta (P the "
        "centring projection, or I for RMSNorm) has Lipschitz constant exactly ||diag(gamma) P|| "
        "/ sqrt(eps); the audit's bracket [||diag(gamma) v||/||v|| / sqrt(eps), max|gamma| / "
        "sqrt(eps)] with v = e_i - 1/N contains it and dominates the Jacobian norm everywhere.",
        latex=r"\operatorname{Lip} = \frac{\|\operatorname{diag}(\gamma) P\|}{\sqrt{\varepsilon}}",
        source="derived in specbound (docs/certify.md, 'Normalisation layers')",
        conditions="1 to 4 channels of 1 to 4 entries sharing gamma, eps in [1e-6, 10], centred "
        "or not, Jacobians at 3 points of different scales; relative tolerance 1e-12",
        relied_on=True,
        check=lambda mode: run(norm_search(), mode),
        proof="J_g(y) = (I - y y^T/(N s^2))/s is symmetric with eigenvalues 1/s and eps/s^3 in "
        "(0, 1/sqrt(eps)] and maps range(P) into itself, so ||D J_g P|| <= ||D P||/sqrt(eps), "
        "with equality at y = 0.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- AUD-MAX
def _max_instances(rng: np.random.Generator, count: int):
    # the sharp family first: u(x) = (x, -M), v(x) = (-M, x) gives max = (x, x)
    yield (
        np.array([[1.0], [0.0]]),
        np.array([[0.0], [1.0]]),
        np.array([0.0, -50.0]),
        np.array([-50.0, 0.0]),
        0,
    )
    for k in range(count):
        n, m = int(rng.integers(1, 5)), int(rng.integers(1, 6))
        u, v = rng.normal(size=(m, n)), rng.normal(size=(m, n))
        a, b = rng.normal(size=m) * 3, rng.normal(size=m) * 3
        yield u, v, a, b, int(rng.integers(1 << 30)) + k


def _max_margin(instance, planted: bool = False) -> float:
    u, v, a, b, seed = instance
    rng = np.random.default_rng(seed)
    lu, lv = _norm(u), _norm(v)
    bound = max(lu, lv) if planted else math.sqrt(lu * lu + lv * lv)
    worst = math.inf
    for _ in range(20):
        x, y = rng.normal(size=u.shape[1]), rng.normal(size=u.shape[1])
        d = float(np.linalg.norm(x - y))
        for f in (np.maximum, np.minimum):
            num = float(np.linalg.norm(f(u @ x + a, v @ x + b) - f(u @ y + a, v @ y + b)))
            if num > 0:
                worst = min(worst, bound * d / num - 1.0)
        # sorting (GroupSort/FullSort/MaxMin) is 1-Lipschitz
        z = u @ x + a
        w = u @ y + a
        num = float(np.linalg.norm(np.sort(z) - np.sort(w)))
        if num > 0 and not planted:
            worst = min(worst, float(np.linalg.norm(z - w)) / num - 1.0)
        # the L2 norm of a group is 1-Lipschitz (reverse triangle inequality)
        num = abs(float(np.linalg.norm(z)) - float(np.linalg.norm(w)))
        if num > 0 and not planted:
            worst = min(worst, float(np.linalg.norm(z - w)) / num - 1.0)
    return worst if math.isfinite(worst) else 0.0


def max_search(planted: bool = False) -> Search:
    return _rule_search("AUD-MAX", _max_margin, _max_instances, planted, n_random=(30, 300))


register(
    Theorem(
        id="AUD-MAX",
        title="max/min of two branches compose like a concatenation; sorting is 1-Lipschitz",
        statement="For maps u, v with constants L_u, L_v, the elementwise max(u, v) and min(u, v) "
        "are sqrt(L_u^2 + L_v^2)-Lipschitz; sorting (GroupSort, FullSort, MaxMin) and the L2 "
        "norm of a group are 1-Lipschitz in L2. max(L_u, L_v) is not enough (u = (x, -M), "
        "v = (-M, x)).",
        latex=r"\|\max(u,v)(x) - \max(u,v)(y)\|^2 \le (L_u^2 + L_v^2)\|x - y\|^2",
        source="derived in specbound (docs/certify.md, 'max, min and sorting'); sorting: "
        "Anil, Lucas & Grosse, Sorting out Lipschitz function approximation, ICML 2019",
        conditions="affine u, v of 1 to 5 outputs of 1 to 4 inputs, 20 random pairs each, and "
        "the sharp family; relative tolerance 1e-12",
        relied_on=True,
        check=lambda mode: run(max_search(), mode),
        proof="|max(a,b) - max(a',b')| <= max(|a - a'|, |b - b'|), whose square is at most "
        "|a - a'|^2 + |b - b'|^2; sum over entries. Sorting: the rearrangement inequality gives "
        "<sort x, sort y> >= <x, y>.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- AUD-BCAST
def _bcast_instances(rng: np.random.Generator, count: int):
    for _ in range(count):
        out = tuple(int(v) for v in rng.integers(1, 4, size=3))
        src = tuple(o if rng.random() < 0.5 else 1 for o in out)
        cshape = tuple(o if rng.random() < 0.6 else 1 for o in out)
        c = rng.normal(size=cshape) if rng.random() < 0.7 else np.ones(cshape)
        yield (1, *src), np.asarray(c)[None]


def _bcast_margin(instance, planted: bool = False) -> float:
    src, c = instance
    ct = torch.from_numpy(c)
    a = _dense(lambda u: u * ct, src)
    exact = _norm(a)
    value = float(np.abs(c).max()) if planted else broadcast_scale_norm(ct, src)
    if exact == 0.0:
        return 0.0 if value == 0.0 else -1.0
    return min(value / exact - 1.0, 1.0 - value / exact)


def bcast_search(planted: bool = False) -> Search:
    return _rule_search("AUD-BCAST", _bcast_margin, _bcast_instances, planted)


register(
    Theorem(
        id="AUD-BCAST",
        title="A broadcast scaled by a constant has norm sqrt(max sum of c^2 over the copies)",
        statement="For u -> c * B u with B a broadcast (each output entry copies one input "
        "entry), ||c * B|| = sqrt(max_j sum_{k copies j} c_k^2); with c = 1 it is sqrt(r) for a "
        "repetition factor r (broadcasting adds, expand, repeat).",
        latex=r"\|\operatorname{diag}(c) B\| = \max_j \big(\sum_{k \to j} c_k^2\big)^{1/2}",
        source="derived in specbound (docs/certify.md, 'Broadcasts')",
        conditions="shapes up to 3x3x3 with random broadcast dimensions, Gaussian or unit c; "
        "two-sided relative tolerance 1e-12",
        relied_on=True,
        check=lambda mode: run(bcast_search(), mode),
        proof="The columns of diag(c) B have disjoint supports, so (diag(c) B)^T diag(c) B is "
        "diagonal with entries sum_{k copies j} c_k^2.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- AUD-RESAMPLE
_MODES = ("nearest", "nearest-exact", "bilinear", "area")


def _resample_instances(rng: np.random.Generator, count: int):
    for k in range(count):
        mode = _MODES[k % len(_MODES)]
        h, w = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        size = (int(rng.integers(1, 9)), int(rng.integers(1, 9)))
        align = bool(rng.random() < 0.5) if mode == "bilinear" else None
        yield (1, 1, h, w), mode, size, align


def _resample_fn(mode: str, size, align):
    kw = {} if align is None else {"align_corners": align}
    return lambda x: F.interpolate(x, size=size, mode=mode, **kw)


def _resample_margin(instance, planted: bool = False) -> float:
    shape, mode, size, align = instance
    fn = _resample_fn(mode, size, align)
    a = _dense(fn, shape)
    if (a < 0).any():
        return -1.0  # the rule needs nonnegative weights
    exact = _norm(a)
    lo, hi = (1.0, 1.0) if planted else nonnegative_map_bracket(fn, shape[1:])
    if exact == 0.0:
        return 0.0
    return min(hi / exact - 1.0, 1.0 - lo / exact)


def resample_search(planted: bool = False) -> Search:
    return _rule_search("AUD-RESAMPLE", _resample_margin, _resample_instances, planted)


register(
    Theorem(
        id="AUD-RESAMPLE",
        title="Nonnegative resampling: the Schur test bounds the norm",
        statement="Nearest, nearest-exact, (bi/tri)linear and area interpolation are linear maps "
        "A with nonnegative entries, and ||A|| <= sqrt(max column sum * max row sum); the "
        "witnesses 1 and A^T 1 give the lower end.",
        latex=r"\|A\|_2^2 \le \|A\|_1 \|A\|_\infty",
        source="Schur test (Riesz-Thorin between l1 and l-infinity); derived for the audit in "
        "specbound (docs/certify.md, 'Resampling')",
        conditions="1x1 to 5x5 inputs resampled to 1x1 .. 8x8, four modes, align_corners both "
        "ways; relative tolerance 1e-12",
        relied_on=True,
        check=lambda mode: run(resample_search(), mode),
        proof="(A x)_i^2 <= (sum_j a_ij)(sum_j a_ij x_j^2) by Cauchy-Schwarz with weights a_ij "
        ">= 0; summing over i gives ||A x||^2 <= max row sum * max column sum * ||x||^2.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- AUD-PERM
_REARRANGE = {
    "flatten": lambda x: torch.flatten(x, 1),
    "reshape": lambda x: x.reshape(1, -1, 2) if x.numel() % 2 == 0 else x.reshape(1, -1),
    "permute": lambda x: x.permute(0, 3, 1, 2),
    "transpose": lambda x: x.transpose(2, 3),
    "slice": lambda x: x[:, :, ::2, 1:],
    "identity": lambda x: torch.nn.Identity()(x),
    "dropout (eval)": lambda x: F.dropout(x, 0.5, training=False),
}


def _perm_instances(rng: np.random.Generator, count: int):
    names = sorted(_REARRANGE)
    for k in range(count):
        shape = (1, *(int(v) for v in rng.integers(1, 4, size=3)))
        yield names[k % len(names)], shape


def _perm_margin(instance, planted: bool = False) -> float:
    name, shape = instance
    fn = _REARRANGE[name]
    if planted and name == "identity":  # "dropout is the identity" without eval mode
        gen = torch.Generator().manual_seed(0)

        def fn(x: torch.Tensor) -> torch.Tensor:
            mask = torch.rand(x.shape, generator=gen) < 0.5
            return torch.where(mask, x / 0.5, torch.zeros_like(x))

        a = _dense(lambda x: fn(torch.ones_like(x)) * x, shape)
    else:
        a = _dense(fn, shape)
    exact = _norm(a)
    margin = 1.0 - exact
    if name not in ("slice",) and not planted:
        margin = min(margin, exact - 1.0)  # a rearrangement is an isometry
    return margin


def perm_search(planted: bool = False) -> Search:
    return _rule_search("AUD-PERM", _perm_margin, _perm_instances, planted, n_random=(28, 280))


register(
    Theorem(
        id="AUD-PERM",
        title="Rearrangements are isometries; selections, eval dropout, identity: 1-Lipschitz",
        statement="flatten, reshape, permute and transpose permute the entries (norm exactly 1); "
        "slicing selects entries (norm <= 1); dropout in eval mode and Identity are the identity. "
        "Dropout in training mode is not 1-Lipschitz (it rescales kept entries by 1/(1-p)).",
        latex=r"\|\Pi\| = 1,\quad \|S\| \le 1",
        source="elementary (docs/certify.md, 'Rearrangements')",
        conditions="shapes up to 3x3x3 (batch 1), seven operations; tolerance 1e-12",
        relied_on=True,
        check=lambda mode: run(perm_search(), mode),
        proof="A permutation matrix is orthogonal; a selection matrix has orthonormal rows.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- AUD-CONVT
def _convt_instances(rng: np.random.Generator, count: int):
    for _ in range(count):
        groups = int(rng.choice([1, 2]))
        c_in, c_out = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
        k = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        s = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
        d = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        p = (int(rng.integers(0, 2)), int(rng.integers(0, 2)))
        op = tuple(int(rng.integers(0, si)) for si in s)  # output_padding < stride
        size = (int(rng.integers(1, 5)), int(rng.integers(1, 5)))
        w = rng.normal(size=(c_in, c_out // groups, *k))
        yield w, s, p, op, d, groups, size


def _convt_margin(instance, planted: bool = False) -> float:
    w, s, p, op, d, groups, size = instance
    wt = torch.from_numpy(w)
    c_in = w.shape[0]

    def convt(x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, wt, None, s, p, op, groups, d)

    try:
        out = convt(torch.zeros(1, c_in, *size, dtype=torch.float64))
    except RuntimeError:
        raise Skip from None
    if out.numel() == 0:
        raise Skip
    t = _dense(convt, (1, c_in, *size))
    at = out.shape[2:] if not planted else size  # planted: the transposed layer's input size

    def conv(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, wt, None, s, p, d, groups)

    try:
        a = _dense(conv, (1, w.shape[1] * groups, *at))
    except RuntimeError:
        return -1.0
    if a.shape != t.T.shape:
        return -1.0
    scale = float(np.abs(t).max(initial=0.0)) or 1.0
    return -float(np.abs(a - t.T).max(initial=0.0)) / scale


def convt_search(planted: bool = False) -> Search:
    return _rule_search("AUD-CONVT", _convt_margin, _convt_instances, planted)


register(
    Theorem(
        id="AUD-CONVT",
        title="A transposed convolution is the adjoint of the convolution at its output size",
        statement="conv_transpose2d(W, stride, padding, output_padding < stride, groups, dilation) "
        "on inputs of size H is the transpose of conv2d(W, stride, padding, dilation, groups) on "
        "inputs of the transposed layer's output size H_out (output_padding included), so "
        "both have the same norm.",
        latex=r"T_{W}^{(H)} = \big(C_{W}^{(H_{out})}\big)^\top",
        source="PyTorch's definition of the transposed convolution as the gradient of the "
        "convolution with respect to its input; checked in specbound (docs/certify.md, "
        "'Transposed convolutions')",
        conditions="1-2 groups, kernels up to 3x3, strides 1-3, dilation 1-2, padding 0-1, "
        "output_padding below the stride (PyTorch also allows it below the dilation; then the "
        "convolution at H_out has more outputs than H, and the audit certifies the cropped "
        "convolution of TRANSPOSE-ADJ, L12), inputs up to 4x4; entrywise, relative tolerance "
        "1e-12",
        relied_on=True,
        check=lambda mode: run(convt_search(), mode),
        proof="Both matrices hold w[o, i, a, b] at (output r, input c) exactly when r = s c - p "
        "+ d (a, b) (transposed) resp. c' = s r' - p + d (a, b) (convolution): the same "
        "incidence with the roles of the two sides exchanged.",
        family=FAMILY,
    )
)
