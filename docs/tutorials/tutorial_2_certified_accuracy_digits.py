"""
Train a 1-Lipschitz CNN and report certified robust accuracy
============================================================

A small convolutional network built from :mod:`specbound.layers` is 1-Lipschitz by
construction. After training it on scikit-learn's bundled 8x8 digits (offline, no download),
:func:`specbound.audit` certifies its Lipschitz constant ``L`` and :mod:`specbound.metrics`
turns logits and ``L`` into the fraction of test digits whose class provably cannot change
under any L2 perturbation of a given size. Last, :func:`specbound.layers.export_model` turns
the trained network into plain ``nn.Conv2d``/``nn.Linear`` modules.
"""

# %%
# Data: 1797 digits of 8x8 pixels, scaled to [0, 1]
# -------------------------------------------------
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import specbound as sb
from specbound.layers import AOLConv2d, AOLLinear, MaxMin, export_model
from specbound.metrics import certified_accuracy, certified_radius

torch.manual_seed(0)
torch.set_num_threads(1)
digits = load_digits()
x = torch.tensor(digits.images / 16.0, dtype=torch.float32)[:, None]  # (N, 1, 8, 8)
y = torch.tensor(digits.target)
x_train, x_test, y_train, y_test = train_test_split(
    x, y, test_size=0.25, random_state=0, stratify=y
)
print(x_train.shape, x_test.shape)

# %%
# A 1-Lipschitz network
# ---------------------
# AOL convolutions and linear layers (Prach & Lampert, ECCV 2022) rescale their weights so
# that each layer's spectral norm is at most 1; MaxMin is a 1-Lipschitz activation that keeps
# the gradient norm. Their composition is 1-Lipschitz.
model = nn.Sequential(
    AOLConv2d(1, 16, 3),
    MaxMin(),
    AOLConv2d(16, 32, 3, stride=2),  # 8x8 -> 4x4
    MaxMin(),
    nn.Flatten(),
    AOLLinear(32 * 4 * 4, 64),
    MaxMin(),
    AOLLinear(64, 10),
)

# %%
# Training with a margin
# ----------------------
# The loss of Prach & Lampert (2022, Sec. 5): cross-entropy on the logits with the true
# class lowered by an offset, so that the network learns margins and not only the right
# argmax.
epochs = 20
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
offset, temperature = 0.7, 0.25
for epoch in range(epochs):
    model.train()
    for idx in torch.randperm(len(x_train)).split(64):
        logits = model(x_train[idx])
        shifted = logits - offset * F.one_hot(y_train[idx], 10)
        loss = temperature * F.cross_entropy(shifted / temperature, y_train[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    schedule.step()
    if epoch % 5 == 4:
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}")

# %%
# Certify the Lipschitz constant
# ------------------------------
# "1-Lipschitz by construction" is a claim about the layer's formula. The audit certifies
# each trained layer at the input size it sees and composes the bounds: a guaranteed upper
# bound on ``L`` for the weights as trained.
model.eval()
report = sb.audit(model, (1, 8, 8), rtol=1e-2, progress=False)
lipschitz = report.upper
print(f"certified L <= {lipschitz:.6f}")

# %%
# Certified robust accuracy
# -------------------------
# A test digit with margin ``m`` (top logit minus the runner-up) keeps its class for every
# perturbation of L2 norm below ``m / (sqrt(2) L)``; it counts as certified at radius
# ``eps`` when that radius exceeds ``eps`` (:mod:`specbound.metrics` states the convention).
with torch.no_grad():
    logits = model(x_test)
radii = np.linspace(0.0, 1.0, 21)
accuracy = certified_accuracy(logits, y_test, lipschitz, radii)
for eps in (0.0, 0.1, 0.25, 0.5, 1.0):
    acc = certified_accuracy(logits, y_test, lipschitz, eps)
    print(f"certified accuracy at L2 radius {eps:<4}: {100 * acc:5.1f}%")

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(radii, 100 * accuracy, "o-", ms=3)
ax.set_xlabel("L2 radius eps (pixels in [0, 1]; an 8x8 image has norm up to 8)")
ax.set_ylabel("certified accuracy (%)")
ax.set_title(f"digits test set, certified L <= {lipschitz:.4f}")
ax.set_ylim(0, 100)
ax.grid(alpha=0.3)
fig.tight_layout()

# %%
# The per-digit radii, for instance the median over correctly classified digits:
r = certified_radius(logits, y_test, lipschitz)
print(f"median certified radius of correct digits: {np.median(r[r > 0]):.3f}")

# %%
# Export to plain PyTorch
# -----------------------
# For deployment the constraint is no longer needed: :func:`~specbound.layers.export_model`
# replaces each specbound layer by an ``nn.Conv2d`` or ``nn.Linear`` with the constrained
# weights and checks on an example batch that the outputs agree.
plain = export_model(model, x_test[:64])
print(plain)
with torch.no_grad():
    print("max |difference| on the test set:", float((plain(x_test) - logits).abs().max()))
