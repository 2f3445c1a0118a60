"""Every published bound and estimator of conv spectral norms, labelled by what it guarantees.

Each method is a function ``(kernel, spec, **options) -> Bound`` registered with its
reference, kind and validity domain; :func:`methods` lists them and :func:`compute` runs one by
name, refusing layers outside its guarantee.
"""

from . import (  # noqa: F401  (each module registers its methods)
    embedding,
    exact,
    fantastic_four,
    gram,
    lipbound,
    power,
    sedghi,
    spectral_normalization,
)
from .base import KINDS, REGISTRY, Bound, Method, compute, get_method, methods, register

__all__ = [
    "KINDS",
    "REGISTRY",
    "Bound",
    "Method",
    "compute",
    "get_method",
    "methods",
    "register",
]
