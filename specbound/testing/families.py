"""Deterministic adversarial kernels and dense matrices, by family name, and their strategies.

:func:`family_kernel` builds one kernel of a named family from a seed, without Hypothesis, so a
fixed adversarial suite can run beside a Hypothesis search (``proofs_check`` does both). The
families extend :data:`~specbound.testing.KERNEL_FAMILIES` with exactly tight and degenerate
cases:

* ``constant`` — all ones: the symbol peaks at frequency 0 with value ``kh kw sqrt(c_out c_in)``,
  attained by every circular layer; Fantastic Four is exact there;
* ``orthogonal_center`` — a (semi-)orthogonal matrix at the central tap, zeros elsewhere: an
  isometry (``c_out >= c_in``) or co-isometry under circular padding, AOL's tight case;
* ``identical_filters`` — every output filter equal: rank one across output channels, where
  ConvNorm reaches ``sqrt(c_out)``;
* ``single_tap`` — one non-zero entry: every bound in the library is exact;
* ``sparse`` — about 20% non-zeros, so whole channels can vanish (zero rescaling factors);
* ``checkerboard`` — ``(-1)^(a+b)`` times a positive matrix: the symbol peaks at ``(pi, pi)``,
  on the DFT grid for even sizes only (odd sizes are the grid's worst case).

Dense matrices (:func:`family_matrix`, :func:`matrices`) cover the Gram-iteration edge cases:
rank one (the bound is exact), a repeated top singular value (no quadratic phase), zero, tiny
and huge scales, graded singular values, orthogonal matrices (every singular value repeated).
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

KERNEL_FAMILIES = (
    "gaussian",
    "rank_one",
    "vanishing_frequency",
    "zero",
    "tiny",
    "huge",
    "nonnegative",
    "integer",
)
"""Kernel families drawn by :func:`kernels`:

* ``gaussian`` — i.i.d. standard normal entries;
* ``rank_one`` — ``u v^T ⊗ h w^T`` (outer products in channels and space): every frequency
  matrix has rank one;
* ``vanishing_frequency`` — each ``c_out x c_in`` spatial slice sums to zero along both axes, so
  the symbol vanishes at frequency 0 (and Gram-type methods normalising by it would divide by 0);
* ``zero`` — all zeros;
* ``tiny`` / ``huge`` — gaussian times ``1e-150`` / ``1e150``;
* ``nonnegative`` — non-negative entries (with one channel each side the bounds are tight:
  the norm equals the entry sum for circular padding);
* ``integer`` — small integers, exactly representable, with ties and repeated singular values.
"""


TIGHT_FAMILIES = (
    "constant",
    "orthogonal_center",
    "identical_filters",
    "single_tap",
    "sparse",
    "checkerboard",
)
ADVERSARIAL_FAMILIES = KERNEL_FAMILIES + TIGHT_FAMILIES
"""Every kernel family :func:`family_kernel` knows: the Hypothesis families of
:func:`~specbound.testing.kernels` and the tight/degenerate ones above."""

SCALES = {"tiny": 1e-150, "huge": 1e150}

Shape = tuple[int, int, int, int]


def _semi_orthogonal(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """A ``rows x cols`` matrix with orthonormal columns (rows >= cols) or rows (rows < cols)."""
    tall = rows >= cols
    q, r = np.linalg.qr(rng.standard_normal((max(rows, cols), min(rows, cols))))
    q = q * np.sign(np.diag(r))  # a Haar-distributed factor
    return q if tall else q.T


def family_kernel(family: str, shape: Shape, seed: int = 0) -> np.ndarray:
    """A float64 kernel of ``shape`` from a named family (see the module docstring).

    Parameters
    ----------
    family : str
        One of :data:`ADVERSARIAL_FAMILIES`.
    shape : (c_out, c_in_per_group, kh, kw)
    seed : int
        Seed of the random parts (``numpy.random.default_rng``).

    Returns
    -------
    numpy.ndarray
        C-contiguous float64 array of ``shape``.
    """
    if family not in ADVERSARIAL_FAMILIES:
        raise ValueError(f"family must be one of {ADVERSARIAL_FAMILIES}, got {family!r}")
    rng = np.random.default_rng(seed)
    c_out, c_in, kh, kw = shape
    if family == "zero":
        return np.zeros(shape)
    if family == "rank_one":
        k = np.einsum("o,c,a,b->ocab", *(rng.standard_normal(n) for n in shape))
    elif family == "vanishing_frequency":
        k = rng.standard_normal(shape)
        k -= k.mean(axis=2, keepdims=True)
        k -= k.mean(axis=3, keepdims=True)
    elif family == "nonnegative":
        k = np.abs(rng.standard_normal(shape))
    elif family == "integer":
        k = rng.integers(-2, 3, size=shape).astype(np.float64)
    elif family == "constant":
        k = np.ones(shape)
    elif family == "orthogonal_center":
        k = np.zeros(shape)
        k[:, :, (kh - 1) // 2, (kw - 1) // 2] = _semi_orthogonal(c_out, c_in, rng)
    elif family == "identical_filters":
        k = np.broadcast_to(rng.standard_normal((1, c_in, kh, kw)), shape).copy()
    elif family == "single_tap":
        k = np.zeros(shape)
        k[tuple(int(rng.integers(0, n)) for n in shape)] = rng.standard_normal()
    elif family == "sparse":
        k = rng.standard_normal(shape) * (rng.random(shape) < 0.2)
    elif family == "checkerboard":
        signs = (-1.0) ** np.add.outer(np.arange(kh), np.arange(kw))
        k = np.abs(rng.standard_normal((c_out, c_in, 1, 1))) * signs
    else:  # gaussian, tiny, huge
        k = rng.standard_normal(shape)
    return np.ascontiguousarray(k * SCALES.get(family, 1.0))


def adversarial_suite(
    shape: Shape, seed: int = 0, families: tuple[str, ...] = ADVERSARIAL_FAMILIES
) -> dict[str, np.ndarray]:
    """One kernel of ``shape`` per family: ``{family: kernel}`` (deterministic)."""
    return {f: family_kernel(f, shape, seed) for f in families}


@st.composite
def adversarial_kernels(
    draw: st.DrawFn, shape: Shape, families: tuple[str, ...] = ADVERSARIAL_FAMILIES
) -> np.ndarray:
    """Hypothesis strategy: a kernel of ``shape`` from any of :data:`ADVERSARIAL_FAMILIES`.

    The superset of :func:`~specbound.testing.kernels` with the tight families; drawn entry
    by entry (:func:`drawn_kernel`), so it shrinks towards the first family listed and
    small entries.
    """
    family = draw(st.sampled_from(families))
    return drawn_kernel(draw, family, shape)


ENTRIES = st.one_of(st.just(0.0), st.floats(1e-3, 4.0), st.floats(-4.0, -1e-3))
"""Entries of drawn kernels: 0, or ``1e-3 <= |v| <= 4`` (extreme scales are the ``tiny`` and
``huge`` families); shrinks towards 0."""

NONZERO_ENTRIES = st.one_of(st.floats(1e-3, 4.0), st.floats(-4.0, -1e-3))
"""Entries of matrices that must not vanish, as a Gaussian's do almost surely."""


def _entries(draw: st.DrawFn, shape: tuple[int, ...], nonnegative: bool = False) -> np.ndarray:
    elements = st.one_of(st.just(0.0), st.floats(1e-3, 4.0)) if nonnegative else ENTRIES
    return draw(hnp.arrays(np.float64, shape, elements=elements))


def _orthonormal_columns(a: np.ndarray) -> np.ndarray:
    """Orthonormal columns spanning (a completion of) ``a``'s column space (``rows >= cols``)."""
    rows, cols = a.shape
    a = a + np.eye(rows, cols) * (np.abs(a).sum() == 0)  # an all-zero draw: the identity
    q, r = np.linalg.qr(a)
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


def drawn_kernel(draw: st.DrawFn, family: str, shape: Shape) -> np.ndarray:
    """A kernel of ``shape`` from ``family`` whose random parts are drawn element by element
    (:func:`hypothesis.extra.numpy.arrays`), so a failing example shrinks; the families are
    those of :func:`family_kernel`."""
    if family not in ADVERSARIAL_FAMILIES:
        raise ValueError(f"family must be one of {ADVERSARIAL_FAMILIES}, got {family!r}")
    c_out, c_in, kh, kw = shape
    if family == "zero":
        return np.zeros(shape)
    if family == "constant":
        return np.ones(shape)
    if family == "rank_one":
        k = np.einsum("o,c,a,b->ocab", *(_entries(draw, (n,)) for n in shape))
    elif family == "vanishing_frequency":
        k = _entries(draw, shape)
        k -= k.mean(axis=2, keepdims=True)
        k -= k.mean(axis=3, keepdims=True)
    elif family in ("nonnegative", "checkerboard"):
        if family == "nonnegative":
            k = _entries(draw, shape, nonnegative=True)
        else:
            signs = (-1.0) ** np.add.outer(np.arange(kh), np.arange(kw))
            k = _entries(draw, (c_out, c_in, 1, 1), nonnegative=True) * signs
    elif family == "integer":
        k = draw(hnp.arrays(np.int64, shape, elements=st.integers(-2, 2))).astype(np.float64)
    elif family == "orthogonal_center":
        k = np.zeros(shape)
        tall = c_out >= c_in
        a = _entries(draw, (max(c_out, c_in), min(c_out, c_in)))
        q = _orthonormal_columns(a)
        k[:, :, (kh - 1) // 2, (kw - 1) // 2] = q if tall else q.T
    elif family == "identical_filters":
        k = np.broadcast_to(_entries(draw, (1, c_in, kh, kw)), shape).copy()
    elif family == "single_tap":
        k = np.zeros(shape)
        k[tuple(draw(st.integers(0, n - 1)) for n in shape)] = draw(ENTRIES)
    elif family == "sparse":
        mask = draw(hnp.arrays(np.bool_, shape, elements=st.booleans()))
        k = _entries(draw, shape) * mask
    else:  # gaussian, tiny, huge
        k = _entries(draw, shape)
    return np.ascontiguousarray(k * SCALES.get(family, 1.0))


# ----------------------------------------------------------------------------- dense matrices
MATRIX_FAMILIES = (
    "gaussian",
    "rank_one",
    "repeated_top",
    "zero",
    "tiny",
    "huge",
    "integer",
    "orthogonal",
    "graded",
)
"""Dense-matrix families of :func:`family_matrix`."""


def with_singular_values(values: np.ndarray, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """``U diag(values) V^T`` of ``shape`` with Haar-random orthogonal ``U``, ``V``.

    ``values`` has ``min(shape)`` entries; the computed matrix has these singular values up to
    float64 rounding (a few units of ``1e-16`` relative to the largest).
    """
    rows, cols = shape
    r = min(rows, cols)
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (r,):
        raise ValueError(f"values must have min(shape) = {r} entries, got {values.shape}")
    rng = np.random.default_rng(seed)
    u = _semi_orthogonal(rows, r, rng)
    v = _semi_orthogonal(cols, r, rng)
    return np.ascontiguousarray((u * values) @ v.T)


def repeated_top_matrix(
    shape: tuple[int, int], multiplicity: int, seed: int = 0, *, ratio: float = 0.5
) -> np.ndarray:
    """A matrix whose top singular value 1 has ``multiplicity`` copies; the others are
    ``<= ratio`` (random in ``[0, ratio]``)."""
    r = min(shape)
    if not 1 <= multiplicity <= r:
        raise ValueError(f"multiplicity must be in [1, {r}], got {multiplicity}")
    rng = np.random.default_rng(seed)
    rest = np.sort(rng.uniform(0.0, ratio, r - multiplicity))[::-1]
    return with_singular_values(np.concatenate([np.ones(multiplicity), rest]), shape, seed)


def family_matrix(family: str, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A float64 matrix of ``shape`` from one of :data:`MATRIX_FAMILIES`.

    ``repeated_top`` repeats the top singular value ``min(2, min(shape))`` times;
    ``orthogonal`` has every singular value equal to 1; ``graded`` has singular values
    ``10^{-j}``; ``tiny`` / ``huge`` are gaussian times ``1e-150`` / ``1e150``.
    """
    if family not in MATRIX_FAMILIES:
        raise ValueError(f"family must be one of {MATRIX_FAMILIES}, got {family!r}")
    rng = np.random.default_rng(seed)
    r = min(shape)
    if family == "zero":
        return np.zeros(shape)
    if family == "rank_one":
        return np.outer(rng.standard_normal(shape[0]), rng.standard_normal(shape[1]))
    if family == "repeated_top":
        return repeated_top_matrix(shape, min(2, r), seed)
    if family == "integer":
        return rng.integers(-3, 4, size=shape).astype(np.float64)
    if family == "orthogonal":
        return with_singular_values(np.ones(r), shape, seed)
    if family == "graded":
        return with_singular_values(10.0 ** -np.arange(r, dtype=np.float64), shape, seed)
    return rng.standard_normal(shape) * SCALES.get(family, 1.0)


@st.composite
def matrices(
    draw: st.DrawFn,
    max_rows: int = 8,
    max_cols: int = 8,
    families: tuple[str, ...] = MATRIX_FAMILIES,
) -> np.ndarray:
    """Hypothesis strategy: a dense float64 matrix from one of :data:`MATRIX_FAMILIES`."""
    shape = (draw(st.integers(1, max_rows)), draw(st.integers(1, max_cols)))
    family = draw(st.sampled_from(families))
    return family_matrix(family, shape, draw(st.integers(0, 2**32 - 1)))


@st.composite
def repeated_top_matrices(
    draw: st.DrawFn, max_rows: int = 8, max_cols: int = 8
) -> tuple[np.ndarray, int]:
    """Hypothesis strategy: ``(matrix, multiplicity)`` with a top singular value 1 repeated
    ``multiplicity >= 2`` times (the linear regime of the Gram iteration)."""
    rows, cols = draw(st.integers(2, max_rows)), draw(st.integers(2, max_cols))
    m = draw(st.integers(2, min(rows, cols)))
    seed = draw(st.integers(0, 2**32 - 1))
    return repeated_top_matrix((rows, cols), m, seed), m
