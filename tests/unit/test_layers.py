"""The rooms keep their doors: who may import whom (docs/design.md), no import cycles
between modules, and nats-py only inside eventstore."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "eventstore", "dispatcher", "projector", "worker", "natchet")
MAY_IMPORT = {
    "schemas": {"schemas"},
    "eventstore": {"schemas", "eventstore"},
    "dispatcher": {"schemas", "eventstore", "dispatcher"},
    "projector": {"schemas", "eventstore", "projector"},
    "worker": {"schemas", "eventstore", "worker"},
    "natchet": set(PACKAGES) - {"worker"},
}


def modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def imports_of(path: Path, *, typing: bool = False) -> set[str]:
    """Every module ``path`` imports, at any depth (and, with ``typing``, also those only
    under ``if TYPE_CHECKING:``: a cycle of types is a cycle of design too)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if not typing and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_each_package_imports_only_what_it_may() -> None:
    for name, path in modules().items():
        package = name.split(".")[0]
        ours = {i.split(".")[0] for i in imports_of(path)} & set(PACKAGES)
        assert ours <= MAY_IMPORT[package], f"{name} imports {ours - MAY_IMPORT[package]}"


def test_nats_is_imported_only_by_eventstore() -> None:
    for name, path in modules().items():
        if name.split(".")[0] != "eventstore":
            nats = {i for i in imports_of(path) if i == "nats" or i.startswith("nats.")}
            assert not nats, f"{name} imports {sorted(nats)}: go through eventstore"


def test_no_import_cycles() -> None:
    mods = modules()
    graph = {
        name: {i for i in imports_of(path, typing=True) if i in mods and i != name}
        for name, path in mods.items()
    }
    # A package's __init__ re-exporting its modules is not a cycle of design.
    for name in list(graph):
        graph[name] = {d for d in graph[name] if not name.startswith(d + ".")}
    seen: set[str] = set()
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> None:
        seen.add(node)
        stack.append(node)
        on_stack.add(node)
        for dep in sorted(graph[node]):
            if dep in on_stack:
                cycle = [*stack[stack.index(dep) :], dep]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if dep not in seen:
                visit(dep)
        stack.pop()
        on_stack.discard(node)

    for node in sorted(graph):
        if node not in seen:
            visit(node)
