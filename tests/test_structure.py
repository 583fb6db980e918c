"""Sizes a newcomer can read (issue 8): modules up to 800 lines, functions up to 80.

Every Python file of the project counts except migrations (generated) and
the tests; a function is measured from its ``def`` line to its last line,
docstring included, and methods and nested functions count on their own.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_MODULE_LINES = 800
MAX_FUNCTION_LINES = 80
_SKIPPED = {"tests", "migrations", "node_modules", "var", "__pycache__"}


def source_files() -> Iterator[Path]:
    """The project's Python files outside migrations, tests and tool directories."""
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).parts
        if any(part in _SKIPPED or part.startswith(".") for part in parts):
            continue
        yield path


def long_modules() -> list[str]:
    found = []
    for path in source_files():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            found.append(f"{path.relative_to(ROOT)}: {lines} lines")
    return found


def long_functions() -> list[str]:
    found = []
    for path in source_files():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    found.append(
                        f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: "
                        f"{lines} lines"
                    )
    return found


def test_the_walk_covers_the_apps_and_skips_tests_and_migrations():
    files = {str(path.relative_to(ROOT)) for path in source_files()}
    assert "config/settings.py" in files
    assert "workers/tasks.py" in files
    assert not any(f.startswith("tests/") or "/migrations/" in f for f in files)


def test_no_module_over_800_lines():
    assert long_modules() == []


def test_no_function_over_80_lines():
    assert long_functions() == []
