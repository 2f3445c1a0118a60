"""The import graph of ``specbound``, read from the AST of every module (no module is imported).

Every ``import``/``from ... import`` statement counts, wherever it stands (module level, inside
a function, under ``if TYPE_CHECKING:``): a lazy or type-only import still ties two modules
together. Importing ``a.b.c`` also runs ``a.b``'s ``__init__``, so it counts as an import of
every parent package too. Three properties:

* **no cycle**;
* **no upward import**: every module sits on one level of :data:`LEVELS`, and imports only
  modules of its own level or lower;
* **no private name across packages**: a name with a leading underscore is imported only by
  modules of the package (directory) that defines it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "specbound"

LEVELS: tuple[tuple[str, ...], ...] = (
    # the geometry, the float64 rounding helpers and the floating-point environment
    (
        "specbound._version",
        "specbound.spec",
        "specbound.typing",
        "specbound.rigorous.rounding",
        "specbound.rigorous.fpenv",
    ),
    ("specbound.operators",),  # exact float64 ground truth
    ("specbound.rigorous", "specbound.bounds"),  # rigorous routes and published bounds
    ("specbound.certify", "specbound.spectral_norm"),  # the orchestrators
    ("specbound.layers",),
    ("specbound.metrics", "specbound.models"),
    ("specbound.audit",),
    ("specbound.testing",),
    ("specbound", "specbound.cli", "specbound.__main__"),  # the public namespace, the CLI
)
"""Levels, lowest first. A module's level is that of the longest entry naming it or a package
above it (``specbound.rigorous.rounding`` is on level 0, the rest of ``rigorous`` on level 2);
the root package ``specbound`` (the lazy public namespace) is on the top level."""

KNOWN_PRIVATE_IMPORTS: set[tuple[str, str, str]] = set()
"""Private imports across packages that predate this test; the set may only shrink."""


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _package(name: str) -> str:
    """The package (directory) of a module: itself for an ``__init__``."""
    return name if MODULES[name].name == "__init__.py" else name.rsplit(".", 1)[0]


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _imports(name: str) -> tuple[set[str], list[tuple[str, str]]]:
    """The modules ``name`` imports (with their parent packages) and the ``(module, name)``
    pairs of the names it imports from modules."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    targets: set[str] = set()
    names: list[tuple[str, str]] = []
    # imports under ``if TYPE_CHECKING:`` never run: annotations only, no edge of the graph
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for stmt in node.body
        for inner in ast.walk(stmt)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "specbound":
                    targets.update(_with_parents(alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _package(name).split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "specbound":
                continue
            targets.update(_with_parents(source))
            for alias in node.names:
                full = f"{source}.{alias.name}"
                if full in MODULES:
                    targets.add(full)
                else:
                    names.append((source, alias.name))
    targets = {t for t in targets if t in MODULES and t != name}
    return targets, names


GRAPH = {name: _imports(name) for name in MODULES}


def level(name: str) -> int:
    best, found = -1, None
    for i, entries in enumerate(LEVELS):
        for entry in entries:
            if (name == entry or name.startswith(entry + ".")) and len(entry) > best:
                best, found = len(entry), i
    if found is None:
        raise AssertionError(f"{name} is on no level of LEVELS: add it")
    return found


def test_the_graph_is_read():
    """The reader sees the imports it must see (so the properties below are not vacuous)."""
    assert "specbound.certify" in GRAPH["specbound.layers._base"][0] or any(
        "specbound.certify" in GRAPH[m][0] for m in MODULES if m.startswith("specbound.layers")
    )
    assert "specbound.spec" in GRAPH["specbound.operators.dense"][0]
    assert "specbound.bounds" in GRAPH["specbound.spectral_norm"][0]
    assert len(MODULES) > 50


def test_every_module_has_a_level():
    for name in MODULES:
        level(name)


def _inert_package(name: str) -> bool:
    """A package whose ``__init__`` imports nothing of specbound (a docstring): importing one
    of its submodules runs it, but it pulls nothing in, so it has no level to break."""
    return MODULES[name].name == "__init__.py" and not GRAPH[name][0]


def test_no_upward_import():
    upward = sorted(
        f"{name} (level {level(name)}) imports {target} (level {level(target)})"
        for name, (targets, _) in GRAPH.items()
        for target in targets
        if level(target) > level(name)
        and not (name.startswith(target + ".") and MODULES[target].name == "__init__.py")
        and not _inert_package(target)
    )
    assert not upward, "\n".join(upward)


def _cycle() -> list[str] | None:
    """One cycle of the graph (a list of modules, first == last), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH[node][0]):
            if nxt.startswith(node + "."):
                continue  # a package importing its own submodules: not a dependency of node's
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for name in sorted(MODULES):
        if name not in state:
            found = visit(name)
            if found:
                return found
    return None


def test_no_cycle():
    cycle = _cycle()
    assert cycle is None, " -> ".join(cycle or [])


def test_no_private_name_across_packages():
    crossing = {
        (name, source, imported)
        for name, (_, names) in GRAPH.items()
        for source, imported in names
        if imported.startswith("_")
        and not imported.startswith("__")
        and source in MODULES
        and _package(source) != _package(name)
    }
    assert crossing <= KNOWN_PRIVATE_IMPORTS, sorted(crossing - KNOWN_PRIVATE_IMPORTS)


@pytest.mark.parametrize(
    "edges,expect",
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ],
)
def test_cycle_finder_on_planted_graphs(monkeypatch, edges, expect):
    """The cycle search finds a planted cycle and none in a chain."""
    monkeypatch.setitem(globals(), "GRAPH", {k: (v, []) for k, v in edges.items()})
    monkeypatch.setitem(globals(), "MODULES", dict.fromkeys(edges, ROOT))
    assert _cycle() == expect
