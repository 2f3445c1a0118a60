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


def _axis_polyphase(k: int, n: int, lo: int, stride: int, dilation: int):
    """Per tap: (phase r, position q mod n/s) of input offset ``d*a - lo = s*q + r``."""
    offset = dilation * np.arange(k) - lo
    phase = np.mod(offset, stride)
    return phase, np.mod((offset - phase) // stride, n // stride)


def polyphase_taps(layer: ConvLayer) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where each tap lands in the polyphase-wrapped kernel: ``(r_h, q_h, r_w, q_w)``.

    Tap ``(a, b)`` of the kernel is added to phase channel ``(r_h[a], r_w[b])`` at position
    ``(q_h[a], q_w[b])`` of the ``(H/s_h, W/s_w)`` grid. Shared by :func:`polyphase_kernel`
    (numpy) and :func:`polyphase_kernel_torch`.
    """
    require_circulant(layer)
    (h, w), (sh, sw), (dh, dw) = layer.input_size, layer.spec.stride, layer.spec.dilation
    (top, _), (left, _) = layer.pads
    kh, kw = layer.kernel_size
    ph, qh = _axis_polyphase(kh, h, top, sh, dh)
    pw, qw = _axis_polyphase(kw, w, left, sw, dw)
    return ph, qh, pw, qw


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
    >>> layer = spec.layer(np.ones((3, 2, 3, 3)), need_size=True)
    >>> polyphase_kernel(layer).shape  # (c_out, c_in * s_h * s_w, H / s_h, W / s_w)
    (3, 8, 4, 4)
    """
    ph, qh, pw, qw = polyphase_taps(layer)
    (h, w), (sh, sw) = layer.input_size, layer.spec.stride
    kh, kw = layer.kernel_size
    c_out, c_in_g = layer.kernel.shape[:2]
    wrapped = np.zeros((c_out, c_in_g, sh, sw, h // sh, w // sw))
    for a in range(kh):
        for b in range(kw):
            wrapped[:, :, ph[a], pw[b], qh[a], qw[b]] += layer.kernel[:, :, a, b]
    return wrapped.reshape(c_out, c_in_g * sh * sw, h // sh, w // sw)


def polyphase_spatial_first(kernel: torch.Tensor, layer: ConvLayer) -> torch.Tensor:
    """Torch polyphase wrapping, grid axes first: shape ``(H/s_h, W/s_w, ..., c_out, c_in')``.

    ``kernel`` is a real tensor ``(..., c_out, c_in_g, kh, kw)`` (leading dimensions are a
    batch; ``layer`` supplies the geometry). ``c_in' = c_in_g*s_h*s_w`` with channel index
    ``(c, r_h, r_w)`` in C order, as :func:`polyphase_kernel`. Taps that wrap onto the same
    position are summed (``index_put`` with ``accumulate=True``, differentiable). The grid-first
    layout makes ``torch.fft.rfft2(..., dim=(0, 1))`` return the frequency matrices as a
    contiguous batch.
    """
    ph, qh, pw, qw = polyphase_taps(layer)
    (h, w), (sh, sw) = layer.input_size, layer.spec.stride
    hq, wq = h // sh, w // sw
    target = ((qh[:, None] * wq + qw[None, :]) * sh + ph[:, None]) * sw + pw[None, :]
    lead = kernel.shape[:-2]  # (..., c_out, c_in_g)
    values = kernel.flatten(-2).movedim(-1, 0)  # (kh*kw, ..., c_out, c_in_g)
    index = torch.as_tensor(target.ravel(), dtype=torch.long, device=kernel.device)
    out = kernel.new_zeros((hq * wq * sh * sw, *lead))
    out = out.index_put((index,), values, accumulate=True)
    out = out.reshape(hq, wq, sh, sw, *lead).movedim((2, 3), (-2, -1))
    return out.reshape(hq, wq, *lead[:-1], lead[-1] * sh * sw)


def polyphase_kernel_torch(kernel: torch.Tensor, layer: ConvLayer) -> torch.Tensor:
    """Torch version of :func:`polyphase_kernel`, differentiable and batched.

    ``kernel`` ``(..., c_out, c_in_g, kh, kw)`` -> ``(..., c_out, c_in_g*s_h*s_w, H/s_h, W/s_w)``.
    """
    return polyphase_spatial_first(kernel, layer).movedim((0, 1), (-2, -1))


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
    >>> layer = spec.layer(np.ones((1, 1, 3, 3)), need_size=True)
    >>> (blocks,) = frequency_matrices(layer)
    >>> blocks.shape  # (groups, frequencies, c_out, c_in)
    (1, 16, 1, 1)
    >>> round(float(np.abs(blocks).max()), 9)  # frequency 0
    9.0
    """
    kp = polyphase_kernel(layer)
    g = layer.groups
    fft = np.fft.rfft2 if half else np.fft.fft2
    spectrum = fft(kp, axes=(2, 3))  # (c_out, c_in', U, V)
    c_out, c_in_p = spectrum.shape[:2]
    spectrum = spectrum.reshape(g, c_out // g, c_in_p, -1)
    n_freq = spectrum.shape[-1]
    step = n_freq if chunk is None else max(1, chunk)
    for start in range(0, n_freq, step):
        yield np.moveaxis(spectrum[..., start : start + step], -1, 1)


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
    layer = spec.layer(kernel, need_size=True)
    parts = [np.linalg.svd(block, compute_uv=False).ravel() for block in frequency_matrices(layer)]
    return np.sort(np.concatenate(parts))[::-1]


def circulant_norm(layer: ConvLayer, *, chunk_bytes: int = 2**28) -> float:
    """Largest singular value of a circulant layer via the largest eigenvalue of the smaller
    Gram matrix per frequency (Hermitian eigensolver; much cheaper than batched SVD).

    Memory stays ``O(c_out c_in k W)`` plus one chunk: the kernel is wrapped and
    ``rfft``-transformed along the width only; the height taps (phase ``r_a``, position
    ``q_a``) are summed with their phases ``e^{-2 pi i u q_a / m}`` for a chunk of rows ``u``
    at a time (the 2-D DFT of the wrapped kernel, separably). The column order of each
    frequency matrix differs from :func:`frequency_matrices`, which leaves its singular
    values unchanged.
    """
    ph, qh, pw, qw = polyphase_taps(layer)
    (h, w), (sh, sw) = layer.input_size, layer.spec.stride
    m1, m2 = h // sh, w // sw
    kh, kw = layer.kernel_size
    c_out, c_in_g = layer.kernel.shape[:2]
    g = layer.groups
    width_wrapped = np.zeros((c_out, c_in_g, sw, kh, m2))
    for b in range(kw):
        width_wrapped[:, :, pw[b], :, qw[b]] += layer.kernel[:, :, :, b]
    spectrum_w = np.fft.rfft(width_wrapped, axis=-1)  # (c_out, c_in_g, sw, kh, V)
    select = (ph[:, None] == np.arange(sh)[None, :]).astype(float)  # (kh, sh)
    n_v = spectrum_w.shape[-1]
    rows = max(1, chunk_bytes // max(1, 16 * n_v * c_out * c_in_g * sh * sw))
    top = 0.0
    for start in range(0, m1, rows):
        u = np.arange(start, min(m1, start + rows))
        phase = np.exp(-2j * np.pi * np.mod(np.outer(u, qh), m1) / m1)  # (U, kh)
        mats = np.einsum("ocwav,ua,ar->uvocrw", spectrum_w, phase, select)
        mats = mats.reshape(len(u) * n_v, g, c_out // g, c_in_g * sh * sw)
        gram = (
            mats @ mats.conj().swapaxes(-1, -2)
            if mats.shape[-2] <= mats.shape[-1]
            else mats.conj().swapaxes(-1, -2) @ mats
        )
        top = max(top, float(np.linalg.eigvalsh(gram)[..., -1].max()))
    return float(np.sqrt(max(top, 0.0)))
