"""Command line: ``specbound exact | certify | audit | methods``.

Every command takes ``--json`` for machine-readable output (with the versions of specbound,
torch and numpy and the command line); every error, a bad argument included, is printed as one
line, ``specbound <command>: error: <message>``, with exit status 2, never as a traceback.

``--help`` and ``--version`` import neither torch nor scipy: a subcommand imports what it runs.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ._version import __version__
from .spec import PAD_WORDS, PADDING_MODES

if TYPE_CHECKING:
    import numpy as np

    from .spec import ConvSpec

EXAMPLE_SPEC = {"padding": "zeros", "pad": "same", "input_size": (12, 12)}
EXAMPLE_HELP = (
    "use the bundled example kernel (8x8x3x3, zeros padding, pad same) at input 12x12; "
    "each option given replaces the example's value"
)


def example_kernel() -> np.ndarray:
    """The bundled example: a fixed 8x8x3x3 Gaussian kernel scaled by 1/sqrt(fan-in)."""
    import numpy as np

    return np.random.default_rng(0).standard_normal((8, 8, 3, 3)) / np.sqrt(72.0)


def _refuse_complex(path: str, dtype: Any) -> None:
    raise ValueError(
        f"kernel {path!r} is complex ({dtype}); specbound certifies real kernels only "
        "(float, int or bool), as the Python API does"
    )


def load_kernel(path: str, key: str | None = None) -> np.ndarray:
    """Load a kernel from ``.npy`` (no pickles) or ``.pt`` (``weights_only=True``).

    The values are returned as stored (a numpy array): floating tensors are widened to
    float64, which is exact for float16, bfloat16, float32 and float64; other real dtypes keep
    their dtype and are validated by the command. Complex kernels are refused.
    """
    import numpy as np

    file = Path(path)
    if not file.is_file():
        raise ValueError(f"kernel file {path!r} does not exist")
    if file.suffix == ".npy":
        try:
            array = np.load(file, allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"cannot read {path!r} as a numeric .npy array: {err}") from None
        if np.iscomplexobj(array):
            _refuse_complex(path, array.dtype)
        return array
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
        obj = obj.detach()
        if obj.is_complex():
            _refuse_complex(path, obj.dtype)
        if obj.is_floating_point():
            obj = obj.double()  # exact widening
        return obj.numpy()
    raise ValueError(f"kernel file must end in .npy, .pt or .pth, got {path!r}")


# -- argument types: each raises ArgumentTypeError, which argparse turns into one line ------


def _pad(text: str) -> Any:
    if text in PAD_WORDS:
        return text
    try:
        parts = [int(p) for p in text.split(",")]
        if len(parts) not in (1, 2, 4) or min(parts) < 0:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"takes {'/'.join(PAD_WORDS)}, an integer P >= 0, 'ph,pw' or "
            f"'left,right,top,bottom'; got {text!r}"
        ) from None
    return parts[0] if len(parts) == 1 else tuple(parts)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"takes a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"takes a finite number > 0, got {text!r}")
    return value


def _rtol(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:  # NaN fails too
        raise argparse.ArgumentTypeError(f"takes a number in (0, 1), got {text!r}")
    return value


class _Pair(argparse.Action):
    """One or two positive integers (``H [W]``); the usage line says so."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        if len(values) > 2:
            raise argparse.ArgumentError(
                self, f"takes one or two integers ({self.metavar}), got {len(values)}"
            )
        setattr(namespace, self.dest, values[0] if len(values) == 1 else tuple(values))


class _Formatter(argparse.HelpFormatter):
    """Usage lines that show what an option accepts: ``--input-size H [W]``."""

    def _format_args(self, action: argparse.Action, default_metavar: str) -> str:
        if isinstance(action, _Pair) or getattr(action, "display", None):
            return str(getattr(action, "display", None) or action.metavar)
        return super()._format_args(action, default_metavar)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit status 2."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


def _pair(parser: argparse.ArgumentParser, flag: str, metavar: str, help: str) -> None:
    parser.add_argument(
        flag, type=_positive_int, nargs="+", action=_Pair, metavar=metavar, help=help
    )


def add_layer_arguments(parser: argparse.ArgumentParser) -> None:
    """The kernel source and the ConvSpec options shared by the layer commands."""
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "kernel", nargs="?", help="kernel file: .npy, or .pt/.pth (a tensor or a dict)"
    )
    src.add_argument("--example", action="store_true", help=EXAMPLE_HELP)
    parser.add_argument("--key", help="tensor name inside a .pt dict")
    parser.add_argument("--padding", choices=PADDING_MODES, help="padding mode (default zeros)")
    parser.add_argument(
        "--pad",
        type=_pad,
        metavar="P",
        help="same (default), valid, full, an integer, 'ph,pw' or 'left,right,top,bottom'",
    )
    _pair(
        parser,
        "--input-size",
        "H [W]",
        "input height and width (one value: square); omit for every input size where the "
        "command allows it (with --example: 12 12)",
    )
    _pair(parser, "--stride", "S [S]", "stride, or its height and width (default 1)")
    _pair(parser, "--dilation", "D [D]", "dilation, or its height and width (default 1)")
    parser.add_argument("--groups", type=_positive_int, metavar="G", help="groups (default 1)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def layer_from_args(args: argparse.Namespace) -> tuple[np.ndarray, ConvSpec]:
    from .operators.conv_layer import ConvLayer
    from .spec import ConvSpec

    kernel = example_kernel() if args.example else load_kernel(args.kernel, args.key)
    fields = dict(EXAMPLE_SPEC) if args.example else {}
    for name in ("padding", "pad", "groups", "input_size", "stride", "dilation"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    spec = ConvSpec(**fields)
    ConvLayer(kernel, spec)  # validate now, before any work
    return kernel, spec


def check_device(device: str | None) -> str | None:
    """``--device``: a torch device that exists on this machine, or a one-line ValueError."""
    if device is None:
        return None
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(
            f"--device {device!r} is not a torch device; use cpu, cuda, cuda:N or mps"
        ) from None
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available(),
    }
    if not available.get(parsed.type, False):
        raise ValueError(
            f"--device {device!r} is not available here (this torch {torch.__version__} "
            f"has: {', '.join(k for k, ok in available.items() if ok)})"
        )
    if parsed.type == "cuda" and parsed.index is not None:
        if parsed.index >= torch.cuda.device_count():
            raise ValueError(
                f"--device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return device


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
    device = check_device(args.device)
    kernel, spec = layer_from_args(args)
    from .certify import certify

    cert = certify(
        kernel,
        spec,
        rtol=args.rtol,
        device=device,
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


METHOD_COLUMNS = (
    ("name", "method", 22),
    ("kind", "kind", 9),
    ("paddings", "paddings", 36),
    ("input_size", "input size", 10),
    ("stride", "stride", 6),
    ("dilation", "dilation", 8),
    ("groups", "groups", 6),
    ("differentiable", "diff", 4),
    ("cost", "cost", 0),
)
"""The text table of ``specbound methods``: every key of :meth:`Method.to_dict` but the
reference, which is printed on the line below each row (the JSON has the same keys)."""


def cmd_methods(args: argparse.Namespace) -> dict[str, Any]:
    from .bounds import methods

    return {"methods": [m.to_dict() for m in methods()]}


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def format_methods(result: dict[str, Any]) -> str:
    head = " ".join(f"{title:{width}}" for _, title, width in METHOD_COLUMNS).rstrip()
    lines = [head, "-" * len(head)]
    for row in result["methods"]:
        cells = " ".join(f"{_cell(row[key]):{width}}" for key, _, width in METHOD_COLUMNS)
        lines.append(cells.rstrip())
        lines.append(f"{'':22} reference: {row['reference']}")
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
    device = check_device(args.device)
    if args.model is None and args.arch is None and args.input_shape is not None:
        from . import models

        expected = list(models.architecture("digits_cnn").input_shape)
        if list(args.input_shape) != expected:
            raise ValueError(
                f"--input-shape {' '.join(map(str, args.input_shape))} needs a MODEL file (or "
                f"--arch NAME): without them, audit runs the bundled digits_cnn network, whose "
                f"input is {' '.join(map(str, expected))}"
            )
    from .audit import audit

    model, default_shape, description = load_model(args.model, args.arch)
    shape = tuple(args.input_shape) if args.input_shape is not None else default_shape
    if shape is None:
        raise ValueError(
            "--input-shape C H W is required for a TorchScript model "
            "(one sample's shape, without the batch dimension)"
        )
    report = audit(
        model,
        shape,
        rtol=args.rtol,
        device=device,
        progress=False if args.no_progress else None,
        max_seconds=args.max_seconds,
        max_seconds_per_layer=args.max_seconds_per_layer,
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
    parser = _Parser(
        prog="specbound", description="Certified spectral norms of convolutional layers."
    )
    parser.add_argument("--version", action="version", version=f"specbound {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.commands = sub.choices  # type: ignore[attr-defined]
    exact = sub.add_parser(
        "exact",
        help="exact float64 spectral norm of one layer",
        description="The exact spectral norm of one layer in float64 (dense, circulant or "
        "Toeplitz route), the ground truth the bounds are tested against.",
    )
    add_layer_arguments(exact)
    cert = sub.add_parser(
        "certify",
        help="rigorous bracket lower <= ||A||_2 <= upper",
        description="A bracket lower <= ||A||_2 <= upper that holds for the kernel exactly as "
        "given, the rounding of the computation included.",
    )
    add_layer_arguments(cert)
    cert.add_argument(
        "--rtol", type=_rtol, default=1e-3, metavar="R", help="target relative gap, in (0, 1)"
    )
    cert.add_argument(
        "--device", metavar="D", help="torch device for the heavy work: cpu, cuda, cuda:N, mps"
    )
    cert.add_argument(
        "--max-seconds",
        type=_positive_float,
        metavar="T",
        help="time budget in seconds (the bracket stays rigorous, maybe wider)",
    )
    aud = sub.add_parser(
        "audit",
        help="certify every layer of a network and bound its Lipschitz constant",
        description="Trace a network, certify each layer at its true input size and bound the "
        "whole network's L2 Lipschitz constant. Without MODEL: the bundled trained "
        "digits CNN (input 1 8 8), or --arch NAME with random weights.",
    )
    aud.add_argument(
        "model",
        nargs="?",
        help="TorchScript file; or a state dict (.pt/.pth, read with "
        "weights_only=True) or .safetensors file together with --arch",
    )
    aud.add_argument(
        "--arch",
        metavar="NAME",
        help="registered architecture of a state dict: digits_cnn, resnet18, resnet18_imagenet",
    )
    shape = aud.add_argument(
        "--input-shape",
        type=_positive_int,
        nargs="+",
        metavar="DIM",
        help="one sample's shape without the batch dimension, e.g. 3 32 32 (needed for a "
        "TorchScript MODEL)",
    )
    shape.display = "C [H W]"  # type: ignore[attr-defined]
    aud.add_argument(
        "--rtol",
        type=_rtol,
        default=None,
        metavar="R",
        help="target relative gap per layer (default 0.01)",
    )
    aud.add_argument(
        "--device", metavar="D", help="torch device for the certificates: cpu, cuda, cuda:N, mps"
    )
    aud.add_argument(
        "--max-seconds",
        type=_positive_float,
        metavar="T",
        help="time budget of the whole run; layers not reached get a rigorous but wider bound "
        "and the report is marked partial",
    )
    aud.add_argument(
        "--max-seconds-per-layer",
        type=_positive_float,
        default=120.0,
        metavar="T",
        help="time budget of each layer's certificate, in seconds (default 120)",
    )
    aud.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    aud.add_argument("--json", action="store_true", help="print JSON")
    listing = sub.add_parser(
        "methods",
        help="list every bound and estimator with its guarantee",
        description="Every registered bound and estimator: its kind (exact, upper, lower, "
        "estimate), where it holds and its reference.",
    )
    listing.add_argument("--json", action="store_true", help="print JSON")
    return parser


def versions() -> dict[str, str]:
    """The versions an archived result needs: specbound, torch and numpy."""
    import numpy
    import torch

    return {"specbound": __version__, "torch": torch.__version__, "numpy": numpy.__version__}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0; 2 after a one-line error; 130 when an
    audit was interrupted and its partial report printed)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # reported by the subcommand, whose usage says what it accepts
            parser.commands[args.command].error(  # type: ignore[attr-defined]
                f"unrecognized arguments: {' '.join(extra)}"
            )
    except SystemExit as done:  # --help, --version, or a bad argument (one line printed)
        return done.code if isinstance(done.code, int) else 2
    run, fmt = COMMANDS[args.command]
    try:
        result = run(args)
    except (ValueError, TypeError, MemoryError) as err:
        print(f"specbound {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    if args.json:
        result["versions"] = versions()
        result["command"] = ["specbound", *argv]
        print(json.dumps(result, indent=2))
    else:
        print(fmt(result))
    if str(result.get("stop_reason", "")).startswith("interrupted"):
        return 130  # the partial report was printed; the shell's convention for Ctrl-C
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
