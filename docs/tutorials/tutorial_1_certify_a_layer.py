"""
Certify a layer and read the certificate
========================================

:func:`specbound.certify` returns a bracket ``lower <= ||A||_2 <= upper`` on the spectral
norm of one convolutional layer: the padding, stride, dilation, groups and input size it
really has, and the kernel's values exactly as given. This tutorial certifies a layer, reads
every field of the certificate, checks it against the exact norm, and shows what a tighter
``rtol`` costs.
"""

# %%
# A layer
# -------
# An 8-to-8-channel 3x3 convolution with zero padding ("same") on 8x8 inputs. The kernel
# is a NumPy array here; a ``torch.Tensor`` or a ``torch.nn.Conv2d`` works as well.
import time

import matplotlib.pyplot as plt
import numpy as np

import specbound as sb

kernel = np.random.default_rng(0).standard_normal((8, 8, 3, 3)) / 8.5
cert = sb.certify(kernel, padding="zeros", input_size=(8, 8), rtol=1e-4)
print(cert.lower, "<= ||A||_2 <=", cert.upper)

# %%
# Reading the certificate
# -----------------------
# * ``lower`` and ``upper``: the bracket. ``upper`` is rigorous: the rounding of every
#   floating-point operation that produced it is accounted for. ``lower`` is the norm of the
#   layer applied to a witness input (``cert.witness``), also rounded safely.
# * ``rel_gap`` and ``converged``: ``(upper - lower) / upper`` and whether it reached ``rtol``.
#   A certificate that did not converge (a time budget, a layer too large for the tight
#   methods) is still a valid bracket, only a wider one; ``notes`` says why.
# * ``upper_method`` and ``lower_method``: which theorem gave each end.
print(f"rel_gap   {cert.rel_gap:.2e}  (rtol {cert.rtol:g}, converged={cert.converged})")
print(f"upper by  {cert.upper_method}")
print(f"lower by  {cert.lower_method}")
print(f"witness   input of shape {cert.witness['input'].shape}")
for note in cert.notes:
    print("note:", note)

# %%
# The witness is an input ``x`` with ``||A x|| / ||x|| >= lower``: run the layer on it.
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

x = torch.from_numpy(cert.witness["input"])[None]
y = F.conv2d(x, torch.from_numpy(kernel), padding=1)
print(
    "||A x|| / ||x|| =",
    float(y.norm() / x.norm()),
    ">= lower:",
    float(y.norm() / x.norm()) >= cert.lower,
)

# %%
# ``to_dict()`` gives the same as JSON-ready values (the witness's shape only, not its values),
# for archiving next to the model:
d = cert.to_dict()
print(sorted(d))

# %%
# Checking it
# -----------
# For a layer this small the exact norm is cheap: :func:`specbound.operators.exact_norm`
# builds the operator in float64. ``cert.verify()`` re-checks the witness and the bracket.
exact = sb.operators.exact_norm(kernel, sb.ConvSpec("zeros", "same", (8, 8)))
print(
    f"exact {exact:.12f} in [{cert.lower:.12f}, {cert.upper:.12f}]:",
    cert.lower <= exact <= cert.upper,
)
print("verify():", cert.verify())

# %%
# Every input size
# ----------------
# Without ``input_size`` the bracket is on the supremum over all input sizes, which is what a
# bound used for a fully convolutional network at any resolution needs.
every = sb.certify(kernel, padding="zeros", rtol=1e-4)
print(f"every size: [{every.lower:.6f}, {every.upper:.6f}]  (8x8: {exact:.6f})")

# %%
# Time against tightness
# ----------------------
# A smaller ``rtol`` costs more work. The bracket is rigorous at every ``rtol``: only its
# width changes.
rtols = [1e-1, 1e-3, 1e-6]
seconds, gaps = [], []
for rtol in rtols:
    start = time.perf_counter()
    c = sb.certify(kernel, padding="zeros", input_size=(8, 8), rtol=rtol)
    seconds.append(time.perf_counter() - start)
    gaps.append(max(c.rel_gap, 1e-17))
    assert c.lower <= exact <= c.upper

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.loglog(gaps, seconds, "o-")
for rtol, gap, sec in zip(rtols, gaps, seconds, strict=True):
    ax.annotate(f"rtol={rtol:g}", (gap, sec), textcoords="offset points", xytext=(4, 4), fontsize=8)
ax.set_xlabel("relative gap reached (upper - lower) / upper")
ax.set_ylabel("seconds")
ax.set_title("certify(): time against tightness, 8x8x3x3 kernel at 8x8")
ax.invert_xaxis()
fig.tight_layout()
