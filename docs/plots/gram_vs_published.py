"""specbound's circular Gram iteration against the published algorithm on the same device
(``benchmarks/results/gram_cpu.json``, written by ``benchmarks/bench_gram.py``)."""

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

RESULTS = Path("../../benchmarks/results/gram_cpu.json")  # run from docs/plots
SERIES = [("core", "specbound"), ("published_half", "published (rfft2)"), ("svd", "batched SVD")]

data = json.loads(RESULTS.read_text())
rows = data["gram_circular"]
labels = [f"{r['channels']}ch n={r['n']}\n{r['dtype']}" for r in rows]
x = np.arange(len(rows))
width = 0.27
fig, ax = plt.subplots(figsize=(7.5, 3.8))
for i, (key, name) in enumerate(SERIES):
    ms = [r["ms"].get(key, np.nan) for r in rows]
    ax.bar(x + (i - 1) * width, ms, width, label=name)
ax.set_yscale("log")
ax.set_xticks(x, labels, fontsize=7)
ax.set_ylabel("time (ms), T = 6")
ax.set_title(f"Circular Gram iteration, {data['device']}", fontsize=9)
ax.legend(fontsize=8)
fig.tight_layout()
