"""Exact singular values of circular (block-circulant) layers from per-frequency matrices.

A circular layer with ``dilation*(k-1)`` padded in total per axis is a block-circulant operator
on the torus ``Z_H x Z_W``; the 2-D DFT block-diagonalises it (Sedghi, Gupta & Long,
"The Singular Values of Convolutional Layers", ICLR 2019, Thm. 6), so its singular values are
the union over frequencies of those of the ``c_out x c_in`` frequency matrices.

* The kernel is **wrapped** modulo the input size (taps at ``d*a`` and ``d*a + H`` land on the
  same pixel), not cropped: cropping, as published code does for ``H < k``, is another
  operator and under-reports the norm.
* Stride ``s`` dividing the size: the polyphase reshape (Senderovich et al., NeurIPS 2022,
  Sec. 3) writes input pixel ``s*u + r`` as pixel ``u`` of channel ``(c, r)``, turning the
  layer into a stride-1 circular layer on the ``(H/s) x (W/s)`` grid with ``c_in*s_h*s_w``
  input channels. The reshape is a permutation, so singular values are unchanged.
* Dilation places tap ``a`` at ``d*a``; groups make the channel matrix block diagonal, and
  the spectrum is the union over groups.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ..spec import ConvSpec
from .conv_layer import ConvLayer
from .frequency import FrequencyEngine


def require_circulant(layer: ConvLayer) -> None:
    """Raise a ``ValueError`` saying what works if ``layer`` is not block-circulant."""
    if layer.d != 2 or layer.transposed:
        raise ValueError(
            f"kernel: the circulant route is for forward 2-D layers, this one has {layer.d} "
            "spatial axes"
            + (" and is transposed" if layer.transposed else "")
            + "; use exact_norm (dense route) or ConvLayer.dense()"
        )
    if layer.is_circulant:
        return
    spec = layer.spec
    if spec.padding != "circular":
        raise ValueError(
            f"the circulant route needs padding='circular', got padding={spec.padding!r}; "
            "use exact_norm (dense route) or conv_matrix for this layer"
        )
    (h, w) = layer.input_size  # raises the clear "input_size=None" message
    (top, bottom), (left, right) = layer.pads
    (eh, ew), (sh, sw) = layer.extent, spec.stride
    if top + bottom != eh - 1 or left + right != ew - 1:
        raise ValueError(
            f"the circulant route needs dilation*(k-1) padded in total per axis "
            f"({eh - 1}, {ew - 1}), e.g. pad='same'; got ((top, bottom), (left, right))="
            f"{layer.pads}; other pads select or repeat rows of a circulant, so use exact_norm"
        )
    raise ValueError(
        f"the circulant route needs a stride that divides the input size on each axis; got "
        f"stride={(sh, sw)} with input_size={(h, w)}; use an input size that is a multiple of "
        f"the stride, or exact_norm (dense route)"
    )


def embedding_size_axis(n: int, lo: int, hi: int, stride: int, degree: int) -> int:
    """The smallest torus size ``N`` (one axis) in which a zero-padded layer embeds: the
    least multiple of the stride ``s`` with ``N >= n + max(min(lo, D), min(hi, D))``, where
    ``D = d*(k-1)`` is the dilated degree (docs/certify.md, lemma L6; theorem G1).

    Derivation. Output ``i`` reads input positions ``t = s*i + d*a - lo``, ``0 <= a < k``;
    on the torus ``Z_N`` (``s`` dividing ``N``) the strided circular layer with the same
    offset ``lo`` reads ``t mod N`` in its row ``i mod N/s``. Zero-extend ``x`` to ``Z_N``.
    Rows of the zero-padded layer that read only padding are zero and are dropped; every
    other row reads ``t`` in ``[-min(lo, D), n - 1 + min(hi, D)]``. If
    ``N >= n + min(lo, D)`` the negative ``t`` wrap to ``N + t >= n``, outside the support,
    and if ``N >= n + min(hi, D)`` the ``t >= n`` stay in ``[n, N)``: each kept row equals
    the corresponding row of the circular layer on the embedded input. The kept rows satisfy
    ``s*i in [lo - D, lo + n - 1]``, so two of them differ by less than
    ``(n + min(lo, D))/s <= N/s`` and are distinct rows of the strided circulant ``C``.
    Hence ``Z = S C E`` up to zero rows (``E`` an isometry, ``S`` a row selection) and
    ``||Z|| <= ||C||``. The offset of ``C`` does not matter: another offset is a cyclic
    shift of the input, a permutation. For ``s = 1`` and ``lo = hi = P <= D`` this is the
    gap relation ``N >= n + P``, which is sharp (theorem G1-SHARP).
    """
    for name, value in (("n", n), ("lo", lo), ("hi", hi), ("degree", degree)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    low = n + max(min(lo, degree), min(hi, degree))
    return -(-low // stride) * stride


def circulant_engine(layer: ConvLayer, kernel: torch.Tensor | None = None) -> FrequencyEngine:
    """The frequency engine of a circulant layer (refuses others, ``require_circulant``);
    ``kernel`` (default: the layer's, as float64) may carry leading batch dimensions."""
    require_circulant(layer)
    return layer.frequency_engine(kernel)


def polyphase_kernel(layer: ConvLayer) -> np.ndarray:
    """Kernel of the equivalent stride-1 circular layer, wrapped on the ``(H/s, W/s)`` grid.

    Returns an array of shape ``(c_out, c_in_g * s_h * s_w, H/s_h, W/s_w)`` (``c_in_g`` is the
    number of input channels per group; channel index is ``(c, r_h, r_w)`` in C order).
    The operator reads ``y[i] = sum_q K'[:, :, q] x'[(i + q) mod (n/s)]``.

    References
    ----------
    * H. Sedghi, V. Gupta and P. M. Long, "The Singular Values of Convolutional Layers",
      ICLR 2019, Thm. 6 (block-circulant layers are block-diagonalised by the 2-D DFT).
    * A. Senderovich, E. Bulatova, A. Obukhov and M. Rakhuba, "Towards Practical Control of
      Singular Values of Convolutional Layers", NeurIPS 2022, Sec. 3 (the polyphase view of a
      strided layer).
    * docs/theory/operators.md, "The circulant case"; docs/proofs.md, theorem ST-POLY.

    Examples
    --------
    >>> import numpy as np
    >>> import specbound as sb
    >>> from specbound.operators import polyphase_kernel
    >>> spec = sb.ConvSpec(padding="circular", input_size=(8, 8), stride=2)
    >>> layer = sb.operators.ConvLayer(np.ones((3, 2, 3, 3)), spec, need_size=True)
    >>> polyphase_kernel(layer).shape  # (c_out, c_in * s_h * s_w, H / s_h, W / s_w)
    (3, 8, 4, 4)
    """
    return polyphase_kernel_torch(torch.tensor(layer.kernel, dtype=torch.float64), layer).numpy()


def polyphase_kernel_torch(kernel: torch.Tensor, layer: ConvLayer) -> torch.Tensor:
    """Torch version of :func:`polyphase_kernel`, differentiable and batched.

    ``kernel`` ``(..., c_out, c_in_g, kh, kw)`` -> ``(..., c_out, c_in_g*s_h*s_w, H/s_h, W/s_w)``.
    """
    return circulant_engine(layer, kernel).wrapped().movedim((0, 1), (-2, -1))


def frequency_matrices(
    layer: ConvLayer, *, half: bool = False, chunk: int | None = None
) -> Iterator[np.ndarray]:
    """Yield the per-frequency matrices, shape ``(groups, F, c_out_g, c_in_g*s_h*s_w)``.

    With ``half=True`` only the ``rfft2`` half-spectrum is produced: for a real kernel the
    matrix at ``-w`` is the conjugate of the one at ``w``, with the same singular values, so
    maxima over the half equal maxima over the full grid. ``chunk`` bounds the number of
    frequencies per yielded array (memory control for wide layers).

    References
    ----------
    * H. Sedghi, V. Gupta and P. M. Long, "The Singular Values of Convolutional Layers",
      ICLR 2019, Thm. 6 (block-circulant layers are block-diagonalised by the 2-D DFT).
    * A. Senderovich, E. Bulatova, A. Obukhov and M. Rakhuba, "Towards Practical Control of
      Singular Values of Convolutional Layers", NeurIPS 2022, Sec. 3 (the polyphase view of a
      strided layer).
    * docs/theory/operators.md, "The circulant case"; docs/proofs.md, theorem ST-POLY.

    Examples
    --------
    >>> import numpy as np
    >>> import specbound as sb
    >>> from specbound.operators import frequency_matrices
    >>> spec = sb.ConvSpec(padding="circular", input_size=(4, 4))
    >>> layer = sb.operators.ConvLayer(np.ones((1, 1, 3, 3)), spec, need_size=True)
    >>> (blocks,) = frequency_matrices(layer)
    >>> blocks.shape  # (groups, frequencies, c_out, c_in)
    (1, 16, 1, 1)
    >>> round(float(np.abs(blocks).max()), 9)  # frequency 0
    9.0
    """
    engine = circulant_engine(layer)
    for _, mats in engine.chunks(half=half, chunk=chunk or engine.n_frequencies(half)):
        yield mats.movedim(0, 1).numpy()


def circulant_spectrum(kernel: Any, spec: ConvSpec) -> np.ndarray:
    """Every singular value of a circular layer, sorted in decreasing order.

    Parameters
    ----------
    kernel : array_like or torch.Tensor
        ``(c_out, c_in // groups, kh, kw)``; any size relative to the input (wrapped).
    spec : ConvSpec
        ``padding="circular"``, ``dilation*(k-1)`` padded in total per axis (``pad="same"``
        or any split of it), a finite ``input_size`` divisible by the stride.

    Returns
    -------
    numpy.ndarray
        ``min(c_out*OH*OW, c_in*H*W)`` values: the multiset union over frequencies (and
        groups) of the singular values of the frequency matrices.

    References
    ----------
    * H. Sedghi, V. Gupta and P. M. Long, "The Singular Values of Convolutional Layers",
      ICLR 2019, Thm. 6 (block-circulant layers are block-diagonalised by the 2-D DFT).
    * A. Senderovich, E. Bulatova, A. Obukhov and M. Rakhuba, "Towards Practical Control of
      Singular Values of Convolutional Layers", NeurIPS 2022, Sec. 3 (the polyphase view of a
      strided layer).
    * docs/theory/operators.md, "The circulant case"; docs/proofs.md, theorem ST-POLY.

    Examples
    --------
    >>> import numpy as np
    >>> import specbound as sb
    >>> from specbound.operators import circulant_spectrum
    >>> kernel = np.ones((1, 1, 3, 3))
    >>> sigma = circulant_spectrum(kernel, sb.ConvSpec(padding="circular", input_size=(4, 4)))
    >>> sigma.shape
    (16,)
    >>> np.round(sigma[:4], 9)
    array([9., 3., 3., 3.])
    """
    layer = ConvLayer(kernel, spec, need_size=True)
    parts = [np.linalg.svd(block, compute_uv=False).ravel() for block in frequency_matrices(layer)]
    return np.sort(np.concatenate(parts))[::-1]


def circulant_norm(layer: ConvLayer, *, chunk_bytes: int = 2**28) -> float:
    """Largest singular value of a circulant layer via the largest eigenvalue of the smaller
    Gram matrix per frequency (Hermitian eigensolver; much cheaper than batched SVD).

    Memory stays within about ``chunk_bytes``: the frequency engine evaluates the
    half-spectrum a chunk of frequencies at a time. A NaN eigenvalue propagates.
    """
    engine = circulant_engine(layer)
    p, q = engine.shape
    per = max(1, chunk_bytes // max(1, 16 * layer.groups * (p * q + min(p, q) ** 2)))
    top = torch.zeros((), dtype=torch.float64)
    for _, mats in engine.chunks(half=True, chunk=per):
        gram = mats @ mats.mH if p <= q else mats.mH @ mats
        top = torch.maximum(top, torch.linalg.eigvalsh(gram)[..., -1].max())
    return float(torch.sqrt(top.clamp_min(0.0)))
