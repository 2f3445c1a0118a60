"""Transposed and 1-D/3-D layers as specbound's :class:`~specbound.operators.ConvLayer`
builds them: a transposed convolution is the adjoint of its forward convolution.

``certify`` certifies a ``ConvTranspose1d/2d`` (or a transposed spec) on
``ConvLayer.forward_layer()``; this checks, against torch's own ``conv_transpose{d}d`` in
float64 for d = 1, 2, 3, that the transposed layer's matrix is exactly the transpose of that
forward layer's. The planted variant uses the whole forward convolution also when
``output_padding >= stride`` (which PyTorch allows below the dilation): it must fail.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from specbound.operators import ConvLayer
from specbound.spec import ConvSpec

from ..harness import Search, Skip, run
from ..registry import Theorem, register

FAMILY = "ConvLayer geometry (transposed, 1-D, 3-D)"
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _instances(rng: np.random.Generator, count: int):
    for _ in range(count):
        d = int(rng.integers(1, 4))
        g = int(rng.choice([1, 2]))
        c_in, c_out = g * int(rng.integers(1, 3)), g * int(rng.integers(1, 3))
        k = tuple(int(v) for v in rng.integers(1, 3 if d == 3 else 4, size=d))
        s = tuple(int(v) for v in rng.integers(1, 3, size=d))
        dil = tuple(int(v) for v in rng.integers(1, 4, size=d))
        pad = tuple(int(rng.integers(0, dl * (kk - 1) + 1)) for dl, kk in zip(dil, k, strict=True))
        opad = tuple(int(rng.integers(0, max(si, dl))) for si, dl in zip(s, dil, strict=True))
        n = tuple(int(v) for v in rng.integers(1, 4 if d == 3 else 5, size=d))
        w = rng.normal(size=(c_in, c_out // g, *k))
        yield w, s, pad, opad, dil, g, n


def _torch_dense(w, s, pad, opad, dil, g, n) -> np.ndarray:
    d, c_in = len(n), w.shape[0]
    wt = torch.from_numpy(w)
    m = c_in * math.prod(n)
    eye = torch.eye(m, dtype=torch.float64).reshape(m, c_in, *n)
    with torch.no_grad():
        out = _CONV_T[d](eye, wt, None, s, pad, opad, g, dil)
    return out.reshape(m, -1).T.numpy()


def _margin(instance, planted: bool = False) -> float:
    w, s, pad, opad, dil, g, n = instance
    d = len(n)
    try:
        expected = _torch_dense(w, s, pad, opad, dil, g, n)
    except RuntimeError:
        raise Skip from None
    if expected.size == 0:
        raise Skip
    spec = ConvSpec("zeros", pad, n, s, dil, g, ndim=d, transposed=True, output_padding=opad)
    layer = ConvLayer(w, spec)
    dense = layer.dense()
    scale = float(np.abs(expected).max(initial=0.0)) or 1.0
    if dense.shape != expected.shape:
        return -1.0
    err = float(np.abs(dense - expected).max(initial=0.0)) / scale
    if planted:  # "the whole forward convolution at the output size is the adjoint"
        fwd = ConvLayer(w, ConvSpec("zeros", layer.pads, layer.out_size, s, dil, g, ndim=d))
        adj = fwd.dense().T
    else:
        if any(o >= si for o, si in zip(opad, s, strict=True)):
            raise Skip  # outside the rule: forward_layer() refuses, certify refuses
        adj = layer.forward_layer().dense().T
    if adj.shape != expected.shape:
        return -1.0
    return -max(err, float(np.abs(adj - expected).max(initial=0.0)) / scale)


def convt_layer_search(planted: bool = False) -> Search:
    """The search of CERT-CONVT, or of its planted false variant."""
    return Search(
        lambda inst: _margin(inst, planted),
        tolerance=1e-12,
        random=_instances,
        n_random=(120, 1200),
        n_hypothesis=(0, 0),
        key="CERT-CONVT" + ("-planted" if planted else ""),
    )


register(
    Theorem(
        id="CERT-CONVT",
        title="ConvLayer: a transposed layer is the adjoint of its forward convolution",
        statement="For d = 1, 2, 3, ConvLayer(W, transposed spec).dense() equals the matrix of "
        "torch's conv_transpose{d}d(W, stride, padding, output_padding, groups, dilation), and "
        "when output_padding < stride on every axis it equals forward_layer().dense().T, the "
        "transpose of the zero-padded convolution with the same weight, stride, dilation, "
        "groups and pads on inputs of the transposed layer's output size; so both have the "
        "same spectral norm, and certify certifies the forward convolution.",
        latex=r"T_{W}^{(n)} = \big(C_{W}^{(L)}\big)^\top,\ "
        r"L = (n-1)s - p_{lo} - p_{hi} + \delta(k-1) + o + 1",
        source="PyTorch's definition of the transposed convolution as the gradient of the "
        "convolution (docs/certify.md, 'Transposed, 1-D and 3-D layers')",
        conditions="d = 1 to 3, 1-2 groups, kernels up to 3 per axis (2 in 3-D), strides 1-2, "
        "dilations 1-3, pads up to dilation*(k-1), output_padding below max(stride, dilation) "
        "(instances with output_padding >= stride are outside the rule and skipped), inputs "
        "up to 4 per axis (3 in 3-D); entrywise, relative tolerance 1e-12",
        relied_on=True,
        check=lambda mode: run(convt_layer_search(), mode),
        proof="Entry (i, j) of the transposed layer holds W[j_c, i_c, a] exactly when output "
        "position i = s j - p_lo + dilation a; entry (j, i) of the forward convolution at "
        "size L holds the same tap exactly when it reads padded position s j + dilation a = "
        "i + p_lo. With output_padding < stride the forward convolution has exactly n "
        "outputs per axis (floor(((n-1)s + o)/s) + 1 = n), so the matrices are transposes.",
        family=FAMILY,
    )
)
