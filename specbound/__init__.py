"""specbound: certified spectral norms (L2 Lipschitz constants) of convolutional layers.

* :func:`certify` — a rigorous bracket ``lower <= ||A||_2 <= upper`` for one layer;
* :mod:`specbound.operators` — exact float64 ground truth;
* :mod:`specbound.bounds` and :func:`methods` — every published bound, labelled;
* :func:`spectral_norm` — differentiable bounds for training;
* :mod:`specbound.layers` — 1-Lipschitz layers and ConvNorm;
* :func:`audit` — per-layer certificates and a whole-network bound;
* :mod:`specbound.metrics` — certified robust accuracy and verified radii;
* :mod:`specbound.testing` — Hypothesis strategies and assertions (``import specbound.testing``;
  needs the ``test`` extra).

The public names are loaded on first use (PEP 562), so that ``import specbound`` and the
command line's ``--help``/``--version`` do not import torch and scipy.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

from ._version import __version__ as __version__

# public name -> (submodule, attribute in it; None for the submodule itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "AuditError": ("audit", "AuditError"),
    "AuditReport": ("audit", "AuditReport"),
    "LayerBound": ("audit", "LayerBound"),
    "audit": ("audit", "audit"),
    "Certificate": ("certify", "Certificate"),
    "certify": ("certify", "certify"),
    "ConvSpec": ("spec", "ConvSpec"),
    "ConvLayer": ("operators.conv_layer", "ConvLayer"),
    "TooLargeError": ("spec", "TooLargeError"),
    "methods": ("bounds", "methods"),
    "spectral_norm": ("spectral_norm", "spectral_norm"),
    "bounds": ("bounds", None),
    "layers": ("layers", None),
    "metrics": ("metrics", None),
    "models": ("models", None),
    "operators": ("operators", None),
}

# Submodules that share their name with the function they define: the package attribute is
# the function, whichever of the two is imported first.
_SHADOWED = ("audit", "certify", "spectral_norm")

__all__ = sorted([*_LAZY, "__version__"])


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        # any other submodule (specbound.rigorous, specbound.spec, ...), as an eager package
        # that had imported it would have it
        if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}"):
            return importlib.import_module(f".{name}", __name__)
        raise AttributeError(f"module 'specbound' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = importlib.import_module(f".{module_name}", __name__)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})


class _Package(types.ModuleType):
    """The package module: binding a shadowed submodule (done by the import system after the
    submodule loads) binds the function of the same name instead."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
