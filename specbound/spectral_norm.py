"""Differentiable spectral-norm bounds of conv layers, for training (regularisers, normalisers).

:func:`spectral_norm` validates the layer with the method's domain (the same check as the
float64 :class:`~specbound.bounds.Bound` path) and calls the method's registered torch function
on the kernel's own device and dtype, with TF32 switched off for the duration of the call.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any

import torch

from .bounds import get_method
from .bounds.base import Method, spec_from_args
from .operators.conv_layer import ConvLayer
from .rigorous.fpenv import tf32_disabled
from .spec import ConvSpec

__all__ = ["spectral_norm", "spectral_norm_batched"]


GRAM = "gram"
"""Alias resolved to ``gram_circular`` (circular padding with an input size) or ``gram_zero``."""


def _resolve(method: str, spec: ConvSpec) -> Method:
    if not isinstance(method, str):
        raise TypeError(f"method must be a str, got {type(method).__name__}")
    if method == GRAM:
        circular = spec.padding == "circular" and spec.input_size is not None
        method = "gram_circular" if circular else "gram_zero"
    found = get_method(method)
    if found.torch_func is None:
        raise ValueError(
            f"method {method!r} is not differentiable (no torch function); differentiable "
            "methods are listed by specbound.methods() with differentiable=True"
        )
    return found


def _validate(found: Method, method: str, kernel: Any, spec: ConvSpec) -> ConvLayer:
    """``found.validate``; when ``method`` was the ``"gram"`` alias, a refusal says which
    method the alias resolved to and why."""
    try:
        return found.validate(kernel, spec)
    except ValueError as err:
        if method != GRAM:
            raise
        size = "every input size" if spec.input_size is None else f"input_size={spec.input_size}"
        raise ValueError(
            f"method='gram' resolved to {found.name!r} (for padding={spec.padding!r} and "
            f"{size}; 'gram' means 'gram_circular' for circular padding with an input size, "
            f"'gram_zero' otherwise), which refuses this layer: {err}"
        ) from None


def _options(found: Method, n_iter: int | None, options: dict[str, Any]) -> dict[str, Any]:
    """Pass ``n_iter`` to the torch function when given; ``None`` keeps the method's own
    default (6 for ``gram_circular``, 4 for ``gram_zero``). A method without iterations
    refuses an explicit ``n_iter``."""
    if n_iter is None:
        return dict(options)
    params = inspect.signature(found.torch_func).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if "n_iter" in params or takes_any:
        return {"n_iter": n_iter, **options}
    raise TypeError(f"method {found.name!r} takes no n_iter, got n_iter={n_iter}")


def _spec_and_method(spec: Any, method: str) -> tuple[ConvSpec | None, str]:
    """The old call ``spectral_norm(kernel, "name")`` (the method in the second position)
    still works, with a DeprecationWarning; anything else there must be a ConvSpec."""
    if isinstance(spec, str):
        if method != GRAM:
            raise TypeError(
                f"method given twice: {spec!r} in the second position and method={method!r}"
            )
        warnings.warn(
            f"spectral_norm(kernel, {spec!r}) is deprecated: the second position is the "
            f"ConvSpec; pass the method as spectral_norm(kernel, method={spec!r})",
            DeprecationWarning,
            stacklevel=3,
        )
        return None, spec
    return spec, method


def _check_kernel(kernel: Any, name: str, ndim: int) -> torch.Tensor:
    if not isinstance(kernel, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(kernel).__name__}")
    if kernel.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be float32 or float64, got {kernel.dtype}")
    if kernel.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(kernel.shape)}")
    return kernel


def spectral_norm(
    kernel: torch.Tensor,
    spec: ConvSpec | None = None,
    *,
    method: str = GRAM,
    padding: str = "zeros",
    pad: Any = "same",
    input_size: Any = None,
    stride: Any = 1,
    dilation: Any = 1,
    groups: int = 1,
    n_iter: int | None = None,
    **options: Any,
) -> torch.Tensor:
    """A differentiable bound on the spectral norm of a conv layer, as a 0-d tensor.

    Parameters
    ----------
    kernel : torch.Tensor
        ``(c_out, c_in // groups, kh, kw)``, float32 or float64, any device. The result has
        the same device and dtype and is differentiable in ``kernel``.
    spec : ConvSpec, optional
        The layer, as one object (``spectral_norm(kernel, spec)``). Alternatively pass its
        fields ``padding``, ``pad``, ``input_size``, ``stride``, ``dilation``, ``groups`` as
        keywords, but not both. (A method name in this position is deprecated: pass
        ``method=``.)
    method : str
        ``"gram"`` (default) picks ``gram_circular`` (Delattre et al., ICML 2023, Sec. 3) for
        circular padding with an ``input_size`` and ``gram_zero`` (Delattre et al. 2024,
        arXiv 2402.00240: an upper bound on the symbol supremum, valid for every input size)
        otherwise. Any registered method with a torch function can be named
        (``specbound.methods()``); the layer is refused, as in the float64 path, if it lies
        outside the method's guarantee.
    padding, pad, input_size, stride, dilation, groups
        The layer, as in :class:`specbound.ConvSpec`. The defaults are those of
        :func:`specbound.certify`: ``padding="zeros"``, ``pad="same"``, every input size.
        A bound for circular padding is not a bound for the zero-padded layer; pass the
        padding the layer uses.
    n_iter : int, optional
        Iterations, for methods that take them; default (None) is the method's own default
        (6 for ``gram_circular``, 4 for ``gram_zero``). For ``gram_zero`` the cost grows like
        ``4^T``: ``T = 3..4`` is the practical range for wide layers.
    **options
        Passed to the method's torch function (e.g. ``chunk`` for ``gram_circular``).

    Returns
    -------
    torch.Tensor
        0-d, on the kernel's device and dtype. What it guarantees is the method's ``kind``
        in exact arithmetic; a float32 result carries float32 rounding (no inflation).

    Notes
    -----
    TF32 (``torch.backends.cuda.matmul.allow_tf32`` and ``torch.backends.cudnn.allow_tf32``)
    is switched off during the call and restored afterwards.

    References
    ----------
    * B. Delattre, Q. Barthélemy, A. Araujo and A. Allauzen, "Efficient Bound of Lipschitz
      Constant for Convolutional Layers by Gram Iteration", ICML 2023, arXiv:2305.16173,
      Sec. 3 (``gram_circular``).
    * B. Delattre, Q. Barthélemy and A. Allauzen, "Spectral Norm of Convolutional Layers
      with Circular and Zero Paddings", arXiv:2402.00240, 2024 (``gram_zero``).
    * docs/theory/bounds.md, "Gram iteration"; docs/proofs.md, theorems C1-C7 and Z1-Z8.

    Examples
    --------
    >>> import torch
    >>> import specbound as sb
    >>> kernel = torch.ones(1, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    >>> bound = sb.spectral_norm(kernel, padding="circular", input_size=(8, 8))
    >>> round(bound.item(), 6)
    9.0
    >>> bound.backward()
    >>> kernel.grad.shape
    torch.Size([1, 1, 3, 3])
    >>> every_size = sb.spectral_norm(kernel.detach())  # gram_zero: zeros, every input size
    >>> every_size.item() >= 9.0 - 1e-9
    True
    >>> spec = sb.ConvSpec(padding="circular", input_size=(8, 8))
    >>> sb.spectral_norm(kernel, spec).item() == bound.item()
    True
    """
    kernel = _check_kernel(kernel, "kernel", 4)
    spec, method = _spec_and_method(spec, method)
    spec = spec_from_args(
        spec,
        padding=padding,
        pad=pad,
        input_size=input_size,
        stride=stride,
        dilation=dilation,
        groups=groups,
    )
    found = _resolve(method, spec)
    layer = _validate(found, method, kernel, spec)
    kwargs = _options(found, n_iter, options)
    with tf32_disabled():
        out = found.torch_func(kernel, layer, **kwargs)
    return out.reshape(())


def spectral_norm_batched(
    kernels: torch.Tensor,
    spec: ConvSpec | None = None,
    *,
    method: str = GRAM,
    padding: str = "zeros",
    pad: Any = "same",
    input_size: Any = None,
    stride: Any = 1,
    dilation: Any = 1,
    groups: int = 1,
    n_iter: int | None = None,
    **options: Any,
) -> torch.Tensor:
    """:func:`spectral_norm` of a batch of kernels of one layer geometry, shape ``(B,)``.

    ``kernels`` is ``(B, c_out, c_in // groups, kh, kw)``. The Gram methods compute the whole
    batch in one pass (batched FFT and matrix products); other methods are looped. Every
    kernel is validated. The other parameters are those of :func:`spectral_norm`.
    """
    kernels = _check_kernel(kernels, "kernels", 5)
    if kernels.shape[0] == 0:
        raise ValueError("kernels must hold at least one kernel, got batch size 0")
    spec, method = _spec_and_method(spec, method)
    spec = spec_from_args(
        spec,
        padding=padding,
        pad=pad,
        input_size=input_size,
        stride=stride,
        dilation=dilation,
        groups=groups,
    )
    found = _resolve(method, spec)
    cpu = kernels.detach().to("cpu", torch.float64).numpy()  # one transfer for validation
    layers: list[ConvLayer] = [_validate(found, method, k, spec) for k in cpu]
    kwargs = _options(found, n_iter, options)
    with tf32_disabled():
        if getattr(found.torch_func, "supports_batch", False):
            return found.torch_func(kernels, layers[0], **kwargs).reshape(-1)
        values = [
            found.torch_func(k, layer, **kwargs).reshape(())
            for k, layer in zip(kernels, layers, strict=True)
        ]
    return torch.stack(values)
