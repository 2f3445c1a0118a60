"""``certify``: a rigorous bracket ``lower <= ||A||_2 <= upper`` for one convolution layer.

The bracket holds for the real-number operator defined by the kernel's values exactly as
given, including every rounding error of its own computation (see
:mod:`specbound.rigorous` and ``docs/certify.md``). The strategy depends on the layer:

==========================================  =================================================
layer                                       strategy
==========================================  =================================================
circular, stride dividing the size          exact per frequency (wrapped polyphase kernel),
                                            the verified core (L10) on the frequencies that
                                            can still exceed the lower bound; plane-wave
                                            witness
small enough for a dense Gram (any mode)    dense matrix, the verified core (L10)
zeros, given size                           circular embedding ``N >= n + P`` (upper) and
                                            Lanczos on the true operator (lower); if that
                                            misses ``rtol``, a verified block-banded
                                            Cholesky test of ``mu^2 I - A^T A >= 0``
reflect / replicate / other circular        padding-operator norm times the unpadded bound,
                                            then the verified Cholesky test on the true
                                            operator; Lanczos witness
zeros or circular, ``input_size=None``      the symbol supremum ``S``: Bernstein cells refined
                                            around the maximisers
``groups > 1``                              the maximum over the distinct groups (L18):
                                            batched where the route is (circulant, every
                                            size), else group by group from the highest
                                            embedding cap (:mod:`.rigorous._groups`)
==========================================  =================================================

The routes are written once for any number of spatial axes: 2-D and 3-D layers take them as
they are (the banded Cholesky step is 2-D only), a 1-D layer as the one-row 2-D layer, and a
transposed layer as its adjoint forward convolution (docs/certify.md L12, L13).
"""

from __future__ import annotations

import functools
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .bounds.base import spec_from_args
from .operators.conv_layer import CONV_MODULES, ConvLayer, check_signal_size
from .rigorous._groups import grouped_route
from .rigorous._routes import (
    Bracket,
    Context,
    check_every_size_pads,
    circulant_route,
    dense_fits,
    every_size_route,
    padded_route,
    support_layer,
    symbol_sup_route,
    zero_given_route,
)
from .rigorous.bracket import relative_gap
from .rigorous.fpenv import gradual_underflow_guard
from .rigorous.rounding import prescale, scale_back_outward
from .rigorous.witness import time_budget
from .spec import (
    ConvSpec,
    IntOrTuple,
    KernelLike,
    PaddingMode,
    PadSpec,
    as_kernel,
    check_real,
    resolve_device,
)

GUARANTEES = ("deterministic", "probabilistic")


class VerificationError(AssertionError):
    """:meth:`Certificate.verify` found a number that does not hold."""


@dataclass
class Certificate:
    """A rigorous bracket ``lower <= ||A||_2 <= upper`` for one layer.

    Attributes
    ----------
    upper, lower : float
        Rigorous bounds, rounding included. ``float(cert) == cert.upper``. ``upper`` is
        ``inf`` when the norm overflows float64 (then ``converged`` is False).
    converged : bool
        Whether ``rel_gap <= rtol`` was reached with a finite ``upper``; ``notes`` say why
        not.
    upper_method, lower_method : str
        The routes that produced each end.
    witness : dict or None
        ``{"input": x}`` with ``x`` of shape ``(c_in, H, W)`` and ``||A x|| >= lower ||x||``
        for a given size; for ``input_size=None`` the symbol witness ``{"frequency",
        "group", "vector", "dilation"}`` with ``||M(w) v|| >= lower ||v||`` for the symbol at
        that dilation (stride 1 evaluates the undilated symbol, which has the same values).
    spec : ConvSpec
    kernel : numpy.ndarray (float64, as given)

    References
    ----------
    * docs/certify.md: what the two ends mean and the lemmas behind each route
      (``upper_method``, ``lower_method``).

    Examples
    --------
    >>> import numpy as np
    >>> import specbound as sb
    >>> cert = sb.certify(np.ones((1, 1, 3, 3)), padding="zeros", input_size=(4, 4))
    >>> cert  # doctest: +ELLIPSIS
    Certificate(upper=6.85410196625..., lower=6.85410196624..., ..., converged=True, ...)
    >>> float(cert) == cert.upper
    True
    >>> cert.upper_method, cert.lower_method
    ('dense_verified_core', 'dense_witness')
    >>> cert.witness["input"].shape
    (1, 4, 4)
    >>> cert.verify()
    True
    >>> sorted(cert.to_dict())[:4]
    ['converged', 'device', 'elapsed_s', 'guarantee']
    """

    upper: float
    lower: float
    converged: bool
    rtol: float
    upper_method: str
    lower_method: str
    witness: dict[str, Any] | None
    spec: ConvSpec
    kernel: np.ndarray = field(repr=False)
    guarantee: str = "deterministic"
    device: str = "cpu"
    elapsed_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def rel_gap(self) -> float:
        """``(upper - lower) / upper`` (0 when both vanish)."""
        return relative_gap(self.upper, self.lower)

    def __float__(self) -> float:
        return float(self.upper)

    def __repr__(self) -> str:
        """One line: the bracket, the gap, the methods and the layer; the witness is described
        by its keys and shapes, not printed (it can hold a whole input image)."""
        witness = None
        if self.witness is not None:
            witness = {
                k: f"array{tuple(v.shape)}" if hasattr(v, "shape") else v
                for k, v in self.witness.items()
            }
        return (
            f"Certificate(upper={self.upper!r}, lower={self.lower!r}, "
            f"rel_gap={self.rel_gap:.3g}, converged={self.converged}, rtol={self.rtol!r}, "
            f"upper_method={self.upper_method!r}, lower_method={self.lower_method!r}, "
            f"guarantee={self.guarantee!r}, witness={witness}, spec={self.spec!r})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the witness input is omitted; its shape is given).

        Standard JSON only: a number that is not finite (``upper = inf`` when the norm
        overflows float64; see ``notes``) is written as ``None`` (JSON ``null``), never as
        ``Infinity`` or ``NaN``.
        """
        witness = None
        if self.witness is not None:
            witness = {
                k: (list(v.shape) if isinstance(v, np.ndarray) else _json_value(v))
                for k, v in self.witness.items()
            }
            if "input" in witness:
                witness["input_shape"] = witness.pop("input")
            if "vector" in witness:
                witness["vector_shape"] = witness.pop("vector")
        return {
            "upper": _json_number(self.upper),
            "lower": _json_number(self.lower),
            "rel_gap": _json_number(self.rel_gap),
            "rtol": _json_number(self.rtol),
            "converged": self.converged,
            "upper_method": self.upper_method,
            "lower_method": self.lower_method,
            "guarantee": self.guarantee,
            "kernel_shape": list(self.kernel.shape),
            "spec": self.spec.to_dict(),
            "device": self.device,
            "elapsed_s": _json_number(self.elapsed_s),
            "witness": witness,
            "notes": list(self.notes),
        }

    def verify(self, *, rtol: float = 1e-9) -> bool:
        """Re-check the certificate by independent float64 routes.

        * the witness: ``||A x|| / ||x||`` by the matrix-free operator (or ``||M(w) v||`` by
          :func:`specbound.operators.symbol`, at the dilation the witness names) must reach
          ``lower`` up to ``rtol``;
        * when an exact route fits (:func:`specbound.operators.exact_norm`), the exact norm
          must lie in ``[lower, upper]`` up to ``rtol``.

        Everything is recomputed for the kernel scaled by ``2^j`` (``max|K|`` in ``[1, 2)``)
        against the bounds scaled by the same power of two, so kernels at ``1e-300`` or
        ``1e300`` neither underflow nor overflow here.

        Returns True, or raises :class:`VerificationError` naming what failed.
        """
        from .operators import conv_operator, exact_norm, symbol
        from .spec import TooLargeError

        if not self.lower <= self.upper:
            raise VerificationError(f"lower {self.lower} > upper {self.upper}")
        kernel, j, _ = prescale(self.kernel)
        # the bounds at the kernel's scale, outward (j -> -j: times 2^j)
        lower = scale_back_outward(self.lower, -j, upward=False)
        upper = scale_back_outward(self.upper, -j, upward=True)
        w = self.witness or {}
        if "input" in w:
            x = w["input"].ravel()
            x = x / np.abs(x).max() if np.any(x) else x
            x_norm = np.linalg.norm(x)
            if x_norm == 0:
                ratio = 0.0  # a zero witness proves nothing beyond lower = 0
            else:
                ratio = np.linalg.norm(conv_operator(kernel, self.spec).matvec(x)) / x_norm
            if ratio < lower * (1 - rtol):
                raise VerificationError(
                    f"witness gives {_back(ratio, j)}, below lower {self.lower}"
                )
        elif "frequency" in w:
            m = (
                symbol(
                    kernel,
                    np.array(w["frequency"]),
                    dilation=tuple(w.get("dilation", self.spec.dilation)),
                    groups=self.spec.groups,
                )
                if all(s == 1 for s in self.spec.stride)
                else None
            )
            if m is not None:
                g, c_out = self.spec.groups, kernel.shape[0]
                rows = slice(w["group"] * c_out // g, (w["group"] + 1) * c_out // g)
                cols = slice(w["group"] * kernel.shape[1], (w["group"] + 1) * kernel.shape[1])
                v = np.asarray(w["vector"])
                v = v / np.abs(v).max() if np.any(v) else v
                v_norm = np.linalg.norm(v)
                ratio = np.linalg.norm(m[rows, cols] @ v) / v_norm if v_norm > 0 else 0.0
                if ratio < lower * (1 - rtol):
                    raise VerificationError(
                        f"symbol witness gives {_back(ratio, j)} < {self.lower}"
                    )
        if self.spec.input_size is not None:
            try:
                exact = exact_norm(kernel, self.spec)
            except TooLargeError:
                return True
            if exact > upper * (1 + rtol) or exact < lower * (1 - rtol):
                raise VerificationError(
                    f"exact norm {_back(exact, j)} outside [{self.lower}, {self.upper}]"
                )
        return True


def _back(value: float, j: int) -> float:
    """A value computed at the kernel's scale ``2^j``, at the user's scale (for messages)."""
    return scale_back_outward(value, j, upward=False)


def _json_number(value: float) -> float | None:
    """A float for standard JSON: ``None`` when it is not finite."""
    value = float(value)
    return value if math.isfinite(value) else None


def _json_value(value: Any) -> Any:
    if isinstance(value, float):
        return _json_number(value)
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def _spec_fields(kernel: Any, spec: ConvSpec, fields: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``certify(kernel, spec)``: the spec's own, refused alongside keyword
    fields or a module (each of which carries a geometry of its own)."""
    spec_from_args(spec, **{k: v for k, v in fields.items() if k != "padding"})
    if isinstance(kernel, torch.nn.Module):
        raise TypeError(
            "a module carries its own geometry: pass certify(module, input_size=...) without "
            "a ConvSpec, or certify(module.weight, spec)"
        )
    return {**spec.to_dict(), "input_size": spec.input_size}


def _kernel_and_spec(kernel: Any, spec_fields: dict[str, Any]) -> tuple[Any, ConvSpec]:
    if isinstance(kernel, torch.nn.Linear):
        # a Linear layer is the 1x1 convolution at input size 1x1 (docs/certify.md L11)
        if spec_fields["input_size"] not in (None, (1, 1), [1, 1]):
            raise ValueError(
                "input_size must be None or (1, 1) for a torch.nn.Linear (it acts on vectors), "
                f"got {spec_fields['input_size']!r}"
            )
        # the weight is converted to float64 once, by ConvLayer (memory: one copy)
        return kernel.weight.detach()[:, :, None, None], ConvSpec("zeros", 0, (1, 1))
    if isinstance(kernel, CONV_MODULES):
        spec = ConvSpec.from_module(kernel, input_size=spec_fields["input_size"])
        return as_kernel(kernel.weight.detach(), spec.ndim), spec
    if isinstance(kernel, torch.nn.Module):
        raise TypeError(_unsupported_module(kernel))
    spec = ConvSpec(**spec_fields)
    return as_kernel(kernel, spec.ndim), spec


def _certifiable(layer: ConvLayer) -> tuple[ConvLayer | None, list[str]]:
    """The forward layer with the same norm that the rigorous routes certify (None for the
    zero map).

    A transposed layer is the adjoint of its forward convolution (docs/certify.md L12: same
    norm, ``||A^T|| = ||A||``; with ``output_padding >= stride`` the cropped forward
    convolution, and the zero map when a cropped size is below 1); with ``input_size=None``
    the forward convolution's every-size bracket holds for it at any stride (L13). A 1-D
    layer is the one-row 2-D layer with the same matrix; 2-D and 3-D layers are certified
    as they are.
    """
    notes: list[str] = []
    if layer.transposed:
        if layer.is_zero_map:
            return None, [
                "transposed convolution is the zero map at this size (docs/certify.md L12): "
                "no output reads any input"
            ]
        cropped = any(q >= s for q, s in zip(layer.spec.output_padding, layer.stride, strict=False))
        layer = layer.forward_layer()
        notes.append(
            "transposed convolution certified on its adjoint, the forward convolution with "
            "the same weight (||A^T||_2 = ||A||_2); spec and kernel are the adjoint's"
        )
        if cropped:
            notes.append(
                "output_padding >= stride: the adjoint is the forward convolution with the "
                "high pads reduced by output_padding, on the cropped size (docs/certify.md L12)"
            )
        if layer.spec.input_size is None and max(layer.stride) > 1:
            notes.append(
                "every size: the forward convolution's every-size bracket holds for the "
                "transposed layer at every size (docs/certify.md L13)"
            )
    if layer.d == 1:
        layer = layer.as_2d()
    return layer, notes


def _zero_map_certificate(
    layer: ConvLayer, rtol: float, device: torch.device, start: float, notes: list[str]
) -> Certificate:
    """The certificate ``0 <= ||A|| <= 0`` of a transposed layer that is the zero map."""
    return Certificate(
        upper=0.0,
        lower=0.0,
        converged=True,
        rtol=rtol,
        upper_method="zero_map",
        lower_method="zero_map",
        witness=None,
        spec=layer.spec,
        kernel=layer.kernel,
        device=str(device),
        elapsed_s=time.perf_counter() - start,
        notes=notes,
    )


def _unsupported_module(module: torch.nn.Module) -> str:
    name = type(module).__name__
    return (
        "kernel must be an array or torch.Tensor of shape (c_out, c_in // groups, k...), a "
        "torch.nn.Conv1d/2d/3d, ConvTranspose1d/2d/3d or a torch.nn.Linear; got a " + name
    )


def _route(layer: ConvLayer, ctx: Context) -> Bracket:
    if layer.groups > 1 and layer.d == 2:  # block diagonal after permuting channels (L18)
        batched = layer.spec.input_size is None or layer.is_circulant
        return grouped_route(layer, ctx, _layer_route, batched=batched)
    return _layer_route(layer, ctx)


def _layer_route(layer: ConvLayer, ctx: Context) -> Bracket:
    spec = layer.spec
    if spec.input_size is None:
        if all(s == 1 for s in spec.stride):
            return every_size_route(layer, ctx)
        if spec.padding == "circular":
            # every circular size: rows of stride-1 circulants, norms <= S of the
            # stride-1 symbol; the strided symbol's sup is attained along sizes s*m
            up_b = symbol_sup_route(support_layer(layer), ctx)
            low_b = symbol_sup_route(layer, ctx)
            return Bracket(
                up_b.upper,
                low_b.lower,
                up_b.upper_method,
                low_b.lower_method,
                low_b.witness,
                [*up_b.notes, "upper from the stride-1 symbol"],
            )
        return symbol_sup_route(layer, ctx)
    if spec.padding == "circular" and layer.is_circulant:
        return circulant_route(layer, ctx)
    if spec.padding == "zeros":
        return zero_given_route(layer, ctx)
    return padded_route(layer, ctx)


def _with_gradual_underflow(func: Any) -> Any:
    """Run ``certify`` with gradual underflow (:mod:`specbound.rigorous.fpenv`): a
    flush-to-zero setting of the thread is switched off for the call and restored after it
    (the certificate's notes say so); refused if it cannot be switched off."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Certificate:
        with gradual_underflow_guard() as switched:
            cert = func(*args, **kwargs)
        if switched:
            cert.notes.append(
                "flush-to-zero (torch.set_flush_denormal(True)) was switched off during "
                "certification and restored afterwards (gradual underflow is assumed)"
            )
        return cert

    return wrapper


@_with_gradual_underflow
def certify(
    kernel: KernelLike | torch.nn.Module,
    padding: PaddingMode | ConvSpec = "zeros",
    *,
    input_size: IntOrTuple | None = None,
    pad: PadSpec = "same",
    stride: IntOrTuple = 1,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    rtol: float = 1e-3,
    guarantee: str = "deterministic",
    delta: float = 1e-9,
    device: str | torch.device | None = None,
    max_seconds: float | None = None,
) -> Certificate:
    """Certify ``lower <= ||A||_2 <= upper`` for a convolution layer.

    Parameters
    ----------
    kernel : array_like, torch.Tensor, a torch.nn convolution or torch.nn.Linear
        ``(c_out, c_in // groups, kh, kw)`` (or ``(c_out, c_in // groups, k)`` for a 1-D
        spec, ``(c_out, c_in // groups, kd, kh, kw)`` for a 3-D one); a
        ``ConvTranspose1d/2d/3d`` (or a transposed spec) is certified on its adjoint, the
        forward convolution with the same weight (equal norm; a note says so; with
        ``output_padding >= stride`` the cropped forward convolution of docs/certify.md
        L12, and ``0`` when that is the zero map). A ``Conv1d/2d/3d`` supplies padding mode,
        pad, stride, dilation and groups itself (the other arguments are then ignored,
        except ``input_size``); a ``Conv1d`` is certified as the one-row ``Conv2d`` with
        kernel ``(c_out, c_in // groups, 1, k)`` on a ``1 x n`` input (``input_size`` is the
        length ``n``, or None); a ``Linear`` is certified as the 1x1 convolution at input
        size ``1 x 1`` (its weight matrix's norm). Other modules are refused with a
        ``TypeError``.
    padding, pad, input_size, stride, dilation, groups
        As :class:`~specbound.spec.ConvSpec`. ``input_size=None`` certifies every input size
        (zeros and circular padding; transposed layers at any stride, L13). ``padding`` may
        instead be a whole :class:`~specbound.spec.ConvSpec` (``certify(kernel, spec)``);
        the other geometry fields must then be left at their defaults.
    rtol : float
        Target relative gap ``(upper - lower) / upper``; ``converged`` says if it was met.
    guarantee : {"deterministic", "probabilistic"}
        With ``"probabilistic"`` (finite input size), when the deterministic bracket misses
        ``rtol`` (reflect/replicate padding, zero padding at small sizes), the upper end may
        come from Lanczos with a random start, inflated so that it holds with probability
        ``>= 1 - delta`` (``upper_method`` and ``notes`` say so). ``lower`` is always
        deterministic.
    delta : float
        Failure probability of a probabilistic upper end.
    device : str or torch.device, optional
        Where the heavy float64 work runs (default CPU). TF32 is never used (float64 only).
    max_seconds : float, optional
        Stop refining after about this long; the bracket stays rigorous, ``converged`` may be
        False.

    Returns
    -------
    Certificate

    References
    ----------
    * docs/certify.md, the lemmas L1-L18 and the strategy per layer (section 3) that this
      function implements; docs/proofs.md, theorems G1 (circular embedding) and G5
      (Bernstein cells).
    * H. Sedghi, V. Gupta and P. M. Long, "The Singular Values of Convolutional Layers",
      ICLR 2019, Thm. 6 (the circular route, per frequency).
    * B. Delattre, Q. Barthélemy and A. Allauzen, "Spectral Norm of Convolutional Layers
      with Circular and Zero Paddings", arXiv:2402.00240, 2024 (zero padding by circular
      embedding).
    * S. M. Rump, "Verification of Positive Definiteness", BIT Numerical Mathematics 46,
      2006 (the verified Cholesky test, lemma L9); N. J. Higham, "Accuracy and Stability of
      Numerical Algorithms", 2nd ed., SIAM 2002, Thm. 10.3.

    Examples
    --------
    A 3x3 kernel of ones: at every input size with zero padding the norm is the symbol's
    supremum, 9, reached at frequency 0.

    >>> import numpy as np
    >>> import specbound as sb
    >>> kernel = np.ones((1, 1, 3, 3))
    >>> cert = sb.certify(kernel, padding="circular", input_size=(8, 8))
    >>> cert.lower <= 9.0 <= cert.upper, cert.converged
    (True, True)
    >>> cert = sb.certify(kernel, padding="zeros", input_size=(4, 4))
    >>> round(cert.upper, 6), cert.converged
    (6.854102, True)
    >>> cert = sb.certify(kernel)  # zeros, every input size
    >>> cert.lower <= 9.0 <= cert.upper, cert.rel_gap <= 1e-3
    (True, True)

    A ``torch.nn.Conv2d`` supplies its own padding, stride, dilation and groups:

    >>> import torch
    >>> conv = torch.nn.Conv2d(2, 3, 3, padding=1, bias=False)
    >>> cert = sb.certify(conv, input_size=(6, 6))
    >>> cert.lower <= cert.upper
    True
    """
    start = time.perf_counter()
    # argument validation, before any heavy work (issue 12, class 10)
    if not isinstance(guarantee, str) or guarantee not in GUARANTEES:
        raise ValueError(f"guarantee must be one of {GUARANTEES}, got {guarantee!r}")
    rtol = check_real(rtol, "rtol", low=0.0, high=1.0)
    delta = check_real(delta, "delta", low=0.0, high=1.0)
    if max_seconds is not None:
        max_seconds = check_real(max_seconds, "max_seconds", low=0.0, open_high=False)
    dev = resolve_device(device)
    fields = {
        "padding": padding,
        "pad": pad,
        "input_size": input_size,
        "stride": stride,
        "dilation": dilation,
        "groups": groups,
    }
    if isinstance(padding, ConvSpec):
        fields = _spec_fields(kernel, padding, fields)
    k, spec = _kernel_and_spec(kernel, fields)
    given, geometry_notes = _certifiable(ConvLayer(k, spec))
    if given is None:
        return _zero_map_certificate(ConvLayer(k, spec), float(rtol), dev, start, geometry_notes)
    layer = given
    spec = layer.spec
    del k
    check_signal_size(layer)
    if spec.input_size is None:  # refused whatever the kernel's values, zero included
        if spec.padding not in ("zeros", "circular"):
            raise ValueError(
                f"padding={spec.padding!r} with input_size=None cannot be certified: the "
                "padding operator's norm depends on the size; pass input_size="
                + ("(D, H, W)" if layer.d == 3 else "(H, W)")
            )
        check_every_size_pads(layer)
    if _pointwise(layer):
        cert = _pointwise_certificate(layer, float(rtol), dev, start)
        cert.notes[0:0] = geometry_notes
        return cert
    scaled, j, kerr = prescale(layer.kernel)
    ctx = Context(
        rtol=float(rtol),
        device=dev,
        deadline=None if max_seconds is None else start + max_seconds,
        kernel_error=kerr,
    )
    if not scaled.any():
        result = Bracket(
            0.0,
            0.0,
            "zero_kernel",
            "zero_kernel",
            {
                "input": np.ones((layer.c_in, *spec.input_size))
                / math.sqrt(layer.c_in * math.prod(spec.input_size))
            }
            if spec.input_size
            else None,
        )
    else:
        with time_budget(ctx.deadline):  # Lanczos witnesses stop at max_seconds too
            result = _route(layer.with_kernel(scaled), ctx)
    upper = scale_back_outward(result.upper, j, upward=True)
    lower = scale_back_outward(result.lower, j, upward=False)
    lower = lower if lower <= upper else upper  # (NaN-free after scale_back_outward)
    notes = [*geometry_notes, *result.notes]
    upper_method = result.upper_method
    if (
        guarantee == "probabilistic"
        and spec.input_size is not None
        and (relative_gap(upper, lower) > rtol)
    ):
        upper, upper_method = _probabilistic_upper(
            layer, upper, lower, rtol, delta, dev, upper_method, notes, ctx.deadline
        )
    gap = relative_gap(upper, lower)
    converged = gap <= rtol and math.isfinite(upper)
    if not math.isfinite(upper):
        notes.append(
            "not a finite certificate: the upper bound overflows float64 (the norm may exceed "
            f"{sys.float_info.max:.6g}); lower is still a rigorous bound"
        )
    elif not converged:
        notes.append(f"rel_gap {gap:.3g} above rtol {rtol:g}: " + _advice(layer))
    return Certificate(
        upper=upper,
        lower=lower,
        converged=converged,
        rtol=float(rtol),
        upper_method=upper_method,
        lower_method=result.lower_method,
        witness=result.witness,
        spec=spec,
        kernel=layer.kernel,
        guarantee=guarantee,
        device=str(dev),
        elapsed_s=time.perf_counter() - start,
        notes=notes,
    )


def _pointwise(layer: ConvLayer) -> bool:
    """A 1x1 layer certified on its weight matrix (L11): at a given size any padding and
    stride; with every size, zeros or circular padding at stride 1."""
    spec = layer.spec
    if any(k != 1 for k in layer.kernel_size):
        return False
    if spec.input_size is not None:
        return True
    return spec.padding in ("zeros", "circular") and all(s == 1 for s in spec.stride)


def _pointwise_certificate(
    layer: ConvLayer, rtol: float, device: torch.device, start: float
) -> Certificate:
    from .rigorous.matrix import conv1x1_bracket

    upper, lower, method, witness, notes = conv1x1_bracket(layer, rtol, device)
    gap = relative_gap(upper, lower)
    converged = gap <= rtol
    if not converged:
        notes.append(
            f"rel_gap {gap:.3g} above rtol {rtol:g}: the weight's top singular value "
            "is (nearly) repeated; ask for a larger rtol"
        )
    return Certificate(
        upper=upper,
        lower=lower,
        converged=converged,
        rtol=rtol,
        upper_method=method,
        lower_method="weight_matrix_witness",
        witness=witness,
        spec=layer.spec,
        kernel=layer.kernel,
        device=str(device),
        elapsed_s=time.perf_counter() - start,
        notes=notes,
    )


def _probabilistic_upper(
    layer: ConvLayer,
    upper: float,
    lower: float,
    rtol: float,
    delta: float,
    device: torch.device,
    method: str,
    notes: list[str],
    deadline: float | None = None,
) -> tuple[float, str]:
    """Lanczos from a random start with the Kuczynski-Wozniakowski-type inflation
    (:func:`specbound.bounds.power.lanczos_probabilistic`): an upper bound that holds with
    probability ``>= 1 - delta`` over the start. Used only where it beats the deterministic
    one, and labelled."""
    from .bounds.power import lanczos_probabilistic

    seconds = None if deadline is None else deadline - time.perf_counter()
    if seconds is not None and seconds <= 0:
        notes.append("probabilistic upper skipped: max_seconds used up")
        return upper, method
    bound = lanczos_probabilistic(
        layer, delta=delta, rtol=max(rtol / 2, 1e-6), device=device, max_seconds=seconds
    )
    value = max(float(bound.value), lower)
    if value < upper:
        notes.append(
            f"upper holds with probability >= {1 - delta:g} (random Lanczos start; "
            f"deterministic upper was {upper:.10g} by {method})"
        )
        return value, f"lanczos_probabilistic(delta={delta:g})"
    return upper, method


def _advice(layer: ConvLayer) -> str:
    spec = layer.spec
    if spec.input_size is None:
        return "raise max_seconds, or certify at the input size the layer really has"
    if layer.d == 3 and not dense_fits(layer):
        return (
            "the verified Cholesky test that closes the gap of a 2-D layer is 2-D only; ask "
            "for a larger rtol, or guarantee='probabilistic'"
        )
    if spec.padding in ("zeros", "reflect", "replicate") and not dense_fits(layer):
        loose = (
            "the circular-embedding bound is loose at this size"
            if spec.padding == "zeros"
            else "the padding-operator factor is loose"
        )
        return (
            f"{loose} and the verified Cholesky test did not close the gap (the notes say "
            "why: raise max_seconds, or specbound.rigorous.cholesky.MAX_BAND_BYTES for a "
            "band above the memory limit), or ask for a larger rtol"
        )
    return "raise max_seconds"


__all__ = ["Certificate", "VerificationError", "certify"]
