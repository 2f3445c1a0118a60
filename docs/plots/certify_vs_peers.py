"""``certify()`` against its peers, per layer and regime: specbound's median time as a ratio to
each peer's, and the tightness of both (``benchmarks/results/certify_cpu.json`` and
``certify_cpu_large.json``, written by ``benchmarks/bench_certify.py``)."""

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

RESULTS = [  # run from docs/plots
    Path("../../benchmarks/results/certify_cpu.json"),
    Path("../../benchmarks/results/certify_cpu_large.json"),
]


def target(regime, n, peer):
    """Issue 11's ceiling on specbound time / peer time."""
    if regime == "circular":
        return 3.0 if "svdvals" in peer else 1.0
    if regime == "zeros":
        return 1.0 if n >= 32 else 3.0
    return 2.0 if regime.endswith("1e-4") else 1.0


runs = [json.loads(p.read_text()) for p in RESULTS if p.exists()]
bars = [
    (row, peer)
    for data in runs
    for row in data["rows"]
    for peer in row["median_s"]
    if peer != "specbound"
]
labels = [f"{row['layer']} n={row['input']}, {row['regime']}\nvs {peer}" for row, peer in bars]
ratio = [row["median_s"]["specbound"] / row["median_s"][peer] for row, peer in bars]
ceiling = [target(row["regime"], row["input"], peer) for row, peer in bars]
ours = [max(row["specbound_rel_gap"], 1e-16) for row, _ in bars]
theirs = [
    max(v - 1, 1e-16) if (v := row.get("peer_value_over_lower", {}).get(peer)) else np.nan
    for row, peer in bars
]

y = np.arange(len(bars))[::-1]
fig, (left, right) = plt.subplots(
    1, 2, figsize=(9.0, 0.42 * len(bars) + 1.2), sharey=True, width_ratios=(1, 1)
)
met = ["tab:green" if r <= c else "tab:red" for r, c in zip(ratio, ceiling, strict=True)]
left.barh(y, ratio, 0.6, color=met)
left.scatter(ceiling, y, marker="|", s=300, color="black", label="issue 11 target", zorder=3)
left.axvline(1.0, color="grey", lw=0.6, ls=":")
left.set_xscale("log")
left.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
left.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
left.xaxis.set_minor_formatter(NullFormatter())
left.set_xlabel("specbound time / peer time (green: target met)")
left.set_yticks(y, labels, fontsize=7)
left.legend(fontsize=7, loc="lower right")

height = 0.38
right.barh(y + height / 2, ours, height, label="specbound rel_gap (certified)")
right.barh(y - height / 2, theirs, height, label="peer value / specbound lower - 1")
right.set_xscale("log")
right.set_xlabel("looseness")
right.legend(fontsize=7, loc="lower right")
fig.suptitle(f"certify() against its peers, {runs[0]['meta']['device']}", fontsize=9)
fig.tight_layout()
