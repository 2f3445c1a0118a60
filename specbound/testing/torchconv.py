"""Ground truth from torch itself: the dense float64 matrix of any torch convolution.

:func:`torch_conv_matrix` differentiates a float64 copy of a ``torch.nn`` convolution module
(``Conv1d/2d/3d``, ``ConvTranspose1d/2d/3d``, every ``padding_mode``, subclasses and
parametrized modules included) or of a convolution functional at a given input size. It does
not use specbound's own operators, so tests of those operators and of ``certify`` can compare
against it one-sidedly.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..operators.conv_layer import CONV_MODULES

__all__ = ["CONV_MODULES", "torch_conv_matrix"]



_MAX_ENTRIES = 1 << 27  # 1 GiB of float64: a larger dense matrix is refused before any work


def _sizes(input_size: int | Sequence[int], ndim: int | None) -> tuple[int, ...]:
    if isinstance(input_size, (bool, np.bool_)):
        raise TypeError(f"input_size must be an int or a sequence of ints, got {input_size!r}")
    if isinstance(input_size, (int, np.integer)):
        if ndim is None:
            raise TypeError(
                "input_size must be a sequence of ints (one per spatial axis) for a "
                f"functional, got {input_size!r}"
            )
        sizes: tuple = (int(input_size),) * ndim
    else:
        try:
            sizes = tuple(input_size)
        except TypeError:
            raise TypeError(
                f"input_size must be an int or a sequence of ints, got {input_size!r}"
            ) from None
        if not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in sizes
        ):
            raise TypeError(f"input_size must hold ints, got {input_size!r}")
        sizes = tuple(int(v) for v in sizes)
    if ndim is not None and len(sizes) != ndim:
        raise ValueError(
            f"input_size must have {ndim} entries (one per spatial axis of the layer), got "
            f"{input_size!r}"
        )
    if not sizes or len(sizes) > 3 or min(sizes) < 1:
        raise ValueError(
            f"input_size must be 1 to 3 positive sizes (one per spatial axis), got {input_size!r}"
        )
    return sizes


def torch_conv_matrix(
    conv: torch.nn.Module | Callable[[torch.Tensor], torch.Tensor],
    input_size: int | Sequence[int],
    *,
    in_channels: int | None = None,
) -> np.ndarray:
    """The dense float64 matrix of a torch convolution at one input size, from torch itself.

    The linear part of the layer (the bias is dropped) is differentiated with
    ``torch.func.jacrev`` at the zero input, on a float64 copy: each entry is a weight (or a
    sum of the weights that read the same pixel, e.g. through reflect padding) computed by
    torch's own convolution and padding code, independently of specbound.

    Parameters
    ----------
    conv : torch.nn.Module or callable
        A ``Conv1d``, ``Conv2d``, ``Conv3d``, ``ConvTranspose1d``, ``ConvTranspose2d`` or
        ``ConvTranspose3d`` (or a subclass, e.g. a parametrized conv), with any
        ``padding_mode``; it is copied and converted to float64, the original is untouched.
        Or a callable mapping a float64 tensor of shape ``(batch, in_channels, *input_size)``
        to the layer's output (``lambda x: F.conv_transpose3d(x, w, stride=2)`` with a float64
        ``w``); its Jacobian at 0 is returned, which is its linear part when it is affine.
    input_size : int or sequence of int
        The spatial input size, one entry per axis (an int is used on every axis of a
        module; a functional needs the sequence).
    in_channels : int, optional
        Input channels; required for a callable, read from a module.

    Returns
    -------
    numpy.ndarray
        Float64 array of shape ``(out_numel, in_numel)``; inputs and outputs flattened as
        PyTorch lays out ``(channels, *spatial)``.

    Raises
    ------
    TypeError
        ``conv`` is neither one of :data:`CONV_MODULES` nor callable; ``input_size`` or
        ``in_channels`` are not integers.
    ValueError
        ``input_size`` has the wrong number of axes or a size below 1, the layer rejects that
        size (too small for the kernel), or the matrix would exceed ``2**27`` entries.

    Examples
    --------
    A stride-2 transposed convolution scatters each input pixel to two outputs; its matrix
    is the transpose of the forward convolution's at the output size (4):

    >>> import numpy as np
    >>> import torch
    >>> from specbound.testing import torch_conv_matrix
    >>> up = torch.nn.ConvTranspose1d(1, 1, kernel_size=2, stride=2, bias=False)
    >>> with torch.no_grad():
    ...     _ = up.weight.copy_(torch.tensor([[[1.0, -2.0]]]))
    >>> t = torch_conv_matrix(up, 2)
    >>> t
    array([[ 1.,  0.],
           [-2.,  0.],
           [ 0.,  1.],
           [ 0., -2.]])
    >>> w = up.weight.detach().double()
    >>> down = torch_conv_matrix(
    ...     lambda x: torch.nn.functional.conv1d(x, w, stride=2), [4], in_channels=1
    ... )
    >>> bool(np.array_equal(t, down.T))
    True
    """
    if isinstance(conv, CONV_MODULES):
        model = copy.deepcopy(conv).double().eval()
        if getattr(model, "bias", None) is not None:
            model.bias = None
        ndim = len(model.kernel_size)
        channels = int(model.in_channels)
        if in_channels is not None and in_channels != channels:
            raise ValueError(
                f"in_channels={in_channels!r} differs from the module's in_channels={channels}"
            )
        fn: Callable[[torch.Tensor], torch.Tensor] = model
    elif isinstance(conv, torch.nn.Module) or not callable(conv):
        raise TypeError(
            "conv must be a torch.nn.Conv1d/2d/3d or ConvTranspose1d/2d/3d module (or a "
            f"subclass), or a callable convolution functional; got {type(conv).__name__}"
        )
    else:
        if in_channels is None:
            raise TypeError("in_channels is required when conv is a callable (a functional)")
        if isinstance(in_channels, bool) or not isinstance(in_channels, (int, np.integer)):
            raise TypeError(f"in_channels must be an int, got {in_channels!r}")
        if in_channels < 1:
            raise ValueError(f"in_channels must be at least 1, got {in_channels!r}")
        ndim, channels, fn = None, int(in_channels), conv
    sizes = _sizes(input_size, ndim)
    shape = (1, channels, *sizes)
    zero = torch.zeros(shape, dtype=torch.float64)
    try:
        with torch.no_grad():
            out_numel = fn(zero).numel()
    except RuntimeError as exc:
        raise ValueError(
            f"the layer rejects input_size={tuple(sizes)!r} with {channels} input channels: {exc}"
        ) from None
    n_in = math.prod(shape)
    if out_numel * n_in > _MAX_ENTRIES:
        raise ValueError(
            f"the dense matrix would have {out_numel} x {n_in} entries, more than 2**27; "
            "pass a smaller input_size"
        )
    if out_numel == 0:
        return np.zeros((0, n_in))
    jac = torch.func.jacrev(lambda x: fn(x).reshape(-1), chunk_size=256)(zero)
    return jac.detach().reshape(out_numel, n_in).numpy().copy()
