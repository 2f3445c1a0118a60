"""Sphinx configuration for the specbound documentation.

Build with ``sphinx-build -W --keep-going -b html docs docs/_build/html`` (warnings are
errors in CI). Pages are MyST Markdown; the API reference is generated from the numpy-style
docstrings by autodoc + napoleon; benchmark plots are drawn at build time from
``benchmarks/results/*.json`` by matplotlib's plot directive; the tutorials
(``docs/tutorials/*.py``) are executed at build time by sphinx-gallery
(``-D sphinx_gallery_conf.plot_gallery=0`` skips running them). Math is rendered by MathJax 3
shipped with the build (sphinx-mathjax-offline copies it into ``_static/mathjax``): no page
loads anything from the network. ``python docs/check_html.py docs/_build/html`` checks that.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from specbound._version import __version__  # noqa: E402

project = "specbound"
author = "the specbound developers"
copyright = "2026, the specbound developers"
version = release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax 3 from the package, no CDN
    "sphinx_gallery.gen_gallery",
    "sphinx.ext.viewcode",
    "sphinxarg.ext",
    "matplotlib.sphinxext.plot_directive",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_generated", "tutorials", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

napoleon_numpy_docstring = True
napoleon_google_docstring = False
napoleon_use_rtype = False
autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_mock_imports: list[str] = []

sphinx_gallery_conf = {
    "examples_dirs": "tutorials",  # the sources, docs/tutorials/*.py
    "gallery_dirs": "auto_tutorials",  # generated (git-ignored)
    "filename_pattern": r"/tutorial_",  # every tutorial is executed
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "min_reported_time": 1,
    "write_computation_times": False,  # its page loads a table script from a CDN
}

plot_include_source = False
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 110)]
plot_rcparams = {"figure.figsize": (6.4, 3.8)}

html_theme = "furo"
html_title = f"specbound {version}"


# -- generated pages -------------------------------------------------------------------------
GENERATED = Path(__file__).resolve().parent / "_generated"


def write_generated(name: str, lines: list[str]) -> None:
    """Write ``_generated/<name>`` only when its text changes (no needless rebuilds)."""
    GENERATED.mkdir(exist_ok=True)
    text = "\n".join(lines) + "\n"
    target = GENERATED / name
    if not target.exists() or target.read_text() != text:
        target.write_text(text)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_methods_table(_app: object) -> None:
    """``_generated/methods.md``: the registry of :func:`specbound.methods` as a table of
    guarantees, then the reference of each method (two parts, so that the table fits a
    screen)."""
    import specbound

    rows = [
        "| method | kind | paddings | input size | stride | dilation | groups | differentiable |",
        "|---|---|---|---|---|---|---|---|",
    ]
    yes = {True: "yes", False: "no"}
    refs = ["", "References:", ""]
    for m in specbound.methods():
        rows.append(
            f"| `{m.name}` | {m.kind} | {', '.join(m.paddings)} | {m.input_size} "
            f"| {yes[bool(m.stride)]} | {yes[bool(m.dilation)]} | {yes[bool(m.groups)]} "
            f"| {yes[bool(m.differentiable)]} |"
        )
        refs.append(f"- `{m.name}`: {_cell(m.reference)}")
    write_generated("methods.md", rows + refs)


def _authors(entry: dict) -> str:
    names = [
        " ".join(p for p in (a.get("given-names"), a.get("family-names")) if p) or a.get("name", "")
        for a in entry.get("authors", [])
    ]
    return ", ".join(names)


def _venue(entry: dict) -> str:
    parts = [
        (entry.get("conference") or {}).get("name"),
        entry.get("journal"),
        (entry.get("publisher") or {}).get("name"),
    ]
    ids = [i["value"] for i in entry.get("identifiers", []) if "value" in i]
    return "; ".join(str(p) for p in parts + ids if p)


def write_citation(_app: object) -> None:
    """``_generated/citation.md``: BibTeX for specbound and the reference list, read from
    ``CITATION.cff`` (the one place they are kept)."""
    import yaml  # a dependency of myst-parser

    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    authors = " and ".join(a.get("name") or a.get("family-names", "") for a in cff["authors"])
    lines = [
        "```bibtex",
        "@software{specbound,",
        f"  title   = {{{{{cff['title']}}}}},",
        f"  author  = {{{authors}}},",
        f"  version = {{{cff['version']}}},",
        f"  license = {{{cff.get('license', '')}}},",
        "}",
        "```",
        "",
        "## The papers behind the methods",
        "",
    ]
    for ref in cff.get("references", []):
        lines.append(f"- {_authors(ref)}. *{ref['title']}*. {_venue(ref)}, {ref.get('year', '')}.")
    write_generated("citation.md", lines)


def setup(app: object) -> None:
    app.connect("builder-inited", write_methods_table)  # type: ignore[attr-defined]
    app.connect("builder-inited", write_citation)  # type: ignore[attr-defined]
