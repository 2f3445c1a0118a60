"""``specbound.certify`` side by side with the published Gram iterations and float64 LAPACK.

Usage::

    python benchmarks/bench_certify.py [--quick] [--repeat 3] [--out benchmarks/results]

Issue 11's targets. Layers: 3x3, He-scaled random kernels (64ch n=32, 128ch n=16, 256ch n=16,
512ch n=8) and the trained digits-CNN's convolutions (n=8). Regimes, each against its peers,
all measured in one process and *interleaved* (one run of every method of a case, then the
next round), one warm-up round, the median of the warm rounds reported:

The peers' layers are float32 by default (``--peer-dtype``), as users run them.

* circular at ``n``, ``rtol=1e-6``: orthogonium 0.0.4 ``get_conv_sv`` (circular Gram
  iteration, 6 iterations, ``imsize=n``) and float64 ``rfft2`` + batched ``svdvals``
  (exact, not rigorous);
* zeros at ``n``, ``rtol=1e-3`` for ``n >= 32`` else ``1e-2``: orthogonium's zero-padding
  kernel Gram bound (4 iterations; about 10% loose);
* every size, ``rtol=1e-3`` and ``1e-4``: the same peer.

With ``--groups`` the grouped cases instead (issue 11 item 5): a depthwise 3x3 layer with 128
channels (``groups=128``) and a 64-channel layer with ``groups=4``, at ``n=32``: zeros at
``rtol`` 1e-3 and 1e-2, replicate at 1e-3, circular at 1e-6, every size at 1e-3. Each is
certified group by group (the current ``certify``) and, interleaved in the same process, on
the whole layer as before (``certify`` with its dispatch set to the ungrouped route):
before/after. Writes
``certify_groups_<device>.json`` and ``.md``.

A case whose warm-up round has a method taking more than ``--slow`` seconds is measured
once more only; with ``--huge H``, a case whose warm-up round has a method taking more than
``H`` seconds is not rerun: that first round is the measurement (minutes per call, where a
warm run would not differ). The load average is recorded at the start and the end: the
machine may be shared, so read the *ratios*, not the absolute times. Writes
``certify_<device>.json`` and ``.md`` with the exact command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import specbound as sb

LAYERS = [(64, 32), (128, 16), (256, 16), (512, 8)]
QUICK = [(64, 32), (128, 16)]
REGIMES = ["circular", "zeros", "every size 1e-3", "every size 1e-4"]


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def he_kernel(c: int, seed: int = 0) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(c, c, 3, 3, generator=gen, dtype=torch.float64) / np.sqrt(9 * c)).numpy()


def digits_kernels() -> list[tuple[str, np.ndarray, int]]:
    model = sb.models.bundled_digits_cnn()
    return [
        (f"digits {name}", m.weight.detach().double().numpy(), 8)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
    ]


def _conv(kernel: np.ndarray, padding_mode: str, dtype: torch.dtype) -> torch.nn.Conv2d:
    c_out, c_in, kh, kw = kernel.shape
    conv = torch.nn.Conv2d(c_in, c_out, (kh, kw), padding=kh // 2, padding_mode=padding_mode)
    conv = conv.to(dtype)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(kernel).to(dtype))
    return conv


def methods(kernel: np.ndarray, n: int, regime: str, device: str, max_seconds: float, peer_dtype):
    """``{name: callable -> (upper, lower or None)}`` for one case."""
    from orthogonium.layers.conv.singular_values import get_conv_sv

    def specbound(padding, size, rtol):
        def run():
            cert = sb.certify(
                kernel, padding, input_size=size, rtol=rtol, device=device, max_seconds=max_seconds
            )
            return cert.upper, cert.lower, cert.converged

        return run

    if regime == "circular":
        conv = _conv(kernel, "circular", peer_dtype)

        def fft_svdvals():
            k = torch.from_numpy(kernel).to(device)
            spec = torch.fft.rfft2(k, s=(n, n))  # (c_out, c_in, n, n//2+1)
            s = torch.linalg.svdvals(spec.permute(2, 3, 0, 1)).amax()
            return float(s), None, None

        return {
            "specbound": specbound("circular", (n, n), 1e-6),
            "orthogonium GI (6 it.)": lambda: (
                float(get_conv_sv(conv, 6, return_stab_rank=False, imsize=n, device=device)),
                None,
                None,
            ),
            "float64 rfft2 + svdvals": fft_svdvals,
        }
    conv = _conv(kernel, "zeros", peer_dtype)
    peer = {
        "orthogonium kernel GI (4 it.)": lambda: (
            float(get_conv_sv(conv, 4, return_stab_rank=False, device=device)),
            None,
            None,
        )
    }
    if regime == "zeros":
        return {"specbound": specbound("zeros", (n, n), 1e-3 if n >= 32 else 1e-2), **peer}
    rtol = 1e-3 if regime.endswith("1e-3") else 1e-4
    return {"specbound": specbound("zeros", None, rtol), **peer}


GROUPED = [("depthwise 128ch g=128", 128, 1, 128), ("64ch g=4", 64, 16, 4)]
GROUP_REGIMES = ["zeros 1e-3", "zeros 1e-2", "replicate 1e-3", "circular", "every size 1e-3"]


def grouped_kernel(c_out: int, c_in_g: int, seed: int = 0) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    k = torch.randn(c_out, c_in_g, 3, 3, generator=gen, dtype=torch.float64)
    return (k / np.sqrt(9 * c_in_g)).numpy()


def group_methods(kernel, n, groups, regime, device, max_seconds):
    """``{name: callable}``: certify group by group, and on the whole layer as before."""
    import importlib

    certify_module = importlib.import_module("specbound.certify")

    padding = "zeros" if regime.startswith("every") else regime.split()[0]
    size = None if regime.startswith("every") else (n, n)
    rtol = 1e-6 if regime == "circular" else float(regime.split()[-1])

    def run(whole: bool):
        def call():
            saved = certify_module._route
            if whole:  # the dispatch before grouped layers were split (issue 11 item 5)
                certify_module._route = certify_module._layer_route
            try:
                cert = sb.certify(
                    kernel,
                    padding,
                    input_size=size,
                    groups=groups,
                    rtol=rtol,
                    device=device,
                    max_seconds=max_seconds,
                )
            finally:
                certify_module._route = saved
            return cert.upper, cert.lower, cert.converged

        return call

    return {"specbound": run(False), "specbound before (whole layer)": run(True)}


def run_case(
    name, kernel, n, regime, device, repeat, slow, max_seconds, peer_dtype, groups=None, huge=None
):
    if groups is None:
        fns = methods(kernel, n, regime, device, max_seconds, peer_dtype)
    else:
        fns = group_methods(kernel, n, groups, regime, device, max_seconds)
    times: dict[str, list[float]] = {k: [] for k in fns}
    values: dict[str, tuple] = {}

    def one_round():
        for key, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            values[key] = fn()
            sync(device)
            times[key].append(time.perf_counter() - start)

    one_round()  # warm-up
    warm = {k: v[0] for k, v in times.items()}
    for k in times:
        times[k].clear()
    rounds = 1 if max(warm.values()) > slow else repeat
    if huge is not None and max(warm.values()) > huge:
        rounds = 0  # the first (cold) round is the measurement: minutes per call
        for k, v in warm.items():
            times[k].append(v)
    for _ in range(rounds):
        one_round()
    up, low, converged = values["specbound"]
    med = {k: statistics.median(v) for k, v in times.items()}
    row = {
        "layer": name,
        "input": n,
        "regime": regime,
        "rounds": rounds,
        "specbound_upper": up,
        "specbound_lower": low,
        "specbound_rel_gap": (up - low) / up if up > 0 else 0.0,
        "specbound_converged": converged,
        "median_s": med,
        "runs_s": times,
        "warmup_s": warm,
        "values": {k: v[0] for k, v in values.items()},
    }
    row["ratios"] = {k: med["specbound"] / med[k] for k in med if k != "specbound"}
    row["peer_value_over_lower"] = {
        k: v[0] / low for k, v in values.items() if k != "specbound" and low and low > 0
    }
    if groups is not None:
        row["groups"] = groups
        row["before_upper"], row["before_lower"], row["before_converged"] = values[
            "specbound before (whole layer)"
        ]
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="64ch n=32 and 128ch n=16 only")
    parser.add_argument("--layers", default=None, help="e.g. 256x16,512x8 (channels x size)")
    parser.add_argument("--tag", default="", help="suffix of the result files")
    parser.add_argument(
        "--peer-dtype", default="float32", help="dtype of the peers' layers (their default)"
    )
    parser.add_argument("--regimes", default=",".join(REGIMES), help="comma-separated subset")
    parser.add_argument("--digits", action="store_true", help="add the digits-CNN kernels")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--slow", type=float, default=10.0)
    parser.add_argument(
        "--huge", type=float, default=None, help="no rerun when the warm-up took more (s)"
    )
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--groups", action="store_true", help="the grouped cases instead")
    args = parser.parse_args(argv)
    if args.groups:
        return main_groups(args)
    load_start = os.getloadavg()
    chosen = QUICK if args.quick else LAYERS
    if args.layers:
        chosen = [tuple(int(v) for v in item.split("x")) for item in args.layers.split(",")]
    layers = [(f"He {c}ch", he_kernel(c), n) for c, n in chosen]
    if args.digits:
        layers += digits_kernels()
    regimes = [r.strip() for r in args.regimes.split(",") if r.strip()]
    rows = []
    for name, kernel, n in layers:
        for regime in regimes:
            row = run_case(
                name,
                kernel,
                n,
                regime,
                args.device,
                args.repeat,
                args.slow,
                args.max_seconds,
                getattr(torch, args.peer_dtype),
                huge=args.huge,
            )
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = {
        "device": device_name(args.device),
        "torch": torch.__version__,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "peer_dtype": args.peer_dtype,
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = ("cuda" if args.device.startswith("cuda") else "cpu") + args.tag
    (out / f"certify_{tag}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        f"# certify side by side ({meta['device']})",
        "",
        f"Command: `OMP_NUM_THREADS={meta['omp_num_threads']} {meta['command']}` — torch "
        f"{meta['torch']}, {meta['date']}. Interleaved rounds, median of the warm rounds "
        "(one round when a method's warm-up took more than "
        f"{args.slow:g} s"
        + ("" if args.huge is None else f"; the first round when one took over {args.huge:g} s")
        + "). Load average (1, 5, 15 min) at start "
        f"{tuple(round(x, 2) for x in load_start)}, at end "
        f"{tuple(round(x, 2) for x in meta['load_average_end'])}: the machine is shared, "
        f"read the ratios. The peers run in {args.peer_dtype} (orthogonium's default), "
        "specbound and the LAPACK reference in float64.",
        "",
        "Targets (issue 11): circular <= 1.0x the Gram iteration at 6 iterations and <= 3x "
        "rfft2 + svdvals; zeros n >= 32 <= 1.0x the kernel Gram bound (n < 32: <= 3x); every "
        "size rtol 1e-3 <= 1.0x, rtol 1e-4 <= 2x.",
        "",
        "| layer | n | regime | specbound time | rel_gap | converged | peer | peer time | "
        "ratio | peer value / lower |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for peer, ratio in r["ratios"].items():
            tight = r["peer_value_over_lower"].get(peer)
            lines.append(
                f"| {r['layer']} | {r['input']} | {r['regime']} | "
                f"{r['median_s']['specbound']:.3f} s | {r['specbound_rel_gap']:.2e} | "
                f"{r['specbound_converged']} | {peer} | {r['median_s'][peer]:.3f} s | "
                f"{ratio:.2f}x | {'' if tight is None else f'{tight:.4f}'} |"
            )
    (out / f"certify_{tag}.md").write_text("\n".join(lines) + "\n")
    return 0


def main_groups(args) -> int:
    """The grouped cases, before (whole layer) and after (group by group)."""
    load_start = os.getloadavg()
    regimes = [r.strip() for r in args.regimes.split(",") if r.strip()]
    if set(regimes) == set(REGIMES):
        regimes = GROUP_REGIMES
    rows = []
    for name, c_out, c_in_g, groups in GROUPED:
        kernel = grouped_kernel(c_out, c_in_g)
        for regime in regimes:
            row = run_case(
                name,
                kernel,
                32,
                regime,
                args.device,
                args.repeat,
                args.slow,
                args.max_seconds,
                None,
                groups=groups,
            )
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = {
        "device": device_name(args.device),
        "torch": torch.__version__,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = ("cuda" if args.device.startswith("cuda") else "cpu") + args.tag
    (out / f"certify_groups_{tag}.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=2)
    )
    lines = [
        f"# certify on grouped layers, group by group against the whole layer ({meta['device']})",
        "",
        f"Command: `OMP_NUM_THREADS={meta['omp_num_threads']} {meta['command']}` — torch "
        f"{meta['torch']}, {meta['date']}. Interleaved rounds (after, then before, in one "
        "process), median of the warm rounds (one round when a method's warm-up took more "
        f"than {args.slow:g} s). Load average (1, 5, 15 min) at start "
        f"{tuple(round(x, 2) for x in load_start)}, at end "
        f"{tuple(round(x, 2) for x in meta['load_average_end'])}. n = 32, 3x3 kernels, "
        "He-scaled per group. 'before' is certify with its dispatch set to the ungrouped "
        "route (the whole grouped layer, as before issue 11 item 5).",
        "",
        "| layer | regime | after (group by group) | rel_gap | converged | before (whole "
        "layer) | rel_gap | converged | speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        med = r["median_s"]
        before = med["specbound before (whole layer)"]
        b_up, b_low = r["before_upper"], r["before_lower"]
        b_gap = (b_up - b_low) / b_up if b_up > 0 else 0.0
        lines.append(
            f"| {r['layer']} | {r['regime']} | {med['specbound']:.3f} s | "
            f"{r['specbound_rel_gap']:.2e} | {r['specbound_converged']} | {before:.3f} s | "
            f"{b_gap:.2e} | {r['before_converged']} | {before / med['specbound']:.1f}x |"
        )
    (out / f"certify_groups_{tag}.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
