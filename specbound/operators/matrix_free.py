"""The layer as a matrix-free ``scipy.sparse.linalg.LinearOperator`` (float64, via torch)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse.linalg import LinearOperator

from ..spec import ConvSpec, Layer, check_spec, resolve_device
from .indexing import padded_index


class ConvOperator(LinearOperator):
    """``A`` and its adjoint ``A^T`` applied without forming any matrix.

    ``matvec`` gathers the padded input through the per-axis index maps of the padding mode
    (so every mode and any pad work, including circular pads that wrap more than once) and
    runs ``torch.nn.functional.conv2d`` in float64; ``rmatvec`` is the exact adjoint:
    ``conv_transpose2d`` followed by the transposed gather (a scatter-add).

    References
    ----------
    * docs/theory/operators.md, "The layer as a matrix" and "Exact representations".

    Examples
    --------
    Built by :func:`conv_operator`; any ``scipy.sparse.linalg`` solver takes it:

    >>> import numpy as np
    >>> from scipy.sparse.linalg import svds
    >>> import specbound as sb
    >>> from specbound.operators import ConvOperator, conv_operator
    >>> A = conv_operator(np.ones((1, 1, 3, 3)), sb.ConvSpec(input_size=(4, 4)))
    >>> isinstance(A, ConvOperator)
    True
    >>> sigma = svds(A, k=1, return_singular_vectors=False, random_state=0)
    >>> round(float(sigma[0]), 6)
    6.854102
    """

    def __init__(self, layer: Layer, device: str | torch.device | None = None):
        self.layer = layer
        self.device = torch.device("cpu" if device is None else device)
        (h, w) = layer.input_size
        top, bottom, left, right = layer.pads
        self._src_h = self._source(padded_index(h, top, bottom, layer.spec.padding), h)
        self._src_w = self._source(padded_index(w, left, right, layer.spec.padding), w)
        self._weight = torch.from_numpy(layer.kernel).to(self.device)
        super().__init__(dtype=np.float64, shape=(layer.out_dim, layer.in_dim))

    def _source(self, index: np.ndarray, n: int) -> torch.Tensor:
        # -1 ("zero") points at an extra all-zero row appended at position n
        return torch.from_numpy(np.where(index >= 0, index, n)).to(self.device)

    def _conv_args(self) -> dict[str, Any]:
        spec = self.layer.spec
        return {"stride": spec.stride, "dilation": spec.dilation, "groups": spec.groups}

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``A`` on a batch of images ``(m, c_in, H, W)`` (float64 tensor on ``device``)."""
        xt = F.pad(x, (0, 1, 0, 1))
        padded = xt.index_select(2, self._src_h).index_select(3, self._src_w)
        return F.conv2d(padded, self._weight, **self._conv_args())

    def apply_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``A^T`` on a batch of output images ``(m, c_out, OH, OW)``."""
        layer, m = self.layer, y.shape[0]
        (h, w), (oh, ow) = layer.input_size, layer.out_size
        hp, wp = len(self._src_h), len(self._src_w)
        (sh, sw), (eh, ew) = layer.spec.stride, layer.extent
        extra = (hp - ((oh - 1) * sh + eh), wp - ((ow - 1) * sw + ew))
        grad = F.conv_transpose2d(y, self._weight, output_padding=extra, **self._conv_args())
        rows = grad.new_zeros(m, layer.c_in, h + 1, wp).index_add_(2, self._src_h, grad)
        out = rows.new_zeros(m, layer.c_in, h + 1, w + 1).index_add_(3, self._src_w, rows)
        return out[:, :, :h, :w]

    def _matmat(self, x: np.ndarray) -> np.ndarray:
        layer, m = self.layer, x.shape[1]
        xt = torch.as_tensor(np.ascontiguousarray(x.T), dtype=torch.float64, device=self.device)
        y = self.apply(xt.reshape(m, layer.c_in, *layer.input_size))
        return y.reshape(m, -1).T.cpu().numpy()

    def _rmatmat(self, y: np.ndarray) -> np.ndarray:
        layer, m = self.layer, y.shape[1]
        yt = torch.as_tensor(np.ascontiguousarray(y.T), dtype=torch.float64, device=self.device)
        x = self.apply_adjoint(yt.reshape(m, layer.c_out, *layer.out_size))
        return x.reshape(m, -1).T.cpu().numpy()

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        return self._matmat(x.reshape(-1, 1)).ravel()

    def _rmatvec(self, y: np.ndarray) -> np.ndarray:
        return self._rmatmat(y.reshape(-1, 1)).ravel()

    def _adjoint(self) -> LinearOperator:
        return LinearOperator(
            dtype=np.float64,
            shape=(self.shape[1], self.shape[0]),
            matvec=self._rmatvec,
            rmatvec=self._matvec,
            matmat=self._rmatmat,
            rmatmat=self._matmat,
        )


def conv_operator(
    kernel: Any, spec: ConvSpec, *, device: str | torch.device | None = None
) -> ConvOperator:
    """Matrix-free ``LinearOperator`` of the layer, with ``matvec`` and ``rmatvec`` (adjoint).

    Memory is ``O(c * H * W)`` per vector, so this works where even :func:`conv_sparse` does
    not fit. Computation is float64; ``device`` selects where torch runs it.

    References
    ----------
    * docs/theory/operators.md, "The layer as a matrix" and "Exact representations".

    Examples
    --------
    >>> import numpy as np
    >>> import specbound as sb
    >>> from specbound.operators import conv_matrix, conv_operator
    >>> kernel = np.ones((1, 1, 3, 3))
    >>> spec = sb.ConvSpec(padding="reflect", input_size=(4, 4))
    >>> A = conv_operator(kernel, spec)
    >>> A
    <16x16 ConvOperator with dtype=float64>
    >>> x = np.arange(16.0)
    >>> np.allclose(A.matvec(x), conv_matrix(kernel, spec) @ x)
    True
    >>> np.allclose(A.rmatvec(x), conv_matrix(kernel, spec).T @ x)
    True
    """
    layer = check_spec(spec).layer(kernel, need_size=True)
    return ConvOperator(layer, device=resolve_device(device))
