"""BCOP: Block Convolution Orthogonal Parameterization (Li et al., NeurIPS 2019).

Li, Haque, Anil, Lucas, Grosse & Jacobsen, "Preventing Gradient Attenuation in Lipschitz
Constrained Convolutional Networks", NeurIPS 2019 (arXiv 1911.00937). The construction is the
block convolution of 2-tap orthogonal-projector kernels of Xiao et al. (ICML 2018, Alg. 1).

Construction (implemented from the mathematics of the two papers above)
----------------------------------------------------------------------------------------------
With ``m = max(c_in, c_out)`` channels (per group), one orthogonal ``H`` and symmetric
projectors ``P_1..P_{kh-1}`` (vertical) and ``Q_1..Q_{kw-1}`` (horizontal) of rank
``r = floor(m / 2)``,

.. math::

    K = H \\circledast [P_1;\\ I-P_1] \\circledast [Q_1,\\ I-Q_1] \\circledast \\cdots,

where ``[P; I-P]`` is the 2-tap kernel along one axis and ``(A (*) B)[c] = sum_{a+b=c} A[a] B[b]``
(matrix products) is the kernel of the composed convolution. The symbol of a factor,
``P + (I - P) z`` with ``|z| = 1``, is unitary when ``P`` is an orthogonal projector, so ``K``'s
symbol is unitary at every frequency: the conv is orthogonal under circular padding for every
input size, and (a restriction of the orthogonal convolution on the plane) has norm ``<= 1``
under zero padding of any amount. ``c_in != c_out``: the kernel is built with ``m`` channels and
sliced to ``c_out x c_in``; the sliced symbol is a block of a unitary matrix, so ``J^T J = I``
(``c_in < c_out``) or ``J J^T = I`` (``c_in > c_out``) under circular padding.

Orthogonalisation (Björck & Bowie 1971, first order) and the guarantee at every step
-----------------------------------------------------------------------------------
Each free matrix ``A`` is divided by a **true upper bound** ``b >= ||A||_2`` (the Gram-iteration
bound ``||(A^T A)^{2^J}||_F^{2^{-(J+1)}}`` of :func:`norm_upper_bound`, or the Frobenius norm) and
iterated ``W <- 1.5 W - 0.5 W W^T W``. In the SVD ``W = U diag(s) V^T`` one step maps every
singular value by ``f(s) = 1.5 s - 0.5 s^3``, and

.. math::

    1 - f(s) = \\tfrac12 (s - 1)^2 (s + 2) \\ge 0 \\quad (s \\ge 0),\\qquad
    f(s) \\ge 0 \\ \\text{on}\\ [0, \\sqrt3],\\qquad f' \\ge 0 \\ \\text{on}\\ [0, 1].

So singular values in ``[0, 1]`` stay in ``[0, 1]`` at every iteration count (including 0)
and increase monotonically to 1 when positive; more generally ``|f(s)| <= 1`` for ``s in [0, 2]``,
so even a pre-scaled norm slightly above 1 (rounding in ``b``) is pulled back to ``<= 1`` by
one step (``f'(1) = 0``: rounding does not accumulate). With ``||W|| <= 1``: ``H`` (a block of
``W``) is a contraction and ``P = W_r W_r^T`` (``W_r`` the first ``r`` columns) is symmetric with
eigenvalues in ``[0, 1]``, so ``|lambda + (1 - lambda) z| <= 1`` makes every factor's symbol a
contraction. Hence **the layer is 1-Lipschitz (circular padding, any size; zero padding, any
pad) after any number of Björck iterations**, and orthogonal in the limit.

Stride: as the authors, a stride ``s`` is an invertible space-to-depth (``pixel_unshuffle``, a
permutation) followed by a BCOP conv with ``c_in * s^2`` input channels and kernel ``k / s``. The
composition is the strided conv with the expanded kernel
``K[o, c, s*a + r_h, s*b + r_w] = K'[o, c*s^2 + r_h*s + r_w, a, b]`` and pads ``s * pad'``,
which is what the layer computes and exports.

Reference-code bug avoided: the published LConvNet loop (issue #1) used the first projector pair
twice and never the last; here every matrix enters the kernel (tested: each receives a gradient).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..spec import AxisPads
from ._base import (
    CachedTransform,
    ConstrainedConv2d,
    check_tensor_name,
    module_geometry,
    padding_compensation,
)

PRESCALES = ("gram", "frobenius")


def norm_upper_bound(a: torch.Tensor, n_iter: int = 3) -> torch.Tensor:
    """Guaranteed upper bound on ``||A||_2`` for a batch of matrices (Gram iteration).

    ``||A||_2^{2^{J+1}} = ||(A^T A)^{2^J}||_2 <= ||(A^T A)^{2^J}||_F``: the Gram iteration
    (Delattre et al., ICML 2023, Thm. 1), with Frobenius normalisation at each squaring and
    the scale kept in log space. ``n_iter = J >= 0``; ``J = 0`` gives
    ``||A^T A||_F^{1/2} <= ||A||_F``. Differentiable; a zero matrix gives a tiny positive value.

    References
    ----------
    * B. Delattre, Q. Barthélemy, A. Araujo and A. Allauzen, "Efficient Bound of Lipschitz
      Constant for Convolutional Layers by Gram Iteration", ICML 2023, arXiv:2305.16173
      (Gram iteration on a matrix); docs/proofs.md, theorem GI-UB.

    Examples
    --------
    >>> import torch
    >>> from specbound import layers
    >>> _ = torch.manual_seed(0)
    >>> a = torch.randn(1, 3, 4, dtype=torch.float64)
    >>> bool(layers.norm_upper_bound(a) >= torch.linalg.matrix_norm(a, 2))
    True
    """
    tiny = torch.finfo(a.dtype).tiny
    g = a.mT @ a
    f = torch.linalg.matrix_norm(g).clamp_min(tiny)
    log_c = torch.log(f)
    g = g / f[..., None, None]
    for _ in range(n_iter):
        g = g @ g
        f = torch.linalg.matrix_norm(g).clamp_min(tiny)
        log_c = 2 * log_c + torch.log(f)
        g = g / f[..., None, None]
    return torch.exp(log_c / 2 ** (n_iter + 1))


def bjorck(a: torch.Tensor, n_iter: int = 20, *, prescale: str = "gram") -> torch.Tensor:
    """First-order Björck–Bowie orthogonalisation of a batch of square matrices.

    Parameters
    ----------
    a : torch.Tensor
        ``(..., m, m)``.
    n_iter : int
        Number of steps ``W <- 1.5 W - 0.5 W W^T W`` (``>= 0``).
    prescale : {"gram", "frobenius"}
        The true upper bound on ``||a||_2`` that ``a`` is divided by first
        (:func:`norm_upper_bound` with 3 steps, or the Frobenius norm). Either keeps
        ``||W||_2 <= 1`` (up to rounding) at every iteration count; see the module docstring.

    Returns
    -------
    torch.Tensor
        Same shape; orthogonal in the limit, of norm ``<= 1`` at every step.

    References
    ----------
    * Q. Li, S. Haque, C. Anil, J. Lucas, R. Grosse and J.-H. Jacobsen, "Preventing
      Gradient Attenuation in Lipschitz Constrained Convolutional Networks", NeurIPS 2019
      (block convolution orthogonal parametrization, on the projector kernels of Xiao et al.,
      ICML 2018, Alg. 1).
    * Å. Björck and C. Bowie, "An Iterative Algorithm for Computing the Best Estimate of an
      Orthogonal Matrix", SIAM Journal on Numerical Analysis 8(2), 1971.

    Examples
    --------
    >>> import torch
    >>> from specbound import layers
    >>> _ = torch.manual_seed(0)
    >>> q = layers.bjorck(torch.randn(2, 3, 3, dtype=torch.float64), 30)
    >>> torch.allclose(q @ q.mT, torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    True
    """
    if not isinstance(n_iter, int) or n_iter < 0:
        raise ValueError(f"bjorck_iters must be an int >= 0, got {n_iter!r}")
    if prescale == "gram":
        bound = norm_upper_bound(a, 3)
    elif prescale == "frobenius":
        bound = torch.linalg.matrix_norm(a).clamp_min(torch.finfo(a.dtype).tiny)
    else:
        raise ValueError(f"prescale must be one of {PRESCALES}, got {prescale!r}")
    w = a / bound[..., None, None]
    for _ in range(n_iter):
        w = 1.5 * w - 0.5 * w @ (w.mT @ w)
    return w


def _compose(kernel: torch.Tensor, proj: torch.Tensor, axis: int) -> torch.Tensor:
    """Kernel of ``conv_kernel o conv_[P, I-P]`` with the 2-tap factor along ``axis`` (-2/-1).

    ``kernel``: ``(g, m, m, h, w)``; ``proj``: ``(g, m, m)``.
    """
    eye = torch.eye(proj.shape[-1], dtype=proj.dtype, device=proj.device)
    first = torch.einsum("goihw,gij->gojhw", kernel, proj)
    second = torch.einsum("goihw,gij->gojhw", kernel, eye - proj)
    pad_end = (0, 1, 0, 0) if axis == -1 else (0, 0, 0, 1)
    pad_start = (1, 0, 0, 0) if axis == -1 else (0, 0, 1, 0)
    shape = first.shape
    first = torch.nn.functional.pad(first.reshape(-1, *shape[-2:]), pad_end)
    second = torch.nn.functional.pad(second.reshape(-1, *shape[-2:]), pad_start)
    return (first + second).reshape(*shape[:-2], *first.shape[-2:])


def num_matrices(kernel_size: tuple[int, int], m: int) -> int:
    """``1 + (kh - 1) + (kw - 1)`` (``2k - 1`` for a square kernel); 1 when ``m = 1``
    (projectors of rank ``floor(1/2) = 0`` are the zero matrix: nothing to learn)."""
    if m // 2 == 0:
        return 1
    return 1 + (kernel_size[0] - 1) + (kernel_size[1] - 1)


def bcop_kernel(
    matrices: torch.Tensor,
    out_channels: int,
    in_channels: int,
    kernel_size: Any,
    *,
    groups: int = 1,
    bjorck_iters: int = 20,
    prescale: str = "gram",
) -> torch.Tensor:
    """The BCOP kernel from its free matrices.

    Parameters
    ----------
    matrices : torch.Tensor
        ``(groups, n, m, m)`` with ``m = max(in_channels, out_channels) // groups`` and
        ``n = num_matrices(kernel_size, m)``: ``matrices[:, 0]`` gives ``H``, the following
        ones alternate vertical / horizontal projectors.
    out_channels, in_channels, kernel_size, groups
        Of the (stride-1) conv.

    Returns
    -------
    torch.Tensor
        ``(out_channels, in_channels // groups, kh, kw)``.

    References
    ----------
    * Q. Li, S. Haque, C. Anil, J. Lucas, R. Grosse and J.-H. Jacobsen, "Preventing
      Gradient Attenuation in Lipschitz Constrained Convolutional Networks", NeurIPS 2019
      (block convolution orthogonal parametrization, on the projector kernels of Xiao et al.,
      ICML 2018, Alg. 1).
    * Å. Björck and C. Bowie, "An Iterative Algorithm for Computing the Best Estimate of an
      Orthogonal Matrix", SIAM Journal on Numerical Analysis 8(2), 1971.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> import specbound as sb
    >>> from specbound import layers
    >>> from specbound.operators import exact_norm
    >>> _ = torch.manual_seed(0)
    >>> matrices = torch.randn(1, 5, 2, 2, dtype=torch.float64)
    >>> kernel = layers.bcop_kernel(matrices, 2, 2, (3, 3), bjorck_iters=30)
    >>> spec = sb.ConvSpec(padding="circular", input_size=(6, 6))
    >>> round(exact_norm(kernel.numpy(), spec), 9)
    1.0
    """
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    co, ci = out_channels // groups, in_channels // groups
    m = max(co, ci)
    n_mat = num_matrices((kh, kw), m)
    if tuple(matrices.shape) != (groups, n_mat, m, m):
        raise ValueError(
            f"matrices must have shape (groups, n, m, m) = {(groups, n_mat, m, m)}, got "
            f"{tuple(matrices.shape)}"
        )
    ortho = bjorck(matrices, bjorck_iters, prescale=prescale)
    kernel = ortho[:, 0][..., None, None]
    r = m // 2
    if r == 0:  # m == 1: [0, 1] factors, a pure shift
        kernel = torch.nn.functional.pad(kernel.reshape(groups, 1, 1, 1), (kw - 1, 0, kh - 1, 0))
        kernel = kernel.reshape(groups, 1, 1, kh, kw)
    else:
        index = 1
        for t in range(max(kh, kw) - 1):
            for axis, size in ((-2, kh), (-1, kw)):
                if t < size - 1:
                    basis = ortho[:, index, :, :r]
                    kernel = _compose(kernel, basis @ basis.mT, axis)
                    index += 1
    kernel = kernel[:, :co, :ci]
    return kernel.reshape(groups * co, ci, kh, kw)


def expand_stride(kernel: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
    """Kernel of ``conv(pixel_unshuffle(x, s), K')`` as one strided conv of ``x``.

    ``K'``: ``(c_out, c_in_g * sh * sw, kh', kw')`` with pixel_unshuffle's channel order
    ``c * sh * sw + r_h * sw + r_w``; returns ``(c_out, c_in_g, sh * kh', sw * kw')``.
    """
    sh, sw = stride
    c_out, c_in_p, kh, kw = kernel.shape
    c_in = c_in_p // (sh * sw)
    k = kernel.reshape(c_out, c_in, sh, sw, kh, kw).permute(0, 1, 4, 2, 5, 3)
    return k.reshape(c_out, c_in, kh * sh, kw * sw)


def orthogonal_matrices(shape: tuple[int, ...], **factory: Any) -> torch.Tensor:
    """Random orthogonal matrices of shape ``(..., m, m)`` (torch's ``orthogonal_`` init)."""
    out = torch.empty(shape, **factory)
    flat = out.view(-1, shape[-2], shape[-1])
    for i in range(flat.shape[0]):
        nn.init.orthogonal_(flat[i])
    return out


class BCOPKernel(CachedTransform):
    """Parametrization ``matrices -> BCOP kernel / padding_norm`` (cached in eval mode).

    References
    ----------
    * Q. Li, S. Haque, C. Anil, J. Lucas, R. Grosse and J.-H. Jacobsen, "Preventing
      Gradient Attenuation in Lipschitz Constrained Convolutional Networks", NeurIPS 2019
      (block convolution orthogonal parametrization, on the projector kernels of Xiao et al.,
      ICML 2018, Alg. 1).
    * Å. Björck and C. Bowie, "An Iterative Algorithm for Computing the Best Estimate of an
      Orthogonal Matrix", SIAM Journal on Numerical Analysis 8(2), 1971.

    Examples
    --------
    >>> import torch
    >>> from specbound import layers
    >>> _ = torch.manual_seed(0)
    >>> transform = layers.BCOPKernel(2, 2, (3, 3))
    >>> transform.matrices_shape
    (1, 5, 2, 2)
    >>> transform(torch.randn(transform.matrices_shape, dtype=torch.float64)).shape
    torch.Size([2, 2, 3, 3])
    """

    def __init__(
        self,
        out_channels: int,
        in_channels: int,
        kernel_size: tuple[int, int],
        *,
        stride: tuple[int, int] = (1, 1),
        groups: int = 1,
        bjorck_iters: int = 20,
        prescale: str = "gram",
        padding_norm: float = 1.0,
    ) -> None:
        super().__init__()
        if not isinstance(bjorck_iters, int) or bjorck_iters < 0:
            raise ValueError(f"bjorck_iters must be an int >= 0, got {bjorck_iters!r}")
        if prescale not in PRESCALES:
            raise ValueError(f"prescale must be one of {PRESCALES}, got {prescale!r}")
        sh, sw = stride
        self.out_channels, self.in_channels = out_channels, in_channels
        self.kernel_size, self.stride, self.groups = kernel_size, stride, groups
        self.bjorck_iters, self.prescale, self.padding_norm = bjorck_iters, prescale, padding_norm
        self.inner_in = in_channels * sh * sw  # channels after space-to-depth
        self.inner_kernel = (kernel_size[0] // sh, kernel_size[1] // sw)
        self.m = max(out_channels, self.inner_in) // groups
        self.n_matrices = num_matrices(self.inner_kernel, self.m)

    @property
    def matrices_shape(self) -> tuple[int, int, int, int]:
        return (self.groups, self.n_matrices, self.m, self.m)

    def transform(self, matrices: torch.Tensor) -> torch.Tensor:
        k = bcop_kernel(
            matrices,
            self.out_channels,
            self.inner_in,
            self.inner_kernel,
            groups=self.groups,
            bjorck_iters=self.bjorck_iters,
            prescale=self.prescale,
        )
        if self.stride != (1, 1):
            k = expand_stride(k, self.stride)
        return k / self.padding_norm if self.padding_norm != 1.0 else k

    def right_inverse(self, kernel: torch.Tensor) -> torch.Tensor:
        """Matrices for an assigned kernel: BCOP cannot represent an arbitrary kernel, so this
        returns the orthogonal polar factor of each group's summed taps (zero-padded to
        ``m x m``) as ``H`` and identity projector matrices. Only ``H`` depends on the input."""
        if tuple(kernel.shape) == self.matrices_shape:  # already the free matrices
            return kernel
        if self.stride != (1, 1):
            raise ValueError("right_inverse is only defined for stride 1")
        g, m = self.groups, self.m
        co = self.out_channels // g
        taps = kernel.detach().sum(dim=(-2, -1)).reshape(g, co, -1)
        square = kernel.new_zeros(g, m, m)
        square[:, :co, : taps.shape[-1]] = taps
        u, _, vh = torch.linalg.svd(square)
        mats = torch.eye(m, dtype=kernel.dtype, device=kernel.device).repeat(
            g, self.n_matrices, 1, 1
        )
        mats[:, 0] = u @ vh
        return mats


def _stride_pads(kernel_size: tuple[int, int], stride: tuple[int, int], padding: Any) -> AxisPads:
    """Per-axis pads ``((top, bottom), (left, right))`` of the strided conv for the inner
    ``padding`` keyword."""
    if padding not in ("same", "valid"):
        raise ValueError(
            f"BCOPConv2d with stride > 1 takes padding='same' or 'valid' (applied to the "
            f"space-to-depth conv with kernel kernel_size/stride); got padding={padding!r}"
        )
    pads = []
    for k, s in zip(kernel_size, stride, strict=True):
        inner = k // s
        lo = (inner - 1) // 2 if padding == "same" else 0
        hi = inner - 1 - lo if padding == "same" else 0
        pads.append((s * lo, s * hi))
    return tuple(pads)


class BCOPConv2d(ConstrainedConv2d):
    """Orthogonal convolution by block convolution of projector kernels (BCOP).

    Li et al., NeurIPS 2019; construction and guarantee in the module docstring.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias
        As :class:`torch.nn.Conv2d`. ``kernel_size`` may be even or rectangular. With
        ``stride = s > 1`` the layer is space-to-depth then a BCOP conv of kernel
        ``kernel_size / s`` (``kernel_size`` must be divisible by ``s``; ``padding`` is
        ``"same"`` or ``"valid"`` for that inner conv; ``dilation`` must be 1). ``"same"``
        pads ``dilation*(k-1)`` in total, the odd pixel on the right/bottom.
    padding_mode : {"circular", "zeros", "reflect", "replicate"}
        Default ``"circular"``, where the layer is orthogonal (the authors' setting). Zero
        padding: norm ``<= 1``, not orthogonal (border effects). Reflect/replicate: the kernel
        is divided by the exact bound on the padding operator's norm (``padding_norm``).
    bjorck_iters : int
        Björck steps per forward (``>= 0``); 1-Lipschitz at every count, orthogonal in the limit.
    prescale : {"gram", "frobenius"}
        True upper bound used before the Björck steps (:func:`bjorck`).
    min_input_size : (H, W), optional
        Reflect/replicate only: the compensation holds for inputs at least this large (forward
        refuses smaller ones); default every admissible size.

    Notes
    -----
    Guarantee (float64 allowance :data:`~specbound.layers.ROUNDING_ALLOWANCE`): ``||J|| <= 1``
    for zero padding (any pad), circular padding (total pad ``<= dilation*(k-1)``, any input
    size; with stride, input size divisible by the stride), and reflect/replicate after
    compensation. Under circular ``"same"`` padding with converged Björck steps all singular
    values equal 1 (``J^T J = I`` if ``c_in < c_out``, ``J J^T = I`` if ``c_in > c_out``).

    References
    ----------
    * Q. Li, S. Haque, C. Anil, J. Lucas, R. Grosse and J.-H. Jacobsen, "Preventing
      Gradient Attenuation in Lipschitz Constrained Convolutional Networks", NeurIPS 2019
      (block convolution orthogonal parametrization, on the projector kernels of Xiao et al.,
      ICML 2018, Alg. 1).
    * Å. Björck and C. Bowie, "An Iterative Algorithm for Computing the Best Estimate of an
      Orthogonal Matrix", SIAM Journal on Numerical Analysis 8(2), 1971.

    Examples
    --------
    >>> import torch
    >>> from specbound import layers
    >>> _ = torch.manual_seed(0)
    >>> layer = layers.BCOPConv2d(2, 2, 3, bjorck_iters=30, dtype=torch.float64)
    >>> cert = layer.certify(input_size=(6, 6))  # circular padding: orthogonal
    >>> round(cert.lower, 6), cert.upper <= 1 + 1e-9
    (1.0, True)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = "same",
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "circular",
        *,
        bjorck_iters: int = 20,
        prescale: str = "gram",
        min_input_size: Any = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        from ._base import _pair

        ks, st = _pair(kernel_size, "kernel_size"), _pair(stride, "stride")
        if st != (1, 1):
            if ks[0] % st[0] or ks[1] % st[1]:
                raise ValueError(
                    f"BCOPConv2d with stride={st} needs kernel_size divisible by the stride "
                    f"(space-to-depth, then kernel_size/stride); got kernel_size={ks}"
                )
            if _pair(dilation, "dilation") != (1, 1):
                raise ValueError(
                    f"BCOPConv2d supports dilation > 1 only with stride 1; got stride={st}, "
                    f"dilation={dilation!r}"
                )
            padding_arg = _stride_pads(ks, st, padding)
        else:
            padding_arg = padding
        super().__init__(
            in_channels,
            out_channels,
            ks,
            st,
            padding_arg,
            dilation,
            groups,
            bias,
            padding_mode,
            min_input_size=min_input_size,
            device=device,
            dtype=dtype,
        )
        self.padding = padding
        transform = BCOPKernel(
            out_channels,
            in_channels,
            ks,
            stride=st,
            groups=self.groups,
            bjorck_iters=bjorck_iters,
            prescale=prescale,
            padding_norm=self.padding_norm,
        )
        self.weight = nn.Parameter(
            orthogonal_matrices(transform.matrices_shape, device=device, dtype=dtype)
        )
        parametrize.register_parametrization(self, "weight", transform, unsafe=True)

    @property
    def bjorck_iters(self) -> int:
        return self.parametrizations.weight[0].bjorck_iters

    @bjorck_iters.setter
    def bjorck_iters(self, value: int) -> None:
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"bjorck_iters must be an int >= 0, got {value!r}")
        self.parametrizations.weight[0].bjorck_iters = value
        self.parametrizations.weight[0]._cache = None

    def _check_input(self, x: torch.Tensor) -> None:
        super()._check_input(x)
        sh, sw = self.stride
        h, w = x.shape[-2:]
        if self.padding_mode == "circular" and (h % sh or w % sw):
            raise ValueError(
                f"BCOPConv2d with stride={self.stride} and padding_mode='circular' needs an "
                f"input size divisible by the stride (space-to-depth on the torus); got {(h, w)}"
            )


def bcop_(
    module: nn.Conv2d,
    tensor_name: str = "weight",
    *,
    bjorck_iters: int = 20,
    prescale: str = "gram",
) -> nn.Conv2d:
    """Parametrize an existing :class:`torch.nn.Conv2d` (stride 1) as a BCOP conv, in place.

    The original is stored at ``module.parametrizations.weight.original`` with shape
    ``(groups, n, m, m)``. BCOP cannot represent an arbitrary kernel: the current weight is
    replaced by an orthogonal kernel whose ``H`` is the polar factor of the summed taps
    (:meth:`BCOPKernel.right_inverse`). Reflect/replicate padding is compensated for every
    input size; circular padding must not exceed ``dilation*(k-1)`` per axis.

    Parameters
    ----------
    module : torch.nn.Conv2d
        Stride 1; parametrized in place and returned.
    tensor_name : str
        The parameter to constrain (geotorch's call style); a tensor of the weight's shape.
    bjorck_iters : int
        Björck orthogonalisation steps.
    prescale : str
        The prescaling of the Björck iteration (as :func:`bjorck`).

    Returns
    -------
    torch.nn.Conv2d
        ``module``, whose ``weight`` is now the BCOP kernel.

    References
    ----------
    * Q. Li, S. Haque, C. Anil, J. Lucas, R. Grosse and J.-H. Jacobsen, "Preventing
      Gradient Attenuation in Lipschitz Constrained Convolutional Networks", NeurIPS 2019
      (block convolution orthogonal parametrization, on the projector kernels of Xiao et al.,
      ICML 2018, Alg. 1).
    * Å. Björck and C. Bowie, "An Iterative Algorithm for Computing the Best Estimate of an
      Orthogonal Matrix", SIAM Journal on Numerical Analysis 8(2), 1971.

    Examples
    --------
    >>> import torch
    >>> import specbound as sb
    >>> from specbound import layers
    >>> conv = torch.nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular", dtype=torch.float64)
    >>> conv = layers.bcop_(conv, bjorck_iters=30)
    >>> cert = sb.certify(conv, input_size=(6, 6))
    >>> round(cert.lower, 6), cert.upper <= 1 + 1e-9
    (1.0, True)
    """
    if not isinstance(module, nn.Conv2d):
        raise TypeError(f"bcop_ takes a torch.nn.Conv2d, got {type(module).__name__}")
    check_tensor_name(module, tensor_name)
    if tuple(module.stride) != (1, 1):
        raise ValueError(
            f"bcop_ needs stride 1 (got stride={tuple(module.stride)}); use BCOPConv2d, which "
            "implements a stride by space-to-depth"
        )
    spec, ks, pads = module_geometry(module)
    norm = padding_compensation(spec, ks, pads)
    transform = BCOPKernel(
        module.out_channels,
        module.in_channels,
        ks,
        groups=module.groups,
        bjorck_iters=bjorck_iters,
        prescale=prescale,
        padding_norm=norm,
    )
    parametrize.register_parametrization(module, tensor_name, transform, unsafe=True)
    return module


__all__ = [
    "BCOPConv2d",
    "BCOPKernel",
    "bcop_",
    "bcop_kernel",
    "bjorck",
    "expand_stride",
    "norm_upper_bound",
    "num_matrices",
]
