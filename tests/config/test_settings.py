"""Settings read from the environment: safe defaults, clear start-up errors."""

from __future__ import annotations

import re
import secrets
import subprocess
import sys

from tests.conftest import ROOT, process_env

MANAGE = [sys.executable, str(ROOT / "manage.py")]


def _clean_env(tmp_path, **values: str) -> dict[str, str]:
    env = process_env(**{"CIVITAS_VAR_DIR": str(tmp_path), **values})
    for name in ("SECRET_KEY", "ALLOWED_HOSTS", "DEBUG", "CIVITAS_HTTPS"):
        if name not in values:
            env.pop(name, None)
    return env


def test_missing_secret_key_is_a_clear_start_up_error(tmp_path):
    env = _clean_env(tmp_path, ALLOWED_HOSTS="civitas.example.gov")

    result = subprocess.run([*MANAGE, "check"], env=env, capture_output=True, text=True)

    assert result.returncode != 0
    assert "SECRET_KEY (or SECRET_KEY_FILE) must be set when DEBUG is off" in (
        result.stderr
    )


def test_missing_allowed_hosts_is_a_clear_start_up_error(tmp_path):
    env = _clean_env(tmp_path, SECRET_KEY=secrets.token_urlsafe(50))

    result = subprocess.run([*MANAGE, "check"], env=env, capture_output=True, text=True)

    assert result.returncode != 0
    assert "ALLOWED_HOSTS must be set when DEBUG is off" in result.stderr


def _env_example() -> dict[str, str]:
    values = {}
    for line in (ROOT / "deploy" / "env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    return values


def test_check_deploy_reports_nothing_with_the_production_environment(tmp_path):
    values = _env_example()
    key_file = tmp_path / "secret_key"
    key_file.write_text(secrets.token_urlsafe(64))
    url_file = tmp_path / "database_url"
    url_file.write_text("postgres://civitas:pw@127.0.0.1:5432/civitas")
    values.update(
        SECRET_KEY_FILE=str(key_file),
        DATABASE_URL_FILE=str(url_file),
        CIVITAS_VAR_DIR=str(tmp_path / "var"),
        STATIC_ROOT=str(tmp_path / "static"),
        ARTIFACT_ROOT=str(tmp_path / "artifacts"),
    )
    env = _clean_env(tmp_path, **values)
    env.pop("DATABASE_URL", None)

    result = subprocess.run(
        [*MANAGE, "check", "--deploy", "--fail-level", "WARNING"],
        env=env, capture_output=True, text=True,
    )

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def _settings_read() -> set[str]:
    """Every environment variable the settings, gunicorn and Procfile read."""
    names: set[str] = set()
    sources = {
        "config/settings.py": r'(?:env\.\w+|_secret)\(\s*"([A-Z0-9_]+)"',
        "deploy/gunicorn.conf.py": r'os\.environ\.get\(\s*"([A-Z0-9_]+)"',
        "deploy/Procfile": r"\$\{([A-Z0-9_]+)",
    }
    for path, pattern in sources.items():
        names |= set(re.findall(pattern, (ROOT / path).read_text()))
    return names


def test_every_setting_is_in_the_readme_table_and_env_example():
    readme = (ROOT / "README.md").read_text()
    example = (ROOT / "deploy" / "env.example").read_text()
    names = _settings_read()

    assert {"SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL"} <= names
    missing_readme = {n for n in names if f"| `{n}`" not in readme}
    missing_example = {n for n in names if not re.search(rf"^#? ?{n}", example, re.M)}
    assert missing_readme == set()
    assert missing_example == set()
