"""BCOP: Block Convolution Orthogonal Parameterization (Li et al., NeurIPS 2019).

The library code is :class:`specbound.layers.BCOPConv2d` (its forward pass, measured as a dense
Jacobian) and :func:`specbound.layers.bcop.expand_stride`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from hypothesis import strategies as st

from specbound.layers import BCOPConv2d
from specbound.layers.bcop import expand_stride
from specbound.testing import module_matrix

from ..harness import Search, Skip, describe, run
from ..registry import Theorem, register

FAMILY = "BCOP"
SOURCE = (
    "Li, Haque, Anil, Lucas, Grosse & Jacobsen, Preventing Gradient Attenuation in "
    "Lipschitz Constrained Convolutional Networks, NeurIPS 2019 (arXiv 1911.00937); the "
    "construction of Xiao et al., ICML 2018, Alg. 1; statements derived in specbound "
    "(research/layers.md §2.A, §2.D; the paper body could not be retrieved [NR])"
)


def bcop_jacobian(instance) -> tuple[np.ndarray, BCOPConv2d]:
    """Dense Jacobian of a BCOPConv2d with Gaussian free matrices (``instance`` is a dict)."""
    p = instance
    try:
        module = BCOPConv2d(
            p["c_in"],
            p["c_out"],
            p["k"],
            stride=p["stride"],
            padding=p["padding"],
            groups=p["groups"],
            padding_mode=p["mode"],
            bjorck_iters=p["iters"],
            prescale=p["prescale"],
            bias=True,
            dtype=torch.float64,
        )
    except ValueError as exc:
        raise Skip from exc
    rng = np.random.default_rng(p["seed"])
    original = module.parametrizations.weight.original
    with torch.no_grad():
        original.copy_(torch.from_numpy(rng.standard_normal(tuple(original.shape))))
    n = p["n"]
    if p["mode"] == "reflect" and n <= max(max(p) for p in module.pads):
        raise Skip
    if min(n % s for s in module.stride) != 0 and p["mode"] == "circular":
        raise Skip
    try:
        return module_matrix(module, (p["c_in"], n, n)), module
    except (ValueError, RuntimeError) as exc:  # an input the layer refuses (e.g. empty output)
        raise Skip from exc


def _instance(rng: np.random.Generator, modes, iters, stride_ok: bool = True) -> dict:
    groups = int(rng.integers(1, 3))
    stride = int(rng.choice([1, 2])) if stride_ok else 1
    k = stride * int(rng.integers(1, 3)) if stride > 1 else int(rng.integers(1, 5))
    return {
        "c_in": groups * int(rng.integers(1, 4)),
        "c_out": groups * int(rng.integers(1, 4)),
        "k": k,
        "stride": stride,
        "groups": groups,
        "mode": str(rng.choice(list(modes))),
        "padding": "same" if stride > 1 or rng.random() < 0.6 else "valid",
        "iters": int(rng.choice(list(iters))),
        "prescale": str(rng.choice(["gram", "frobenius"])),
        "n": stride * int(rng.integers(1, 4)),
        "seed": int(rng.integers(2**31)),
    }


def _strategy(modes, iters, stride_ok: bool = True):
    return st.integers(0, 2**31 - 1).map(
        lambda seed: _instance(np.random.default_rng(seed), modes, iters, stride_ok)
    )


def _describe(p: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in p.items())


# --------------------------------------------------------------------------- BCOP1
def _orthogonal(instance) -> float:
    j, _ = bcop_jacobian(instance)
    sv = np.linalg.svd(j, compute_uv=False)
    return -float(np.abs(sv - 1.0).max(initial=0.0))


def _ortho_random(rng, count):
    for _ in range(count):
        p = _instance(rng, ("circular",), (60,))
        p["padding"] = "same"
        yield p


register(
    Theorem(
        id="BCOP1",
        title="Converged BCOP is orthogonal under circular padding",
        statement="With exact projectors and an orthogonal H (Björck converged), the BCOP conv "
        "under circular 'same' padding has every singular value equal to 1 for every input size "
        "n >= 1 (J^T J = I if c_in <= c_out, J J^T = I if c_in >= c_out), also with a stride "
        "through space-to-depth.",
        latex=r"\sigma_i(J) = 1\ \forall i:\quad J^\top J = I\ (c_i \le c_o),\quad J J^\top = I\ "
        r"(c_i \ge c_o)",
        source=SOURCE,
        conditions="circular 'same' padding, n a multiple of the stride (including n < k), groups, "
        "even and odd k, 60 Björck steps from Gaussian matrices; tolerance 1e-10",
        relied_on=True,
        check=lambda mode: run(
            Search(
                _orthogonal,
                tolerance=1e-10,
                random=_ortho_random,
                n_random=(6, 60),
                strategy=_strategy(("circular",), (60,)).map(lambda p: {**p, "padding": "same"}),
                n_hypothesis=(4, 100),
                describe=_describe,
                key="BCOP1",
            ),
            mode,
        ),
        proof="The symbol of each 2-tap factor, P + (I - P) z, is unitary on |z| = 1 when P is an "
        "orthogonal projector; products of unitary symbols are unitary, and a slice of a unitary "
        "matrix is an isometry or a co-isometry. A circular 'same' layer's singular values are "
        "those of the symbol on the DFT grid (C4); space-to-depth is a permutation.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- BCOP2
def _contraction(instance) -> float:
    j, _ = bcop_jacobian(instance)
    if j.size == 0:
        raise Skip
    return 1.0 - float(np.linalg.norm(j, 2))


ALL_MODES = ("zeros", "circular", "reflect", "replicate")

register(
    Theorem(
        id="BCOP2",
        title="BCOP is 1-Lipschitz at every Björck count",
        statement="After division by a true upper bound on ||A|| and any number (>= 0) of "
        "first-order "
        "Björck steps W <- 1.5 W - 0.5 W W^T W, the BCOP conv has ||J|| <= 1 for zero padding, "
        "circular padding, and reflect/replicate padding with specbound's compensation; any input "
        "size, stride (space-to-depth), groups.",
        latex=r"f(s) = \tfrac32 s - \tfrac12 s^3:\ 1 - f(s) = \tfrac12 (s-1)^2(s+2) \ge 0,\ "
        r"f([0,1]) \subseteq [0,1] \Rightarrow \|J\|_2 \le 1",
        source=SOURCE + "; specbound.layers.bcop module docstring (proof)",
        conditions="Björck counts 0..3, prescale 'gram' or 'frobenius', all padding modes; "
        "rounding allowance 1e-12",
        relied_on=True,
        check=lambda mode: run(
            Search(
                _contraction,
                tolerance=1e-12,
                random=lambda rng, n: (_instance(rng, ALL_MODES, (0, 1, 2, 3)) for _ in range(n)),
                n_random=(8, 80),
                strategy=_strategy(ALL_MODES, (0, 1, 2, 3)),
                n_hypothesis=(6, 150),
                describe=_describe,
                key="BCOP2",
            ),
            mode,
        ),
        proof="Singular values in [0, 1] stay in [0, 1] under f; so H is a contraction and each "
        "P = W_r W_r^T has eigenvalues in [0, 1], making every factor's symbol a contraction on "
        "the "
        "unit circle; zero padding is a compression, reflect/replicate are compensated.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- BCOP-ZERO
def _not_orthogonal(instance) -> float:
    j, _ = bcop_jacobian(instance)
    sv = np.linalg.svd(j, compute_uv=False)
    return 1.0 - float(sv.min(initial=1.0))


register(
    Theorem(
        id="BCOP-ZERO",
        title="BCOP with zero padding is not orthogonal",
        statement="Under zero 'same' padding a converged BCOP conv has norm <= 1 but is not "
        "orthogonal: border effects push sigma_min well below 1.",
        latex=r"\exists\ \text{BCOP } K:\ \sigma_{\min}\big(J_{\mathrm{zeros}}\big) < 1",
        source=SOURCE + " (research/layers.md §2.D, BCOP-4: sigma_min = 0.0068 for k = 3, 4 -> 4, "
        "n = 3)",
        conditions="zero 'same' padding, 60 Björck steps; a witness has sigma_min < 1 - 1e-3",
        relied_on=False,
        quantifier="exists",
        check=lambda mode: run(
            Search(
                _not_orthogonal,
                quantifier="exists",
                tolerance=1e-3,
                adversarial=lambda m: iter(
                    [
                        {
                            "c_in": 4,
                            "c_out": 4,
                            "k": 3,
                            "stride": 1,
                            "groups": 1,
                            "mode": "zeros",
                            "padding": "same",
                            "iters": 60,
                            "prescale": "gram",
                            "n": 3,
                            "seed": 0,
                        }
                    ]
                ),
                strategy=_strategy(("zeros",), (60,), stride_ok=False),
                describe=_describe,
                key="BCOP-ZERO",
            ),
            mode,
        ),
        proof="Witnessed by computation.",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- BCOP-STRIDE
def _expand(instance) -> float:
    kernel, s, pads, x = instance
    expanded = expand_stride(kernel, (s, s))
    (top, bottom), (left, right) = ((s * lo, s * hi) for lo, hi in pads)
    padded = F.pad(x, (left, right, top, bottom))
    y1 = F.conv2d(F.pixel_unshuffle(padded, s), kernel)
    y2 = F.conv2d(padded, expanded, stride=s)
    if y1.shape != y2.shape:
        return -1.0
    scale = max(float(y1.abs().max()), 1e-300)
    return -float((y1 - y2).abs().max()) / scale


def _expand_random(rng: np.random.Generator, count: int):
    for _ in range(count):
        s = int(rng.integers(2, 4))
        c_in, c_out = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        kh, kw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        kernel = torch.from_numpy(rng.standard_normal((c_out, c_in * s * s, kh, kw)))
        pads = tuple((int(lo), int(hi)) for lo, hi in rng.integers(0, 2, size=(2, 2)))
        n = s * int(rng.integers(max(kh, kw), 5))
        yield kernel, s, pads, torch.from_numpy(rng.standard_normal((2, c_in, n, n)))


register(
    Theorem(
        id="BCOP-STRIDE",
        title="Space-to-depth then conv equals one strided conv with the expanded kernel",
        statement="conv(pixel_unshuffle(pad_{s p}(x), s), K') = conv_stride_s(pad_{s p}(x), E(K')) "
        "with E(K')[o, c, s a + r_h, s b + r_w] = K'[o, c s^2 + r_h s + r_w, a, b] (zero padding "
        "of s times the inner pads).",
        latex=r"\mathrm{conv}\big(\mathrm{unshuffle}_s(x), K'\big) = \mathrm{conv}_s\big(x, "
        r"E(K')\big),\ E(K')_{o,c}[s a + r] = K'_{o,(c, r)}[a]",
        source="derived in specbound (specbound.layers.bcop module docstring, 'Stride'); the "
        "space-to-depth construction is LConvNet's (research/layers.md §2.A)",
        conditions="strides 2..3, inner kernels up to 2 x 2, inner pads 0..1, float64; relative "
        "tolerance 1e-13",
        relied_on=True,
        check=lambda mode: run(
            Search(
                _expand,
                tolerance=1e-13,
                random=_expand_random,
                n_random=(8, 80),
                key="BCOP-STRIDE",
                describe=lambda x: f"stride {x[1]}, pads {x[2]}, K' {describe(x[0].numpy())}",
            ),
            mode,
        ),
        proof="Both read input pixel (s i + s a + r_h, s j + s b + r_w) with the same tap.",
        family=FAMILY,
    )
)
