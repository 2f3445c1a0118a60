"""The public namespace: each public package lists its surface in a curated ``__all__``.

``__all__`` is what ``from package import *`` binds and what the API reference documents
(autodoc's ``members`` follows it). Every name in it must exist, be public (no leading
underscore) and be documented; the audit's and the layers' internal modules are private
(``_name.py``) and are not re-exported under their module names.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types

import pytest

PUBLIC_PACKAGES = (
    "specbound",
    "specbound.audit",
    "specbound.bounds",
    "specbound.layers",
    "specbound.metrics",
    "specbound.models",
    "specbound.operators",
    "specbound.testing",
)


@pytest.mark.parametrize("name", PUBLIC_PACKAGES)
def test_all_is_curated(name):
    module = importlib.import_module(name)
    names = module.__all__
    assert len(names) == len(set(names)), f"{name}.__all__ repeats a name"
    private = [n for n in names if n.startswith("_") and n != "__version__"]
    assert not private, f"{name}.__all__ lists private names {private}"
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ lists names it does not define: {missing}"
    undocumented = [
        n
        for n in names
        if (inspect.isfunction(obj := getattr(module, n)) or inspect.isclass(obj))
        and not inspect.getdoc(obj)
    ]
    assert not undocumented, f"{name}: public names without a docstring: {undocumented}"


@pytest.mark.parametrize("name", PUBLIC_PACKAGES)
def test_no_submodule_in_all(name):
    """``__all__`` lists functions, classes and constants, not the package's own modules
    (except the top-level namespace, which exposes its public subpackages)."""
    if name == "specbound":
        return
    module = importlib.import_module(name)
    modules = [n for n in module.__all__ if isinstance(getattr(module, n), types.ModuleType)]
    assert not modules, f"{name}.__all__ lists modules {modules}"


def test_audit_internals_are_private():
    """The audit's internal modules (rules, graph, tracing, analysis) are ``_name.py``; a
    public module of ``specbound.audit`` is one that code outside the package imports."""
    audit = importlib.import_module("specbound.audit")
    public = sorted(
        info.name for info in pkgutil.iter_modules(audit.__path__) if not info.name.startswith("_")
    )
    assert public == [
        "fallback",
        "linear",
        "local",
        "normalization",
        "progress",
        "resample",
        "runner",
        "structural",
    ]
