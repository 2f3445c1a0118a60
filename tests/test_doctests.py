"""The ``Examples`` sections of the public API run as doctests (issue 13).

Each module below is documented with numpydoc ``Examples``; this file makes ``python -m
pytest`` run them, with NumPy's print options fixed so that outputs are stable.
"""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest

MODULES = [
    "specbound.certify",
    "specbound.spec",
    "specbound.spectral_norm",
    "specbound.bounds.base",
    "specbound.operators.circulant",
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
    "specbound.audit.report",
    "specbound.metrics",
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
