"""specbound: certified spectral norms (L2 Lipschitz constants) of convolutional layers.

* :func:`certify` — a rigorous bracket ``lower <= ||A||_2 <= upper`` for one layer;
* :mod:`specbound.operators` — exact float64 ground truth;
* :mod:`specbound.bounds` and :func:`methods` — every published bound, labelled;
* :func:`spectral_norm` — differentiable bounds for training;
* :mod:`specbound.layers` — 1-Lipschitz layers and ConvNorm;
* :func:`audit` — per-layer certificates and a whole-network bound;
* :mod:`specbound.testing` — Hypothesis strategies and assertions (``import specbound.testing``;
  needs the ``test`` extra).
"""

from . import bounds, layers, models, operators
from ._version import __version__
from .audit import AuditError, AuditReport, LayerBound, audit
from .bounds import methods
from .certify import Certificate, certify
from .spec import ConvSpec, Layer, TooLargeError
from .spectral_norm import spectral_norm

__all__ = [
    "AuditError",
    "AuditReport",
    "Certificate",
    "ConvSpec",
    "Layer",
    "LayerBound",
    "TooLargeError",
    "__version__",
    "audit",
    "bounds",
    "certify",
    "layers",
    "methods",
    "models",
    "operators",
    "spectral_norm",
]
