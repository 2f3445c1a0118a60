"""Results of an audit: :class:`LayerBound` (one operator), :class:`AuditReport` (the whole
network) and their markdown rendering (:func:`report_markdown`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..certify import Certificate


@dataclass
class LayerBound:
    """The bound of one operator of the traced graph.

    Attributes
    ----------
    name : str
        Module path (``layer1.0.conv1``), ``a+b`` for a folded conv + BatchNorm, or the graph
        node's name for a functional operator.
    type : str
        Module class or function name.
    input_shape, output_shape : tuple of int
        Without the batch dimension, as traced.
    lower, upper : float or None, float
        ``lower <= Lip <= upper`` (rigorous); ``lower`` is None where no lower bound is given.
    kind : {"certified", "exact", "bound"}
        ``certified``: a :func:`specbound.certify` bracket (or a rigorous bracket of a small
        matrix); ``exact``: a closed form rounded outwards; ``bound``: an upper bound only.

    References
    ----------
    * docs/certify.md, section 6 "Audit rules beyond convolutions" and lemma L-TAP (the
      budget fallback); each layer's certificate is :func:`specbound.certify`'s.
    * C. Szegedy et al., "Intriguing properties of neural networks", ICLR 2014, Sec. 4.3
      (the product of per-layer norms bounds the network's Lipschitz constant).

    Examples
    --------
    >>> import torch
    >>> import specbound as sb
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(
    ...     torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(),
    ...     torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 4, 3))
    >>> report = sb.audit(model, (1, 4, 4), progress=False)
    >>> conv = report.layers[0]
    >>> isinstance(conv, sb.LayerBound), conv.type, conv.upper_method
    (True, 'Conv2d', 'dense_verified_core')
    >>> conv.lower <= conv.upper
    True
    """

    name: str
    type: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    lower: float | None
    upper: float
    kind: str
    upper_method: str
    lower_method: str
    elapsed_s: float = 0.0
    converged: bool = True
    linear: bool = True
    notes: list[str] = field(default_factory=list)
    certificate: Certificate | None = field(default=None, repr=False)
    claim: str = ""
    padding: str = ""

    @property
    def claim_status(self) -> str:
        """For a layer of a library that presents it as 1-Lipschitz (``claim`` names the
        library): ``"confirmed"`` (certified ``upper <= 1``), ``"refuted"`` (certified
        ``lower > 1``) or ``"open"``; ``""`` for other layers."""
        if not self.claim:
            return ""
        if self.upper <= 1.0:
            return "confirmed"
        if self.lower is not None and self.lower > 1.0:
            return "refuted"
        return "open"

    @property
    def rel_gap(self) -> float | None:
        if self.lower is None:
            return None
        return 0.0 if self.upper <= 0 else max(0.0, (self.upper - self.lower) / self.upper)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "lower": self.lower,
            "upper": self.upper,
            "rel_gap": self.rel_gap,
            "kind": self.kind,
            "upper_method": self.upper_method,
            "lower_method": self.lower_method,
            "elapsed_s": self.elapsed_s,
            "converged": self.converged,
            "linear": self.linear,
            "notes": list(self.notes),
            "claim": self.claim,
            "claim_status": self.claim_status,
            "padding": self.padding,
            "certificate": None if self.certificate is None else self.certificate.to_dict(),
        }


@dataclass
class AuditReport:
    """Result of :func:`audit`.

    Attributes
    ----------
    upper : float
        Rigorous upper bound on the network's L2 Lipschitz constant, composed over the graph.
    lower : float or None
        Rigorous lower bound, given only for an affine network (``lower_note`` says why not).
    layers : list of LayerBound
        One row per operator with a Lipschitz factor, in graph order.
    composition : dict
        Counts of the composition nodes: ``sums`` (residual additions), ``concatenations``.
    local_estimate : float or None
        The largest Jacobian norm found by float64 power iteration at 3 random inputs: a local
        lower *estimate* of the constant (not a certificate), shown next to ``upper``.
    partial : bool
        The run stopped early (``stop_reason``: a spent whole-run budget or an interrupt):
        rows not certified carry a rigorous but wider bound (or ``inf``), so ``upper`` is
        still an upper bound, only a looser one.
    rtol_default : bool
        ``rtol`` was not given and the audit's default was used.
    budget : dict
        ``max_seconds`` and ``max_seconds_per_layer`` the run used.

    References
    ----------
    * docs/certify.md, section 6 "Audit rules beyond convolutions" and lemma L-TAP (the
      budget fallback); each layer's certificate is :func:`specbound.certify`'s.
    * C. Szegedy et al., "Intriguing properties of neural networks", ICLR 2014, Sec. 4.3
      (the product of per-layer norms bounds the network's Lipschitz constant).

    Examples
    --------
    >>> import torch
    >>> import specbound as sb
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(
    ...     torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(),
    ...     torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 4, 3))
    >>> report = sb.audit(model, (1, 4, 4), progress=False)
    >>> isinstance(report, sb.AuditReport), report.input_shape
    (True, (1, 4, 4))
    >>> print(report.to_markdown().splitlines()[0])
    # specbound audit: Sequential, input 1x4x4
    """

    model: str
    input_shape: tuple[int, ...]
    upper: float
    lower: float | None
    lower_method: str
    lower_note: str
    linear: bool
    layers: list[LayerBound]
    composition: dict[str, int]
    rtol: float
    device: str
    elapsed_s: float
    frontend: str
    notes: list[str] = field(default_factory=list)
    local_estimate: float | None = None
    partial: bool = False
    stop_reason: str = ""
    rtol_default: bool = False
    budget: dict[str, float | None] = field(default_factory=dict)

    @property
    def converged(self) -> bool:
        """True when every certified layer reached ``rtol``."""
        return all(layer.converged for layer in self.layers)

    def __float__(self) -> float:
        return float(self.upper)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "upper": self.upper,
            "lower": self.lower,
            "lower_method": self.lower_method,
            "lower_note": self.lower_note,
            "linear": self.linear,
            "converged": self.converged,
            "rtol": self.rtol,
            "rtol_default": self.rtol_default,
            "partial": self.partial,
            "stop_reason": self.stop_reason,
            "budget": dict(self.budget),
            "device": self.device,
            "elapsed_s": self.elapsed_s,
            "frontend": self.frontend,
            "composition": dict(self.composition),
            "layers": [layer.to_dict() for layer in self.layers],
            "notes": list(self.notes),
            "local_estimate": self.local_estimate,
        }

    def to_json(self, **kwargs: Any) -> str:
        """``json.dumps(self.to_dict())`` (``kwargs`` go to :func:`json.dumps`)."""
        kwargs.setdefault("indent", 2)
        return json.dumps(self.to_dict(), **kwargs)

    def to_markdown(self) -> str:
        """A Markdown summary and per-layer table (:func:`report_markdown`)."""
        return report_markdown(self.to_dict())

    def __str__(self) -> str:
        return self.to_markdown()


def report_markdown(report: dict[str, Any]) -> str:
    """Markdown for an :meth:`AuditReport.to_dict` result (also what ``specbound audit``
    prints)."""
    shape = "x".join(map(str, report["input_shape"]))
    layers = report["layers"]
    out = [f"# specbound audit: {report['model']}, input {shape}", ""]
    out.append(
        f"**L2 Lipschitz upper bound: {report['upper']:.6g}** (guaranteed; composed over "
        "the traced graph)"
    )
    if report.get("partial"):
        out += [
            "",
            f"**PARTIAL** — {report.get('stop_reason', 'stopped early')}: layers not certified "
            "carry a rigorous but wider bound, so the network bound holds but is looser",
        ]
    out.append("")
    if report["lower"] is not None:
        out.append(f"Lower bound: {report['lower']:.6g} ({report['lower_method']})")
    else:
        out.append(f"Lower bound: none — {report['lower_note']}")
    if report.get("local_estimate") is not None:
        out.append(
            f"Local lower estimate (not a certificate): {report['local_estimate']:.6g}, the "
            "largest Jacobian norm found by float64 power iteration at up to 3 random inputs; the "
            "true Lipschitz constant lies between it and the upper bound"
        )
    n_cert = sum(row["kind"] == "certified" for row in layers)
    default = " (default)" if report.get("rtol_default") else ""
    out += [
        "",
        f"rtol {report['rtol']:g}{default} · device {report['device']} · {len(layers)} layers "
        f"({n_cert} certified) · {report['elapsed_s']:.2f} s · "
        + ("all converged" if report["converged"] else "**some layers did not converge**"),
        "",
        "| # | layer | type | input | lower | upper | method | time (s) | converged |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, row in enumerate(layers, 1):
        low = "—" if row["lower"] is None else f"{row['lower']:.6g}"
        size = "x".join(map(str, row["input_shape"]))
        method = row["upper_method"].replace("|", "\\|")
        out.append(
            f"| {i} | `{row['name']}` | {row['type']} | {size} | {low} | {row['upper']:.6g} | "
            f"{method} | {row['elapsed_s']:.3f} | {'yes' if row['converged'] else 'NO'} |"
        )
    comp = report["composition"]
    out += [
        "",
        f"Composition: sums {comp.get('sums', 0)} (bound: sum of the branch bounds), "
        f"concatenations {comp.get('concatenations', 0)} (bound: root-sum-square of the "
        "branch bounds). Traced with " + report["frontend"] + ".",
    ]
    claims = [row for row in layers if row.get("claim")]
    if claims:
        out += ["", "1-Lipschitz claims of peer-library layers (certified):", ""]
        for row in claims:
            status = row["claim_status"]
            low = "—" if row["lower"] is None else f"{row['lower']:.10g}"
            why = {
                "confirmed": f"upper {row['upper']:.10g} <= 1",
                "refuted": f"certified lower {low} > 1",
                "open": f"lower {low} <= 1 < upper {row['upper']:.10g}: undecided at this rtol",
            }[status]
            pad = f", padding '{row['padding']}'" if row.get("padding") else ""
            out.append(
                f"- `{row['name']}` ({row['type']}, {row['claim']}{pad}): **{status}** ({why})"
            )
    if report["notes"]:
        out += [""] + [f"- {note}" for note in report["notes"]]
    return "\n".join(out) + "\n"
