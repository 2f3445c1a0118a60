"""The theorem families; importing this package registers every theorem, in report order."""

from importlib import import_module

ORDER = (
    "dense_gram",
    "circular_gram",
    "kernel_gram",
    "gaps",
    "structure",
    "transposed",
    "nd_routes",
    "grid",
    "rescaling",
    "aol",
    "bcop",
    "fantastic_four",
    "convnorm",
    "rounding",
    "scaling",
    "cholesky",
    "audit_rules",
    "conv_layer",
    "audit",
    "verified",
    "groups",
)
"""Modules in the order of the report (each registers its theorems when imported)."""

for _name in ORDER:
    import_module(f"{__name__}.{_name}")
