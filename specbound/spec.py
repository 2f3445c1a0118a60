"""The description of a convolution layer (1-, 2- or 3-D, plain or transposed), and all
validation of user input.

A layer is a kernel ``K`` of shape ``(c_out, c_in // groups, k_0, ..., k_{d-1})`` together
with a :class:`ConvSpec`, for ``d`` spatial axes (``d`` in 1, 2, 3). The layer computes
exactly what ``torch.nn.functional.conv{d}d`` computes after padding the input with
``padding`` mode (PyTorch's cross-correlation convention):

.. math::

    y_o[i] = \\sum_{c \\in g(o)} \\sum_{a} K[o, c, a]\\,
             \\tilde x_c[s \\odot i + \\delta \\odot a - p_{lo}],

with multi-indices ``i``, ``a`` over the ``d`` axes, where :math:`\\tilde x` is the input
extended outside its support by the padding mode (zeros, periodic, mirror without repeating
the edge, or edge repetition). A *transposed* spec (``transposed=True``) describes
``torch.nn.ConvTranspose{d}d``: the adjoint of the convolution above, with the weight read
as ``(c_in, c_out // groups, k...)``.

:class:`ConvSpec` is kernel-independent and immutable; ``ConvLayer(kernel, spec)``
(:class:`~specbound.operators.ConvLayer`) binds it to a kernel, validates the kernel against
it and resolves every derived quantity (pads, output size, dimensions). Pads are resolved once, to
one order: per axis, in axis order, ``((lo_0, hi_0), (lo_1, hi_1), ...)``. No other module
validates user input.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

PADDING_MODES = ("zeros", "circular", "reflect", "replicate")
PAD_WORDS = ("same", "valid", "full")
SPATIAL_DIMS = (1, 2, 3)

# ------------------------------------------------------------------ public type aliases
KernelLike = Union[np.ndarray, "torch.Tensor", "list[Any]"]
"""A kernel as accepted by :func:`as_kernel`: a numpy array, a torch tensor or nested
sequences of numbers, of shape ``(c_out, c_in // groups, k_0, ..., k_{d-1})``."""
IntTuple = tuple[int, ...]
"""One int per spatial axis, in axis order."""
IntPair = tuple[int, int]
"""Two ints, ``(height, width)`` or ``(lo, hi)``."""
IntOrTuple = Union[int, "tuple[int, ...]", "list[int]"]
"""An int (the same on every axis) or one int per spatial axis."""
AxisPads = tuple[IntPair, ...]
"""Resolved pads, per axis in axis order: ``((lo_0, hi_0), (lo_1, hi_1), ...)``."""
PadSpec = Union[int, "tuple[int, ...]", "list[int]", AxisPads, Literal["same", "valid", "full"]]
"""An amount of padding as :class:`ConvSpec` accepts it."""
PaddingMode = Literal["zeros", "circular", "reflect", "replicate"]
"""The padding modes, with PyTorch's ``padding_mode`` names."""

Pair = IntPair
Pads = AxisPads


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _int_seq(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(_is_int(v) for v in value)


def check_pair(value: Any, name: str, minimum: int) -> Pair:
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


def _per_axis(value: Any, name: str, minimum: int, d: int) -> IntTuple:
    """Validate an int or a ``d``-tuple of ints, each ``>= minimum``."""
    if _is_int(value):
        items = (int(value),) * d
    elif _int_seq(value) and len(value) == d:
        items = tuple(int(v) for v in value)
    else:
        what = "a pair of ints" if d == 2 else f"a {d}-tuple of ints"
        raise TypeError(f"{name} must be an int or {what} (d={d} spatial axes), got {value!r}")
    if min(items) < minimum:
        raise ValueError(f"{name} must be >= {minimum} on each axis, got {value!r}")
    return items


def _nested_pads(pad: Any) -> bool:
    return isinstance(pad, (tuple, list)) and all(
        isinstance(p, (tuple, list)) and len(p) == 2 and all(_is_int(v) for v in p) for p in pad
    )


def _pad_dims(pad: Any) -> int | None:
    """The number of spatial axes a pad form implies, None when it does not say."""
    if _nested_pads(pad):
        return len(pad) if len(pad) in SPATIAL_DIMS else None
    if _int_seq(pad):
        return {1: 1, 3: 3, 4: 2, 6: 3}.get(len(pad))  # 2: (lo, hi) for d=1, (ph, pw) for d=2
    return None


def _pad_amount(pad: Any, d: int) -> str | AxisPads:
    """Normalise ``pad`` to a keyword or ``((lo_0, hi_0), ..., (lo_{d-1}, hi_{d-1}))``."""
    if isinstance(pad, str):
        if pad not in PAD_WORDS:
            raise ValueError(
                f"pad must be one of {PAD_WORDS}, an int, a per-axis tuple or a "
                f"torch.nn.functional.pad tuple; got {pad!r}"
            )
        return pad
    values: AxisPads
    if _is_int(pad):
        values = ((int(pad), int(pad)),) * d
    elif _nested_pads(pad) and len(pad) == d:  # the library's own order
        values = tuple((int(lo), int(hi)) for lo, hi in pad)
    elif _int_seq(pad) and len(pad) == d:  # one amount per axis, as torch.nn.ConvNd
        values = tuple((int(p), int(p)) for p in pad)
    elif _int_seq(pad) and len(pad) == 2 * d:  # torch.nn.functional.pad: last axis first
        flat = [int(v) for v in pad]
        values = tuple((flat[2 * (d - 1 - ax)], flat[2 * (d - 1 - ax) + 1]) for ax in range(d))
    else:
        raise TypeError(
            f"pad must be an int, a {d}-tuple (one amount per axis, as torch.nn.Conv{d}d), a "
            f"{2 * d}-tuple in torch.nn.functional.pad order (last axis first), per-axis "
            f"(lo, hi) pairs, or one of {PAD_WORDS}; got {pad!r} for d={d} spatial axes"
        )
    if min(min(p) for p in values) < 0:
        raise ValueError(f"pad must be non-negative, got {pad!r}")
    return values


def _input_size(size: Any, d: int) -> IntTuple | None:
    if size is None:
        return None
    if _is_int(size) or (_int_seq(size) and len(size) == d):
        return _per_axis(size, "input_size", 1, d)
    shape = {1: "(n,)", 2: "(H, W)", 3: "(D, H, W)"}[d]
    raise TypeError(f"input_size must be None, an int or a {d}-tuple {shape}; got {size!r}")


_RAW = ("pad", "input_size", "stride", "dilation", "output_padding")


@dataclass(frozen=True, eq=False)
class ConvSpec:
    """Everything about a convolution layer except its kernel: 1-, 2- or 3-D, plain or
    transposed.

    Parameters
    ----------
    padding : {"zeros", "circular", "reflect", "replicate"}
        Padding mode, with PyTorch's ``padding_mode`` names. For ``"circular"`` a pad larger
        than the input wraps more than once (indices are taken modulo the size), which is
        the convolution on the torus; PyTorch itself refuses to wrap more than once.
    pad : int, per-axis tuple, torch.nn.functional.pad tuple, "same", "valid" or "full"
        Amount of padding. An int pads every side; a ``d``-tuple gives one amount per axis
        (as ``torch.nn.Conv{d}d``, e.g. ``(ph, pw)``); a ``2*d``-tuple is in
        :func:`torch.nn.functional.pad` order, last axis first (``(left, right, top,
        bottom)`` in 2-D); ``((lo_0, hi_0), ...)`` is the resolved per-axis order.
        ``"same"`` is ``dilation*(k-1)`` in total per axis with the odd pixel on the high
        side (as PyTorch); ``"full"`` is ``dilation*(k-1)`` on each side; ``"valid"`` is
        none.
    input_size : int, tuple or None
        Input spatial size, ``(n,)``, ``(H, W)`` or ``(D, H, W)``. ``None`` means every
        input size: a result must hold for all.
    stride, dilation : int or tuple
        As in ``torch.nn.Conv{d}d``; each ``>= 1``.
    groups : int
        Number of blocks; must divide both channel counts.
    ndim : {1, 2, 3} or None
        Number of spatial axes ``d``. ``None`` infers it from the tuple-valued fields, or,
        when every field is an int (or a word), from the kernel when the spec is bound
        (``kernel.ndim - 2``); such a spec shows its fields read in 2-D. A field whose
        length contradicts ``ndim`` or another field is a ValueError naming it.
    transposed : bool
        Describe ``torch.nn.ConvTranspose{d}d`` instead: the adjoint of the convolution,
        with the kernel read as ``(c_in, c_out // groups, k...)``. Only ``padding="zeros"``
        and an explicit amount (not a word), as PyTorch.
    output_padding : int or tuple
        Transposed layers only: extra output rows on the high side of each axis, each
        smaller than the stride or the dilation of its axis (as PyTorch).

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
    >>> sb.ConvSpec(pad=(1, 2, 3, 4)).pads((3, 3))  # F.pad order in, per-axis order out
    ((3, 4), (1, 2))
    >>> sb.ConvSpec(input_size=(4, 8, 8), stride=(1, 2, 2)).ndim
    3
    >>> sb.ConvSpec.from_module(torch.nn.ConvTranspose1d(2, 3, 4, stride=2, padding=1))
    ... # doctest: +NORMALIZE_WHITESPACE
    ConvSpec(padding='zeros', pad=(1,), input_size=None, stride=(2,), dilation=(1,),
             groups=1, ndim=1, transposed=True)
    >>> sb.ConvSpec(padding="mirror")
    Traceback (most recent call last):
    ...
    ValueError: padding must be one of ...
    """

    padding: PaddingMode = "zeros"
    pad: PadSpec = "same"
    input_size: IntOrTuple | None = None
    stride: IntOrTuple = 1
    dilation: IntOrTuple = 1
    groups: int = 1
    ndim: int | None = None
    transposed: bool = False
    output_padding: IntOrTuple = 0
    _pad: str | AxisPads | None = field(init=False, repr=False, compare=False)
    _raw: dict[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.padding, str) or self.padding not in PADDING_MODES:
            raise ValueError(f"padding must be one of {PADDING_MODES}, got {self.padding!r}")
        if not isinstance(self.transposed, (bool, np.bool_)):
            raise TypeError(f"transposed must be a bool, got {self.transposed!r}")
        object.__setattr__(self, "transposed", bool(self.transposed))
        raw = {}
        for name in _RAW:
            value = getattr(self, name)
            raw[name] = tuple(value) if isinstance(value, list) else value
            if _nested_pads(raw[name]):
                raw[name] = tuple(tuple(p) for p in raw[name])
        object.__setattr__(self, "_raw", raw)
        object.__setattr__(self, "pad", raw["pad"])  # lists as tuples: hashable
        d = self._infer_ndim()
        object.__setattr__(self, "ndim", d)
        shown = 2 if d is None else d  # an undecided spec shows its 2-D reading
        # an int or a word is validated now; with d undecided it is resolved when bound
        resolved = _pad_amount(self.pad, shown)
        object.__setattr__(self, "_pad", resolved if d is not None else None)
        object.__setattr__(self, "input_size", _input_size(raw["input_size"], shown))
        object.__setattr__(self, "stride", _per_axis(raw["stride"], "stride", 1, shown))
        object.__setattr__(self, "dilation", _per_axis(raw["dilation"], "dilation", 1, shown))
        if not _is_int(self.groups) or self.groups < 1:
            raise ValueError(f"groups must be a positive int, got {self.groups!r}")
        object.__setattr__(self, "groups", int(self.groups))
        opad = _per_axis(raw["output_padding"], "output_padding", 0, shown)
        object.__setattr__(self, "output_padding", opad)
        if self.transposed:
            self._check_transposed()
        elif any(opad):
            raise ValueError(
                f"output_padding={raw['output_padding']!r} is for transposed convolutions "
                "only: pass transposed=True, or output_padding=0"
            )

    def _infer_ndim(self) -> int | None:
        given = self.ndim
        if given is not None and (not _is_int(given) or int(given) not in SPATIAL_DIMS):
            raise ValueError(f"ndim must be None, 1, 2 or 3 (spatial axes), got {given!r}")
        found: dict[str, int] = {}
        for name in ("input_size", "stride", "dilation", "output_padding"):
            value = self._raw[name]
            if _int_seq(value) and len(value) in SPATIAL_DIMS:
                found[name] = len(value)
        pad_d = _pad_dims(self._raw["pad"])
        if pad_d is not None:
            found["pad"] = pad_d
        if given is not None:
            for name, d in found.items():
                if d != int(given):
                    raise ValueError(
                        f"{name}={self._raw[name]!r} has {d} axes but ndim={given}: give one "
                        f"value per spatial axis ({given})"
                    )
            return int(given)
        dims = set(found.values())
        if len(dims) > 1:
            detail = ", ".join(f"{k}={self._raw[k]!r} ({v}-D)" for k, v in found.items())
            raise ValueError(
                f"the fields disagree on the number of spatial axes: {detail}; give every "
                "tuple one value per axis, or pass ndim"
            )
        if dims:
            return dims.pop()
        pad = self._raw["pad"]
        if _int_seq(pad) and len(pad) == 2:
            return 2  # (ph, pw) as torch.nn.Conv2d; pass ndim=1 for (lo, hi) of a Conv1d
        return None

    def _check_transposed(self) -> None:
        if self.padding != "zeros":
            raise ValueError(
                f"padding={self.padding!r} with transposed=True: transposed convolutions "
                "support padding='zeros' only (as torch.nn.ConvTranspose*d)"
            )
        if isinstance(self.pad, str):
            raise ValueError(
                f"pad={self.pad!r} with transposed=True: give an explicit amount (an int or a "
                "per-axis tuple), as torch.nn.ConvTranspose*d"
            )
        for ax, (op, s, dil) in enumerate(
            zip(self.output_padding, self.stride, self.dilation, strict=False)
        ):
            if op >= max(s, dil):
                raise ValueError(
                    f"output_padding={self._raw['output_padding']!r} must be smaller than "
                    f"either the stride or the dilation on each axis (as PyTorch): axis {ax} "
                    f"has output_padding {op}, stride {s}, dilation {dil}"
                )

    # ------------------------------------------------------------------ identity
    def _key(self) -> tuple[Any, ...]:
        return (
            self.padding,
            self.pad,
            self.input_size,
            self.stride,
            self.dilation,
            self.groups,
            self.ndim if self.ndim is not None else 2,
            self.transposed,
            self.output_padding,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ConvSpec):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        text = (
            f"ConvSpec(padding={self.padding!r}, pad={self.pad!r}, "
            f"input_size={self.input_size!r}, stride={self.stride!r}, "
            f"dilation={self.dilation!r}, groups={self.groups!r}"
        )
        if self.ndim is not None and self.ndim != 2:
            text += f", ndim={self.ndim!r}"
        if self.transposed:
            text += ", transposed=True"
        if any(self.output_padding):
            text += f", output_padding={self.output_padding!r}"
        return text + ")"

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_module(cls, conv: Any, input_size: IntOrTuple | None = None) -> ConvSpec:
        """Read the geometry of a ``torch.nn`` convolution module: the only reader of one.

        Accepts ``Conv1d``, ``Conv2d``, ``Conv3d``, ``ConvTranspose1d``, ``ConvTranspose2d``,
        ``ConvTranspose3d`` and their subclasses (read by ``isinstance``): padding mode,
        pad, stride, dilation, groups and, for transposed modules, ``output_padding``. The
        spec has the module's number of spatial axes; ``input_size`` is None (every size),
        an int or one value per axis.

        Examples
        --------
        >>> import torch
        >>> import specbound as sb
        >>> sb.ConvSpec.from_module(torch.nn.Conv3d(2, 4, 3, padding=1), input_size=5)
        ... # doctest: +ELLIPSIS
        ConvSpec(padding='zeros', pad=(1, 1, 1), input_size=(5, 5, 5), ..., ndim=3)
        """
        import torch

        kinds = {
            torch.nn.Conv1d: (1, False),
            torch.nn.Conv2d: (2, False),
            torch.nn.Conv3d: (3, False),
            torch.nn.ConvTranspose1d: (1, True),
            torch.nn.ConvTranspose2d: (2, True),
            torch.nn.ConvTranspose3d: (3, True),
        }
        found = [v for kind, v in kinds.items() if isinstance(conv, kind)]
        if not found:
            raise TypeError(
                "conv must be a torch.nn.Conv1d, Conv2d, Conv3d, ConvTranspose1d, "
                f"ConvTranspose2d or ConvTranspose3d (or a subclass), got {type(conv).__name__}"
            )
        d, transposed = found[0]
        if conv.padding_mode not in PADDING_MODES:
            raise ValueError(
                f"unsupported padding_mode {conv.padding_mode!r} of {type(conv).__name__}; "
                f"accepted: {PADDING_MODES}"
            )
        pad = conv.padding if isinstance(conv.padding, str) else tuple(conv.padding)
        extra: dict[str, Any] = {}
        if transposed:
            extra = {"transposed": True, "output_padding": tuple(conv.output_padding)}
        return cls(
            padding=conv.padding_mode,
            pad=pad,
            input_size=input_size,
            stride=tuple(conv.stride),
            dilation=tuple(conv.dilation),
            groups=conv.groups,
            ndim=d,
            **extra,
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
            "ndim": self.ndim,
            "transposed": self.transposed,
            "output_padding": self.output_padding,
        }
        if self.ndim is None:  # keep the undecided ints undecided
            fields.update({name: self._raw[name] for name in _RAW if name != "pad"})
        dims = _given_dims(changes)
        if "ndim" not in changes and self.ndim is not None and dims and self.ndim not in dims:
            # a field given with another number of axes redefines d
            fields["ndim"] = None
            for name in ("input_size", "stride", "dilation", "output_padding"):
                if name not in changes:
                    fields[name] = self._raw[name]
        fields.update(changes)
        return ConvSpec(**fields)

    def with_ndim(self, d: int) -> ConvSpec:
        """This spec read with ``d`` spatial axes (its own ``ndim`` if decided; a ValueError
        naming ``kernel`` if that differs from ``d``)."""
        if self.ndim is not None:
            if self.ndim != d:
                raise ValueError(
                    f"kernel has {d} spatial axes but the spec has ndim={self.ndim}: pass a "
                    f"kernel of shape (c_out, c_in // groups, {', '.join(['k'] * self.ndim)})"
                )
            return self
        fields = {name: self._raw[name] for name in _RAW}
        return ConvSpec(
            padding=self.padding,
            groups=self.groups,
            ndim=d,
            transposed=self.transposed,
            **fields,
        )

    # ------------------------------------------------------------------ derived
    def pads(self, kernel_size: tuple[int, ...]) -> AxisPads:
        """Resolved pads ``((lo_0, hi_0), ...)`` for a kernel of spatial size ``kernel_size``."""
        spec = self.with_ndim(len(kernel_size))
        if not isinstance(spec._pad, str):
            return spec._pad  # type: ignore[return-value]
        totals = [dil * (k - 1) for k, dil in zip(kernel_size, spec.dilation, strict=False)]
        if spec._pad == "valid":
            return tuple((0, 0) for _ in totals)
        if spec._pad == "full":
            return tuple((t, t) for t in totals)
        return tuple((t // 2, t - t // 2) for t in totals)

    def describe(self) -> str:
        size = "every size" if self.input_size is None else "x".join(map(str, self.input_size))
        text = (
            f"padding={self.padding} pad={self.pad!r} input={size} stride={self.stride} "
            f"dilation={self.dilation} groups={self.groups}"
        )
        if self.transposed:
            text += f" transposed output_padding={self.output_padding}"
        return text

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "padding": self.padding,
            "pad": self.pad if isinstance(self.pad, (str, int)) else _listed(self.pad),
            "input_size": None if self.input_size is None else list(self.input_size),
            "stride": list(self.stride),
            "dilation": list(self.dilation),
            "groups": self.groups,
        }
        if self.ndim is not None and self.ndim != 2:
            out["ndim"] = self.ndim
        if self.transposed:
            out["transposed"] = True
            out["output_padding"] = list(self.output_padding)
        return out


def _given_dims(fields: dict[str, Any]) -> set[int]:
    """The numbers of spatial axes that the tuple-valued ``fields`` imply."""
    dims = set()
    for name in ("input_size", "stride", "dilation", "output_padding"):
        value = fields.get(name)
        if _int_seq(value) and len(value) in SPATIAL_DIMS:
            dims.add(len(value))
    pad_d = _pad_dims(fields.get("pad"))
    if pad_d is not None:
        dims.add(pad_d)
    return dims


def _listed(value: Any) -> Any:
    return [_listed(v) for v in value] if isinstance(value, (tuple, list)) else value


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


def as_kernel(kernel: KernelLike, ndim: int | None = 2) -> np.ndarray:
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
        if it has not ``ndim + 2`` axes (3 to 5 when ``ndim`` is None), has an empty axis,
        holds NaN/inf or values float64 cannot hold exactly, is ragged, or is a meta tensor
        or an uninitialised lazy parameter.
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
    if ndim is None and arr.ndim not in (3, 4, 5):
        raise ValueError(
            "kernel must be 3-D, 4-D or 5-D with shape (c_out, c_in // groups, k...) for 1, "
            f"2 or 3 spatial axes, got shape {arr.shape}"
        )
    if ndim is not None and arr.ndim != ndim + 2:
        axes = {1: "k", 2: "kh, kw", 3: "kd, kh, kw"}[ndim]
        raise ValueError(
            f"kernel must be {ndim + 2}-D with shape (c_out, c_in // groups, {axes}), got "
            f"shape {arr.shape}"
        )
    if 0 in arr.shape:
        raise ValueError(f"kernel must have no empty axis, got shape {arr.shape}")
    arr = _exact_float64(arr)
    if not (fresh and arr.dtype == np.float64 and arr.flags.c_contiguous):
        arr = np.array(arr, dtype=np.float64, order="C")  # fresh, standard strides
    if not np.isfinite(arr).all():
        raise ValueError("kernel must be finite: it contains NaN or inf")
    return arr


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


def check_spec(spec: Any, name: str = "spec") -> ConvSpec:
    """``spec`` itself if it is a :class:`ConvSpec`; a TypeError naming ``name`` otherwise."""
    if not isinstance(spec, ConvSpec):
        raise TypeError(
            f"{name} must be a specbound.ConvSpec (e.g. ConvSpec('zeros', 'same', (H, W))), "
            f"got {type(spec).__name__}"
        )
    return spec


def check_count(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int ``>= minimum``; a TypeError (not an int, or a bool) or ValueError
    naming ``name`` otherwise."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_tensor(x: Any, name: str, min_dim: int, *, real: bool = False) -> torch.Tensor:
    """``x`` itself if it is a floating torch tensor (real when ``real``) with at least
    ``min_dim`` dimensions; a TypeError or ValueError naming ``name`` otherwise."""
    import torch

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if real and not x.is_floating_point():
        raise TypeError(f"{name} must be a real floating tensor, got dtype {x.dtype}")
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{name} must be a real or complex floating tensor, got dtype {x.dtype}")
    if x.dim() < min_dim:
        raise ValueError(
            f"{name} must have at least {min_dim} dimensions, got shape {tuple(x.shape)}"
        )
    return x
