"""
Property-test your own bound
============================

If you implement a bound on the spectral norm of a convolution, :mod:`specbound.testing`
draws the layers to test it on (random geometries and adversarial kernels) and checks it
one-sided against the exact float64 operator. This tutorial tests a plausible bound, lets
Hypothesis find where it fails, and restricts it to where it holds. It needs the ``test``
extra (Hypothesis).
"""

# %%
# The bound to test
# -----------------
# The Schur test on the absolute kernel: the square root of the largest row sum times the
# largest column sum of ``|K|`` summed over the taps. It looks valid for every layer.
import matplotlib.pyplot as plt
import numpy as np
from hypothesis import given, settings

import specbound as sb
from specbound.testing import assert_upper_bound, layers


def my_bound(kernel, spec):
    a = np.abs(kernel).sum(axis=(2, 3))  # (c_out, c_in) sums of |taps|
    return float(np.sqrt(a.sum(axis=0).max() * a.sum(axis=1).max()))


# %%
# A property test
# ---------------
# :func:`~specbound.testing.layers` draws a kernel and a :class:`~specbound.ConvSpec`;
# :func:`~specbound.testing.assert_upper_bound` compares with a bare ``>=`` against the exact
# norm (after an allowance of a few units in the last place).
@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(layers(modes=("zeros", "circular"), need_size=True))
def test_my_bound_is_an_upper_bound(layer):
    kernel, spec = layer
    assert_upper_bound(my_bound(kernel, spec), kernel, spec)


try:
    test_my_bound_is_an_upper_bound()
    print("no counterexample found")
except AssertionError as err:
    print(str(err).splitlines()[0])

# %%
# Hypothesis finds a counterexample and shrinks it: circular padding wider than
# ``dilation*(k-1)`` makes the padded image repeat input pixels, so one tap reads a pixel
# for several outputs and the column sums of the operator exceed those of ``|K|``. The bound
# holds for zero padding of any amount and for the block-circulant circular layers; test it
# on exactly that domain (and keep every counterexample found there with ``@example``).


@settings(max_examples=100, deadline=None, database=None, derandomize=True)
@given(layers(modes=("zeros",)))
def test_my_bound_zero_padding(layer):
    kernel, spec = layer
    assert_upper_bound(my_bound(kernel, spec), kernel, spec)


@settings(max_examples=100, deadline=None, database=None, derandomize=True)
@given(layers(circulant=True))
def test_my_bound_circular(layer):
    kernel, spec = layer
    assert_upper_bound(my_bound(kernel, spec), kernel, spec)


test_my_bound_zero_padding()
test_my_bound_circular()
print("both restricted properties hold")

# %%
# How loose is it?
# ----------------
# A valid bound can still be useless. Compare it with the exact norm on random Gaussian
# kernels of growing width (zero padding, 8x8 inputs):
rng = np.random.default_rng(0)
widths = [1, 2, 4, 8, 16]
ratios = []
for c in widths:
    samples = []
    for _ in range(5):
        kernel = rng.standard_normal((c, c, 3, 3))
        spec = sb.ConvSpec("zeros", "same", (8, 8))
        samples.append(my_bound(kernel, spec) / sb.operators.exact_norm(kernel, spec))
    ratios.append(samples)

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.boxplot(ratios, positions=range(len(widths)))
ax.set_xticks(range(len(widths)), [f"{c}x{c}x3x3" for c in widths])
ax.axhline(1.0, color="black", lw=0.8)
ax.set_ylabel("my_bound / exact norm")
ax.set_title("the Schur bound: valid, and looser as the layer widens")
fig.tight_layout()
