"""specbound: certified spectral norms (L2 Lipschitz constants) of convolutional layers.

* :func:`certify` — a rigorous bracket ``lower <= ||A||_2 <= upper`` for one layer;
* :mod:`specbound.operators` — exact float64 ground truth;
* :mod:`specbound.bounds` and :func:`methods` — every published bound, labelled;
* :func:`spectral_norm` — differentiable bounds for training;
* :mod:`specbound.layers` — 1-Lipschitz layers and ConvNorm;
* :mod:`specbound.testing` — Hypothesis strategies and assertions (``import specbound.testing``;
  needs the ``test`` extra).
"""

from . import bounds, layers, operators
from ._version import __version__
from .bounds import methods
from .certify import Certificate, certify
from .spec import ConvSpec, Layer, TooLargeError
from .spectral_norm import spectral_norm

__all__ = [
    "Certificate",
    "ConvSpec",
    "Layer",
    "TooLargeError",
    "__version__",
    "bounds",
    "certify",
    "layers",
    "methods",
    "operators",
    "spectral_norm",
]
