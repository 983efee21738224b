"""The import rules of docs/architecture.md, checked on the source: no cycle, no import upwards."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "features", "training", "serving", "pipelines", "benchmarks")

# Who may import whom: the first matching prefix of the importing module decides. A module may
# always import its own package (the first part of its name).
ALLOWED: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ()),
    ("features", ("core",)),
    ("training", ("core", "features")),
    ("serving.decision", ("core", "features.views", "training.model_inputs")),
    ("serving.api", ("core", "features", "training", "serving")),
    ("serving", ("core", "features", "training")),
    ("pipelines", ("core", "features", "training", "serving")),
    ("benchmarks", ("core", "features", "training", "serving", "pipelines")),
)
# Inside serving only the app assembles the HTTP layer; nothing else reaches into it.
HTTP_LAYER = "serving.api"
HTTP_ASSEMBLY = ("serving.app", "serving.api")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            # features/repo/ is a Feast repository, imported the way `feast` does (top-level).
            if "repo" in path.relative_to(ROOT / package).parts[:1] and package == "features":
                continue
            found[module_name(path)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """Project modules that ``name`` imports, anywhere in the file, with the line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            if target.split(".")[0] not in PACKAGES:
                continue
            # The longest known module the import names (``from a.b import c`` may import a.b.c).
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target, node.lineno


def graph() -> dict[str, set[str]]:
    modules = source_modules()
    known = set(modules)
    return {name: {t for t, _ in imports_of(name, path, known)} for name, path in modules.items()}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations() -> list[str]:
    modules = source_modules()
    known = set(modules)
    found = []
    for name, path in modules.items():
        rule = next(allowed for prefix, allowed in ALLOWED if _within(name, prefix))
        own = name.split(".")[0]
        for target, line in imports_of(name, path, known):
            if _within(target, HTTP_LAYER) and not any(_within(name, p) for p in HTTP_ASSEMBLY):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {target} (the HTTP layer)")
                continue
            if _within(target, own) and not _within(name, "serving.decision"):
                continue
            if _within(name, "serving.decision") and _within(target, "serving.decision"):
                continue
            if not any(_within(target, allowed) for allowed in rule):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    return sorted(set(found))


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return components


def test_no_module_imports_against_the_layers() -> None:
    assert violations() == []


def test_no_import_cycle() -> None:
    assert cycles(graph()) == []


def test_the_checks_see_a_cycle_and_an_upward_import() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    edges = graph()
    assert "core.settings" in edges and "features.views" in edges["training.data"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_is_seen(package: str) -> None:
    assert any(_within(name, package) for name in source_modules())
