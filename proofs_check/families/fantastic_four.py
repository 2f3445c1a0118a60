"""Fantastic Four (Singla & Feizi, ICLR 2021): ``||A|| <= sqrt(kh kw) min(||R||, ||S||, ||T||,
||U||)``, its validity domain, its exact cases and its failure under reflect/replicate padding.

The library code is the registered method ``fantastic_four`` and
:func:`specbound.bounds.fantastic_four.reshaping_bounds` (the four values, exact norms).
"""

from __future__ import annotations

import numpy as np
import torch

from specbound import ConvSpec
from specbound.bounds import compute
from specbound.bounds.fantastic_four import reshaping_bounds
from specbound.testing import (
    adversarial_layers,
    conv_specs,
    symbol_bounded_specs,
)

from ..exact import norm
from ..harness import Search, Skip, run
from ..registry import Mode, Theorem, register
from .common import (
    PADDED_SPECS,
    SYMBOL_CIRCULAR_SPECS,
    ZERO_SPECS,
    describe_layer,
    random_layers,
    suite,
)

FAMILY = "Fantastic Four"
SOURCE = (
    "Singla & Feizi, Fantastic Four: Differentiable Bounds on Singular Values of "
    "Convolution Layers, ICLR 2021 (the four reshapings; the paper's own domain "
    "statement could not be retrieved [NR]); validity domain derived in specbound "
    "(specbound.bounds.fantastic_four module docstring; research/layers.md §3)"
)


def four(kernel: np.ndarray, groups: int) -> np.ndarray:
    """``sqrt(kh kw) max_g ||X_g||`` for X = R, S, T, U (library code, exact norms)."""
    with torch.no_grad():
        return reshaping_bounds(torch.from_numpy(kernel), groups).max(dim=1).values.numpy()


# --------------------------------------------------------------------------- FF1
def _ff1(layer) -> float:
    kernel, spec = layer
    exact = norm(kernel, spec)
    values = four(kernel, spec.groups)
    method = compute("fantastic_four", kernel, spec).value
    if exact == 0.0:
        return 0.0 if method >= 0.0 else -1.0
    return min(float(values.min()), method) / exact - 1.0


def _ff1_adversarial(mode: Mode):
    yield from suite(ZERO_SPECS + SYMBOL_CIRCULAR_SPECS, mode)


register(
    Theorem(
        id="FF1",
        title="Each of the four reshaping bounds is an upper bound (validity domain)",
        statement="Each of sqrt(kh kw) ||R||, ||S||, ||T||, ||U|| is >= ||A|| for zero padding of "
        "any amount and circular padding with at most d(k-1) padded in total per axis, any input "
        "size (including n < k), stride, dilation and groups (maximum over groups); hence so is "
        "specbound's fantastic_four value (their minimum).",
        latex=r"\|A\|_2 \le \sqrt{k_h k_w}\,\min\big(\|R\|, \|S\|, \|T\|, \|U\|\big)",
        source=SOURCE,
        conditions="the domain above; the four norms computed exactly (never by power iteration, "
        "which under-estimates); relative tolerance 1e-12",
        relied_on=True,
        check=lambda mode: run(
            Search(
                _ff1,
                tolerance=1e-12,
                random=lambda rng, n: random_layers(
                    rng,
                    n,
                    ("gaussian", "integer", "constant"),
                    modes=("zeros", "circular"),
                    symbol_domain=True,
                    max_size=6,
                ),
                adversarial=_ff1_adversarial,
                strategy=adversarial_layers(symbol_bounded_specs(max_size=6)),
                describe=describe_layer,
                key="FF1",
            ),
            mode,
        ),
        proof="A = sum_ab K_ab (x) S_a (x) S'_b with each S_a a partial permutation (each tap "
        "reads "
        "each pixel at most once): A = (T (x) I) P with P^T P <= kh kw I; U by the adjoint; R and "
        "S "
        "by splitting along one axis and Cauchy-Schwarz (module docstring).",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- FF2
def _ff2(instance) -> float:
    kernel, spec = instance
    values = four(kernel, spec.groups)
    target = norm(kernel, spec)
    if target == 0.0:
        return 0.0 if float(values.max()) == 0.0 else -1.0
    if kernel.shape[2:] == (1, 1):
        return -float(np.abs(values / target - 1.0).max())
    return -abs(float(values.min()) / target - 1.0)  # constant kernel, circular


def _ff2_random(rng: np.random.Generator, count: int):
    for i in range(count):
        c_out, c_in = (int(v) for v in rng.integers(1, 4, size=2))
        if i % 2:
            yield (
                rng.standard_normal((c_out, c_in, 1, 1)),
                ConvSpec(
                    str(rng.choice(["zeros", "circular"])), "same", (int(rng.integers(1, 5)),) * 2
                ),
            )
        else:
            kh, kw = (int(v) for v in rng.integers(1, 5, size=2))
            n = int(rng.integers(1, 7))
            yield (
                np.full((c_out, c_in, kh, kw), rng.standard_normal()),
                ConvSpec("circular", "same", (n, n)),
            )


register(
    Theorem(
        id="FF2",
        title="Fantastic Four is exact for 1x1 kernels and constant kernels (circular)",
        statement="For 1x1 kernels all four bounds equal ||W|| = ||A||; for a constant kernel the "
        "bound equals the circular norm kh kw sqrt(c_out c_in) |c| at every size.",
        latex=r"k = 1:\ \sqrt{hw}\|R\| = \dots = \|W\| = \|A\|;\quad K \equiv c:\ "
        r"\mathrm{FF} = \sigma_{\mathrm{circ}}(N)",
        source=SOURCE + " (research/layers.md §3.D, FF-2 and FF-3)",
        conditions="1x1 kernels with zero or circular padding; constant kernels with circular "
        "'same' padding, n = 1..6 (n < k included); relative tolerance 1e-12",
        relied_on=False,
        check=lambda mode: run(
            Search(
                _ff2,
                tolerance=1e-12,
                random=_ff2_random,
                n_random=(8, 60),
                describe=describe_layer,
                key="FF2",
            ),
            mode,
        ),
        proof="k = 1: the four reshapes are W or W^T. Constant: every reshape is an all-c matrix "
        "with c_out c_in kh kw entries, of norm |c| sqrt(c_out c_in kh kw); times sqrt(kh kw) this "
        "is the circular norm kh kw sqrt(c_out c_in) |c| (the DC frequency, on every grid).",
        family=FAMILY,
    )
)


# --------------------------------------------------------------------------- FF-N1
def ff_padded_search(quantifier: str = "exists") -> Search:
    """Fantastic Four under reflect/replicate padding: ``exists`` searches for ``||A|| > FF``;
    ``forall`` is the false statement that the bound holds there."""

    def margin(layer) -> float:
        kernel, spec = layer
        bound = float(four(kernel, spec.groups).min())
        exact = norm(kernel, spec)
        if bound == 0.0:
            raise Skip
        return exact / bound - 1.0 if quantifier == "exists" else bound / exact - 1.0

    modes = ("reflect", "replicate")
    return Search(
        margin,
        quantifier=quantifier,
        tolerance=1e-9 if quantifier == "exists" else 1e-12,
        random=lambda rng, n: random_layers(
            rng, n, ("constant", "nonnegative", "gaussian"), modes=modes, max_size=5, max_kernel=3
        ),
        adversarial=lambda m: suite(PADDED_SPECS, m, ("constant", "nonnegative", "gaussian")),
        strategy=adversarial_layers(conv_specs(modes, max_size=5, max_kernel=3)),
        describe=describe_layer,
        key=f"FF-N1-{quantifier}",
    )


def _ff_n1_check(mode: Mode):
    result = run(ff_padded_search("exists"), mode)
    kernel = np.ones((1, 1, 3, 3))
    try:
        compute("fantastic_four", kernel, ConvSpec("reflect", "same", (4, 4)))
        result.notes.append("specbound's fantastic_four method did NOT refuse reflect padding")
        result.error = "fantastic_four accepted padding='reflect' (outside its domain)"
    except ValueError:
        result.notes.append(
            "specbound's fantastic_four method refuses reflect/replicate padding (checked)"
        )
    return result


register(
    Theorem(
        id="FF-N1",
        title="Fantastic Four fails under reflect and replicate padding",
        statement="There are kernels whose reflect- or replicate-padded layer has norm above the "
        "Fantastic Four bound (these pads read edge pixels twice); specbound's method refuses "
        "these modes.",
        latex=r"\exists K:\ \|A_{\mathrm{reflect}}\|_2 > \sqrt{k_h "
        r"k_w}\min(\|R\|,\|S\|,\|T\|,\|U\|)",
        source=SOURCE + " (research/layers.md §3.D FF-N1: up to 25% reflect, 6.5% replicate)",
        conditions="reflect and replicate padding; a witness exceeds the bound by more than 1e-9",
        relied_on=False,
        quantifier="exists",
        check=_ff_n1_check,
        proof="Witnessed by computation; the proof of FF1 needs each tap to read each pixel at "
        "most "
        "once, which reflect/replicate violate.",
        family=FAMILY,
    )
)
