"""DEBUG off and no CIVITAS_SIGNING_KEY_FILE: start-up stops, naming the setting.

Only an explicit CIVITAS_SIGNING_KEY_GENERATE=true (set by `make run`,
deploy/run-local.sh) lets the platform generate its own key.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from audit import signing
from tests.conftest import ROOT, process_env

MANAGE = [sys.executable, str(ROOT / "manage.py")]


def _env(tmp_path, **values: str) -> dict[str, str]:
    env = process_env(CIVITAS_VAR_DIR=str(tmp_path), DEBUG="false", **values)
    for name in ("CIVITAS_SIGNING_KEY_FILE", "CIVITAS_SIGNING_KEY_GENERATE"):
        if name not in values:
            env.pop(name, None)
    return env


def test_start_up_stops_without_a_signing_key(tmp_path):
    result = subprocess.run([*MANAGE, "check"], env=_env(tmp_path),
                            capture_output=True, text=True)

    assert result.returncode != 0
    assert "CIVITAS_SIGNING_KEY_FILE must be set when DEBUG is off" in result.stderr
    assert "civitas.E001" in result.stderr
    assert not (tmp_path / "signing-key.pem").exists()


def test_migrate_stops_too(tmp_path):
    # `migrate` runs the system checks: the release step fails before serving.
    env = _env(tmp_path)
    env.pop("DATABASE_URL", None)
    result = subprocess.run([*MANAGE, "migrate", "--noinput"], env=env,
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "CIVITAS_SIGNING_KEY_FILE" in result.stderr


def test_signing_refuses_to_generate_a_key(settings, tmp_path):
    settings.DEBUG = False
    settings.CIVITAS_SIGNING_KEY_FILE = ""
    settings.CIVITAS_SIGNING_KEY_GENERATE = False
    settings.VAR_DIR = tmp_path
    with pytest.raises(ImproperlyConfigured, match="CIVITAS_SIGNING_KEY_FILE"):
        signing.sign_envelope(b"{}", "application/vnd.civitas.test+json")
    assert not (tmp_path / "signing-key.pem").exists()


def test_an_explicit_leave_to_generate_keeps_the_laptop_working(tmp_path):
    env = _env(tmp_path, CIVITAS_SIGNING_KEY_GENERATE="true")
    result = subprocess.run(
        [*MANAGE, "shell", "-c",
         "from audit import signing; print(signing.platform_key_id())"],
        env=env, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()[-1]) == 64
    assert (tmp_path / "signing-key.pem").exists()


def test_make_run_says_so_explicitly():
    script = (ROOT / "deploy" / "run-local.sh").read_text()
    line = 'export CIVITAS_SIGNING_KEY_GENERATE="${CIVITAS_SIGNING_KEY_GENERATE:-true}"'
    assert line in script
