"""The description of a 2-D convolution layer, and all validation of user input.

A layer is a kernel ``K`` of shape ``(c_out, c_in // groups, kh, kw)`` together with a
:class:`ConvSpec`. The layer computes exactly what :func:`torch.nn.functional.conv2d` computes
after padding the input with ``padding`` mode (PyTorch's cross-correlation convention):

.. math::

    y_o[i, j] = \\sum_{c \\in g(o)} \\sum_{a, b} K[o, c, a, b]\\,
                \\tilde x_c[s_h i + d_h a - p_t,\\; s_w j + d_w b - p_l],

where :math:`\\tilde x` is the input extended outside its support by the padding mode
(zeros, periodic, mirror without repeating the edge, or edge repetition).

:class:`ConvSpec` is kernel-independent and immutable; :meth:`ConvSpec.layer` binds it to a
kernel, validates the kernel against it and resolves every derived quantity (pads, output
size, dimensions) into a :class:`Layer`. No other module validates user input.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PADDING_MODES = ("zeros", "circular", "reflect", "replicate")
PAD_WORDS = ("same", "valid", "full")

Pair = tuple[int, int]
Pads = tuple[int, int, int, int]  # (top, bottom, left, right)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _pair(value: Any, name: str, minimum: int) -> Pair:
    """Validate an int or a pair of ints, each ``>= minimum``."""
    if _is_int(value):
        items = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value):
        items = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(items) < minimum:
        raise ValueError(f"{name} must be >= {minimum} on each axis, got {value!r}")
    return items


def _pad_amount(pad: Any) -> str | Pads:
    """Normalise ``pad`` to a keyword or ``(top, bottom, left, right)``."""
    if isinstance(pad, str):
        if pad not in PAD_WORDS:
            raise ValueError(
                f"pad must be one of {PAD_WORDS}, an int, a pair or a 4-tuple; got {pad!r}"
            )
        return pad
    if _is_int(pad):
        p = int(pad)
        values: Pads = (p, p, p, p)
    elif isinstance(pad, (tuple, list)) and all(_is_int(v) for v in pad) and len(pad) in (2, 4):
        if len(pad) == 2:  # (ph, pw), as torch.nn.Conv2d
            values = (int(pad[0]), int(pad[0]), int(pad[1]), int(pad[1]))
        else:  # (left, right, top, bottom), the order of torch.nn.functional.pad
            left, right, top, bottom = (int(v) for v in pad)
            values = (top, bottom, left, right)
    else:
        raise TypeError(
            "pad must be an int, a pair (ph, pw), a 4-tuple (left, right, top, bottom) "
            f"or one of {PAD_WORDS}; got {pad!r}"
        )
    if min(values) < 0:
        raise ValueError(f"pad must be non-negative, got {pad!r}")
    return values


def _input_size(size: Any) -> Pair | None:
    if size is None:
        return None
    if _is_int(size) or (
        isinstance(size, (tuple, list)) and len(size) == 2 and all(_is_int(v) for v in size)
    ):
        return _pair(size, "input_size", 1)
    raise TypeError(f"input_size must be None, an int or a pair of ints (H, W); got {size!r}")


@dataclass(frozen=True)
class ConvSpec:
    """Everything about a 2-D convolution layer except its kernel.

    Parameters
    ----------
    padding : {"zeros", "circular", "reflect", "replicate"}
        Padding mode, with PyTorch's ``padding_mode`` names. For ``"circular"`` a pad larger
        than the input wraps more than once (indices are taken modulo the size), which is
        the convolution on the torus; PyTorch itself refuses to wrap more than once.
    pad : int, (ph, pw), (left, right, top, bottom), "same", "valid" or "full"
        Amount of padding. ``"same"`` is ``dilation*(k-1)`` in total per axis with the odd
        pixel on the right/bottom (as PyTorch); ``"full"`` is ``dilation*(k-1)`` on each
        side; ``"valid"`` is none. A 4-tuple is in :func:`torch.nn.functional.pad` order.
    input_size : (H, W), int or None
        Input spatial size. ``None`` means every input size: a result must hold for all.
    stride, dilation : int or (int, int)
        As in :class:`torch.nn.Conv2d`; each ``>= 1``.
    groups : int
        Number of blocks; must divide both channel counts.

    References
    ----------
    * docs/theory/operators.md, "The layer as a matrix": the operator this spec describes
      (PyTorch's cross-correlation after padding with the mode).

    Examples
    --------
    >>> import specbound as sb
    >>> spec = sb.ConvSpec(padding="circular", input_size=(32, 32), stride=2)
    >>> spec  # doctest: +ELLIPSIS
    ConvSpec(padding='circular', pad='same', input_size=(32, 32), stride=(2, 2), ...)
    >>> spec.replace(padding="zeros").padding
    'zeros'
    >>> import torch
    >>> conv = torch.nn.Conv2d(4, 8, 3, padding=1, padding_mode="reflect")
    >>> sb.ConvSpec.from_module(conv, input_size=(16, 16))  # doctest: +ELLIPSIS
    ConvSpec(padding='reflect', pad=(1, 1), input_size=(16, 16), ...)
    >>> sb.ConvSpec(padding="mirror")
    Traceback (most recent call last):
    ...
    ValueError: padding must be one of ...
    """

    padding: str = "zeros"
    pad: Any = "same"
    input_size: Any = None
    stride: Any = 1
    dilation: Any = 1
    groups: int = 1
    _pad: str | Pads = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.padding, str) or self.padding not in PADDING_MODES:
            raise ValueError(f"padding must be one of {PADDING_MODES}, got {self.padding!r}")
        object.__setattr__(self, "_pad", _pad_amount(self.pad))
        if isinstance(self.pad, list):
            object.__setattr__(self, "pad", tuple(self.pad))
        object.__setattr__(self, "input_size", _input_size(self.input_size))
        object.__setattr__(self, "stride", _pair(self.stride, "stride", 1))
        object.__setattr__(self, "dilation", _pair(self.dilation, "dilation", 1))
        if not _is_int(self.groups) or self.groups < 1:
            raise ValueError(f"groups must be a positive int, got {self.groups!r}")
        object.__setattr__(self, "groups", int(self.groups))

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_module(cls, conv: Any, input_size: Any = None) -> ConvSpec:
        """Read padding mode, pad, stride, dilation and groups from a ``torch.nn.Conv2d``, or
        from a ``torch.nn.Conv1d`` as the one-row ``Conv2d`` (kernel ``(c_out, c_in/g, 1, k)``
        on a ``1 x n`` input, padded along the width only: the same matrix, row for row);
        ``input_size`` is then None, the length ``n`` or ``(n,)``."""
        import torch

        if isinstance(conv, torch.nn.Conv2d):
            pad = conv.padding if isinstance(conv.padding, str) else tuple(conv.padding)
            stride, dilation = tuple(conv.stride), tuple(conv.dilation)
        elif isinstance(conv, torch.nn.Conv1d):
            pad = conv.padding if isinstance(conv.padding, str) else (0, int(conv.padding[0]))
            stride, dilation = (1, conv.stride[0]), (1, conv.dilation[0])
            input_size = _length_as_row(input_size)
        else:
            raise TypeError(
                f"conv must be a torch.nn.Conv2d or torch.nn.Conv1d, got {type(conv).__name__}"
            )
        return cls(
            padding=conv.padding_mode,
            pad=pad,
            input_size=input_size,
            stride=stride,
            dilation=dilation,
            groups=conv.groups,
        )

    def replace(self, **changes: Any) -> ConvSpec:
        """A copy with some fields changed (validated again)."""
        fields = {
            "padding": self.padding,
            "pad": self.pad,
            "input_size": self.input_size,
            "stride": self.stride,
            "dilation": self.dilation,
            "groups": self.groups,
        }
        fields.update(changes)
        return ConvSpec(**fields)

    # ------------------------------------------------------------------ derived
    def pads(self, kernel_size: Pair) -> Pads:
        """Resolved ``(top, bottom, left, right)`` pads for a kernel of size ``(kh, kw)``."""
        if not isinstance(self._pad, str):
            return self._pad
        (kh, kw), (dh, dw) = kernel_size, self.dilation
        th, tw = dh * (kh - 1), dw * (kw - 1)
        if self._pad == "valid":
            return (0, 0, 0, 0)
        if self._pad == "full":
            return (th, th, tw, tw)
        return (th // 2, th - th // 2, tw // 2, tw - tw // 2)

    def layer(self, kernel: Any, *, need_size: bool = False) -> Layer:
        """Validate ``kernel`` against this spec and resolve the geometry.

        Parameters
        ----------
        kernel : array_like or torch.Tensor
            Real kernel of shape ``(c_out, c_in // groups, kh, kw)``.
        need_size : bool
            Raise if ``input_size`` is None (for routes that need a finite size).
        """
        k = as_kernel(kernel)
        c_out = k.shape[0]
        if c_out % self.groups:
            raise ValueError(
                f"groups={self.groups} must divide the output channels c_out={c_out} "
                f"(kernel shape {k.shape})"
            )
        if need_size and self.input_size is None:
            raise ValueError(
                "input_size=None means every input size, but this needs a finite input size: "
                "pass input_size=(H, W)"
            )
        return Layer(kernel=k, spec=self)

    def describe(self) -> str:
        size = "every size" if self.input_size is None else "x".join(map(str, self.input_size))
        return (
            f"padding={self.padding} pad={self.pad!r} input={size} stride={self.stride} "
            f"dilation={self.dilation} groups={self.groups}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "padding": self.padding,
            "pad": self.pad if isinstance(self.pad, (str, int)) else list(self.pad),
            "input_size": None if self.input_size is None else list(self.input_size),
            "stride": list(self.stride),
            "dilation": list(self.dilation),
            "groups": self.groups,
        }


def _length_as_row(input_size: Any) -> Pair | None:
    """A ``Conv1d``'s ``input_size`` (None, ``n`` or ``(n,)``) as the 2-D size ``(1, n)``."""
    if input_size is None:
        return None
    n = input_size
    if isinstance(input_size, (tuple, list)) and len(input_size) == 1:
        n = input_size[0]
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(
            "input_size must be None, an int or a 1-tuple (the length) for a "
            f"torch.nn.Conv1d, got {input_size!r}"
        )
    return (1, int(n))


KERNEL_DTYPES = "float16, bfloat16, float32, float64, longdouble, int, uint or bool"


def _torch_kernel(kernel: Any) -> np.ndarray:
    """A torch tensor's values as a numpy array, exactly (float64 for floating dtypes, the
    integer or bool dtype as it is); refuses tensors without plain values."""
    import torch

    if isinstance(kernel, torch.nn.parameter.UninitializedParameter):
        raise ValueError(
            "kernel is an uninitialised parameter (torch.nn.LazyConv2d before its first "
            "forward pass): run the module once on an input so the weight gets its shape"
        )
    if kernel.is_nested or kernel.layout != torch.strided:
        raise TypeError(
            f"kernel must be a dense (strided) tensor, got layout {kernel.layout}"
            f"{' (nested)' if kernel.is_nested else ''}: pass kernel.to_dense()"
        )
    if kernel.is_meta:
        raise ValueError("kernel is on the meta device and has no values: pass a real tensor")
    if kernel.is_quantized:
        raise TypeError("kernel must not be quantized: pass kernel.dequantize()")
    if kernel.is_complex():
        raise TypeError("kernel must be real, got a complex tensor")
    t = kernel.detach()
    if t.is_floating_point():
        # every torch floating dtype (float8 .. float64) converts to float64 exactly
        return t.to("cpu", torch.float64).resolve_conj().resolve_neg().numpy()
    try:  # integer and bool tensors keep their dtype; _exact_float64 converts them
        return t.to("cpu").resolve_neg().numpy()
    except TypeError as err:  # dtypes numpy lacks (e.g. torch.uint16 on old numpy)
        raise TypeError(
            f"kernel dtype {t.dtype} is not supported; accepted: {KERNEL_DTYPES}"
        ) from err


def _exact_float64(arr: np.ndarray) -> np.ndarray:
    """``arr`` as float64 when every value converts exactly; a ValueError naming ``kernel``
    otherwise (the certificate is for the kernel exactly as given, so a rounded copy is not
    certified silently)."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.integer):
        big = np.abs(arr.astype(np.float64)) >= 2.0**53  # the only ints float64 may round
        if big.any():
            bad = [int(v) for v in arr[big].ravel() if int(float(int(v))) != int(v)]
            if bad:
                raise ValueError(
                    f"kernel holds integers float64 cannot represent exactly (e.g. {bad[0]}, "
                    "|v| > 2**53): the certificate would be for a rounded kernel; round it "
                    "yourself (kernel.astype(float)) to certify the rounded values"
                )
        return arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("kernel must be finite: it contains NaN or inf")
    with np.errstate(over="ignore", under="ignore"):  # checked just below
        out = arr.astype(np.float64, copy=False)  # as_kernel copies unless already fresh
    if arr.dtype.itemsize > 8 or arr.dtype == np.longdouble:
        with np.errstate(over="ignore", under="ignore"):
            inexact = out.astype(arr.dtype) != arr
        if inexact.any():
            idx = tuple(int(i) for i in np.argwhere(inexact)[0])
            raise ValueError(
                f"kernel of dtype {arr.dtype} holds values float64 cannot represent exactly "
                f"(e.g. kernel[{idx}] = {arr[idx]!r}, rounded or below 2**-1074 or beyond "
                "the float64 range): the certificate would be for a rounded kernel; convert "
                "it yourself (kernel.astype(np.float64)) to certify the rounded values"
            )
    return out


def as_kernel(kernel: Any) -> np.ndarray:
    """Validate a kernel and return it as a C-contiguous float64 ndarray, value for value.

    Accepted: numpy arrays, torch tensors (any device, ``requires_grad``, non-contiguous)
    and nested sequences of numbers, of dtype float16, bfloat16, float32, float64,
    longdouble, a signed or unsigned int, or bool. Every value must convert to float64
    exactly (a ``longdouble`` value with more precision, below ``2**-1074`` or beyond the
    float64 range, an integer above ``2**53`` that is not a float64, is refused): the
    certificate holds for the kernel exactly as given, so it is never silently rounded.

    Raises
    ------
    TypeError
        if the kernel is not a real numeric array (complex, strings, objects), is a numpy
        masked array (the mask would be dropped: pass ``kernel.filled(0)`` to certify the
        masked taps as zeros), a sparse, nested or quantized tensor.
    ValueError
        if it is not 4-D, has an empty axis, holds NaN/inf or values float64 cannot hold
        exactly, is ragged, or is a meta tensor or an uninitialised lazy parameter.
    """
    if isinstance(kernel, np.ma.MaskedArray):
        raise TypeError(
            "kernel is a numpy masked array, whose mask would be ignored: pass "
            "kernel.filled(0) to certify the masked taps as zeros, or kernel.data to "
            "certify the values under the mask"
        )
    fresh = False
    try:
        import torch

        if isinstance(kernel, torch.Tensor):
            dtype = kernel.dtype
            kernel = _torch_kernel(kernel)
            # a floating tensor of another dtype was converted into fresh memory (no copy
            # needed below: a Linear(25088, 4096) weight is held once in float64)
            fresh = dtype.is_floating_point and dtype != torch.float64
    except ImportError:  # pragma: no cover - torch is a run-time dependency
        pass
    if hasattr(kernel, "toarray") and hasattr(kernel, "nnz"):  # scipy.sparse
        raise TypeError("kernel must be a dense array, got a scipy sparse matrix")
    try:
        arr = np.asarray(kernel)
    except ValueError as err:  # ragged nested sequences
        raise ValueError(
            f"kernel must be a rectangular 4-D array; converting it failed: {err}"
        ) from err
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.floating)
        or np.issubdtype(arr.dtype, np.integer)
        or arr.dtype == np.bool_
    ):
        hint = " (a ragged list, or ints beyond int64?)" if arr.dtype == object else ""
        raise TypeError(
            f"kernel must be a real numeric array ({KERNEL_DTYPES}), got dtype {arr.dtype}{hint}"
        )
    if arr.ndim != 4:
        raise ValueError(
            f"kernel must be 4-D with shape (c_out, c_in // groups, kh, kw), got shape {arr.shape}"
        )
    if 0 in arr.shape:
        raise ValueError(f"kernel must have no empty axis, got shape {arr.shape}")
    arr = _exact_float64(arr)
    if not (fresh and arr.dtype == np.float64 and arr.flags.c_contiguous):
        arr = np.array(arr, dtype=np.float64, order="C")  # fresh, standard strides
    if not np.isfinite(arr).all():
        raise ValueError("kernel must be finite: it contains NaN or inf")
    return arr


@dataclass(frozen=True)
class Layer:
    """A validated kernel bound to a :class:`ConvSpec`, with every derived size resolved.

    Attributes are read-only; ``kernel`` is float64. Sizes that need the input size
    (``out_size``, ``in_dim``, ``out_dim``) raise if ``spec.input_size`` is None.
    """

    kernel: np.ndarray
    spec: ConvSpec
    pads: Pads = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pads", self.spec.pads(self.kernel_size))
        if self.spec.input_size is not None:
            self._check_size(self.spec.input_size)

    def _check_size(self, size: Pair) -> None:
        top, bottom, left, right = self.pads
        mode = self.spec.padding
        for axis, n, lo, hi in (("height", size[0], top, bottom), ("width", size[1], left, right)):
            if mode == "reflect" and max(lo, hi) >= n:
                raise ValueError(
                    f"padding='reflect' needs each pad smaller than the input (as in PyTorch): "
                    f"{axis} pad ({lo}, {hi}) with input {axis} {n}; use a smaller pad or a larger "
                    f"input_size"
                )
        out = self.out_size_for(size)
        if min(out) < 1:
            raise ValueError(
                f"the output is empty: input_size={size}, pads (top, bottom, left, right)="
                f"{self.pads}, kernel {self.kernel_size}, dilation {self.spec.dilation}, "
                f"stride {self.spec.stride}; enlarge the input or the pad"
            )

    # shapes ------------------------------------------------------------------------
    @property
    def c_out(self) -> int:
        return self.kernel.shape[0]

    @property
    def c_in(self) -> int:
        return self.kernel.shape[1] * self.spec.groups

    @property
    def groups(self) -> int:
        return self.spec.groups

    @property
    def kernel_size(self) -> Pair:
        return (self.kernel.shape[2], self.kernel.shape[3])

    @property
    def extent(self) -> Pair:
        """Spatial extent of the dilated kernel, ``d*(k-1)+1`` per axis."""
        (kh, kw), (dh, dw) = self.kernel_size, self.spec.dilation
        return (dh * (kh - 1) + 1, dw * (kw - 1) + 1)

    @property
    def input_size(self) -> Pair:
        if self.spec.input_size is None:
            raise ValueError(
                "input_size=None means every input size, but this needs a finite input size: "
                "pass input_size=(H, W)"
            )
        return self.spec.input_size

    def out_size_for(self, size: Pair) -> Pair:
        top, bottom, left, right = self.pads
        (eh, ew), (sh, sw) = self.extent, self.spec.stride
        return (
            (size[0] + top + bottom - eh) // sh + 1,
            (size[1] + left + right - ew) // sw + 1,
        )

    @property
    def out_size(self) -> Pair:
        return self.out_size_for(self.input_size)

    @property
    def in_dim(self) -> int:
        return self.c_in * math.prod(self.input_size)

    @property
    def out_dim(self) -> int:
        return self.c_out * math.prod(self.out_size)

    @property
    def is_circulant(self) -> bool:
        """True if the layer is a (strided) block-circulant operator on the torus.

        That is circular padding with ``dilation*(k-1)`` padded in total per axis and a
        stride that divides the input size on each axis. The split of the pad between the
        two sides only shifts the output, which leaves every singular value unchanged.
        """
        if self.spec.padding != "circular" or self.spec.input_size is None:
            return False
        top, bottom, left, right = self.pads
        (eh, ew), (sh, sw) = self.extent, self.spec.stride
        (h, w) = self.spec.input_size
        return top + bottom == eh - 1 and left + right == ew - 1 and h % sh == 0 and w % sw == 0

    def dense_channel_taps(self) -> np.ndarray:
        """The kernel with groups expanded to a block-diagonal ``(c_out, c_in, kh, kw)`` array."""
        g = self.groups
        if g == 1:
            return self.kernel
        co_g, ci_g = self.c_out // g, self.kernel.shape[1]
        full = np.zeros((self.c_out, self.c_in, *self.kernel_size))
        for i in range(g):
            full[i * co_g : (i + 1) * co_g, i * ci_g : (i + 1) * ci_g] = self.kernel[
                i * co_g : (i + 1) * co_g
            ]
        return full


DENSE_MAX_BYTES = 2**30
"""Default ceiling for any dense float64 array the library allocates (1 GiB)."""


class TooLargeError(ValueError):
    """A dense operator (or its Gram matrix) would exceed the allowed memory."""


def check_dense_size(shape: tuple[int, ...], what: str, max_bytes: int | None) -> None:
    """Refuse, before allocating, a float64 array of ``shape`` above ``max_bytes``.

    ``max_bytes=None`` uses :data:`DENSE_MAX_BYTES` (read at call time, so it can be changed
    globally as ``specbound.spec.DENSE_MAX_BYTES = ...``).
    """
    if max_bytes is not None and (
        isinstance(max_bytes, (bool, np.bool_)) or not isinstance(max_bytes, numbers.Integral)
    ):
        raise TypeError(f"max_bytes must be None or an int, got {max_bytes!r}")
    limit = DENSE_MAX_BYTES if max_bytes is None else int(max_bytes)
    nbytes = 8 * math.prod(shape)
    if nbytes > limit:
        raise TooLargeError(
            f"{what} of shape {shape} needs {nbytes / 2**20:.1f} MiB, above max_bytes="
            f"{limit} ({limit / 2**20:.1f} MiB); raise max_bytes, or use conv_sparse / "
            f"conv_operator / certify for layers this large"
        )


# ---------------------------------------------------------------------------- options
MAX_SIGNAL_ENTRIES = 2**31
"""Largest input or output (``channels * H * W`` entries) a size-given layer may have: one
float64 image that large already takes 16 GiB, and every route keeps several."""


def check_real(
    value: Any, name: str, *, low: float, high: float = math.inf, open_high: bool = True
) -> float:
    """``value`` as a float in ``(low, high)`` (``(low, high]`` when not ``open_high``).

    Accepts Python and numpy real scalars (``np.float32(1e-3)``, ``np.int64(2)``) and 0-d
    arrays; refuses bools, strings, NaN and other types, naming ``name``.
    """
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    x = float(value)
    inside = low < x and (x < high if open_high else x <= high)
    if not inside:
        bracket = ")" if open_high else "]"
        raise ValueError(f"{name} must be a number in ({low:g}, {high:g}{bracket}, got {value!r}")
    return x


def resolve_device(device: Any) -> Any:
    """``device`` (None, a string or a ``torch.device``) as a usable ``torch.device``.

    Only ``"cpu"`` and ``"cuda"`` / ``"cuda:i"`` are accepted; a CUDA device must exist in
    this torch build and machine.
    """
    import torch

    if device is None:
        return torch.device("cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(
            f"device must be None, a string such as 'cpu' or 'cuda:0', or a torch.device; "
            f"got {type(device).__name__} {device!r}"
        )
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"device must be 'cpu' or 'cuda[:i]', got {device!r}") from err
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise ValueError(
            f"device must be 'cpu' or 'cuda[:i]' (float64 on CPU or an NVIDIA GPU), got {device!r}"
        )
    if not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} asks for CUDA, but this torch build or machine has none "
            f"(torch {torch.__version__}, torch.cuda.is_available() is False): use 'cpu'"
        )
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        raise ValueError(f"device={device!r} does not exist: this machine has {count} CUDA devices")
    return dev


def check_signal_size(layer: Layer) -> None:
    """Refuse a size-given layer whose input or output has more than
    :data:`MAX_SIGNAL_ENTRIES` entries, before any allocation."""
    if layer.spec.input_size is None:
        return
    biggest = max(layer.in_dim, layer.out_dim)
    if biggest > MAX_SIGNAL_ENTRIES:
        raise ValueError(
            f"input_size={layer.spec.input_size} is too large: the layer's input has "
            f"{layer.in_dim} and its output {layer.out_dim} entries, above the "
            f"{MAX_SIGNAL_ENTRIES} this library handles (specbound.spec.MAX_SIGNAL_ENTRIES)"
        )


def check_spec(spec: Any, name: str = "spec") -> ConvSpec:
    """``spec`` itself if it is a :class:`ConvSpec`; a TypeError naming ``name`` otherwise."""
    if not isinstance(spec, ConvSpec):
        raise TypeError(
            f"{name} must be a specbound.ConvSpec (e.g. ConvSpec('zeros', 'same', (H, W))), "
            f"got {type(spec).__name__}"
        )
    return spec
