"""Imports point one way: workers → governance → registry (docs/conventions.md).

- ``engine`` is a pure library: it imports nothing from Django or the
  apps, so agencies run it offline and any app may call it.
- ``registry`` imports neither ``governance`` (except the leaf
  ``governance.audit``) nor ``workers.tasks``.
- ``governance`` does not import ``workers.tasks``: services queue follow-up
  work by task name (``config.celery.send_on_commit``).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # "from governance import audit" is recorded as governance.audit.
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _modules(package: str) -> list[Path]:
    return sorted(
        p for p in (ROOT / package).rglob("*.py") if "migrations" not in p.parts
    )


def _violations(package: str, forbidden, allowed=()) -> list[str]:
    found = []
    for path in _modules(package):
        for name in sorted(_imports(path)):
            if any(
                name == f or name.startswith(f + ".") for f in forbidden
            ) and not any(name == a or name.startswith(a + ".") for a in allowed):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


def test_the_engine_imports_nothing_from_django_or_the_apps():
    assert (
        _violations(
            "engine",
            [
                "django",
                "rest_framework",
                "celery",
                "config",
                "registry",
                "governance",
                "workers.tasks",
            ],
        )
        == []
    )


def test_registry_imports_no_governance_except_the_audit_leaf_and_no_tasks():
    assert (
        _violations(
            "registry", ["governance", "workers.tasks"], allowed=["governance.audit"]
        )
        == []
    )


def test_governance_queues_tasks_by_name_never_by_import():
    assert _violations("governance", ["workers.tasks"]) == []
