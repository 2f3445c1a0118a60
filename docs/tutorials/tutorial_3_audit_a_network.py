"""
Audit a trained network and read the report
===========================================

:func:`specbound.audit` traces a model, certifies every linear layer at the input size it
really sees, and composes the per-layer bounds over the graph into a guaranteed upper bound on
the L2 Lipschitz constant of the whole network. This tutorial audits the trained digits CNN
bundled with specbound (the network ``specbound audit`` audits from the command line) and
reads the report.
"""

# %%
# The audit
# ---------
import matplotlib.pyplot as plt
import numpy as np
import torch

import specbound as sb

torch.set_num_threads(1)
model = sb.models.bundled_digits_cnn()
print(model)
report = sb.audit(model, (1, 8, 8), rtol=1e-3, progress=False)
print(f"L2 Lipschitz constant of the network <= {report.upper:.6g}")

# %%
# The report
# ----------
# One row per node of the traced graph: the layer, the input size it sees, its certified
# bracket ``[lower, upper]`` and the method that gave it. BatchNorm in eval mode is folded
# into the convolution before it (the folded layer is certified: a bound on the product, not
# the product of bounds). Activations contribute their Lipschitz constants.
print(report.to_markdown())

# %%
# The bound composes along the graph; for a chain it is the product of the layer bounds. The
# report says which lower bound it has: for a nonlinear network there is no certified lower
# bound on the global constant, and the report says so rather than quoting a local estimate.
print("converged:", report.converged)
print("lower:", report.lower, "|", report.to_dict().get("lower_note"))

# %%
# Per-layer bounds
# ----------------
# The certified bracket of every layer with weights, on a log scale: the layers whose upper
# bound is far above 1 are where the network's sensitivity comes from.
rows = [row for row in report.layers if row.lower is not None]
names = [row.name for row in rows]
upper = np.array([row.upper for row in rows])
lower = np.array([row.lower for row in rows])
fig, ax = plt.subplots(figsize=(6, 3.5))
positions = np.arange(len(rows))
ax.bar(positions, upper, color="tab:blue", alpha=0.6, label="certified upper")
ax.scatter(positions, lower, color="black", marker="_", s=300, label="certified lower")
ax.set_xticks(positions, names, rotation=30, ha="right")
ax.set_yscale("log")
ax.set_ylabel("spectral norm bracket")
ax.set_title(f"bundled digits CNN: network L <= {report.upper:.4g}")
ax.legend()
fig.tight_layout()

# %%
# Archiving the result
# --------------------
# ``report.to_json()`` is what ``specbound audit --json`` prints (the command line adds the
# specbound, torch and numpy versions and the command itself).
print(report.to_json()[:400], "...")
