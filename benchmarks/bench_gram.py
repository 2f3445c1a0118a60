"""Speed and precision of the Gram-iteration bounds (``gram_circular``, ``gram_zero``).

Times are the median of warm runs (one untimed warm-up first), synchronised on CUDA. Two times
per case: ``core`` is the method's torch function on a prepared layer; ``call`` is the whole
:func:`specbound.spectral_norm` call, which also validates the kernel (a float64 copy to the
CPU). Ratios are to float64 ground truth: the exact circular norm for ``gram_circular``; for
``gram_zero`` (an upper bound on the symbol supremum S, which no finite computation gives)
the exact circular norm at N = 32, a lower bound on S, so the ratio overstates the looseness.

Usage (from the repository root, or with specbound installed)::

    PYTHONPATH=. python benchmarks/bench_gram.py                 # full sizes (GPU), reduced on CPU
    PYTHONPATH=. python benchmarks/bench_gram.py --sizes full    # full sizes whatever the device
    PYTHONPATH=. python benchmarks/bench_gram.py --sizes reduced --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import torch

from specbound import ConvSpec
from specbound.bounds import get_method
from specbound.operators import exact_norm
from specbound.spectral_norm import spectral_norm

RESULTS = Path(__file__).parent / "results"

FULL = {
    "circular": [(64, 32), (256, 16), (512, 16)],
    "zero": [(c, t) for c in (64, 128, 256, 512) for t in (2, 3, 4, 5) if c * 2**t <= 4096],
}
REDUCED = {
    "circular": [(64, 32), (128, 16)],
    "zero": [(64, 2), (64, 3), (64, 4), (128, 2), (128, 3)],
}
"""CPU sizes: the full ones take minutes per case on a 2-core CPU."""

EXACT_MAX_CHANNELS = 512
"""Largest channel count for which the float64 exact circular norm is computed (CPU)."""


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(func, device: torch.device, repeats: int) -> float:
    func()  # warm-up (plans, allocator)
    synchronise(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        synchronise(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def kernel_for(c: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(c, c, 3, 3, generator=gen, dtype=torch.float64)


def bench_circular(device, cases, repeats, n_iter=6) -> list[dict[str, Any]]:
    rows = []
    core = get_method("gram_circular").torch_func
    for c, n in cases:
        k64 = kernel_for(c, seed=c + n)
        spec = ConvSpec("circular", "same", n)
        layer = spec.layer(k64)
        exact = exact_norm(k64, spec) if c <= EXACT_MAX_CHANNELS else None
        for dtype in (torch.float32, torch.float64):
            kernel = k64.to(device, dtype)
            with torch.no_grad():
                value = float(core(kernel, layer, n_iter=n_iter))
                run_core = partial(core, kernel, layer, n_iter=n_iter)
                run_call = partial(spectral_norm, kernel, input_size=n, n_iter=n_iter)
                t_core = median_time(run_core, device, repeats)
                t_call = median_time(run_call, device, repeats)
            rows.append(
                {
                    "method": "gram_circular",
                    "channels": c,
                    "n": n,
                    "dtype": str(dtype).removeprefix("torch."),
                    "n_iter": n_iter,
                    "value": value,
                    "exact": exact,
                    "ratio": None if exact is None else value / exact,
                    "core_ms": 1e3 * t_core,
                    "call_ms": 1e3 * t_call,
                }
            )
            print(rows[-1], flush=True)
    return rows


def bench_zero(device, cases, repeats) -> list[dict[str, Any]]:
    rows = []
    core = get_method("gram_zero").torch_func
    reference: dict[int, float] = {}
    for c, t in cases:
        k64 = kernel_for(c, seed=c)
        layer = ConvSpec("zeros").layer(k64)
        if c not in reference:
            reference[c] = exact_norm(k64, ConvSpec("circular", "same", 32))
        kernel = k64.to(device, torch.float32)
        with torch.no_grad():
            value = float(core(kernel, layer, n_iter=t))
            runs = max(1, repeats if c * 2**t <= 1024 else 1)
            t_core = median_time(partial(core, kernel, layer, n_iter=t), device, runs)
        rows.append(
            {
                "method": "gram_zero",
                "channels": c,
                "n_iter": t,
                "dtype": "float32",
                "value": value,
                "sigma_circ_32": reference[c],
                "ratio_to_sigma_circ_32": value / reference[c],
                "core_ms": 1e3 * t_core,
            }
        )
        print(rows[-1], flush=True)
    return rows


def command_line() -> str:
    """The command as run, with the environment variables that change the timings."""
    env = [
        f"{k}={os.environ[k]}"
        for k in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")
        if k in os.environ
    ]
    return " ".join([*env, "PYTHONPATH=.", "python", shlex.join(sys.argv)])


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Gram iteration benchmark",
        "",
        f"- command: `{report['command']}`",
        f"- device: {report['device']}",
        f"- load average at start (1, 5, 15 min): {report['load_average_at_start']}",
        f"- torch {report['torch']}, sizes: {report['sizes']}, repeats: {report['repeats']} "
        "(median of warm runs; CUDA synchronised)",
        "",
        "## gram_circular (n_iter = 6, random Gaussian c x c x 3 x 3 kernels)",
        "",
        "core = torch function on a prepared layer; call = spectral_norm (validation included).",
        "ratio = bound / exact float64 circular norm. float32 values carry float32 rounding "
        "and, once converged, can sit ~1e-7 below the exact norm (research/gram.md §8).",
        "",
        "| channels | n | dtype | core ms | call ms | ratio - 1 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["gram_circular"]:
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio'] - 1:.2e}"
        lines.append(
            f"| {r['channels']} | {r['n']} | {r['dtype']} | {r['core_ms']:.2f} | "
            f"{r['call_ms']:.2f} | {ratio} |"
        )
    lines += [
        "",
        "## gram_zero (float32, c x c x 3 x 3)",
        "",
        "ratio = bound / exact circular norm at N = 32 (a lower bound on S, so the ratio "
        "overstates the looseness).",
        "",
        "| channels | T | core ms | value | ratio |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in report["gram_zero"]:
        lines.append(
            f"| {r['channels']} | {r['n_iter']} | {r['core_ms']:.2f} | {r['value']:.5g} | "
            f"{r['ratio_to_sigma_circ_32']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", choices=("auto", "full", "reduced"), default="auto")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    sizes = args.sizes
    if sizes == "auto":
        sizes = "full" if device.type == "cuda" else "reduced"
    cases = FULL if sizes == "full" else REDUCED
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    report = {
        "command": command_line(),
        "device": device_name(device),
        "torch": torch.__version__,
        "sizes": sizes,
        "repeats": args.repeats,
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "gram_circular": bench_circular(device, cases["circular"], args.repeats),
        "gram_zero": bench_zero(device, cases["zero"], args.repeats),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"gram_{device.type}"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
