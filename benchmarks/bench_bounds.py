"""Time and tightness of every registered method on ResNet-18 layer shapes and random kernels.

For each layer and each method in :func:`specbound.bounds.methods` (whatever registered it):
the value, its kind, the median wall time of warm runs, and its ratio to a reference: the
exact float64 norm where one is computable (``exact`` method: circulant route, or dense for
small layers), otherwise the best certified lower bound found (``power``/``lanczos`` witnesses),
which makes ratios of upper bounds *overstate* their looseness. Methods outside their domain
are listed as refused, with the reason; every call runs in a forked worker with a time limit.

CPU always; on CUDA (when available) the differentiable torch cores are also timed on the
GPU, in float32 and float64, synchronised, median of warm runs, with the device named.

Usage (from the repository root)::

    PYTHONPATH=. python benchmarks/bench_bounds.py                   # reduced CPU sizes
    PYTHONPATH=. python benchmarks/bench_bounds.py --sizes full --timeout 600
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_bounds.py --repeats 3

Results go to ``benchmarks/results/bounds_<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from specbound import ConvSpec
from specbound.bounds import methods

RESULTS = Path(__file__).parent / "results"

# (name, c_out, c_in, k, input size, stride, pad): torchvision ResNet-18 convolutions after the
# stem (3x3 pad 1, 1x1 downsample pad 0), at the input sizes of a 224x224 image (the last
# stage at 8 instead of 7).
RESNET18 = [
    ("layer1 3x3", 64, 64, 3, 56, 1, 1),
    ("layer2.0 3x3 s2", 128, 64, 3, 56, 2, 1),
    ("layer2.0 1x1 s2", 128, 64, 1, 56, 2, 0),
    ("layer2 3x3", 128, 128, 3, 28, 1, 1),
    ("layer3.0 3x3 s2", 256, 128, 3, 28, 2, 1),
    ("layer3.0 1x1 s2", 256, 128, 1, 28, 2, 0),
    ("layer3 3x3", 256, 256, 3, 14, 1, 1),
    ("layer4.0 3x3 s2", 512, 256, 3, 14, 2, 1),
    ("layer4.0 1x1 s2", 512, 256, 1, 14, 2, 0),
    ("layer4 3x3", 512, 512, 3, 8, 1, 1),
]
REDUCED_NAMES = {"layer1 3x3", "layer2.0 3x3 s2", "layer2.0 1x1 s2", "layer3 3x3", "layer4 3x3"}
"""CPU subset: one layer per stage plus the strided 3x3 and 1x1 shapes."""

# (name, c, k, n, padding): random kernels where the exact norm is computable.
RANDOM = [
    ("circ c16 k3 n16", 16, 3, 16, "circular"),
    ("circ c64 k3 n32", 64, 3, 32, "circular"),
    ("circ c32 k5 n16", 32, 5, 16, "circular"),
    ("zero c4 k3 n8", 4, 3, 8, "zeros"),
    ("zero c8 k5 n6", 8, 5, 6, "zeros"),
]

OPTIONS = {
    "power": {"n_iter": 100, "tol": 1e-9},
    "lanczos": {"n_iter": 60},
    "lanczos_probabilistic": {"delta": 1e-3, "seed": 0},
}
"""Per-method options for the benchmark (fewer iterations than the defaults on CPU)."""

LOWER = ("power", "lanczos")
ENV_SHOWN = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONPATH", "CUDA_VISIBLE_DEVICES")
"""Environment variables written into the recorded command."""


def kernel_for(c_out: int, c_in: int, k: int, seed: int) -> np.ndarray:
    """He-scaled Gaussian kernel (no pretrained weights are downloaded)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((c_out, c_in, k, k)) * math.sqrt(2.0 / (c_in * k * k))


def method_options(name: str, c: int, sizes: str) -> dict[str, Any]:
    options = dict(OPTIONS.get(name, {}))
    if sizes == "reduced" and c >= 256:
        if name == "bernstein_grid":
            options["rtol"] = 0.1  # N = 21 instead of 64 for 3x3 kernels
        if name == "circular_embedding":
            options["extra"] = 0  # one torus, N = n + P, instead of three
    return options


# ----------------------------------------------------------------------------- worker
def _run(name: str, kernel: np.ndarray, spec: ConvSpec, options: dict, repeats: int, out) -> None:
    from specbound.bounds import get_method

    method = get_method(name)
    run_spec = spec.replace(input_size=None) if method.input_size == "every" else spec
    try:
        start = time.perf_counter()
        bound = method(kernel, run_spec, **options)
        first = time.perf_counter() - start
    except ValueError as err:
        out.put({"status": "refused", "reason": str(err).split(";")[0][:160]})
        return
    times = []
    if first < 5.0:  # warm runs (the first one was the warm-up)
        for _ in range(repeats):
            start = time.perf_counter()
            method(kernel, run_spec, **options)
            times.append(time.perf_counter() - start)
    out.put(
        {
            "status": "ok",
            "kind": bound.kind,
            "value": bound.value,
            "time_s": statistics.median(times) if times else first,
            "runs": len(times) or 1,
            "converged": bound.details.get("converged"),
        }
    )


def run_method(name, kernel, spec, options, repeats, timeout) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    proc = ctx.Process(target=_run, args=(name, kernel, spec, options, repeats, out))
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return {"status": "timeout", "reason": f"over {timeout:.0f} s"}
    if out.empty():
        return {"status": "error", "reason": f"worker exited with code {proc.exitcode}"}
    return out.get()


# ----------------------------------------------------------------------------- GPU
def gpu_rows(cases, repeats: int) -> list[dict[str, Any]]:
    """Time the differentiable torch cores on CUDA (float32, float64), synchronised."""
    device = torch.device("cuda")
    rows = []
    for case in cases:
        for method in methods():
            if not method.differentiable:
                continue
            spec = case["spec"]
            run_spec = spec.replace(input_size=None) if method.input_size == "every" else spec
            try:
                layer = method.validate(case["kernel"], run_spec)
            except ValueError:
                continue
            for dtype in (torch.float32, torch.float64):
                k = torch.tensor(case["kernel"], dtype=dtype, device=device)
                options = {"rtol": 0.01} if method.name == "bernstein_grid" else {}

                def call(k=k, layer=layer, method=method, options=options):
                    with torch.no_grad():
                        return method.torch_func(k, layer, **options)

                call()
                torch.cuda.synchronize(device)
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    value = call()
                    torch.cuda.synchronize(device)
                    times.append(time.perf_counter() - start)
                rows.append(
                    {
                        "case": case["name"],
                        "method": method.name,
                        "dtype": str(dtype).replace("torch.", ""),
                        "value": float(value),
                        "time_s": statistics.median(times),
                    }
                )
    return rows


# ----------------------------------------------------------------------------- driver
def build_cases(sizes: str) -> list[dict[str, Any]]:
    cases = []
    for i, (name, c_out, c_in, k, n, stride, pad) in enumerate(RESNET18):
        if sizes == "reduced" and name not in REDUCED_NAMES:
            continue
        spec = ConvSpec("zeros", pad=pad, input_size=n, stride=stride)
        cases.append(
            {
                "name": f"resnet18 {name} {c_in}->{c_out} @{n}",
                "group": "resnet18",
                "kernel": kernel_for(c_out, c_in, k, seed=i),
                "spec": spec,
                "c": max(c_in, c_out),
            }
        )
    for i, (name, c, k, n, padding) in enumerate(RANDOM):
        spec = ConvSpec(padding, pad="same", input_size=n)
        cases.append(
            {
                "name": f"random {name}",
                "group": "random",
                "kernel": kernel_for(c, c, k, seed=100 + i),
                "spec": spec,
                "c": c,
            }
        )
    return cases


def bench_case(case, sizes, repeats, timeout) -> dict[str, Any]:
    results = {}
    for method in methods():
        options = method_options(method.name, case["c"], sizes)
        results[method.name] = run_method(
            method.name, case["kernel"], case["spec"], options, repeats, timeout
        )
        results[method.name]["options"] = options
        print(f"  {method.name:24s} {results[method.name]}", flush=True)
    exact = results.get("exact", {})
    if exact.get("status") == "ok":
        reference, ref_kind = exact["value"], "exact"
    else:
        lowers = [results[m]["value"] for m in LOWER if results.get(m, {}).get("status") == "ok"]
        reference, ref_kind = (max(lowers), "best lower") if lowers else (None, "none")
    for r in results.values():
        if r.get("status") == "ok" and reference:
            r["ratio"] = r["value"] / reference
    return {
        "case": case["name"],
        "group": case["group"],
        "spec": case["spec"].to_dict(),
        "kernel_shape": list(case["kernel"].shape),
        "reference": reference,
        "reference_kind": ref_kind,
        "methods": results,
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# specbound bounds benchmark ({report['device']})",
        "",
        f"Command: `{report['command']}`",
        "",
        f"- device: {report['device']}; torch {report['torch']}; threads {report['threads']}; "
        f"load average at start {report['load']}",
        f"- sizes: {report['sizes']}; repeats {report['repeats']} (median of warm runs after one "
        f"warm-up; a single run when the first took over 5 s); timeout {report['timeout']} s per "
        "call, in a forked worker",
        f"- {report['reduced']}",
        "- kernels: He-scaled Gaussian (seeded), not pretrained weights.",
        "- ratio: value / reference. Reference is `exact` (float64 ground truth) where computable, "
        "else the best certified lower bound (a lower bound on the norm, so ratios of upper "
        "bounds overstate their looseness, and lower-bound ratios are <= 1).",
        "",
    ]
    for row in report["cases"]:
        ref = row["reference"]
        ref_txt = "none" if ref is None else f"{ref:.6g} ({row['reference_kind']})"
        lines += [
            f"## {row['case']}",
            "",
            f"spec: `{row['spec']}`; reference {ref_txt}",
            "",
            "| method | kind | value | ratio | time (s) | note |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in row["methods"].items():
            if r["status"] == "ok":
                note = "" if r.get("converged") in (None, True) else "not converged"
                ratio = f"{r['ratio']:.6f}" if "ratio" in r else ""
                lines.append(
                    f"| {name} | {r['kind']} | {r['value']:.6g} | {ratio} | "
                    f"{r['time_s']:.3g} | {note} |"
                )
            else:
                lines.append(f"| {name} | | | | | {r['status']}: {r['reason']} |")
        lines.append("")
    if report["gpu"]:
        lines += [
            "## GPU (torch cores, synchronised)",
            "",
            "| case | method | dtype | value | time (s) |",
            "|---|---|---|---|---|",
        ]
        for r in report["gpu"]:
            lines.append(
                f"| {r['case']} | {r['method']} | {r['dtype']} | {r['value']:.6g} | "
                f"{r['time_s']:.3g} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes",
        choices=("reduced", "full"),
        default=None,
        help="default: full on CUDA, reduced on CPU",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds per method call (default 30 reduced, 600 full)",
    )
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    sizes = args.sizes or ("full" if cuda else "reduced")
    timeout = args.timeout or (30.0 if sizes == "reduced" else 600.0)
    cases = build_cases(sizes)
    device = (
        torch.cuda.get_device_name()
        if cuda
        else f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    )
    env = [f"{k}={os.environ[k]}" for k in ENV_SHOWN if k in os.environ]
    argv = [sys.executable.split("/")[-1], *sys.argv]
    report = {
        "command": " ".join([*env, *(shlex.quote(a) for a in argv)]),
        "device": device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "sizes": sizes,
        "repeats": args.repeats,
        "timeout": timeout,
        "reduced": (
            "reduced: ResNet-18 layers " + ", ".join(sorted(REDUCED_NAMES)) + "; power 100 "
            "iterations, lanczos 60; for >= 256 channels bernstein_grid rtol 0.1 (N = 21) "
            "and circular_embedding one torus (extra=0)"
            if sizes == "reduced"
            else "full: every ResNet-18 layer after the stem"
        ),
        "cases": [],
        "gpu": [],
    }
    for case in cases:
        print(case["name"], flush=True)
        report["cases"].append(bench_case(case, sizes, args.repeats, timeout))
    if cuda:
        report["gpu"] = gpu_rows(cases, args.repeats)
    RESULTS.mkdir(exist_ok=True)
    stem = "bounds_cuda" if cuda else "bounds_cpu"
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=1))
    (RESULTS / f"{stem}.md").write_text(markdown(report))
    print(f"wrote {RESULTS / stem}.json and .md")


if __name__ == "__main__":
    main()
