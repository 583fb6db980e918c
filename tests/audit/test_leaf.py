"""The audit app is a leaf: it imports ``config`` and nothing else of the project.

Every import counts, including those inside functions (the whole AST is
walked), so no cycle through the audit chain can hide in a late import.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROJECT = {
    "audit",
    "bench",
    "config",
    "demo",
    "engine",
    "governance",
    "modelgen",
    "registry",
    "tests",
    "workers",
}


def _project_imports(package: str) -> set[tuple[str, str]]:
    found = set()
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            else:
                continue
            for name in names:
                if name.split(".")[0] in PROJECT:
                    found.add((str(path.relative_to(ROOT)), name))
    return found


def test_audit_imports_only_config_and_itself():
    outside = {
        (path, name)
        for path, name in _project_imports("audit")
        if name.split(".")[0] not in {"audit", "config"}
    }
    assert outside == set()


def test_the_standalone_verifier_imports_nothing_of_the_project():
    # Its two files: verify.py imports formats.py, which imports nothing.
    imports = _project_imports("audit")
    verifier = {name for path, name in imports if path.endswith("/verify.py")}
    formats = {name for path, name in imports if path.endswith("/formats.py")}
    assert (verifier, formats) == ({"audit.formats"}, set())


def test_registry_reaches_the_chain_without_governance():
    governance = {
        (path, name)
        for path, name in _project_imports("registry")
        if name.split(".")[0] == "governance"
    }
    assert governance == set()
