"""What every bound returns, and the registry that lists methods with their validity domain."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..operators.conv_layer import ConvLayer
from ..spec import PADDING_MODES, ConvSpec, check_spec

KINDS = ("exact", "upper", "lower", "estimate")
"""``exact``: the norm up to float64 rounding; ``upper``/``lower``: guaranteed one-sided (a
``lower`` carries its witness input); ``estimate``: no guarantee (e.g. an unconverged power
iteration, or a quantity that bounds a different operator)."""


@dataclass(frozen=True)
class Bound:
    """A number about ``||A||_2`` that says what it is.

    Attributes
    ----------
    value : float
        The number.
    kind : {"exact", "upper", "lower", "estimate"}
    method : str
        Registry name of the method that produced it.
    iterations : int or None
        Iteration count, where the method iterates.
    witness : numpy.ndarray or None
        For ``kind="lower"``: an input ``x`` (shape ``(c_in, H, W)``, unit norm) with
        ``||A x|| >= value``.
    probability : float or None
        For a probabilistic upper bound (``kind="estimate"``): it holds with at least this
        probability over the method's random start.
    details : dict
        Method-specific extras (e.g. the frequency or size that attains the value).
    """

    value: float
    kind: str
    method: str
    iterations: int | None = None
    witness: np.ndarray | None = None
    probability: float | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if math.isnan(self.value):
            raise ValueError(f"method {self.method!r} produced NaN")

    def __float__(self) -> float:
        return float(self.value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "kind": self.kind,
            "method": self.method,
            "iterations": self.iterations,
            "probability": self.probability,
            "details": {k: _jsonable(v) for k, v in self.details.items()},
        }


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, tuple):
        return list(v)
    return v


# input-size requirement of a method
SIZE_GIVEN, SIZE_NONE, SIZE_ANY = "given", "every", "either"


@dataclass(frozen=True)
class Method:
    """A registered method and the layers for which its label holds.

    Attributes
    ----------
    name, reference, kind, cost : str
    paddings : tuple of str
        Padding modes for which the guarantee holds.
    input_size : {"given", "every", "either"}
        ``"given"``: needs a finite input size; ``"every"``: bounds every input size and takes
        ``input_size=None`` (it also accepts a given size, being valid for it); ``"either"``.
    stride, dilation, groups : bool
        Whether strides > 1, dilations > 1 and groups > 1 are within the guarantee.
    differentiable : bool
        Available through :func:`specbound.spectral_norm`.
    check : callable, optional
        Extra domain test ``check(layer)`` raising ``ValueError`` with a message.
    torch_func : callable, optional
        For differentiable methods: ``torch_func(kernel: torch.Tensor, layer, **options)`` ->
        0-d tensor, differentiable in ``kernel``, on the kernel's device and dtype. ``layer`` is
        the validated :class:`~specbound.operators.ConvLayer` (geometry; its ``kernel`` is a float64
        copy). :func:`specbound.spectral_norm` dispatches to it.
    """

    name: str
    func: Callable[..., Bound]
    kind: str
    reference: str
    paddings: tuple[str, ...] = PADDING_MODES
    input_size: str = SIZE_ANY
    stride: bool = True
    dilation: bool = True
    groups: bool = True
    differentiable: bool = False
    cost: str = ""
    check: Callable[[ConvLayer], None] | None = None
    torch_func: Callable[..., Any] | None = None

    def validate(self, kernel: Any, spec: ConvSpec) -> ConvLayer:
        """Validate the kernel and refuse a layer outside this method's guarantee."""
        layer = ConvLayer(kernel, spec, need_size=self.input_size == SIZE_GIVEN)
        where = f"method {self.name!r}"
        if layer.d != 2 or layer.transposed:
            raise ValueError(
                f"kernel: {where} bounds forward 2-D layers (kernel (c_out, c_in // groups, "
                f"kh, kw)); got {layer.d} spatial axes{', transposed' if layer.transposed else ''}"
                "; use specbound.certify or specbound.operators.exact_norm"
            )
        spec = layer.spec
        if spec.padding not in self.paddings:
            raise ValueError(
                f"{where} is valid only for padding in {self.paddings}, got padding="
                f"{spec.padding!r}; see specbound.methods() for methods that cover it"
            )
        if not self.stride and spec.stride != (1, 1):
            raise ValueError(f"{where} does not support stride > 1, got stride={spec.stride}")
        if not self.dilation and spec.dilation != (1, 1):
            raise ValueError(f"{where} does not support dilation > 1, got dilation={spec.dilation}")
        if not self.groups and spec.groups != 1:
            raise ValueError(f"{where} does not support groups > 1, got groups={spec.groups}")
        if self.check is not None:
            self.check(layer)
        return layer

    def __call__(self, kernel: Any, spec: ConvSpec, **options: Any) -> Bound:
        layer = self.validate(kernel, spec)
        return self.func(layer, **options)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "reference": self.reference,
            "paddings": list(self.paddings),
            "input_size": self.input_size,
            "stride": self.stride,
            "dilation": self.dilation,
            "groups": self.groups,
            "differentiable": self.differentiable,
            "cost": self.cost,
        }


REGISTRY: dict[str, Method] = {}


def register(**info: Any) -> Callable[[Callable[..., Bound]], Callable[..., Bound]]:
    """Decorator: register ``func(layer: ConvLayer, **options) -> Bound`` as a method.

    The registered :class:`Method` validates ``(kernel, spec)`` against the domain and then
    calls ``func`` with the resolved :class:`~specbound.operators.ConvLayer`.
    """

    def wrap(func: Callable[..., Bound]) -> Callable[..., Bound]:
        method = Method(func=func, **info)
        if method.name in REGISTRY:
            raise RuntimeError(f"method {method.name!r} registered twice")
        REGISTRY[method.name] = method
        return func

    return wrap


def get_method(name: str) -> Method:
    """The registered :class:`Method` called ``name``; a ValueError listing the known names
    otherwise.

    Examples
    --------
    >>> from specbound.bounds import get_method
    >>> get_method("sedghi").kind
    'exact'
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {sorted(REGISTRY)}") from None


SPEC_DEFAULTS: dict[str, Any] = {
    "padding": "zeros",
    "pad": "same",
    "input_size": None,
    "stride": 1,
    "dilation": 1,
    "groups": 1,
}
"""The keyword fields of a layer (as :class:`~specbound.spec.ConvSpec`) and their defaults,
shared by the functions that take ``(kernel, spec)`` or the keyword form."""


def spec_from_args(spec: ConvSpec | None, **fields: Any) -> ConvSpec:
    """The layer of a call made as ``f(kernel, spec)`` or ``f(kernel, padding=..., ...)``.

    Parameters
    ----------
    spec : ConvSpec or None
        The whole geometry; None builds it from ``fields``.
    **fields
        The keyword fields of :data:`SPEC_DEFAULTS` as the caller received them.

    Returns
    -------
    ConvSpec

    Raises
    ------
    TypeError
        If ``spec`` is neither None nor a ConvSpec, or if it comes with a keyword field that
        differs from its default (the two would describe two geometries).
    """
    unknown = sorted(set(fields) - set(SPEC_DEFAULTS))
    if unknown:
        raise TypeError(f"unknown layer fields {unknown}; accepted: {list(SPEC_DEFAULTS)}")
    if spec is None:
        return ConvSpec(**{**SPEC_DEFAULTS, **fields})
    spec = check_spec(spec)
    both = sorted(k for k, v in fields.items() if not _is_default(v, SPEC_DEFAULTS[k]))
    if both:
        raise TypeError(
            "pass either a ConvSpec or the keyword fields, not both: got a ConvSpec and "
            f"{', '.join(both)}"
        )
    return spec


def _is_default(value: Any, default: Any) -> bool:
    return type(value) is type(default) and value == default


def compute(
    method: str,
    kernel: Any,
    spec: ConvSpec | None = None,
    *,
    padding: str = "zeros",
    pad: Any = "same",
    input_size: Any = None,
    stride: Any = 1,
    dilation: Any = 1,
    groups: int = 1,
    **options: Any,
) -> Bound:
    """Run the registered ``method`` on ``(kernel, spec)``; refuses layers outside its domain.

    Parameters
    ----------
    method : str
        A registered name (:func:`methods`).
    kernel : array_like
        ``(c_out, c_in // groups, kh, kw)``.
    spec : ConvSpec, optional
        The layer. Alternatively pass its fields as keywords (``padding``, ``pad``,
        ``input_size``, ``stride``, ``dilation``, ``groups``, with the defaults of
        :class:`~specbound.spec.ConvSpec`), but not both.
    **options
        Passed to the method (e.g. ``n_iter``).

    Returns
    -------
    Bound

    References
    ----------
    * docs/theory/bounds.md, "The registry": each method's paper and the equation or
      theorem it implements (``Method.reference``).

    Examples
    --------
    >>> import numpy as np
    >>> from specbound import ConvSpec
    >>> from specbound.bounds import compute
    >>> spec = ConvSpec(padding="circular", input_size=(8, 8))
    >>> bound = compute("sedghi", np.ones((1, 1, 3, 3)), spec)
    >>> bound.kind, round(bound.value, 9)
    ('exact', 9.0)

    A method refuses a layer outside its domain:

    >>> compute("sedghi", np.ones((1, 1, 3, 3)), ConvSpec(padding="zeros", input_size=(8, 8)))
    Traceback (most recent call last):
    ...
    ValueError: ...

    The keyword form describes the same layer:

    >>> same = compute("sedghi", np.ones((1, 1, 3, 3)), padding="circular", input_size=(8, 8))
    >>> same.value == bound.value
    True
    """
    layer = spec_from_args(
        spec,
        padding=padding,
        pad=pad,
        input_size=input_size,
        stride=stride,
        dilation=dilation,
        groups=groups,
    )
    found = get_method(method)
    return found(kernel, layer, **options)


def methods() -> list[Method]:
    """Every registered method, in registration order.

    References
    ----------
    * docs/theory/bounds.md, "The registry"; the paper behind each entry is in its
      ``reference`` field (and in CITATION.cff).

    Examples
    --------
    >>> import specbound as sb
    >>> names = [m.name for m in sb.methods()]
    >>> "gram_circular" in names and "sedghi" in names
    True
    >>> sedghi = next(m for m in sb.methods() if m.name == "sedghi")
    >>> sedghi.kind, sedghi.paddings
    ('exact', ('circular',))
    >>> sedghi.reference  # doctest: +ELLIPSIS
    'Sedghi, Gupta & Long, The Singular Values of Convolutional Layers, ICLR 2019, Thm. 6 ...'
    """
    return list(REGISTRY.values())
