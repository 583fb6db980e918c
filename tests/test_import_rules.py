"""Imports point one way, and no module imports itself back (issue 8).

The rules, as ``ALLOWED`` states them (a package may always import itself):

- ``engine`` and ``modelgen`` import nothing of the project, nor Django, DRF
  or Celery: they are pure libraries that agencies run offline;
- ``audit`` imports ``config`` only: it is the leaf every app records through;
- ``registry`` imports ``audit``, ``engine`` and ``config``;
- ``governance`` imports ``registry``, ``audit``, ``engine`` and ``config``;
- ``workers`` imports anything: it is the one place that imports every app;
- ``demo`` imports anything but ``workers``: it loads the catalogue through
  the apps' services, which queue follow-up work by task name, as every app
  does (``config.celery.send_on_commit``);
- ``config`` imports no app (string references such as
  ``include("registry.api.urls")`` are not imports; apps register their
  health checks in ``AppConfig.ready``).

Every import counts, wherever it is written: at the top, inside a function
or under ``if TYPE_CHECKING`` (the whole syntax tree is walked), so a cycle
cannot hide behind a late import. Relative imports are resolved, and
``from pkg import mod`` where ``mod`` is a submodule is an edge to
``pkg.mod``. Migrations are outside the layer rules (they name other apps'
models by string, and Django loads them) but inside the cycle check.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The project's top-level packages whose modules the rules and the cycle
# check cover. ``tests`` is left out: nothing imports it.
PACKAGES = (
    "config",
    "engine",
    "modelgen",
    "audit",
    "registry",
    "governance",
    "notifications",
    "workers",
    "demo",
    "bench",
    "idempotency",
)
ANY = frozenset(PACKAGES)
ALLOWED: dict[str, frozenset[str]] = {
    "engine": frozenset(),
    "modelgen": frozenset(),
    "audit": frozenset({"config"}),
    "registry": frozenset({"audit", "engine", "config"}),
    "governance": frozenset({"registry", "audit", "engine", "config"}),
    "notifications": frozenset({"governance", "registry", "audit", "config"}),
    "workers": ANY,
    "demo": ANY - {"workers"},
    "config": frozenset(),
    # Stored answers to POSTs sent with an Idempotency-Key: a leaf, like audit.
    "idempotency": frozenset({"config"}),
}
# Third-party frameworks the pure libraries must not import either.
FRAMEWORKS = ("django", "rest_framework", "celery", "knox", "drf_spectacular")
PURE = ("engine", "modelgen")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def project_modules() -> dict[str, Path]:
    """Every project module (dotted name -> file), migrations included."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        if not (ROOT / package).is_dir():
            continue
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _is_package(name: str) -> bool:
    return project_modules()[name].name == "__init__.py"


def _resolve(name: str) -> str | None:
    """The project module an imported dotted name lands in, or None."""
    modules = project_modules()
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _base(module: str, level: int, target: str | None) -> str:
    """The absolute name a relative import of ``level`` dots refers to."""
    package = module if _is_package(module) else module.rpartition(".")[0]
    for _ in range(level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{target}" if target else package


def raw_imports(module: str) -> Iterator[tuple[str, int]]:
    """Every absolute name ``module`` imports, with its line, anywhere in the file."""
    tree = ast.parse(project_modules()[module].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, node.level, node.module) if node.level else node.module
            for alias in node.names:
                # ``from pkg import mod``: the submodule if there is one.
                sub = f"{base}.{alias.name}"
                yield (sub if sub in project_modules() else base), node.lineno


@cache
def edges(module: str) -> dict[str, int]:
    """The project modules ``module`` imports, each with the first line doing so."""
    found: dict[str, int] = {}
    for name, line in raw_imports(module):
        target = _resolve(name)
        if target is not None and target != module:
            found.setdefault(target, line)
    return found


def _is_migration_or_test(module: str) -> bool:
    return ".migrations." in f".{module}." or module.startswith("tests")


def layer_violations(package: str) -> list[str]:
    """The imports of ``package`` that its rule does not allow."""
    allowed = ALLOWED[package] | {package}
    found = []
    for module in sorted(project_modules()):
        if module.split(".")[0] != package or _is_migration_or_test(module):
            continue
        path = project_modules()[module].relative_to(ROOT)
        for name, line in raw_imports(module):
            target = _resolve(name)
            top = (target or name).split(".")[0]
            if target is not None and top not in allowed:
                found.append(f"{path}:{line} imports {target}")
            elif target is None and package in PURE and top in FRAMEWORKS:
                found.append(f"{path}:{line} imports {name}")
    return sorted(set(found))


def import_cycles() -> list[list[str]]:
    """The strongly connected components of the import graph with two or more modules.

    Tarjan's algorithm, iterative so that a deep graph cannot overflow the stack.
    """
    graph = {module: sorted(edges(module)) for module in project_modules()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
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
    return sorted(components)


def _describe(component: list[str]) -> str:
    """One component with the import lines that bind it."""
    members = set(component)
    links = [
        f"{module} -> {target} (line {line})"
        for module in component
        for target, line in sorted(edges(module).items())
        if target in members
    ]
    return "cycle among " + ", ".join(component) + ":\n    " + "\n    ".join(links)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_one_way(package):
    assert layer_violations(package) == []


def test_no_import_cycle_between_project_modules():
    assert [_describe(component) for component in import_cycles()] == []


def test_no_module_defines_a_module_level_getattr():
    def top_level(body):
        for node in body:
            yield node
            if isinstance(node, ast.If | ast.Try):
                yield from top_level(node.body + node.orelse)

    offenders = [
        str(path.relative_to(ROOT))
        for path in project_modules().values()
        for node in top_level(ast.parse(path.read_text(encoding="utf-8")).body)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name == "__getattr__"
    ]
    assert offenders == []


# --- the checks check what they claim ------------------------------------------


def test_the_walk_sees_late_relative_and_submodule_imports(tmp_path, monkeypatch):
    """A cycle hidden in a function, through a relative ``from . import mod``."""
    package = tmp_path / "engine"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from . import b\n")
    (package / "b.py").write_text("from engine.a import f\nimport django\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    project_modules.cache_clear()
    edges.cache_clear()
    try:
        assert edges("engine.a") == {"engine.b": 2}
        assert import_cycles() == [["engine.a", "engine.b"]]
        assert layer_violations("engine") == ["engine/b.py:2 imports django"]
    finally:
        project_modules.cache_clear()
        edges.cache_clear()
