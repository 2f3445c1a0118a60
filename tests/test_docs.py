"""The Python examples of the documentation run, in order, page by page.

A fenced ``python`` block preceded by the comment ``<!-- not run by tests/test_docs.py ... -->``
is skipped (the reason is in the comment). Each page runs in one namespace, in a temporary
working directory, so later blocks may use names from earlier ones.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = [
    "index.md",
    "getting-started.md",
    *sorted(p.relative_to(DOCS).as_posix() for p in (DOCS / "howto").glob("*.md")),
]
BLOCK = re.compile(r"(<!-- not run by tests/test_docs\.py[^>]*-->\s*\n)?```python\n(.*?)```", re.S)


def python_blocks(page: str) -> list[str]:
    return [code for skip, code in BLOCK.findall((DOCS / page).read_text()) if not skip]


def test_every_page_has_examples():
    assert len(PAGES) >= 6
    for page in PAGES:
        assert python_blocks(page), f"{page} has no runnable python example"


@pytest.mark.parametrize("page", PAGES)
def test_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs_{Path(page).stem}"}
    for i, code in enumerate(python_blocks(page)):
        try:
            exec(compile(code, f"{page}[block {i}]", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the failure message is the point
            raise AssertionError(f"{page}, python block {i} failed:\n{code}") from exc
