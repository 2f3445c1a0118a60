"""Every-size certificates of wide random kernels (flat symbols): time and refinement levels.

Usage::

    python benchmarks/bench_cells.py [--before PATH] [--repeat 2] [--out benchmarks/results]

For issue 11 item 3 (tighter cell caps, docs/certify.md L8). Each case runs in a fresh
subprocess per version, alternating the version given by ``--before`` (a directory holding an
older ``specbound`` package, e.g. from ``git archive <commit> specbound``) and this checkout,
so both are measured under the same load; within a subprocess, one warm-up run then the median
of ``--repeat`` runs. Levels and symbol evaluations are read from the certificate's notes.
Writes ``cells_<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CASES = [(64, 1e-3), (64, 1e-4), (128, 1e-3)]

CHILD = r"""
import json, re, statistics, sys, time
import numpy as np, torch
import specbound as sb
c, rtol, repeat = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
gen = torch.Generator().manual_seed(0)
k = (torch.randn(c, c, 3, 3, generator=gen, dtype=torch.float64) / np.sqrt(9 * c)).numpy()
times = []
for i in range(repeat + 1):
    t = time.perf_counter()
    cert = sb.certify(k, "zeros", input_size=None, rtol=rtol)
    if i:
        times.append(time.perf_counter() - t)
note = next(n for n in cert.notes if "symbol evaluations" in n)
ev, lv = (int(v) for v in re.findall(r"(\d+) symbol evaluations over (\d+) levels", note)[0])
print(json.dumps({"median_s": statistics.median(times), "runs_s": times, "levels": lv,
    "evaluations": ev, "upper": cert.upper, "lower": cert.lower, "rel_gap": cert.rel_gap,
    "converged": cert.converged, "package": sb.__file__}))

"""


def child(path: str, c: int, rtol: float, repeat: int) -> dict:
    env = {**os.environ, "PYTHONPATH": path}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(c), str(rtol), str(repeat)],
        env=env,
        cwd=path,  # ``python -c`` puts the working directory first on sys.path
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="directory holding the old specbound")
    parser.add_argument("--before-label", default="before")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    here = str(Path(__file__).resolve().parents[1])
    before = str(Path(args.before).resolve())
    load_start = os.getloadavg()
    rows = []
    for c, rtol in CASES:
        row = {"channels": c, "rtol": rtol}
        for label, path in ((args.before_label, before), ("after", here)):
            row[label] = child(path, c, rtol, args.repeat)
        rows.append(row)
        print(json.dumps(row), flush=True)
    meta = {
        "command": "python " + " ".join(sys.argv),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cells_cpu.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        "# Every-size cell caps: before and after (CPU)",
        "",
        f"Command: `OMP_NUM_THREADS={meta['omp_num_threads']} {meta['command']}`, "
        f"{meta['date']}. He-scaled random 3x3 kernels (c -> c), zero padding, "
        "`input_size=None`. Each version in a fresh subprocess, alternating; one warm-up run, "
        f"median of {args.repeat}. Load average (1, 5, 15 min) at start "
        f"{tuple(round(x, 2) for x in load_start)}, at end "
        f"{tuple(round(x, 2) for x in meta['load_average_end'])}.",
        "",
        "| channels | rtol | version | time | levels | symbol evaluations | rel_gap | converged |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for label in (args.before_label, "after"):
            v = r[label]
            lines.append(
                f"| {r['channels']} | {r['rtol']:g} | {label} | {v['median_s']:.2f} s | "
                f"{v['levels']} | {v['evaluations']} | {v['rel_gap']:.2e} | {v['converged']} |"
            )
    (out / "cells_cpu.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
