"""The Python examples of the documentation run, in order, page by page.

A fenced ``python`` block preceded by the comment ``<!-- not run by tests/test_docs.py ... -->``
is skipped (the reason is in the comment). Each page runs in one namespace, in a temporary
working directory, so later blocks may use names from earlier ones.
"""

from __future__ import annotations

import re
import subprocess
import sys
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


@pytest.mark.example
@pytest.mark.parametrize("page", PAGES)
def test_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"docs_{Path(page).stem}"}
    for i, code in enumerate(python_blocks(page)):
        try:
            exec(compile(code, f"{page}[block {i}]", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the failure message is the point
            raise AssertionError(f"{page}, python block {i} failed:\n{code}") from exc


# -- the built HTML: offline math, nothing from a CDN --------------------------------------

sys.path.insert(0, str(DOCS))
import check_html  # noqa: E402  (docs/check_html.py, also run by CI on the full build)

MATH_SPAN = (
    '<span class="math notranslate nohighlight">\\(\\max_c \\lvert\\gamma_c\\rvert\\)</span>'
)


@pytest.mark.parametrize(
    "html,problem",
    [
        ("<p>x</p>" + MATH_SPAN, None),
        ("<pre>$\\max$ \\(x\\)</pre><code>$$</code><p>costs $5 or $10</p>", None),
        (
            '<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"></script>',
            "network",
        ),
        ('<link rel="stylesheet" href="//fonts.googleapis.com/css">', "network"),
        ("<td>the diagonal scaling $\\max </td>", "unrendered"),
        ("<p>a formula \\(x\\) outside a math element</p>", "unrendered"),
        ("<p>$$ x $$</p>", "unrendered"),
    ],
)
def test_html_checker_flags_cdn_and_raw_math(html, problem, tmp_path):
    problems = check_html.page_problems(tmp_path / "page.html", html)
    if problem is None:
        assert problems == []
    else:
        assert problems and all(problem in p for p in problems[:1]), problems


def test_conf_bundles_mathjax_and_runs_the_tutorials():
    conf = (DOCS / "conf.py").read_text()
    assert '"sphinx-mathjax-offline"' in conf and "sphinx_gallery.gen_gallery" in conf
    assert "mathjax_path" not in conf  # the extension points it at _static/mathjax
    tutorials = sorted(p.name for p in (DOCS / "tutorials").glob("tutorial_*.py"))
    assert len(tutorials) == 4


@pytest.mark.example
def test_built_html_is_offline_and_has_no_raw_math(tmp_path):
    """Build the documentation as CI does (warnings are errors, tutorials executed; their
    outputs are cached in docs/auto_tutorials, so CI's own build afterwards reuses them) and
    check every page with docs/check_html.py."""
    pytest.importorskip("sphinx_gallery", reason="needs the docs extra")
    out = tmp_path / "html"
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    cmd += [str(DOCS), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert check_html.check(out) == []
    assert (out / "_static" / "mathjax" / "tex-chtml.js").is_file()


def test_proofs_page_cites_only_what_users_have():
    """The generated proofs page points to no file of the developers' notes, and its summary
    does not promise asterisks the Markdown table does not have."""
    text = (DOCS / "proofs.md").read_text()
    assert not re.search(r"research/|\b(?:gram|layers)\.md\b", text)
    assert "marked without *" not in text
    assert "dev notes" in text.split("## Summary")[0]  # explained once, before it is used
