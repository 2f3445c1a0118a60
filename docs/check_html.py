"""Check a built HTML documentation tree: nothing loaded from the network, no math left raw.

Usage: ``python docs/check_html.py docs/_build/html`` (exit status 1 and one line per
problem). Run by CI after ``sphinx-build``, and by ``tests/test_docs.py``.

* **No network:** no ``src=``/``href=`` of a script, stylesheet or font pointing to
  ``http(s)://`` or ``//`` (MathJax must come from ``_static/mathjax``), and no known CDN host
  anywhere in a page.
* **No raw math:** outside the math elements that MathJax renders (``class="math"``) and
  outside code (``<pre>``, ``<code>``, ``<script>``, ``<style>``), a page must not contain
  TeX delimiters: ``\\(``, ``\\[``, ``$$`` or a ``$...$`` pair with a backslash command
  inside. Such text was not parsed as math (for example, a ``|`` inside ``$...$`` in a
  Markdown table cell ends the cell and cuts the formula).
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path

CDN = re.compile(r"cdn\.jsdelivr|cdnjs|unpkg\.com|mathjax\.org|polyfill\.io|googleapis", re.I)
REMOTE = re.compile(r"""<(?:script|link|img)\b[^>]*\b(?:src|href)\s*=\s*["'](?:https?:)?//""", re.I)
RAW_MATH = re.compile(r"\\\(|\\\[|\$\$|\$\\[A-Za-z]|\$[^$\n]*\\[A-Za-z]+[^$\n]*\$")
SKIPPED = {"pre", "code", "script", "style", "textarea"}


class _Text(HTMLParser):
    """The text of a page outside code and outside MathJax's math elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, bool]] = []
        self.depth = 0  # > 0 inside a skipped element
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in {"br", "img", "meta", "link", "input", "hr", "wbr", "source"}:
            return
        classes = (dict(attrs).get("class") or "").split()
        skip = tag in SKIPPED or "math" in classes
        self.stack.append((tag, skip))
        self.depth += skip

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            name, skip = self.stack.pop()
            self.depth -= skip
            if name == tag:
                break

    def handle_data(self, data: str) -> None:
        if self.depth == 0:
            self.parts.append(data)


def page_problems(path: Path, html: str) -> list[str]:
    """The problems of one page, one line each."""
    problems = []
    if REMOTE.search(html):
        problems.append(f"{path}: loads a resource from the network: {REMOTE.search(html)[0]}")
    if CDN.search(html):
        problems.append(f"{path}: names a CDN host: {CDN.search(html)[0]}")
    parser = _Text()
    parser.feed(html)
    text = "".join(parser.parts)
    for match in RAW_MATH.finditer(text):
        start = max(0, match.start() - 40)
        context = " ".join(text[start : match.end() + 40].split())
        problems.append(f"{path}: math left unrendered: ...{context}...")
    return problems


def check(root: Path) -> list[str]:
    """Every problem of every ``.html`` file under ``root``."""
    pages = sorted(root.rglob("*.html"))
    if not pages:
        return [f"{root}: no HTML pages (build the documentation first)"]
    problems = []
    for page in pages:
        if "_static" in page.parts or "_modules" in page.parts:
            continue
        problems += page_problems(page, page.read_text(encoding="utf-8"))
    if not (root / "_static" / "mathjax" / "tex-chtml.js").is_file():
        problems.append(f"{root}: _static/mathjax/tex-chtml.js is missing (MathJax not bundled)")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0] if args else "docs/_build/html")
    problems = check(root)
    for line in problems:
        print(line)
    print(f"{root}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
