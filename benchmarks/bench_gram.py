"""Speed and precision of the Gram-iteration bounds (``gram_circular``, ``gram_zero``).

``gram_circular`` is compared, at equal iterations and dtype on the same device, with the
published circular Gram iteration (:func:`published_circular_gram`, written here from the
paper's formulas) and with the per-frequency batched SVD (:func:`per_frequency_svd`). The
methods of one case run interleaved: every timed round runs each method once, in turn, so that
a load change on a shared machine affects all of them alike. Times are the median of the timed
rounds after one untimed warm-up, synchronised on CUDA; a method whose warm-up alone took more
than ``--slow-seconds`` is not run again (its warm-up is its one timing, marked ``runs = 1``).

For ``gram_circular`` two times: ``core`` is the method's torch function on a prepared
layer; ``call`` is the whole :func:`specbound.spectral_norm` call, which also validates the
kernel (a float64 copy to the CPU). Ratios are to float64 ground truth: the exact circular
norm for ``gram_circular``; for ``gram_zero`` (an upper bound on the symbol supremum S, which
no finite computation gives) the exact circular norm at N = 32, a lower bound on S, so the
ratio overstates the looseness.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_gram.py --sizes reduced  # minutes
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_gram.py --sizes full --repeats 3
    PYTHONPATH=. python benchmarks/bench_gram.py --device cuda      # full sizes on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import torch

from specbound import ConvSpec
from specbound.bounds import get_method
from specbound.operators import ConvLayer, exact_norm
from specbound.spectral_norm import spectral_norm

RESULTS = Path(__file__).parent / "results"

ISSUE_CASES = [(64, 32), (256, 16), (512, 16)]
"""(channels, n) of the issue's reference timings (H100, published code, float32, T = 6)."""

FULL = {
    "circular": [(64, 32), (128, 16), (256, 16), (512, 16)],
    "zero": [(c, t) for c in (64, 128, 256, 512) for t in (2, 3, 4, 5) if c * 2**t <= 4096],
}
REDUCED = {
    "circular": [(64, 32), (128, 16), (256, 16)],
    "zero": [(64, 2), (64, 3), (64, 4), (128, 2), (128, 3)],
}
"""Sizes for a run of a few minutes on one CPU thread: the full circular cases but 512 x 16,
whose published baseline alone takes minutes there. On the CPU the per-frequency SVD is only
run up to ``--svd-max-channels`` channels (default 256; at 512 it takes minutes per run)."""

EXACT_MAX_CHANNELS = 512
"""Largest channel count for which the float64 exact circular norm is computed (CPU)."""


# ----------------------------------------------------------------------------- baselines
@contextlib.contextmanager
def _no_tf32() -> Iterator[None]:
    """TF32 off in CUDA matmul and cuDNN for the duration (both flags restored after)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _frequency_matrices(kernel: torch.Tensor, n: int, spectrum: str) -> torch.Tensor:
    """:math:`\\hat K(2\\pi u/n, 2\\pi v/n)` for a ``(c_out, c_in, k, k)`` kernel with
    ``k <= n``, as a batch ``(F, c_out, c_in)``: the 2-D DFT of the kernel zero-padded to
    ``n x n``, on all ``n^2`` frequencies (``"full"``) or the ``n (n/2+1)`` of the real
    half-spectrum (``"half"``, ``rfft2``; for a real kernel the others are conjugates)."""
    fft = {"full": torch.fft.fft2, "half": torch.fft.rfft2}[spectrum]
    d = fft(kernel, s=(n, n))  # (c_out, c_in, n, n or n/2+1)
    return d.permute(2, 3, 0, 1).reshape(-1, *kernel.shape[:2])


def published_circular_gram(
    kernel: torch.Tensor, n: int, n_iter: int, *, spectrum: str = "full"
) -> torch.Tensor:
    """Circular Gram iteration as published: the baseline of the speed comparison.

    Delattre, Barthélemy, Araujo & Allauzen, *Efficient Bound of Lipschitz Constant for
    Convolutional Layers by Gram Iteration*, ICML 2023 (arXiv 2305.16173), Sec. 3 (Gram
    iteration on the frequency matrices of the circulant, with rescaling), implemented from
    the formulas:

    1. :math:`D(\\omega) = \\sum_a K[:, :, a]\\, e^{-i \\omega \\cdot a}` on the ``n x n``
       DFT grid (the kernel zero-padded to ``n x n``, so ``k <= n``), on the side with fewer
       channels (:math:`D^*` if :math:`c_{in} > c_{out}`: same singular values);
    2. per frequency, :math:`G_0 = D(\\omega)` and, for :math:`t < T`,
       :math:`r_t = \\|G_t\\|_F`, :math:`G_{t+1} = (G_t/r_t)^* (G_t/r_t)`,
       :math:`\\Lambda_{t+1} = 2(\\Lambda_t + \\ln r_t)`, :math:`\\Lambda_0 = 0`;
    3. the bound :math:`\\max_\\omega (\\|G_T(\\omega)\\|_F\\, e^{\\Lambda_T(\\omega)})^{2^{-T}}
       = \\max_\\omega \\|D(\\omega)\\|_{S_{2^{T+1}}} \\ge \\sigma_{\\mathrm{circ}}`.

    ``spectrum="full"`` runs all :math:`n^2` frequencies, ``"half"`` the ``rfft2``
    half-spectrum that the public code of the paper uses (same maximum for a real kernel).
    Runs in the kernel's dtype and device (complex64 for float32) with TF32 off, without
    autograd. Like the public code it has no guard for an exactly zero frequency matrix
    (0/0, research/gram.md §6 item 2); random kernels never have one. The paper's body was
    not available when this was written: the steps (Frobenius rescaling at every step, the
    Frobenius norm of the last iterate, the maximum over frequencies) follow
    research/gram.md §2.2 and §3, which checked them against the public code; no code was
    copied.

    Parameters
    ----------
    kernel : torch.Tensor
        ``(c_out, c_in, k, k)``, float32 or float64, any device, ``k <= n``.
    n : int
        Input size (``n x n``).
    n_iter : int
        Number of Gram products ``T``.
    spectrum : {"full", "half"}
        Frequencies iterated over.

    Returns
    -------
    torch.Tensor
        0-d, real, on the kernel's device.
    """
    with _no_tf32(), torch.no_grad():
        d = _frequency_matrices(kernel, n, spectrum)
        g = d.mH if d.shape[-1] > d.shape[-2] else d
        log_scale = torch.zeros(g.shape[0], dtype=kernel.dtype, device=kernel.device)
        for _ in range(n_iter):
            r = torch.linalg.matrix_norm(g, ord="fro")
            g = g / r[:, None, None]
            log_scale = 2.0 * (log_scale + torch.log(r))
            g = g.mH @ g
        r = torch.linalg.matrix_norm(g, ord="fro")
        return torch.exp((torch.log(r) + log_scale) * 2.0**-n_iter).max()


def per_frequency_svd(kernel: torch.Tensor, n: int) -> torch.Tensor:
    """The exact circular norm in the kernel's dtype: the largest singular value over the
    frequency matrices (Sedghi, Gupta & Long, ICLR 2019), by a batched SVD
    (``torch.linalg.matrix_norm(ord=2)``) of the ``rfft2`` half-spectrum (the other
    frequencies are conjugates, with the same singular values)."""
    with _no_tf32(), torch.no_grad():
        return torch.linalg.matrix_norm(_frequency_matrices(kernel, n, "half"), ord=2).max()


# ----------------------------------------------------------------------------- timing
def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(func: Callable[[], Any], device: torch.device) -> float:
    synchronise(device)
    start = time.perf_counter()
    func()
    synchronise(device)
    return time.perf_counter() - start


def interleaved_times(
    funcs: dict[str, Callable[[], Any]], device: torch.device, repeats: int, slow: float
) -> dict[str, tuple[float, int]]:
    """``{name: (median seconds, runs)}``: one untimed warm-up each, then ``repeats`` rounds
    that run every method once in turn. A method whose warm-up took more than ``slow``
    seconds is not repeated: its warm-up is its timing (``runs = 1``)."""
    warm = {name: _timed(func, device) for name, func in funcs.items()}
    times: dict[str, list[float]] = {name: [] for name in funcs}
    for _ in range(repeats):
        for name, func in funcs.items():
            if warm[name] <= slow:
                times[name].append(_timed(func, device))
    return {
        name: (statistics.median(t), len(t)) if t else (warm[name], 1) for name, t in times.items()
    }


def median_time(func, device: torch.device, repeats: int) -> float:
    """Median of ``repeats`` synchronised runs after one untimed warm-up."""
    return interleaved_times({"f": func}, device, repeats, math.inf)["f"][0]


def kernel_for(c: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(c, c, 3, 3, generator=gen, dtype=torch.float64)


# ----------------------------------------------------------------------------- benchmarks
def bench_circular(
    device, cases, repeats, *, n_iter=6, svd_max_channels=None, slow=20.0
) -> list[dict[str, Any]]:
    rows = []
    core = get_method("gram_circular").torch_func
    for c, n in cases:
        k64 = kernel_for(c, seed=c + n)
        spec = ConvSpec("circular", "same", n)
        layer = ConvLayer(k64, spec)
        exact = exact_norm(k64, spec) if c <= EXACT_MAX_CHANNELS else None
        for dtype in (torch.float32, torch.float64):
            kernel = k64.to(device, dtype)
            funcs = {
                "core": partial(core, kernel, layer, n_iter=n_iter),
                "call": partial(spectral_norm, kernel, input_size=n, n_iter=n_iter),
                "published_full": partial(published_circular_gram, kernel, n, n_iter),
                "published_half": partial(
                    published_circular_gram, kernel, n, n_iter, spectrum="half"
                ),
            }
            if svd_max_channels is None or c <= svd_max_channels:
                funcs["svd"] = partial(per_frequency_svd, kernel, n)
            with torch.no_grad():
                values = {name: float(func()) for name, func in funcs.items() if name != "call"}
                timing = interleaved_times(funcs, device, repeats, slow)
            published = min(timing["published_full"][0], timing["published_half"][0])
            row = {
                "method": "gram_circular",
                "channels": c,
                "n": n,
                "dtype": str(dtype).removeprefix("torch."),
                "n_iter": n_iter,
                "issue_case": (c, n) in ISSUE_CASES,
                "exact": exact,
                "values": values,
                "rel_err": {
                    name: None if exact is None else v / exact - 1 for name, v in values.items()
                },
                "ms": {name: 1e3 * t for name, (t, _) in timing.items()},
                "runs": {name: runs for name, (_, runs) in timing.items()},
                "core_over_published": timing["core"][0] / published,
                # kept for readers of the earlier files
                "value": values["core"],
                "ratio": None if exact is None else values["core"] / exact,
                "core_ms": 1e3 * timing["core"][0],
                "call_ms": 1e3 * timing["call"][0],
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def bench_zero(device, cases, repeats) -> list[dict[str, Any]]:
    rows = []
    core = get_method("gram_zero").torch_func
    reference: dict[int, float] = {}
    for c, t in cases:
        k64 = kernel_for(c, seed=c)
        layer = ConvLayer(k64, ConvSpec("zeros"))
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


# ----------------------------------------------------------------------------- report
def command_line() -> str:
    """The command as run, with the environment variables that change the timings."""
    env = [
        f"{k}={os.environ[k]}"
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")
        if k in os.environ
    ]
    return " ".join([*env, "PYTHONPATH=.", "python", shlex.join(sys.argv)])


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU {cpu_model()}, {torch.get_num_threads()} torch thread(s), {os.cpu_count()} cores"


def load_average() -> list[float] | None:
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def _ms(row: dict[str, Any], name: str) -> str:
    if name not in row["ms"]:
        return "not run"
    runs = row["runs"][name]
    return f"{row['ms'][name]:.1f}" + ("" if runs > 1 else " (1 run)")


def _err(row: dict[str, Any], name: str) -> str:
    err = row["rel_err"].get(name)
    return "n/a" if err is None else f"{err:+.1e}"


WHAT_DIFFERS = [
    "Same mathematics, same iterations and dtype: both compute "
    "max over frequencies of the Schatten-2^(T+1) norm of the frequency matrix. What "
    "specbound's core does differently (specbound/bounds/gram.py): the half-spectrum by a "
    "direct DFT of the 3 x 3 taps written frequency-major (no zero-filled n x n grid, no "
    "transposing copy); the first Gram matrix as a product of W* and W both materialised "
    "(no conjugate-transposed operand); later iterates are Hermitian, so G <- G G; each "
    "step normalised by the trace (O(c) per matrix, equal to the squared Frobenius norm of "
    "the previous iterate) instead of a Frobenius-norm pass, in place, into buffers reused "
    "by every step; parts below sqrt(tiny) flushed to zero before each product (no "
    "subnormal arithmetic); the DFT phases cached per layer geometry.",
]

CPU_NOTES = [
    "CPU notes (torch 2.13, profiled with torch.profiler at 64 x 32, float32): the "
    "published formulation spends most of its time outside the Gram products on the CPU: "
    "torch's complex `matrix_norm`/`vector_norm` over a (F, c, c) batch is about 50x "
    "slower than the same norm over its real view (57% of the run), the `bmm` with a "
    "conjugate-transposed operand copies every matrix first, and the complex division by "
    "a real norm is slower than a real multiply. At 512 channels in float32 the iterates "
    "span more decades than float32's exponent range and the products hit subnormal "
    "numbers, about 5x slower on this CPU; specbound flushes them. On a GPU none of these "
    "three costs is as large (cuBLAS takes the conjugate transpose as an operand flag; "
    "subnormals are not slow), so the GPU ratio will be closer to 1: run this script "
    "there (`--device cuda`) for the issue's H100 comparison. On the CPU, LAPACK's "
    "batched SVD of the half-spectrum (values only) is about as fast as 6 Gram "
    "iterations: a bidiagonalisation of a few c^3 flops per matrix against six complex "
    "c x c products; the Gram iteration's advantage is on GPUs, where batched SVD is slow.",
]


def markdown(report: dict[str, Any]) -> str:
    rows = report["gram_circular"]
    lines = [
        "# Gram iteration benchmark",
        "",
        f"- command: `{report['command']}`",
        f"- device: {report['device']}",
        f"- torch {report['torch']}; sizes: {report['sizes']}; timed rounds: "
        f"{report['repeats']} after one warm-up, median; CUDA synchronised; TF32 off",
        f"- load average (1, 5, 15 min) at start: {report['load_average_at_start']}, "
        f"at end: {report['load_average_at_end']}",
        f"- the methods of each case ran **interleaved** (every round runs each once, in "
        f"turn), so load from other users of the machine affects all of them alike; "
        f"a method whose warm-up took over {report['slow_seconds']:g} s ran once",
        f"- wall time of the run: {report['wall_s']:.0f} s",
        "",
        f"## gram_circular vs the published circular Gram iteration (T = "
        f"{rows[0]['n_iter'] if rows else 6}, random Gaussian c x c x 3 x 3 kernels)",
        "",
        "Times in ms. *core* = specbound's torch function on a prepared layer; *call* = "
        "`spectral_norm` (validation included). *published* = `published_circular_gram` in "
        "this file, written from the formulas of Delattre et al. (ICML 2023, Sec. 3): all "
        "n x n frequencies (*full*, `fft2`) or the `rfft2` half (*half*). *core / published* "
        "divides by the faster of the two. *SVD* = batched `matrix_norm(ord=2)` over the "
        "half-spectrum (exact in that dtype). Errors are value / exact float64 circular norm "
        "- 1; float32 values carry float32 rounding and, once converged, can sit ~1e-7 below "
        "the exact norm (research/gram.md §8).",
        "",
        "| channels | n | dtype | core | call | published full | published half "
        "| core / published | SVD | core err | published err | SVD err |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        case = f"**{r['channels']}**" if r["issue_case"] else str(r["channels"])
        lines.append(
            f"| {case} | {r['n']} | {r['dtype']} | {_ms(r, 'core')} | {_ms(r, 'call')} | "
            f"{_ms(r, 'published_full')} | {_ms(r, 'published_half')} | "
            f"{r['core_over_published']:.3f} | {_ms(r, 'svd')} | {_err(r, 'core')} | "
            f"{_err(r, 'published_full')} | {_err(r, 'svd')} |"
        )
    lines += [
        "",
        "Bold: the issue's cases (its reference, published code on an H100, float32, T = 6: "
        "0.7 ms, 3.5 ms and 22 ms; per-frequency SVD 0.2-8.6 s). Those are GPU times and "
        "are not comparable with CPU rows; the comparison here is on one device.",
    ]
    lines += ["", *WHAT_DIFFERS]
    if report["device"].startswith("CPU"):
        lines += ["", *CPU_NOTES]
    if report.get("notes"):
        lines += ["", *report["notes"]]
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
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per case")
    parser.add_argument(
        "--svd-max-channels",
        type=int,
        default=None,
        help="run the per-frequency SVD only up to this many channels (default: all on "
        "CUDA, 256 on the CPU)",
    )
    parser.add_argument(
        "--slow-seconds",
        type=float,
        default=20.0,
        help="a method whose warm-up takes longer is timed once",
    )
    parser.add_argument("--skip-zero", action="store_true", help="skip the gram_zero cases")
    parser.add_argument("--note", action="append", default=[], help="a line added to the markdown")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    sizes = args.sizes
    if sizes == "auto":
        sizes = "full" if device.type == "cuda" else "reduced"
    cases = FULL if sizes == "full" else REDUCED
    svd_max = args.svd_max_channels
    if svd_max is None and device.type != "cuda":
        svd_max = 256
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    start = time.perf_counter()
    report: dict[str, Any] = {
        "command": command_line(),
        "device": device_name(device),
        "torch": torch.__version__,
        "sizes": sizes,
        "repeats": args.repeats,
        "slow_seconds": args.slow_seconds,
        "svd_max_channels": svd_max,
        "load_average_at_start": load_average(),
    }
    report["gram_circular"] = bench_circular(
        device, cases["circular"], args.repeats, svd_max_channels=svd_max, slow=args.slow_seconds
    )
    report["gram_zero"] = [] if args.skip_zero else bench_zero(device, cases["zero"], args.repeats)
    report["load_average_at_end"] = load_average()
    report["wall_s"] = time.perf_counter() - start
    report["notes"] = args.note
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"gram_{device.type}"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
