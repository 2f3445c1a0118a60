"""The ``Examples`` sections of the public API run as doctests (issue 13).

Each module below is documented with numpydoc ``Examples``; this file makes ``python -m
pytest`` run them, with NumPy's print options fixed so that outputs are stable.
"""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import numpy as np
import pytest

MODULES = [
    "specbound.certify",
    "specbound.spec",
    "specbound.spectral_norm",
    "specbound.bounds.base",
    "specbound.operators.circulant",
    "specbound.operators.conv_layer",
    "specbound.operators.dense",
    "specbound.operators.exact",
    "specbound.operators.matrix_free",
    "specbound.operators.sparse",
    "specbound.operators.symbol",
    "specbound.layers._base",
    "specbound.layers.activations",
    "specbound.layers.aol",
    "specbound.layers.bcop",
    "specbound.layers.convnorm",
    "specbound.layers.export",
    "specbound.layers.padding",
    "specbound.layers.rescaling",
    "specbound.layers.sll",
    "specbound.audit",
    "specbound.audit._report",
    "specbound.metrics",
    "specbound.testing.assertions",
    "specbound.testing.torchconv",
]

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE | doctest.IGNORE_EXCEPTION_DETAIL


def _examples(name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    return [t for t in finder.find(module, name) if t.examples]


@pytest.mark.parametrize("name", MODULES)
def test_module_examples(name: str) -> None:
    tests = _examples(name)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    with np.printoptions(precision=6, suppress=True, legacy=False):
        for test in tests:
            runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"


# -- every public object has References and Examples; no pointer to notes outside the repository


def _public_objects() -> list[tuple[str, object]]:
    import specbound
    import specbound.bounds
    import specbound.layers
    import specbound.metrics
    import specbound.operators

    objects = [
        (f"specbound.{name}", getattr(specbound, name))
        for name in (
            "certify",
            "Certificate",
            "spectral_norm",
            "methods",
            "ConvSpec",
            "audit",
            "AuditReport",
            "LayerBound",
        )
    ]
    objects.append(("specbound.bounds.compute", specbound.bounds.compute))
    for module in (specbound.operators, specbound.layers, specbound.metrics):
        for name in module.__all__:
            value = getattr(module, name)
            if callable(value):  # ROUNDING_ALLOWANCE is a documented constant
                objects.append((f"{module.__name__}.{name}", value))
    return objects


@pytest.mark.parametrize(
    "name,obj", _public_objects(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_public_object_has_references_and_examples(name: str, obj: object) -> None:
    doc = obj.__doc__ or ""
    assert "\nReferences\n" in doc.replace(" ", ""), f"{name} has no References section"
    assert "\nExamples\n" in doc.replace(" ", ""), f"{name} has no Examples section"
    assert ">>> " in doc, f"{name} has no runnable example"


NOTES = re.compile(r"research/|(?<![/\w])(?:gram|layers|ecosystem)\.md\b")


def test_no_pointer_to_notes_outside_the_repository() -> None:
    package = Path(__file__).resolve().parents[1] / "specbound"
    found = [
        f"{path.relative_to(package.parent)}:{i}"
        for path in sorted(package.rglob("*.py"))
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if NOTES.search(line)
    ]
    assert not found, f"pointers to notes that are not in the repository: {found}"
