"""specbound: certified spectral norms (L2 Lipschitz constants) of convolutional layers."""

from . import operators
from ._version import __version__
from .spec import ConvSpec, Layer, TooLargeError

__all__ = ["ConvSpec", "Layer", "TooLargeError", "__version__", "operators"]
