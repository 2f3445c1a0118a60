"""Time against tightness of every method on the ResNet-18 layer shapes
(``benchmarks/results/bounds_cpu.json``, written by ``benchmarks/bench_bounds.py``)."""

import json
from pathlib import Path

import matplotlib.pyplot as plt

RESULTS = Path("../../benchmarks/results/bounds_cpu.json")  # run from docs/plots
MARKERS = {"exact": "s", "upper": "^", "lower": "v", "estimate": "o"}

data = json.loads(RESULTS.read_text())
fig, ax = plt.subplots(figsize=(7.5, 4.0))
methods = sorted({m for case in data["cases"] for m in case["methods"]})
colours = plt.get_cmap("tab20")
for i, name in enumerate(methods):
    points = [
        (r["time_s"], abs(r["ratio"] - 1), r["kind"])
        for case in data["cases"]
        if (r := case["methods"].get(name)) and r.get("status") == "ok" and r.get("ratio")
    ]
    if not points:
        continue
    xs, ys, kinds = zip(*points, strict=True)
    ys = [max(y, 1e-16) for y in ys]
    ax.scatter(xs, ys, marker=MARKERS.get(kinds[0], "o"), color=colours(i), label=name)
ax.set_xscale("log")
ax.set_yscale("log")
ax.set_xlabel("time (s)")
ax.set_ylabel("|value / reference - 1|")
ax.set_title(f"ResNet-18 layer shapes, {data['device']}")
ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
fig.tight_layout()
