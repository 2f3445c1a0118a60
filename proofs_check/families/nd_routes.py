"""The 3-D forms of the embedding (G1) and cell (G5) lemmas that certify's 3-D routes use:
``ND-EMBED`` (docs/certify.md L15: a zero-padded 3-D layer is a submatrix of the strided
circular layer on every torus of ``rigorous._routes.embedding_layers``) and ``ND-CELLS`` (L17:
Bernstein cells over the 3-torus bound the symbol supremum with ``rho = sum_i D_i h_i``).

Ground truth is independent of specbound's operators: dense matrices are Jacobians of torch
functionals (:func:`proofs_check.families.transposed.dense`), symbols are summed here in
numpy from the weight. Each statement has a planted false variant that must FAIL: the
embedding one stride smaller per axis (``ND-EMBED-SMALL``), and the cell factor of the worst
axis alone, ``rho = max_i D_i h_i`` (``ND-CELLS-MAX``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from specbound import ConvSpec
from specbound.operators import ConvLayer
from specbound.rigorous._routes import embedding_layers

from ..harness import Search, Skip, run
from ..registry import Mode, Theorem, register
from .gaps import G1_COUNTEREXAMPLE
from .transposed import FAMILY, SOURCE, _norm, _wrap, _zero_pad, dense

EMBED_MAX_COLUMNS = 900
"""Largest dense circulant (input entries) built per instance: keeps the check fast."""


# --------------------------------------------------------------------------- ND-EMBED
def _embed_instances(rng: np.random.Generator, count: int) -> Iterator[dict]:
    for _ in range(count):
        groups = int(rng.choice([1, 2]))
        c_in, c_out = groups * int(rng.integers(1, 2)), groups * int(rng.integers(1, 3))
        k = tuple(int(v) for v in rng.integers(1, 4, size=3))
        dil = tuple(int(v) for v in rng.integers(1, 3, size=3))
        s = tuple(int(v) for v in rng.integers(1, 3, size=3))
        degree = [dl * (kk - 1) for dl, kk in zip(dil, k, strict=True)]
        pads = tuple((int(rng.integers(0, dg + 2)), int(rng.integers(0, dg + 2))) for dg in degree)
        n = tuple(int(v) for v in rng.integers(1, 4, size=3))
        weight = rng.standard_normal((c_out, c_in // groups, *k))
        yield {"weight": weight, "n": n, "pads": pads, "s": s, "d": dil, "g": groups}


def _embed_adversarial(mode: Mode) -> Iterator[dict]:
    # G1's sharpness example with a trivial first axis: the torus one size too small fails
    yield {
        "weight": G1_COUNTEREXAMPLE[:, :, None],
        "n": (2, 3, 3),
        "pads": ((0, 0), (1, 1), (1, 1)),
        "s": (1, 1, 1),
        "d": (1, 1, 1),
        "g": 1,
    }
    yield {
        "weight": np.ones((1, 1, 2, 2, 2)),
        "n": (3, 2, 3),
        "pads": ((1, 0), (0, 1), (1, 1)),
        "s": (2, 1, 2),
        "d": (1, 2, 1),
        "g": 1,
    }


def _zero_matrix(inst: dict) -> np.ndarray:
    w = torch.from_numpy(np.asarray(inst["weight"], dtype=np.float64))
    c_in = w.shape[1] * inst["g"]

    def conv(x: torch.Tensor) -> torch.Tensor:
        return F.conv3d(_zero_pad(x, inst["pads"]), w, None, inst["s"], 0, inst["d"], inst["g"])

    return dense(conv, (c_in, *inst["n"]))


def _circ_matrix(inst: dict, size: tuple[int, ...], pads: tuple[tuple[int, int], ...]):
    w = torch.from_numpy(np.asarray(inst["weight"], dtype=np.float64))
    c_in = w.shape[1] * inst["g"]

    def conv(x: torch.Tensor) -> torch.Tensor:
        return F.conv3d(_wrap(x, pads), w, None, inst["s"], 0, inst["d"], inst["g"])

    return dense(conv, (c_in, *size))


def _embed_margin(inst: dict, offset: int = 0) -> float:
    """``min over the library's tori of ||C_N|| / ||F_n|| - 1`` (``offset`` strides per
    axis added to each torus size: -1 is the planted variant)."""
    spec = ConvSpec("zeros", inst["pads"], inst["n"], inst["s"], inst["d"], inst["g"], ndim=3)
    try:
        layer = ConvLayer(np.asarray(inst["weight"], dtype=np.float64), spec, need_size=True)
    except ValueError as err:  # an empty output
        raise Skip from err
    zero = _norm(_zero_matrix(inst))
    if zero == 0.0:
        raise Skip
    worst = math.inf
    for emb in embedding_layers(layer)[:2]:
        size = tuple(n + offset * s for n, s in zip(emb.input_size, inst["s"], strict=True))
        if min(size) < 1 or layer.c_in * math.prod(size) > EMBED_MAX_COLUMNS:
            continue
        worst = min(worst, _norm(_circ_matrix(inst, size, emb.pads)) / zero - 1.0)
    if worst == math.inf:
        raise Skip
    return worst


def embed_search(planted: bool = False) -> Search:
    """``ND-EMBED``, or its planted variant (each torus one stride smaller per axis)."""
    return Search(
        lambda inst: _embed_margin(inst, -1 if planted else 0),
        tolerance=1e-12,
        random=_embed_instances,
        adversarial=_embed_adversarial,
        n_random=(12, 80),
        n_hypothesis=(0, 0),
        key="ND-EMBED" + ("-SMALL" if planted else ""),
    )


register(
    Theorem(
        id="ND-EMBED",
        title="A zero-padded 3-D layer embeds in the circular layer on each torus certify uses",
        statement="For a zero-padded 3-D convolution on size n (any pads, stride, dilation, "
        "groups) and every torus N of rigorous._routes.embedding_layers (per axis the least "
        "multiple of the stride >= n + max(min(P_lo, D), min(P_hi, D)), then steps of the "
        "stride; low pad min(P_lo, D), total pad D), ||F_n|| <= ||C_N||.",
        latex=r"\|F^{(P)}_n\|_2 \le \|C_N\|_2,\quad N_i \ge n_i + "
        r"\max\big(\min(P_{lo,i}, D_i), \min(P_{hi,i}, D_i)\big),\ s_i \mid N_i",
        source=SOURCE + ", L15 (G1 / L6 axis by axis)",
        conditions="3 axes; kernel sizes 1-3, dilation 1-2, stride 1-2, pads up to D+1, sizes "
        "1-3, groups 1-2; the first two tori of embedding_layers; both norms dense (torch "
        "Jacobians, LAPACK), relative tolerance 1e-12",
        relied_on=True,
        check=lambda mode: run(embed_search(), mode),
        proof="Axis by axis as L6: a read outside [0, n) never wraps into it on a torus that "
        "large, a read inside is unchanged, and the kept rows are distinct rows of C_N; a "
        "multi-index lies in the box exactly when it does on every axis.",
        family=FAMILY,
    )
)

register(
    Theorem(
        id="ND-EMBED-SMALL",
        title="Planted: the 3-D embedding one stride smaller per axis",
        statement="||F_n|| <= ||C_{N - s}|| for the tori of ND-EMBED (false: the G1 sharpness "
        "example with a trivial first axis refutes it; must FAIL).",
        latex=r"\|F^{(P)}_n\|_2 \overset{?}{\le} \|C_{N-s}\|_2",
        source=SOURCE + ", L15",
        conditions="as ND-EMBED",
        relied_on=False,
        expected="FAIL",
        check=lambda mode: run(embed_search(planted=True), mode),
        proof="On the smaller torus a read below 0 wraps into the support.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- ND-CELLS
def _sigma(weight: np.ndarray, omega: np.ndarray) -> np.ndarray:
    """``sigma_1(M(w))`` of the stride-1 symbol ``M(w) = sum_a K[:, :, a] e^{-i w.a}``
    (groups 1) at each row of ``omega`` (``(F, 3)``)."""
    taps = np.stack(
        np.meshgrid(*(np.arange(k) for k in weight.shape[2:]), indexing="ij"), -1
    ).reshape(-1, 3)
    phase = np.exp(-1j * omega @ taps.T)  # (F, T)
    flat = weight.reshape(weight.shape[0], weight.shape[1], -1)
    mats = np.einsum("ft,oct->foc", phase, flat)
    return np.linalg.svd(mats, compute_uv=False)[:, 0]


def _cells(degree: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Cells over ``[0, 2 pi)^2 x [0, pi]`` as certify cuts them at the first level."""
    counts = [1 if v == 0 else max(4, 8 * v) for v in degree[:-1]]
    counts.append(1 if degree[-1] == 0 else max(2, 4 * degree[-1]))
    spans = [2 * np.pi, 2 * np.pi, np.pi]
    axes = [span * (np.arange(n) + 0.5) / n for span, n in zip(spans, counts, strict=True)]
    centres = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    half = np.array([span / (2 * n) for span, n in zip(spans, counts, strict=True)])
    return centres, np.broadcast_to(half, centres.shape)


def _cells_margin(weight: np.ndarray, worst_axis: bool = False) -> float:
    """``max_cells sigma_1(M(c)) / sqrt(1 - rho^2/2)`` over ``S``'s lower estimate, minus 1.

    ``S`` is bounded below by the largest ``sigma_1`` found on the cell centres and on the
    grid three times finer (every evaluated point is a lower bound), so a failure is
    genuine."""
    degree = tuple(k - 1 for k in weight.shape[2:])
    centres, half = _cells(degree)
    widths = half * np.array(degree)
    rho = widths.max(axis=1) if worst_axis else widths.sum(axis=1)
    if np.any(rho**2 >= 2):
        raise Skip
    sigma_c = _sigma(weight, centres)
    upper = float(np.max(sigma_c / np.sqrt(1 - rho**2 / 2)))
    fine = [
        np.arange(max(1, 3 * n)) * 2 * np.pi / max(1, 3 * n)
        for n in (8 * max(v, 1) for v in degree)
    ]
    grid = np.stack(np.meshgrid(*fine, indexing="ij"), -1).reshape(-1, 3)
    s_low = max(float(sigma_c.max()), float(_sigma(weight, grid).max()))
    if s_low == 0.0:
        raise Skip
    return upper / s_low - 1.0


def _cells_instances(rng: np.random.Generator, count: int) -> Iterator[np.ndarray]:
    for _ in range(count):
        shape = (int(rng.integers(1, 3)), int(rng.integers(1, 3)), *rng.integers(1, 4, size=3))
        yield rng.standard_normal(tuple(int(v) for v in shape))


def _cells_adversarial(mode: Mode) -> Iterator[np.ndarray]:
    diff = np.array([1.0, -1.0])
    # separable [1, -1] on every axis: S = 8 at (pi, pi, pi), a cell corner's distance away
    yield np.einsum("i,j,k->ijk", diff, diff, diff)[None, None]
    yield np.einsum("i,j,k->ijk", diff, np.array([1.0, -2.0, 1.0]), diff)[None, None]
    for axes in itertools.permutations((2, 1, 1)):
        yield np.ones((1, 1, *axes)) * np.array([1.0, -1.0]).reshape(
            [2 if a == 2 else 1 for a in axes]
        )


def cells_search(planted: bool = False) -> Search:
    """``ND-CELLS``, or its planted variant (``rho`` of the worst axis alone)."""
    return Search(
        lambda w: _cells_margin(w, worst_axis=planted),
        tolerance=1e-12,
        random=_cells_instances,
        adversarial=_cells_adversarial,
        n_random=(10, 80),
        n_hypothesis=(0, 0),
        key="ND-CELLS" + ("-MAX" if planted else ""),
    )


register(
    Theorem(
        id="ND-CELLS",
        title="Bernstein cells over the 3-torus bound the symbol supremum",
        statement="S = sup_w sigma_1(M(w)) <= max over cells c sigma_1(M(c)) / sqrt(1 - rho_c^2 / "
        "2) with rho_c = sum_i D_i h_i (half-widths h, degrees D_i = k_i - 1), for cells with "
        "rho_c < sqrt 2 covering [0, 2 pi)^2 x [0, pi], cut as certify's every-size route cuts "
        "them.",
        latex=r"S \le \max_{c} \frac{\sigma_1(M(c))}{\sqrt{1 - \rho_c^2/2}},\quad "
        r"\rho_c = \sum_{i=1}^{3} D_i h_i",
        source=SOURCE + ", L17 (L8 for three axes)",
        conditions="3 axes, stride 1, groups 1, kernel sizes 1-3, 1-2 channels; S bounded below "
        "by a grid three times finer than the cells (a failure is genuine); tolerance 1e-12",
        relied_on=True,
        check=lambda mode: run(cells_search(), mode),
        proof="f(w) = |u^* M(w) v|^2 for the top pair at a maximiser is a trigonometric "
        "polynomial of degree D_i per axis, <= S^2; along delta its second derivative is at "
        "most (sum_i D_i |delta_i|)^2 S^2 (Bernstein twice) and its gradient vanishes at the "
        "maximiser, so the centre of the cell holding it has f >= S^2 (1 - rho^2 / 2).",
        family=FAMILY,
    )
)

register(
    Theorem(
        id="ND-CELLS-MAX",
        title="Planted: the cell factor of the worst axis alone",
        statement="S <= max_c sigma_1(M(c)) / sqrt(1 - rho_c^2/2) with rho_c = max_i D_i h_i "
        "(false: the separable [1, -1] kernel on three axes refutes it; must FAIL).",
        latex=r"S \overset{?}{\le} \max_c \frac{\sigma_1(M(c))}{\sqrt{1 - (\max_i D_i h_i)^2/2}}",
        source=SOURCE + ", L17",
        conditions="as ND-CELLS",
        relied_on=False,
        expected="FAIL",
        check=lambda mode: run(cells_search(planted=True), mode),
        proof="For a separable kernel the symbol falls off along every axis at once: "
        "cos(h/2)^3 < sqrt(1 - h^2/2) for the cell next to the maximiser.",
        family=FAMILY,
    )
)
