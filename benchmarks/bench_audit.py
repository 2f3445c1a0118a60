"""Wall time and convergence of ``specbound.audit`` on ResNet-18 (:mod:`specbound.models` and
torchvision), VGG11-bn and MobileNetV2 (torchvision).

Usage::

    python benchmarks/bench_audit.py [--label after] [--timeout 900] [--out benchmarks/results]

Each case runs in its own child process (one at a time, killed after ``--timeout`` seconds, so
a run that does not finish is recorded as such): random initialisation (``torch.manual_seed``),
BatchNorm statistics from a few train-mode passes on random inputs, then ``audit`` with the
library's defaults (only ``progress=False``). The audit's own ``elapsed_s``, the number of
certified layers that converged, the whole-network bound and whether the report is partial are
recorded with the load average. ``--label`` names the code measured (e.g. ``before`` with
``PYTHONPATH`` pointing at an older checkout); results are merged into ``audit_cpu.json`` and
the table ``audit_cpu.md`` is rewritten from it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

CASES = {
    # name: (builder: specbound.models name, or "tv:" + torchvision.models name; input shape)
    "resnet18-cifar-3x32x32": ("resnet18", (3, 32, 32)),
    "resnet18-imagenet-3x224x224": ("resnet18_imagenet", (3, 224, 224)),
    # issue 11's targets: torchvision's own definitions (1000 classes, its default head)
    "tv-resnet18-3x32x32": ("tv:resnet18", (3, 32, 32)),
    "tv-vgg11_bn-3x32x32": ("tv:vgg11_bn", (3, 32, 32)),
    "tv-mobilenet_v2-3x32x32": ("tv:mobilenet_v2", (3, 32, 32)),
    "tv-resnet18-3x224x224": ("tv:resnet18", (3, 224, 224)),
}


def build(builder: str):
    """A fresh model: specbound.models' builder, or torchvision's (imported by
    :func:`specbound.testing.torchvision_models`, which works with a CPU torch)."""
    if builder.startswith("tv:"):
        from specbound.testing import torchvision_models

        return getattr(torchvision_models(), builder[3:])()
    from specbound import models

    return getattr(models, builder)()


def child(case: str, seed: int, max_seconds: float | None = None) -> dict:
    """Run one audit in this process and return its summary."""
    import inspect

    import torch

    import specbound as sb

    builder, shape = CASES[case]
    torch.manual_seed(seed)
    model = build(builder)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, *shape))
    model.eval()
    params = inspect.signature(sb.audit).parameters
    start = time.perf_counter()
    extra = {} if max_seconds is None else {"max_seconds": max_seconds}
    report = sb.audit(model, shape, progress=False, **extra)
    wall = time.perf_counter() - start
    certified = [row for row in report.layers if row.kind == "certified"]
    return {
        "case": case,
        "wall_s": wall,
        "elapsed_s": report.elapsed_s,
        "rtol": report.rtol,
        "defaults": {
            k: (None if v.default is inspect.Parameter.empty else v.default)
            for k, v in params.items()
            if k in ("rtol", "max_seconds", "max_seconds_per_layer")
        }
        | extra,
        "certified_layers": len(certified),
        "converged_layers": sum(row.converged for row in certified),
        "distinct_certificates": len({id(row.certificate) for row in certified}),
        "upper": report.upper,
        "partial": bool(getattr(report, "partial", False)),
        "slowest_layer_s": max((row.elapsed_s for row in certified), default=0.0),
        "layers": [
            [row.name, round(row.elapsed_s, 3), row.converged, row.rel_gap] for row in certified
        ],
        "specbound": sb.__file__,
    }


def table(results: list[dict], notes: dict[str, str] | None = None) -> str:
    out = [
        "# `specbound audit` on ResNet-18 (specbound.models and torchvision), VGG11-bn and "
        "MobileNetV2 (torchvision), CPU",
        "",
        "Command: `OMP_NUM_THREADS=T python benchmarks/bench_audit.py --label LABEL [--cases ...]` "
        "(T in the table; each case "
        "in a child process, killed at the timeout). Random init (seed 0), BatchNorm statistics "
        "from 3 train-mode passes of 8 random inputs; `audit(model, shape, progress=False)` with "
        "the library's defaults of the measured code.",
        "",
        "| code | case | threads | audit arguments in effect | wall (s) | slowest layer (s) | "
        "certified rows converged | network upper | partial | load avg (1 min before → after, "
        "5, 15) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.get("status") != "ok":
            out.append(
                f"| {r['label']} | {r['case']} | {r.get('omp_num_threads') or '—'} | "
                f"max_seconds={r.get('max_seconds')} | "
                f"did not finish in {r['timeout_s']:.0f} s | — | — | — | — | {r['load']} |"
            )
            continue
        args = dict(r["defaults"], rtol=r["rtol"])  # rtol=None: the audit's default, in effect
        d = ", ".join(f"{k}={v}" for k, v in args.items())
        slowest = f"{r['slowest_layer_s']:.1f}" if "slowest_layer_s" in r else "—"
        out.append(
            f"| {r['label']} | {r['case']} | {r.get('omp_num_threads') or '—'} | {d} | "
            f"{r['wall_s']:.1f} | {slowest} | "
            f"{r['converged_layers']}/{r['certified_layers']} | {r['upper']:.4g} | "
            f"{'yes' if r['partial'] else 'no'} | {r['load']} |"
        )
    if notes:
        out += [""] + [f"- **{label}**: {text}" for label, text in notes.items()]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--label", default="after", help="name of the code measured")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per case")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument(
        "--max-seconds", type=float, default=None, help="whole-run budget passed to audit"
    )
    parser.add_argument("--note", help="a remark on the code measured (kept with --label)")
    parser.add_argument("--render", action="store_true", help="only rewrite audit_cpu.md")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.seed, args.max_seconds)))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "audit_cpu.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    results, notes = stored.get("results", []), stored.get("notes", {})
    if args.note:
        notes[args.label] = args.note
    if args.render:
        path.write_text(json.dumps({"results": results, "notes": notes}, indent=2) + "\n")
        (out / "audit_cpu.md").write_text(table(results, notes))
        return
    for case in args.cases:
        load_before = os.getloadavg()
        cmd = [sys.executable, __file__, "--child", case, "--seed", str(args.seed)]
        if args.max_seconds is not None:
            cmd += ["--max-seconds", str(args.max_seconds)]
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=args.timeout, check=True
            )
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            r["status"] = "ok"
        except subprocess.TimeoutExpired:
            r = {"case": case, "status": "timeout", "timeout_s": args.timeout}
        except subprocess.CalledProcessError as err:
            raise SystemExit(f"{case} failed:\n{err.stderr}") from None
        r["label"] = args.label
        r["child_wall_s"] = time.perf_counter() - start
        load = os.getloadavg()
        r["load"] = f"{load_before[0]:.2f} → {load[0]:.2f}, {load[1]:.2f}, {load[2]:.2f}"
        r["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
        r["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS")
        print(json.dumps(r), flush=True)
        r["max_seconds"] = args.max_seconds
        results = [
            x
            for x in results
            if (x["label"], x["case"], x.get("max_seconds")) != (args.label, case, args.max_seconds)
        ]
        results.append(r)
        path.write_text(json.dumps({"results": results, "notes": notes}, indent=2) + "\n")
        (out / "audit_cpu.md").write_text(table(results, notes))


if __name__ == "__main__":
    main()
