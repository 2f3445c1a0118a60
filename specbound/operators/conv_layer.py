"""One convolution layer as one object: :class:`ConvLayer`, the kernel bound to its spec.

It owns the geometry (every derived size, per spatial axis, with the one pad order
``((lo_0, hi_0), ...)``), is a :class:`scipy.sparse.linalg.LinearOperator` when the input
size is given, applies the layer and its adjoint in torch (float64, on any device), and
builds the exact dense and sparse matrices, for 1, 2 or 3 spatial axes and for transposed
convolutions, by one dimension-generic code path.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import LinearOperator

from .. import spec as spec_module
from ..spec import (
    AxisPads,
    ConvSpec,
    IntTuple,
    KernelLike,
    as_kernel,
    check_dense_size,
    check_spec,
)
from .frequency import FrequencyEngine
from .indexing import axis_index, padded_index, padding_operator_norm

LAYOUTS = ("channels_first", "pixels_first")

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


class ConvLayer(LinearOperator):
    """A validated kernel bound to a :class:`~specbound.spec.ConvSpec`: the layer's operator.

    Every derived size is resolved here, as a tuple with one entry per spatial axis
    (``kernel_size``, ``extent``, ``stride``, ``dilation``, ``pads`` as ``((lo, hi), ...)``,
    ``input_size``, ``out_size``). With a finite ``input_size`` the layer is a
    ``scipy.sparse.linalg.LinearOperator`` of shape ``(out_dim, in_dim)`` acting on vectors
    flattened channels-first (as a PyTorch tensor ``(c, *size)`` in C order); with
    ``input_size=None`` (every size) ``shape``, ``matvec`` and the matrices raise a
    ValueError.

    A transposed layer (``spec.transposed``) is the adjoint of a forward convolution: its
    kernel is read as ``(c_in, c_out // groups, k...)`` as in ``torch.nn.ConvTranspose{d}d``,
    its output size is ``(n-1)s - lo - hi + dilation*(k-1) + output_padding + 1`` per axis,
    and :meth:`forward_layer` is the forward convolution (same weight tensor, same stride,
    dilation, groups and pads, at that output size) whose adjoint it is.

    Parameters
    ----------
    kernel : array_like or torch.Tensor
        Real kernel, ``(c_out, c_in // groups, k_0, ..., k_{d-1})``; converted to float64
        exactly (see :func:`~specbound.spec.as_kernel`).
    spec : ConvSpec
        The geometry. A spec with an undecided number of axes takes ``kernel.ndim - 2``.
    need_size : bool
        Refuse a spec with ``input_size=None`` (every size), for uses that need a matrix.
    device : str or torch.device, optional
        Where :meth:`apply`, :meth:`apply_adjoint` and ``matvec`` run (float64).

    References
    ----------
    * docs/theory/operators.md, "The layer as a matrix" and "Exact representations".
    * V. Dumoulin and F. Visin, "A guide to convolution arithmetic for deep learning",
      arXiv:1603.07285, 2016, Sec. 4 (transposed convolution as the adjoint).

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> import specbound as sb
    >>> from specbound.operators import ConvLayer
    >>> layer = ConvLayer(np.ones((1, 1, 3, 3)), sb.ConvSpec(input_size=(4, 4)))
    >>> layer.shape, layer.pads, layer.out_size
    ((16, 16), ((1, 1), (1, 1)), (4, 4))
    >>> np.array_equal(layer.sparse().toarray(), layer.dense())
    True
    >>> x = np.arange(16.0)
    >>> bool(np.allclose(layer.matvec(x), layer.dense() @ x, rtol=0, atol=1e-12))
    True

    A transposed 1-D layer, checked against torch, and its adjoint forward convolution:

    >>> conv_t = torch.nn.ConvTranspose1d(2, 3, 4, stride=2, padding=1, bias=False).double()
    >>> layer = ConvLayer(conv_t.weight, sb.ConvSpec.from_module(conv_t, input_size=5))
    >>> layer.out_size, layer.forward_layer().input_size
    ((10,), (10,))
    >>> y = torch.randn(1, 2, 5, dtype=torch.float64)
    >>> bool(torch.allclose(layer.apply(y), conv_t(y), rtol=1e-12, atol=1e-12))
    True
    """

    def __init__(
        self,
        kernel: KernelLike,
        spec: ConvSpec,
        *,
        need_size: bool = False,
        device: str | torch.device | None = None,
    ) -> None:
        spec = check_spec(spec)
        if need_size and spec.input_size is None:
            raise ValueError(
                "input_size=None means every input size, but this needs a finite input size: "
                "pass input_size=(H, W)"
            )
        arr = as_kernel(kernel, spec.ndim)
        self._setup(arr, spec.with_ndim(arr.ndim - 2), device)

    @classmethod
    def _from_validated(
        cls, kernel: np.ndarray, spec: ConvSpec, device: str | torch.device | None = None
    ) -> ConvLayer:
        obj = cls.__new__(cls)
        obj._setup(kernel, spec, device)
        return obj

    def _setup(self, kernel: np.ndarray, spec: ConvSpec, device: Any) -> None:
        self.kernel = kernel
        self.spec = spec
        self.device = torch.device("cpu" if device is None else device)
        self.dtype = np.dtype(np.float64)
        self._torch: dict[str, Any] | None = None
        lead = kernel.shape[0]  # c_out, or c_in for a transposed layer
        if lead % spec.groups:
            name = "input channels" if spec.transposed else "output channels"
            short = "c_in" if spec.transposed else "c_out"
            raise ValueError(
                f"groups={spec.groups} must divide the {name} {short}={lead} (kernel shape "
                f"{kernel.shape})"
            )
        self.pads: AxisPads = spec.pads(self.kernel_size)
        self._fwd: ConvLayer | None = None
        if spec.transposed:
            size = None if spec.input_size is None else self.out_size_for(spec.input_size)
            if size is not None and min(size) < 1:
                raise ValueError(
                    f"the output is empty: input_size={spec.input_size}, pads {self.pads}, "
                    f"kernel {self.kernel_size}, dilation {spec.dilation}, stride "
                    f"{spec.stride}, output_padding {spec.output_padding}; enlarge the input "
                    "or reduce the pad"
                )
            fwd_spec = ConvSpec(
                "zeros", self.pads, size, spec.stride, spec.dilation, spec.groups, ndim=self.d
            )
            self._fwd = ConvLayer._from_validated(kernel, fwd_spec, self.device)
        elif spec.input_size is not None:
            self._check_size(spec.input_size)

    def _check_size(self, size: IntTuple) -> None:
        mode = self.spec.padding
        for axis, (n, (lo, hi)) in enumerate(zip(size, self.pads, strict=False)):
            if mode == "reflect" and max(lo, hi) >= n:
                raise ValueError(
                    f"padding='reflect' needs each pad smaller than the input (as in PyTorch): "
                    f"axis {axis} pad ({lo}, {hi}) with input size {n}; use a smaller pad or a "
                    "larger input_size"
                )
        out = self.out_size_for(size)
        if min(out) < 1:
            raise ValueError(
                f"the output is empty: input_size={size}, pads per axis (lo, hi)="
                f"{self.pads}, kernel {self.kernel_size}, dilation {self.spec.dilation}, "
                f"stride {self.spec.stride}; enlarge the input or the pad"
            )

    # ------------------------------------------------------------------ geometry
    @property
    def d(self) -> int:
        """Number of spatial axes (1, 2 or 3)."""
        return self.kernel.ndim - 2

    @property
    def transposed(self) -> bool:
        return self.spec.transposed

    @property
    def c_out(self) -> int:
        if self.transposed:
            return self.kernel.shape[1] * self.spec.groups
        return self.kernel.shape[0]

    @property
    def c_in(self) -> int:
        if self.transposed:
            return self.kernel.shape[0]
        return self.kernel.shape[1] * self.spec.groups

    @property
    def groups(self) -> int:
        return self.spec.groups

    @property
    def stride(self) -> IntTuple:
        return self.spec.stride

    @property
    def dilation(self) -> IntTuple:
        return self.spec.dilation

    @property
    def kernel_size(self) -> IntTuple:
        return tuple(self.kernel.shape[2:])

    @property
    def extent(self) -> IntTuple:
        """Spatial extent of the dilated kernel, ``dilation*(k-1)+1`` per axis."""
        return tuple(
            dil * (k - 1) + 1 for k, dil in zip(self.kernel_size, self.spec.dilation, strict=False)
        )

    @property
    def input_size(self) -> IntTuple:
        if self.spec.input_size is None:
            raise ValueError(
                "input_size=None means every input size, but this needs a finite input size: "
                "pass input_size=(H, W)"
            )
        return self.spec.input_size

    def out_size_for(self, size: IntTuple) -> IntTuple:
        """The output size for input size ``size``."""
        if self.transposed:
            return tuple(
                (n - 1) * s - lo - hi + e + op
                for n, s, (lo, hi), e, op in zip(
                    size,
                    self.stride,
                    self.pads,
                    self.extent,
                    self.spec.output_padding,
                    strict=False,
                )
            )
        return tuple(
            (n + lo + hi - e) // s + 1
            for n, (lo, hi), e, s in zip(size, self.pads, self.extent, self.stride, strict=False)
        )

    @property
    def out_size(self) -> IntTuple:
        return self.out_size_for(self.input_size)

    @property
    def in_dim(self) -> int:
        return self.c_in * math.prod(self.input_size)

    @property
    def out_dim(self) -> int:
        return self.c_out * math.prod(self.out_size)

    @property
    def shape(self) -> tuple[int, int]:  # type: ignore[override]
        """``(out_dim, in_dim)``; a ValueError for an every-size layer."""
        return (self.out_dim, self.in_dim)

    @property
    def is_circulant(self) -> bool:
        """True if the layer is a (strided) block-circulant operator on the torus.

        That is circular padding with ``dilation*(k-1)`` padded in total per axis and a
        stride that divides the input size on each axis. The split of the pad between the
        two sides only shifts the output, which leaves every singular value unchanged.
        """
        if self.transposed or self.spec.padding != "circular" or self.spec.input_size is None:
            return False
        return all(
            lo + hi == e - 1 and n % s == 0
            for (lo, hi), e, s, n in zip(
                self.pads, self.extent, self.stride, self.input_size, strict=False
            )
        )

    def dense_channel_taps(self) -> np.ndarray:
        """The kernel with groups expanded to a block-diagonal ``(lead, c_in_fwd, k...)``
        array (for a transposed layer: that of its forward convolution)."""
        g = self.groups
        if g == 1:
            return self.kernel
        lead, per = self.kernel.shape[0], self.kernel.shape[1]
        co_g = lead // g
        full = np.zeros((lead, per * g, *self.kernel_size))
        for i in range(g):
            full[i * co_g : (i + 1) * co_g, i * per : (i + 1) * per] = self.kernel[
                i * co_g : (i + 1) * co_g
            ]
        return full

    def axis_indices(self) -> tuple[np.ndarray, ...]:
        """Per axis, the ``(n_out, k)`` input index read by output ``i`` at tap ``a``
        (``-1`` for a zero of zeros padding); forward layers only."""
        self._forward_only("axis_indices")
        return tuple(
            axis_index(n, k, lo, hi, s, dil, self.spec.padding)
            for n, k, (lo, hi), s, dil in zip(
                self.input_size,
                self.kernel_size,
                self.pads,
                self.stride,
                self.dilation,
                strict=False,
            )
        )

    def _forward_only(self, what: str) -> None:
        if self.transposed:
            raise ValueError(f"{what} is defined for forward layers: use forward_layer()")

    # ------------------------------------------------------------------ related layers
    def padding_norm(self) -> float:
        """``||P||_2`` of the padding map at :attr:`input_size`: the product over the axes of
        the per-axis norms (the Kronecker product of the per-axis maps, docs/certify.md L16;
        :func:`~specbound.operators.indexing.padding_operator_norm`), 1 for zero padding.
        The float64 result is the product of ``d`` square roots, taken in axis order."""
        if self.spec.padding == "zeros":  # an isometric embedding
            return 1.0
        norm = 1.0
        for n, (lo, hi) in zip(self.input_size, self.pads, strict=True):
            norm = norm * padding_operator_norm(n, lo, hi, self.spec.padding)
        return norm

    def frequency_engine(
        self, kernel: torch.Tensor | None = None, *, offsets: bool = True
    ) -> FrequencyEngine:
        """The layer's frequency matrices: the one frequency engine of the library
        (:class:`~specbound.operators.frequency.FrequencyEngine`) for this geometry.

        On the grid of ``input_size`` (each axis a multiple of the stride) it gives the
        (polyphase) frequency matrices of the layer as a circulant, full or half spectrum,
        chunked; at points it gives the symbol at any frequencies (every size). ``kernel``
        (default: the layer's, float64 on :attr:`device`) may carry leading batch dimensions
        and any float dtype (differentiable); ``offsets=False`` drops the low pads (a unimodular
        factor per frequency: the same singular values).

        Examples
        --------
        >>> import numpy as np
        >>> import specbound as sb
        >>> spec = sb.ConvSpec("circular", "same", 4)
        >>> layer = sb.operators.ConvLayer(np.ones((1, 1, 3, 3)), spec)
        >>> engine = layer.frequency_engine()
        >>> float(engine.on_grid()[0].abs().max())  # the DC frequency: the sum of the taps
        9.0
        """
        if kernel is None:
            kernel = torch.tensor(self.kernel, dtype=torch.float64, device=self.device)
        lo = tuple(p[0] for p in self.pads) if offsets else 0
        return FrequencyEngine(
            kernel,
            self.spec.input_size,
            lo=lo,
            stride=self.spec.stride,
            dilation=self.spec.dilation,
            groups=self.groups,
            ndim=self.d,
        )

    def with_kernel(self, kernel: KernelLike) -> ConvLayer:
        """The same geometry with another kernel of the same shape (validated)."""
        if isinstance(kernel, np.ndarray) and kernel.dtype == np.float64:
            arr = np.ascontiguousarray(kernel)
            if not np.isfinite(arr).all():
                raise ValueError("kernel must be finite: it contains NaN or inf")
        else:
            arr = as_kernel(kernel, self.d)
        if arr.shape != self.kernel.shape:
            raise ValueError(f"kernel must have shape {self.kernel.shape}, got {arr.shape}")
        return ConvLayer._from_validated(arr, self.spec, self.device)

    def to(self, device: str | torch.device | None) -> ConvLayer:
        """The same layer applied on ``device``."""
        return ConvLayer._from_validated(self.kernel, self.spec, device)

    @property
    def is_zero_map(self) -> bool:
        """True for a transposed layer that is the zero map at its size: some axis of its
        cropped forward convolution (:meth:`forward_layer`, docs/certify.md L12) has size
        ``< 1``, so no output reads any input. False for forward and every-size layers."""
        size = self._cropped_size()
        return size is not None and min(size) < 1

    def _cropped_size(self) -> IntTuple | None:
        if not self.transposed or self.spec.input_size is None:
            return None
        return tuple(
            n - max(q - hi, 0)
            for n, q, (_lo, hi) in zip(
                self.out_size, self.spec.output_padding, self.pads, strict=False
            )
        )

    def forward_layer(self) -> ConvLayer:
        """The forward convolution whose adjoint this transposed layer is (docs/certify.md
        L12).

        Same weight tensor (read as ``(c_out, c_in // groups, k...)`` of the forward
        convolution, which has ``c_out = self.c_in``), stride, dilation and groups, zeros
        padding. When ``output_padding < stride`` on every axis it has the same pads at
        input size ``self.out_size`` (and ``LinearOperator.adjoint()`` returns it). Otherwise
        it is the cropped form of L12: pads ``(lo, max(hi - q, 0))`` per axis on size
        ``out_size - max(q - hi, 0)``; the transposed layer's matrix is then its transpose
        with ``max(q - hi, 0)`` zero rows appended per axis (same singular values). For
        ``input_size=None`` the forward layer is every size too (L13: its every-size bracket
        holds for the transposed layer). A ValueError when the layer is the zero map
        (:attr:`is_zero_map`).
        """
        if not self.transposed or self._fwd is None:
            raise ValueError("forward_layer() is for transposed layers (spec.transposed=True)")
        if all(q < s for q, s in zip(self.spec.output_padding, self.stride, strict=False)):
            return self._fwd
        size = self._cropped_size()
        if size is not None and min(size) < 1:
            raise ValueError(
                f"the transposed layer is the zero map: input_size={self.spec.input_size} "
                f"with output_padding={self.spec.output_padding} and pads {self.pads} leaves "
                f"a forward convolution of size {size} (docs/certify.md L12); no output reads "
                "any input"
            )
        pads = tuple(
            (lo, max(hi - q, 0))
            for (lo, hi), q in zip(self.pads, self.spec.output_padding, strict=False)
        )
        spec = ConvSpec("zeros", pads, size, self.stride, self.dilation, self.groups, ndim=self.d)
        return ConvLayer._from_validated(self.kernel, spec, self.device)

    def as_2d(self) -> ConvLayer:
        """A 1-D layer as the one-row 2-D layer with the same matrix, row for row.

        The kernel gets a height axis of 1 and the input a height of 1 with no pad along
        it; every size (``input_size=None``) stays every size (on ``H x n`` inputs the
        one-row layer acts on each row alone, with the same norm).
        """
        if self.d != 1:
            raise ValueError(f"as_2d() is for 1-D layers, this one has {self.d} spatial axes")
        spec = self.spec
        size = None if spec.input_size is None else (1, spec.input_size[0])
        new = ConvSpec(
            spec.padding,
            ((0, 0), self.pads[0]),
            size,
            (1, spec.stride[0]),
            (1, spec.dilation[0]),
            spec.groups,
            ndim=2,
            transposed=spec.transposed,
            output_padding=(0, spec.output_padding[0]),
        )
        return ConvLayer._from_validated(self.kernel[:, :, None, :], new, self.device)

    # ------------------------------------------------------------------ torch application
    def _tensors(self) -> dict[str, Any]:
        if self._torch is None:
            src = []
            for n, (lo, hi) in zip(self.input_size, self.pads, strict=False):
                index = padded_index(n, lo, hi, self.spec.padding)
                # -1 ("zero") points at an extra all-zero entry appended at position n
                src.append(torch.from_numpy(np.where(index >= 0, index, n)).to(self.device))
            self._torch = {
                "weight": torch.from_numpy(self.kernel).to(self.device),
                "src": src,
            }
        return self._torch

    def _conv_args(self) -> dict[str, Any]:
        return {"stride": self.stride, "dilation": self.dilation, "groups": self.groups}

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The layer on a batch ``(m, c_in, *input_size)`` (float64 tensor on ``device``).

        A forward layer pads with its mode (any pad, circular wrapping more than once
        included) and runs ``torch.nn.functional.conv{d}d``; a transposed layer runs the
        adjoint of its forward convolution (``conv_transpose{d}d``).
        """
        if self._fwd is not None:
            fwd = self._fwd
            short = [m - n for m, n in zip(fwd.out_size, self.input_size, strict=False)]
            if any(short):
                x = F.pad(x, [v for s in reversed(short) for v in (0, s)])
            return fwd.apply_adjoint(x)
        t = self._tensors()
        padded = F.pad(x, (0, 1) * self.d)
        for ax, src in enumerate(t["src"]):
            padded = padded.index_select(2 + ax, src)
        return _CONV[self.d](padded, t["weight"], **self._conv_args())

    def apply_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """The adjoint on a batch of outputs ``(m, c_out, *out_size)``."""
        if self._fwd is not None:
            out = self._fwd.apply(y)
            return out[(slice(None), slice(None), *(slice(0, n) for n in self.input_size))]
        t = self._tensors()
        _m, size, out_size = y.shape[0], self.input_size, self.out_size
        lengths = [len(s) for s in t["src"]]
        extra = [
            p - ((o - 1) * s + e)
            for p, o, s, e in zip(lengths, out_size, self.stride, self.extent, strict=False)
        ]
        grad = _CONV_T[self.d](y, t["weight"], output_padding=extra, **self._conv_args())
        for ax, src in enumerate(t["src"]):
            shape = list(grad.shape)
            shape[2 + ax] = size[ax] + 1
            grad = grad.new_zeros(shape).index_add_(2 + ax, src, grad)
        return grad[(slice(None), slice(None), *(slice(0, n) for n in size))]

    # ------------------------------------------------------------------ LinearOperator
    def _matmat(self, x: np.ndarray) -> np.ndarray:
        m = x.shape[1]
        xt = torch.as_tensor(np.ascontiguousarray(x.T), dtype=torch.float64, device=self.device)
        y = self.apply(xt.reshape(m, self.c_in, *self.input_size))
        return y.reshape(m, -1).T.cpu().numpy()

    def _rmatmat(self, y: np.ndarray) -> np.ndarray:
        m = y.shape[1]
        yt = torch.as_tensor(np.ascontiguousarray(y.T), dtype=torch.float64, device=self.device)
        x = self.apply_adjoint(yt.reshape(m, self.c_out, *self.out_size))
        return x.reshape(m, -1).T.cpu().numpy()

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self._matmat(np.asarray(x).reshape(-1, 1)).ravel()

    def _rmatvec(self, y: np.ndarray) -> np.ndarray:
        return self._rmatmat(np.asarray(y).reshape(-1, 1)).ravel()

    def _adjoint(self) -> LinearOperator:
        if self._fwd is not None and self._fwd.out_size == self.input_size:
            return self._fwd
        return LinearOperator(
            dtype=np.float64,
            shape=(self.shape[1], self.shape[0]),
            matvec=self._rmatvec,
            rmatvec=self._matvec,
            matmat=self._rmatmat,
            rmatmat=self._matmat,
        )

    def __repr__(self) -> str:
        kind = "transposed " if self.transposed else ""
        size = "every size" if self.spec.input_size is None else f"{self.shape[0]}x{self.shape[1]}"
        return f"<{size} {kind}{self.d}-D ConvLayer, kernel {self.kernel.shape}>"

    # ------------------------------------------------------------------ matrices
    def _kept_rows(self) -> np.ndarray:
        """Flat row indices of the forward convolution's outputs that this transposed
        layer's input reaches (all of them unless ``output_padding >= stride``)."""
        fwd = self._fwd
        assert fwd is not None
        grids = np.meshgrid(
            np.arange(fwd.c_out), *(np.arange(n) for n in self.input_size), indexing="ij"
        )
        return np.ravel_multi_index(tuple(grids), (fwd.c_out, *fwd.out_size)).ravel()

    def dense(self, *, max_bytes: int | None = None) -> np.ndarray:
        """The dense float64 matrix ``A``, so that ``A @ x.ravel() == layer(x).ravel()``.

        Row ``(o, i)`` holds, at column ``(c, r(i, a))``, the sum of the taps
        ``K[o, c, a]`` that read that input entry, where ``r`` is the product of the
        per-axis index maps of the padding mode; a transposed layer's matrix is the
        transpose of its forward convolution's (restricted to the rows its input reaches).
        Refused with ``TooLargeError`` above ``max_bytes``.
        """
        check_dense_size((self.out_dim, self.in_dim), "the dense matrix", max_bytes)
        if self._fwd is not None:
            fwd = self._fwd.dense(max_bytes=max_bytes)
            return np.ascontiguousarray(fwd[self._kept_rows()].T)
        size, out_size = self.input_size, self.out_size
        taps = self.dense_channel_taps()
        idx = self.axis_indices()
        a4 = np.zeros((self.c_out, math.prod(out_size), self.c_in, math.prod(size)))
        for tap in itertools.product(*(range(k) for k in self.kernel_size)):
            cols_ax = [ix[:, a] for ix, a in zip(idx, tap, strict=False)]
            valid = [np.nonzero(c >= 0)[0] for c in cols_ax]
            if any(v.size == 0 for v in valid):
                continue
            grid = np.meshgrid(*valid, indexing="ij")
            rows = np.ravel_multi_index(tuple(grid), out_size).ravel()
            cols = np.ravel_multi_index(
                tuple(c[g] for c, g in zip(cols_ax, grid, strict=False)), size
            ).ravel()
            # within one tap each output entry reads one input entry: (rows, cols) distinct
            a4[:, rows, :, cols] += taps[(slice(None), slice(None), *tap)][None]
        return a4.reshape(self.out_dim, self.in_dim)

    def sparse(self, *, layout: str = "channels_first") -> sp.sparray:
        """The matrix as ``scipy.sparse``, equal to :meth:`dense`, from its structure
        ``A = sum_a K_a ⊗ S_0[a_0] ⊗ ... ⊗ S_{d-1}[a_{d-1}]`` (per-axis selection matrices of
        the padding mode: Toeplitz for zeros, circulant for circular padding).

        ``layout="pixels_first"`` (forward layers) orders ``(*size, c)`` and returns a BSR
        matrix with ``c_out x c_in`` blocks.
        """
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if self._fwd is not None:
            if layout != "channels_first":
                raise ValueError(
                    "layout='pixels_first' is for forward layers; a transposed layer's sparse "
                    "matrix is channels_first"
                )
            fwd = self._fwd.sparse()
            return sp.csr_array(fwd[self._kept_rows()].T)
        taps = self.dense_channel_taps()
        sel = [
            axis_selection(ix, n)
            for ix, n in zip(self.axis_indices(), self.input_size, strict=False)
        ]
        total = sp.csr_array((self.out_dim, self.in_dim))
        for tap in itertools.product(*(range(k) for k in self.kernel_size)):
            k_a = sp.csr_array(taps[(slice(None), slice(None), *tap)])
            if k_a.nnz == 0:
                continue
            spatial = sel[0][tap[0]]
            for ax in range(1, self.d):
                spatial = sp.kron(spatial, sel[ax][tap[ax]], format="csr")
            if layout == "channels_first":
                total = total + sp.kron(k_a, spatial, format="csr")
            else:
                total = total + sp.kron(spatial, k_a, format="csr")
        if layout == "pixels_first":
            return sp.bsr_array(total, blocksize=(self.c_out, self.c_in))
        total.sum_duplicates()
        return total


def axis_selection(index: np.ndarray, n: int) -> list[sp.csr_array]:
    """One ``(n_out, n)`` 0/1 matrix per tap: row ``i`` of tap ``a`` selects input ``index[i, a]``.

    For zeros padding and stride 1 these are shifted identities (Toeplitz); for circular
    padding they are cyclic shifts (circulant); strides keep every ``s``-th row.

    References
    ----------
    * docs/theory/operators.md, "The layer as a matrix" and "Exact representations".

    Examples
    --------
    Two output rows reading inputs ``(0, 1)`` and ``(1, 2)`` of an axis of length 3:

    >>> import numpy as np
    >>> from specbound.operators import axis_selection
    >>> first, second = axis_selection(np.array([[0, 1], [1, 2]]), 3)
    >>> first.toarray()
    array([[1., 0., 0.],
           [0., 1., 0.]])
    >>> second.toarray()
    array([[0., 1., 0.],
           [0., 0., 1.]])
    """
    n_out, k = index.shape
    mats = []
    for a in range(k):
        rows = np.nonzero(index[:, a] >= 0)[0]
        data = np.ones(rows.size)
        mats.append(sp.csr_array((data, (rows, index[rows, a])), shape=(n_out, n)))
    return mats


def check_signal_size(layer: ConvLayer) -> None:
    """Refuse a size-given layer whose input or output has more than
    :data:`MAX_SIGNAL_ENTRIES` entries, before any allocation."""
    if layer.spec.input_size is None:
        return
    biggest = max(layer.in_dim, layer.out_dim)
    limit = spec_module.MAX_SIGNAL_ENTRIES  # read at call time (settable)
    if biggest > limit:
        raise ValueError(
            f"input_size={layer.spec.input_size} is too large: the layer's input has "
            f"{layer.in_dim} and its output {layer.out_dim} entries, above the "
            f"{limit} this library handles (specbound.spec.MAX_SIGNAL_ENTRIES)"
        )


CONV_MODULES: tuple[type[torch.nn.Module], ...] = (
    torch.nn.Conv1d,
    torch.nn.Conv2d,
    torch.nn.Conv3d,
    torch.nn.ConvTranspose1d,
    torch.nn.ConvTranspose2d,
    torch.nn.ConvTranspose3d,
)
"""The torch convolution module types whose geometry :meth:`ConvSpec.from_module` reads (and
their subclasses)."""
