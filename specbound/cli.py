"""Command line: ``specbound exact | certify | audit | methods``.

Every command takes ``--json`` for machine-readable output; errors are printed as
``specbound <command>: error: <message>`` with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .spec import PAD_WORDS, PADDING_MODES, ConvSpec

EXAMPLE_SPEC = {"padding": "zeros", "pad": "same", "input_size": (12, 12)}


def example_kernel() -> np.ndarray:
    """The bundled example: a fixed 8x8x3x3 Gaussian kernel scaled by 1/sqrt(fan-in)."""
    return np.random.default_rng(0).standard_normal((8, 8, 3, 3)) / np.sqrt(72.0)


def load_kernel(path: str, key: str | None = None) -> np.ndarray:
    """Load a kernel from ``.npy`` (no pickles) or ``.pt`` (``weights_only=True``)."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"kernel file {path!r} does not exist")
    if file.suffix == ".npy":
        try:
            return np.load(file, allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"cannot read {path!r} as a numeric .npy array: {err}") from None
    if file.suffix in (".pt", ".pth"):
        import torch

        try:
            obj = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for malformed files
            raise ValueError(f"cannot load {path!r} with weights_only=True: {err}") from None
        if isinstance(obj, dict):
            tensors = {k: v for k, v in obj.items() if getattr(v, "ndim", 0) == 4}
            if key is None and len(tensors) != 1:
                raise ValueError(
                    f"{path!r} holds a dict with {len(tensors)} 4-D tensors "
                    f"({sorted(tensors)[:8]}); choose one with --key"
                )
            name = key if key is not None else next(iter(tensors))
            if name not in obj:
                raise ValueError(f"--key {name!r} is not in {path!r}; keys: {sorted(obj)[:20]}")
            obj = obj[name]
        if not isinstance(obj, torch.Tensor):
            raise ValueError(f"{path!r} does not hold a tensor (got {type(obj).__name__})")
        return obj.detach().double().numpy()
    raise ValueError(f"kernel file must end in .npy, .pt or .pth, got {path!r}")


def _pad(text: str) -> Any:
    if text in PAD_WORDS:
        return text
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--pad takes {'/'.join(PAD_WORDS)}, an int, 'ph,pw' or 'left,right,top,bottom'; "
            f"got {text!r}"
        ) from None
    return parts[0] if len(parts) == 1 else tuple(parts)


def _pair_arg(values: list[int] | None) -> Any:
    if values is None:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def add_layer_arguments(parser: argparse.ArgumentParser) -> None:
    """The kernel source and the ConvSpec options shared by the layer commands."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "kernel", nargs="?", help="kernel file: .npy, or .pt/.pth (a tensor or a dict)"
    )
    src.add_argument("--example", action="store_true", help="use the bundled example kernel")
    parser.add_argument("--key", help="tensor name inside a .pt dict")
    parser.add_argument("--padding", choices=PADDING_MODES, help="padding mode (default zeros)")
    parser.add_argument(
        "--pad", type=_pad, help="same (default), valid, full, P, 'ph,pw' or 'l,r,t,b'"
    )
    parser.add_argument(
        "--input-size",
        type=int,
        nargs="+",
        metavar="N",
        help="H [W]; omit for every input size where the command allows it",
    )
    parser.add_argument("--stride", type=int, nargs="+", metavar="S", help="S or SH SW")
    parser.add_argument("--dilation", type=int, nargs="+", metavar="D", help="D or DH DW")
    parser.add_argument("--groups", type=int, help="groups (default 1)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def layer_from_args(args: argparse.Namespace) -> tuple[np.ndarray, ConvSpec]:
    kernel = example_kernel() if args.example else load_kernel(args.kernel, args.key)
    fields = dict(EXAMPLE_SPEC) if args.example else {}
    for name in ("padding", "pad", "groups"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    for name in ("input_size", "stride", "dilation"):
        value = getattr(args, name)
        if value is not None:
            if len(value) > 2:
                raise ValueError(f"--{name.replace('_', '-')} takes one or two integers")
            fields[name] = _pair_arg(value)
    spec = ConvSpec(**fields)
    spec.layer(kernel)  # validate now, before any work
    return kernel, spec


def cmd_exact(args: argparse.Namespace) -> dict[str, Any]:
    from .operators import exact_norm, exact_route

    kernel, spec = layer_from_args(args)
    start = time.perf_counter()
    route = exact_route(kernel, spec)
    value = exact_norm(kernel, spec)
    elapsed = time.perf_counter() - start
    return {
        "norm": value,
        "kind": "exact",
        "route": route,
        "kernel_shape": list(kernel.shape),
        "spec": spec.to_dict(),
        "elapsed_s": elapsed,
    }


def format_exact(result: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"exact spectral norm  {result['norm']:.15g}",
            f"route                {result['route']} (float64)",
            f"kernel               {tuple(result['kernel_shape'])}",
            f"layer                {_describe(result['spec'])}",
            f"time                 {result['elapsed_s'] * 1e3:.1f} ms",
        ]
    )


def cmd_certify(args: argparse.Namespace) -> dict[str, Any]:
    from .certify import certify

    kernel, spec = layer_from_args(args)
    cert = certify(
        kernel,
        spec.padding,
        input_size=spec.input_size,
        pad=spec.pad,
        stride=spec.stride,
        dilation=spec.dilation,
        groups=spec.groups,
        rtol=args.rtol,
        device=args.device,
        max_seconds=args.max_seconds,
    )
    return cert.to_dict()


def format_certify(result: dict[str, Any]) -> str:
    lines = [
        f"upper      {result['upper']:.15g}   ({result['upper_method']})",
        f"lower      {result['lower']:.15g}   ({result['lower_method']})",
        f"rel_gap    {result['rel_gap']:.3g}   (rtol {result['rtol']:g}, "
        f"{'converged' if result['converged'] else 'NOT converged'})",
        f"kernel     {tuple(result['kernel_shape'])}",
        f"layer      {_describe(result['spec'])}",
        f"device     {result['device']}",
        f"time       {result['elapsed_s'] * 1e3:.1f} ms",
    ]
    lines += [f"note       {n}" for n in result["notes"]]
    return "\n".join(lines)


def cmd_methods(args: argparse.Namespace) -> list[dict[str, Any]]:
    from .bounds import methods

    return [m.to_dict() for m in methods()]


def format_methods(rows: list[dict[str, Any]]) -> str:
    head = f"{'method':22} {'kind':9} {'paddings':36} {'input size':10} {'stride':6} {'diff':4}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['name']:22} {r['kind']:9} {','.join(r['paddings']):36} {r['input_size']:10} "
            f"{'yes' if r['stride'] else 'no':6} {'yes' if r['differentiable'] else 'no':4}"
        )
        lines.append(f"{'':22} {r['reference']}")
    return "\n".join(lines)


AUDIT_DEFAULT = "digits_cnn (bundled trained weights)"


def _torch_load_error(err: Exception) -> str:
    """The informative part of a torch.load / torch.jit.load error message."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error" in line:
            rest = line.split("WeightsUnpickler error:", 1)[-1].strip()
            detail = rest or (lines[i + 1] if i + 1 < len(lines) else "")
            return "not a plain tensor archive: " + detail.split(". ")[0]
    first = lines[0] if lines else type(err).__name__
    return first.split(". This is an internal miniz error")[0]


def load_model(path: str | None, arch: str | None) -> tuple[Any, tuple[int, ...] | None, str]:
    """The model ``specbound audit`` audits, its default input shape and a description.

    * no path, no ``--arch``: the bundled trained digits CNN;
    * no path, ``--arch NAME``: that architecture with random weights (``torch.manual_seed(0)``);
    * ``.safetensors`` + ``--arch``: a state dict read with the ``safetensors`` package;
    * another file + ``--arch``: a state dict read with ``torch.load(weights_only=True)`` (no
      pickled code runs; a pickled model object is refused);
    * another file without ``--arch``: a TorchScript archive (``torch.jit.load``).
    """
    import torch

    from . import models

    if path is None:
        if arch is None:
            return models.bundled_digits_cnn(), (1, 8, 8), AUDIT_DEFAULT
        spec = models.architecture(arch)
        torch.manual_seed(0)
        return models.build(arch), spec.input_shape, f"{arch} (random weights, seed 0)"
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"model file {path!r} does not exist")
    if file.suffix == ".safetensors":
        if arch is None:
            raise ValueError(
                f"{path!r} holds weights only: name the architecture with --arch "
                f"({', '.join(sorted(models.ARCHITECTURES))})"
            )
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise ValueError(
                "reading .safetensors files needs the safetensors package: pip install safetensors"
            ) from None
        try:
            state = load_file(str(file), device="cpu")
        except Exception as err:  # malformed headers raise several types
            raise ValueError(f"cannot read {path!r} as .safetensors: {err}") from None
        return (
            models.build(arch, state),
            models.architecture(arch).input_shape,
            f"{file.name} as {arch}",
        )
    if arch is not None:
        models.architecture(arch)  # an unknown name fails before reading the file
        try:
            obj = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for malformed/pickled files
            raise ValueError(
                f"cannot load {path!r} with torch.load(weights_only=True), which runs no "
                f"pickled code: {_torch_load_error(err)}. Save model.state_dict() instead of the "
                "model object, or export TorchScript (torch.jit.script(model).save(path)) and "
                "omit --arch"
            ) from None
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            for key in ("state_dict", "model_state_dict", "model"):
                if isinstance(obj.get(key), dict):
                    obj = obj[key]
                    break
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise ValueError(
                f"{path!r} does not hold a state dict (a dict of tensors); got {type(obj).__name__}"
            )
        return (
            models.build(arch, obj),
            models.architecture(arch).input_shape,
            f"{file.name} as {arch}",
        )
    try:
        module = torch.jit.load(str(file), map_location="cpu")
    except Exception as err:
        raise ValueError(
            f"{path!r} is not a TorchScript archive ({_torch_load_error(err)}); for a state "
            "dict or a .safetensors file pass --arch NAME "
            f"({', '.join(sorted(models.ARCHITECTURES))})"
        ) from None
    return module, None, f"{file.name} (TorchScript)"


def cmd_audit(args: argparse.Namespace) -> dict[str, Any]:
    from .audit import audit

    model, default_shape, description = load_model(args.model, args.arch)
    shape = tuple(args.input_shape) if args.input_shape is not None else default_shape
    if shape is None:
        raise ValueError(
            "--input-shape C H W is required for a TorchScript model "
            "(one sample's shape, without the batch dimension)"
        )
    if min(shape) < 1:
        raise ValueError(f"--input-shape takes positive integers, got {list(shape)}")
    per_layer = args.max_seconds_per_layer
    report = audit(
        model,
        shape,
        rtol=args.rtol,
        device=args.device,
        progress=False if args.no_progress else None,
        max_seconds=args.max_seconds,
        max_seconds_per_layer=None if per_layer == 0 else per_layer,
        on_layer=None if args.json else _AuditStream(),
    )
    result = report.to_dict()
    result["source"] = description
    return result


class _AuditStream:
    """``on_layer`` of ``specbound audit`` (text output): prints each row of the table as its
    layer finishes, before the whole report."""

    def __init__(self) -> None:
        self.i = 0

    def __call__(self, row: Any) -> None:
        if self.i == 0:
            print("layers as they finish (the full report follows):", flush=True)
        self.i += 1
        low = "—" if row.lower is None else f"{row.lower:.6g}"
        print(
            f"  {self.i}. {row.name} ({row.type}): [{low}, {row.upper:.6g}] "
            f"{row.elapsed_s:.2f} s{'' if row.converged else ' (not converged)'}",
            flush=True,
        )


def format_audit(result: dict[str, Any]) -> str:
    from .audit import report_markdown

    return f"model source: {result['source']}\n\n" + report_markdown(result)


def _describe(spec: dict[str, Any]) -> str:
    size = "every size" if spec["input_size"] is None else "x".join(map(str, spec["input_size"]))
    return (
        f"padding={spec['padding']} pad={spec['pad']} input={size} stride={spec['stride']} "
        f"dilation={spec['dilation']} groups={spec['groups']}"
    )


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], Any], Callable[[Any], str]]] = {
    "exact": (cmd_exact, format_exact),
    "certify": (cmd_certify, format_certify),
    "audit": (cmd_audit, format_audit),
    "methods": (cmd_methods, format_methods),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="specbound", description="Certified spectral norms of convolutional layers."
    )
    parser.add_argument("--version", action="version", version=f"specbound {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    exact = sub.add_parser("exact", help="exact float64 spectral norm of one layer")
    add_layer_arguments(exact)
    cert = sub.add_parser("certify", help="rigorous bracket lower <= ||A||_2 <= upper")
    add_layer_arguments(cert)
    cert.add_argument("--rtol", type=float, default=1e-3, help="target relative gap")
    cert.add_argument("--device", default=None, help="torch device for the heavy work")
    cert.add_argument("--max-seconds", type=float, default=None, help="time budget")
    aud = sub.add_parser(
        "audit",
        help="certify every layer of a network and bound its Lipschitz constant",
        description="Trace a network, certify each layer at its true input size and bound the "
        "whole network's L2 Lipschitz constant. Without MODEL: the bundled trained "
        "digits CNN (or --arch NAME with random weights).",
    )
    aud.add_argument(
        "model",
        nargs="?",
        help="TorchScript file; or a state dict (.pt/.pth, read with "
        "weights_only=True) or .safetensors file together with --arch",
    )
    aud.add_argument(
        "--arch",
        help="registered architecture of a state dict: digits_cnn, resnet18, resnet18_imagenet",
    )
    aud.add_argument(
        "--input-shape",
        type=int,
        nargs="+",
        metavar="N",
        help="one sample's shape without the batch dimension, e.g. 3 32 32",
    )
    aud.add_argument(
        "--rtol", type=float, default=None, help="target relative gap per layer (default 0.01)"
    )
    aud.add_argument("--device", default=None, help="torch device for the certificates")
    aud.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="time budget of the whole run; layers not reached get a rigorous but wider bound "
        "and the report is marked partial",
    )
    aud.add_argument(
        "--max-seconds-per-layer",
        type=float,
        default=30.0,
        help="time budget of each layer's certificate (default 30; 0: no limit)",
    )
    aud.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    aud.add_argument("--json", action="store_true", help="print JSON")
    listing = sub.add_parser("methods", help="list every bound and estimator with its guarantee")
    listing.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run, fmt = COMMANDS[args.command]
    try:
        result = run(args)
    except (ValueError, TypeError, MemoryError) as err:
        print(f"specbound {args.command}: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if args.json else fmt(result))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
